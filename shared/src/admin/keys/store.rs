//! Key rows and the SQL that reads and writes them: finding, locking, storing, deactivating,
//! blocking and paging keys. A writer locks its key rows first (by token), as admission does.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};

use super::request::{KeyValues, hash_of};
use crate::admin::fields::{self, Features, Limits};
use crate::admin::{Action, Page, conflict_or};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::keys::{self, KeyHash, Tier};

/// A key row, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub token: String,
    pub key_name: String,
    pub key_alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub tier: Option<String>,
    pub spend: Decimal,
    #[sqlx(flatten)]
    pub limits: Limits,
    pub expires: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub blocked: bool,
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_active: Option<DateTime<Utc>>,
    pub pii_policy: Option<Value>,
    #[sqlx(flatten)]
    pub features: Features,
}

impl KeyRow {
    /// The row's settable fields, as an update starts from them.
    pub(super) fn values(&self) -> KeyValues {
        KeyValues {
            key_alias: self.key_alias.clone(),
            user_id: self.user_id.clone(),
            team_id: self.team_id.clone(),
            tier: self.tier.as_deref().and_then(Tier::parse),
            limits: self.limits.clone(),
            expires: self.expires,
            blocked: self.blocked,
            pii_policy: self.pii_policy.clone(),
            features: self.features.clone(),
        }
    }
}

/// The columns of [`KeyRow`], for SELECT and RETURNING lists.
pub const COLUMNS: &str = "token, key_name, key_alias, user_id, team_id, tier, spend, models, \
    max_budget, soft_budget, budget_duration, budget_reset_at, tpm_limit, rpm_limit, \
    max_parallel_requests, metadata, expires, is_active, blocked, created_by, updated_by, \
    created_at, updated_at, last_active, pii_policy, allow_cache_1h, allowed_service_tiers, guardrail, \
    residency";

impl KeyRow {
    /// LiteLLM's key object. The hash is `token`; the raw key is never in it.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "token": self.token,
            "key_name": self.key_name,
            "key_alias": self.key_alias,
            "user_id": self.user_id,
            "team_id": self.team_id,
            "tier": self.tier,
            "spend": fields::money(self.spend),
            "expires": self.expires,
            "is_active": self.is_active,
            "blocked": self.blocked,
            "created_by": self.created_by,
            "updated_by": self.updated_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_active": self.last_active,
            "pii_policy": self.pii_policy,
        });
        self.limits.write_json(&mut out);
        self.features.write_json(&mut out);
        out
    }
}

