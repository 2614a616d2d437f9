//! Signing in and out of the console: the sign-in page (the company's sign-in, and the key form
//! for bootstrap and break-glass unless `LLMLITE_CONSOLE_KEY_SIGN_IN=off`), the one check of
//! a key that starts a session, and sign-out (at the identity provider too, when it has an
//! end-session endpoint). Every sign-in and sign-out is an admin action; failed sign-ins are
//! throttled ([`super::throttle`]). The OIDC flow itself is in [`super::oidc`].

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::csrf::{forbidden_csrf, form};
use super::html::{escape, page, with_status};
use super::session::Via;
use super::{SESSION_HOURS, Session, throttle};
use crate::admin::Action;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::keys::KeyHash;
use crate::state::AppState;

/// The sign-in page, with `message` (escaped) above it when there is one.
pub(super) fn login_form(state: &AppState, message: Option<&str>) -> String {
    login_form_to(state, message, None)
}

/// The sign-in page; the company sign-in comes back to `next` (a console path) afterwards.
fn login_form_to(state: &AppState, message: Option<&str>, next: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let sign_in = &state.config.sign_in;
    let company = if sign_in.oidc.is_some() {
        let href = match next.map(|n| return_to(Some(n))) {
            Some(path) if path != "/ui" => {
                format!("/ui/oidc/start?next={}", super::html::form_encode(&path))
            }
            _ => "/ui/oidc/start".to_owned(),
        };
        format!(
            "<p><a class=\"button\" id=\"company-sign-in\" href=\"{}\">\
             Sign in with your company account</a></p>",
            escape(&href)
        )
    } else {
        String::new()
    };
    let key_form = if sign_in.key_sign_in {
        let label = if sign_in.oidc.is_some() {
            "<h3>Break-glass</h3><p class=\"note\">For bootstrap and emergencies; every use \
             is in the audit trail.</p>"
        } else {
            ""
        };
        format!(
            "{label}<form method=\"post\" action=\"/ui/login\" class=\"signin\">\
             <label for=\"key\">Master key or admin key</label>\
             <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"off\" required>\
             <button type=\"submit\">Sign in</button></form>"
        )
    } else {
        String::new()
    };
    format!(
        "<h2>Sign in</h2>{message}{company}{key_form}\
         <p class=\"note\">The browser keeps only a session: {SESSION_HOURS} hours at most, \
         {} minutes idle.</p>",
        sign_in.idle.as_secs() / 60
    )
}

/// The sign-in page again with `message`, and `status`.
pub(super) fn refused(state: &AppState, status: StatusCode, message: &str) -> Response {
    with_status(
        page("Sign in", None, &login_form(state, Some(message))),
        status,
    )
}

