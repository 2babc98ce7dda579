//! Calls that carry nicompute's signed extension ([`crate::protocol::auth`]) and check the
//! answer's. Every renter call to a miner goes through [`call`]: the request is signed in the
//! dendrite's body hook (bound to the nonce and uuid the dendrite chose), and the answer is
//! classified — signed by the miner's hotkey (with the host key it vouches for), unsigned (an
//! SN27 peer, or a nicompute answer stripped on the path), or forged.
//!
//! Whether an unsigned answer is acceptable is the caller's decision ([`Authenticity::accept`]):
//! it is for a miner never seen signing, it is not for one that has signed before (the renter
//! remembers them, `ComputeDb::signers`) or for an allocation made with signed answers.

use std::time::Duration;

use bittensor::dendrite::{AxonTarget, Dendrite, Response, Stamp};
use bittensor::{AccountId, Synapse};
use serde_json::{Map, Value};

use crate::protocol::auth::{self, AuthError, Binding, FIELD};
use crate::protocol::{Allocate, Specs};

/// What an answer proves about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// Signed by the miner's hotkey for this very request; the host key it vouches for.
    Signed { host_key: Option<String> },
    /// No extension: an SN27 peer, or one stripped on the path.
    Unsigned,
    /// An extension that does not verify: the answer was changed or forged.
    Forged(AuthError),
    /// The request could not be signed (it holds a value the canonical form refuses) and went
    /// unsigned.
    NotSigned(AuthError),
}

impl Authenticity {
    /// `Ok(signed)`, or why the answer cannot be trusted when `signed_expected` (the miner signed
    /// before, or the allocation was made signed).
    pub fn accept(&self, signed_expected: bool) -> Result<bool, String> {
        match self {
            Self::Signed { .. } => Ok(true),
            Self::Forged(e) => Err(format!("the answer's signature does not verify ({e}): refused")),
            Self::Unsigned | Self::NotSigned(_) if signed_expected => Err(
                "the answer carries no signature from a miner that signs its answers: it was stripped or forged on the \
                 way (refused; if the miner really stopped signing, `nicompute sync --forget-signer HOTKEY`)"
                    .into(),
            ),
            Self::Unsigned | Self::NotSigned(_) => Ok(false),
        }
    }

    /// The host key a signed answer vouches for.
    pub fn host_key(&self) -> Option<&str> {
        match self {
            Self::Signed { host_key } => host_key.as_deref(),
            _ => None,
        }
    }
}

/// The synapses with a signed form, and the answer fields their signature covers.
pub trait Signed: Synapse {
    fn extension(&self) -> Option<&auth::Extension>;
    fn response_fields(&self) -> Map<String, Value>;
}

impl Signed for Allocate {
    fn extension(&self) -> Option<&auth::Extension> {
        self.nicompute_auth.as_ref()
    }
    fn response_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("output".into(), Value::Object(self.output.clone()));
        m
    }
}

impl Signed for Specs {
    fn extension(&self) -> Option<&auth::Extension> {
        self.nicompute_auth.as_ref()
    }
    fn response_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("specs_output".into(), Value::String(self.specs_output.clone()));
        m
    }
}

/// Sends `synapse` signed, and says how the answer is signed (for a failed call: `Unsigned`).
pub async fn call<S: Signed>(
    dendrite: &Dendrite,
    target: &AxonTarget,
    synapse: S,
    timeout: Duration,
) -> (Response<S>, Authenticity) {
    let keypair = dendrite.keypair();
    let (r, made) = dendrite
        .call_with(target, synapse, timeout, |stamp: &Stamp, fields: &mut Map<String, Value>| {
            let b = binding(stamp);
            auth::sign_request(keypair, S::NAME, fields, &b).map(|(ext, digest)| {
                if let Ok(v) = serde_json::to_value(&ext) {
                    fields.insert(FIELD.to_owned(), v);
                }
                (stamp.clone(), digest, ext.sig)
            })
        })
        .await;
    let authenticity = match made {
        None => Authenticity::Unsigned,
        Some(Err(e)) => Authenticity::NotSigned(e),
        Some(Ok(_)) if !r.is_success() => Authenticity::Unsigned,
        Some(Ok((stamp, digest, sent))) => match r.synapse.extension() {
            None => Authenticity::Unsigned,
            // A server that echoes the request (as SN27's handlers echo the synapse) signed nothing.
            Some(ext) if ext.sig == sent => Authenticity::Unsigned,
            Some(ext) => match AccountId::from_ss58(&target.hotkey) {
                Err(_) => Authenticity::Forged(AuthError::Mismatch),
                Ok(miner) => {
                    match auth::verify_response(
                        ext,
                        S::NAME,
                        &r.synapse.response_fields(),
                        &binding(&stamp),
                        &digest,
                        &miner,
                    ) {
                        Ok(host_key) => Authenticity::Signed { host_key },
                        Err(e) => Authenticity::Forged(e),
                    }
                }
            },
        },
    };
    (r, authenticity)
}

fn binding(stamp: &Stamp) -> Binding<'_> {
    Binding { dendrite: &stamp.dendrite_hotkey, axon: &stamp.axon_hotkey, nonce: stamp.nonce, uuid: &stamp.uuid }
}
