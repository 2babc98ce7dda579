//! One HTTP/1.1 POST at a time to the wandb GraphQL endpoint, over a kept-alive connection.
//!
//! wandb's public API is a single `POST {base}/graphql`; a general HTTP client would be most of
//! this crate's compile time for one request shape. This is hyper's connection API with rustls
//! (webpki roots) for `https`, plain TCP for `http` (local endpoints in tests and benchmarks),
//! gzip-compressed answers accepted (run configs with validator stats are large), and a size
//! limit on what is read. Retries live one level up, in the client.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::error::WandbError;

/// The most we read of one answer (compressed or not): a page of 50 runs with stats is a few MB.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Where requests go, parsed once from the base URL.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// `{base}/graphql`, shown in errors.
    pub url: String,
    pub host: String,
    port: u16,
    /// The `Host` header: the port only when it is not the scheme's default, like requests.
    authority: String,
    path: String,
    tls: bool,
}

impl Endpoint {
    pub fn parse(base_url: &str) -> Result<Self, WandbError> {
        let bad = |reason: &str| WandbError::BadBaseUrl { url: base_url.to_owned(), reason: reason.to_owned() };
        let base = base_url.trim().trim_end_matches('/');
        let uri: http::Uri = base.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be https:// (or http:// for a local endpoint)")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let default_port = if tls { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(Self {
            url: format!("{base}/graphql"),
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            authority,
            path: format!("{prefix}/graphql"),
            tls,
        })
    }
}

/// Why one attempt got no HTTP answer.
#[derive(Debug)]
pub(crate) enum Failure {
    Network(String),
    Timeout,
}

/// An HTTP answer, body decompressed.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

pub(crate) struct Transport {
    pub endpoint: Endpoint,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("endpoint", &self.endpoint.url).field("timeout", &self.timeout).finish()
    }
}

impl Transport {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        let tls = endpoint.tls.then(tls_config);
        Self { endpoint, timeout, tls, conn: tokio::sync::Mutex::new(None) }
    }

    /// POSTs `body` with `headers` (plus Host, Content-Length, Accept-Encoding) within the timeout.
    pub async fn post(&self, headers: &[(&'static str, HeaderValue)], body: Bytes) -> Result<Reply, Failure> {
        match tokio::time::timeout(self.timeout, self.post_inner(headers, body)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be mid-answer; never reuse it.
                *self.conn.lock().await = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn post_inner(&self, headers: &[(&'static str, HeaderValue)], body: Bytes) -> Result<Reply, Failure> {
        let mut slot = self.conn.lock().await;
        let mut reused = slot.take();
        if let Some(sender) = reused.as_mut() {
            if sender.ready().await.is_err() {
                reused = None;
            }
        }
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(s) => s,
            None => self.connect().await?,
        };
        let answer = match sender.send_request(self.request(headers, body.clone())?).await {
            // A kept-alive connection the server closed meanwhile: one fresh try, not a retry.
            Err(e) if was_reused && (e.is_closed() || e.is_incomplete_message() || e.is_canceled()) => {
                sender = self.connect().await?;
                sender.send_request(self.request(headers, body)?).await
            }
            other => other,
        };
        let resp = answer.map_err(|e| Failure::Network(e.to_string()))?;
        let status = resp.status();
        let gzip = resp
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let keep = resp.headers().get(http::header::CONNECTION).is_none_or(|v| v.as_bytes() != b"close");
        let raw = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| Failure::Network(format!("reading the answer: {e}")))?
            .to_bytes();
        if keep {
            *slot = Some(sender);
        }
        let body = if gzip { gunzip(&raw)? } else { raw };
        Ok(Reply { status, body })
    }

    fn request(&self, headers: &[(&'static str, HeaderValue)], body: Bytes) -> Result<Request<Full<Bytes>>, Failure> {
        let mut builder = Request::post(self.endpoint.path.as_str())
            .header(http::header::HOST, self.endpoint.authority.as_str())
            .header(http::header::ACCEPT_ENCODING, "gzip")
            .header(http::header::CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            builder = builder.header(*name, value.clone());
        }
        builder.body(Full::new(body)).map_err(|e| Failure::Network(format!("building the request: {e}")))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let net = |what: &str, e: &dyn std::fmt::Display| Failure::Network(format!("{what}: {e}"));
        let tcp = tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| net("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        macro_rules! handshake {
            ($io:expr) => {{
                let (sender, conn) = hyper::client::conn::http1::handshake($io).await.map_err(|e| net("HTTP", &e))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("wandb connection ended: {e}");
                    }
                });
                Ok(sender)
            }};
        }
        match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| net("TLS server name", &e))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| net("TLS", &e))?;
                handshake!(TokioIo::new(stream))
            }
            None => handshake!(TokioIo::new(tcp)),
        }
    }
}

fn gunzip(raw: &[u8]) -> Result<Bytes, Failure> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::GzDecoder::new(raw)
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Failure::Network(format!("gzip answer: {e}")))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(Failure::Network(format!("answer larger than {MAX_BODY_BYTES} bytes")));
    }
    Ok(Bytes::from(out))
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .expect("ring supports the default TLS versions");
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_like_the_sdk() {
        let e = Endpoint::parse("https://api.wandb.ai").unwrap();
        assert_eq!(
            (e.url.as_str(), e.path.as_str(), e.authority.as_str(), e.port),
            ("https://api.wandb.ai/graphql", "/graphql", "api.wandb.ai", 443)
        );
        // A trailing slash is dropped, a path prefix kept (as wandb.Api does).
        let e = Endpoint::parse("http://127.0.0.1:8787/err500/").unwrap();
        assert_eq!(
            (e.url.as_str(), e.path.as_str(), e.authority.as_str()),
            ("http://127.0.0.1:8787/err500/graphql", "/err500/graphql", "127.0.0.1:8787")
        );
        assert!(matches!(Endpoint::parse("ftp://x"), Err(WandbError::BadBaseUrl { .. })));
        assert!(matches!(Endpoint::parse("api.wandb.ai"), Err(WandbError::BadBaseUrl { .. })));
    }
}
