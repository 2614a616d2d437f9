//! Teams and users in the console: lists, one page each with its limits (editable), members and
//! keys, and creation. Every change goes through the admin API's own handlers (`/team/new`,
//! `/team/update`, `/user/new`, `/user/update`), with their checks and audit, `via: console`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::csrf::{Csrf, posted, signed_in};
use super::html::{escape, page, with_status};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

/// Which kind of owner a page is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Team,
    User,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Team => "teams",
            Kind::User => "users",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Team => "Teams",
            Kind::User => "Users",
        }
    }

    fn id_field(self) -> &'static str {
        match self {
            Kind::Team => "team_id",
            Kind::User => "user_id",
        }
    }
}

#[derive(sqlx::FromRow)]
struct Owner {
    id: String,
    label: Option<String>,
    role: Option<String>,
    spend: Decimal,
    max_budget: Option<Decimal>,
    budget_reset_at: Option<DateTime<Utc>>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel_requests: Option<i32>,
    keys: i64,
}

fn owners_sql(kind: Kind, one: bool) -> String {
    let filter = if one { "WHERE o.{id} = $1" } else { "" };
    let (table, id, label, role) = match kind {
        Kind::Team => ("litellm_teamtable", "team_id", "o.team_alias", "NULL::text"),
        Kind::User => (
            "litellm_usertable",
            "user_id",
            "o.user_email",
            "o.user_role",
        ),
    };
    format!(
        "SELECT o.{id} AS id, {label} AS label, {role} AS role, o.spend, o.max_budget,
                o.budget_reset_at, o.rpm_limit, o.tpm_limit, o.max_parallel_requests,
                (SELECT count(*) FROM litellm_verificationtoken k
                  WHERE k.{id} = o.{id} AND k.is_active) AS keys
         FROM {table} o {filter} ORDER BY o.created_at DESC, o.{id} LIMIT 500"
    )
    .replace("{id}", id)
}

fn budget(o: &Owner) -> String {
    match o.max_budget {
        Some(max) => {
            let reset = o
                .budget_reset_at
                .map(|at| format!(" · resets {}", at.format("%Y-%m-%d")))
                .unwrap_or_default();
            format!("${} of ${}{reset}", o.spend.normalize(), max.normalize())
        }
        None => format!("${} (no budget)", o.spend.normalize()),
    }
}

/// `text` as one URL path segment: everything but unreserved characters percent-encoded.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn limit<T: ToString>(value: Option<T>) -> String {
    value.map_or("–".to_owned(), |v| v.to_string())
}

/// The fields of a team or user form, as last sent (or as stored).
#[derive(Deserialize, Default)]
pub(super) struct OwnerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    max_budget: String,
    #[serde(default)]
    budget_duration: String,
    #[serde(default)]
    rpm_limit: String,
    #[serde(default)]
    tpm_limit: String,
    #[serde(default)]
    max_parallel_requests: String,
}

impl Csrf for OwnerForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl OwnerForm {
    fn from_owner(o: &Owner) -> OwnerForm {
        OwnerForm {
            mode: "update".to_owned(),
            id: o.id.clone(),
            label: o.label.clone().unwrap_or_default(),
            role: o.role.clone().unwrap_or_default(),
            max_budget: o
                .max_budget
                .map(|b| b.normalize().to_string())
                .unwrap_or_default(),
            rpm_limit: limit(o.rpm_limit).replace('–', ""),
            tpm_limit: limit(o.tpm_limit).replace('–', ""),
            max_parallel_requests: limit(o.max_parallel_requests).replace('–', ""),
            ..OwnerForm::default()
        }
    }

