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

mod detail;
mod owners;
mod pages;
mod session;

use axum::Extension;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;

use crate::admin::keys::Tier;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;
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
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/keys", get(keys_page))
        .route("/ui/keys/new", get(new_key_page).post(create_key))
        .route("/ui/keys/action", post(key_action))
        .route("/ui/keys/regenerate", post(regenerate_key))
        .route("/ui/keys/{token}", get(detail::key_page))
        .route("/ui/teams", get(owners::teams).post(owners::save_team))
        .route("/ui/teams/{id}", get(owners::team))
        .route("/ui/users", get(owners::users).post(owners::save_user))
        .route("/ui/users/{id}", get(owners::user))
        .route("/ui/spend", get(pages::spend_page))
        .route("/ui/spend.json", get(pages::spend_json))
        .route("/ui/spend.csv", get(pages::spend_csv))
        .route("/ui/models", get(pages::models_page))
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

/// HTML-escapes `text` for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title`, the navigation when signed in (with the sign-out form), and `body`.
pub(super) fn page(title: &str, session: Option<&Session>, body: &str) -> Response {
    let nav = match session {
        Some(session) => format!(
            "<nav><a href=\"/ui/keys\">Keys</a><a href=\"/ui/keys/new\">New key</a>\
             <a href=\"/ui/teams\">Teams</a><a href=\"/ui/users\">Users</a>\
             <a href=\"/ui/spend\">Spend</a><a href=\"/ui/models\">Models</a>\
             <a href=\"/ui/audit\">Audit</a>\
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>\
             <span class=\"who\">{}</span></nav>",
            escape(session.csrf()),
            escape(&session.display_name()),
        ),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · llmlite</title><link rel=\"stylesheet\" href=\"/ui/static/console.css\">\
         </head><body><header><h1>llmlite</h1>{nav}</header><main>{body}</main></body></html>\n",
        escape(title)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

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
struct LoginQuery {
    #[serde(default)]
    ended: Option<String>,
}

async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let message = query.ended.is_some().then_some(
        "Your session has ended (it expired, or its key was blocked or changed): sign in again.",
    );
    page("Sign in", None, &login_form(message))
}

/// A form's fields; a body that is not a form reads as empty (and is refused as such).
fn form<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> T {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    key: String,
}

/// Checks the key once and starts a session; a refusal is the form again with the reason.
async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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
async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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

fn forbidden_csrf() -> Response {
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

async fn home() -> Redirect {
    Redirect::to("/ui/keys")
}

#[derive(Deserialize, Default)]
struct KeysQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    token: String,
    key_alias: Option<String>,
    key_name: String,
    user_id: Option<String>,
    team_id: Option<String>,
    models: Vec<String>,
    spend: rust_decimal::Decimal,
    max_budget: Option<rust_decimal::Decimal>,
    budget_reset_at: Option<chrono::DateTime<chrono::Utc>>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    last_active: Option<chrono::DateTime<chrono::Utc>>,
    blocked: bool,
    is_active: bool,
    expires: Option<chrono::DateTime<chrono::Utc>>,
    total: i64,
}

/// Rows a page of the keys table shows.
const KEYS_PER_PAGE: i64 = 50;

/// The keys table: alias, owner, models, budget, limits, last activity and status; filtered and
/// paginated by the database.
async fn keys_page(
    State(state): State<AppState>,
    Extension(_request_id): Extension<RequestId>,
    headers: HeaderMap,
    Query(query): Query<KeysQuery>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let page_number = match query.page.as_deref().map(str::parse::<u32>) {
        None => 1,
        Some(Ok(n)) if (1..=100_000).contains(&n) => i64::from(n),
        Some(_) => {
            let mut response = page(
                "Keys",
                Some(&session),
                "<p class=\"error\" role=\"alert\">The page number must be a whole number from \
                 1 to 100000.</p><p><a href=\"/ui/keys\">All keys</a></p>",
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    // The filter is text: LIKE's wildcards in it match themselves.
    let search = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| {
            let literal = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{literal}%")
        });
    let team = query
        .team
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let rows: Result<Vec<KeyRow>, ApiError> = async {
        Ok(sqlx::query_as(
            "SELECT token, key_alias, key_name, user_id, team_id, models, spend, max_budget,
                    budget_reset_at, rpm_limit, tpm_limit, last_active, blocked, is_active,
                    expires, count(*) OVER () AS total
             FROM litellm_verificationtoken
             WHERE ($1::text IS NULL OR key_alias ILIKE $1 OR user_id ILIKE $1 OR key_name ILIKE $1)
               AND ($2::text IS NULL OR team_id = $2)
             ORDER BY created_at DESC, token
             LIMIT $3 OFFSET $4",
        )
        .bind(&search)
        .bind(team)
        .bind(KEYS_PER_PAGE)
        .bind((page_number - 1) * KEYS_PER_PAGE)
        .persistent(false)
        .fetch_all(state.db.pool().await?)
        .await?)
    }
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let mut response = page(
                "Keys",
                Some(&session),
                &format!(
                    "<p class=\"error\" role=\"alert\">The keys could not be read: {}</p>",
                    escape(&error.to_string())
                ),
            );
            *response.status_mut() = error.status();
            return response;
        }
    };
    let now = state.clock.now();
    let total = rows.first().map_or(0, |r| r.total);
    let mut table = String::from(
        "<table class=\"keys\"><thead><tr><th>Alias</th><th>Key</th><th>Owner</th>\
         <th>Models</th><th>Budget</th><th>RPM / TPM</th><th>Last active</th><th>Status</th>\
         <th>Actions</th></tr></thead><tbody>",
    );
    for r in &rows {
        let owner = [
            r.user_id.as_deref().map(|u| format!("user {}", escape(u))),
            r.team_id.as_deref().map(|t| format!("team {}", escape(t))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("<br>");
        let models = if r.models.is_empty() {
            "all".to_owned()
        } else {
            r.models
                .iter()
                .map(|m| escape(m))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let budget = match r.max_budget {
            Some(max) if max > rust_decimal::Decimal::ZERO => {
                let used = (r.spend / max * rust_decimal::Decimal::from(100))
                    .round()
                    .clamp(
                        rust_decimal::Decimal::ZERO,
                        rust_decimal::Decimal::from(100),
                    );
                let reset = r
                    .budget_reset_at
                    .map(|at| format!(" · resets {}", at.format("%Y-%m-%d")))
                    .unwrap_or_default();
                format!(
                    "<meter min=\"0\" max=\"100\" value=\"{used}\"></meter> ${} of ${}{reset}",
                    r.spend.normalize(),
                    max.normalize()
                )
            }
            Some(max) => format!("${} of ${}", r.spend.normalize(), max.normalize()),
            None => format!("${} (no budget)", r.spend.normalize()),
        };
        let limit = |l: Option<i64>| l.map_or("–".to_owned(), |l| l.to_string());
        let status = if !r.is_active {
            "deleted"
        } else if r.blocked {
            "blocked"
        } else if r.expires.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let actions = if r.is_active {
            let toggle = if r.blocked { "unblock" } else { "block" };
            [toggle, "delete"]
                .iter()
                .map(|action| action_form(&session, &r.token, action))
                .collect::<String>()
        } else {
            String::new()
        };
        table.push_str(&format!(
            "<tr data-token=\"{}\"><td><a href=\"/ui/keys/{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{} / {}</td><td>{}</td><td class=\"status-{status}\">{status}</td>\
             <td class=\"actions\">{actions}</td></tr>",
            escape(&r.token),
            escape(&r.token),
            escape(r.key_alias.as_deref().unwrap_or("(no alias)")),
            escape(&r.key_name),
            owner,
            models,
            budget,
            limit(r.rpm_limit),
            limit(r.tpm_limit),
            r.last_active.map_or("never".to_owned(), |at| at
                .format("%Y-%m-%d %H:%M")
                .to_string()),
        ));
    }
    table.push_str("</tbody></table>");
    let pages = (total + KEYS_PER_PAGE - 1) / KEYS_PER_PAGE;
    let link = |n: i64, label: &str| {
        let mut params = vec![format!("page={n}")];
        if let Some(q) = &query.q {
            params.push(format!("q={}", form_encode(q)));
        }
        if let Some(t) = team {
            params.push(format!("team={}", form_encode(t)));
        }
        format!(
            "<a href=\"/ui/keys?{}\">{label}</a>",
            escape(&params.join("&"))
        )
    };
    let noun = if total == 1 { "key" } else { "keys" };
    let mut pager = format!(
        "<p class=\"pager\">{total} {noun} · page {page_number} of {}",
        pages.max(1)
    );
    if page_number > 1 {
        pager.push_str(&format!(" · {}", link(page_number - 1, "previous")));
    }
    if page_number < pages {
        pager.push_str(&format!(" · {}", link(page_number + 1, "next")));
    }
    pager.push_str("</p>");
    let filters = format!(
        "<form method=\"get\" action=\"/ui/keys\" class=\"filters\">\
         <input name=\"q\" placeholder=\"alias, user or key name\" value=\"{}\">\
         <input name=\"team\" placeholder=\"team\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        escape(query.q.as_deref().unwrap_or("")),
        escape(team.unwrap_or("")),
    );
    page(
        "Keys",
        Some(&session),
        &format!("<h2>Keys</h2>{filters}{table}{pager}"),
    )
}

/// A button that posts `action` for the key `token`, with the session's CSRF token.
fn action_form(session: &Session, token: &str, action: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/ui/keys/action\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"key\" value=\"{}\">\
         <button type=\"submit\" name=\"action\" value=\"{action}\">{action}</button></form>",
        escape(session.csrf()),
        escape(token),
    )
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
async fn posted<T: serde::de::DeserializeOwned + Default + Csrf>(
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
trait Csrf {
    fn csrf(&self) -> &str;
}

impl Csrf for NewKeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl Csrf for ActionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `page`, with `status`.
pub(super) fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// The new-key form, with `message` (escaped) and the fields as last sent.
fn new_key_form(
    session: &Session,
    message: Option<&str>,
    sent: &NewKeyForm,
    default_tier: Tier,
) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let field = |name: &str, label: &str, value: &str, hint: &str| {
        format!(
            "<label for=\"{name}\">{label}</label><input id=\"{name}\" name=\"{name}\" \
             value=\"{}\" placeholder=\"{hint}\">",
            escape(value)
        )
    };
    // The tier the limits start from; limits typed below override it.
    let tiers: String = [
        ("", format!("default ({})", default_tier.as_str())),
        (
            "standard",
            "standard: 10k TPM, 100 RPM, $50 per 30d".to_owned(),
        ),
        (
            "admin",
            "admin: 100k TPM, 1,000 RPM, $500 per 30d".to_owned(),
        ),
        ("none", "none: no limits (master key only)".to_owned()),
    ]
    .iter()
    .map(|(value, label)| {
        format!(
            "<option value=\"{value}\"{}>{}</option>",
            if sent.tier == *value { " selected" } else { "" },
            escape(label)
        )
    })
    .collect();
    format!(
        "<h2>New key</h2>{message}<form method=\"post\" action=\"/ui/keys/new\" class=\"signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}{}{}{}\
         <label for=\"tier\">Tier</label><select id=\"tier\" name=\"tier\">{tiers}</select>{}{}{}{}\
         <button type=\"submit\">Create key</button></form>",
        escape(session.csrf()),
        field("key_alias", "Alias", &sent.key_alias, "e.g. alice-laptop"),
        field("user_id", "User", &sent.user_id, "optional"),
        field(
            "team_id",
            "Team",
            &sent.team_id,
            "optional: an existing team"
        ),
        field(
            "models",
            "Models",
            &sent.models,
            "comma-separated; empty: all"
        ),
        field("max_budget", "Max budget ($)", &sent.max_budget, "e.g. 50"),
        field(
            "budget_duration",
            "Budget period",
            &sent.budget_duration,
            "e.g. 30d"
        ),
        field(
            "rpm_limit",
            "Requests per minute",
            &sent.rpm_limit,
            "optional"
        ),
        field(
            "tpm_limit",
            "Tokens per minute",
            &sent.tpm_limit,
            "optional"
        ),
    )
}

#[derive(Deserialize, Default)]
struct NewKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key_alias: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    models: String,
    #[serde(default)]
    max_budget: String,
    #[serde(default)]
    budget_duration: String,
    #[serde(default)]
    rpm_limit: String,
    #[serde(default)]
    tpm_limit: String,
    #[serde(default)]
    tier: String,
}

impl NewKeyForm {
    /// The `/key/generate` body: empty fields left out, numbers as numbers (what is not a number
    /// is passed as written, for the admin API to refuse with its own message).
    fn request(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        for (name, value) in [
            ("key_alias", &self.key_alias),
            ("user_id", &self.user_id),
            ("team_id", &self.team_id),
            ("budget_duration", &self.budget_duration),
            ("tier", &self.tier),
        ] {
            if !value.trim().is_empty() {
                body.insert(name.into(), serde_json::json!(value.trim()));
            }
        }
        for (name, value) in [
            ("max_budget", &self.max_budget),
            ("rpm_limit", &self.rpm_limit),
            ("tpm_limit", &self.tpm_limit),
        ] {
            let value = value.trim();
            if !value.is_empty() {
                let number = serde_json::from_str::<serde_json::Number>(value)
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|_| serde_json::json!(value));
                body.insert(name.into(), number);
            }
        }
        let models: Vec<&str> = self
            .models
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        if !models.is_empty() {
            body.insert("models".into(), serde_json::json!(models));
        }
        serde_json::Value::Object(body)
    }
}

async fn new_key_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(session) => page(
            "New key",
            Some(&session),
            &new_key_form(
                &session,
                None,
                &NewKeyForm::default(),
                state.config.default_tier,
            ),
        ),
        Err(response) => response,
    }
}

