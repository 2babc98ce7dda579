//! Is an SSH server answering at an address? Connect and read its identification line. The
//! allocator waits on it before it reports a machine ready, and the Docker runtime before it
//! reports a container started (Docker's port proxy accepts connections before sshd listens,
//! so a bare TCP connect proves nothing).

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Pause between two tries to reach a new allocation's SSH server.
const SSH_RETRY: Duration = Duration::from_millis(500);
/// Longest single try to read an SSH banner.
const SSH_TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a server's greeting is read looking for the `SSH-` line (RFC 4253 §4.2 allows
/// other lines first).
const SSH_BANNER_LIMIT: usize = 8192;

/// Waits until `ip:port` greets with an SSH banner, for up to `wait`. `false` when it did not
/// (or `wait` is zero: nothing is tried).
pub async fn wait_for_ssh(ip: &str, port: u16, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left.min(SSH_TRY_TIMEOUT), ssh_banner(ip, port)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => tracing::debug!(ip, port, error = %e, "SSH not ready yet"),
            Err(_) => tracing::debug!(ip, port, "SSH not ready yet: no banner"),
        }
        if Instant::now() + SSH_RETRY >= until {
            return false;
        }
        tokio::time::sleep(SSH_RETRY).await;
    }
}

/// Connects and reads until a line starts with `SSH-`.
async fn ssh_banner(ip: &str, port: u16) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| e.to_string())?;
    let mut seen = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before an SSH banner".into());
        }
        seen.extend_from_slice(&chunk[..n]);
        if seen.split(|b| *b == b'\n').any(|line| line.starts_with(b"SSH-")) {
            return Ok(());
        }
        if seen.len() > SSH_BANNER_LIMIT {
            return Err(format!("no SSH banner in the first {SSH_BANNER_LIMIT} bytes"));
        }
    }
}
