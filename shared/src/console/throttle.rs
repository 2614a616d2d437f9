//! Sign-in throttling, beyond the WAF's rate rule: failed sign-ins are counted per client
//! address and per account in fixed windows of [`WINDOW`], in PostgreSQL so that every instance
//! counts together. Past [`MAX_PER_ADDRESS`] or [`MAX_PER_ACCOUNT`] failures in the window,
//! sign-in from that address, or to that account, is refused until the window ends, whether or
//! not the next attempt would have been right. Successes are not counted: a company behind one
//! NAT address signs in freely; a guesser does not.
//!
//! The client address is the last entry of `X-Forwarded-For`, the one the load balancer adds
//! (what a client sends itself comes before it); without one, every caller shares `direct`.

use chrono::{DateTime, Utc};
use http::HeaderMap;

use crate::error::ApiError;
use crate::state::AppState;

/// The window failures are counted in.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Failed sign-ins from one address in a window before the address is refused.
pub const MAX_PER_ADDRESS: i32 = 20;
/// Failed sign-ins to one account in a window before the account is refused.
pub const MAX_PER_ACCOUNT: i32 = 5;

/// The client's address, as the load balancer saw it.
pub fn client_address(headers: &HeaderMap) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|a| !a.is_empty())
        .map_or_else(|| "direct".to_owned(), |a| a.chars().take(64).collect())
}

fn window(now: DateTime<Utc>) -> DateTime<Utc> {
    let start = now.timestamp().div_euclid(WINDOW_SECS) * WINDOW_SECS;
    DateTime::from_timestamp(start, 0).unwrap_or(now)
}

/// Seconds until sign-in is allowed again, if `address` or `account` is over its limit now.
pub async fn refused(
    state: &AppState,
    address: &str,
    account: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    let now = state.clock.now();
    let start = window(now);
    let over: Option<(i32,)> = sqlx::query_as(
        "SELECT failures FROM llmlite_sign_in_failure
         WHERE window_start = $1
           AND ((scope = 'ip' AND subject = $2 AND failures >= $4)
             OR (scope = 'account' AND subject = $3 AND failures >= $5))
         LIMIT 1",
    )
    .bind(start)
    .bind(address)
    .bind(account)
    .bind(MAX_PER_ADDRESS)
    .bind(MAX_PER_ACCOUNT)
    .persistent(false)
    .fetch_optional(state.db.pool().await?)
    .await?;
    Ok(over.map(|_| (start.timestamp() + WINDOW_SECS - now.timestamp()).max(1)))
}

/// Counts a failed sign-in against `address` and, when known, `account`.
pub async fn failed(
    state: &AppState,
    address: &str,
    account: Option<&str>,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    sqlx::query(
        "WITH old AS (
             DELETE FROM llmlite_sign_in_failure WHERE window_start < $1 - interval '1 day'
         )
         INSERT INTO llmlite_sign_in_failure (scope, subject, window_start, failures)
         SELECT scope, subject, $1, 1
         FROM (VALUES ('ip', $2::text), ('account', $3::text)) AS s (scope, subject)
         WHERE subject IS NOT NULL
         ON CONFLICT (scope, subject, window_start)
         DO UPDATE SET failures = llmlite_sign_in_failure.failures + 1",
    )
    .bind(window(now))
    .bind(address)
    .bind(account)
    .persistent(false)
    .execute(state.db.pool().await?)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_the_one_the_load_balancer_added() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_address(&headers), "direct");
        headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        assert_eq!(client_address(&headers), "203.0.113.9");
        headers.append(
            "x-forwarded-for",
            http::HeaderValue::from_static("198.51.100.1 "),
        );
        assert_eq!(client_address(&headers), "198.51.100.1");
    }

    #[test]
    fn windows_are_fixed() {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap_or_default();
        assert_eq!(window(at(900)), at(900));
        assert_eq!(window(at(1799)), at(900));
        assert_eq!(window(at(1800)), at(1800));
    }
}
