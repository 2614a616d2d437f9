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

/// The session of a console request, whoever it is, or the answer that sends the browser to
/// sign in.
pub(super) async fn anyone_signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Session, Response> {
    Session::from_headers(state, headers)
        .await
        .map_err(|error| match error {
            ApiError::MissingApiKey => Redirect::to("/ui/login").into_response(),
            ApiError::DatabaseUnavailable(_) => {
                let mut response = page(
                    "Unavailable",
                    None,
                    "<p class=\"error\" role=\"alert\">The database is not answering; try \
                     again in a moment.</p>",
                );
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response
            }
            // A session that was there and is refused (expired, idle, forged, its key blocked,
            // its user disabled) is told so.
            _ => Redirect::to("/ui/login?ended=1").into_response(),
        })
}

/// The answer to a person who opens what is not theirs: a 403, nothing read or changed.
pub(super) fn forbidden(session: &Session, what: &str) -> Response {
    let mut response = page(
        "Refused",
        Some(session),
        &format!(
            "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui\">Back</a></p>",
            super::html::escape(what)
        ),
    );
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
}

/// The session of an admin page (an admin, or a `proxy_admin_viewer` person, who reads but
/// changes nothing), or the answer: sign in, or a 403 for anyone else.
pub(super) async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    let session = anyone_signed_in(state, headers).await?;
    if session.caller().reads_everything() {
        Ok(session)
    } else {
        Err(forbidden(
            &session,
            "This page is for admins. Your own keys, spend and models are under My keys.",
        ))
    }
}

/// An admin's form that changes something: the session it was posted in, and its fields, once
/// its CSRF token is the session's and the caller is an admin. Otherwise the answer to send:
/// sign in, or a 403 before anything is read.
pub(super) async fn posted<T: serde::de::DeserializeOwned + Default + Csrf>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Session, T), Response> {
    let (session, sent) = posted_by_anyone(state, headers, body).await?;
    if session.caller().is_admin() {
        Ok((session, sent))
    } else {
        Err(forbidden(
            &session,
            "Only an admin may do this. Nothing was changed.",
        ))
    }
}

/// A form anyone signed in may send (about their own things): the session and the fields, once
/// the CSRF token is the session's.
pub(super) async fn posted_by_anyone<T: serde::de::DeserializeOwned + Default + Csrf>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Session, T), Response> {
    let session = anyone_signed_in(state, headers).await?;
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
