//! Signing in and out of the console: the sign-in form, the one check of the key that starts a
//! session, and sign-out.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::csrf::{forbidden_csrf, form};
use super::html::{escape, page};
use super::{SESSION_HOURS, Session};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// The sign-in form, with `message` (escaped) above it when there is one.
fn login_form(message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        "<h2>Sign in</h2>{message}\
         <form method=\"post\" action=\"/ui/login\" class=\"signin\">\
         <label for=\"key\">Master key or admin key</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"off\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"note\">The key is checked once; the browser keeps only a signed session for \
         {SESSION_HOURS} hours.</p>"
    )
}

#[derive(Deserialize, Default)]
pub(super) struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
}

pub(super) async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let message = query.ended.is_some().then_some(
        "Your session has ended (it expired, or its key was blocked or changed): sign in again.",
    );
    page("Sign in", None, &login_form(message))
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

/// Checks the key once and starts a session; a refusal is the form again with the reason.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let login: LoginForm = form(&body);
    let key = login.key.trim();
    let caller = if state.config.master_key.matches(key).await {
        Ok(Caller::Master)
    } else if key.is_empty() {
        Err(ApiError::MissingApiKey)
    } else {
        auth::authenticate_key(&state, key).await
    };
    let refused = |status: StatusCode, message: &str| {
        let mut response = page("Sign in", None, &login_form(Some(message)));
        *response.status_mut() = status;
        response
    };
    match caller {
        Ok(caller) if caller.is_admin() => {
            let session = Session::start(&state, &caller);
            let mut response = Redirect::to("/ui/keys").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&session.cookie(&state, &headers)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Ok(_) => refused(
            StatusCode::FORBIDDEN,
            "This key is not an admin key: the console needs the master key or a key of a \
             proxy_admin user.",
        ),
        Err(ApiError::DatabaseUnavailable(_)) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is not answering; try again in a moment.",
        ),
        Err(_) => refused(
            StatusCode::UNAUTHORIZED,
            "That key was not accepted: it is unknown, blocked, expired or deleted.",
        ),
    }
}

#[derive(Deserialize, Default)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session: the cookie is cleared.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sent: CsrfForm = form(&body);
    match Session::from_headers(&state, &headers).await {
        Ok(session) if session.csrf_matches(&sent.csrf) => {
            let mut response = Redirect::to("/ui/login").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&Session::clear_cookie(&headers)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Ok(_) => forbidden_csrf(),
        Err(_) => Redirect::to("/ui/login").into_response(),
    }
}
