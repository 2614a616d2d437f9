//! Short-lived keys for developers' machines: OAuth 2.0 Device Authorization (RFC 8628) between
//! `llmlite login` and the gateway, approved in the console by a person signed in with the
//! company account, then `llmlite key` (Claude Code's `apiKeyHelper`) trading a refresh token
//! for a key that lives `LLMLITE_SHORT_KEY_HOURS`.
//!
//! - `POST /oauth/device/code` (`client_id=llmlite-cli`): a device code (kept by its SHA-256)
//!   and a user code `ABCD-EFGH`, for ten minutes.
//! - `/ui/device` (the console, [`crate::console`]): the signed-in person approves or denies the
//!   user code; the approval carries the identity provider's refresh token from their session.
//! - `POST /oauth/token`, `grant_type=urn:ietf:params:oauth:grant-type:device_code`:
//!   `authorization_pending`, `slow_down`, `access_denied` or `expired_token` until approved;
//!   then, once, a refresh token (kept by its SHA-256) and a short-lived key.
//! - `POST /oauth/token`, `grant_type=refresh_token`: the provider is asked, with its refresh
//!   token, whether the person is still enabled there. If not (or the person is disabled in
//!   llmlite), the credential is revoked and its keys end; otherwise a new refresh token (the
//!   old one stops) and a new short-lived key.
//!
//! Keys made this way are the person's own ([`crate::admin::keys::own`]), of their first team,
//! marked `llmlite_cli_credential` in their metadata. Errors are RFC 6749's JSON
//! (`{"error": ..., "error_description": ...}`); no secret is echoed or logged.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::admin::keys::own::{self, OwnKey};
use crate::crypto::{random_token, sha256_hex};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

/// The one client the device flow knows.
pub const CLIENT_ID: &str = "llmlite-cli";
/// A device code lives this long.
pub const DEVICE_CODE_SECS: i64 = 600;
/// The least time between two polls.
pub const INTERVAL_SECS: i64 = 5;
/// RFC 8628's grant type.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The letters of a user code: no vowels (no words), no look-alikes.
const USER_CODE_LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn user_code() -> String {
    let mut rng = rand::rng();
    let mut code: String = (0..8)
        .map(|_| char::from(USER_CODE_LETTERS[rng.random_range(0..USER_CODE_LETTERS.len())]))
        .collect();
    code.insert(4, '-');
    code
}

/// A user code as typed (any case, with or without the dash or spaces), or `None`.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() != 8 || !letters.bytes().all(|b| USER_CODE_LETTERS.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &letters[..4], &letters[4..]))
}

/// An OAuth error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn unavailable() -> Response {
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the database is not answering; try again in a moment",
    )
}

#[derive(Deserialize, Default)]
struct CodeRequest {
    #[serde(default)]
    client_id: String,
}

/// `/oauth/*`, on the key-admin function: the admin actions they record (a key made, a
/// credential ended) ship as the admin API's do.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/oauth/device/code", axum::routing::post(device_code))
        .route("/oauth/token", axum::routing::post(token))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admin::ship_audit,
        ))
        .with_state(state)
}