/// Creates a key through the admin API's own handler (its checks, its transaction, its audit
/// record), and shows the secret this once.
async fn create_key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, sent) = match posted::<NewKeyForm>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let request = serde_json::from_value::<crate::admin::keys::KeyRequest>(sent.request())
        .map_err(|e| ApiError::InvalidJson(e.to_string()));
    let created = match request {
        Ok(request) => {
            crate::admin::VIA_CONSOLE
                .scope(
                    (),
                    crate::admin::keys::generate(
                        crate::auth::Admin(session.caller().clone()),
                        State(state.clone()),
                        Extension(request_id),
                        crate::http::ApiJson(request),
                    ),
                )
                .await
        }
        Err(error) => Err(error),
    };
    match created {
        Ok(axum::Json(minted)) => shown_once(&session, "Key created", &minted),
        Err(error) => with_status(
            page(
                "New key",
                Some(&session),
                &new_key_form(
                    &session,
                    Some(&error.to_string()),
                    &sent,
                    state.config.default_tier,
                ),
            ),
            error.status(),
        ),
    }
}

/// A rate limit as the key page shows it: the number, or "no limit".
fn shown_limit(value: &serde_json::Value) -> String {
    value
        .as_i64()
        .map_or_else(|| "no limit".to_owned(), |n| n.to_string())
}

