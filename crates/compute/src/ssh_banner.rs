//! Is an SSH server answering at an address? Connect and read its identification line. The
//! allocator waits on it before it reports a machine ready, and the Docker runtime before it
//! reports a container started (Docker's port proxy accepts connections before sshd listens, so a
//! bare TCP connect proves nothing). One rule for both, RFC 4253 §4.2's: the server may send
//! other lines first; the identification line starts with `SSH-2.0-` (or `SSH-1.99-`, a server
//! that also speaks the old protocol) and is at most 255 bytes with its CR LF. What is read is
//! bounded in bytes and in time.

use std::io;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::Instant;

/// Pause between two tries to reach a new allocation's SSH server.
const RETRY: Duration = Duration::from_millis(500);
/// Longest single try to read a banner in [`wait_for_ssh`].
const TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a greeting is read looking for the identification line.
pub const BANNER_LIMIT: usize = 8192;
/// The longest identification line, CR LF included (RFC 4253 §4.2).
const LINE_LIMIT: usize = 255;

/// Why no SSH identification line was read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BannerError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("read: {0}")]
    Read(io::Error),
    #[error("closed before the SSH banner")]
    Closed,
    #[error("no SSH banner in the first {BANNER_LIMIT} bytes")]
    TooLong,
    #[error("not an SSH-2 banner: {0:?}")]
    NotSsh2(String),
    #[error("no banner within {0:?}")]
    Timeout(Duration),
}

/// Connects to `addr` and reads the server's identification line (returned without CR LF),
/// within `timeout`.
pub async fn read_banner(addr: impl ToSocketAddrs, timeout: Duration) -> Result<String, BannerError> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(BannerError::Connect)?;
        let mut seen: Vec<u8> = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        let mut start = 0; // where the line being read begins
        loop {
            while let Some(end) = seen[start..].iter().position(|b| *b == b'\n').map(|i| start + i) {
                let line = &seen[start..end];
                if line.starts_with(b"SSH-") {
                    let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_owned();
                    let ok = text.starts_with("SSH-2.0-") || text.starts_with("SSH-1.99-");
                    return if ok && line.len() < LINE_LIMIT { Ok(text) } else { Err(BannerError::NotSsh2(text)) };
                }
                start = end + 1;
            }
            if seen.len() >= BANNER_LIMIT {
                return Err(BannerError::TooLong);
            }
            let want = chunk.len().min(BANNER_LIMIT - seen.len());
            let n = stream.read(&mut chunk[..want]).await.map_err(BannerError::Read)?;
            if n == 0 {
                return Err(BannerError::Closed);
            }
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(BannerError::Timeout(timeout)))
}

/// Waits until `ip:port` greets with an SSH banner, for up to `wait`. `false` when it did not
/// (or `wait` is zero: nothing is tried).
pub async fn wait_for_ssh(ip: &str, port: u16, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match read_banner((ip, port), left.min(TRY_TIMEOUT)).await {
            Ok(_) => return true,
            Err(e) => tracing::debug!(ip, port, error = %e, "SSH not ready yet"),
        }
        if Instant::now() + RETRY >= until {
            return false;
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server on a port of its own that greets each connection with `greeting`, then waits.
    async fn greeter(greeting: Vec<u8>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let g = greeting.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(&g).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        addr
    }

    async fn read(greeting: &[u8]) -> Result<String, BannerError> {
        read_banner(greeter(greeting.to_vec()).await, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn the_identification_line_may_follow_other_lines() {
        assert_eq!(read(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n").await.expect("banner"), "SSH-2.0-OpenSSH_9.2p1 Debian");
        assert_eq!(read(b"SSH-1.99-old\r\n").await.expect("banner"), "SSH-1.99-old");
        let pre = b"Welcome\r\nto the machine\r\nSSH-2.0-dropbear\r\n";
        assert_eq!(read(pre).await.expect("banner after other lines"), "SSH-2.0-dropbear");
    }

    #[tokio::test]
    async fn other_protocols_and_endless_greetings_are_refused() {
        assert!(matches!(read(b"SSH-1.5-ancient\r\n").await, Err(BannerError::NotSsh2(_))));
        let long = format!("SSH-2.0-{}\r\n", "x".repeat(300));
        assert!(matches!(read(long.as_bytes()).await, Err(BannerError::NotSsh2(_))), "over 255 bytes");
        assert!(matches!(read(&vec![b'a'; BANNER_LIMIT + 10]).await, Err(BannerError::TooLong)));
        let lines = "HTTP/1.1 200 OK\r\n".repeat(600);
        assert!(matches!(read(lines.as_bytes()).await, Err(BannerError::TooLong)));
    }

    #[tokio::test]
    async fn silence_and_closed_connections_end_in_time() {
        let addr = greeter(Vec::new()).await;
        let e = read_banner(addr, Duration::from_millis(200)).await;
        assert!(matches!(e, Err(BannerError::Timeout(_))), "{e:?}");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let closer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let _ = s.write_all(b"bye\r\n").await;
        });
        assert!(matches!(read_banner(addr, Duration::from_secs(5)).await, Err(BannerError::Closed)));
        closer.await.expect("closer");
    }
}
