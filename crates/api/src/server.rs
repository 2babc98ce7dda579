//! Serving the router: the accept loop (plain TCP or rustls, with client certificates when
//! configured), the background tasks (health checks, webhook sender), and graceful shutdown —
//! stop accepting, let requests and allocations in flight finish, stop the loops.
//!
//! A listener on a non-loopback address is refused unless the server has TLS or at least one
//! token in its store: nothing reachable from elsewhere runs open by accident.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::auth::ConnInfo;
use crate::config::TlsConfig;
use crate::state::AppState;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without TLS and with no API token: anyone who can reach it would get nothing but \
         errors at best; add --tls-cert/--tls-key, or create a token first (nicompute api token create)"
    )]
    PublicWithoutProtection(SocketAddr),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the database: {0}")]
    Db(#[from] compute::db::DbError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address it listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, waits for requests in flight (5 s) and allocations in flight (the
    /// configured grace), then stops the health checks and the webhook sender.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let n = self.state.drain_jobs(self.state.config().shutdown_grace).await;
        if n > 0 {
            tracing::info!(allocations = n, "allocations in flight finished");
        }
        self.state.stop();
        for t in self.background {
            let _ = t.await;
        }
    }
}

fn load_tls(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        ServeError::Tls(format!("cannot read the {what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| err("certificate", &tls.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("certificate", &tls.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| err("key", &tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| err("client CA", ca, &e))? {
                roots.add(c.map_err(|e| err("client CA", ca, &e))?).map_err(|e| err("client CA", ca, &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ServeError::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| ServeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `state` on `listener` (bound by the caller: port 0 in tests), with the health checks
/// and the webhook sender running beside it.
pub async fn serve(state: AppState, listener: TcpListener) -> Result<ServerHandle, ServeError> {
    let addr = listener.local_addr()?;
    let tls = match &state.config().tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(load_tls(t)?)),
        None => None,
    };
    let has_token = state.db().tokens()?.iter().any(|t| t.revoked_ms.is_none());
    refuse_public(addr, tls.is_some(), has_token)?;
    let failed = state.db().fail_unfinished_api_allocations("interrupted: the server stopped while allocating")?;
    if failed > 0 {
        tracing::warn!(failed, "allocations left unfinished by the last run marked failed (their miners are released)");
    }
    let background =
        vec![tokio::spawn(crate::health::run(state.clone())), tokio::spawn(crate::webhook::run(state.clone()))];
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(state.clone(), listener, tls, stop_rx));
    tracing::info!(%addr, tls = state.config().tls.is_some(), "API listening");
    Ok(ServerHandle { addr, state, stop, task, background })
}

/// A listener others can reach needs TLS or a token store with a token in it.
pub fn refuse_public(addr: SocketAddr, tls: bool, has_token: bool) -> Result<(), ServeError> {
    if addr.ip().is_loopback() || tls || has_token {
        Ok(())
    } else {
        Err(ServeError::PublicWithoutProtection(addr))
    }
}

async fn accept_loop(
    state: AppState,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(4096));
    let app = crate::app(state.clone());
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_headers(64)
                .keep_alive(true);
            match tls {
                None => {
                    let info = ConnInfo { peer, client_cert_sha256: None };
                    let conn = builder.serve_connection(TokioIo::new(stream), service(app, info));
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    else {
                        tracing::debug!(%peer, "TLS handshake failed");
                        return;
                    };
                    let cert = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| hex::encode(Sha256::digest(c.as_ref())));
                    let info = ConnInfo { peer, client_cert_sha256: cert };
                    let conn = builder.serve_connection(TokioIo::new(tls_stream), service(app, info));
                    let _ = watcher.watch(conn).await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Requests with a body larger than this get 413.
const MAX_BODY: usize = 1 << 20;

fn service(
    app: axum::Router,
    info: ConnInfo,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (app, info) = (app.clone(), info.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(info);
            let body = axum::body::Body::new(http_body_util::Limited::new(body, MAX_BODY).map_err(axum::Error::new));
            app.oneshot(http::Request::from_parts(parts, body)).await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_tls_or_a_token() {
        let public: SocketAddr = "0.0.0.0:8903".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:8903".parse().expect("addr");
        assert!(matches!(refuse_public(public, false, false), Err(ServeError::PublicWithoutProtection(_))));
        assert!(refuse_public(public, true, false).is_ok());
        assert!(refuse_public(public, false, true).is_ok());
        assert!(refuse_public(local, false, false).is_ok());
        assert!(refuse_public("[::1]:1".parse().expect("addr"), false, false).is_ok());
    }
}
