//! What [`allocate`](super::allocate) is asked to do and what it gives back: its options, the
//! progress it reports, the machine it allocated, and why it allocated none.

use std::fmt;
use std::time::Duration;

use bittensor::Clock;
use secrecy::SecretString;

use super::Explain;
use crate::crypto::CredentialsVersion;

const DAY_MS: u64 = 86_400_000;

/// How [`allocate`](super::allocate) goes about it.
#[derive(Debug, Clone)]
pub struct AllocateOptions {
    /// SN27's `timeline`, in days (`a` sends 90, `a_hotkey` 30). Must be at least 1: a timeline
    /// of 0 asks the miner to deallocate. SN27 miners enforce it; ours prefer `ttl`.
    pub timeline_days: i64,
    /// The lease our miners enforce (`docker_requirement.ttl_seconds`); SN27 miners ignore it.
    pub ttl: Option<Duration>,
    /// An OpenSSH public key line to install in the machine's `authorized_keys`.
    pub ssh_key: Option<String>,
    /// Budget of the whole check phase: no check answer is waited for beyond it.
    pub deadline: Duration,
    /// Timeout of one check request (capped by what is left of `deadline`).
    pub check_timeout: Duration,
    /// Timeout of one allocate request (the miner starts the machine before answering; SN27's
    /// requester waits 60 s). Also the timeout of the release sent after a failed attempt.
    pub allocate_timeout: Duration,
    /// Check requests in flight at once.
    pub concurrency: usize,
    /// How long to wait for the machine's SSH server to greet after the allocation.
    pub ssh_wait: Duration,
    /// What time it is: the lease's end is reckoned from it.
    pub clock: Clock,
    /// An id recorded with the allocation as `register_api.py`'s `uuid` (with the SSH key), for
    /// allocations made through the API; `None` writes the row as `register.py` does.
    pub uuid: Option<String>,
    /// Container ports to reach from outside (SN27 v2.x `external_user_ports`; the miner picks
    /// the host ports). Empty: the miner's default (SN27's 27015–27018).
    pub user_ports: Vec<u16>,
    /// An image to run (SN27 v2.4 `docker_requirement.image`), where the miner offers it.
    pub image: Option<String>,
}

impl Default for AllocateOptions {
    fn default() -> Self {
        Self {
            timeline_days: 90,
            ttl: None,
            ssh_key: None,
            deadline: Duration::from_secs(10),
            check_timeout: Duration::from_secs(10),
            allocate_timeout: Duration::from_secs(60),
            concurrency: 32,
            ssh_wait: Duration::from_secs(60),
            clock: Clock::system(),
            uuid: None,
            user_ports: Vec::new(),
            image: None,
        }
    }
}

impl AllocateOptions {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.timeline_days < 1 {
            return Err(format!("the timeline must be at least 1 day (got {})", self.timeline_days));
        }
        if self.deadline.is_zero() {
            return Err("the check deadline must be more than 0 s".into());
        }
        if self.ttl.is_some_and(|t| t.as_secs() == 0) {
            return Err("the TTL must be at least 1 s".into());
        }
        if let Some(key) = &self.ssh_key {
            crate::protocol::keys::validate_public_key(key).map_err(|e| e.to_string())?;
        }
        if self.user_ports.len() > crate::protocol::docker::MAX_USER_PORTS || self.user_ports.contains(&0) {
            return Err(format!(
                "at most {} user ports, each from 1 to 65535",
                crate::protocol::docker::MAX_USER_PORTS
            ));
        }
        if let Some(image) = &self.image {
            if !crate::protocol::docker::valid_image(image) {
                return Err(format!("'{image}' is not a Docker image reference"));
            }
        }
        Ok(())
    }

    pub(super) fn ssh_key(&self) -> Option<&str> {
        self.ssh_key.as_deref().map(str::trim).filter(|k| !k.is_empty())
    }

    /// The lease as the renter expects it to end: the TTL if given, else the timeline.
    pub(super) fn lease_ms(&self) -> u64 {
        match self.ttl {
            Some(t) => u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
            None => u64::try_from(self.timeline_days).unwrap_or(0).saturating_mul(DAY_MS),
        }
    }
}

