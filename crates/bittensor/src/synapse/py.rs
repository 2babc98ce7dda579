//! Python renderings the wire depends on: `str()`/`repr()` of JSON values (the body hash hashes
//! them), float `repr` (header values like `timeout: 12.0`), and `json.dumps` formatting.
//!
//! The SDK builds hashes and headers from Python objects, so a byte-for-byte peer must render
//! values as CPython does. Limits: strings are escaped as `repr` does for ASCII controls and
//! quotes; exotic non-printable Unicode (format characters, separators) is kept as-is.

use std::fmt::Write as _;
use std::io;

use serde_json::Value;

/// CPython `repr(float)`: the shortest round-trip digits, fixed notation for decimal exponents
/// in [-4, 16), scientific (`1e-05`, `1.5e+16`) otherwise, `.0` on integral values.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` prints the shortest round-trip digits, e.g. `7.152557373046875e-5`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp output has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within the digits
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// CPython `str(value)` of the Python object a JSON value stands for: strings bare, everything
/// else as `repr`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            py_repr_into(other, &mut out);
            out
        }
    }
}

/// CPython `repr` of the Python object a JSON value stands for.
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    py_repr_into(v, &mut out);
    out
}

fn py_repr_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                out.push_str(&float_repr(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => str_repr_into(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr_into(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                str_repr_into(k, out);
                out.push_str(": ");
                py_repr_into(item, out);
            }
            out.push('}');
        }
    }
}

/// CPython `repr(str)`: single quotes unless the text holds `'` and no `"`.
fn str_repr_into(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// A serde_json formatter matching Python's `json.dumps`: floats as `repr`, separators either
/// `", "`/`": "` (the SDK's request bodies) or `","`/`":"` (FastAPI's responses), and optional
/// `ensure_ascii` escaping.
#[derive(Debug, Clone, Copy)]
pub struct PyJsonFormatter {
    pub spaced: bool,
    pub ensure_ascii: bool,
}

impl serde_json::ser::Formatter for PyJsonFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(float_repr(value).as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else if self.spaced {
            w.write_all(b", ")
        } else {
            w.write_all(b",")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.begin_array_value(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(if self.spaced { b": " } else { b":" })
    }
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if !self.ensure_ascii || fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut buf = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serializes like `json.dumps` with the given formatter settings.
pub fn to_json(v: &impl serde::Serialize, spaced: bool, ensure_ascii: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyJsonFormatter { spaced, ensure_ascii });
    v.serialize(&mut ser).expect("serializing a JSON value into memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_cpython() {
        for (x, want) in [
            (12.0, "12.0"),
            (0.1, "0.1"),
            (7.152557373046875e-05, "7.152557373046875e-05"),
            (9.441375732421875e-05, "9.441375732421875e-05"),
            (0.0001, "0.0001"),
            (1e-05, "1e-05"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (-2.5, "-2.5"),
            (1.5e300, "1.5e+300"),
            (0.12877726554870605, "0.12877726554870605"),
        ] {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn str_and_repr_match_cpython() {
        assert_eq!(py_str(&json!("hello")), "hello");
        assert_eq!(py_str(&json!([1, 2, 3])), "[1, 2, 3]");
        assert_eq!(py_str(&json!({"a": true, "b": null, "c": 1.0})), "{'a': True, 'b': None, 'c': 1.0}");
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
        assert_eq!(py_repr(&json!("a'b\"c")), "'a\\'b\"c'");
        assert_eq!(py_repr(&json!("tab\there\n")), "'tab\\there\\n'");
        assert_eq!(py_repr(&json!("\u{1}é")), "'\\x01é'");
    }

    #[test]
    fn json_dumps_formatting() {
        let v = json!({"a": 12.0, "b": [1, "é"], "c": {}});
        assert_eq!(to_json(&v, true, true), br#"{"a": 12.0, "b": [1, "\u00e9"], "c": {}}"#);
        assert_eq!(String::from_utf8(to_json(&v, false, false)).expect("utf8"), r#"{"a":12.0,"b":[1,"é"],"c":{}}"#);
    }
}
