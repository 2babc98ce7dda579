//! The synapse: the message type of the Bittensor HTTP protocol, as the Python SDK shapes it.
//!
//! A synapse is a named set of fields plus common fields (`name`, `timeout`, sizes, the
//! `dendrite`/`axon` terminal infos, `computed_body_hash`). On the wire it is a JSON body and a
//! set of `bt_header_*` headers; the dendrite signs a message that includes a hash of the fields
//! listed in `required_hash_fields`. Everything here must render exactly as the SDK does (see
//! the protocol spec §2–§4), so typed synapses (the [`Synapse`] trait) and untyped ones
//! ([`RawSynapse`], for tools like `nicompute query`) share one JSON path.

pub mod py;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha3::{Digest, Sha3_256};

/// `sha3("")`: the body hash of every synapse without `required_hash_fields` (Allocate, Specs).
pub const EMPTY_BODY_HASH: &str = "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";
/// The SDK version our dendrite and axon announce (`9.0.0`, SN27's pin) as `major·10⁶+minor·10³+patch`.
pub const SDK_VERSION_INT: i64 = 9_000_000;
/// Default query timeout of the SDK, seconds.
pub const DEFAULT_TIMEOUT: f64 = 12.0;

/// The common field names; everything else in a body belongs to the synapse itself.
pub const COMMON_FIELDS: [&str; 7] =
    ["name", "timeout", "total_size", "header_size", "dendrite", "axon", "computed_body_hash"];

/// A typed synapse: its own fields (serde, declaration order), its route name and hash fields.
pub trait Synapse: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static {
    /// The Python class name: the route (`POST /{NAME}`) and the `name` field.
    const NAME: &'static str;
    /// The SDK's `required_hash_fields`, in declaration order.
    const REQUIRED_HASH_FIELDS: &'static [&'static str] = &[];

    /// The fields as a JSON map in declaration order.
    fn to_fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Builds the synapse from body fields: missing keys take defaults, unknown keys are
    /// ignored, wrong types are an error (pydantic's behaviour).
    fn from_fields(fields: Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::from_value(Value::Object(fields))
    }
}

/// `TerminalInfo`: what one side of a call knows about a terminal (all fields nullable).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TerminalInfo {
    pub status_code: Option<i64>,
    pub status_message: Option<String>,
    pub process_time: Option<f64>,
    pub ip: Option<String>,
    pub port: Option<i64>,
    pub version: Option<i64>,
    pub nonce: Option<u64>,
    pub uuid: Option<String>,
    pub hotkey: Option<String>,
    pub signature: Option<String>,
}

impl TerminalInfo {
    /// The `(suffix, str(value))` pairs of the non-null fields, in declaration order.
    pub fn header_pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::with_capacity(10);
        if let Some(x) = self.status_code {
            v.push(("status_code", x.to_string()));
        }
        if let Some(x) = &self.status_message {
            v.push(("status_message", x.clone()));
        }
        if let Some(x) = self.process_time {
            v.push(("process_time", py::float_repr(x)));
        }
        if let Some(x) = &self.ip {
            v.push(("ip", x.clone()));
        }
        if let Some(x) = self.port {
            v.push(("port", x.to_string()));
        }
        if let Some(x) = self.version {
            v.push(("version", x.to_string()));
        }
        if let Some(x) = self.nonce {
            v.push(("nonce", x.to_string()));
        }
        if let Some(x) = &self.uuid {
            v.push(("uuid", x.clone()));
        }
        if let Some(x) = &self.hotkey {
            v.push(("hotkey", x.clone()));
        }
        if let Some(x) = &self.signature {
            v.push(("signature", x.clone()));
        }
        v
    }

    /// Overlays the non-null fields of `other` (the SDK's `__dict__.update(exclude_none)`).
    pub fn overlay(&mut self, other: &TerminalInfo) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f.clone(); } )* };
        }
        take!(status_code, status_message, process_time, ip, port, version, nonce, uuid, hotkey, signature);
    }
}

