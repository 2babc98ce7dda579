//! What an SSH public key must look like, for everyone: the renter's `a` (`--ssh-key`) and
//! `exchange-key`, the miner's allocation and `exchange_key`, and a host key in a miner's signed
//! answer. Before, `a` accepted `sk-` keys that the miner's `exchange_key` then refused.
//!
//! A key is one line `TYPE BASE64 [COMMENT]`: a type below, a base64 blob that decodes and names
//! the same type in its first field (the SSH wire encoding), and a comment without control
//! characters. No `authorized_keys` options (`command="…"`, `from=…`): the line must start with
//! its type, so a key can never smuggle a forced command or a second key into the file.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Longest key line accepted (an RSA-16384 key is about 2.8 KiB).
pub const MAX_LINE: usize = 8 * 1024;

/// The key types OpenSSH's `authorized_keys` takes today (DSA is gone since OpenSSH 9.8).
pub const TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why a line is not an SSH public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("the SSH key is empty")]
    Empty,
    #[error("the SSH key must be one line (it holds a line break or a NUL)")]
    MultiLine,
    #[error("the SSH key is {0} bytes long; at most {MAX_LINE} are accepted")]
    TooLong(usize),
    #[error("'{0}' is not an SSH public key type (one of: ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com); give the .pub file's line")]
    UnknownType(String),
    #[error("the SSH key's data is not valid: {0}")]
    BadData(&'static str),
    #[error("the SSH key's comment holds control characters")]
    BadComment,
}

/// Checks one public key line; the line trimmed, as it should be stored and sent.
pub fn validate_public_key(line: &str) -> Result<String, KeyError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(KeyError::Empty);
    }
    if line.contains(['\n', '\r', '\0']) {
        return Err(KeyError::MultiLine);
    }
    if line.len() > MAX_LINE {
        return Err(KeyError::TooLong(line.len()));
    }
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or("");
    if !TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).filter(|c| !c.is_control()).collect();
        return Err(KeyError::UnknownType(shown));
    }
    let blob = parts.next().ok_or(KeyError::BadData("no key data"))?;
    let bytes = B64.decode(blob).map_err(|_| KeyError::BadData("not base64"))?;
    if bytes.len() < 4 {
        return Err(KeyError::BadData("too short"));
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if bytes.get(4..4 + len) != Some(kind.as_bytes()) {
        return Err(KeyError::BadData("its encoded type differs from the type in front"));
    }
    if bytes.len() <= 4 + len {
        return Err(KeyError::BadData("no key after the type"));
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(KeyError::BadComment);
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 key line and a sk-ed25519 blob built by hand (type, then key bytes).
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x me@laptop";

    fn blob(kind: &str, tail: &[u8]) -> String {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(tail);
        format!("{kind} {}", B64.encode(b))
    }

    #[test]
    fn good_keys_pass_trimmed() {
        assert_eq!(validate_public_key(&format!("  {ED25519}\n")), Ok(ED25519.to_owned()));
        let sk = blob("sk-ssh-ed25519@openssh.com", &[0, 0, 0, 32, 7, 7]);
        assert_eq!(
            validate_public_key(&sk),
            Ok(sk.clone()),
            "security keys are as good as any (a and the miner agree)"
        );
    }

    #[test]
    fn bad_keys_say_why() {
        assert_eq!(validate_public_key(" "), Err(KeyError::Empty));
        assert_eq!(validate_public_key(&format!("{ED25519}\nssh-rsa AAAA")), Err(KeyError::MultiLine));
        assert!(matches!(validate_public_key("command=\"rm -rf /\" ssh-ed25519 AAAA"), Err(KeyError::UnknownType(_))));
        assert!(matches!(validate_public_key("ssh-dss AAAA"), Err(KeyError::UnknownType(_))));
        assert_eq!(validate_public_key("ssh-ed25519"), Err(KeyError::BadData("no key data")));
        assert_eq!(validate_public_key("ssh-ed25519 !!!!"), Err(KeyError::BadData("not base64")));
        let lying = blob("ssh-rsa", &[1, 2, 3]).replacen("ssh-rsa", "ssh-ed25519", 1);
        assert!(matches!(validate_public_key(&lying), Err(KeyError::BadData(_))));
        assert_eq!(validate_public_key(&format!("{ED25519} a\u{1b}[2Jb")), Err(KeyError::BadComment));
        assert!(matches!(validate_public_key(&"x".repeat(MAX_LINE + 1)), Err(KeyError::TooLong(_))));
    }
}
