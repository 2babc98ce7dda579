//! Decoding runtime-API results: exact consumption, and the legacy `Vec<u8>` wrapper.
//!
//! Runtimes before spec 233 declared their API results as `Vec<u8>`, so the bytes arrive behind
//! an extra compact length (fixture 03). We decode the typed form first and fall back to
//! stripping one length prefix only when the typed decode does not consume exactly all bytes —
//! never silently accepting trailing or missing bytes.

use parity_scale_codec::{Compact, Decode};

/// Why bytes from the chain did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("result is not hex: {0}")]
    NotHex(String),
    #[error("{what}: SCALE data is truncated or malformed ({reason}); {len} bytes received")]
    Invalid { what: &'static str, reason: String, len: usize },
    #[error("{what}: {extra} bytes left over after decoding {len} bytes (a newer runtime layout?)")]
    TrailingBytes { what: &'static str, extra: usize, len: usize },
}

/// Decodes `0x`-prefixed (or bare) hex.
pub fn from_hex(s: &str) -> Result<Vec<u8>, DecodeError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(digits).map_err(|e| DecodeError::NotHex(format!("{e} (in {} characters)", digits.len())))
}

/// Decodes `T` consuming every byte.
pub fn decode_exact<T: Decode>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let mut input = bytes;
    let value =
        T::decode(&mut input).map_err(|e| DecodeError::Invalid { what, reason: e.to_string(), len: bytes.len() })?;
    if !input.is_empty() {
        return Err(DecodeError::TrailingBytes { what, extra: input.len(), len: bytes.len() });
    }
    Ok(value)
}

/// Decodes a runtime-API result: the typed value, or the same behind a legacy `Vec<u8>` prefix.
pub fn decode_result<T: Decode>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    match decode_exact::<T>(bytes, what) {
        Ok(v) => Ok(v),
        Err(typed_err) => {
            let mut input = bytes;
            let Ok(Compact(len)) = Compact::<u32>::decode(&mut input) else { return Err(typed_err) };
            if input.len() != len as usize {
                return Err(typed_err);
            }
            decode_exact::<T>(input, what).map_err(|_| typed_err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parity_scale_codec::Encode;

    #[test]
    fn typed_legacy_truncated_and_trailing() {
        let v: Vec<u16> = vec![1, 2, 3];
        let typed = v.encode();
        assert_eq!(decode_result::<Vec<u16>>(&typed, "v").expect("typed"), v);
        let legacy = typed.encode(); // Vec<u8> around it
        assert_eq!(decode_result::<Vec<u16>>(&legacy, "v").expect("legacy"), v);
        assert!(matches!(decode_result::<Vec<u16>>(&typed[..typed.len() - 1], "v"), Err(DecodeError::Invalid { .. })));
        let mut long = typed.clone();
        long.push(9);
        assert!(matches!(decode_result::<Vec<u16>>(&long, "v"), Err(DecodeError::TrailingBytes { .. })));
        assert!(from_hex("0xzz").is_err());
        assert_eq!(from_hex("0x0100").expect("hex"), vec![1, 0]);
    }
}
