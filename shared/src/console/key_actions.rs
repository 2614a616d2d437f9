//! What the console does to keys, each through the admin API's own handler (its checks, its
//! transaction, its audit record): create one, regenerate one (the new secret shown once), and
//! block, unblock or delete one.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::Session;
use super::csrf::{Csrf, posted, signed_in};
use super::html::{escape, page, with_status};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::keys::Tier;
use crate::state::AppState;

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

impl Csrf for NewKeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
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

pub(super) async fn new_key_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
pub(super) async fn create_key(
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
        Ok(axum::Json(minted)) => shown_once(&state, &headers, &session, "Key created", &minted),
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

/// The page that shows a new key's secret, this once, with the set-up snippets that carry it.
pub(super) fn shown_once(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
    title: &str,
    minted: &serde_json::Value,
) -> Response {
    let secret = minted["key"].as_str().unwrap_or_default();
    let models: Vec<String> = minted["models"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let set_up = super::snippets::snippets(state, headers, secret, &|m| {
        (models.is_empty() || models.iter().any(|k| k == m)) && session.caller().may_use(m)
    });
    let back = if session.is_self_service() {
        "<a href=\"/ui/me\">Back to my keys</a>"
    } else {
        "<a href=\"/ui/keys\">Back to keys</a>"
    };
    let body = format!(
        "<h2>{}</h2><p>This is the only time the key is shown. Copy it now: \
         llmlite keeps only its hash.</p>\
         <p><input id=\"secret\" class=\"secret\" readonly value=\"{}\">\
         <button type=\"button\" id=\"copy\" data-copy=\"secret\">Copy</button></p>\
         <p>Alias: {} · name <code>{}</code></p>\
         <p id=\"limits\">Tier {} · {} requests/min · {} tokens/min · budget {}</p>\
         {set_up}<p>{back}</p>\
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
pub(super) async fn regenerate_key(
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
        Ok(axum::Json(minted)) => {
            shown_once(&state, &headers, &session, "Key regenerated", &minted)
        }
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

impl Csrf for ActionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Blocks, unblocks or deletes a key through the admin API's own handlers.
pub(super) async fn key_action(
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