    /// The admin API's body: empty limits are cleared on update and left out on create;
    /// numbers as numbers (anything else as written, for the API to refuse).
    fn request(&self, kind: Kind) -> Value {
        let update = self.mode == "update";
        let mut body = Map::new();
        body.insert(kind.id_field().into(), json!(self.id.trim()));
        let label = self.label.trim();
        let label_field = match kind {
            Kind::Team => "team_alias",
            Kind::User => "user_email",
        };
        if !label.is_empty() {
            body.insert(label_field.into(), json!(label));
        } else if update {
            body.insert(label_field.into(), Value::Null);
        }
        if kind == Kind::User && !self.role.trim().is_empty() {
            body.insert("user_role".into(), json!(self.role.trim()));
        }
        if kind == Kind::User && !update {
            body.insert("auto_create_key".into(), json!(false));
        }
        let duration = self.budget_duration.trim();
        if !duration.is_empty() {
            body.insert("budget_duration".into(), json!(duration));
        }
        for (name, value) in [
            ("max_budget", &self.max_budget),
            ("rpm_limit", &self.rpm_limit),
            ("tpm_limit", &self.tpm_limit),
            ("max_parallel_requests", &self.max_parallel_requests),
        ] {
            let value = value.trim();
            if value.is_empty() {
                if update {
                    body.insert(name.into(), Value::Null);
                }
                continue;
            }
            let number = serde_json::from_str::<serde_json::Number>(value)
                .map(Value::Number)
                .unwrap_or_else(|_| json!(value));
            body.insert(name.into(), number);
        }
        Value::Object(body)
    }
}

/// The create or edit form.
fn owner_form(kind: Kind, session: &super::Session, sent: &OwnerForm) -> String {
    let update = sent.mode == "update";
    let field = |name: &str, label: &str, value: &str, hint: &str| {
        format!(
            "<label for=\"{name}\">{label}</label><input id=\"{name}\" name=\"{name}\" \
             value=\"{}\" placeholder=\"{hint}\">",
            escape(value)
        )
    };
    let id = if update {
        format!(
            "<input type=\"hidden\" name=\"id\" value=\"{}\">",
            escape(&sent.id)
        )
    } else {
        field(
            "id",
            if kind == Kind::Team {
                "Team ID"
            } else {
                "User ID"
            },
            &sent.id,
            "required",
        )
    };
    let label = match kind {
        Kind::Team => field("label", "Alias", &sent.label, "optional"),
        Kind::User => field("label", "Email", &sent.label, "optional"),
    };
    let role = if kind == Kind::User {
        let options: String = [
            "internal_user",
            "internal_user_viewer",
            "proxy_admin",
            "proxy_admin_viewer",
        ]
        .iter()
        .map(|r| {
            let selected = if sent.role == *r { " selected" } else { "" };
            format!("<option value=\"{r}\"{selected}>{r}</option>")
        })
        .collect();
        format!(
            "<label for=\"role\">Role</label><select id=\"role\" name=\"role\">{options}</select>"
        )
    } else {
        String::new()
    };
    format!(
        "<form method=\"post\" action=\"/ui/{}\" class=\"signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"mode\" value=\"{}\">{id}{label}{role}{}{}{}{}{}\
         <button type=\"submit\">{}</button></form>",
        kind.plural(),
        escape(session.csrf()),
        if update { "update" } else { "create" },
        field(
            "max_budget",
            "Max budget ($)",
            &sent.max_budget,
            "empty: none"
        ),
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
            "empty: none"
        ),
        field(
            "tpm_limit",
            "Tokens per minute",
            &sent.tpm_limit,
            "empty: none"
        ),
        field(
            "max_parallel_requests",
            "Parallel requests",
            &sent.max_parallel_requests,
            "empty: none"
        ),
        if update { "Save limits" } else { "Create" },
    )
}

async fn list(state: &AppState, headers: &HeaderMap, kind: Kind) -> Response {
    let session = match signed_in(state, headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let owners: Result<Vec<Owner>, ApiError> = async {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(owners_sql(kind, false)))
            .persistent(false)
            .fetch_all(state.db.pool().await?)
            .await?)
    }
    .await;
    let owners = match owners {
        Ok(owners) => owners,
        Err(error) => {
            let body = format!(
                "<p class=\"error\" role=\"alert\">{}</p>",
                escape(&error.to_string())
            );
            return with_status(page(kind.title(), Some(&session), &body), error.status());
        }
    };
    let rows: String = owners
        .iter()
        .map(|o| {
            format!(
                "<tr><td><a href=\"/ui/{}/{}\">{}</a></td><td>{}</td><td>{}</td><td>{} / {}</td>\
                 <td>{}</td><td>{}</td></tr>",
                kind.plural(),
                escape(&path_segment(&o.id)),
                escape(&o.id),
                escape(o.label.as_deref().or(o.role.as_deref()).unwrap_or("")),
                budget(o),
                limit(o.rpm_limit),
                limit(o.tpm_limit),
                limit(o.max_parallel_requests),
                o.keys,
            )
        })
        .collect();
    let label = if kind == Kind::Team {
        "Alias"
    } else {
        "Email / role"
    };
    let body = format!(
        "<h2>{}</h2><table><thead><tr><th>ID</th><th>{label}</th><th>Budget</th>\
         <th>RPM / TPM</th><th>Parallel</th><th>Keys</th></tr></thead><tbody>{rows}</tbody></table>\
         <h3>New</h3>{}",
        kind.title(),
        owner_form(kind, &session, &OwnerForm::default()),
    );
    page(kind.title(), Some(&session), &body)
}

