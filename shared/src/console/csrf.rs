//! Who may act in the console: the session a request is signed in with, and for a form that
//! changes something, a CSRF token that matches the session's. Forms are read here too.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;

use super::Session;
use super::html::page;
use crate::error::ApiError;
use crate::state::AppState;

/// A form's fields; a body that is not a form reads as empty (and is refused as such).
pub(super) fn form<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> T {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// The answer to a form whose CSRF token is not the session's: a 403, nothing changed.
pub(super) fn forbidden_csrf() -> Response {
    let mut response = page(
        "Refused",
        None,
        "<p class=\"error\" role=\"alert\">This form was not sent from a page of this session \
         (its CSRF token is missing or wrong). Nothing was changed.</p>\
         <p><a href=\"/ui/keys\">Back</a></p>",
    );
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
}

/// The session of a console request, or the answer that sends the browser to sign in.
pub(super) async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    Session::from_headers(state, headers)
        .await
        .map_err(|error| {
            // A session that was there and is refused (expired, forged, its key blocked) is told so.
            let target = match error {
                ApiError::MissingApiKey => "/ui/login",
                _ => "/ui/login?ended=1",
            };
            Redirect::to(target).into_response()
        })
}

/// A form that changes something: the session it was posted in, and its fields, once its CSRF
/// token is the session's. Otherwise the answer to send: sign in, or a 403 before anything is
/// read.
pub(super) async fn posted<T: serde::de::DeserializeOwned + Default + Csrf>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Session, T), Response> {
    let session = signed_in(state, headers).await?;
    let sent: T = form(body);
    if session.csrf_matches(sent.csrf()) {
        Ok((session, sent))
    } else {
        Err(forbidden_csrf())
    }
}

/// A form with a CSRF token.
pub(super) trait Csrf {
    fn csrf(&self) -> &str;
}
