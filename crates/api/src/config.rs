//! What `nicompute serve` is told: where to listen, how to secure it, how often to check
//! allocations, where events go. The CLI fills it from its clap declarations; tests fill it by
//! hand. Nothing here reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::Level;

/// TLS for the listener: a certificate chain and key (PEM), and optionally the CA that client
/// certificates must chain to (mutual TLS, as register_api requires).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA (PEM).
    pub client_ca: Option<PathBuf>,
    /// What a request authenticated only by a client certificate may do (register_api gives
    /// every certificate holder everything).
    pub client_scope: Level,
}

/// Where events go and how they are signed.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// Every event goes to each of these.
    pub urls: Vec<String>,
    /// SN27's `DEALLOCATION_NOTIFY_URL`: DEALLOCATION events.
    pub deallocation_url: Option<String>,
    /// SN27's `STATUS_NOTIFY_URL`: ONLINE, OFFLINE (and our EXPIRING).
    pub status_url: Option<String>,
    /// The shared HMAC secret (SN27's `WEBHOOKS_SECRET`); unsigned without one.
    pub secret: Option<SecretString>,
    /// First retry after this; doubled each time (capped at `max_backoff`).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// Time allowed for one POST.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("deallocation_url", &self.deallocation_url)
            .field("status_url", &self.status_url)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookConfig {
    pub fn new() -> Self {
        Self {
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(15 * 60),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
            ..Self::default()
        }
    }

    /// The URLs an event goes to: every `--webhook-url`, plus SN27's URL for its kind.
    pub fn urls_for(&self, event: &str) -> Vec<String> {
        let mut out = self.urls.clone();
        let extra = match event {
            "DEALLOCATION" => self.deallocation_url.as_ref(),
            _ => self.status_url.as_ref(),
        };
        if let Some(u) = extra {
            if !out.contains(u) {
                out.push(u.clone());
            }
        }
        out
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where to listen (port 0: any free port, reported by the handle).
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Only these client addresses are served (empty: any).
    pub allow_ips: Vec<IpAddr>,
    /// Every allocation is checked this often (register_api: 180 s).
    pub check_interval: Duration,
    /// Consecutive failed checks after which an allocation is released (register_api: 20).
    pub offline_limit: u32,
    /// EXPIRING is sent this long before an allocation's end.
    pub expiring_before: Duration,
    /// Time allowed for one health check answer (register_api: 10 s).
    pub check_timeout: Duration,
    /// A metagraph younger than this is reused for allocations and checks.
    pub metagraph_max_age: Duration,
    /// The longest `?wait=` honoured.
    pub max_wait: Duration,
    /// How long shutdown waits for allocations in flight.
    pub shutdown_grace: Duration,
    pub webhooks: WebhookConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8903)),
            tls: None,
            allow_ips: Vec::new(),
            check_interval: Duration::from_secs(180),
            offline_limit: 20,
            expiring_before: Duration::from_secs(3600),
            check_timeout: Duration::from_secs(10),
            metagraph_max_age: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(180),
            webhooks: WebhookConfig::new(),
        }
    }
}
