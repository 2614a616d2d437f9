//! The console's company sign-in: OpenID Connect's authorization code flow with PKCE.
//!
//! `/ui/oidc/start` asks the provider for a sign-in: the state's hash, the nonce and the PKCE
//! verifier are kept in `llmlite_sign_in_state` for ten minutes, and the state also goes in a
//! short `SameSite=Lax` cookie, so that the callback is bound to the browser that started it
//! (a callback URL sent to somebody else signs nobody in). `/ui/oidc/callback` takes that row
//! (once: a replayed callback finds nothing), exchanges the code, checks the ID token
//! ([`crate::clients::oidc`]), makes or updates the user ([`crate::admin::users::sign_in`]),
//! and starts a session. Any failure starts nothing, is counted by the throttle, and says what
//! failed without echoing a token.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::login::{refused, return_to, start_session, throttled};
use super::session::{Via, cookie, secure};
use super::throttle;
use crate::admin::users::{SignedIn, sign_in};
use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

/// The cookie that binds a sign-in under way to its browser.
const STATE_COOKIE: &str = "llmlite_oidc_state";

/// How long a sign-in may take at the provider.
const STATE_MINUTES: i64 = 10;

fn unavailable(state: &AppState) -> Response {
    refused(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "The company sign-in is not answering; try again in a moment.",
    )
}

/// The client's address, unless it failed too often: then the answer that says so.
async fn address_allowed(state: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    let address = throttle::client_address(headers);
    match throttle::refused(state, &address, None).await {
        Ok(Some(retry_after)) => Err(throttled(state, retry_after)),
        Ok(None) => Ok(address),
        Err(_) => Err(unavailable(state)),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct Start {
    #[serde(default)]
    next: Option<String>,
}

/// Sends the browser to the provider; it comes back to `next` (a console path) when signed in.
pub(super) async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Start>,
) -> Response {
    let Some(provider) = state.oidc.clone() else {
        return Redirect::to("/ui/login").into_response();
    };
    if let Err(refusal) = address_allowed(&state, &headers).await {
        return refusal;
    }
    let begun = match provider.begin().await {
        Ok(begun) => begun,
        Err(e) => {
            tracing::warn!(error = %e, "company sign-in could not start");
            return unavailable(&state);
        }
    };
    let now = state.clock.now();
    let saved = async {
        let pool = state.db.pool().await?;
        sqlx::query(
            "WITH old AS (DELETE FROM llmlite_sign_in_state WHERE created_at < $5)
             INSERT INTO llmlite_sign_in_state (state_hash, nonce, verifier, created_at, return_to)
             VALUES ($1, $2, $3, $4, $6)",
        )
        .bind(sha256_hex(&begun.state))
        .bind(&begun.nonce)
        .bind(&begun.verifier)
        .bind(now)
        .bind(now - chrono::Duration::minutes(STATE_MINUTES))
        .bind(return_to(query.next.as_deref()))
        .persistent(false)
        .execute(pool)
        .await?;
        Ok::<_, ApiError>(())
    };
    if saved.await.is_err() {
        return unavailable(&state);
    }
    let mut response = Redirect::to(&begun.url).into_response();
    let bound = format!(
        "{STATE_COOKIE}={}; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age={}{}",
        begun.state,
        STATE_MINUTES * 60,
        secure(&headers)
    );
    if let Ok(value) = HeaderValue::from_str(&bound) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize, Default)]
pub(super) struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Pending {
    nonce: String,
    verifier: String,
    return_to: String,
}

/// Why a callback starts no session: its status, and what the person is told.
struct Refusal {
    status: StatusCode,
    message: String,
    /// The account it is counted against, when one is known.
    account: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            account: None,
        }
    }
}

