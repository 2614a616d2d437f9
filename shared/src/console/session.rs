//! The console's session: a cookie `llmlite_session=<payload>.<mac>`, where the payload names the
//! caller (`master`, or a key's SHA-256 hash), the expiry and the CSRF token, and the MAC is
//! HMAC-SHA256 under a secret derived from the master key. The key itself is never in it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{self, Caller};
use crate::crypto::hmac_sha256;
use crate::error::ApiError;
use crate::keys::KeyHash;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "llmlite_session";
pub const SESSION_HOURS: i64 = 8;

/// A signed-in admin.
#[derive(Debug, Clone)]
pub struct Session {
    /// `master`, or the key's hash.
    subject: String,
    /// Seconds since the Unix epoch.
    expires: i64,
    csrf: String,
    caller: Caller,
}

/// The signing secret: derived from the master key, which every instance has.
fn secret(state: &AppState) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"llmlite console session v1\0");
    hash.update(state.config.master_key.cached().expose().as_bytes());
    hash.finalize().into()
}

/// True when the request came to a loopback address (`llmlite dev`): the only place the cookie
/// may go without `Secure`.
fn loopback(headers: &HeaderMap) -> bool {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

impl Session {
    /// A new session for `caller`, from now for [`SESSION_HOURS`].
    pub fn start(state: &AppState, caller: &Caller) -> Session {
        let mut csrf = [0u8; 24];
        rand::rng().fill_bytes(&mut csrf);
        Session {
            subject: match caller {
                Caller::Master => "master".to_owned(),
                Caller::Key { hash, .. } => hash.as_str().to_owned(),
            },
            expires: state.clock.now().timestamp() + SESSION_HOURS * 3600,
            csrf: URL_SAFE_NO_PAD.encode(csrf),
            caller: caller.clone(),
        }
    }

    fn payload(&self) -> String {
        format!("v1|{}|{}|{}", self.subject, self.expires, self.csrf)
    }

    /// The cookie's value: the payload and its MAC.
    fn value(&self, state: &AppState) -> String {
        let payload = self.payload();
        let mac = hmac_sha256(&secret(state), payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The `Set-Cookie` header that holds it.
    pub fn cookie(&self, state: &AppState, headers: &HeaderMap) -> String {
        let secure = if loopback(headers) { "" } else { "; Secure" };
        format!(
            "{SESSION_COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.value(state),
            SESSION_HOURS * 3600
        )
    }

    /// The `Set-Cookie` header that ends it.
    pub fn clear_cookie(headers: &HeaderMap) -> String {
        let secure = if loopback(headers) { "" } else { "; Secure" };
        format!("{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }

    /// The session a request carries: signed by this deployment, not expired, and its key still
    /// an admin key (checked again on every request).
    pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Session, ApiError> {
        // Sessions are signed under the master key: a rotated key ends them within its TTL.
        state.config.master_key.refresh_if_stale().await;
        let value = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned())
            .ok_or(ApiError::MissingApiKey)?;
        let (payload, mac) = value.split_once('.').ok_or(ApiError::InvalidApiKey)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ApiError::InvalidApiKey)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| ApiError::InvalidApiKey)?;
        let expected = hmac_sha256(&secret(state), &payload);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return Err(ApiError::InvalidApiKey);
        }
        let payload = String::from_utf8(payload).map_err(|_| ApiError::InvalidApiKey)?;
        let mut parts = payload.split('|');
        let (Some("v1"), Some(subject), Some(expires), Some(csrf), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ApiError::InvalidApiKey);
        };
        let expires: i64 = expires.parse().map_err(|_| ApiError::InvalidApiKey)?;
        if expires <= state.clock.now().timestamp() {
            return Err(ApiError::ExpiredKey);
        }
        let caller = if subject == "master" {
            Caller::Master
        } else {
            let hash = KeyHash::from_key_or_hash(subject).ok_or(ApiError::InvalidApiKey)?;
            auth::authenticate_hash(state, hash).await?
        };
        if !caller.is_admin() {
            return Err(ApiError::PermissionDenied(
                "the session's key is no longer an admin key".into(),
            ));
        }
        Ok(Session {
            subject: subject.to_owned(),
            expires,
            csrf: csrf.to_owned(),
            caller,
        })
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

    /// Who is signed in, for the page header: never a key.
    pub fn display_name(&self) -> String {
        match &self.caller {
            Caller::Master => "master key".to_owned(),
            Caller::Key { hash, .. } => format!("admin key {}…", &hash.as_str()[..12]),
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
