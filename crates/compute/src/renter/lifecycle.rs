//! The container's lifecycle from the renter's side: restart, pause, unpause and exchange-key,
//! sent as SN27's `docker_change` Allocate with the allocation key, and reported done only when
//! the miner confirmed *and* the machine shows it — after a restart and an unpause the SSH
//! banner answers, after a pause it does not. SN27's register_api reported these as done when
//! the miner did nothing (its fixes #184, #309, #376); this is the one place that decides, for
//! the API and the CLI's `restart`, `pause`, `unpause` and `exchange-key` alike.
//!
//! Requests are signed ([`crate::allocator::signed`]); for an allocation made with signed
//! answers the miner's answer must be signed too, and the host key it signs after the action is
//! returned, so the renter can move its pin when the miner recreated the machine.

use std::time::Duration;

use bittensor::dendrite::{AxonTarget, Dendrite};
use serde_json::{json, Value};

use crate::allocator::failure_text_of;
use crate::allocator::signed;
use crate::protocol::keys;
use crate::protocol::refusal::Refusal;
use crate::protocol::Allocate;
use crate::ssh_banner::{read_banner, wait_for_ssh};

/// One lifecycle action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerAction {
    Restart,
    Pause,
    Unpause,
    /// Replace the login key: `user` (the renter's) or `terminal` (SN27's web terminal).
    ExchangeKey {
        ssh_key: String,
        key_type: String,
    },
}

impl ContainerAction {
    /// SN27's `docker_action.action`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
            Self::ExchangeKey { .. } => "exchange_key",
        }
    }

    /// Reads `restart`, `pause`, `unpause` (`resume`), `exchange-key`/`exchange_key` (with
    /// `ssh_key` and `key_type`).
    pub fn parse(action: &str, ssh_key: Option<&str>, key_type: Option<&str>) -> Result<Self, ActionError> {
        match action {
            "restart" => Ok(Self::Restart),
            "pause" => Ok(Self::Pause),
            "unpause" | "resume" => Ok(Self::Unpause),
            "exchange-key" | "exchange_key" => {
                let key = keys::validate_public_key(ssh_key.unwrap_or(""))
                    .map_err(|e| ActionError::Invalid(format!("exchange-key needs ssh_key: {e}")))?;
                let key_type = key_type.unwrap_or("user");
                if !matches!(key_type, "user" | "terminal") {
                    return Err(ActionError::Invalid(format!("key_type '{key_type}': give user or terminal")));
                }
                Ok(Self::ExchangeKey { ssh_key: key, key_type: key_type.to_owned() })
            }
            other => {
                Err(ActionError::Invalid(format!("unknown action '{other}': restart, pause, unpause or exchange-key")))
            }
        }
    }
}

/// Why an action is not known to be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The request is malformed; nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// The miner did not answer (transport): the action may or may not have happened.
    #[error("the miner did not answer: {0}; check the machine and try again")]
    NoAnswer(String),
    /// The miner answered no.
    #[error("the miner refused: {0}")]
    Refused(String),
    /// The miner said yes, but the machine does not show it.
    #[error("the miner said done, but {0}")]
    NotObserved(String),
    /// The allocation was made with signed answers and this answer is not signed (or its
    /// signature does not verify): it was stripped or forged on the way.
    #[error("{0}")]
    Unauthenticated(String),
}

/// An action the miner confirmed and the machine shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionDone {
    /// The miner signed its answer.
    pub signed: bool,
    /// The host key it signed for the machine after the action (a recreated machine has a new one).
    pub host_key: Option<String>,
}

/// Where an action goes and what its answer must prove.
#[derive(Debug, Clone, Copy)]
pub struct ActionTarget<'a> {
    pub axon: &'a AxonTarget,
    /// The allocation key (public PEM) the allocation was made with.
    pub regkey_pem: &'a str,
    /// Where the machine's SSH server is.
    pub ssh_ip: &'a str,
    pub ssh_port: u16,
    /// The allocation was made with signed answers: this answer must be signed.
    pub signed_expected: bool,
}

/// Sends `action` for the allocation made with `to.regkey_pem` on `to.axon`, then checks the
/// machine at `to.ssh_ip:to.ssh_port` (within `observe`).
pub async fn container_action(
    dendrite: &Dendrite,
    to: ActionTarget<'_>,
    action: &ContainerAction,
    observe: Duration,
) -> Result<ActionDone, ActionError> {
    let (ssh_key, key_type) = match action {
        ContainerAction::ExchangeKey { ssh_key, key_type } => (ssh_key.as_str(), key_type.as_str()),
        _ => ("", ""),
    };
    let mut synapse = Allocate {
        timeline: 0,
        checking: false,
        public_key: to.regkey_pem.to_owned(),
        docker_change: true,
        ..Allocate::default()
    };
    synapse.docker_action = match json!({"action": action.name(), "ssh_key": ssh_key, "key_type": key_type}) {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    };
    let (r, auth) = signed::call(dendrite, to.axon, synapse, Duration::from_secs(60)).await;
    if !r.is_success() {
        return Err(ActionError::NoAnswer(failure_text_of(&r)));
    }
    let signed = auth.accept(to.signed_expected).map_err(ActionError::Unauthenticated)?;
    if let Some(no) = Refusal::read(&r.synapse.output) {
        let code = no.code.map(|c| format!(" [{}]", c.as_str())).unwrap_or_default();
        return Err(ActionError::Refused(format!("{}{code}", no.text("no reason given"))));
    }
    let done = ActionDone { signed, host_key: auth.host_key().map(str::to_owned) };
    let (ssh_ip, ssh_port) = (to.ssh_ip, to.ssh_port);
    match action {
        ContainerAction::Restart | ContainerAction::Unpause => {
            if wait_for_ssh(ssh_ip, ssh_port, observe).await {
                Ok(done)
            } else {
                Err(ActionError::NotObserved(format!(
                    "its SSH server at {ssh_ip}:{ssh_port} did not answer within {} s",
                    observe.as_secs()
                )))
            }
        }
        ContainerAction::Pause => {
            // A paused container's port may accept the connection, but nothing greets.
            let deadline = tokio::time::Instant::now() + observe;
            loop {
                if read_banner((ssh_ip, ssh_port), Duration::from_secs(2)).await.is_err() {
                    return Ok(done);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ActionError::NotObserved(format!(
                        "its SSH server at {ssh_ip}:{ssh_port} still answers {} s later",
                        observe.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // The new key cannot be tried without its private half; the miner's yes is the proof.
        ContainerAction::ExchangeKey { .. } => Ok(done),
    }
}
