//! The admin console under `/ui`, served by the `key-admin` function (and `llmlite dev`/`serve`):
//! server-rendered HTML, no JavaScript needed for what is here, every asset embedded, and a
//! strict Content-Security-Policy.
//!
//! Sign-in takes the master key or a key of a `proxy_admin` user, once. The browser then holds
//! only a session: a cookie signed with a secret derived from the master key (so every instance
//! reads it, and rotating the master key ends every session), HttpOnly, SameSite=Strict, Secure
//! (except on loopback), for 8 hours. It names the caller (`master`, or the key's hash), never
//! the key; every request checks the key again, so a blocked or deleted key's session ends at
//! once. State-changing requests carry the session's CSRF token.
//!
//! This file wires the router and serves the embedded assets; each page's concern has its own
//! file: [`login`], the keys table ([`keys`]) and what is done to keys ([`key_actions`]), one key
//! ([`detail`]), teams and users ([`owners`]), spend, models and audit ([`pages`]), the last
//! hour's operations ([`operations`]), the session
//! cookie ([`session`]), the CSRF check ([`csrf`]) and the HTML helpers ([`html`]).

mod csrf;
mod detail;
mod html;
mod key_actions;
mod keys;
mod login;
mod operations;
mod owners;
mod pages;
mod session;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::state::AppState;
pub use html::escape;
pub use session::{SESSION_COOKIE, SESSION_HOURS, Session};

/// The stylesheet and the one script (copying a new key), embedded.
const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// No script, style, image or frame from anywhere but the console itself; no inline script.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       script-src 'self'; connect-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/login", get(login::login_page).post(login::login))
        .route("/ui/logout", post(login::logout))
        .route("/ui/keys", get(keys::keys_page))
        .route(
            "/ui/keys/new",
            get(key_actions::new_key_page).post(key_actions::create_key),
        )
        .route("/ui/keys/action", post(key_actions::key_action))
        .route("/ui/keys/regenerate", post(key_actions::regenerate_key))
        .route("/ui/keys/{token}", get(detail::key_page))
        .route("/ui/teams", get(owners::teams).post(owners::save_team))
        .route("/ui/teams/{id}", get(owners::team))
        .route("/ui/users", get(owners::users).post(owners::save_user))
        .route("/ui/users/{id}", get(owners::user))
        .route("/ui/spend", get(pages::spend_page))
        .route("/ui/spend.json", get(pages::spend_json))
        .route("/ui/spend.csv", get(pages::spend_csv))
        .route("/ui/models", get(pages::models_page))
        .route("/ui/operations", get(operations::operations_page))
        .route("/ui/audit", get(pages::audit_page))
        .route("/ui/static/console.css", get(stylesheet))
        .route("/ui/static/console.js", get(script))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admin::ship_audit,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// The headers every console answer carries.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

async fn home() -> Redirect {
    Redirect::to("/ui/keys")
}
