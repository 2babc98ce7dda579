//! The SSH credentials inside a miner's encrypted `info`, and the checks they pass before the
//! renter uses them.
//!
//! SN27 1.8.3 sends `{"username", "password", "port", "version"}`; v2.x adds
//! `external_user_ports` (`{"27015": 27015, …}`: container port → host port) before `version`.
//! Everything in it comes from the miner, so reading it checks what later reaches a shell or a
//! terminal ([`crate::protocol::login`]): a plain username, a port that is one, a password and a
//! version without control characters, ports that are ports. A miner that sends anything else
//! gets its allocation refused (and released) with the reason.

use std::fmt;

use rsa::pkcs8::der::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::CryptoError;
use crate::protocol::docker::MAX_USER_PORTS;
use crate::protocol::login;

/// Longest password accepted from a miner (SN27's are 10 characters, ours 20).
pub const MAX_PASSWORD: usize = 256;
/// Longest version text accepted from a miner.
const MAX_VERSION_TEXT: usize = 64;

/// The `version` a miner puts in its credentials: SN27 sends `__version_as_int__` (an integer,
/// `183` for v1.8.3); text is accepted for peers that send a version string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsVersion {
    Number(i64),
    Text(String),
}

impl fmt::Display for CredentialsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for CredentialsVersion {
    fn from(n: i64) -> Self {
        Self::Number(n)
    }
}

impl From<&str> for CredentialsVersion {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl CredentialsVersion {
    pub fn to_value(&self) -> Value {
        match self {
            Self::Number(n) => Value::from(*n),
            Self::Text(s) => Value::from(s.as_str()),
        }
    }
}

/// The SSH credentials a miner returns for an allocation, as the JSON object
/// `{"username": "root", "password": "...", "port": 4444, ["external_user_ports": {…},]
/// "version": 183}`.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
    pub port: u16,
    pub version: CredentialsVersion,
    /// SN27 v2.x: container port → host port, in the miner's order; `None` from 1.8.3 peers.
    pub external_user_ports: Option<Vec<(u16, u16)>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("port", &self.port)
            .field("version", &self.version)
            .field("external_user_ports", &self.external_user_ports)
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.username == other.username
            && self.password.expose_secret() == other.password.expose_secret()
            && self.port == other.port
            && self.version == other.version
            && self.external_user_ports == other.external_user_ports
    }
}

/// `{"27015": 27015, …}` as JSON (Python's `json.dumps` writes int keys as strings).
pub fn user_ports_value(ports: &[(u16, u16)]) -> Value {
    Value::Object(ports.iter().map(|(c, h)| (c.to_string(), Value::from(*h))).collect())
}

/// Reads `{"27015": 27015, …}`: at most [`MAX_USER_PORTS`] entries, every key and value a port.
pub fn user_ports_from(value: &Value) -> Result<Vec<(u16, u16)>, String> {
    let Value::Object(m) = value else { return Err("\"external_user_ports\" is not an object".into()) };
    if m.len() > MAX_USER_PORTS {
        return Err(format!("\"external_user_ports\" has {} entries; at most {MAX_USER_PORTS}", m.len()));
    }
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let container = k.trim().parse::<u16>().ok().filter(|p| *p != 0);
        let host = match v {
            Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Value::String(s) => s.trim().parse::<u16>().ok(),
            _ => None,
        }
        .filter(|p| *p != 0);
        match (container, host) {
            (Some(c), Some(h)) => out.push((c, h)),
            _ => return Err("\"external_user_ports\" maps something that is not a port".into()),
        }
    }
    Ok(out)
}

