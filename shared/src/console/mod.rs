//! The admin console under `/ui`, served by the `key-admin` function (and `llmlite dev`/`serve`):
//! server-rendered HTML, no JavaScript needed for what is here, every asset embedded, and a
//! strict Content-Security-Policy.
//!
//! People sign in through the company's OpenID Provider ([`oidc`]; groups map to roles and
//! teams), or, for bootstrap and break-glass, with the master key or a key of a `proxy_admin`
//! user ([`login`]; it can be turned off). The browser then holds only a session
//! ([`session`]): a random ID in a cookie MACed under the master key (so rotating the master
//! key ends every session), HttpOnly, SameSite=Strict, Secure (except on loopback), kept in
//! PostgreSQL with an absolute expiry of 8 hours and an idle timeout; sign-out ends it
//! everywhere. Every request checks the caller again, so a blocked key or a disabled user is
//! out at once. State-changing requests carry the session's CSRF token; failed sign-ins are
//! throttled ([`throttle`]).
//!
//! Admins (and `proxy_admin_viewer` people, read-only) see everything; other people see their
//! own page ([`me`]: their keys within their team's policy), their own spend and the models
//! they may use, and are refused (403) anything else.
//!
//! This file wires the router and serves the embedded assets; each page's concern has its own
//! file: the keys table ([`keys`]) and what is done to keys ([`key_actions`]), one key
//! ([`detail`]), teams and users ([`owners`]), spend, models and audit ([`pages`]), the last
//! hour's operations ([`operations`]), set-up snippets ([`snippets`]), the CSRF and role checks
//! ([`csrf`]) and the HTML helpers ([`html`]).

mod csrf;
mod detail;
mod device;
mod html;
mod key_actions;
mod keys;
mod login;
mod me;
mod oidc;
mod operations;
mod owners;
mod pages;
mod session;
mod snippets;
mod throttle;

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
        .route("/ui/oidc/start", get(oidc::start))
        .route("/ui/oidc/callback", get(oidc::callback))
        .route("/ui/device", get(device::device_page).post(device::decide))
        .route("/ui/me", get(me::me_page))
        .route("/ui/me/keys", post(me::create))
        .route("/ui/me/keys/regenerate", post(me::regenerate))
        .route("/ui/me/keys/delete", post(me::delete))
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

/// Admins go to the keys table, everyone else to their own page.
async fn home(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    match Session::from_headers(&state, &headers).await {
        Ok(session) if session.is_self_service() => Redirect::to("/ui/me").into_response(),
        Ok(_) => Redirect::to("/ui/keys").into_response(),
        Err(_) => Redirect::to("/ui/login").into_response(),
    }
}
