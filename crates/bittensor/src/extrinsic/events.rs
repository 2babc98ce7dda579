//! A block's `System.Events`, decoded with the runtime's metadata, and what they say about one
//! extrinsic: `ExtrinsicSuccess`, or `ExtrinsicFailed` with its `DispatchError` — a module error
//! named as the runtime names it, with the runtime's own doc text ("InvalidIpAddress: An invalid
//! IP address is passed to the serve function"), as the Python SDK reports it.

use scale_value::{Composite, Value, ValueDef};
use serde::Serialize;

use super::call::value_u128;
use super::metadata::Metadata;
use super::ExtrinsicError;

/// One event of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The index of the extrinsic that emitted it (`Phase::ApplyExtrinsic`), `None` for the
    /// block's initialization and finalization.
    pub extrinsic: Option<u32>,
    pub pallet: String,
    pub name: String,
    pub fields: Composite<u32>,
}

impl Event {
    /// `Pallet.Event`.
    pub fn label(&self) -> String {
        format!("{}.{}", self.pallet, self.name)
    }

    pub fn field(&self, name: &str) -> Option<&Value<u32>> {
        match &self.fields {
            Composite::Named(f) => f.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            Composite::Unnamed(_) => None,
        }
    }
}

/// Decodes the `System.Events` storage value (a `Vec<EventRecord>`).
pub fn decode_events(md: &Metadata, bytes: &[u8]) -> Result<Vec<Event>, ExtrinsicError> {
    let (_, entry) = md.storage("System", "Events")?;
    let mut input = bytes;
    let all = scale_value::scale::decode_as_type(&mut input, entry.value_ty, &md.types)
        .map_err(|e| ExtrinsicError::Malformed(format!("System.Events: {e}")))?;
    let ValueDef::Composite(records) = all.value else {
        return Err(ExtrinsicError::Malformed("System.Events is not a list".into()));
    };
    let mut events = Vec::with_capacity(records.len());
    for record in records.into_values() {
        let bad = || ExtrinsicError::Malformed("System.Events: an event record is not {phase, event, topics}".into());
        let ValueDef::Composite(Composite::Named(fields)) = record.value else { return Err(bad()) };
        let mut phase = None;
        let mut event = None;
        for (name, v) in fields {
            match name.as_str() {
                "phase" => phase = Some(v),
                "event" => event = Some(v),
                _ => {}
            }
        }
        let (phase, event) = (phase.ok_or_else(bad)?, event.ok_or_else(bad)?);
        let extrinsic = match phase.value {
            ValueDef::Variant(v) if v.name == "ApplyExtrinsic" => {
                v.values.values().next().and_then(value_u128).and_then(|i| u32::try_from(i).ok())
            }
            _ => None,
        };
        // RuntimeEvent: a variant per pallet holding that pallet's event variant.
        let ValueDef::Variant(outer) = event.value else { return Err(bad()) };
        let inner = outer.values.into_values().next().ok_or_else(bad)?;
        let ValueDef::Variant(inner) = inner.value else { return Err(bad()) };
        events.push(Event { extrinsic, pallet: outer.name, name: inner.name, fields: inner.values });
    }
    Ok(events)
}

/// Why the runtime refused to dispatch a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DispatchFailure {
    /// The error's name: a module error's own (`InvalidIpAddress`), else the `DispatchError`
    /// variant with its detail (`Token::FundsUnavailable`, `BadOrigin`).
    pub name: String,
    /// The pallet of a module error.
    pub pallet: Option<String>,
    /// The runtime's doc text for it (may be empty).
    pub docs: String,
}

impl std::fmt::Display for DispatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.docs.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}: {}", self.name, self.docs)
        }
    }
}

/// What the block says about one extrinsic.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    Failed(DispatchFailure),
}

/// Finds `ExtrinsicSuccess` / `ExtrinsicFailed` for extrinsic `index`; `None` when the block
/// holds neither (it is then not the block that included it).
pub fn outcome(md: &Metadata, events: &[Event], index: u32) -> Option<Outcome> {
    events.iter().filter(|e| e.extrinsic == Some(index) && e.pallet == "System").find_map(|e| match e.name.as_str() {
        "ExtrinsicSuccess" => Some(Outcome::Success),
        "ExtrinsicFailed" => Some(Outcome::Failed(match e.field("dispatch_error") {
            Some(err) => dispatch_failure(md, err),
            None => DispatchFailure { name: "ExtrinsicFailed".into(), pallet: None, docs: String::new() },
        })),
        _ => None,
    })
}

/// Names a `DispatchError` value as the SDK does: module errors through the metadata.
pub fn dispatch_failure(md: &Metadata, err: &Value<u32>) -> DispatchFailure {
    let ValueDef::Variant(v) = &err.value else {
        return DispatchFailure { name: "unknown dispatch error".into(), pallet: None, docs: String::new() };
    };
    if v.name == "Module" {
        if let Some(found) = v.values.values().next().and_then(|m| module_error(md, m)) {
            return found;
        }
    }
    // Token(FundsUnavailable), Arithmetic(Overflow)…: the variant and its inner variant's name.
    let detail = v.values.values().next().and_then(|x| match &x.value {
        ValueDef::Variant(inner) => Some(inner.name.clone()),
        _ => None,
    });
    let name = match detail {
        Some(d) => format!("{}::{d}", v.name),
        None => v.name.clone(),
    };
    DispatchFailure { name, pallet: None, docs: String::new() }
}

/// `ModuleError { index, error: [u8; 4] }` → the pallet's error variant with its docs.
fn module_error(md: &Metadata, m: &Value<u32>) -> Option<DispatchFailure> {
    let index = super::call::field(m, "index").and_then(value_u128)?;
    let first = super::call::field(m, "error").and_then(super::call::value_bytes).and_then(|b| b.first().copied())?;
    let pallet = md.pallet_by_index(u8::try_from(index).ok()?)?;
    let variant = md.variant_by_index(pallet.error_ty?, first)?;
    Some(DispatchFailure {
        name: variant.name.clone(),
        pallet: Some(pallet.name.clone()),
        docs: variant.docs.iter().map(|d| d.trim()).collect::<Vec<_>>().join(" ").trim().to_owned(),
    })
}

/// The runtime's own name and docs for error `index` of `pallet` (for refusals reported by a
/// transaction pool as `Custom(n)`, or tests).
pub fn module_error_by_index(md: &Metadata, pallet: &str, index: u8) -> Option<DispatchFailure> {
    let p = md.pallet(pallet).ok()?;
    let variant = md.variant_by_index(p.error_ty?, index)?;
    Some(DispatchFailure {
        name: variant.name.clone(),
        pallet: Some(p.name.clone()),
        docs: variant.docs.iter().map(|d| d.trim()).collect::<Vec<_>>().join(" ").trim().to_owned(),
    })
}