/// `POST /oauth/device/code`.
pub async fn device_code(State(state): State<AppState>, body: Bytes) -> Response {
    let request: CodeRequest = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if request.client_id != CLIENT_ID {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the client is llmlite-cli",
        );
    }
    let Some(public_url) = state
        .oidc
        .as_ref()
        .and(state.config.sign_in.public_url.as_deref())
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this gateway has no company sign-in (LLMLITE_OIDC_ISSUER), so no device sign-in",
        );
    };
    let device_code = random_token(32);
    let now = state.clock.now();
    // A clash of user codes is a unique violation: another code is drawn.
    let mut made = None;
    for _ in 0..3 {
        let code = user_code();
        let inserted = async {
            Ok::<_, ApiError>(
                sqlx::query(
                    "WITH old AS (DELETE FROM llmlite_device_grant WHERE expires_at < $3)
                     INSERT INTO llmlite_device_grant
                         (device_code_hash, user_code, created_at, expires_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (user_code) DO NOTHING",
                )
                .bind(sha256_hex(&device_code))
                .bind(&code)
                .bind(now)
                .bind(now + chrono::Duration::seconds(DEVICE_CODE_SECS))
                .persistent(false)
                .execute(state.db.pool().await?)
                .await?
                .rows_affected(),
            )
        }
        .await;
        match inserted {
            Ok(1) => {
                made = Some(code);
                break;
            }
            Ok(_) => {}
            Err(_) => return unavailable(),
        }
    }
    let Some(code) = made else {
        return unavailable();
    };
    let verification = format!("{public_url}/ui/device");
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "device_code": device_code,
            "user_code": code,
            "verification_uri": verification,
            "verification_uri_complete": format!("{verification}?user_code={code}"),
            "expires_in": DEVICE_CODE_SECS,
            "interval": INTERVAL_SECS,
        })),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    device_code: String,
    #[serde(default)]
    refresh_token: String,
}

/// `POST /oauth/token`.
pub async fn token(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let request: TokenRequest = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if request.client_id != CLIENT_ID {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the client is llmlite-cli",
        );
    }
    let answered = match request.grant_type.as_str() {
        DEVICE_GRANT => device_token(&state, request_id, &request.device_code).await,
        "refresh_token" => refresh(&state, request_id, &request.refresh_token).await,
        _ => Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use the device_code or refresh_token grant",
        )),
    };
    answered.unwrap_or_else(|error| issue_error(&error))
}

#[derive(sqlx::FromRow)]
struct Grant {
    expires_at: DateTime<Utc>,
    last_polled_at: Option<DateTime<Utc>>,
    user_id: Option<String>,
    denied: bool,
    idp_refresh_token: Option<String>,
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// The device-code grant. A refusal is an OAuth answer (`Ok`); an `Err` is a failure of ours
/// (the database), answered by [`issue_error`].
async fn device_token(
    state: &AppState,
    request_id: RequestId,
    device_code: &str,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let hash = sha256_hex(device_code);
    let pool = state.db.pool().await?;
    let found: Option<Grant> = sqlx::query_as(
        "SELECT expires_at, last_polled_at, user_id, denied, idp_refresh_token
         FROM llmlite_device_grant WHERE device_code_hash = $1",
    )
    .bind(&hash)
    .persistent(false)
    .fetch_optional(pool)
    .await?;
    let Some(grant) = found else {
        return Ok(invalid_grant("unknown or already used device code"));
    };
    if grant.expires_at <= now {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "the device code expired: run llmlite login again",
        ));
    }
    if grant.denied {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "access_denied",
            "the sign-in was denied in the browser",
        ));
    }
    let Some(user_id) = grant.user_id else {
        let too_soon = grant
            .last_polled_at
            .is_some_and(|at| now - at < chrono::Duration::seconds(INTERVAL_SECS));
        sqlx::query(
            "UPDATE llmlite_device_grant SET last_polled_at = $2 WHERE device_code_hash = $1",
        )
        .bind(&hash)
        .bind(now)
        .persistent(false)
        .execute(pool)
        .await?;
        return Ok(if too_soon {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "slow_down",
                "poll at most every 5 seconds",
            )
        } else {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "authorization_pending",
                "waiting for the approval in the browser",
            )
        });
    };
    // The approved grant is used once: the first poll that deletes it gets the credential.
    let taken = sqlx::query("DELETE FROM llmlite_device_grant WHERE device_code_hash = $1")
        .bind(&hash)
        .persistent(false)
        .execute(pool)
        .await?
        .rows_affected();
    if taken != 1 {
        return Ok(invalid_grant("unknown or already used device code"));
    }
    let (credential, refresh_token) =
        Credential::create(state, &user_id, grant.idp_refresh_token.as_deref()).await?;
    issue(state, request_id, &credential, &refresh_token).await
}

