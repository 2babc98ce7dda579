//! Shared test harness: fixture paths, raw HTTP files, test synapses and a test axon.

use std::path::PathBuf;

use bittensor::axon::{Axon, HandlerError, Request};
use bittensor::{Keypair, Synapse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn keys() -> Value {
    let text = std::fs::read_to_string(fixtures().join("http/keys.json")).expect("keys.json");
    serde_json::from_str(&text).expect("keys json")
}

pub fn key(name: &str) -> Keypair {
    let k = keys();
    Keypair::from_mnemonic(k[name]["mnemonic"].as_str().expect("mnemonic")).expect("valid mnemonic")
}

/// A raw HTTP message from a capture file.
#[derive(Debug)]
pub struct RawHttp {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RawHttp {
    pub fn parse(data: &[u8]) -> Option<Self> {
        let split = data.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&data[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let start_line = lines.next()?.to_owned();
        let headers =
            lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))).collect();
        Some(Self { start_line, headers, body: Bytes::copy_from_slice(&data[split + 4..]) })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn status(&self) -> Option<u16> {
        self.start_line.split(' ').nth(1)?.parse().ok()
    }

    pub fn to_request(&self) -> http::Request<Bytes> {
        let mut parts = self.start_line.split(' ');
        let method = parts.next().unwrap_or("POST");
        let path = parts.next().unwrap_or("/");
        let mut b = http::Request::builder().method(method).uri(path);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(self.body.clone()).expect("request")
    }
}

/// SN27's Allocate, field for field (the compute crate owns the real one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Allocate {
    pub timeline: i64,
    pub device_requirement: Map<String, Value>,
    pub checking: bool,
    pub output: Map<String, Value>,
    pub public_key: String,
    pub docker_requirement: Map<String, Value>,
    pub docker_change: bool,
    pub docker_action: Map<String, Value>,
}

impl Default for Allocate {
    fn default() -> Self {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Self {
            timeline: 0,
            device_requirement: Map::new(),
            checking: true,
            output: Map::new(),
            public_key: String::new(),
            docker_requirement: obj(
                json!({"base_image":"ubuntu","ssh_key":"","ssh_port":4444,"volume_path":"/tmp","dockerfile":""}),
            ),
            docker_change: false,
            docker_action: obj(json!({"action":"","ssh_key":"","key_type":""})),
        }
    }
}

impl Synapse for Allocate {
    const NAME: &'static str = "Allocate";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Specs {
    pub specs_input: String,
    pub specs_output: String,
}

impl Synapse for Specs {
    const NAME: &'static str = "Specs";
}

/// The capture's synapse with `required_hash_fields = ("text", "numbers")`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HashedEcho {
    pub text: String,
    pub numbers: Vec<i64>,
    pub reply: String,
}

impl Synapse for HashedEcho {
    const NAME: &'static str = "HashedEcho";
    const REQUIRED_HASH_FIELDS: &'static [&'static str] = &["text", "numbers"];
}

/// The capture's Specs answer.
pub const SPECS_OUTPUT: &str = r#"{"cpu": {"brand_raw": "PeerCPU", "count": 16, "vendor_id_raw": "AuthenticAMD"}, "gpu": {"capacity": 81559, "count": 1, "details": [{"capacity": 81559, "name": "NVIDIA H100 80GB HBM3"}]}, "hard_disk": {"free": 900000000000, "total": 1000000000000}, "ram": {"available": 260000000000, "total": 270000000000}}"#;

/// The credentials the capture's axon encrypted for `allocate_alloc_ok` (what its `output.info`
/// decrypts to with `tests/fixtures/rsa/private.pem`).
pub const CAPTURED_CREDENTIALS: &str =
    r#"{"username": "root", "password": "peer-fixed-password", "port": 4444, "version": 183}"#;

