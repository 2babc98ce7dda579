//! `nicompute serve`: the Resource Allocation API (`crates/api`) over the same `database.db`,
//! chain and hotkey as the CLI — a second front end of the same renter, not a second
//! implementation. It prints one start-up document (the address it listens on: `--listen
//! 127.0.0.1:0` picks a free port), serves until SIGTERM or Ctrl-C, then finishes the
//! allocations in flight and stops.
//!
//! The webhook secret is read from `NICOMPUTE_WEBHOOK_SECRET` or `--webhook-secret-file`, never
//! from argv; SN27's `DEALLOCATION_NOTIFY_URL` and `STATUS_NOTIFY_URL` are read as register_api
//! reads them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::{ApiConfig, Level, TlsConfig, WebhookConfig};
use clap::{Args, ValueHint};
use secrecy::SecretString;
use serde_json::json;

use crate::duration::parse_duration;
use crate::opts::GlobalOpts;
use crate::output::{Output, UsageError};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (a non-loopback one needs TLS or an API token)
    #[arg(long, default_value = "127.0.0.1:8903", value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// How often every allocation is checked
    #[arg(long = "check-interval", value_parser = parse_duration, default_value = "180s")]
    pub check_interval: Duration,
    /// Consecutive failed checks after which an allocation is released (DEALLOCATION)
    #[arg(long = "offline-limit", default_value_t = 20)]
    pub offline_limit: u32,
    /// EXPIRING is sent this long before an allocation ends
    #[arg(long = "expiring-before", value_parser = parse_duration, default_value = "1h")]
    pub expiring_before: Duration,
    /// Time allowed for one health check answer
    #[arg(long = "check-timeout", value_parser = parse_duration, default_value = "10s")]
    pub check_timeout: Duration,
    /// Every event is POSTed here (repeatable)
    #[arg(long = "webhook-url", value_name = "URL")]
    pub webhook_urls: Vec<String>,
    /// DEALLOCATION events also go here (register_api's variable)
    #[arg(long = "deallocation-notify-url", env = "DEALLOCATION_NOTIFY_URL", value_name = "URL")]
    pub deallocation_url: Option<String>,
    /// ONLINE, OFFLINE and EXPIRING events also go here (register_api's variable)
    #[arg(long = "status-notify-url", env = "STATUS_NOTIFY_URL", value_name = "URL")]
    pub status_url: Option<String>,
    /// A file holding the webhook signing secret (or set NICOMPUTE_WEBHOOK_SECRET)
    #[arg(long = "webhook-secret-file", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub webhook_secret_file: Option<PathBuf>,
    /// The webhook signing secret: from the environment only, never from argv.
    #[arg(
        id = "webhook.secret",
        long = "webhook-secret",
        env = "NICOMPUTE_WEBHOOK_SECRET",
        hide = true,
        hide_env_values = true,
        value_parser = secret,
        conflicts_with = "webhook_secret_file"
    )]
    pub webhook_secret: Option<SecretString>,
    /// Delivery attempts before a webhook becomes a dead letter
    #[arg(long = "webhook-attempts", default_value_t = 12)]
    pub webhook_attempts: u32,
    /// First retry delay of a webhook (doubled each time, at most 15 minutes)
    #[arg(long = "webhook-backoff", value_parser = parse_duration, default_value = "5s")]
    pub webhook_backoff: Duration,
    /// TLS certificate chain (PEM)
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key", value_hint = ValueHint::FilePath)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert", value_hint = ValueHint::FilePath)]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS, as register_api)
    #[arg(long = "tls-client-ca", value_name = "FILE", requires = "tls_cert", value_hint = ValueHint::FilePath)]
    pub tls_client_ca: Option<PathBuf>,
    /// What a client certificate without a token may do (register_api: everything)
    #[arg(long = "mtls-scope", default_value = "admin", value_parser = level)]
    pub mtls_scope: Level,
    /// Serve only these client addresses (comma-separated or repeated)
    #[arg(long = "allow-ip", value_delimiter = ',', value_name = "IP")]
    pub allow_ips: Vec<IpAddr>,
    /// How long shutdown waits for allocations in flight
    #[arg(long = "shutdown-grace", value_parser = parse_duration, default_value = "3m")]
    pub shutdown_grace: Duration,
}

fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

fn level(s: &str) -> Result<Level, String> {
    s.parse::<Level>().map_err(|e| e.to_string())
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ApiConfig> {
        let secret = match (&self.webhook_secret, &self.webhook_secret_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
                let text = text.trim().to_owned();
                if text.is_empty() {
                    return Err(UsageError(format!("{} is empty", f.display())).into());
                }
                Some(SecretString::from(text))
            }
            (None, None) => None,
        };
        for u in self.webhook_urls.iter().chain(&self.deallocation_url).chain(&self.status_url) {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(UsageError(format!("webhook URL '{u}' must start with http:// or https://")).into());
            }
        }
        if self.offline_limit == 0 {
            return Err(UsageError("--offline-limit must be at least 1".into()).into());
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                client_scope: self.mtls_scope,
            }),
            _ => None,
        };
        Ok(ApiConfig {
            listen: self.listen,
            tls,
            allow_ips: self.allow_ips.clone(),
            check_interval: self.check_interval,
            offline_limit: self.offline_limit,
            expiring_before: self.expiring_before,
            check_timeout: self.check_timeout,
            shutdown_grace: self.shutdown_grace,
            webhooks: WebhookConfig {
                urls: self.webhook_urls.clone(),
                deallocation_url: self.deallocation_url.clone(),
                status_url: self.status_url.clone(),
                secret,
                backoff: self.webhook_backoff,
                max_attempts: self.webhook_attempts.max(1),
                ..WebhookConfig::new()
            },
            ..ApiConfig::default()
        })
    }

    pub async fn run(&self, g: &GlobalOpts, out: &mut Output) -> anyhow::Result<()> {
        let config = self.config()?;
        let renter = Arc::new(crate::cmd::renter(g)?);
        let db_path = renter.db().path().display().to_string();
        let state = api::AppState::new(renter, config);
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listening on {}", self.listen))?;
        let handle = api::serve(state, listener).await.map_err(|e| match e {
            api::ServeError::PublicWithoutProtection(_) => anyhow::Error::from(UsageError(e.to_string())),
            other => anyhow::Error::from(other),
        })?;
        let addr = handle.addr();
        // One allocation key kept ready in memory for the next allocation, the next started after each.
        compute::crypto::KeyReserve::global().keep_ready(true);
        let scheme = if self.tls_cert.is_some() { "https" } else { "http" };
        let doc = json!({
            "listen": addr.to_string(),
            "url": format!("{scheme}://{addr}"),
            "db": db_path,
            "pid": std::process::id(),
        });
        out.result(&doc, |o| {
            writeln!(o, "nicompute API on {scheme}://{addr} (docs: {scheme}://{addr}/docs), database {db_path}")
        });
        bittensor::axon::wait_for_signal().await;
        tracing::info!("API: shutting down (allocations in flight finish first)");
        handle.shutdown().await;
        Ok(())
    }
}
