//! A developer's own page, `/ui/me`: their keys (create, regenerate, delete, within their
//! team's policy: [`crate::admin::keys::own`]), with links to their own spend and the models
//! they may use. Everyone signed in has it; nobody sees another person's keys here.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::Session;
use super::csrf::{Csrf, anyone_signed_in, posted_by_anyone};
use super::html::{escape, page, with_status};
use super::key_actions::shown_once;
use crate::admin::keys::own::{self, OwnKey};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::keys::Tier;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct OwnRow {
    token: String,
    key_name: String,
    key_alias: Option<String>,
    team_id: Option<String>,
    tier: Option<String>,
    spend: Decimal,
    max_budget: Option<Decimal>,
    expires: Option<DateTime<Utc>>,
    blocked: bool,
}

/// What the page shows: the person's live keys and teams, and each team's policy.
struct Mine {
    keys: Vec<OwnRow>,
    /// (team, most live keys, largest tier), the no-team policy first.
    policies: Vec<(Option<String>, i32, Tier)>,
}

async fn read(state: &AppState, user_id: &str) -> Result<Mine, ApiError> {
    let mut tx = crate::admin::snapshot(state).await?;
    let keys: Vec<OwnRow> = sqlx::query_as(
        "SELECT token, key_name, key_alias, team_id, tier, spend, max_budget, expires, blocked
         FROM litellm_verificationtoken
         WHERE user_id = $1 AND is_active AND (expires IS NULL OR expires > $2)
         ORDER BY created_at DESC LIMIT 200",
    )
    .bind(user_id)
    .bind(state.clock.now())
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    let teams: Vec<String> =
        sqlx::query_scalar("SELECT teams FROM litellm_usertable WHERE user_id = $1")
            .bind(user_id)
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or_default();
    let mut policies = Vec::with_capacity(teams.len() + 1);
    for team in std::iter::once(None).chain(teams.into_iter().map(Some)) {
        let (max_keys, max_tier) = own::policy(&mut *tx, team.as_deref()).await?;
        policies.push((team, max_keys, max_tier));
    }
    tx.commit().await?;
    Ok(Mine { keys, policies })
}

fn new_key_form(session: &Session, mine: &Mine, message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let teams: String = mine
        .policies
        .iter()
        .map(|(team, _, _)| match team {
            None => "<option value=\"\">no team</option>".to_owned(),
            Some(team) => format!("<option value=\"{0}\" selected>{0}</option>", escape(team)),
        })
        .collect();
    let policy: String = mine
        .policies
        .iter()
        .map(|(team, max_keys, max_tier)| {
            format!(
                "<li>{}: up to {max_keys} live keys, tier {} at most</li>",
                team.as_deref()
                    .map_or_else(|| "No team".to_owned(), |t| format!("Team {}", escape(t))),
                max_tier.as_str()
            )
        })
        .collect();
    format!(
        "<h3>New key</h3>{message}<ul class=\"note\" id=\"policy\">{policy}</ul>\
         <form method=\"post\" action=\"/ui/me/keys\" class=\"signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"key_alias\">Name</label>\
         <input id=\"key_alias\" name=\"key_alias\" placeholder=\"e.g. laptop-claude-code\">\
         <label for=\"team_id\">Team</label><select id=\"team_id\" name=\"team_id\">{teams}</select>\
         <label for=\"tier\">Tier</label><select id=\"tier\" name=\"tier\">\
         <option value=\"\">the team's default</option>\
         <option value=\"standard\">standard: 10k TPM, 100 RPM, $50 per 30d</option>\
         <option value=\"admin\">admin: 100k TPM, 1,000 RPM, $500 per 30d</option></select>\
         <label for=\"duration\">Expires after</label>\
         <input id=\"duration\" name=\"duration\" placeholder=\"e.g. 30d (empty: never)\">\
         <button type=\"submit\" id=\"create-key\">Create key</button></form>",
        escape(session.csrf())
    )
}

