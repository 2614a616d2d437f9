//! The console's session. The cookie `llmlite_session=v2.<id>.<mac>` holds a random ID and its
//! HMAC-SHA256 under a secret derived from the master key (so rotating the master key ends
//! every session); the session itself is a row of `llmlite_console_session`, found by the ID's
//! SHA-256. The row names the caller (`master`, a key's hash, or `user:<id>`), the CSRF token,
//! and three ends: the absolute expiry ([`SESSION_HOURS`]), the idle timeout (the
//! configuration's `idle`, counted from the last request), and sign-out. Every request checks
//! the caller again: a blocked key, a deleted or disabled user, or a changed role takes effect
//! at once. The key itself is never in the cookie or the row.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{self, Caller};
use crate::crypto::{hmac_sha256, random_token, sha256_hex};
use crate::error::ApiError;
use crate::keys::KeyHash;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "llmlite_session";
pub const SESSION_HOURS: i64 = 8;

/// How a session was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The sign-in form, with the master key or an admin key.
    Key,
    /// The company's identity provider.
    Oidc,
}

impl Via {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Via::Key => "key",
            Via::Oidc => "oidc",
        }
    }
}

/// A signed-in caller.
#[derive(Debug, Clone)]
pub struct Session {
    id_hash: String,
    csrf: String,
    caller: Caller,
    /// The person's name or email, for the page header (a person's session only).
    person: Option<String>,
}

/// The signing secret: derived from the master key, which every instance has.
fn secret(state: &AppState) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"llmlite console session v2\0");
    hash.update(state.config.master_key.cached().expose().as_bytes());
    hash.finalize().into()
}

/// True when the request came to a loopback address (`llmlite dev`): the only place the cookie
/// may go without `Secure`.
pub(super) fn loopback(headers: &HeaderMap) -> bool {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// `; Secure` except on loopback.
pub(super) fn secure(headers: &HeaderMap) -> &'static str {
    if loopback(headers) { "" } else { "; Secure" }
}

