//! Storage keys and values by pallet and item name: the key is
//! `twox128(pallet) ‖ twox128(item) ‖ hasher(key part)…` with the hashers the metadata names, the
//! value is decoded with the item's type (its default when the key is absent), so balances, burn
//! costs, uids and stakes are read the way the SDK reads them, on any runtime version.

use scale_info::TypeDef;
use scale_value::Value;

use super::metadata::{Metadata, StorageEntry, StorageHasher};
use super::ExtrinsicError;

/// The storage key of `pallet.item` at `keys` (none for a plain value).
pub fn key(md: &Metadata, pallet: &str, item: &str, keys: &[Value]) -> Result<Vec<u8>, ExtrinsicError> {
    let (p, entry) = md.storage(pallet, item)?;
    let mut out = Vec::with_capacity(32 + keys.len() * 48);
    out.extend_from_slice(&sp_crypto_hashing::twox_128(p.storage_prefix.as_bytes()));
    out.extend_from_slice(&sp_crypto_hashing::twox_128(entry.name.as_bytes()));
    if keys.len() != entry.hashers.len() {
        return Err(ExtrinsicError::Arg(format!(
            "{pallet}.{item} takes {} key part(s), {} given",
            entry.hashers.len(),
            keys.len()
        )));
    }
    let part_types = key_part_types(md, entry)?;
    for ((value, hasher), ty) in keys.iter().zip(&entry.hashers).zip(part_types) {
        let mut encoded = Vec::new();
        scale_value::scale::encode_as_type(value, ty, &md.types, &mut encoded).map_err(|e| {
            ExtrinsicError::Arg(format!("{pallet}.{item}: a key part does not fit {}: {e}", md.type_name(ty)))
        })?;
        hash_into(hasher, &encoded, &mut out);
    }
    Ok(out)
}

/// The prefix every key of `pallet.item` starts with: `twox128(pallet) ‖ twox128(item)`.
pub fn prefix(md: &Metadata, pallet: &str, item: &str) -> Result<Vec<u8>, ExtrinsicError> {
    let (p, entry) = md.storage(pallet, item)?;
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&sp_crypto_hashing::twox_128(p.storage_prefix.as_bytes()));
    out.extend_from_slice(&sp_crypto_hashing::twox_128(entry.name.as_bytes()));
    Ok(out)
}

/// The type of each key part: the key type itself for one hasher, the tuple's fields otherwise.
fn key_part_types(md: &Metadata, entry: &StorageEntry) -> Result<Vec<u32>, ExtrinsicError> {
    let Some(key_ty) = entry.key_ty else { return Ok(Vec::new()) };
    if entry.hashers.len() == 1 {
        return Ok(vec![key_ty]);
    }
    match md.types.resolve(key_ty).map(|t| &t.type_def) {
        Some(TypeDef::Tuple(t)) if t.fields.len() == entry.hashers.len() => Ok(t.fields.iter().map(|f| f.id).collect()),
        _ => Err(ExtrinsicError::Metadata(format!(
            "storage item {} has {} hashers but its key is not a tuple of as many parts",
            entry.name,
            entry.hashers.len()
        ))),
    }
}

fn hash_into(hasher: &StorageHasher, data: &[u8], out: &mut Vec<u8>) {
    use sp_crypto_hashing as h;
    match hasher {
        StorageHasher::Blake2_128 => out.extend_from_slice(&h::blake2_128(data)),
        StorageHasher::Blake2_256 => out.extend_from_slice(&h::blake2_256(data)),
        StorageHasher::Blake2_128Concat => {
            out.extend_from_slice(&h::blake2_128(data));
            out.extend_from_slice(data);
        }
        StorageHasher::Twox128 => out.extend_from_slice(&h::twox_128(data)),
        StorageHasher::Twox256 => out.extend_from_slice(&h::twox_256(data)),
        StorageHasher::Twox64Concat => {
            out.extend_from_slice(&h::twox_64(data));
            out.extend_from_slice(data);
        }
        StorageHasher::Identity => out.extend_from_slice(data),
    }
}

/// Decodes a storage value read at `pallet.item`: `None` for an absent `Option` item, the
/// metadata's default for an absent defaulted item. The bytes must be consumed exactly.
pub fn decode_value(
    md: &Metadata,
    pallet: &str,
    item: &str,
    bytes: Option<&[u8]>,
) -> Result<Option<Value<u32>>, ExtrinsicError> {
    let (_, entry) = md.storage(pallet, item)?;
    let data = match bytes {
        Some(b) => b,
        None if entry.optional => return Ok(None),
        None => entry.default.as_slice(),
    };
    let mut input = data;
    let v = scale_value::scale::decode_as_type(&mut input, entry.value_ty, &md.types)
        .map_err(|e| ExtrinsicError::Malformed(format!("{pallet}.{item}: {e}")))?;
    if !input.is_empty() {
        return Err(ExtrinsicError::Malformed(format!("{pallet}.{item}: {} bytes left over", input.len())));
    }
    Ok(Some(v))
}

/// Decodes a pallet constant with its type.
pub fn constant(md: &Metadata, pallet: &str, name: &str) -> Result<Value<u32>, ExtrinsicError> {
    let c = md.constant(pallet, name)?;
    let mut input = c.value.as_slice();
    scale_value::scale::decode_as_type(&mut input, c.ty, &md.types)
        .map_err(|e| ExtrinsicError::Malformed(format!("constant {pallet}.{name}: {e}")))
}