/// A grant that failed on our side: the database (503, try again), or a key the person may
/// not have (gone, disabled, over their policy: `invalid_grant` with the reason).
fn issue_error(error: &ApiError) -> Response {
    match error {
        ApiError::DatabaseUnavailable(_) | ApiError::Internal(_) => unavailable(),
        other => invalid_grant(&other.to_string()),
    }
}

/// A credential of `llmlite key`.
#[derive(sqlx::FromRow)]
struct Credential {
    id: String,
    user_id: String,
    team_id: Option<String>,
    revoked_at: Option<DateTime<Utc>>,
    idp_refresh_token: Option<String>,
}

impl Credential {
    /// A new credential for `user_id` (of their first team): it and its refresh token.
    async fn create(
        state: &AppState,
        user_id: &str,
        idp_refresh_token: Option<&str>,
    ) -> Result<(Credential, String), ApiError> {
        let refresh_token = format!("llr_{}", random_token(32));
        let id = format!("cred_{}", random_token(9));
        let now = state.clock.now();
        let pool = state.db.pool().await?;
        let team_id: Option<String> = sqlx::query_scalar(
            "SELECT teams[1] FROM (SELECT array(SELECT unnest(teams) ORDER BY 1) AS teams
                                   FROM litellm_usertable WHERE user_id = $1) u",
        )
        .bind(user_id)
        .persistent(false)
        .fetch_optional(pool)
        .await?
        .flatten();
        sqlx::query(
            "INSERT INTO llmlite_cli_credential
                 (id, token_hash, user_id, team_id, created_at, last_used_at, idp_refresh_token)
             VALUES ($1, $2, $3, $4, $5, $5, $6)",
        )
        .bind(&id)
        .bind(sha256_hex(&refresh_token))
        .bind(user_id)
        .bind(&team_id)
        .bind(now)
        .bind(idp_refresh_token)
        .persistent(false)
        .execute(pool)
        .await?;
        Ok((
            Credential {
                id,
                user_id: user_id.to_owned(),
                team_id,
                revoked_at: None,
                idp_refresh_token: idp_refresh_token.map(str::to_owned),
            },
            refresh_token,
        ))
    }
}

/// Mints the short-lived key of `credential` and answers with it and `refresh_token`.
async fn issue(
    state: &AppState,
    request_id: RequestId,
    credential: &Credential,
    refresh_token: &str,
) -> Result<Response, ApiError> {
    let Some((caller, _)) = crate::auth::person(state, &credential.user_id).await? else {
        return Ok(invalid_grant("the user is disabled or gone"));
    };
    let ttl = state.config.sign_in.short_key_ttl;
    let wanted = OwnKey {
        // Aliases are unique: each key of a credential is named by the request that made it.
        key_alias: Some(format!(
            "llmlite key {}",
            &request_id.simple().to_string()[..12]
        )),
        team_id: credential.team_id.clone(),
        tier: None,
        models: Vec::new(),
        duration: Some(format!("{}m", ttl.as_secs() / 60)),
        short_lived: Some(credential.id.clone()),
    };
    let minted = own::generate(state, &caller, request_id, &wanted).await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": minted["key"],
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "refresh_token": refresh_token,
            "key_name": minted["key_name"],
            "expires_at": minted["expires"],
        })),
    )
        .into_response())
}

