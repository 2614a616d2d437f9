//! `/user/*`: users carry a role (`proxy_admin` may use the admin API with its own keys), team
//! memberships, and their own budget, limits and model list.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::{Postgres, Transaction};

use super::fields::{self, Limits, LimitsPatch, patch};
use super::keys::{self, Owner};
use super::{Action, Page, conflict_or};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::{ApiJson, ApiQuery, RequestId};
use crate::keys::Tier;
use crate::state::AppState;

const ROLES: &[&str] = &[
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
];

#[derive(Debug, Default, Deserialize)]
pub struct UserRequest {
    user_id: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    user_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    user_email: Option<Option<String>>,
    user_role: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    teams: Option<Option<Vec<String>>>,
    /// `/user/update` only (llmlite's extension): disable the user (their console sessions and
    /// `llmlite key` credentials end, their short-lived keys end, their other keys are blocked)
    /// or enable them again (blocked keys stay blocked until an admin unblocks them).
    disabled: Option<bool>,
    /// `/user/new` only: also mint a key for the user (LiteLLM's default: yes).
    auto_create_key: Option<bool>,
    /// `/user/new` only: the tier of the key it mints (default `LLMLITE_DEFAULT_TIER`).
    key_tier: Option<Tier>,
    #[serde(flatten)]
    limits: LimitsPatch,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: String,
    pub user_alias: Option<String>,
    pub user_email: Option<String>,
    pub user_role: String,
    pub teams: Vec<String>,
    pub spend: Decimal,
    #[sqlx(flatten)]
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "user_id, user_alias, user_email, user_role, teams, spend, models, \
    max_budget, soft_budget, budget_duration, budget_reset_at, tpm_limit, rpm_limit, \
    max_parallel_requests, metadata, created_at, updated_at";

impl UserRow {
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "user_id": self.user_id,
            "user_alias": self.user_alias,
            "user_email": self.user_email,
            "user_role": self.user_role,
            "teams": self.teams,
            "spend": fields::money(self.spend),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        });
        self.limits.write_json(&mut out);
        out
    }

    fn empty(user_id: String, now: DateTime<Utc>) -> Self {
        UserRow {
            user_id,
            user_alias: None,
            user_email: None,
            user_role: "internal_user".to_owned(),
            teams: Vec::new(),
            spend: Decimal::ZERO,
            limits: Limits::default(),
            created_at: now,
            updated_at: now,
        }
    }

    fn apply(&mut self, request: &UserRequest, now: DateTime<Utc>) -> Result<(), ApiError> {
        fields::no_unknown_fields(&request.unknown)?;
        if let Some(v) = &request.user_alias {
            self.user_alias = v.clone();
        }
        if let Some(v) = &request.user_email {
            self.user_email = v.clone();
        }
        if let Some(role) = &request.user_role {
            if !ROLES.contains(&role.as_str()) {
                return Err(ApiError::invalid_param(
                    "user_role",
                    format!("`user_role` must be one of {}", ROLES.join(", ")),
                ));
            }
            self.user_role = role.clone();
        }
        if let Some(v) = &request.teams {
            self.teams = v.clone().unwrap_or_default();
        }
        self.limits.apply(&request.limits, now)?;
        fields::text("user_id", &self.user_id)?;
        fields::optional_text("user_alias", self.user_alias.as_deref())?;
        fields::optional_text("user_email", self.user_email.as_deref())?;
        if self.teams.len() > fields::MAX_MODELS {
            return Err(ApiError::invalid_param("teams", "at most 100 teams"));
        }
        self.teams
            .iter()
            .try_for_each(|team| fields::text("teams", team))
    }
}

/// The user `user_id`, locked for update when `lock`.
async fn find(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: &str,
    lock: bool,
) -> Result<UserRow, ApiError> {
    sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_usertable WHERE user_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    )))
    .bind(user_id)
    .persistent(false)
    .fetch_optional(executor)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("user `{user_id}` not found")))
}

