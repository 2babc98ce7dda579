//! Decoding runtime-API results: exact consumption, and the legacy `Vec<u8>` wrapper.
//!
//! Runtimes before spec 233 declared their API results as `Vec<u8>`, so the bytes arrive behind
//! an extra compact length (fixture 03). We decode the typed form first and fall back to
//! stripping one length prefix only when the typed decode does not consume exactly all bytes —
//! never silently accepting trailing or missing bytes.

use parity_scale_codec::{Compact, Decode};

/// Why bytes from the chain did not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("result is not hex: {0}")]
    NotHex(String),
    #[error("{what}: SCALE data is truncated or malformed ({reason}); {len} bytes received")]
    Invalid { what: &'static str, reason: String, len: usize },
    #[error("{what}: {extra} bytes left over after decoding {len} bytes (a newer runtime layout?)")]
    TrailingBytes { what: &'static str, extra: usize, len: usize },
}

/// Hex digit values; 0xff marks a byte that is not a hex digit.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes `0x`-prefixed (or bare) hex. Results run to hundreds of kilobytes per call, so this
/// is a table lookup per digit rather than the general-purpose decoder.
pub fn from_hex(s: &str) -> Result<Vec<u8>, DecodeError> {
    let digits = s.strip_prefix("0x").unwrap_or(s).as_bytes();
    if digits.len() % 2 != 0 {
        return Err(DecodeError::NotHex(format!("odd number of digits ({})", digits.len())));
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        if (hi | lo) & 0xf0 != 0 {
            return Err(DecodeError::NotHex(format!("invalid character at position {} of {}", 2 * i, digits.len())));
        }
        out.push(hi << 4 | lo);
    }
    Ok(out)
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

/// `Option<SubnetState>` with the fast decoder, the same exactness and legacy fallback.
pub fn decode_subnet_state(bytes: &[u8]) -> Result<Option<super::types::SubnetState>, DecodeError> {
    const WHAT: &str = "get_subnet_state";
    let exact = |b: &[u8]| -> Result<_, DecodeError> {
        let mut input = b;
        let v = super::types::SubnetState::decode_option(&mut input).map_err(|e| DecodeError::Invalid {
            what: WHAT,
            reason: e.to_string(),
            len: b.len(),
        })?;
        if !input.is_empty() {
            return Err(DecodeError::TrailingBytes { what: WHAT, extra: input.len(), len: b.len() });
        }
        Ok(v)
    };
    exact(bytes).or_else(|typed_err| {
        let mut input = bytes;
        match Compact::<u32>::decode(&mut input) {
            Ok(Compact(len)) if input.len() == len as usize => exact(input).map_err(|_| typed_err),
            _ => Err(typed_err),
        }
    })
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
        assert!(from_hex("0x123").is_err());
        assert!(from_hex("0x12g4").is_err());
        assert_eq!(from_hex("0x0100").expect("hex"), vec![1, 0]);
        assert_eq!(from_hex("DEADbeef").expect("hex"), vec![0xde, 0xad, 0xbe, 0xef]);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&hex::encode(&all)).expect("hex"), all);
    }
}