/// The common fields of every synapse.
#[derive(Debug, Clone, PartialEq)]
pub struct SynapseHeader {
    pub name: Option<String>,
    pub timeout: Option<f64>,
    pub total_size: Option<i64>,
    pub header_size: Option<i64>,
    pub dendrite: TerminalInfo,
    pub axon: TerminalInfo,
    pub computed_body_hash: String,
}

impl Default for SynapseHeader {
    fn default() -> Self {
        Self {
            name: None,
            timeout: Some(DEFAULT_TIMEOUT),
            total_size: Some(0),
            header_size: Some(0),
            dendrite: TerminalInfo::default(),
            axon: TerminalInfo::default(),
            computed_body_hash: String::new(),
        }
    }
}

/// Why headers or a body could not be read as a synapse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ParseError {
    #[error("header '{name}' has a value that is not a valid {kind}: {value:?}")]
    HeaderValue { name: String, kind: &'static str, value: String },
    #[error("body is not a JSON object: {0}")]
    BodyNotObject(String),
    #[error("field '{field}' has the wrong type: {reason}")]
    FieldType { field: String, reason: String },
}

impl SynapseHeader {
    /// Splits a body object into the common fields and the synapse's own fields. Missing common
    /// fields take defaults; a wrong type is an error.
    pub fn split_body(mut body: Map<String, Value>) -> Result<(Self, Map<String, Value>), ParseError> {
        let mut h = SynapseHeader::default();
        let field_err = |field: &str, e: serde_json::Error| ParseError::FieldType {
            field: field.to_owned(),
            reason: e.to_string(),
        };
        if let Some(v) = body.shift_remove("name") {
            h.name = serde_json::from_value(v).map_err(|e| field_err("name", e))?;
        }
        if let Some(v) = body.shift_remove("timeout") {
            h.timeout = serde_json::from_value(v).map_err(|e| field_err("timeout", e))?;
        }
        if let Some(v) = body.shift_remove("total_size") {
            h.total_size = serde_json::from_value(v).map_err(|e| field_err("total_size", e))?;
        }
        if let Some(v) = body.shift_remove("header_size") {
            h.header_size = serde_json::from_value(v).map_err(|e| field_err("header_size", e))?;
        }
        if let Some(v) = body.shift_remove("dendrite") {
            h.dendrite = nullable_terminal(v).map_err(|e| field_err("dendrite", e))?;
        }
        if let Some(v) = body.shift_remove("axon") {
            h.axon = nullable_terminal(v).map_err(|e| field_err("axon", e))?;
        }
        if let Some(v) = body.shift_remove("computed_body_hash") {
            h.computed_body_hash = serde_json::from_value(v).map_err(|e| field_err("computed_body_hash", e))?;
        }
        Ok((h, body))
    }

    /// The full body object: common fields then the synapse's fields, in the SDK's order.
    pub fn join_body(&self, fields: &Map<String, Value>) -> Map<String, Value> {
        let mut m = Map::with_capacity(COMMON_FIELDS.len() + fields.len());
        m.insert("name".into(), self.name.clone().map_or(Value::Null, Value::String));
        m.insert("timeout".into(), self.timeout.map_or(Value::Null, Value::from));
        m.insert("total_size".into(), self.total_size.map_or(Value::Null, Value::from));
        m.insert("header_size".into(), self.header_size.map_or(Value::Null, Value::from));
        m.insert("dendrite".into(), serde_json::to_value(&self.dendrite).unwrap_or(Value::Null));
        m.insert("axon".into(), serde_json::to_value(&self.axon).unwrap_or(Value::Null));
        m.insert("computed_body_hash".into(), Value::String(self.computed_body_hash.clone()));
        for (k, v) in fields {
            if !COMMON_FIELDS.contains(&k.as_str()) {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }

    /// [`Self::join_body`] as something to serialize, without building the map (the axon's
    /// answer to every request: same bytes, no copies of the fields).
    pub fn joined<'a>(&'a self, fields: &'a Map<String, Value>) -> impl Serialize + 'a {
        Joined { header: self, fields }
    }

    /// [`header_map`] of [`Self::to_headers`], built directly: static names, values moved in.
    pub fn to_header_map(&self, body_hash: &str) -> HeaderMap {
        let mut m = HeaderMap::with_capacity(32);
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
                m.append(HeaderName::from_static(name), v);
            }
        };
        if let Some(n) = &self.name {
            put("name", n.clone());
        }
        if let Some(t) = self.timeout {
            put("timeout", py::float_repr(t));
        }
        for (k, v) in self.axon.header_pairs() {
            put(terminal_header(true, k), v);
        }
        for (k, v) in self.dendrite.header_pairs() {
            put(terminal_header(false, k), v);
        }
        put("header_size", self.header_size.unwrap_or(0).to_string());
        put("total_size", self.total_size.unwrap_or(0).to_string());
        put("computed_body_hash", body_hash.to_owned());
        m
    }

