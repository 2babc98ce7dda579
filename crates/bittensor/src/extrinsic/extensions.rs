//! Signed extensions, filled in the order and with the types the runtime's metadata lists.
//!
//! Each extension contributes explicit data (sent in the extrinsic) and implicit data (signed,
//! never sent; the chain recomputes it). Known identifiers are filled from [`ExtensionParams`];
//! an extension this code does not know is accepted only when both its types are zero-sized
//! (Subtensor's own `SubtensorSignedExtension`, `CommitmentsSignedExtension`,
//! `SubtensorTransactionExtension`, `DrandPriority` are), otherwise it is an error naming it: a
//! guessed value would make every signature invalid.
//!
//! The same table decodes the explicit data of a submitted extrinsic, so a server checks a
//! signature over exactly what a client signed.

use parity_scale_codec::{Compact, Decode, Encode};
use scale_value::Value;

use super::call::value_u128;
use super::metadata::Metadata;
use super::ExtrinsicError;

/// A transaction's lifetime: immortal, or valid for `period` blocks from a birth block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Immortal,
    /// `period` is a power of two in 4..=65536; `phase` < `period`.
    Mortal {
        period: u64,
        phase: u64,
    },
}

impl Era {
    /// A mortal era starting at block `current` for about `period` blocks (rounded as
    /// `sp_runtime::generic::Era::mortal` does: a power of two in 4..=65536, the phase quantized).
    pub fn mortal(period: u64, current: u64) -> Self {
        let period = period.checked_next_power_of_two().unwrap_or(1 << 16).clamp(4, 1 << 16);
        let phase = current % period;
        let quantize_factor = (period >> 12).max(1);
        Era::Mortal { period, phase: phase / quantize_factor * quantize_factor }
    }

    /// The block the era starts at, given a block number inside it (`Era::birth`).
    pub fn birth(&self, current: u64) -> u64 {
        match *self {
            Era::Immortal => 0,
            Era::Mortal { period, phase } => (current.max(phase) - phase) / period * period + phase,
        }
    }

    /// SCALE bytes: `00` for immortal, else two bytes (`Era::encode`).
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Era::Immortal => vec![0],
            Era::Mortal { period, phase } => {
                let quantize_factor = (period >> 12).max(1);
                let low = u64::from(period.trailing_zeros()).saturating_sub(1).clamp(1, 15);
                let encoded = low | ((phase / quantize_factor) << 4);
                (encoded as u16).to_le_bytes().to_vec()
            }
        }
    }

    /// Reads an era from the front of `input` (`Era::decode`).
    pub fn decode(input: &mut &[u8]) -> Result<Self, ExtrinsicError> {
        let bad = |why: &str| ExtrinsicError::Malformed(format!("era: {why}"));
        let (&first, rest) = input.split_first().ok_or_else(|| bad("missing"))?;
        if first == 0 {
            *input = rest;
            return Ok(Era::Immortal);
        }
        let (&second, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let encoded = u64::from(u16::from_le_bytes([first, second]));
        let period = 2u64 << (encoded % (1 << 4));
        let quantize_factor = (period >> 12).max(1);
        let phase = (encoded >> 4) * quantize_factor;
        if period < 4 || phase >= period {
            return Err(bad("invalid period or phase"));
        }
        *input = rest;
        Ok(Era::Mortal { period, phase })
    }
}

/// What the signer decides and what the chain must agree on, for every known extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParams {
    pub spec_version: u32,
    pub transaction_version: u32,
    pub genesis_hash: [u8; 32],
    pub era: Era,
    /// The hash of the era's birth block (the genesis hash for an immortal era).
    pub era_birth_hash: [u8; 32],
    pub nonce: u64,
    /// Tip in rao.
    pub tip: u128,
}

/// The encoded extension data of one extrinsic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedExtensions {
    /// Carried in the extrinsic after the signature.
    pub explicit: Vec<u8>,
    /// Appended to the signing payload only.
    pub implicit: Vec<u8>,
}

/// The explicit values a submitted extrinsic carried, for the extensions this code knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExplicitValues {
    pub era: Option<Era>,
    pub nonce: Option<u64>,
    pub tip: Option<u128>,
    /// `CheckMetadataHash`'s mode byte (0 = disabled).
    pub metadata_hash_mode: Option<u8>,
}