pub(super) async fn teams(State(state): State<AppState>, headers: HeaderMap) -> Response {
    list(&state, &headers, Kind::Team).await
}

pub(super) async fn users(State(state): State<AppState>, headers: HeaderMap) -> Response {
    list(&state, &headers, Kind::User).await
}

/// An owner (if it exists), its keys, and its related owners (a team's members, a user's teams).
type OwnerPage = (Option<Owner>, Vec<MemberKey>, Vec<String>);

#[derive(sqlx::FromRow)]
struct MemberKey {
    token: String,
    key_alias: Option<String>,
    key_name: String,
    user_id: Option<String>,
    team_id: Option<String>,
    spend: Decimal,
    blocked: bool,
}

async fn one(state: &AppState, headers: &HeaderMap, kind: Kind, id: &str) -> Response {
    let session = match signed_in(state, headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let read: Result<OwnerPage, ApiError> = async {
        let mut tx = crate::admin::snapshot(state).await?;
        let owner: Option<Owner> = sqlx::query_as(sqlx::AssertSqlSafe(owners_sql(kind, true)))
            .bind(id)
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await?;
        let keys: Vec<MemberKey> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT token, key_alias, key_name, user_id, team_id, spend, blocked
             FROM litellm_verificationtoken WHERE {} = $1 AND is_active
             ORDER BY created_at DESC LIMIT 500",
            kind.id_field()
        )))
        .bind(id)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
        // A team's members: users listing it, and the users of its keys. A user's teams.
        let related: Vec<String> = match kind {
            Kind::Team => {
                sqlx::query_scalar(
                    "SELECT user_id FROM litellm_usertable WHERE $1 = ANY (teams)
                     UNION SELECT user_id FROM litellm_verificationtoken
                     WHERE team_id = $1 AND user_id IS NOT NULL ORDER BY 1",
                )
                .bind(id)
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
            }
            Kind::User => {
                sqlx::query_scalar(
                    "SELECT unnest(teams) FROM litellm_usertable WHERE user_id = $1
                     UNION SELECT team_id FROM litellm_verificationtoken
                     WHERE user_id = $1 AND team_id IS NOT NULL ORDER BY 1",
                )
                .bind(id)
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok((owner, keys, related))
    }
    .await;
    let (owner, keys, related) = match read {
        Ok((Some(owner), keys, related)) => (owner, keys, related),
        Ok((None, _, _)) => {
            let body = format!(
                "<p class=\"error\" role=\"alert\">There is no {} `{}`.</p>",
                if kind == Kind::Team { "team" } else { "user" },
                escape(id)
            );
            return with_status(
                page(kind.title(), Some(&session), &body),
                StatusCode::NOT_FOUND,
            );
        }
        Err(error) => {
            let body = format!(
                "<p class=\"error\" role=\"alert\">{}</p>",
                escape(&error.to_string())
            );
            return with_status(page(kind.title(), Some(&session), &body), error.status());
        }
    };
    let other = match kind {
        Kind::Team => Kind::User,
        Kind::User => Kind::Team,
    };
    let related: String = related
        .iter()
        .map(|r| {
            format!(
                "<li><a href=\"/ui/{}/{}\">{}</a></li>",
                other.plural(),
                escape(&path_segment(r)),
                escape(r)
            )
        })
        .collect();
    let keys: String = keys
        .iter()
        .map(|k| {
            format!(
                "<tr><td><a href=\"/ui/keys/{}\">{}</a></td><td><code>{}</code></td><td>{}</td>\
                 <td>${}</td><td>{}</td></tr>",
                escape(&k.token),
                escape(k.key_alias.as_deref().unwrap_or("(no alias)")),
                escape(&k.key_name),
                escape(match kind {
                    Kind::Team => k.user_id.as_deref().unwrap_or(""),
                    Kind::User => k.team_id.as_deref().unwrap_or(""),
                }),
                k.spend.normalize(),
                if k.blocked { "blocked" } else { "active" },
            )
        })
        .collect();
    let body = format!(
        "<h2>{} {}</h2><p>{} · budget {} · RPM / TPM {} / {} · parallel {}</p>\
         <h3>Limits</h3>{}<h3>{}</h3><ul class=\"related\">{related}</ul>\
         <h3>Keys</h3><table class=\"owner-keys\"><thead><tr><th>Alias</th><th>Key</th>\
         <th>{}</th><th>Spend</th><th>Status</th></tr></thead><tbody>{keys}</tbody></table>",
        if kind == Kind::Team { "Team" } else { "User" },
        escape(&owner.id),
        escape(
            owner
                .label
                .as_deref()
                .or(owner.role.as_deref())
                .unwrap_or("")
        ),
        budget(&owner),
        limit(owner.rpm_limit),
        limit(owner.tpm_limit),
        limit(owner.max_parallel_requests),
        owner_form(kind, &session, &OwnerForm::from_owner(&owner)),
        if kind == Kind::Team {
            "Members"
        } else {
            "Teams"
        },
        if kind == Kind::Team { "User" } else { "Team" },
    );
    page(kind.title(), Some(&session), &body)
}