fn keys_table(session: &Session, mine: &Mine) -> String {
    if mine.keys.is_empty() {
        return "<p class=\"note\" id=\"no-keys\">You have no keys yet.</p>".to_owned();
    }
    let csrf = escape(session.csrf());
    let rows: String = mine
        .keys
        .iter()
        .map(|k| {
            let token = escape(&k.token);
            format!(
                "<tr><td><a href=\"/ui/keys/{token}\"><code>{}</code></a></td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>${} of {}</td><td>{}</td><td>{}</td><td>\
                 <form method=\"post\" action=\"/ui/me/keys/regenerate\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"key\" value=\"{token}\">\
                 <button type=\"submit\">Regenerate</button></form>\
                 <form method=\"post\" action=\"/ui/me/keys/delete\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"key\" value=\"{token}\">\
                 <button type=\"submit\">Delete</button></form></td></tr>",
                escape(&k.key_name),
                escape(k.key_alias.as_deref().unwrap_or("")),
                escape(k.team_id.as_deref().unwrap_or("–")),
                escape(k.tier.as_deref().unwrap_or("–")),
                k.spend.normalize(),
                k.max_budget
                    .map_or_else(|| "no budget".to_owned(), |b| format!("${}", b.normalize())),
                k.expires.map_or_else(
                    || "never".to_owned(),
                    |e| e.format("%Y-%m-%d %H:%M").to_string()
                ),
                if k.blocked { "blocked" } else { "live" },
            )
        })
        .collect();
    format!(
        "<table id=\"my-keys\"><thead><tr><th>Key</th><th>Name</th><th>Team</th><th>Tier</th>\
         <th>Spend</th><th>Expires</th><th>Status</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

fn my_page(session: &Session, mine: &Mine, message: Option<&str>) -> String {
    format!(
        "<h2>My keys</h2><p class=\"note\">Only you see these. Your spend is under \
         <a href=\"/ui/spend\">My spend</a>, and the models you may use under \
         <a href=\"/ui/models\">My models</a>.</p>{}{}",
        keys_table(session, mine),
        new_key_form(session, mine, message)
    )
}

/// The page, with `message` as a refusal and `status`, or the page that says why it cannot be
/// read.
async fn render(
    state: &AppState,
    session: &Session,
    message: Option<&str>,
    status: axum::http::StatusCode,
) -> Response {
    let user_id = session.caller().user_id().unwrap_or("").to_owned();
    match read(state, &user_id).await {
        Ok(mine) => with_status(
            page("My keys", Some(session), &my_page(session, &mine, message)),
            status,
        ),
        Err(error) => with_status(
            page(
                "My keys",
                Some(session),
                &format!(
                    "<p class=\"error\" role=\"alert\">{}</p>",
                    escape(&error.to_string())
                ),
            ),
            error.status(),
        ),
    }
}

/// `GET /ui/me`.
pub(super) async fn me_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match anyone_signed_in(&state, &headers).await {
        Ok(session) if session.caller().user_id().is_some() => {
            render(&state, &session, None, axum::http::StatusCode::OK).await
        }
        // The master key and admin keys have no keys of their own here.
        Ok(_) => Redirect::to("/ui/keys").into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize, Default)]
struct NewOwnKey {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key_alias: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    duration: String,
    /// Anything else a form sends (a limit, a user) is refused, not ignored.
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, String>,
}

impl Csrf for NewOwnKey {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn text(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `POST /ui/me/keys`: a new key of the person's own, its secret shown once.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, sent) = match posted_by_anyone::<NewOwnKey>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let made = async {
        if let Some(field) = sent.other.keys().next() {
            return Err(ApiError::PermissionDenied(format!(
                "`{}` cannot be set here: limits come from your tier; ask an admin for more",
                field.chars().take(40).collect::<String>()
            )));
        }
        let tier = match text(&sent.tier) {
            None => None,
            Some(t) => Some(
                Tier::parse(&t)
                    .ok_or_else(|| ApiError::invalid_param("tier", "use standard or admin"))?,
            ),
        };
        let wanted = OwnKey {
            key_alias: text(&sent.key_alias),
            team_id: text(&sent.team_id),
            tier,
            models: Vec::new(),
            duration: text(&sent.duration),
            short_lived: None,
        };
        crate::admin::VIA_CONSOLE
            .scope(
                (),
                own::generate(&state, session.caller(), request_id, &wanted),
            )
            .await
    }
    .await;
    match made {
        Ok(minted) => shown_once(&state, &headers, &session, "Key created", &minted),
        Err(error) => render(&state, &session, Some(&error.to_string()), error.status()).await,
    }
}

#[derive(Deserialize, Default)]
struct OwnKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
}

impl Csrf for OwnKeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// What is done to one of the person's keys.
#[derive(Clone, Copy)]
enum Act {
    Regenerate,
    Delete,
}

/// `POST /ui/me/keys/regenerate`: a new secret for one of the person's keys, shown once; the
/// old one stops at once.
pub(super) async fn regenerate(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_own_key(state, request_id, headers, body, Act::Regenerate).await
}

/// `POST /ui/me/keys/delete`.
pub(super) async fn delete(
    state: State<AppState>,
    request_id: Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    on_own_key(state, request_id, headers, body, Act::Delete).await
}

async fn on_own_key(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
    act: Act,
) -> Response {
    let (session, sent) = match posted_by_anyone::<OwnKeyForm>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let caller = session.caller();
    let done = crate::admin::VIA_CONSOLE
        .scope((), async {
            match act {
                Act::Regenerate => own::regenerate(&state, caller, request_id, &sent.key)
                    .await
                    .map(Some),
                Act::Delete => own::delete(&state, caller, request_id, &sent.key)
                    .await
                    .map(|()| None),
            }
        })
        .await;
    match done {
        Ok(Some(minted)) => shown_once(&state, &headers, &session, "Key regenerated", &minted),
        Ok(None) => Redirect::to("/ui/me").into_response(),
        Err(error) => render(&state, &session, Some(&error.to_string()), error.status()).await,
    }
}
