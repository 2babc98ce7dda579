//! Why a miner says no, as one contract for the miner that says it and the renter that reads it.
//!
//! Two places carry a refusal:
//! - an `Allocate` answer `{"status": false, "reason": TEXT, "code": CODE}`: SN27 peers read
//!   `reason` (or nothing: SN27 miners send a bare `{"status": false}`), nicompute renters read
//!   the machine-readable [`Code`] and never the text;
//! - the axon's 403 `Forbidden. Key is blacklisted: {reason}.`, when the miner refuses the
//!   caller itself (registration, stake, version, lists). The SDK's answer has no room for a code,
//!   so the reasons are fixed templates ([`Gate::reason`] writes ours, [`classify`] reads them and
//!   SN27's own wording, which ours repeats where SN27 has one).
//!
//! Reading a refusal never searches a miner's text for keywords: an answer carries a code, or it
//! matches a template of this table as a whole, or it is an unknown refusal.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Longest reason text kept from a miner's answer.
pub const MAX_REASON: usize = 512;

/// What kind of "no" an `Allocate` answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Code {
    /// The machine is allocated.
    AlreadyAllocated,
    /// Another allocation is being made right now.
    Busy,
    /// The request does not carry the current allocation's key.
    NotHolder,
    /// There is no allocation on this machine.
    NoAllocation,
    /// The `device_requirement` does not fit this machine.
    RequirementMismatch,
    /// The request is malformed: no `public_key`, an unreadable requirement, an unknown action,
    /// an SSH key that is not one.
    BadRequest,
    /// The request asks for what this miner does not offer (an image, environment variables,
    /// ports).
    NotOffered,
    /// This miner serves only requests signed with nicompute's extension.
    SignatureRequired,
    /// The request's signed extension does not verify.
    BadSignature,
    /// The miner failed (its container runtime or its state); its operator's log has details.
    MinerFault,
    /// The miner cannot tell (it could not list its containers): not an answer to act on.
    CannotTell,
}

impl Code {
    pub const ALL: [Code; 11] = [
        Code::AlreadyAllocated,
        Code::Busy,
        Code::NotHolder,
        Code::NoAllocation,
        Code::RequirementMismatch,
        Code::BadRequest,
        Code::NotOffered,
        Code::SignatureRequired,
        Code::BadSignature,
        Code::MinerFault,
        Code::CannotTell,
    ];

    /// The wire form (`already_allocated`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AlreadyAllocated => "already_allocated",
            Code::Busy => "busy",
            Code::NotHolder => "not_holder",
            Code::NoAllocation => "no_allocation",
            Code::RequirementMismatch => "requirement_mismatch",
            Code::BadRequest => "bad_request",
            Code::NotOffered => "not_offered",
            Code::SignatureRequired => "signature_required",
            Code::BadSignature => "bad_signature",
            Code::MinerFault => "miner_fault",
            Code::CannotTell => "cannot_tell",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The machine is taken: try another miner, not this one again.
    pub fn is_taken(self) -> bool {
        matches!(self, Code::AlreadyAllocated | Code::Busy)
    }

    /// A definite answer that the caller's allocation is not on this machine.
    pub fn is_absence(self) -> bool {
        matches!(self, Code::NotHolder | Code::NoAllocation)
    }
}

/// A miner's "no": its code (SN27 peers send none) and its reason (SN27 miners often send none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub code: Option<Code>,
    pub reason: Option<String>,
}

impl Refusal {
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Self { code: Some(code), reason: Some(reason.into()) }
    }

    /// Writes `"status": false`, `"reason"` and `"code"` into an answer's output.
    pub fn write(&self, output: &mut Map<String, Value>) {
        output.insert("status".into(), json!(false));
        if let Some(r) = &self.reason {
            output.insert("reason".into(), json!(r));
        }
        if let Some(c) = self.code {
            output.insert("code".into(), json!(c.as_str()));
        }
    }

    /// Reads an answer's output: `None` when it says yes (`"status": true`). A code this version
    /// does not know leaves `code` empty; the reason is kept (at most [`MAX_REASON`] characters).
    pub fn read(output: &Map<String, Value>) -> Option<Refusal> {
        if output.get("status").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let reason = output
            .get("reason")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| r.chars().take(MAX_REASON).collect());
        let code = output.get("code").and_then(Value::as_str).and_then(Code::parse);
        Some(Refusal { code, reason })
    }

    /// The reason for people: the miner's text, else what SN27's bare "no" means in `context`.
    pub fn text(&self, bare: &str) -> String {
        self.reason.clone().unwrap_or_else(|| bare.to_owned())
    }
}

// ---- refusals of the caller (the axon's 403) ----

/// The SDK axon's words before a blacklist reason.
pub const FORBIDDEN_PREFIX: &str = "Forbidden. Key is blacklisted: ";
/// SN27 2.2.1's minimal validator version, as `prometheus set` should stamp it.
pub const SN27_MINIMAL_VALIDATOR_VERSION: u32 = 221;