async fn save(
    tx: &mut Transaction<'_, Postgres>,
    row: &UserRow,
    now: DateTime<Utc>,
    insert: bool,
) -> Result<UserRow, ApiError> {
    let sql = if insert {
        format!(
            "INSERT INTO litellm_usertable
                 (user_id, user_alias, user_email, user_role, teams, models, max_budget,
                  soft_budget, budget_duration, budget_reset_at, tpm_limit, rpm_limit,
                  max_parallel_requests, metadata, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
             RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE litellm_usertable SET
                 user_alias = $2, user_email = $3, user_role = $4, teams = $5, models = $6,
                 max_budget = $7, soft_budget = $8, budget_duration = $9, budget_reset_at = $10,
                 tpm_limit = $11, rpm_limit = $12, max_parallel_requests = $13, metadata = $14,
                 updated_at = $15
             WHERE user_id = $1 RETURNING {COLUMNS}"
        )
    };
    sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(&row.user_id)
        .bind(&row.user_alias)
        .bind(&row.user_email)
        .bind(&row.user_role)
        .bind(&row.teams)
        .bind(&row.limits.models)
        .bind(row.limits.max_budget)
        .bind(row.limits.soft_budget)
        .bind(row.limits.budget_duration)
        .bind(row.limits.budget_reset_at)
        .bind(row.limits.tpm_limit)
        .bind(row.limits.rpm_limit)
        .bind(row.limits.max_parallel_requests)
        .bind(&row.limits.metadata)
        .bind(now)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| {
            conflict_or(e, || {
                format!("user `{}` (or that email) already exists", row.user_id)
            })
        })
}

pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<UserRequest>,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let user_id = request
        .user_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut row = UserRow::empty(user_id, now);
    row.apply(&request, now)?;
    if request.disabled.is_some() {
        return Err(ApiError::invalid_param(
            "disabled",
            "`disabled` is for /user/update",
        ));
    }
    let auto_create_key = request.auto_create_key.unwrap_or(true);
    if request.key_tier.is_some() && !auto_create_key {
        return Err(ApiError::invalid_param(
            "key_tier",
            "`key_tier` is the tier of the key /user/new mints; there is none with `auto_create_key: false`",
        ));
    }
    keys::unlimited_needs_master(&caller, "key_tier", request.key_tier, None)?;
    let mut tx = state.db.pool().await?.begin().await?;
    let saved = save(&mut tx, &row, now, true).await?;
    Action {
        at: now,
        request_id,
        caller: &caller,
        action: "user.new",
        object_type: "user",
        object_id: &saved.user_id,
        before: None,
        after: Some(saved.to_json()),
    }
    .record(&mut tx)
    .await?;
    let mut body = saved.to_json();
    if auto_create_key {
        let tier = request.key_tier.unwrap_or(state.config.default_tier);
        let (raw, key) =
            keys::generate_for_user(&mut tx, &saved.user_id, tier, &caller, now, request_id)
                .await?;
        body["key"] = Value::String(raw);
        // The key's own limits (the user's are the fields above).
        body["key_info"] = key.to_json();
        body["token"] = Value::String(key.token);
        body["key_name"] = Value::String(key.key_name);
    }
    tx.commit().await?;
    Ok(Json(body))
}

pub async fn update(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<UserRequest>,
) -> Result<Json<Value>, ApiError> {
    let user_id = request
        .user_id
        .clone()
        .ok_or_else(|| ApiError::invalid_param("user_id", "`user_id` names the user to update"))?;
    if request.auto_create_key.is_some() {
        return Err(ApiError::invalid_param(
            "auto_create_key",
            "`auto_create_key` is for /user/new",
        ));
    }
    if request.key_tier.is_some() {
        return Err(ApiError::invalid_param(
            "key_tier",
            "`key_tier` is for /user/new",
        ));
    }
    if let Some(disabled) = request.disabled {
        set_disabled(&state, &caller, request_id, &user_id, disabled).await?;
    }
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    // Only the user row: no key or team row is touched, so no lock order to keep.
    let before = find(&mut *tx, &user_id, true).await?;
    let mut row = before.clone();
    row.apply(&request, now)?;
    let after = save(&mut tx, &row, now, false).await?;
    Action {
        at: now,
        request_id,
        caller: &caller,
        action: "user.update",
        object_type: "user",
        object_id: &user_id,
        before: Some(before.to_json()),
        after: Some(after.to_json()),
    }
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(after.to_json()))
}