/// The refusal of an address or account that failed too often.
pub(super) fn throttled(state: &AppState, retry_after: i64) -> Response {
    let mut response = refused(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "Too many failed sign-ins from here or to this account: try again in {} minutes.",
            (retry_after + 59) / 60
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[derive(Deserialize, Default)]
pub(super) struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    signed_out: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let message = if query.ended.is_some() {
        Some(
            "Your session has ended (it expired, was idle too long, or its key or user was \
             blocked or changed): sign in again.",
        )
    } else if query.signed_out.is_some() {
        Some("You are signed out.")
    } else {
        None
    };
    page(
        "Sign in",
        None,
        &login_form_to(&state, message, query.next.as_deref()),
    )
}

/// Records a sign-in or sign-out as an admin action, in a transaction of its own.
pub(super) async fn audit_session(
    state: &AppState,
    request_id: RequestId,
    caller: &Caller,
    action: &'static str,
    via: Via,
) -> Result<(), ApiError> {
    let mut tx = state.db.pool().await?.begin().await?;
    crate::admin::VIA_CONSOLE
        .scope(
            (),
            Action {
                at: state.clock.now(),
                request_id,
                caller,
                action,
                object_type: "session",
                object_id: &caller.actor(),
                before: None,
                after: Some(serde_json::json!({ "via": via.as_str() })),
            }
            .record(&mut tx),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Where a sign-in may send the browser afterwards: a console path, nothing else (no other
/// host, no scheme, no `//`).
pub(super) fn return_to(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with("/ui")
                && !path.contains("//")
                && !path.contains('\\')
                && path.len() <= 200
                && path.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            path.to_owned()
        }
        _ => "/ui".to_owned(),
    }
}

/// Starts a session for `caller` and answers with a page that moves the browser on to
/// `return_to` (a path [`return_to`] allowed). A page, not a redirect: after the identity
/// provider's redirect, a browser would not send a `SameSite=Strict` cookie on the next hop of
/// the same chain; a page's own navigation is same-site.
pub(super) async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    request_id: RequestId,
    caller: &Caller,
    via: Via,
    tokens: (Option<&str>, Option<&str>),
    return_to: &str,
) -> Result<Response, ApiError> {
    let cookie = Session::start(state, headers, caller, via, tokens).await?;
    audit_session(state, request_id, caller, "console.sign_in", via).await?;
    let target = escape(return_to);
    let mut response = page(
        "Signed in",
        None,
        &format!(
            "<meta http-equiv=\"refresh\" content=\"0;url={target}\">\
             <p>Signed in. <a id=\"continue\" href=\"{target}\">Continue</a>.</p>"
        ),
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

/// Checks the key once and starts a session; a refusal is the form again with the reason.
pub(super) async fn login(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.config.sign_in.key_sign_in {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            "Signing in with a key is turned off here: use your company account.",
        );
    }
    let login: LoginForm = form(&body);
    let key = login.key.trim();
    let address = throttle::client_address(&headers);
    // The account a guess is against: the key's hash, never the key.
    let account = (!key.is_empty()).then(|| format!("key:{}", &KeyHash::of(key).as_str()[..16]));
    match throttle::refused(&state, &address, account.as_deref()).await {
        Ok(Some(retry_after)) => return throttled(&state, retry_after),
        Ok(None) => {}
        Err(_) => {
            return refused(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering; try again in a moment.",
            );
        }
    }
    let caller = if state.config.master_key.matches(key).await {
        Ok(Caller::Master)
    } else if key.is_empty() {
        Err(ApiError::MissingApiKey)
    } else {
        auth::authenticate_key(&state, key).await
    };
    let refusal = match caller {
        Ok(caller) if caller.is_admin() => {
            return match start_session(
                &state,
                &headers,
                request_id,
                &caller,
                Via::Key,
                (None, None),
                "/ui",
            )
            .await
            {
                Ok(mut response) => {
                    // The form's answer goes straight on: no provider redirect came before it.
                    *response.status_mut() = StatusCode::SEE_OTHER;
                    response
                        .headers_mut()
                        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
                    response
                }
                Err(_) => refused(
                    &state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is not answering; try again in a moment.",
                ),
            };
        }
        Ok(_) => (
            StatusCode::FORBIDDEN,
            "This key is not an admin key: the console needs the master key or a key of a \
             proxy_admin user.",
        ),
        Err(ApiError::DatabaseUnavailable(_)) => {
            return refused(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering; try again in a moment.",
            );
        }
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            "That key was not accepted: it is unknown, blocked, expired or deleted.",
        ),
    };
    if let Err(e) = throttle::failed(&state, &address, account.as_deref()).await {
        tracing::warn!(error = %e, "a failed sign-in was not counted");
    }
    refused(&state, refusal.0, refusal.1)
}

#[derive(Deserialize, Default)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session: refused from now on wherever its cookie is, the cookie cleared, and the
/// browser sent to the identity provider's end-session endpoint when the session came from it.
pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sent: CsrfForm = form(&body);
    let session = match Session::from_headers(&state, &headers).await {
        Ok(session) if session.csrf_matches(&sent.csrf) => session,
        Ok(_) => return forbidden_csrf(),
        Err(_) => return Redirect::to("/ui/login").into_response(),
    };
    let id_token = match session.sign_out(&state).await {
        Ok(id_token) => id_token,
        Err(_) => {
            return refused(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering, so the session could not be ended; try again.",
            );
        }
    };
    let via = if matches!(session.caller(), Caller::User { .. }) {
        Via::Oidc
    } else {
        Via::Key
    };
    if let Err(e) = audit_session(
        &state,
        request_id,
        session.caller(),
        "console.sign_out",
        via,
    )
    .await
    {
        tracing::warn!(error = %e, "a sign-out was not recorded");
    }
    let target = match (&state.oidc, via) {
        (Some(provider), Via::Oidc) => provider.end_session_url(id_token.as_deref()).await,
        _ => None,
    };
    // To the provider by a page of ours, not a redirect: the console's CSP (`form-action
    // 'self'`) would stop a form's redirect to another origin.
    let mut response = match target {
        Some(url) => page(
            "Signing out",
            None,
            &format!(
                "<meta http-equiv=\"refresh\" content=\"0;url={0}\">\
                 <p>Signed out here. <a id=\"continue\" href=\"{0}\">Sign out of your \
                 company account too</a>.</p>",
                escape(&url)
            ),
        ),
        None => Redirect::to("/ui/login?signed_out=1").into_response(),
    };
    if let Ok(cookie) = HeaderValue::from_str(&Session::clear_cookie(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::return_to;

    #[test]
    fn a_sign_in_returns_only_to_a_console_path() {
        assert_eq!(
            return_to(Some("/ui/device?user_code=BCDF-GHJK")),
            "/ui/device?user_code=BCDF-GHJK"
        );
        for hostile in [
            "https://evil.example.com/ui",
            "//evil.example.com/ui",
            "/ui//evil.example.com",
            "/\\evil.example.com",
            "/ui\\@evil.example.com",
            "/uí",
            "/ui/ space",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(return_to(Some(hostile)), "/ui", "{hostile}");
        }
        assert_eq!(return_to(None), "/ui");
        assert_eq!(return_to(Some(&format!("/ui/{}", "a".repeat(300)))), "/ui");
    }
}