/// Progress reports of [`allocate`](super::allocate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Checking this many candidates.
    Checking {
        candidates: usize,
    },
    /// Asking this miner to allocate (attempt 1, 2 or 3).
    Allocating {
        hotkey: String,
        attempt: usize,
    },
    /// Allocated; waiting for its SSH server.
    WaitingForSsh {
        ip: String,
        port: u16,
    },
    Done,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// From the start until the allocated miner said yes to its check.
    pub check: Duration,
    /// Waiting for the allocation key after the first yes (zero when it was ready).
    pub key: Duration,
    /// The successful allocate request.
    pub allocate: Duration,
    /// Waiting for the SSH banner.
    pub ssh: Duration,
    pub total: Duration,
    /// Allocate requests sent (the successful one included).
    pub attempts: usize,
}

/// A machine allocated to the renter.
#[derive(Clone)]
pub struct Allocated {
    pub hotkey: String,
    /// The miner's axon IP, where its SSH port is published.
    pub ip: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    /// The first GPU's name, `CPU`, or `unknown` when the miner's specs were not known.
    pub resource: String,
    /// The public key PEM the allocation was made with: the capability to release it.
    pub regkey_pem: String,
    pub version: CredentialsVersion,
    /// When the lease should end (Unix ms, by our clock; the miner's clock decides).
    pub expires_ms: u64,
    pub ssh_key_injected: bool,
    /// Whether the SSH server greeted within `ssh_wait`.
    pub ssh_ready: bool,
    /// The SSH public key given to the miner.
    pub ssh_key: Option<String>,
    /// [`AllocateOptions::uuid`].
    pub uuid: Option<String>,
    /// SN27 v2.x's user ports the miner mapped: (container port, host port).
    pub external_user_ports: Option<Vec<(u16, u16)>>,
    /// The miner signed its answer with its hotkey (nicompute's extension); SN27 peers do not.
    pub authenticated: bool,
    /// The SSH host key the miner signed (the renter pins it).
    pub host_key: Option<String>,
    pub explain: Vec<Explain>,
    pub timings: Timings,
}

impl fmt::Debug for Allocated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocated")
            .field("hotkey", &self.hotkey)
            .field("ip", &self.ip)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("resource", &self.resource)
            .field("version", &self.version)
            .field("expires_ms", &self.expires_ms)
            .field("ssh_key_injected", &self.ssh_key_injected)
            .field("ssh_ready", &self.ssh_ready)
            .field("uuid", &self.uuid)
            .field("external_user_ports", &self.external_user_ports)
            .field("authenticated", &self.authenticated)
            .field("host_key", &self.host_key)
            .field("explain", &self.explain)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

/// Why nothing was allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocateFailure {
    #[error("invalid allocation options: {0}")]
    InvalidOptions(String),
    #[error("no candidate meets the requirement ({considered} miners considered)")]
    NoCandidate { considered: usize },
    #[error("{}", none_available(*asked, *deadline, summary))]
    NoneAvailable { asked: usize, deadline: Duration, summary: String },
    #[error("{attempts} allocation attempt(s) failed; the last: {last}")]
    AttemptsFailed { attempts: usize, last: String },
    #[error("cannot make the allocation key: {0}")]
    KeyGeneration(String),
}

fn none_available(asked: usize, deadline: Duration, summary: &str) -> String {
    let who = if asked == 1 { "the candidate".to_owned() } else { format!("all {asked} candidates") };
    format!("{who} refused or did not answer within {} s ({summary})", secs(deadline))
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// [`AllocateFailure`] with every candidate's verdict.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{failure}")]
pub struct AllocateError {
    pub failure: AllocateFailure,
    pub explain: Vec<Explain>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(AllocateOptions::default().validate().is_ok());
        let o = AllocateOptions { timeline_days: 0, ..AllocateOptions::default() };
        assert!(o.validate().is_err(), "timeline 0 would deallocate");
        let o = AllocateOptions { ssh_key: Some("ssh-ed25519 AAAA x\nssh-rsa B".into()), ..AllocateOptions::default() };
        assert!(o.validate().is_err());
        let o = AllocateOptions { ssh_key: Some("not a key".into()), ..AllocateOptions::default() };
        assert!(o.validate().is_err());
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x me@x";
        let o = AllocateOptions { ssh_key: Some(format!(" {key}\n")), ..AllocateOptions::default() };
        assert!(o.validate().is_ok());
        assert_eq!(o.ssh_key(), Some(key));
        let o = AllocateOptions { user_ports: vec![1, 2, 3, 4, 5], ..AllocateOptions::default() };
        assert!(o.validate().is_err());
        let o = AllocateOptions { ttl: Some(Duration::from_secs(90)), ..AllocateOptions::default() };
        assert_eq!(o.lease_ms(), 90_000);
        assert_eq!(AllocateOptions::default().lease_ms(), 90 * DAY_MS);
    }
}