impl Credentials {
    /// The JSON bytes exactly as Python's `json.dumps(info)` renders them on the miner: keys in
    /// SN27's order; `", "` and `": "` separators; non-ASCII escaped. Wiped from memory on drop
    /// since they hold the password.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut m = Map::new();
        m.insert("username".into(), Value::from(self.username.as_str()));
        m.insert("password".into(), Value::from(self.password.expose_secret()));
        m.insert("port".into(), Value::from(self.port));
        if let Some(ports) = &self.external_user_ports {
            m.insert("external_user_ports".into(), user_ports_value(ports));
        }
        m.insert("version".into(), self.version.to_value());
        // The intermediate `Value` is not wiped (serde_json has no zeroize support); the bytes are.
        Zeroizing::new(bittensor::synapse::py::to_json(&Value::Object(m), true, true))
    }

    /// Parses and checks the credentials JSON; extra keys are ignored, the four SN27 keys are
    /// required (see the module docs for the checks).
    pub fn from_json(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = |m: &str| CryptoError::MalformedCredentials(m.to_owned());
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| CryptoError::MalformedCredentials(e.to_string()))?;
        let Value::Object(mut m) = value else {
            return Err(bad("expected a JSON object"));
        };
        let username = match m.remove("username") {
            Some(Value::String(s)) => s,
            _ => return Err(bad("\"username\" is missing or not a string")),
        };
        login::check_username(&username).map_err(|e| CryptoError::MalformedCredentials(e.to_string()))?;
        let password = match m.remove("password") {
            Some(Value::String(s)) => s,
            _ => return Err(bad("\"password\" is missing or not a string")),
        };
        if password.len() > MAX_PASSWORD || password.chars().any(char::is_control) {
            return Err(bad("\"password\" is longer than 256 bytes or holds control characters"));
        }
        let password = SecretString::from(password);
        let port = match m.get("port") {
            Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
            _ => None,
        }
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("\"port\" is missing or not a port number"))?;
        let version = match m.get("version") {
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => CredentialsVersion::Number(i),
                None => CredentialsVersion::Text(n.to_string()),
            },
            Some(Value::String(s)) if s.len() <= MAX_VERSION_TEXT && !s.chars().any(char::is_control) => {
                CredentialsVersion::Text(s.clone())
            }
            Some(Value::String(_)) => return Err(bad("\"version\" is too long or holds control characters")),
            _ => return Err(bad("\"version\" is missing or neither a number nor a string")),
        };
        let external_user_ports = match m.get("external_user_ports") {
            None | Some(Value::Null) => None,
            Some(v) => Some(user_ports_from(v).map_err(CryptoError::MalformedCredentials)?),
        };
        Ok(Self { username, password, port, version, external_user_ports })
    }

    /// Encrypts these credentials to a requester's public key PEM, as the miner answers them.
    pub fn encrypt_for(&self, public_pem: &str) -> Result<String, CryptoError> {
        super::encrypt_b64(public_pem, &self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Credentials, CryptoError> {
        Credentials::from_json(json.as_bytes())
    }

    #[test]
    fn v2_credentials_round_trip_in_sn27_order() {
        let c = read(
            r#"{"username": "root", "password": "aB3dE5gH7j", "port": 4444, "external_user_ports": {"27015": 40001, "27016": 40002}, "version": 221}"#,
        )
        .expect("v2.x credentials");
        assert_eq!(c.external_user_ports, Some(vec![(27015, 40001), (27016, 40002)]));
        assert_eq!(
            String::from_utf8(c.to_json().to_vec()).expect("utf8"),
            r#"{"username": "root", "password": "aB3dE5gH7j", "port": 4444, "external_user_ports": {"27015": 40001, "27016": 40002}, "version": 221}"#
        );
    }

    #[test]
    fn four_user_ports_fit_the_rsa_block_with_our_password() {
        let c = Credentials {
            username: "root".into(),
            password: SecretString::from("x".repeat(20)),
            port: 65535,
            version: CredentialsVersion::Number(221),
            external_user_ports: Some(vec![(65535, 65535); MAX_USER_PORTS]),
        };
        assert!(c.to_json().len() <= crate::crypto::max_plaintext_len(256), "{}", c.to_json().len());
    }

    #[test]
    fn hostile_credentials_are_refused() {
        for bad in [
            r#"{"username": "-oProxyCommand=touch pwned #", "password": "p", "port": 22, "version": 1}"#,
            r#"{"username": "root", "password": "p\u001b[2J", "port": 22, "version": 1}"#,
            r#"{"username": "root", "password": "p", "port": 0, "version": 1}"#,
            r#"{"username": "root", "password": "p", "port": 22, "version": "\u001b]0;x\u0007"}"#,
            r#"{"username": "root", "password": "p", "port": 22, "version": 1, "external_user_ports": {"x": 1}}"#,
            r#"{"username": "root", "password": "p", "port": 22, "version": 1, "external_user_ports": [1]}"#,
        ] {
            assert!(matches!(read(bad), Err(CryptoError::MalformedCredentials(_))), "{bad}");
        }
    }
}