#[derive(Debug, Deserialize)]
pub struct InfoQuery {
    user_id: String,
    /// The page of the user's keys (`page`, and `size` or `page_size`).
    page: Option<i64>,
    size: Option<i64>,
    page_size: Option<i64>,
}

pub async fn info(
    Admin(_): Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<InfoQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = Page::either(query.page, query.size, query.page_size)?;
    let mut tx = super::snapshot(&state).await?;
    let user = find(&mut *tx, &query.user_id, false).await?;
    let mut out = json!({
        "user_id": user.user_id,
        "user_info": user.to_json(),
        "teams": user.teams,
    });
    keys::add_key_page(&mut tx, Owner::User, &query.user_id, page, &mut out).await?;
    tx.commit().await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    user_ids: Vec<String>,
    /// Erase instead (llmlite's extension): the users, their keys and every trace of their IDs,
    /// e-mails and free text ([`super::erasure`]). The master key or an admin key only.
    #[serde(default)]
    erase: bool,
}

/// Deletes users; their keys are deactivated first (and kept, for the record). With `erase`,
/// everything about them goes ([`super::erasure`]).
pub async fn delete(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<DeleteRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.user_ids.is_empty() || request.user_ids.len() > 100 {
        return Err(ApiError::invalid_param(
            "user_ids",
            "give 1 to 100 `user_ids`",
        ));
    }
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    // Admission's order: the users' keys, then the users (each set in one ordered statement).
    let keys = keys::lock_keys(&mut tx, Owner::User, &request.user_ids).await?;
    let users = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_usertable WHERE user_id = ANY($1)
         ORDER BY user_id FOR UPDATE"
    )))
    .bind(&request.user_ids)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    if let Some(missing) = request
        .user_ids
        .iter()
        .find(|id| !users.iter().any(|u| &u.user_id == *id))
    {
        return Err(ApiError::NotFound(format!("user `{missing}` not found")));
    }
    if request.erase {
        let mut ids = request.user_ids.clone();
        ids.sort();
        ids.dedup();
        let pseudonyms =
            super::erasure::erase_users(&state, &mut tx, &caller, request_id, now, &ids).await?;
        tx.commit().await?;
        // The IDs the caller sent are theirs to know; the answer names what now stands in.
        return Ok(Json(
            json!({ "deleted_users": ids, "erased": true, "pseudonyms": pseudonyms }),
        ));
    }
    for before in &users {
        for key in keys
            .iter()
            .filter(|k| k.is_active && k.user_id.as_ref() == Some(&before.user_id))
        {
            keys::deactivate(&mut tx, key, &caller, now, request_id, "key.delete").await?;
        }
        sqlx::query("DELETE FROM litellm_usertable WHERE user_id = $1")
            .bind(&before.user_id)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        Action {
            at: now,
            request_id,
            caller: &caller,
            action: "user.delete",
            object_type: "user",
            object_id: &before.user_id,
            before: Some(before.to_json()),
            after: None,
        }
        .record(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Json(json!({ "deleted_users": request.user_ids })))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
    page_size: Option<i64>,
    size: Option<i64>,
    role: Option<String>,
}