/// The provider sends the browser back here.
pub(super) async fn callback(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    let Some(provider) = state.oidc.clone() else {
        return Redirect::to("/ui/login").into_response();
    };
    let address = match address_allowed(&state, &headers).await {
        Ok(address) => address,
        Err(refusal) => return refusal,
    };
    let outcome = signed_in(&state, &provider, &headers, request_id, &query).await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(refusal) => {
            if refusal.status != StatusCode::SERVICE_UNAVAILABLE
                && let Err(e) = throttle::failed(&state, &address, refusal.account.as_deref()).await
            {
                tracing::warn!(error = %e, "a failed sign-in was not counted");
            }
            tracing::info!(
                target: "llmlite::console",
                status = refusal.status.as_u16(),
                reason = %refusal.message,
                "company sign-in refused"
            );
            refused(&state, refusal.status, &refusal.message)
        }
    };
    // The sign-in under way is over either way.
    let clear = format!(
        "{STATE_COOKIE}=; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure(&headers)
    );
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn signed_in(
    state: &AppState,
    provider: &crate::clients::oidc::Provider,
    headers: &HeaderMap,
    request_id: RequestId,
    query: &Callback,
) -> Result<Response, Refusal> {
    if let Some(error) = &query.error {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            format!("The company sign-in did not sign you in ({error})."),
        ));
    }
    let (Some(code), Some(returned)) = (&query.code, &query.state) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "The sign-in came back without a code or state.",
        ));
    };
    let bound = cookie(headers, STATE_COOKIE).unwrap_or("");
    if bound.is_empty() || !bool::from(bound.as_bytes().ct_eq(returned.as_bytes())) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started from this browser (its state does not match): \
             start again.",
        ));
    }
    let now = state.clock.now();
    let taken: Result<Option<Pending>, ApiError> = async {
        Ok(sqlx::query_as(
            "DELETE FROM llmlite_sign_in_state WHERE state_hash = $1 AND created_at > $2
             RETURNING nonce, verifier, return_to",
        )
        .bind(sha256_hex(returned))
        .bind(now - chrono::Duration::minutes(STATE_MINUTES))
        .persistent(false)
        .fetch_optional(state.db.pool().await?)
        .await?)
    }
    .await;
    let pending = match taken {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or was already used: start again.",
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering; try again in a moment.",
            ));
        }
    };
    let identity = provider
        .finish(code, &pending.verifier, &pending.nonce, now)
        .await
        .map_err(|e| {
            tracing::warn!(target: "llmlite::console", error = %e, "company sign-in failed");
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!("The company sign-in could not be completed: {e}."),
            )
        })?;
    let account = format!("oidc:{}", identity.subject);
    match throttle::refused(state, "", Some(&account)).await {
        Ok(Some(_)) => {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "Too many failed sign-ins to this account: try again later.".into(),
                account: Some(account),
            });
        }
        Ok(None) => {}
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering; try again in a moment.",
            ));
        }
    }
    let settings = provider.settings();
    let role = (!settings.role_map.is_empty()).then(|| settings.role_for(&identity.groups));
    let teams = (!settings.team_map.is_empty()).then(|| settings.teams_for(&identity.groups));
    let user_id = crate::admin::VIA_CONSOLE
        .scope(
            (),
            sign_in(
                state,
                request_id,
                SignedIn {
                    subject: &identity.subject,
                    email: identity.email.as_deref(),
                    name: identity.name.as_deref(),
                    role,
                    teams: teams.as_deref(),
                },
            ),
        )
        .await
        .map_err(|e| Refusal {
            status: e.status(),
            message: e.to_string(),
            account: Some(account.clone()),
        })?;
    let caller = match crate::auth::person(state, &user_id).await {
        Ok(Some((caller, _))) => caller,
        Ok(None) => {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                message: "This account is disabled in llmlite: ask an admin.".into(),
                account: Some(account),
            });
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering; try again in a moment.",
            ));
        }
    };
    start_session(
        state,
        headers,
        request_id,
        &caller,
        Via::Oidc,
        (Some(&identity.id_token), identity.refresh_token.as_deref()),
        &return_to(Some(&pending.return_to)),
    )
    .await
    .map_err(|_| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is not answering; try again in a moment.",
        )
    })
}
