//! The canonical JSON bytes that nicompute peers sign: RFC 8785 (JSON Canonicalization Scheme)
//! restricted to integer numbers, so that both sides derive the same bytes from the same values
//! whatever serializer produced or parsed the body in between (our dendrite writes Python's
//! spaced, ASCII-escaped style; a proxy may re-encode it).
//!
//! - objects: members sorted by their names' UTF-16 code units, `{"a":1,"b":2}`, no whitespace;
//!   arrays in order;
//! - strings: `"` and `\` escaped, `\b \f \n \r \t` in their short forms, other characters below
//!   U+0020 as `\u00xx` (lower-case hex), everything else as raw UTF-8;
//! - numbers: integers only (`i64`/`u64`, in decimal); a fraction or exponent is refused, since
//!   the shortest round-trip form of a float is not portable between serializers;
//! - `true`, `false`, `null` as themselves.

use serde_json::{Map, Value};

/// A value the canonical form does not cover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {what} (signed fields hold integers, strings, booleans, null, arrays and objects only)")]
pub struct NotCanonical {
    /// Where in the value (`$.device_requirement.gpu.capacity`).
    pub path: String,
    pub what: &'static str,
}

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, NotCanonical> {
    let mut out = Vec::with_capacity(256);
    write(&mut out, value, &mut String::from("$"))?;
    Ok(out)
}

fn write(out: &mut Vec<u8>, value: &Value, path: &mut String) -> Result<(), NotCanonical> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(NotCanonical { path: path.clone(), what: "a number with a fraction or an exponent" });
            }
        }
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                write(out, item, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        Value::Object(map) => object(out, map, path)?,
    }
    Ok(())
}

fn object(out: &mut Vec<u8>, map: &Map<String, Value>, path: &mut String) -> Result<(), NotCanonical> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, key);
        out.push(b':');
        let len = path.len();
        path.push('.');
        path.push_str(key);
        write(out, &map[key.as_str()], path)?;
        path.truncate(len);
    }
    out.push(b'}');
    Ok(())
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: &Value) -> String {
        String::from_utf8(to_vec(v).expect("canonical")).expect("utf8")
    }

    #[test]
    fn rfc8785_shapes() {
        assert_eq!(text(&json!({"b": [1, -2, true, null], "a": "x"})), r#"{"a":"x","b":[1,-2,true,null]}"#);
        assert_eq!(text(&json!("\u{1}\n\t\"\\é€")), "\"\\u0001\\n\\t\\\"\\\\é€\"");
        assert_eq!(text(&json!(u64::MAX)), "18446744073709551615");
        // UTF-16 order: U+FB01 sorts after U+1F600's surrogates (0xD83D) in UTF-16, though not
        // in UTF-8 — RFC 8785 §3.2.3's own example of the rule.
        assert_eq!(text(&json!({"\u{fb01}": 1, "\u{1f600}": 2})), "{\"\u{1f600}\":2,\"\u{fb01}\":1}");
    }

    #[test]
    fn the_encoding_of_the_input_does_not_matter() {
        // Python's spaced, ASCII-escaped form and a compact one parse to the same canonical bytes.
        let python: Value = serde_json::from_str(r#"{"k": "caf\u00e9", "n": {"z": 1, "a": [2]}}"#).expect("json");
        let compact: Value = serde_json::from_str("{\"n\":{\"a\":[2],\"z\":1},\"k\":\"café\"}").expect("json");
        assert_eq!(to_vec(&python), to_vec(&compact));
    }

    #[test]
    fn floats_are_refused_with_their_place() {
        let e = to_vec(&json!({"gpu": {"capacity": 1.5}})).expect_err("float");
        assert_eq!(e.path, "$.gpu.capacity");
        assert!(to_vec(&json!([1.0])).is_err(), "an integral float is still a float on the wire");
    }
}