pub(super) async fn team(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    one(&state, &headers, Kind::Team, &id).await
}

pub(super) async fn user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    one(&state, &headers, Kind::User, &id).await
}

async fn save(
    state: AppState,
    request_id: RequestId,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let (session, sent) = match posted::<OwnerForm>(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let admin = crate::auth::Admin(session.caller().clone());
    let request = sent.request(kind);
    let update = sent.mode == "update";
    let state_ = || State(state.clone());
    let saved = crate::admin::VIA_CONSOLE
        .scope((), async {
            use crate::admin::{teams, users};
            match (kind, update) {
                (Kind::Team, true) => {
                    call(request, |body| {
                        teams::update(admin, state_(), Extension(request_id), body)
                    })
                    .await
                }
                (Kind::Team, false) => {
                    call(request, |body| {
                        teams::create(admin, state_(), Extension(request_id), body)
                    })
                    .await
                }
                (Kind::User, true) => {
                    call(request, |body| {
                        users::update(admin, state_(), Extension(request_id), body)
                    })
                    .await
                }
                (Kind::User, false) => {
                    call(request, |body| {
                        users::create(admin, state_(), Extension(request_id), body)
                    })
                    .await
                }
            }
        })
        .await;
    match saved {
        Ok(()) => Redirect::to(&format!(
            "/ui/{}/{}",
            kind.plural(),
            path_segment(sent.id.trim())
        ))
        .into_response(),
        Err(error) => {
            let body = format!(
                "<h2>{}</h2><p class=\"error\" role=\"alert\">{}</p>{}",
                kind.title(),
                escape(&error.to_string()),
                owner_form(kind, &session, &sent)
            );
            with_status(page(kind.title(), Some(&session), &body), error.status())
        }
    }
}

/// Runs an admin API handler on `request`, read as its body type.
async fn call<R, F, Fut>(request: Value, handler: F) -> Result<(), ApiError>
where
    R: serde::de::DeserializeOwned,
    F: FnOnce(crate::http::ApiJson<R>) -> Fut,
    Fut: Future<Output = Result<axum::Json<Value>, ApiError>>,
{
    let request =
        serde_json::from_value(request).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    handler(crate::http::ApiJson(request)).await.map(|_| ())
}

pub(super) async fn save_team(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    save(state, request_id, headers, body, Kind::Team).await
}

pub(super) async fn save_user(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    save(state, request_id, headers, body, Kind::User).await
}