/// The value of cookie `name` in a request.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// What the cookie's subject is for `caller`.
fn subject(caller: &Caller) -> String {
    match caller {
        Caller::Master => "master".to_owned(),
        Caller::Key { hash, .. } => hash.as_str().to_owned(),
        Caller::User { user_id, .. } => format!("user:{user_id}"),
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    subject: String,
    csrf: String,
}

impl Session {
    /// A new session for `caller`, from now for [`SESSION_HOURS`], and the `Set-Cookie` header
    /// that carries it. `tokens` are the provider's ID token (for its end-session endpoint) and
    /// refresh token (for a device approval made in this session), if any.
    pub async fn start(
        state: &AppState,
        headers: &HeaderMap,
        caller: &Caller,
        via: Via,
        tokens: (Option<&str>, Option<&str>),
    ) -> Result<String, ApiError> {
        let (id_token, idp_refresh_token) = tokens;
        let id = random_token(32);
        let csrf = random_token(24);
        let now = state.clock.now();
        let pool = state.db.pool().await?;
        // Old rows go as new ones come: nothing else needs them a day after they ended.
        sqlx::query("DELETE FROM llmlite_console_session WHERE expires_at < $1")
            .bind(now - chrono::Duration::days(1))
            .persistent(false)
            .execute(pool)
            .await?;
        sqlx::query(
            "INSERT INTO llmlite_console_session
                 (id_hash, subject, user_id, csrf, via, created_at, last_seen, expires_at, id_token,
                  idp_refresh_token)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)",
        )
        .bind(sha256_hex(&id))
        .bind(subject(caller))
        .bind(match caller {
            Caller::User { user_id, .. } => Some(user_id.as_str()),
            _ => None,
        })
        .bind(&csrf)
        .bind(via.as_str())
        .bind(now)
        .bind(now + chrono::Duration::hours(SESSION_HOURS))
        .bind(id_token)
        .bind(idp_refresh_token)
        .persistent(false)
        .execute(pool)
        .await?;
        let mac = hmac_sha256(&secret(state), id.as_bytes());
        Ok(format!(
            "{SESSION_COOKIE}=v2.{id}.{}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
            URL_SAFE_NO_PAD.encode(mac),
            SESSION_HOURS * 3600,
            secure(headers)
        ))
    }

    /// The `Set-Cookie` header that ends it in the browser.
    pub fn clear_cookie(headers: &HeaderMap) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
            secure(headers)
        )
    }

    /// The ID a request's cookie names, if its MAC is this deployment's.
    fn id_hash(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
        let value = cookie(headers, SESSION_COOKIE).ok_or(ApiError::MissingApiKey)?;
        let mut parts = value.split('.');
        let (Some("v2"), Some(id), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiError::InvalidApiKey);
        };
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| ApiError::InvalidApiKey)?;
        let expected = hmac_sha256(&secret(state), id.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return Err(ApiError::InvalidApiKey);
        }
        Ok(sha256_hex(id))
    }

    /// The session a request carries: signed by this deployment, neither expired, idle too long
    /// nor ended, and its caller still allowed in (checked again on every request). The
    /// session's last activity is now.
    pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Session, ApiError> {
        // Sessions are signed under the master key: a rotated key ends them within its TTL.
        state.config.master_key.refresh_if_stale().await;
        let id_hash = Self::id_hash(state, headers)?;
        let now = state.clock.now();
        let idle = chrono::Duration::from_std(state.config.sign_in.idle)
            .unwrap_or_else(|_| chrono::Duration::minutes(30));
        let row: Option<Row> = sqlx::query_as(
            "UPDATE llmlite_console_session SET last_seen = $2
             WHERE id_hash = $1 AND ended_at IS NULL AND expires_at > $2 AND last_seen > $3
             RETURNING subject, csrf",
        )
        .bind(&id_hash)
        .bind(now)
        .bind(now - idle)
        .persistent(false)
        .fetch_optional(state.db.pool().await?)
        .await?;
        let row = row.ok_or(ApiError::ExpiredKey)?;
        let (caller, person_name) = if row.subject == "master" {
            (Caller::Master, None)
        } else if let Some(user_id) = row.subject.strip_prefix("user:") {
            match auth::person(state, user_id).await? {
                Some((caller, shown)) => (caller, Some(shown)),
                None => {
                    Self::end(state, &id_hash).await?;
                    return Err(ApiError::PermissionDenied(
                        "the session's user is disabled or gone".into(),
                    ));
                }
            }
        } else {
            let hash = KeyHash::from_key_or_hash(&row.subject).ok_or(ApiError::InvalidApiKey)?;
            let caller = auth::authenticate_hash(state, hash).await?;
            if !caller.is_admin() {
                return Err(ApiError::PermissionDenied(
                    "the session's key is no longer an admin key".into(),
                ));
            }
            (caller, None)
        };
        Ok(Session {
            id_hash,
            csrf: row.csrf,
            caller,
            person: person_name,
        })
    }

    /// Ends a session by its ID's hash: the ID token it kept, if any, for the provider's
    /// end-session endpoint.
    async fn end(state: &AppState, id_hash: &str) -> Result<Option<String>, ApiError> {
        let ended: Option<(Option<String>,)> = sqlx::query_as(
            "UPDATE llmlite_console_session s
             SET ended_at = $2, id_token = NULL, idp_refresh_token = NULL
             FROM llmlite_console_session old
             WHERE s.id_hash = $1 AND old.id_hash = s.id_hash AND s.ended_at IS NULL
             RETURNING old.id_token",
        )
        .bind(id_hash)
        .bind(state.clock.now())
        .persistent(false)
        .fetch_optional(state.db.pool().await?)
        .await?;
        Ok(ended.and_then(|(token,)| token))
    }

    /// Signs this session out: it is refused from now on, wherever its cookie is.
    pub async fn sign_out(&self, state: &AppState) -> Result<Option<String>, ApiError> {
        Self::end(state, &self.id_hash).await
    }

    /// Ends every open session of `user_id` (the user was disabled): how many.
    pub async fn end_all_of(state: &AppState, user_id: &str) -> Result<u64, ApiError> {
        Ok(sqlx::query(
            "UPDATE llmlite_console_session
             SET ended_at = $2, id_token = NULL, idp_refresh_token = NULL
             WHERE user_id = $1 AND ended_at IS NULL",
        )
        .bind(user_id)
        .bind(state.clock.now())
        .persistent(false)
        .execute(state.db.pool().await?)
        .await?
        .rows_affected())
    }

    /// The identity provider's refresh token this session was signed in with, if any.
    pub async fn idp_refresh_token(&self, state: &AppState) -> Result<Option<String>, ApiError> {
        let token: Option<Option<String>> = sqlx::query_scalar(
            "SELECT idp_refresh_token FROM llmlite_console_session
             WHERE id_hash = $1 AND ended_at IS NULL",
        )
        .bind(&self.id_hash)
        .persistent(false)
        .fetch_optional(state.db.pool().await?)
        .await?;
        Ok(token.flatten())
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether a form's token is this session's.
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// A person signed in through the company's identity provider who is not an admin: they
    /// see their own keys, spend and models only.
    pub fn is_self_service(&self) -> bool {
        !self.caller.reads_everything()
    }

    /// Who is signed in, for the page header: never a key.
    pub fn display_name(&self) -> String {
        match (&self.caller, &self.person) {
            (Caller::Master, _) => "master key".to_owned(),
            (Caller::Key { hash, .. }, _) => format!("admin key {}…", &hash.as_str()[..12]),
            (Caller::User { user_id, .. }, shown) => shown.clone().unwrap_or(user_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_go_without_secure() {
        let mut headers = HeaderMap::new();
        for (host, loop_) in [
            ("127.0.0.1:4000", true),
            ("localhost", true),
            ("[::1]:4000", true),
            ("llm.example.com", false),
            ("127.0.0.1.evil.com", false),
        ] {
            headers.insert(
                http::header::HOST,
                host.parse().unwrap_or(http::HeaderValue::from_static("x")),
            );
            assert_eq!(loopback(&headers), loop_, "{host}");
        }
    }
}