    /// The SDK's `to_headers()`: `name`, `timeout`, the non-null terminal fields, sizes, hash.
    pub fn to_headers(&self, body_hash: &str) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(24);
        if let Some(n) = &self.name {
            out.push(("name".to_owned(), n.clone()));
        }
        if let Some(t) = self.timeout {
            out.push(("timeout".to_owned(), py::float_repr(t)));
        }
        for (k, v) in self.axon.header_pairs() {
            out.push((format!("bt_header_axon_{k}"), v));
        }
        for (k, v) in self.dendrite.header_pairs() {
            out.push((format!("bt_header_dendrite_{k}"), v));
        }
        out.push(("header_size".to_owned(), self.header_size.unwrap_or(0).to_string()));
        out.push(("total_size".to_owned(), self.total_size.unwrap_or(0).to_string()));
        out.push(("computed_body_hash".to_owned(), body_hash.to_owned()));
        out
    }

    /// The SDK's `from_headers()`: reads the common fields and terminal infos from headers,
    /// type-checking every value (an unparsable value is an error, which the axon maps to 500).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ParseError> {
        let mut h = SynapseHeader {
            name: None,
            timeout: None,
            total_size: None,
            header_size: None,
            dendrite: TerminalInfo::default(),
            axon: TerminalInfo::default(),
            computed_body_hash: String::new(),
        };
        for (name, value) in headers {
            let key = name.as_str();
            let Some(text) = header_text(key, value)? else { continue };
            if let Some(rest) = key.strip_prefix("bt_header_axon_") {
                set_terminal(&mut h.axon, key, rest, text)?;
            } else if let Some(rest) = key.strip_prefix("bt_header_dendrite_") {
                set_terminal(&mut h.dendrite, key, rest, text)?;
            } else {
                match key {
                    "name" => h.name = Some(text.to_owned()),
                    "timeout" => h.timeout = Some(parse_float(key, text)?),
                    "total_size" => h.total_size = Some(parse_int(key, text)?),
                    "header_size" => h.header_size = Some(parse_int(key, text)?),
                    "computed_body_hash" => h.computed_body_hash = text.to_owned(),
                    _ => {}
                }
            }
        }
        Ok(h)
    }
}

/// The header name of a terminal field (`bt_header_axon_status_code`, …).
fn terminal_header(axon: bool, field: &'static str) -> &'static str {
    macro_rules! names {
        ($($f:literal),*) => {
            match (axon, field) {
                $( (true, $f) => concat!("bt_header_axon_", $f), (false, $f) => concat!("bt_header_dendrite_", $f), )*
                _ => "bt_header_unknown",
            }
        };
    }
    names!(
        "status_code",
        "status_message",
        "process_time",
        "ip",
        "port",
        "version",
        "nonce",
        "uuid",
        "hotkey",
        "signature"
    )
}

/// The body object of [`SynapseHeader::join_body`], serialized in place.
struct Joined<'a> {
    header: &'a SynapseHeader,
    fields: &'a Map<String, Value>,
}