/// Which of the miner's admission checks the caller failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Not registered on the subnet.
    Registration,
    /// Not enough stake.
    Stake,
    /// Its on-chain (prometheus) version is below the miner's minimum.
    Version,
    /// On the miner's own lists: nothing the caller can do.
    Blacklist,
}

/// A miner's refusal of the caller, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallerRefusal {
    pub gate: Gate,
    /// The miner's reason as it sent it.
    pub reason: String,
    /// What the caller can do, as a command where there is one.
    pub fix: String,
}

impl Gate {
    pub fn fix(self) -> String {
        match self {
            Gate::Registration => {
                "register your hotkey on the subnet: `nicompute subnet register` (the miner admits registered callers only)"
                    .into()
            }
            Gate::Stake => "the miner admits callers with a validator's stake only (SN27: 1024 TAO in 1.8.x, 10000 from 2.x): \
                 stake to your hotkey with `nicompute stake add --amount TAO`"
                .into(),
            Gate::Version => format!(
                "the miner admits callers whose on-chain version is at least its minimal validator version (SN27 2.2.1: \
                 {SN27_MINIMAL_VALIDATOR_VERSION}): stamp yours with `nicompute prometheus set --version \
                 {SN27_MINIMAL_VALIDATOR_VERSION}`"
            ),
            Gate::Blacklist => "the miner does not admit your hotkey; choose another miner".into(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Gate::Registration => "not registered",
            Gate::Stake => "stake too low",
            Gate::Version => "version too low",
            Gate::Blacklist => "blacklisted",
        }
    }
}

/// The reasons a nicompute miner's blacklist gives (SN27's words where SN27 has them).
pub mod reason {
    /// SN27: `Unrecognized hotkey`.
    pub fn unregistered(hotkey: &str, netuid: u16) -> String {
        format!("Unrecognized hotkey: {hotkey} is not registered on subnet {netuid}")
    }
    /// SN27: `Not enough stake!`.
    pub fn stake(stake_tao: f32, min_tao: f64) -> String {
        format!("Not enough stake! {stake_tao:.3} TAO is below the validator threshold of {min_tao} TAO")
    }
    /// SN27 2.x's version gate, word for word.
    pub fn version(synapse: &str, hotkey: &str) -> String {
        format!("Blacklisted a {synapse} request from a non-updated hotkey: {hotkey}")
    }
    /// SN27: `Blacklisted hotkey`.
    pub fn blacklisted() -> String {
        "Blacklisted hotkey".into()
    }
    /// SN27: `Not whitelisted`.
    pub fn not_whitelisted(hotkey: &str) -> String {
        format!("Not whitelisted: {hotkey}")
    }
    /// The miner cannot judge callers yet: not a refusal of this caller.
    pub const NOT_READY: &str = "The miner has not loaded the metagraph yet; try again shortly";
    /// A request without a hotkey.
    pub const NO_HOTKEY: &str = "No hotkey in the request";
}

/// Templates of the reasons that refuse a caller: literal words, `{}` for one word (a synapse
/// name, a hotkey). A template matches a reason that equals it or continues it after a space,
/// `:`, `!`, `.` or `,`.
const TEMPLATES: &[(&str, Gate)] = &[
    ("Unrecognized hotkey", Gate::Registration),
    ("Not enough stake", Gate::Stake),
    ("Blacklisted a {} request from a non-updated hotkey", Gate::Version),
    ("Blacklisted an {} request from a non-updated hotkey", Gate::Version),
    ("Blocked a {} request from a non-updated hotkey", Gate::Version),
    ("Blocked an {} request from a non-updated hotkey", Gate::Version),
    ("Non-updated hotkey", Gate::Version),
    ("Not whitelisted", Gate::Blacklist),
    ("Blacklisted hotkey", Gate::Blacklist),
    ("Blocked hotkey", Gate::Blacklist),
    ("Blacklisted a {} request from an exploiter hotkey", Gate::Blacklist),
    ("Blacklisted an {} request from an exploiter hotkey", Gate::Blacklist),
];

/// Whether `template` matches `reason` from its start (see [`TEMPLATES`]).
fn matches(template: &str, reason: &str) -> bool {
    let mut rest = reason;
    let mut pieces = template.split("{}").peekable();
    while let Some(piece) = pieces.next() {
        let Some(after) = rest.strip_prefix(piece) else { return false };
        rest = after;
        if pieces.peek().is_some() {
            // One word of the reason stands for `{}`.
            let end = rest.find(' ').unwrap_or(rest.len());
            if end == 0 {
                return false;
            }
            rest = &rest[end..];
        }
    }
    rest.is_empty() || rest.starts_with([' ', ':', '!', '.', ','])
}

/// Classifies a failed request by its status and message (`Forbidden. Key is blacklisted: Not
/// enough stake!.`). Only 403 blacklist answers are refusals of the caller; a reason that fits
/// no template is a [`Gate::Blacklist`] (the miner's own list), except the miner's "not ready".
pub fn classify(status: Option<u16>, message: &str) -> Option<CallerRefusal> {
    if status.is_some_and(|s| s != 403) {
        return None;
    }
    let reason = message.trim().strip_prefix(FORBIDDEN_PREFIX)?;
    let reason = reason.strip_suffix('.').unwrap_or(reason).trim().to_owned();
    if reason == reason::NOT_READY || reason == reason::NO_HOTKEY {
        return None;
    }
    let gate = TEMPLATES.iter().find(|(t, _)| matches(t, &reason)).map_or(Gate::Blacklist, |(_, g)| *g);
    Some(CallerRefusal { gate, fix: gate.fix(), reason })
}

/// The same from the text nicompute keeps of a failure (`… (403)` at its end, as the allocator
/// and `sync` write it).
pub fn classify_text(text: &str) -> Option<CallerRefusal> {
    let (message, code) = text.trim_end().strip_suffix(')')?.rsplit_once(" (")?;
    classify(Some(code.parse().ok()?), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(reason: &str) -> String {
        format!("{FORBIDDEN_PREFIX}{reason}.")
    }

    #[test]
    fn sn27_reasons() {
        let version =
            classify(Some(403), &forbidden("Blacklisted a Allocate request from a non-updated hotkey: 5Fxyz"))
                .expect("r");
        assert_eq!(version.gate, Gate::Version);
        assert!(version.fix.contains("prometheus set --version 221"), "{}", version.fix);
        assert_eq!(version.reason, "Blacklisted a Allocate request from a non-updated hotkey: 5Fxyz");
        let stake = classify(Some(403), &forbidden("Not enough stake!")).expect("refusal");
        assert_eq!(stake.gate, Gate::Stake);
        assert!(stake.fix.contains("stake add"));
        for (r, g) in [
            ("Unrecognized hotkey", Gate::Registration),
            ("Blacklisted hotkey", Gate::Blacklist),
            ("Not whitelisted", Gate::Blacklist),
            ("Blocked an Allocate request from a non-updated hotkey: 5F", Gate::Version),
            ("Blacklisted a Specs request from an exploiter hotkey: 5F", Gate::Blacklist),
            ("something new", Gate::Blacklist),
        ] {
            assert_eq!(classify(Some(403), &forbidden(r)).map(|c| c.gate), Some(g), "{r}");
        }
    }

    #[test]
    fn our_reasons_read_back_as_their_gate() {
        let hk = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
        for (r, g) in [
            (reason::unregistered(hk, 27), Gate::Registration),
            (reason::stake(1.5, 1024.0), Gate::Stake),
            (reason::version("Allocate", hk), Gate::Version),
            (reason::blacklisted(), Gate::Blacklist),
            (reason::not_whitelisted(hk), Gate::Blacklist),
        ] {
            assert_eq!(classify(Some(403), &forbidden(&r)).map(|c| c.gate), Some(g), "{r}");
            assert_eq!(classify_text(&format!("{} (403)", forbidden(&r))).map(|c| c.gate), Some(g), "{r}");
        }
        assert_eq!(classify(Some(403), &forbidden(reason::NOT_READY)), None, "not a refusal of the caller");
    }

    #[test]
    fn keywords_elsewhere_do_not_match() {
        // Before: any reason containing "stake" or "version" was read as that gate.
        let r = classify(Some(403), &forbidden("Blacklisted hotkey (was: Not enough stake)")).expect("refusal");
        assert_eq!(r.gate, Gate::Blacklist);
        let r = classify(Some(403), &forbidden("Unrecognizedhotkey")).expect("refusal");
        assert_eq!(r.gate, Gate::Blacklist);
    }

    #[test]
    fn other_failures_are_not_refusals_of_the_caller() {
        assert_eq!(classify(Some(401), "Not Verified with error: Signature mismatch"), None);
        assert_eq!(classify(Some(500), &forbidden("x")), None);
        assert_eq!(classify_text("Service disconnected: Server disconnected (503)"), None);
        assert_eq!(classify_text("request failed (408)"), None);
    }

    #[test]
    fn answers_round_trip() {
        let mut out = Map::new();
        Refusal::new(Code::NotHolder, "not the holder of the allocation key").write(&mut out);
        out.insert("port".into(), json!(4444));
        let r = Refusal::read(&out).expect("a no");
        assert_eq!(r.code, Some(Code::NotHolder));
        assert!(r.code.is_some_and(Code::is_absence));
        let sn27 = json!({"status": false}).as_object().cloned().unwrap_or_default();
        assert_eq!(Refusal::read(&sn27), Some(Refusal { code: None, reason: None }));
        let yes = json!({"status": true}).as_object().cloned().unwrap_or_default();
        assert_eq!(Refusal::read(&yes), None);
        let future =
            json!({"status": false, "code": "quantum", "reason": "x"}).as_object().cloned().unwrap_or_default();
        assert_eq!(Refusal::read(&future), Some(Refusal { code: None, reason: Some("x".into()) }));
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).ok(), Some(json!(c.as_str())));
        }
    }
}