/// SN27's envelope: RSA-OAEP (SHA-256, MGF1-SHA-256, no label) to a SubjectPublicKeyInfo PEM,
/// standard base64.
pub fn encrypt_to(public_pem: &str, plaintext: &[u8]) -> String {
    use base64::Engine as _;
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_pem(public_pem).expect("public key PEM");
    let ct = key.encrypt(&mut rand::rngs::OsRng, rsa::Oaep::new::<sha2::Sha256>(), plaintext).expect("encrypt");
    base64::engine::general_purpose::STANDARD.encode(ct)
}

/// [`encrypt_to`] undone with the fixture's private key.
pub fn decrypt_with_fixture_key(info_b64: &str) -> String {
    use base64::Engine as _;
    use rsa::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(fixtures().join("rsa/private.pem")).expect("private.pem");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).expect("private key PEM");
    let ct = base64::engine::general_purpose::STANDARD.decode(info_b64).expect("base64");
    String::from_utf8(key.decrypt(rsa::Oaep::new::<sha2::Sha256>(), &ct).expect("decrypt")).expect("utf8")
}

/// How the test axon's handlers behave.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    pub fail: bool,
    pub sleep_ms: u64,
}

/// An axon like the capture's: Allocate, Specs, HashedEcho; the denied hotkey blacklisted.
pub fn test_axon(keypair: Keypair, behaviour: Behaviour) -> Axon {
    let denied = keys()["denied_hotkey"]["ss58"].as_str().expect("denied").to_owned();
    Axon::new(keypair)
        .attach(move |r: Request<Allocate>| async move {
            if behaviour.sleep_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(behaviour.sleep_ms)).await;
            }
            if behaviour.fail {
                return Err(HandlerError::Internal("forward raised".into()));
            }
            // The capture's handler answers `{"status": true, "port": 4444}`, and to an allocation
            // (a public key, not a check) adds the credentials RSA-encrypted to that key.
            let mut s = r.synapse;
            let mut out = json!({"status": true, "port": 4444});
            if !s.checking && s.timeline > 0 && !s.public_key.is_empty() {
                out["info"] = json!(encrypt_to(&s.public_key, CAPTURED_CREDENTIALS.as_bytes()));
            }
            s.output = match out {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            Ok(s)
        })
        .attach(move |r: Request<Specs>| async move {
            if let Some(ms) = r.synapse.specs_input.strip_prefix("sleep_ms:") {
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let mut s = r.synapse;
            s.specs_output = SPECS_OUTPUT.to_owned();
            Ok(s)
        })
        .attach(|r: Request<HashedEcho>| async move {
            let mut s = r.synapse;
            s.reply = format!("{}|{}", s.text, s.numbers.iter().sum::<i64>());
            Ok(s)
        })
        .blacklist(move |head| {
            (head.header.dendrite.hotkey.as_deref() == Some(denied.as_str())).then(|| "Blacklisted hotkey".to_owned())
        })
}

/// A local port that refuses connections and that nothing else can take while the returned
/// socket lives: bound, never listening (no bind-and-drop race).
pub fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}

pub fn peer() -> std::net::SocketAddr {
    "127.0.0.1:40000".parse().expect("addr")
}

/// The real Subtensor runtime under chopsticks, started for one test on a port of its own; `None`
/// (after saying so) where chopsticks or Node.js is missing, unless `NICOMPUTE_REQUIRE_RUNTIME=1`
/// (CI, scripts/test.sh), where that is a failure.
// Saying plainly that a check did not run is the point of the skip message.
#[allow(clippy::print_stderr)]
pub fn runtime() -> Option<bittensor::chopsticks::Chopsticks> {
    use bittensor::chopsticks::{Chopsticks, ChopsticksConfig};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = ChopsticksConfig::in_project(&root);
    let required = std::env::var("NICOMPUTE_REQUIRE_RUNTIME").is_ok_and(|v| v == "1");
    if let Err(why) = cfg.installed() {
        assert!(!required, "NICOMPUTE_REQUIRE_RUNTIME=1 but {why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Chopsticks::start(&cfg).unwrap_or_else(|e| panic!("{e}")))
}
