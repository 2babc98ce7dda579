//! A recording GraphQL endpoint on 127.0.0.1 (port 0): records every request as received (method,
//! path, headers, body bytes) and answers from a script or a handler. Shared by every test that
//! talks HTTP, our client and the Python SDK alike.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request as the endpoint saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// An answer: status and JSON body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

type Handler = dyn Fn(&Recorded) -> Answer + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Answers the scripted answers in order; past the end, HTTP 599 (fails the test visibly).
    pub async fn scripted(answers: Vec<Answer>) -> Self {
        let queue = Mutex::new(VecDeque::from(answers));
        Self::with_handler(move |_| {
            queue.lock().unwrap().pop_front().unwrap_or(Answer {
                status: 599,
                body: serde_json::json!({"errors": [{"message": "test script exhausted"}]}),
            })
        })
        .await
    }

    pub async fn with_handler(handler: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (log, handler) = (task_log.clone(), handler.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (log, handler) = (log.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                    .collect(),
                                body,
                            };
                            let answer = handler(&rec);
                            log.lock().unwrap().push(rec);
                            let body = Bytes::from(serde_json::to_vec(&answer.body).expect("json"));
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(answer.status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(body))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        Self { addr, log, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}
