//! Who is calling: the API key from `Authorization: Bearer sk-...` or `x-api-key`, and what
//! it may do. There is no cache: every request looks its key up, so a revoked key is refused on
//! its very next request, on every instance.
//!
//! The chat path does its key checks inside admission (`admission`), in the same round trip
//! that takes rate-limit tokens; this module serves the admin API and `/v1/models`.

use axum::extract::FromRequestParts;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use http::request::Parts;

use crate::error::ApiError;
use crate::keys::KeyHash;
use crate::state::AppState;

/// The key a request carries, if any.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// An authenticated caller of the admin API.
#[derive(Debug, Clone)]
pub enum Caller {
    Master,
    Key {
        hash: KeyHash,
        user_id: Option<String>,
        /// The key's user has the `proxy_admin` role.
        admin: bool,
        /// The model allow-lists of the key, its user and its team (an empty list allows all).
        model_lists: Vec<Vec<String>>,
    },
    /// A person signed in to the console through the company's identity provider.
    User {
        user_id: String,
        /// `proxy_admin`, `proxy_admin_viewer`, `internal_user` or `internal_user_viewer`.
        role: String,
        /// The user's own model allow-list (an empty list allows all); each of their keys
        /// adds its own and its team's at admission.
        model_lists: Vec<Vec<String>>,
    },
}

impl Caller {
    /// Who did it, for the audit record: never a raw key.
    pub fn actor(&self) -> String {
        match self {
            Caller::Master => "master_key".to_owned(),
            Caller::Key { hash, .. } => hash.to_string(),
            Caller::User { user_id, .. } => format!("user:{user_id}"),
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Master | Caller::Key { admin: true, .. } => true,
            Caller::Key { .. } => false,
            Caller::User { role, .. } => role == "proxy_admin",
        }
    }

    /// May read everything an admin reads (the console's admin pages): an admin, or a
    /// `proxy_admin_viewer` person.
    pub fn reads_everything(&self) -> bool {
        self.is_admin() || matches!(self, Caller::User { role, .. } if role == "proxy_admin_viewer")
    }

    /// The person this caller acts for, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::Master => None,
            Caller::Key { user_id, .. } => user_id.as_deref(),
            Caller::User { user_id, .. } => Some(user_id),
        }
    }

    /// Whether this caller may use `model` (the master key may use every model).
    pub fn may_use(&self, model: &str) -> bool {
        match self {
            Caller::Master => true,
            Caller::Key { model_lists, .. } | Caller::User { model_lists, .. } => model_lists
                .iter()
                .all(|list| list.is_empty() || list.iter().any(|m| m == model)),
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeyState {
    token: String,
    is_active: bool,
    blocked: bool,
    expires: Option<DateTime<Utc>>,
    deprecated_until: Option<DateTime<Utc>>,
    user_id: Option<String>,
    user_role: Option<String>,
    team_blocked: Option<bool>,
    key_models: Vec<String>,
    user_models: Option<Vec<String>>,
    team_models: Option<Vec<String>>,
}

/// Looks a virtual key up by hash (a rotated key's old hash too, until its grace period ends)
/// and refuses it if it is deleted, blocked or expired.
pub async fn authenticate_key(state: &AppState, raw: &str) -> Result<Caller, ApiError> {
    if !raw.starts_with("sk-") {
        return Err(ApiError::InvalidApiKey);
    }
    authenticate_hash(state, KeyHash::of(raw)).await
}

/// [`authenticate_key`] for a key known by its hash (a console session's key).
pub async fn authenticate_hash(state: &AppState, hash: KeyHash) -> Result<Caller, ApiError> {
    let found: Option<KeyState> = sqlx::query_as(
        "WITH target AS (
             SELECT $1::text AS token, NULL::timestamptz AS deprecated_until
             UNION ALL
             SELECT active_token, revoke_at FROM llmlite_deprecated_token WHERE token = $1
         )
         SELECT k.token, k.is_active, k.blocked, k.expires, t.deprecated_until, k.user_id,
                u.user_role, tm.blocked AS team_blocked, k.models AS key_models,
                u.models AS user_models, tm.models AS team_models
         FROM target t
         JOIN litellm_verificationtoken k ON k.token = t.token
         LEFT JOIN litellm_usertable u ON u.user_id = k.user_id
         LEFT JOIN litellm_teamtable tm ON tm.team_id = k.team_id
         LIMIT 1",
    )
    .bind(hash.as_str())
    .persistent(false)
    .fetch_optional(state.db.pool().await?)
    .await?;
    let key = found.ok_or(ApiError::InvalidApiKey)?;
    let now = state.clock.now();
    if !key.is_active || key.deprecated_until.is_some_and(|until| until <= now) {
        return Err(ApiError::InactiveKey);
    }
    if key.blocked || key.team_blocked == Some(true) {
        return Err(ApiError::BlockedKey);
    }
    if key.expires.is_some_and(|at| at <= now) {
        return Err(ApiError::ExpiredKey);
    }
    // A rotated key in its grace period acts as the key it was rotated into.
    let hash = KeyHash::from_key_or_hash(&key.token).unwrap_or(hash);
    let model_lists = std::iter::once(key.key_models)
        .chain(key.user_models)
        .chain(key.team_models)
        .collect();
    Ok(Caller::Key {
        hash,
        user_id: key.user_id,
        admin: key.user_role.as_deref() == Some("proxy_admin"),
        model_lists,
    })
}

#[derive(sqlx::FromRow)]
struct Person {
    user_role: String,
    user_email: Option<String>,
    user_alias: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    models: Vec<String>,
}

/// A person's caller from their user row, now, and the name the header shows: `None` if the
/// user is gone or disabled. Their own model list is the caller's (each key adds its team's).
pub async fn person(state: &AppState, user_id: &str) -> Result<Option<(Caller, String)>, ApiError> {
    let found: Option<Person> = sqlx::query_as(
        "SELECT user_role, user_email, user_alias, disabled_at, models
         FROM litellm_usertable WHERE user_id = $1",
    )
    .bind(user_id)
    .persistent(false)
    .fetch_optional(state.db.pool().await?)
    .await?;
    let Some(found) = found.filter(|f| f.disabled_at.is_none()) else {
        return Ok(None);
    };
    let shown = found
        .user_alias
        .or(found.user_email)
        .unwrap_or_else(|| user_id.to_owned());
    Ok(Some((
        Caller::User {
            user_id: user_id.to_owned(),
            role: found.user_role,
            model_lists: vec![found.models],
        },
        shown,
    )))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = api_key(&parts.headers).ok_or(ApiError::MissingApiKey)?;
        if state.config.master_key.matches(key).await {
            return Ok(Caller::Master);
        }
        authenticate_key(state, key).await
    }
}

/// A caller allowed every admin route: the master key, or a key of a `proxy_admin` user.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.is_admin() {
            Ok(Admin(caller))
        } else {
            Err(ApiError::PermissionDenied(
                "this route needs the master key or a proxy_admin key".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        assert_eq!(
            api_key(&headers(&[("authorization", "Bearer sk-1")])),
            Some("sk-1")
        );
        assert_eq!(
            api_key(&headers(&[("authorization", "bearer  sk-2 ")])),
            Some("sk-2")
        );
        assert_eq!(api_key(&headers(&[("x-api-key", "sk-3")])), Some("sk-3"));
        assert_eq!(api_key(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(api_key(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(api_key(&headers(&[])), None);
    }
}