/// The live key row for `key` (raw or hash), locked for update when `lock`. A writer locks its
/// key before any user or team row, as admission does.
pub(super) async fn find(
    executor: impl sqlx::PgExecutor<'_>,
    key: &str,
    lock: bool,
) -> Result<KeyRow, ApiError> {
    let hash = hash_of(key)?;
    let sql = format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken WHERE token = $1 AND is_active{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(hash.as_str())
        .persistent(false)
        .fetch_optional(executor)
        .await?
        .ok_or_else(|| ApiError::NotFound("key not found".into()))
}

/// Makes sure the user (created on first use, as LiteLLM does) and the team (which must exist)
/// are there.
pub(super) async fn ensure_owner(
    tx: &mut Transaction<'_, Postgres>,
    values: &KeyValues,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    if let Some(user_id) = &values.user_id {
        sqlx::query(
            "INSERT INTO litellm_usertable (user_id, created_at, updated_at) VALUES ($1, $2, $2)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(team_id) = &values.team_id {
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM litellm_teamtable WHERE team_id = $1")
                .bind(team_id)
                .persistent(false)
                .fetch_optional(&mut **tx)
                .await?;
        if exists.is_none() {
            return Err(ApiError::NotFound(format!("team `{team_id}` not found")));
        }
    }
    Ok(())
}

fn alias_taken(values: &KeyValues) -> impl FnOnce() -> String + '_ {
    move || match &values.key_alias {
        Some(alias) => format!("key alias `{alias}` is already used by another key"),
        None => "that key already exists".to_owned(),
    }
}

/// Writes `values` to the row `token` (insert when `insert`), returning the stored row.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    token: &str,
    key_name: &str,
    values: &KeyValues,
    caller: &Caller,
    now: DateTime<Utc>,
    insert: bool,
) -> Result<KeyRow, ApiError> {
    let sql = if insert {
        format!(
            "INSERT INTO litellm_verificationtoken
                 (token, key_name, key_alias, user_id, team_id, models, tier, max_budget,
                  soft_budget, budget_duration, budget_reset_at, tpm_limit, rpm_limit,
                  max_parallel_requests, expires, blocked, metadata, created_by, updated_by,
                  created_at, updated_at, pii_policy, allow_cache_1h, allowed_service_tiers,
                  guardrail, residency)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $18, $19, $19, $20, $21, $22, $23, $24)
             RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE litellm_verificationtoken SET
                 key_name = $2, key_alias = $3, user_id = $4, team_id = $5, models = $6,
                 tier = $7, max_budget = $8, soft_budget = $9, budget_duration = $10,
                 budget_reset_at = $11, tpm_limit = $12, rpm_limit = $13,
                 max_parallel_requests = $14, expires = $15, blocked = $16, metadata = $17,
                 updated_by = $18, updated_at = $19, pii_policy = $20, allow_cache_1h = $21,
                 allowed_service_tiers = $22, guardrail = $23, residency = $24
             WHERE token = $1
             RETURNING {COLUMNS}"
        )
    };
    sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(token)
        .bind(key_name)
        .bind(&values.key_alias)
        .bind(&values.user_id)
        .bind(&values.team_id)
        .bind(&values.limits.models)
        .bind(values.tier.map(Tier::as_str))
        .bind(values.limits.max_budget)
        .bind(values.limits.soft_budget)
        .bind(values.limits.budget_duration)
        .bind(values.limits.budget_reset_at)
        .bind(values.limits.tpm_limit)
        .bind(values.limits.rpm_limit)
        .bind(values.limits.max_parallel_requests)
        .bind(values.expires)
        .bind(values.blocked)
        .bind(&values.limits.metadata)
        .bind(caller.actor())
        .bind(now)
        .bind(&values.pii_policy)
        .bind(values.features.allow_cache_1h)
        .bind(&values.features.allowed_service_tiers)
        .bind(&values.features.guardrail)
        .bind(&values.features.residency)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| conflict_or(e, alias_taken(values)))
}

/// Stores a new key and records its `key.generate` admin action, in the caller's transaction.
pub(super) async fn insert_generated(
    tx: &mut Transaction<'_, Postgres>,
    raw: &str,
    values: &KeyValues,
    caller: &Caller,
    now: DateTime<Utc>,
    request_id: RequestId,
) -> Result<KeyRow, ApiError> {
    let hash = KeyHash::of(raw);
    let row = write(
        tx,
        hash.as_str(),
        &keys::short_name(raw),
        values,
        caller,
        now,
        true,
    )
    .await?;
    Action {
        at: now,
        request_id,
        caller,
        action: "key.generate",
        object_type: "key",
        object_id: hash.as_str(),
        before: None,
        after: Some(row.to_json()),
    }
    .record(tx)
    .await?;
    Ok(row)
}

/// Deactivates a key (the row stays, for the record) and ends any rotation grace period.
pub async fn deactivate(
    tx: &mut Transaction<'_, Postgres>,
    row: &KeyRow,
    caller: &Caller,
    now: DateTime<Utc>,
    request_id: RequestId,
    action: &'static str,
) -> Result<(), ApiError> {
    let sql = format!(
        "UPDATE litellm_verificationtoken SET is_active = false, updated_by = $2, updated_at = $3
         WHERE token = $1 RETURNING {COLUMNS}"
    );
    let after = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(&row.token)
        .bind(caller.actor())
        .bind(now)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM llmlite_deprecated_token WHERE active_token = $1")
        .bind(&row.token)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    Action {
        at: now,
        request_id,
        caller,
        action,
        object_type: "key",
        object_id: &row.token,
        before: Some(row.to_json()),
        after: Some(after.to_json()),
    }
    .record(tx)
    .await
}

