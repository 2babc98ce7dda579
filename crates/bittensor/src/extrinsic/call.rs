//! Calls composed by pallet and call name, their arguments encoded as the runtime's metadata
//! says: `[pallet index, call index] ‖ arguments`. Nothing about a call's layout is written down
//! here, so `SubtensorModule.serve_axon` encodes the same way on spec 218 and 343 (and on a runtime
//! that renames `u16` to `NetUid`) and a reordered or retyped argument is caught by name.

use scale_value::{Composite, Value, ValueDef};

use super::metadata::Metadata;
use super::ExtrinsicError;

/// A call by name with named arguments, before it is encoded against a runtime's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub pallet: String,
    pub name: String,
    pub args: Vec<(String, Value)>,
}

impl Call {
    pub fn new(pallet: &str, name: &str) -> Self {
        Self { pallet: pallet.to_owned(), name: name.to_owned(), args: Vec::new() }
    }

    /// Adds a named argument (any order: they are matched to the metadata's fields by name).
    pub fn arg(mut self, name: &str, value: Value) -> Self {
        self.args.push((name.to_owned(), value));
        self
    }

    /// `Pallet.call`, as errors and prompts name it.
    pub fn label(&self) -> String {
        format!("{}.{}", self.pallet, self.name)
    }

    /// The call data: pallet index, call index, then each argument in the metadata's order.
    pub fn encode(&self, md: &Metadata) -> Result<Vec<u8>, ExtrinsicError> {
        let label = self.label();
        let pallet = md.pallet(&self.pallet)?;
        let call_ty = pallet
            .call_ty
            .ok_or_else(|| ExtrinsicError::Unknown(format!("the runtime's {} pallet has no calls", self.pallet)))?;
        let variant = md
            .variant(call_ty, &self.name)
            .ok_or_else(|| ExtrinsicError::Unknown(format!("the runtime has no call {label}")))?;
        let expected: Vec<&str> = variant.fields.iter().filter_map(|f| f.name.as_deref()).collect();
        if let Some((extra, _)) = self.args.iter().find(|(n, _)| !expected.contains(&n.as_str())) {
            return Err(ExtrinsicError::Arg(format!(
                "{label} has no argument '{extra}' in this runtime (it takes: {})",
                expected.join(", ")
            )));
        }
        let mut out = vec![pallet.index, variant.index];
        for (i, field) in variant.fields.iter().enumerate() {
            let name = field.name.clone().unwrap_or_else(|| i.to_string());
            let value = self
                .args
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| ExtrinsicError::Arg(format!("{label}: argument '{name}' is missing")))?;
            scale_value::scale::encode_as_type(value, field.ty.id, &md.types, &mut out).map_err(|e| {
                ExtrinsicError::Arg(format!(
                    "{label}: argument '{name}' does not fit the runtime's {}: {e}",
                    md.type_name(field.ty.id)
                ))
            })?;
        }
        Ok(out)
    }
}

/// A call decoded from its bytes: names and argument values as the metadata describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedCall {
    pub pallet: String,
    pub name: String,
    /// Arguments by name, in the metadata's order.
    pub args: Vec<(String, Value<u32>)>,
}

impl DecodedCall {
    pub fn arg(&self, name: &str) -> Option<&Value<u32>> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Decodes call data, which must be consumed exactly (a server's view of a submitted call).
pub fn decode_call(md: &Metadata, bytes: &[u8]) -> Result<DecodedCall, ExtrinsicError> {
    let bad = |why: String| ExtrinsicError::Malformed(format!("call data: {why}"));
    let (&pallet_index, rest) = bytes.split_first().ok_or_else(|| bad("empty".into()))?;
    let (&call_index, mut rest) = rest.split_first().ok_or_else(|| bad("no call index".into()))?;
    let pallet = md.pallet_by_index(pallet_index).ok_or_else(|| bad(format!("no pallet with index {pallet_index}")))?;
    let call_ty = pallet.call_ty.ok_or_else(|| bad(format!("pallet {} has no calls", pallet.name)))?;
    let variant = md
        .variant_by_index(call_ty, call_index)
        .ok_or_else(|| bad(format!("pallet {} has no call with index {call_index}", pallet.name)))?;
    let mut args = Vec::with_capacity(variant.fields.len());
    for (i, field) in variant.fields.iter().enumerate() {
        let name = field.name.clone().unwrap_or_else(|| i.to_string());
        let v = scale_value::scale::decode_as_type(&mut rest, field.ty.id, &md.types)
            .map_err(|e| bad(format!("{}.{} argument '{name}': {e}", pallet.name, variant.name)))?;
        args.push((name, v));
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes left after {}.{}", rest.len(), pallet.name, variant.name)));
    }
    Ok(DecodedCall { pallet: pallet.name.clone(), name: variant.name.clone(), args })
}

/// An `AccountId32` argument (32 raw bytes; the runtime's wrapper type takes them as they are).
pub fn account(id: &crate::AccountId) -> Value {
    Value::from_bytes(id.0)
}

/// A `MultiAddress::Id` argument (`dest` of Balances transfers).
pub fn multi_address(id: &crate::AccountId) -> Value {
    Value::unnamed_variant("Id", [account(id)])
}

/// The 32 bytes of an `AccountId32` value as decoded (`[u8; 32]`, possibly wrapped once).
pub fn value_account(v: &Value<u32>) -> Option<crate::AccountId> {
    let bytes = value_bytes(v)?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok().map(crate::AccountId)
}

/// The bytes of a `[u8; N]` / `Vec<u8>` value, looking through single-field wrappers.
pub fn value_bytes(v: &Value<u32>) -> Option<Vec<u8>> {
    match &v.value {
        ValueDef::Composite(c) => {
            let vals: Vec<&Value<u32>> = c.values().collect();
            if vals.len() == 1 && !matches!(vals[0].value, ValueDef::Primitive(_)) {
                return value_bytes(vals[0]);
            }
            vals.iter().map(|x| x.as_u128().and_then(|n| u8::try_from(n).ok())).collect()
        }
        _ => None,
    }
}

/// A number, looking through single-field wrappers (`NetUid(u16)`, `Compact`, `{bits: u128}`).
pub fn value_u128(v: &Value<u32>) -> Option<u128> {
    match &v.value {
        ValueDef::Primitive(_) => v.as_u128(),
        ValueDef::Composite(Composite::Named(f)) if f.len() == 1 => value_u128(&f[0].1),
        ValueDef::Composite(Composite::Unnamed(f)) if f.len() == 1 => value_u128(&f[0]),
        _ => None,
    }
}

/// The named field of a composite value.
pub fn field<'a>(v: &'a Value<u32>, name: &str) -> Option<&'a Value<u32>> {
    match &v.value {
        ValueDef::Composite(Composite::Named(f)) => f.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}
