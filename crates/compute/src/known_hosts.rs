//! One `known_hosts` file per allocation, in OpenSSH's format, read by OpenSSH (through
//! `UserKnownHostsFile` and `HostKeyAlias`) and by the built-in client alike.
//!
//! Machines come and go on the same ip:port (a miner's next allocation reuses its SSH port), so
//! one shared `~/.ssh/known_hosts` either trusts a stranger or breaks on every new allocation
//! ("Host key verification failed"). Here each allocation has its own file and names its host by
//! an alias, `nicompute-<miner hotkey>`, not by address. For an allocation a nicompute miner
//! signed, the file holds exactly the signed key (the pin) and a different key is refused; for
//! one from an SN27 peer, which vouches for nothing, the first key seen is kept (trust on first
//! use, per allocation).

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The name an allocation's host goes by in its file.
pub fn alias(miner_hotkey: &str) -> String {
    format!("nicompute-{miner_hotkey}")
}

/// The file of the allocation of `miner_hotkey` made with the key whose fingerprint is
/// `key_fingerprint` (hex), under `dir`.
pub fn path(dir: &Path, miner_hotkey: &str, key_fingerprint: &str) -> PathBuf {
    let fp: String = key_fingerprint.chars().filter(char::is_ascii_hexdigit).take(16).collect();
    let hk: String = miner_hotkey.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
    dir.join(format!("{hk}-{fp}"))
}

/// `TYPE BASE64` of an OpenSSH public key line (its comment dropped).
fn key_part(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}

/// The keys recorded for `alias` in `file` (none when the file does not exist).
pub fn keys_for(file: &Path, alias: &str) -> io::Result<Vec<String>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (host, key) = l.trim().split_once(char::is_whitespace)?;
            host.split(',').any(|h| h == alias).then(|| key_part(key)).flatten()
        })
        .collect())
}

/// Whether `key` (an OpenSSH public key line) is the one recorded for `alias`.
pub fn matches(recorded: &[String], key: &str) -> bool {
    key_part(key).is_some_and(|k| recorded.contains(&k))
}

/// Writes `file` (0600, its directory 0700) with exactly one entry: `alias key` — the pin.
pub fn pin(file: &Path, alias: &str, key: &str) -> io::Result<()> {
    let key = key_part(key).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a public key line"))?;
    write(file, &format!("{alias} {key}\n"), false)
}

/// Adds `alias key` to `file` (trust on first use).
pub fn add(file: &Path, alias: &str, key: &str) -> io::Result<()> {
    let key = key_part(key).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a public key line"))?;
    write(file, &format!("{alias} {key}\n"), true)
}

/// Makes sure `file`'s directory exists (0700) so OpenSSH can record a first key in it.
pub fn prepare(file: &Path) -> io::Result<()> {
    match file.parent() {
        Some(dir) => std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir),
        None => Ok(()),
    }
}

fn write(file: &Path, text: &str, append: bool) -> io::Result<()> {
    prepare(file)?;
    if append {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
        return f.write_all(text.as_bytes());
    }
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x miner";
    const B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd2qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x";

    #[test]
    fn pin_then_read_back_only_that_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = path(&dir.path().join("kh"), "5Fabc", "0123456789abcdef0123");
        assert_eq!(f.file_name().and_then(|n| n.to_str()), Some("5Fabc-0123456789abcdef"));
        assert!(keys_for(&f, "nicompute-5Fabc").expect("none yet").is_empty());
        pin(&f, &alias("5Fabc"), A).expect("pin");
        let known = keys_for(&f, &alias("5Fabc")).expect("read");
        assert!(matches(&known, A) && !matches(&known, B));
        assert!(keys_for(&f, "nicompute-5Fother").expect("read").is_empty());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777, 0o600);
        pin(&f, &alias("5Fabc"), B).expect("re-pin");
        assert!(matches(&keys_for(&f, &alias("5Fabc")).expect("read"), B), "the pin moves, it does not pile up");
        assert_eq!(keys_for(&f, &alias("5Fabc")).expect("read").len(), 1);
    }
}