impl Serialize for Joined<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let h = self.header;
        let own = self.fields.iter().filter(|(k, _)| !COMMON_FIELDS.contains(&k.as_str()));
        let mut m = s.serialize_map(Some(COMMON_FIELDS.len() + own.clone().count()))?;
        m.serialize_entry("name", &h.name)?;
        m.serialize_entry("timeout", &h.timeout)?;
        m.serialize_entry("total_size", &h.total_size)?;
        m.serialize_entry("header_size", &h.header_size)?;
        m.serialize_entry("dendrite", &h.dendrite)?;
        m.serialize_entry("axon", &h.axon)?;
        m.serialize_entry("computed_body_hash", &h.computed_body_hash)?;
        for (k, v) in own {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn nullable_terminal(v: Value) -> Result<TerminalInfo, serde_json::Error> {
    if v.is_null() {
        Ok(TerminalInfo::default())
    } else {
        serde_json::from_value(v)
    }
}

/// Header text for the names we read; other headers are skipped without decoding.
fn header_text<'a>(key: &str, value: &'a HeaderValue) -> Result<Option<&'a str>, ParseError> {
    let relevant = key.starts_with("bt_header_")
        || matches!(key, "name" | "timeout" | "total_size" | "header_size" | "computed_body_hash");
    if !relevant {
        return Ok(None);
    }
    value.to_str().map(Some).map_err(|_| ParseError::HeaderValue {
        name: key.to_owned(),
        kind: "text",
        value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
    })
}

fn set_terminal(t: &mut TerminalInfo, key: &str, field: &str, text: &str) -> Result<(), ParseError> {
    match field {
        "status_code" => t.status_code = Some(parse_int(key, text)?),
        "status_message" => t.status_message = Some(text.to_owned()),
        "process_time" => t.process_time = Some(parse_float(key, text)?),
        "ip" => t.ip = Some(text.to_owned()),
        "port" => t.port = Some(parse_int(key, text)?),
        "version" => t.version = Some(parse_int(key, text)?),
        "nonce" => t.nonce = Some(parse_int::<u64>(key, text)?),
        "uuid" => t.uuid = Some(text.to_owned()),
        "hotkey" => t.hotkey = Some(text.to_owned()),
        "signature" => t.signature = Some(text.to_owned()),
        _ => {}
    }
    Ok(())
}

fn parse_int<T: std::str::FromStr>(key: &str, text: &str) -> Result<T, ParseError> {
    text.trim().parse().map_err(|_| ParseError::HeaderValue {
        name: key.to_owned(),
        kind: "integer",
        value: text.to_owned(),
    })
}

fn parse_float(key: &str, text: &str) -> Result<f64, ParseError> {
    text.trim().parse().map_err(|_| ParseError::HeaderValue {
        name: key.to_owned(),
        kind: "number",
        value: text.to_owned(),
    })
}

/// The SDK's `body_hash`: SHA3-256 over the concatenated SHA3-256 hex digests of Python `str()`
/// of each required hash field (missing fields count as `None`).
pub fn body_hash<S: AsRef<str>>(fields: &Map<String, Value>, hash_fields: &[S]) -> String {
    if hash_fields.is_empty() {
        return EMPTY_BODY_HASH.to_owned();
    }
    let mut outer = Sha3_256::new();
    for f in hash_fields {
        let v = fields.get(f.as_ref()).unwrap_or(&Value::Null);
        let inner = Sha3_256::digest(py::py_str(v).as_bytes());
        outer.update(hex::encode(inner).as_bytes());
    }
    hex::encode(outer.finalize())
}

/// An untyped synapse: a name, its fields in order, and its hash fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawSynapse {
    pub name: String,
    pub fields: Map<String, Value>,
    pub hash_fields: Vec<String>,
}

impl RawSynapse {
    pub fn new(name: impl Into<String>, fields: Map<String, Value>) -> Self {
        Self { name: name.into(), fields, hash_fields: Vec::new() }
    }

