//! `/ui/device`: where a person approves `llmlite login` on their machine ([`crate::device`]).
//! They must be signed in with the company account (the approval carries the provider's
//! refresh token from that sign-in, so that each later refresh can ask whether they are still
//! enabled); the page shows the user code their terminal shows, and Approve or Deny.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::Session;
use super::csrf::{Csrf, anyone_signed_in, forbidden, posted_by_anyone};
use super::html::{escape, form_encode, page, with_status};
use super::throttle;
use crate::auth::Caller;
use crate::device::normalize_user_code;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub(super) struct DeviceQuery {
    #[serde(default)]
    user_code: String,
}

/// The approval form, prefilled with `typed` only when it is a user code: anything else (a NUL
/// byte, odd Unicode, a long string) is not shown back.
fn approval_form(session: &Session, typed: &str, message: Option<&str>) -> String {
    let code = normalize_user_code(typed).unwrap_or_default();
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        "<h2>Sign in llmlite on your machine</h2>{message}\
         <p>Approve only if you just ran <code>llmlite login</code> and your terminal shows this \
         code. The machine gets keys of yours that live a few hours and renew while your company \
         account is enabled.</p>\
         <form method=\"post\" action=\"/ui/device\" class=\"signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"user_code\">Code</label>\
         <input id=\"user_code\" name=\"user_code\" value=\"{}\" autocomplete=\"off\" required>\
         <button type=\"submit\" id=\"approve\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\">Deny</button></form>",
        escape(session.csrf()),
        escape(&code)
    )
}

/// Only a person signed in with the company account may approve.
fn company_person(session: &Session) -> Option<&str> {
    match session.caller() {
        Caller::User { user_id, role, .. } if !role.ends_with("_viewer") => Some(user_id),
        _ => None,
    }
}

/// `GET /ui/device?user_code=`: signed out, the browser signs in first and comes back here.
pub(super) async fn device_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DeviceQuery>,
) -> Response {
    let here = match normalize_user_code(&query.user_code) {
        Some(code) => format!("/ui/device?user_code={}", form_encode(&code)),
        None => "/ui/device".to_owned(),
    };
    let session = match anyone_signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(_) => {
            return Redirect::to(&format!("/ui/login?next={}", form_encode(&here))).into_response();
        }
    };
    if company_person(&session).is_none() {
        return forbidden(
            &session,
            "Approving a machine needs a sign-in with your company account (not a key or a \
             viewer role): sign out and sign in with it.",
        );
    }
    page(
        "Approve a machine",
        Some(&session),
        &approval_form(&session, &query.user_code, None),
    )
}

#[derive(Deserialize, Default)]
struct Decision {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
    #[serde(default)]
    decision: String,
}

impl Csrf for Decision {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/device`: approves or denies the code.
pub(super) async fn decide(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, sent) = match posted_by_anyone::<Decision>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let Some(user_id) = company_person(&session).map(str::to_owned) else {
        return forbidden(
            &session,
            "Approving a machine needs a sign-in with your company account.",
        );
    };
    let address = throttle::client_address(&headers);
    let account = format!("device:{user_id}");
    match throttle::refused(&state, &address, Some(&account)).await {
        Ok(Some(retry_after)) => {
            return with_status(
                page(
                    "Approve a machine",
                    Some(&session),
                    &approval_form(
                        &session,
                        &sent.user_code,
                        Some(&format!(
                            "Too many wrong codes: try again in {} minutes.",
                            (retry_after + 59) / 60
                        )),
                    ),
                ),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Ok(None) => {}
        Err(error) => return with_status(page("Error", Some(&session), ""), error.status()),
    }
    let approve = sent.decision == "approve";
    let decided = async {
        let code = normalize_user_code(&sent.user_code)
            .ok_or_else(|| ApiError::invalid_param("user_code", "that is not a code"))?;
        let idp_refresh_token = if approve {
            session.idp_refresh_token(&state).await?
        } else {
            None
        };
        let now = state.clock.now();
        let mut tx = state.db.pool().await?.begin().await?;
        let updated = sqlx::query(
            "UPDATE llmlite_device_grant
             SET user_id = $2, approved_at = $3, denied = $4, idp_refresh_token = $5
             WHERE user_code = $1 AND expires_at > $3 AND user_id IS NULL AND NOT denied",
        )
        .bind(&code)
        .bind(&user_id)
        .bind(now)
        .bind(!approve)
        .bind(idp_refresh_token)
        .persistent(false)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(ApiError::NotFound(
                "no sign-in is waiting for that code (it expired, was used, or was mistyped)"
                    .into(),
            ));
        }
        crate::admin::VIA_CONSOLE
            .scope(
                (),
                crate::admin::Action {
                    at: now,
                    request_id,
                    caller: session.caller(),
                    action: if approve { "cli.approve" } else { "cli.deny" },
                    object_type: "user",
                    object_id: &user_id,
                    before: None,
                    after: None,
                }
                .record(&mut tx),
            )
            .await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    match decided {
        Ok(()) => page(
            "Approve a machine",
            Some(&session),
            if approve {
                "<h2>Approved</h2><p id=\"approved\">Go back to your terminal: \
                 <code>llmlite login</code> has finished, and <code>llmlite key</code> prints a \
                 current key.</p>"
            } else {
                "<h2>Denied</h2><p id=\"denied\">The machine was not signed in.</p>"
            },
        ),
        Err(error) => {
            if matches!(
                error,
                ApiError::NotFound(_) | ApiError::InvalidRequest { .. }
            ) && let Err(e) = throttle::failed(&state, &address, Some(&account)).await
            {
                tracing::warn!(error = %e, "a wrong device code was not counted");
            }
            with_status(
                page(
                    "Approve a machine",
                    Some(&session),
                    &approval_form(&session, &sent.user_code, Some(&error.to_string())),
                ),
                error.status(),
            )
        }
    }
}
