//! Which miners are worth asking, and why each one was or was not allocated: the [`Candidate`]s
//! that meet a requirement, are not penalized and serve an axon, and the [`Verdict`] of every
//! miner (`--explain`).

use std::collections::HashSet;
use std::fmt;

use bittensor::dendrite::AxonTarget;
use bittensor::subtensor::metagraph::Metagraph;
use serde::Serialize;

use crate::protocol::refusal::CallerRefusal;
use crate::specs::{check, Requirement, Specs};

/// A miner that may be asked for an allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub hotkey: String,
    pub target: AxonTarget,
    /// Its last known specs (for the resource name); `None` when unknown.
    pub specs: Option<Specs>,
    /// It has signed its answers before (nicompute's extension): an unsigned answer from it is
    /// one stripped or forged on the path, and refused.
    pub signs: bool,
}

impl Candidate {
    /// The candidate for `hotkey` if the metagraph has it serving an axon, else the verdict why
    /// not. The specs are not checked: callers that name a miner let the miner decide.
    pub fn from_metagraph(hotkey: &str, metagraph: &Metagraph, specs: Option<Specs>) -> Result<Self, Verdict> {
        let neuron = metagraph.by_hotkey(hotkey).ok_or(Verdict::NotInMetagraph)?;
        if !neuron.axon.serving {
            return Err(Verdict::NotServing);
        }
        let target = AxonTarget { ip: neuron.axon.ip.clone(), port: neuron.axon.port, hotkey: neuron.hotkey.clone() };
        Ok(Self { hotkey: hotkey.to_owned(), target, specs, signs: false })
    }

    /// SN27's `resource`: the first GPU's name, `CPU` for a machine without GPUs, `unknown`
    /// without specs.
    pub fn resource(&self) -> String {
        match &self.specs {
            Some(s) => s.gpu.details.first().map_or_else(|| "CPU".to_owned(), |g| g.name.clone()),
            None => "unknown".to_owned(),
        }
    }
}

/// Why a miner was or was not allocated (`--explain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// This is the miner that was allocated.
    Allocated,
    /// Said yes to the check, but another miner was allocated first.
    Available,
    /// The miner is already allocated (it said so, or refused a check without a reason, which
    /// SN27 miners do only when a container runs).
    Taken,
    /// Its known specs do not meet the requirement (not asked).
    SpecMismatch(String),
    /// No specs known for it (not asked).
    NoSpecs,
    /// On the penalty list (not asked).
    Penalized,
    /// Its hotkey is not in the metagraph (not asked).
    NotInMetagraph,
    /// Registered but not serving an axon (not asked).
    NotServing,
    /// The miner answered no, with its reason.
    Refused(String),
    /// The miner refused our hotkey itself (registration, stake, version, its lists): the fix.
    CallerRefused(CallerRefusal),
    /// No answer within the check deadline (or the per-request timeout).
    TimedOut,
    /// Not asked yet, or still not answered, when another miner was allocated: not waited for.
    Unanswered,
    /// The request failed (unreachable, refused our hotkey, bad answer, or a failure after the
    /// miner said yes).
    Error(String),
}

impl Verdict {
    /// A short name for tables and summaries.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allocated => "allocated",
            Self::Available => "available",
            Self::Taken => "taken",
            Self::SpecMismatch(_) => "spec mismatch",
            Self::NoSpecs => "no specs",
            Self::Penalized => "penalized",
            Self::NotInMetagraph => "not in metagraph",
            Self::NotServing => "not serving",
            Self::Refused(_) => "refused",
            Self::CallerRefused(_) => "refused our hotkey",
            Self::TimedOut => "timed out",
            Self::Unanswered => "unanswered",
            Self::Error(_) => "error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allocated => f.write_str("allocated"),
            Self::Available => f.write_str("available (said yes; another miner was allocated)"),
            Self::Taken => f.write_str("already allocated"),
            Self::SpecMismatch(m) => write!(f, "does not meet the requirement: {m}"),
            Self::NoSpecs => f.write_str("no specs reported"),
            Self::Penalized => f.write_str("penalized"),
            Self::NotInMetagraph => f.write_str("not in the metagraph"),
            Self::NotServing => f.write_str("not serving an axon"),
            Self::Refused(r) => write!(f, "refused: {r}"),
            Self::CallerRefused(r) => write!(f, "refused our hotkey ({}): {}", r.gate.label(), r.reason),
            Self::TimedOut => f.write_str("did not answer in time"),
            Self::Unanswered => f.write_str("not answered before another miner was allocated"),
            Self::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One candidate's verdict, and how long its check answer took when it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explain {
    pub hotkey: String,
    pub verdict: Verdict,
    /// Milliseconds its check request took, when it was answered (or failed).
    pub answer_ms: Option<u64>,
}

impl Explain {
    pub(super) fn new(hotkey: &str, verdict: Verdict) -> Self {
        Self { hotkey: hotkey.to_owned(), verdict, answer_ms: None }
    }
}

/// The miners worth asking: every entry of `miner_specs` (hotkey, last known specs) that is not
/// penalized, is in the metagraph serving an axon, and whose specs meet `req`, in input order;
/// and the verdict of every other one. A hotkey listed twice counts once (the first).
pub fn candidates(
    miner_specs: &[(String, Option<Specs>)],
    metagraph: &Metagraph,
    penalized: &HashSet<String>,
    req: &Requirement,
) -> (Vec<Candidate>, Vec<Explain>) {
    let mut seen = HashSet::new();
    let mut chosen = Vec::new();
    let mut excluded = Vec::new();
    for (hotkey, specs) in miner_specs {
        if !seen.insert(hotkey.as_str()) {
            continue;
        }
        if penalized.contains(hotkey) {
            excluded.push(Explain::new(hotkey, Verdict::Penalized));
            continue;
        }
        let candidate = match Candidate::from_metagraph(hotkey, metagraph, specs.clone()) {
            Ok(c) => c,
            Err(v) => {
                excluded.push(Explain::new(hotkey, v));
                continue;
            }
        };
        match specs {
            None => excluded.push(Explain::new(hotkey, Verdict::NoSpecs)),
            Some(s) if s.is_empty() => excluded.push(Explain::new(hotkey, Verdict::NoSpecs)),
            Some(s) => match check(req, s) {
                Ok(()) => chosen.push(candidate),
                Err(m) => excluded.push(Explain::new(hotkey, Verdict::SpecMismatch(m.to_string()))),
            },
        }
    }
    (chosen, excluded)
}
