//! Reading a request body within bounds: a size limit, the request's deadline, a minimum rate.
//!
//! Only requests that passed the header checks (see [`super::pipeline`]) get here, so the body
//! of an unknown caller is never read. The limit is checked against `Content-Length` before the
//! first byte is read, and against the bytes received for chunked bodies. The rate rule: after a
//! grace period the client must have sent at least `min_rate` bytes per second on average, so a
//! body trickled one byte at a time is cut off after about the grace period instead of holding
//! its connection until the deadline.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::Instant;

/// How long a body may take before the rate rule applies.
pub(super) const RATE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyError {
    /// More bytes than the limit, declared or sent.
    TooLarge { limit: usize },
    /// The request's deadline passed before the body was complete.
    Deadline,
    /// The client sent slower than the minimum rate.
    TooSlow { min_rate: u32 },
    /// The connection failed or the framing was invalid.
    Broken,
}

/// The body's bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub limit: usize,
    pub deadline: Instant,
    /// Bytes per second, on average, after `grace`; 0 disables the rule.
    pub min_rate: u32,
    pub grace: Duration,
}

/// Reads the whole body into one buffer sized from `Content-Length`.
pub(super) async fn read<B>(mut body: B, declared: Option<u64>, bounds: Bounds) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    if declared.is_some_and(|n| n > bounds.limit as u64) {
        return Err(BodyError::TooLarge { limit: bounds.limit });
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    let start = Instant::now();
    loop {
        // The rate rule: the next bytes are due before `received / min_rate` past the grace.
        let rate_due = (bounds.min_rate > 0)
            .then(|| start + bounds.grace + Duration::from_secs_f64(buf.len() as f64 / f64::from(bounds.min_rate)));
        let due = rate_due.map_or(bounds.deadline, |r| r.min(bounds.deadline));
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Err(_) if due == bounds.deadline => return Err(BodyError::Deadline),
            Err(_) => return Err(BodyError::TooSlow { min_rate: bounds.min_rate }),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > bounds.limit {
                return Err(BodyError::TooLarge { limit: bounds.limit });
            }
            if buf.is_empty() && declared.is_some_and(|n| n as usize == data.len()) {
                // The whole body in one frame: keep hyper's buffer, no copy.
                return Ok(data);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    type Frame = hyper::body::Frame<Bytes>;

    fn bounds(limit: usize, secs: u64, min_rate: u32) -> Bounds {
        let grace = Duration::from_millis(300);
        Bounds { limit, deadline: Instant::now() + Duration::from_secs(secs), min_rate, grace }
    }

    #[tokio::test]
    async fn whole_bodies_pass_and_oversized_ones_are_refused_before_reading() {
        let b = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(read(b, Some(5), bounds(5, 5, 1)).await, Ok(Bytes::from_static(b"hello")));
        let b = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(read(b, Some(5), bounds(4, 5, 1)).await, Err(BodyError::TooLarge { limit: 4 }));
        let b = Full::new(Bytes::from_static(b"hello"));
        assert_eq!(read(b, None, bounds(4, 5, 1)).await, Err(BodyError::TooLarge { limit: 4 }));
    }

    #[tokio::test]
    async fn a_trickled_body_is_cut_off_after_the_grace_and_a_stalled_one_at_the_deadline() {
        // One byte every 100 ms: 10 B/s is below a 100 B/s minimum once the grace is over.
        let trickle = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x"))), ()))
        });
        let r = read(StreamBody::new(Box::pin(trickle)), Some(1000), bounds(1000, 60, 100)).await;
        assert_eq!(r, Err(BodyError::TooSlow { min_rate: 100 }));

        let stalled = futures_util::stream::pending::<Result<Frame, std::convert::Infallible>>();
        let r = read(StreamBody::new(stalled).boxed(), Some(10), bounds(1000, 1, 0)).await;
        assert_eq!(r, Err(BodyError::Deadline));
    }
}