pub async fn list(
    Admin(_): Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = Page::either(query.page, query.size, query.page_size)?;
    // The count and the page from one snapshot, so they agree.
    let mut tx = super::snapshot(&state).await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM litellm_usertable WHERE ($1::text IS NULL OR user_role = $1)",
    )
    .bind(&query.role)
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    let rows = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_usertable WHERE ($1::text IS NULL OR user_role = $1)
         ORDER BY created_at, user_id LIMIT $2 OFFSET $3"
    )))
    .bind(&query.role)
    .bind(page.size)
    .bind(page.offset())
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({
        "users": rows.iter().map(UserRow::to_json).collect::<Vec<_>>(),
        "total": total,
        "page": page.page,
        "page_size": page.size,
        "total_pages": page.total_pages(total),
    })))
}

/// Who a person signed in as, for [`sign_in`].
pub struct SignedIn<'a> {
    pub subject: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    /// The role the identity provider's groups map to, if roles are mapped at all.
    pub role: Option<&'a str>,
    /// The teams the groups map to, if teams are mapped at all (unknown team IDs are dropped).
    pub teams: Option<&'a [String]>,
}

/// A person signed in through the company's identity provider: their user, made just in time
/// on the first sign-in (found by the provider's `sub`, else by an email an admin already gave
/// a user), and on every sign-in brought in line with the claims: role and teams where they are
/// mapped, email and name. A creation or a change is an admin action by the person themselves.
/// A disabled user is refused. Returns the user ID.
pub async fn sign_in(
    state: &AppState,
    request_id: RequestId,
    who: SignedIn<'_>,
) -> Result<String, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    let teams: Option<Vec<String>> = match who.teams {
        None => None,
        Some(mapped) => Some(
            sqlx::query_scalar(
                "SELECT team_id FROM litellm_teamtable WHERE team_id = ANY ($1) ORDER BY team_id",
            )
            .bind(mapped)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?,
        ),
    };
    let linked: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT user_id, disabled_at FROM litellm_usertable WHERE sso_subject = $1 FOR UPDATE",
    )
    .bind(who.subject)
    .persistent(false)
    .fetch_optional(&mut *tx)
    .await?;
    let found = match (linked, who.email) {
        (Some(found), _) => Some(found),
        (None, Some(email)) => {
            sqlx::query_as(
                "SELECT user_id, disabled_at FROM litellm_usertable
                 WHERE lower(user_email) = lower($1) AND sso_subject IS NULL FOR UPDATE",
            )
            .bind(email)
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await?
        }
        (None, None) => None,
    };
    if found
        .as_ref()
        .is_some_and(|(_, disabled)| disabled.is_some())
    {
        return Err(ApiError::PermissionDenied(
            "this account is disabled in llmlite: ask an admin".into(),
        ));
    }
    let before = match &found {
        Some((user_id, _)) => Some(find(&mut *tx, user_id, true).await?),
        None => None,
    };
    let user_id = match &found {
        Some((user_id, _)) => user_id.clone(),
        None => {
            // The email is the ID people know; the `sub` when there is none, or when another
            // user already has that ID.
            let taken: bool = match who.email {
                Some(email) => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM litellm_usertable WHERE user_id = $1)",
                    )
                    .bind(email)
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await?
                }
                None => true,
            };
            match who.email {
                Some(email) if !taken => email.to_owned(),
                _ => who.subject.to_owned(),
            }
        }
    };
    let mut row = before
        .clone()
        .unwrap_or_else(|| UserRow::empty(user_id.clone(), now));
    if let Some(role) = who.role {
        row.user_role = role.to_owned();
    }
    if let Some(teams) = teams {
        row.teams = teams;
    }
    if let Some(email) = who.email {
        row.user_email = Some(email.to_owned());
    }
    if let Some(name) = who.name {
        row.user_alias = Some(name.to_owned());
    }
    fields::text("user_id", &row.user_id)?;
    fields::optional_text("user_email", row.user_email.as_deref())?;
    fields::optional_text("user_alias", row.user_alias.as_deref())?;
    let changed = before.as_ref().is_none_or(|b| {
        (&b.user_role, &b.teams, &b.user_email, &b.user_alias)
            != (&row.user_role, &row.teams, &row.user_email, &row.user_alias)
    });
    let after = if changed {
        Some(save(&mut tx, &row, now, before.is_none()).await?)
    } else {
        None
    };
    sqlx::query("UPDATE litellm_usertable SET sso_subject = $2 WHERE user_id = $1")
        .bind(&user_id)
        .bind(who.subject)
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    if let Some(after) = after {
        let caller = crate::auth::Caller::User {
            user_id: user_id.clone(),
            role: after.user_role.clone(),
            model_lists: Vec::new(),
        };
        Action {
            at: now,
            request_id,
            caller: &caller,
            action: if before.is_some() {
                "user.sign_in_update"
            } else {
                "user.sign_in_create"
            },
            object_type: "user",
            object_id: &user_id,
            before: before.as_ref().map(UserRow::to_json),
            after: Some(after.to_json()),
        }
        .record(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(user_id)
}

/// Disables `user_id` (or enables them again), in one transaction with its admin action: a
/// disabled person has no console session, no `llmlite key` credential and no short-lived key,
/// and their other keys are blocked. Enabling clears the mark only. Whether the user is now
/// disabled.
pub async fn set_disabled(
    state: &AppState,
    caller: &crate::auth::Caller,
    request_id: RequestId,
    user_id: &str,
    disabled: bool,
) -> Result<bool, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    // Keys before their user, in key_id order, as settlement locks them: no deadlock with a
    // request settling meanwhile.
    sqlx::query(
        "SELECT 1 FROM litellm_verificationtoken WHERE user_id = $1 ORDER BY key_id FOR UPDATE",
    )
    .bind(user_id)
    .persistent(false)
    .execute(&mut *tx)
    .await?;
    let was: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT disabled_at FROM litellm_usertable WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id)
    .persistent(false)
    .fetch_optional(&mut *tx)
    .await?;
    let was = was.ok_or_else(|| ApiError::NotFound(format!("user `{user_id}` not found")))?;
    if was.is_some() == disabled {
        tx.commit().await?;
        return Ok(disabled);
    }
    sqlx::query(
        "UPDATE litellm_usertable SET disabled_at = $2, updated_at = $3 WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(disabled.then_some(now))
    .bind(now)
    .persistent(false)
    .execute(&mut *tx)
    .await?;
    let mut after = json!({"disabled": disabled});
    if disabled {
        // Each statement takes the user ($1), now ($2) and the actor ($3), and ends what it
        // names: how many rows.
        let actor = caller.actor();
        let mut end = async |sql: &'static str| -> Result<u64, ApiError> {
            Ok(sqlx::query(sql)
                .bind(user_id)
                .bind(now)
                .bind(&actor)
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        let sessions = end("UPDATE llmlite_console_session
             SET ended_at = $2, id_token = NULL, idp_refresh_token = NULL
             WHERE user_id = $1 AND ended_at IS NULL AND $3::text IS NOT NULL")
        .await?;
        let credentials = end("UPDATE llmlite_cli_credential SET revoked_at = $2
             WHERE user_id = $1 AND revoked_at IS NULL AND $3::text IS NOT NULL")
        .await?;
        let short_lived = end(
            "UPDATE litellm_verificationtoken SET is_active = false, updated_at = $2,
                    updated_by = $3
             WHERE user_id = $1 AND is_active AND metadata ? 'llmlite_cli_credential'",
        )
        .await?;
        let blocked = end(
            "UPDATE litellm_verificationtoken SET blocked = true, updated_at = $2, updated_by = $3
             WHERE user_id = $1 AND is_active AND NOT blocked",
        )
        .await?;
        after["sessions_ended"] = json!(sessions);
        after["credentials_revoked"] = json!(credentials);
        after["short_lived_keys_ended"] = json!(short_lived);
        after["keys_blocked"] = json!(blocked);
    }
    Action {
        at: now,
        request_id,
        caller,
        action: if disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        object_type: "user",
        object_id: user_id,
        before: Some(json!({"disabled": was.is_some()})),
        after: Some(after),
    }
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(disabled)
}