/// The refresh-token grant: `Ok` for an OAuth answer, `Err` for a failure of ours.
async fn refresh(
    state: &AppState,
    request_id: RequestId,
    refresh_token: &str,
) -> Result<Response, ApiError> {
    let pool = state.db.pool().await?;
    let found: Option<Credential> = sqlx::query_as(
        "SELECT id, user_id, team_id, revoked_at, idp_refresh_token
         FROM llmlite_cli_credential WHERE token_hash = $1",
    )
    .bind(sha256_hex(refresh_token))
    .persistent(false)
    .fetch_optional(pool)
    .await?;
    let Some(mut credential) = found.filter(|c| c.revoked_at.is_none()) else {
        return Ok(invalid_grant(
            "this sign-in has ended: run llmlite login again",
        ));
    };
    // Still enabled at the identity provider? Its refresh token says.
    if let (Some(provider), Some(idp_token)) = (&state.oidc, &credential.idp_refresh_token) {
        match provider.refresh(idp_token).await {
            Ok(rotated) => {
                if let Some(rotated) = rotated {
                    credential.idp_refresh_token = Some(rotated);
                }
            }
            Err(crate::clients::oidc::OidcError::Exchange(reason)) if reason == "invalid_grant" => {
                end_credentials(
                    state,
                    request_id,
                    &credential.user_id,
                    Some(&credential.id),
                    "cli.revoke_idp",
                )
                .await?;
                return Ok(invalid_grant(
                    "the company account is disabled or signed out: run llmlite login again",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the identity provider could not be asked at a key refresh");
                return Ok(oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the company sign-in is not answering; try again in a moment",
                ));
            }
        }
    }
    let next = format!("llr_{}", random_token(32));
    let rotated = sqlx::query(
        "UPDATE llmlite_cli_credential
         SET token_hash = $3, last_used_at = $4, idp_refresh_token = $5
         WHERE id = $1 AND token_hash = $2 AND revoked_at IS NULL",
    )
    .bind(&credential.id)
    .bind(sha256_hex(refresh_token))
    .bind(sha256_hex(&next))
    .bind(state.clock.now())
    .bind(&credential.idp_refresh_token)
    .persistent(false)
    .execute(pool)
    .await?
    .rows_affected();
    if rotated != 1 {
        // Two refreshes raced with one token: one wins; the other signs in again.
        return Ok(invalid_grant("this refresh token was already used"));
    }
    issue(state, request_id, &credential, &next).await
}

/// Ends `user_id`'s `llmlite key` credentials (one, or all) and the keys made with them, as
/// admin actions of the system: the person is disabled or gone at the identity provider or in
/// llmlite. How many keys ended.
pub async fn end_credentials(
    state: &AppState,
    request_id: RequestId,
    user_id: &str,
    only: Option<&str>,
    action: &'static str,
) -> Result<u64, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    let ended: Vec<String> = sqlx::query_scalar(
        "UPDATE llmlite_cli_credential SET revoked_at = $3
         WHERE user_id = $1 AND ($2::text IS NULL OR id = $2) AND revoked_at IS NULL
         RETURNING id",
    )
    .bind(user_id)
    .bind(only)
    .bind(now)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    let keys: Vec<String> = sqlx::query_scalar(
        "UPDATE litellm_verificationtoken SET is_active = false, updated_at = $3,
                updated_by = 'llmlite'
         WHERE user_id = $1 AND is_active
           AND metadata ? 'llmlite_cli_credential'
           AND ($2::text IS NULL OR metadata->>'llmlite_cli_credential' = $2)
         RETURNING token",
    )
    .bind(user_id)
    .bind(only)
    .bind(now)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    // Done by llmlite itself, as the rollup's expiries are.
    for credential in &ended {
        sqlx::query(
            "INSERT INTO llmlite_admin_action
                 (at, request_id, actor, action, object_type, object_id, before, after)
             VALUES ($1, $2, 'llmlite', $3, 'user', $4, NULL, $5)",
        )
        .bind(now)
        .bind(request_id.to_string())
        .bind(action)
        .bind(user_id)
        .bind(json!({"credential": credential, "keys_ended": keys.len()}))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(keys.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_unambiguous_letters_and_typing_is_forgiven() {
        for _ in 0..100 {
            let code = user_code();
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        }
        assert_eq!(
            normalize_user_code("bcdf ghjk").as_deref(),
            Some("BCDF-GHJK")
        );
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(
            normalize_user_code("ABCD-EFGH"),
            None,
            "vowels are not used"
        );
        assert_eq!(normalize_user_code("BCDF-GHJK'--"), None);
    }
}