/// Blocks or unblocks the key `row`, recording the action.
pub async fn set_blocked_row(
    tx: &mut Transaction<'_, Postgres>,
    row: &KeyRow,
    blocked: bool,
    caller: &Caller,
    now: DateTime<Utc>,
    request_id: RequestId,
) -> Result<KeyRow, ApiError> {
    let sql = format!(
        "UPDATE litellm_verificationtoken SET blocked = $2, updated_by = $3, updated_at = $4
         WHERE token = $1 RETURNING {COLUMNS}"
    );
    let after = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(&row.token)
        .bind(blocked)
        .bind(caller.actor())
        .bind(now)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await?;
    Action {
        at: now,
        request_id,
        caller,
        action: if blocked { "key.block" } else { "key.unblock" },
        object_type: "key",
        object_id: &after.token,
        before: Some(row.to_json()),
        after: Some(after.to_json()),
    }
    .record(tx)
    .await?;
    Ok(after)
}

/// Creates a key with `tier`'s limits for a user (`/user/new` with `auto_create_key`), in the
/// caller's transaction.
pub async fn generate_for_user(
    tx: &mut Transaction<'_, Postgres>,
    user_id: &str,
    tier: Tier,
    caller: &Caller,
    now: DateTime<Utc>,
    request_id: RequestId,
) -> Result<(String, KeyRow), ApiError> {
    let raw = keys::generate();
    let values = KeyValues::for_user(user_id, tier, now);
    let row = insert_generated(tx, &raw, &values, caller, now, request_id).await?;
    Ok((raw, row))
}

/// Locks the keys with the tokens `tokens` or the aliases `aliases`: the live ones, or with
/// `inactive_too` also those deleted earlier.
pub(super) async fn lock_named(
    tx: &mut Transaction<'_, Postgres>,
    tokens: &[&str],
    aliases: &[String],
    inactive_too: bool,
) -> Result<Vec<KeyRow>, ApiError> {
    // Every key in one statement, in token order: two deletes naming the same keys in different
    // orders cannot deadlock.
    let active = if inactive_too { "true" } else { "is_active" };
    let sql = format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken
         WHERE {active} AND (token = ANY($1) OR key_alias = ANY($2))
         ORDER BY token FOR UPDATE"
    );
    Ok(sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(tokens)
        .bind(aliases)
        .persistent(false)
        .fetch_all(&mut **tx)
        .await?)
}

/// What `/key/list` filters the live keys by (each, when given).
pub(super) struct ListFilter<'a> {
    pub user_id: Option<&'a str>,
    pub team_id: Option<&'a str>,
    pub key_alias: Option<&'a str>,
    /// Keys whose secret dates from this time or before: the last rotation, else creation.
    pub created_before: Option<DateTime<Utc>>,
}

