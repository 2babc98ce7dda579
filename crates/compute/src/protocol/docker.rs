//! `Allocate.docker_requirement` as a nicompute miner reads it: SN27 1.8.3's `ssh_key`, our
//! `ttl_seconds`, and SN27 v2.x's additive keys (`neuralinternet/ni-compute` 2.2.1 and 2.4.0):
//!
//! - `external_user_ports`: container ports the renter wants reachable, each mapped to a host
//!   port the miner chooses from its `--external.ports` (SN27's default 27015–27018). SN27
//!   miners overwrite the key with `{27015: ext1, …, 27018: ext4}` whatever the renter sent; a
//!   nicompute miner honours the keys the renter sent (at most [`MAX_USER_PORTS`]) and SN27's
//!   four when it sent none. Values from the renter are ignored: the miner picks.
//! - `external_ports`: `{"ssh": port}`, filled by the miner itself; ignored when sent.
//! - `image`, `env`, `internal_ports` (2.4.0): the image to run, its environment, and the
//!   container port of SSH (`{"ssh": 22}`), each honoured only within what the operator allows
//!   (the miner's offer); anything else is refused with [`Code::NotOffered`].
//!
//! This module checks the shape of what a renter sent ([`Code::BadRequest`] otherwise); the
//! miner decides what it offers.

use serde_json::{Map, Value};

use super::keys;
use super::refusal::{Code, Refusal};

/// The container ports SN27 v2.x maps for every allocation.
pub const SN27_USER_PORTS: [u16; 4] = [27015, 27016, 27017, 27018];
/// Most user ports one allocation may map: the credentials, with a 20-character password, must
/// fit RSA-OAEP-SHA256's 190 bytes.
pub const MAX_USER_PORTS: usize = 4;
/// Most environment variables one request may set.
pub const MAX_ENV: usize = 64;

/// What a renter asked for in `docker_requirement`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerRequest {
    /// The renter's SSH public key (checked by [`keys::validate_public_key`]).
    pub ssh_key: Option<String>,
    /// Our lease in seconds (SN27 miners use `timeline` days).
    pub ttl_seconds: Option<u64>,
    /// `external_user_ports`' container ports, in the order sent; `None`: not sent.
    pub user_ports: Option<Vec<u16>>,
    /// `image`, when sent.
    pub image: Option<String>,
    /// `env`, when sent.
    pub env: Vec<(String, String)>,
    /// `internal_ports.ssh`: the container port sshd listens on, when sent.
    pub ssh_internal_port: Option<u16>,
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::new(Code::BadRequest, msg)
}

fn port(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0),
        Value::String(s) => s.trim().parse::<u16>().ok().filter(|p| *p != 0),
        _ => None,
    }
}

/// Whether `image` is a plain Docker reference: `[registry/]name[:tag][@digest]` characters.
pub fn valid_image(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 255
        && !image.starts_with(['-', '.', '/'])
        && image.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:@".contains(c))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Reads `docker_requirement`.
pub fn read(req: &Map<String, Value>) -> Result<DockerRequest, Refusal> {
    let mut out = DockerRequest::default();
    if let Some(key) = req.get("ssh_key") {
        let text = key.as_str().ok_or_else(|| bad("docker_requirement.ssh_key must be a string"))?;
        if !text.trim().is_empty() {
            out.ssh_key = Some(
                keys::validate_public_key(text)
                    .map_err(|e| Refusal::new(Code::BadRequest, format!("docker_requirement.ssh_key: {e}")))?,
            );
        }
    }
    out.ttl_seconds = req.get("ttl_seconds").and_then(Value::as_u64).filter(|s| *s > 0);
    match req.get("external_user_ports") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let mut ports = Vec::new();
            for k in m.keys() {
                let p = port(&Value::String(k.clone()))
                    .ok_or_else(|| bad(format!("docker_requirement.external_user_ports: '{k}' is not a port")))?;
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            if ports.len() > MAX_USER_PORTS {
                return Err(Refusal::new(
                    Code::NotOffered,
                    format!("{} user ports asked for; a miner maps at most {MAX_USER_PORTS}", ports.len()),
                ));
            }
            out.user_ports = Some(ports);
        }
        Some(_) => return Err(bad("docker_requirement.external_user_ports must be an object {container port: …}")),
    }
    match req.get("image") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) if valid_image(s) => out.image = Some(s.clone()),
        Some(_) => return Err(bad("docker_requirement.image is not a Docker image reference")),
    }
    match req.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if m.len() > MAX_ENV {
                return Err(bad(format!("docker_requirement.env has {} variables; at most {MAX_ENV}", m.len())));
            }
            for (k, v) in m {
                if !valid_env_name(k) {
                    return Err(bad(format!("docker_requirement.env: '{}' is not a variable name", k.escape_debug())));
                }
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(bad(format!("docker_requirement.env.{k} must be a string"))),
                };
                if value.contains('\0') || value.len() > 4096 {
                    return Err(bad(format!("docker_requirement.env.{k}: a NUL or more than 4096 bytes")));
                }
                out.env.push((k.clone(), value));
            }
        }
        Some(_) => return Err(bad("docker_requirement.env must be an object {NAME: value}")),
    }
    match req.get("internal_ports") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k != "ssh" {
                    return Err(Refusal::new(
                        Code::NotOffered,
                        format!("docker_requirement.internal_ports.{}: only \"ssh\" is mapped", k.escape_debug()),
                    ));
                }
                out.ssh_internal_port =
                    Some(port(v).ok_or_else(|| bad("docker_requirement.internal_ports.ssh is not a port"))?);
            }
        }
        Some(_) => return Err(bad("docker_requirement.internal_ports must be an object {\"ssh\": port}")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn sn27_defaults_and_v2_keys() {
        let r = read(&map(json!({"base_image": "ubuntu", "ssh_key": "", "ssh_port": 4444}))).expect("1.8.3 shape");
        assert_eq!(r, DockerRequest::default());
        let r = read(&map(json!({
            "external_user_ports": {"8888": 0, "27015": 27015},
            "image": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
            "env": {"JUPYTER_TOKEN": "t", "N": 3},
            "internal_ports": {"ssh": 2222},
            "external_ports": {"ssh": 1}
        })))
        .expect("v2.4 shape");
        assert_eq!(r.user_ports, Some(vec![8888, 27015]));
        assert_eq!(r.image.as_deref(), Some("nvidia/cuda:12.4.1-runtime-ubuntu22.04"));
        assert_eq!(r.env, [("JUPYTER_TOKEN".into(), "t".into()), ("N".into(), "3".into())]);
        assert_eq!(r.ssh_internal_port, Some(2222));
    }

    #[test]
    fn bad_shapes_are_typed() {
        for (v, code) in [
            (json!({"ssh_key": "ssh-ed25519"}), Code::BadRequest),
            (json!({"external_user_ports": {"x": 1}}), Code::BadRequest),
            (json!({"external_user_ports": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}}), Code::NotOffered),
            (json!({"image": "; rm -rf /"}), Code::BadRequest),
            (json!({"env": {"A B": "x"}}), Code::BadRequest),
            (json!({"internal_ports": {"http": 80}}), Code::NotOffered),
        ] {
            assert_eq!(read(&map(v.clone())).map_err(|r| r.code), Err(Some(code)), "{v}");
        }
    }
}