/// The page that shows a new key's secret, this once.
fn shown_once(session: &Session, title: &str, minted: &serde_json::Value) -> Response {
    let secret = minted["key"].as_str().unwrap_or_default();
    let body = format!(
        "<h2>{}</h2><p>This is the only time the key is shown. Copy it now: \
         llmlite keeps only its hash.</p>\
         <p><input id=\"secret\" class=\"secret\" readonly value=\"{}\">\
         <button type=\"button\" id=\"copy\" data-copy=\"secret\">Copy</button></p>\
         <p>Alias: {} · name <code>{}</code></p>\
         <p id=\"limits\">Tier {} · {} requests/min · {} tokens/min · budget {}</p>\
         <p><a href=\"/ui/keys\">Back to keys</a></p>\
         <script src=\"/ui/static/console.js\"></script>",
        escape(title),
        escape(secret),
        escape(minted["key_alias"].as_str().unwrap_or("")),
        escape(minted["key_name"].as_str().unwrap_or("")),
        escape(minted["tier"].as_str().unwrap_or("–")),
        shown_limit(&minted["rpm_limit"]),
        shown_limit(&minted["tpm_limit"]),
        match (
            minted["max_budget"].as_f64(),
            minted["budget_duration"].as_str()
        ) {
            (None, _) => "none".to_owned(),
            (Some(budget), Some(period)) => format!("${budget} per {}", escape(period)),
            (Some(budget), None) => format!("${budget}"),
        },
    );
    page(title, Some(session), &body)
}

