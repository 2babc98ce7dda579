//! A Docker Engine API proxy between a miner process and the real daemon, for tests that must
//! stop the miner at a chosen point of an allocation: every request passes through, except the
//! one the test holds, which never gets an answer. The test learns that the miner got there,
//! looks at what exists on the daemon, and kills the miner there: the point is reached by
//! construction, not by a guess at how long the miner takes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where an allocation's container start is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `POST /containers/create` never reaches Docker: the miner has claimed its slot, and
    /// nothing exists.
    Create,
    /// `POST /containers/{id}/start` never reaches Docker: the container exists, not running.
    Start,
    /// Docker started the container, but its answer never reaches the miner.
    Started,
}

#[derive(Debug, Default)]
struct State {
    hold: Option<Hold>,
    reached: Option<oneshot::Sender<()>>,
}

impl State {
    /// Whether a request is held at `point` (telling the test the first time).
    fn holds(&mut self, point: Hold) -> bool {
        if self.hold != Some(point) {
            return false;
        }
        if let Some(tx) = self.reached.take() {
            let _ = tx.send(());
        }
        true
    }
}

/// The proxy: a unix socket to give the miner as `DOCKER_HOST`.
#[derive(Debug)]
pub struct DockerProxy {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl DockerProxy {
    /// Listens on a socket of its own, forwarding to the daemon at `upstream`.
    pub fn start(upstream: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind the proxy socket");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, state) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (upstream, state) = (upstream.clone(), state.clone());
                        forward(req, upstream, state)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { socket, state, task, _dir: dir }
    }

    /// The `DOCKER_HOST` value naming the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// From now on, holds requests at `point`; the receiver fires when the first one arrives.
    pub fn hold(&self, point: Hold) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State { hold: Some(point), reached: Some(tx) };
        rx
    }

    /// Lets every new request through (a held one stays held: its miner is gone).
    pub fn release(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::default();
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn point_of(method: &Method, path: &str) -> Option<Hold> {
    if method != Method::POST || !path.contains("/containers/") {
        return None;
    }
    if path.ends_with("/containers/create") {
        Some(Hold::Create)
    } else if path.ends_with("/start") {
        Some(Hold::Start)
    } else {
        None
    }
}

async fn forward(
    req: Request<Incoming>,
    upstream: PathBuf,
    state: Arc<Mutex<State>>,
) -> Result<Response<Incoming>, BoxError> {
    let point = point_of(req.method(), req.uri().path());
    let holds = |p: Hold| state.lock().unwrap_or_else(PoisonError::into_inner).holds(p);
    if point.is_some_and(holds) {
        std::future::pending::<()>().await;
    }
    let stream = UnixStream::connect(&upstream).await.map_err(|e| -> BoxError { Box::new(e) })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| -> BoxError { Box::new(e) })?;
    tokio::spawn(conn);
    let response = sender.send_request(req).await.map_err(|e| -> BoxError { Box::new(e) })?;
    if point == Some(Hold::Start) && response.status().is_success() && holds(Hold::Started) {
        std::future::pending::<()>().await;
    }
    Ok(response)
}