    pub fn from_typed<S: Synapse>(s: &S) -> Self {
        Self {
            name: S::NAME.to_owned(),
            fields: s.to_fields(),
            hash_fields: S::REQUIRED_HASH_FIELDS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub fn body_hash(&self) -> String {
        body_hash(&self.fields, &self.hash_fields)
    }
}

/// Builds a header map from name/value pairs, skipping values that are not valid header text.
pub fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut m = HeaderMap::with_capacity(pairs.len() + 4);
    for (k, v) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            m.append(name, value);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_body_and_header_map_equal_the_built_ones() {
        let mut h = SynapseHeader { name: Some("Specs".into()), ..SynapseHeader::default() };
        h.timeout = Some(12.5);
        h.dendrite.hotkey = Some("5F".into());
        h.dendrite.nonce = Some(u64::MAX);
        h.axon.status_code = Some(200);
        h.axon.process_time = Some(7.152557373046875e-05);
        h.axon.status_message = Some("Success \u{e9}".into());
        h.computed_body_hash = "abc".into();
        let fields = match serde_json::json!({"specs_input": "x", "name": "ignored", "n": [1, 2.5, null], "s": "\u{1F600}"})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for (spaced, ascii) in [(false, false), (true, true)] {
            assert_eq!(
                py::to_json(&h.joined(&fields), spaced, ascii),
                py::to_json(&Value::Object(h.join_body(&fields)), spaced, ascii)
            );
        }
        assert_eq!(h.to_header_map("hash"), header_map(&h.to_headers("hash")));
    }
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn empty_hash_constant() {
        assert_eq!(body_hash::<&str>(&Map::new(), &[]), EMPTY_BODY_HASH);
    }

    #[test]
    fn hashed_echo_example_from_spec() {
        let fields = json!({"text": "hello", "numbers": [1, 2, 3]});
        let Value::Object(m) = fields else { unreachable!() };
        assert_eq!(
            body_hash(&m, &["text", "numbers"]),
            "3b23b33b8af6f011f0667d57cfd3c9c1fa39e9de4210fd9a463d83d1c457eb65"
        );
    }

    #[test]
    fn bad_header_value_is_an_error() {
        let mut h = HeaderMap::new();
        h.insert("bt_header_dendrite_nonce", HeaderValue::from_static("not-a-number"));
        assert!(matches!(SynapseHeader::from_headers(&h), Err(ParseError::HeaderValue { .. })));
    }

    fn arb_terminal() -> impl Strategy<Value = TerminalInfo> {
        (
            proptest::option::of(100i64..600),
            proptest::option::of("[ -~]{0,40}"),
            proptest::option::of(0.0f64..1e6),
            proptest::option::of("[0-9.]{1,15}"),
            proptest::option::of(0i64..65536),
            proptest::option::of(0i64..20_000_000),
            proptest::option::of(any::<u64>()),
            proptest::option::of("[a-f0-9-]{36}"),
        )
            .prop_map(|(status_code, status_message, process_time, ip, port, version, nonce, uuid)| {
                TerminalInfo {
                    status_code,
                    // Header values cannot carry leading/trailing spaces through HTTP intact.
                    status_message: status_message.map(|s| s.trim().to_owned()),
                    process_time,
                    ip,
                    port,
                    version,
                    nonce,
                    uuid,
                    hotkey: None,
                    signature: None,
                }
            })
    }

    proptest! {
        #[test]
        fn header_round_trip(axon in arb_terminal(), dendrite in arb_terminal(), timeout in 0.0f64..1000.0) {
            let h = SynapseHeader { name: Some("Specs".into()), timeout: Some(timeout), total_size: Some(0), header_size: Some(0), dendrite, axon, computed_body_hash: EMPTY_BODY_HASH.into() };
            let map = header_map(&h.to_headers(EMPTY_BODY_HASH));
            let back = SynapseHeader::from_headers(&map).expect("parse");
            prop_assert_eq!(back, h);
        }

        #[test]
        fn body_round_trip(axon in arb_terminal(), dendrite in arb_terminal(), n in any::<i64>(), s in "\\PC{0,30}") {
            let h = SynapseHeader { name: Some("X".into()), dendrite, axon, ..SynapseHeader::default() };
            let fields = json!({"n": n, "s": s, "l": [1.5, null]});
            let Value::Object(fields) = fields else { unreachable!() };
            let body = py::to_json(&Value::Object(h.join_body(&fields)), true, true);
            let parsed: Map<String, Value> = serde_json::from_slice(&body).expect("json");
            let (h2, f2) = SynapseHeader::split_body(parsed).expect("split");
            prop_assert_eq!(h2, h);
            prop_assert_eq!(f2, fields);
        }
    }
}