#[derive(Deserialize, Default)]
struct RegenerateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    grace_period: String,
}

impl Csrf for RegenerateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Rotates a key through the admin API's own handler: a new secret, shown once; the old one
/// keeps working for the grace period (none: it stops at once).
async fn regenerate_key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, sent) = match posted::<RegenerateForm>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let mut request = serde_json::json!({"key": sent.key});
    if !sent.grace_period.trim().is_empty() {
        request["grace_period"] = serde_json::json!(sent.grace_period.trim());
    }
    let rotated = match serde_json::from_value::<crate::admin::keys::RegenerateRequest>(request) {
        Ok(request) => {
            crate::admin::VIA_CONSOLE
                .scope(
                    (),
                    crate::admin::keys::regenerate(
                        crate::auth::Admin(session.caller().clone()),
                        State(state.clone()),
                        Extension(request_id),
                        crate::http::ApiJson(request),
                    ),
                )
                .await
        }
        Err(e) => Err(ApiError::invalid_param("grace_period", e.to_string())),
    };
    match rotated {
        Ok(axum::Json(minted)) => shown_once(&session, "Key regenerated", &minted),
        Err(error) => with_status(
            page(
                "Refused",
                Some(&session),
                &format!(
                    "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui/keys\">Back to keys</a></p>",
                    escape(&error.to_string())
                ),
            ),
            error.status(),
        ),
    }
}

