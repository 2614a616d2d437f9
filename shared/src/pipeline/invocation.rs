//! What the entry point knows about the invocation a request arrived in: when it must end, and
//! whether its response is streamed to the client or handed over in one piece. `llmlite serve`
//! sets nothing (no deadline, streamed); the Lambda functions set both from their runtime.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ApiError;

/// The largest response an ALB takes from a Lambda target: 1 MB of response JSON, the body
/// escaped inside it. A larger one becomes a 502 the client cannot tell from a gateway fault.
pub const ALB_RESPONSE_LIMIT: usize = 1_000_000;

/// Room kept in [`ALB_RESPONSE_LIMIT`] for the response JSON around the body (status, headers).
const ALB_ENVELOPE: usize = 16 * 1024;

/// 2001-09-09 in milliseconds since the Unix epoch: an earlier "deadline" is not a timestamp.
const NOT_BEFORE_MS: u64 = 1_000_000_000_000;

/// A request extension set by the entry point; absent means streamed with no deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Invocation {
    /// When the model call must have ended: the invocation's deadline less the settlement
    /// margin. `None` where nothing stops the process (`llmlite serve`).
    pub deadline: Option<Instant>,
    /// How the response reaches the client.
    pub delivery: Delivery,
}

/// How a response reaches the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Chunk by chunk as it is produced: `llmlite serve`, Lambda response streaming.
    #[default]
    Streamed,
    /// In one piece once complete, of at most `limit_bytes` as the receiver counts them (JSON
    /// escaped): a Lambda target of an ALB.
    Buffered { limit_bytes: usize },
}

impl Delivery {
    /// Behind an ALB: one body, within its limit less the envelope.
    pub const ALB: Delivery = Delivery::Buffered {
        limit_bytes: ALB_RESPONSE_LIMIT - ALB_ENVELOPE,
    };
}

/// The length of `bytes` as a JSON string's contents: what an ALB counts of a
/// body (it carries the body inside its response JSON).
pub fn escaped_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

impl Invocation {
    /// An invocation that Lambda ends at `deadline_ms` (milliseconds since the Unix epoch),
    /// `margin` of which is kept for ending the answer and settling it. A deadline that cannot
    /// be one is unknown (no deadline): 0 when there is no Lambda context, and any time before
    /// 2001, which is what an emulator sends when it writes a duration there instead (`cargo
    /// lambda watch` sends its timeout, `600000`).
    pub fn lambda(deadline_ms: u64, margin: Duration, delivery: Delivery) -> Invocation {
        let deadline = (deadline_ms >= NOT_BEFORE_MS).then(|| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
            Instant::now() + left.saturating_sub(margin)
        });
        Invocation { deadline, delivery }
    }

    /// True when the model call may not start: its deadline has passed.
    pub fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| d <= Instant::now())
    }
}

/// Resolves when `deadline` has passed; never without one.
pub async fn passed(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The error of a model call cut by the invocation's deadline.
pub fn deadline_error() -> ApiError {
    ApiError::UpstreamTimeout(
        "the answer did not finish before the gateway's deadline (the function's time limit \
         less its settlement margin); ask for a shorter answer (a lower max_tokens), or stream it"
            .into(),
    )
}

/// Runs `call` until `deadline` (an invocation's), if there is one; `None` when it came.
pub async fn until_deadline<T>(
    deadline: Option<Instant>,
    call: impl Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, call).await.ok(),
        None => Some(call.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> u64 {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(0)
    }

    #[test]
    fn the_deadline_keeps_the_margin_back() {
        let invocation = Invocation::lambda(
            now_ms() + 10_000,
            Duration::from_secs(4),
            Delivery::Streamed,
        );
        let left = invocation
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        let left = left.unwrap_or_default();
        assert!(left > Duration::from_millis(5_000), "{left:?}");
        assert!(left <= Duration::from_secs(6), "{left:?}");
        assert!(!invocation.out_of_time());
    }

    #[test]
    fn a_margin_past_the_deadline_leaves_no_time_and_a_deadline_that_is_no_time_is_unknown() {
        let late = Invocation::lambda(now_ms() + 1_000, Duration::from_secs(2), Delivery::ALB);
        assert!(late.out_of_time());
        for not_a_time in [0, 600_000] {
            let unknown = Invocation::lambda(not_a_time, Duration::from_secs(2), Delivery::ALB);
            assert!(unknown.deadline.is_none(), "{not_a_time}");
            assert!(!unknown.out_of_time());
        }
        assert_eq!(
            Delivery::ALB,
            Delivery::Buffered {
                limit_bytes: ALB_RESPONSE_LIMIT - ALB_ENVELOPE
            }
        );
    }
}
