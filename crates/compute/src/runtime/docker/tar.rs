//! A minimal in-memory ustar writer: directories and regular files owned by root, which is all
//! the Docker archive API needs here (the password, the authorized keys, the SSH host key) — no
//! dependency on a tar crate for a handful of entries.

use std::time::{SystemTime, UNIX_EPOCH};

/// A minimal in-memory ustar writer: directories and regular files owned by root, which is all
/// the archive API needs here (no dependency on a tar crate for four entries).
pub(super) struct TarBuilder {
    buf: Vec<u8>,
    mtime: u64,
}

impl TarBuilder {
    pub(super) fn new() -> Self {
        let mtime = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self { buf: Vec::new(), mtime }
    }

    pub(super) fn dir(&mut self, path: &str, mode: u32) {
        self.header(&format!("{}/", path.trim_end_matches('/')), mode, 0, b'5');
    }

    pub(super) fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.header(path, mode, data.len() as u64, b'0');
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    /// Names here are short constants, well under ustar's 100 bytes.
    fn header(&mut self, name: &str, mode: u32, size: u64, kind: u8) {
        let mut h = [0u8; 512];
        put(&mut h[0..100], name.as_bytes());
        put_octal(&mut h[100..108], u64::from(mode));
        put_octal(&mut h[108..116], 0); // uid root
        put_octal(&mut h[116..124], 0); // gid root
        put_octal(&mut h[124..136], size);
        put_octal(&mut h[136..148], self.mtime);
        h[156] = kind;
        put(&mut h[257..263], b"ustar\0");
        put(&mut h[263..265], b"00");
        put(&mut h[265..297], b"root");
        put(&mut h[297..329], b"root");
        // The checksum is computed with its own field read as eight spaces.
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h[148..156], format!("{sum:06o}\0 ").as_bytes());
        self.buf.extend_from_slice(&h);
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf.resize(self.buf.len() + 1024, 0);
        self.buf
    }
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    put(field, format!("{value:0width$o}\0").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_valid_ustar() {
        let mut tar = TarBuilder::new();
        tar.dir("root/.ssh", 0o700);
        tar.file("root/.ssh/authorized_keys", 0o600, b"ssh-ed25519 AAAA x\n");
        let bytes = tar.finish();
        assert_eq!(bytes.len(), 512 + 512 + 512 + 1024);
        for header in [&bytes[0..512], &bytes[512..1024]] {
            let stored = std::str::from_utf8(&header[148..154]).unwrap();
            let mut copy = header.to_vec();
            copy[148..156].fill(b' ');
            let sum: u32 = copy.iter().map(|&b| u32::from(b)).sum();
            assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
            assert_eq!(&header[257..263], b"ustar\0");
        }
        assert_eq!(&bytes[0..10], b"root/.ssh/");
        assert_eq!(bytes[156], b'5');
        assert_eq!(&bytes[100..108], b"0000700\0");
        assert_eq!(bytes[512 + 156], b'0');
        assert_eq!(&bytes[512 + 124..512 + 136], b"00000000023\0");
        assert_eq!(&bytes[1024..1043], b"ssh-ed25519 AAAA x\n");
        assert!(bytes[1043..].iter().all(|&b| b == 0));
    }

    #[test]
    fn tar_is_readable_by_gnu_tar_when_present() {
        let mut tar = TarBuilder::new();
        tar.dir("run/nicompute", 0o700);
        tar.file("run/nicompute/chpasswd", 0o600, b"root:secret\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, tar.finish()).unwrap();
        let Ok(out) = std::process::Command::new("tar").arg("-tvf").arg(&path).output() else {
            return;
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("drwx------ root/root"), "{listing}");
        assert!(listing.contains("-rw------- root/root        12"), "{listing}");
        assert!(listing.contains("run/nicompute/chpasswd"), "{listing}");
    }
}