#[derive(Deserialize, Default)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    action: String,
}

/// Blocks, unblocks or deletes a key through the admin API's own handlers.
async fn key_action(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, sent) = match posted::<ActionForm>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let admin = || crate::auth::Admin(session.caller().clone());
    let key = serde_json::json!(sent.key);
    let done = crate::admin::VIA_CONSOLE
        .scope((), async {
            match sent.action.as_str() {
                "block" | "unblock" => {
                    match serde_json::from_value(serde_json::json!({"key": key})) {
                        Ok(request) => {
                            let handler = if sent.action == "block" {
                                crate::admin::keys::block(
                                    admin(),
                                    State(state.clone()),
                                    Extension(request_id),
                                    crate::http::ApiJson(request),
                                )
                                .await
                            } else {
                                crate::admin::keys::unblock(
                                    admin(),
                                    State(state.clone()),
                                    Extension(request_id),
                                    crate::http::ApiJson(request),
                                )
                                .await
                            };
                            handler.map(|_| ())
                        }
                        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
                    }
                }
                "delete" => match serde_json::from_value(serde_json::json!({"keys": [key]})) {
                    Ok(request) => crate::admin::keys::delete(
                        admin(),
                        State(state.clone()),
                        Extension(request_id),
                        crate::http::ApiJson(request),
                    )
                    .await
                    .map(|_| ()),
                    Err(e) => Err(ApiError::InvalidJson(e.to_string())),
                },
                _ => Err(ApiError::invalid_param("action", "unknown action")),
            }
        })
        .await;
    match done {
        Ok(()) => Redirect::to("/ui/keys").into_response(),
        Err(error) => with_status(
            page(
                "Refused",
                Some(&session),
                &format!(
                    "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui/keys\">Back to keys</a></p>",
                    escape(&error.to_string())
                ),
            ),
            error.status(),
        ),
    }
}

/// `application/x-www-form-urlencoded` for a query value.
fn form_encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(form_encode("a b&c"), "a+b%26c");
    }
}