/// A page of the live keys `filter` lets through, oldest first, and how many there are in all
/// (run it in a [`crate::admin::snapshot`] so the two agree).
pub(super) async fn list_page(
    conn: &mut sqlx::PgConnection,
    filter: &ListFilter<'_>,
    page: Page,
) -> Result<(Vec<KeyRow>, i64), ApiError> {
    let condition = "is_active
         AND ($1::text IS NULL OR user_id = $1)
         AND ($2::text IS NULL OR team_id = $2)
         AND ($3::text IS NULL OR key_alias = $3)
         AND ($4::timestamptz IS NULL OR COALESCE(last_rotation_at, created_at) <= $4)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM litellm_verificationtoken WHERE {condition}"
    )))
    .bind(filter.user_id)
    .bind(filter.team_id)
    .bind(filter.key_alias)
    .bind(filter.created_before)
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken WHERE {condition}
         ORDER BY created_at, token LIMIT $5 OFFSET $6"
    )))
    .bind(filter.user_id)
    .bind(filter.team_id)
    .bind(filter.key_alias)
    .bind(filter.created_before)
    .bind(page.size)
    .bind(page.offset())
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Gives the key `row` the new token `new_hash` (named `key_name`): the row keeps its spend and
/// limits; its grace entries follow by cascade.
pub(super) async fn retoken(
    tx: &mut Transaction<'_, Postgres>,
    row: &KeyRow,
    new_hash: &KeyHash,
    key_name: &str,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<KeyRow, ApiError> {
    let sql = format!(
        "UPDATE litellm_verificationtoken
         SET token = $2, key_name = $3, updated_by = $4, updated_at = $5, last_rotation_at = $5
         WHERE token = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(&row.token)
        .bind(new_hash.as_str())
        .bind(key_name)
        .bind(caller.actor())
        .bind(now)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| conflict_or(e, || "that key already exists".to_owned()))
}

/// Keeps the old token of a rotated key (`before`, now `new_hash`) working until `revoke_at`.
pub(super) async fn keep_until(
    tx: &mut Transaction<'_, Postgres>,
    before: &KeyRow,
    new_hash: &KeyHash,
    revoke_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO llmlite_deprecated_token (token, active_token, revoke_at, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&before.token)
    .bind(new_hash.as_str())
    .bind(revoke_at)
    .bind(now)
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A page of the live keys of a user or a team, oldest first, and how many there are in all: a
/// plain read, no locks (run it in a [`crate::admin::snapshot`] so the two agree).
async fn live_keys(
    conn: &mut sqlx::PgConnection,
    column: Owner,
    id: &str,
    page: Page,
) -> Result<(Vec<KeyRow>, i64), ApiError> {
    let filter = format!("{} = $1 AND is_active", column.column());
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM litellm_verificationtoken WHERE {filter}"
    )))
    .bind(id)
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken WHERE {filter}
         ORDER BY created_at, token LIMIT $2 OFFSET $3"
    )))
    .bind(id)
    .bind(page.size)
    .bind(page.offset())
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Adds the nested key list of `/user/info` and `/team/info` to `out`: a page of the owner's
/// live keys (`keys`) and its totals (`keys_total_count`, `keys_page`, `keys_page_size`,
/// `keys_total_pages`).
pub async fn add_key_page(
    conn: &mut sqlx::PgConnection,
    column: Owner,
    id: &str,
    page: Page,
    out: &mut Value,
) -> Result<(), ApiError> {
    let (rows, total) = live_keys(conn, column, id, page).await?;
    out["keys"] = rows.iter().map(KeyRow::to_json).collect();
    out["keys_total_count"] = json!(total);
    out["keys_page"] = json!(page.page);
    out["keys_page_size"] = json!(page.size);
    out["keys_total_pages"] = json!(page.total_pages(total));
    Ok(())
}

/// Locks every key row (live or not) of the users or teams `ids`, in token order, for a write
/// that goes on to lock those users or teams: keys first, as admission locks them. Deleting a
/// user or team also updates its inactive keys (`ON DELETE SET NULL`), so they are locked too.
pub async fn lock_keys(
    tx: &mut Transaction<'_, Postgres>,
    column: Owner,
    ids: &[String],
) -> Result<Vec<KeyRow>, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken WHERE {} = ANY($1)
         ORDER BY token FOR UPDATE",
        column.column()
    );
    Ok(sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .persistent(false)
        .fetch_all(&mut **tx)
        .await?)
}

/// Who a key belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    User,
    Team,
}

impl Owner {
    fn column(self) -> &'static str {
        match self {
            Owner::User => "user_id",
            Owner::Team => "team_id",
        }
    }
}