/// Encodes every extension the metadata lists, in its order.
pub fn encode(md: &Metadata, p: &ExtensionParams) -> Result<EncodedExtensions, ExtrinsicError> {
    let mut out = EncodedExtensions::default();
    for ext in &md.signed_extensions {
        let id = ext.identifier.as_str();
        let encode_as = |v: Value, ty: u32, buf: &mut Vec<u8>, what: &str| {
            scale_value::scale::encode_as_type(&v, ty, &md.types, buf).map_err(|e| {
                ExtrinsicError::Metadata(format!(
                    "signed extension {id}: its {what} does not fit the runtime's {}: {e}",
                    md.type_name(ty)
                ))
            })
        };
        match id {
            "CheckSpecVersion" => {
                encode_as(Value::u128(p.spec_version.into()), ext.additional_ty, &mut out.implicit, "spec version")?
            }
            "CheckTxVersion" => encode_as(
                Value::u128(p.transaction_version.into()),
                ext.additional_ty,
                &mut out.implicit,
                "transaction version",
            )?,
            "CheckGenesis" => {
                encode_as(Value::from_bytes(p.genesis_hash), ext.additional_ty, &mut out.implicit, "genesis hash")?
            }
            "CheckMortality" | "CheckEra" => {
                // The era is a 256-variant enum in the registry; its compact two-byte form is
                // what `Era::encode` writes, so the bytes are written directly.
                if !md.type_name(md.innermost(ext.ty)).ends_with("::Era") {
                    return Err(unsupported(md, id, ext.ty));
                }
                out.explicit.extend(p.era.encode());
                encode_as(
                    Value::from_bytes(p.era_birth_hash),
                    ext.additional_ty,
                    &mut out.implicit,
                    "birth block hash",
                )?
            }
            "CheckNonce" => encode_as(Value::u128(p.nonce.into()), ext.ty, &mut out.explicit, "nonce")?,
            "ChargeTransactionPayment" => encode_as(Value::u128(p.tip), ext.ty, &mut out.explicit, "tip")?,
            "CheckMetadataHash" => {
                // Disabled mode: the runtime then expects no metadata hash in the implicit data.
                encode_as(
                    Value::named_composite([("mode", Value::unnamed_variant("Disabled", []))]),
                    ext.ty,
                    &mut out.explicit,
                    "mode",
                )?;
                encode_as(Value::unnamed_variant("None", []), ext.additional_ty, &mut out.implicit, "metadata hash")?
            }
            _ => {
                if !(md.is_zero_sized(ext.ty) && md.is_zero_sized(ext.additional_ty)) {
                    return Err(unsupported(md, id, if md.is_zero_sized(ext.ty) { ext.additional_ty } else { ext.ty }));
                }
            }
        }
    }
    Ok(out)
}

fn unsupported(md: &Metadata, id: &str, ty: u32) -> ExtrinsicError {
    ExtrinsicError::UnsupportedExtension { identifier: id.to_owned(), type_name: md.type_name(ty) }
}

/// Reads the explicit data of every extension from the front of `input` (after the signature),
/// returning the values this code knows; an unknown extension with data is an error.
pub fn decode_explicit(md: &Metadata, input: &mut &[u8]) -> Result<ExplicitValues, ExtrinsicError> {
    let mut values = ExplicitValues::default();
    for ext in &md.signed_extensions {
        let id = ext.identifier.as_str();
        match id {
            "CheckMortality" | "CheckEra" => values.era = Some(Era::decode(input)?),
            "CheckNonce" | "ChargeTransactionPayment" | "CheckMetadataHash" => {
                let v = scale_value::scale::decode_as_type(input, ext.ty, &md.types)
                    .map_err(|e| ExtrinsicError::Malformed(format!("signed extension {id}: {e}")))?;
                match id {
                    "CheckNonce" => values.nonce = value_u128(&v).and_then(|n| u64::try_from(n).ok()),
                    "ChargeTransactionPayment" => values.tip = value_u128(&v),
                    _ => {
                        let mode = match &v.value {
                            scale_value::ValueDef::Composite(c) => c.values().next().cloned(),
                            _ => None,
                        };
                        values.metadata_hash_mode = mode.and_then(|m| match m.value {
                            scale_value::ValueDef::Variant(var) => Some(if var.name == "Disabled" { 0 } else { 1 }),
                            _ => None,
                        });
                    }
                }
            }
            _ if md.is_zero_sized(ext.ty) => {}
            _ => return Err(unsupported(md, id, ext.ty)),
        }
    }
    Ok(values)
}

/// A compact-encoded nonce or tip, for code that writes extension bytes without metadata (tests).
pub fn compact(n: u128) -> Vec<u8> {
    Compact(n).encode()
}

/// Decodes a compact integer from the front of `input`.
pub fn read_compact(input: &mut &[u8]) -> Result<u128, ExtrinsicError> {
    Compact::<u128>::decode(input).map(|c| c.0).map_err(|e| ExtrinsicError::Malformed(format!("compact integer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn era_matches_sp_runtime() {
        // sp_runtime's own test vectors: mortal(64, 42) → period 64, phase 42, bytes [5, 42>>... ].
        let e = Era::mortal(64, 42);
        assert_eq!(e, Era::Mortal { period: 64, phase: 42 });
        assert_eq!(e.encode(), vec![165, 2]);
        assert_eq!(e.birth(42), 42);
        assert_eq!(e.birth(105), 42);
        assert_eq!(e.birth(106), 106);
        let e = Era::mortal(32768, 20000);
        assert_eq!(e, Era::Mortal { period: 32768, phase: 20000 });
        assert_eq!(e.encode(), vec![78, 156]);
        // Quantized phase for long periods; period rounded up to a power of two.
        assert_eq!(Era::mortal(100, 1000), Era::Mortal { period: 128, phase: 1000 % 128 });
        assert_eq!(Era::Immortal.encode(), vec![0]);
        for e in [Era::Immortal, Era::mortal(64, 42), Era::mortal(128, 7777), Era::mortal(65536, 123_456)] {
            let bytes = e.encode();
            assert_eq!(Era::decode(&mut &bytes[..]).expect("decodes"), e);
        }
        assert!(Era::decode(&mut &[0x01, 0x10][..]).is_err());
    }
}
