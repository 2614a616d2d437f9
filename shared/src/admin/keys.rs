//! `/key/*`: generate, update, delete, info, list, regenerate (with a grace period), block and
//! unblock virtual keys. Keys are stored by hash only.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::{Postgres, Transaction};

use super::fields::{self, Duration, Limits, LimitsPatch, patch};
use super::{Action, Page, conflict_or};
use crate::auth::{Admin, Caller};
use crate::durations::DurationSpec;
use crate::error::ApiError;
use crate::http::{ApiJson, ApiQuery, RequestId};
use crate::keys::{self, KeyHash};
use crate::state::AppState;

/// The LLD's key tiers. A new key starts from its request's `tier`, or from
/// `LLMLITE_DEFAULT_TIER` when it names none; fields the request names override the tier's.
/// `none` sets no limits: a deliberate choice that needs the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Tier {
    Standard,
    Admin,
    /// `none`: no rate limits and no budget.
    Unlimited,
}

impl TryFrom<String> for Tier {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Tier::parse(&text)
            .ok_or_else(|| format!("`{text}` is not a tier: use standard, admin or none"))
    }
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Admin => "admin",
            Tier::Unlimited => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text.trim().to_ascii_lowercase().as_str() {
            "standard" => Some(Tier::Standard),
            "admin" => Some(Tier::Admin),
            "none" => Some(Tier::Unlimited),
            _ => None,
        }
    }

    /// (tpm, rpm, max budget in dollars) per [`TIER_BUDGET_PERIOD`]; none for `none`.
    pub fn limits(self) -> Option<(i64, i64, i64)> {
        match self {
            Tier::Standard => Some((10_000, 100, 50)),
            Tier::Admin => Some((100_000, 1_000, 500)),
            Tier::Unlimited => None,
        }
    }

    /// Sets the tier's TPM, RPM, budget and budget period on `limits` (`none` clears them).
    fn apply_to(self, limits: &mut Limits, now: DateTime<Utc>) {
        let tier = self.limits();
        limits.tpm_limit = tier.map(|(tpm, _, _)| tpm);
        limits.rpm_limit = tier.map(|(_, rpm, _)| rpm);
        limits.max_budget = tier.map(|(_, _, budget)| Decimal::from(budget));
        limits.set_budget_period(tier.map(|_| TIER_BUDGET_PERIOD), now);
    }
}

/// A tier's budget period: the LLD's "per month".
const TIER_BUDGET_PERIOD: DurationSpec = DurationSpec {
    amount: 30,
    unit: crate::durations::Unit::Days,
};

/// Refuses a request that would take limits off a key (`tier: "none"`, or a limit given as
/// `null`) unless it comes with the master key: an admin key cannot make an unlimited key.
/// `param` is the name of the tier field (`tier`, or `/user/new`'s `key_tier`).
pub fn unlimited_needs_master(
    caller: &Caller,
    param: &str,
    tier: Option<Tier>,
    limits: Option<&LimitsPatch>,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Master) {
        return Ok(());
    }
    let field = if tier == Some(Tier::Unlimited) {
        Some(param)
    } else {
        limits.and_then(LimitsPatch::cleared_limit)
    };
    match field {
        None => Ok(()),
        Some(field) => Err(ApiError::PermissionDenied(format!(
            "`{field}`: a key without that limit needs the master key (an admin key may set \
             limits, not remove them)"
        ))),
    }
}

/// The body of `/key/generate` and `/key/update`.
#[derive(Debug, Default, Deserialize)]
pub struct KeyRequest {
    /// generate: a caller-chosen raw key; update: the key to change (raw or hash).
    key: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    key_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    duration: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "patch")]
    user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    team_id: Option<Option<String>>,
    blocked: Option<bool>,
    tier: Option<Tier>,
    #[serde(default, deserialize_with = "patch")]
    pii_policy: Option<Option<Value>>,
    #[serde(flatten)]
    limits: LimitsPatch,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

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
}

const COLUMNS: &str = "token, key_name, key_alias, user_id, team_id, tier, spend, models, \
    max_budget, soft_budget, budget_duration, budget_reset_at, tpm_limit, rpm_limit, \
    max_parallel_requests, metadata, expires, is_active, blocked, created_by, updated_by, \
    created_at, updated_at, last_active, pii_policy";

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
        out
    }
}

/// The settable fields of a key, resolved and validated.
#[derive(Debug, Clone, Default)]
struct KeyValues {
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    tier: Option<Tier>,
    limits: Limits,
    expires: Option<DateTime<Utc>>,
    blocked: bool,
    pii_policy: Option<Value>,
}

impl KeyValues {
    fn from_row(row: &KeyRow) -> Self {
        KeyValues {
            key_alias: row.key_alias.clone(),
            user_id: row.user_id.clone(),
            team_id: row.team_id.clone(),
            tier: row.tier.as_deref().and_then(Tier::parse),
            limits: row.limits.clone(),
            expires: row.expires,
            blocked: row.blocked,
            pii_policy: row.pii_policy.clone(),
        }
    }

    /// Applies a request: the tier's limits first (`tier`: the request's, or for a new key the
    /// default), then every field it names; then checks them.
    fn apply(
        &mut self,
        request: &KeyRequest,
        tier: Option<Tier>,
        now: DateTime<Utc>,
        pii_entities: &[String],
    ) -> Result<(), ApiError> {
        fields::no_unknown_fields(&request.unknown)?;
        if let Some(v) = &request.pii_policy {
            self.pii_policy = fields::pii_policy(v.as_ref(), pii_entities)?;
        }
        if let Some(tier) = tier {
            self.tier = Some(tier);
            tier.apply_to(&mut self.limits, now);
        }
        if let Some(v) = &request.key_alias {
            self.key_alias = v.clone();
        }
        if let Some(v) = &request.user_id {
            self.user_id = v.clone();
        }
        if let Some(v) = &request.team_id {
            self.team_id = v.clone();
        }
        if let Some(v) = request.duration {
            // A new duration restarts the lifetime from now; null means never expires.
            self.expires = v.map(|d| d.0.after(now));
        }
        if let Some(v) = request.blocked {
            self.blocked = v;
        }
        self.limits.apply(&request.limits, now)?;
        fields::optional_text("key_alias", self.key_alias.as_deref())?;
        fields::optional_text("user_id", self.user_id.as_deref())?;
        fields::optional_text("team_id", self.team_id.as_deref())
    }
}

/// `key` (raw or hash) as its hash.
fn hash_of(key: &str) -> Result<KeyHash, ApiError> {
    KeyHash::from_key_or_hash(key)
        .ok_or_else(|| ApiError::invalid_param("key", "`key` must be a key (`sk-...`) or its hash"))
}

/// The live key row for `key` (raw or hash), locked for update when `lock`. A writer locks its
/// key before any user or team row, as admission does.
async fn find(
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
async fn ensure_owner(
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
async fn store(
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
                  created_at, updated_at, pii_policy)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $18, $19, $19, $20)
             RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE litellm_verificationtoken SET
                 key_name = $2, key_alias = $3, user_id = $4, team_id = $5, models = $6,
                 tier = $7, max_budget = $8, soft_budget = $9, budget_duration = $10,
                 budget_reset_at = $11, tpm_limit = $12, rpm_limit = $13,
                 max_parallel_requests = $14, expires = $15, blocked = $16, metadata = $17,
                 updated_by = $18, updated_at = $19, pii_policy = $20
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
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| conflict_or(e, alias_taken(values)))
}

/// How many characters a chosen key has after `sk-`: enough not to be a guessable password,
/// and short enough for any header.
const CHOSEN_KEY_CHARS: std::ops::RangeInclusive<usize> = 16..=200;

/// A raw key the caller chose (in the field `param`), or a fresh one. A chosen key is `sk-` and
/// `[A-Za-z0-9_-]` only: the alphabet the log redactor recognises as a key, so it is redacted
/// wherever it appears. The message never repeats the key.
fn new_raw_key(param: &str, chosen: Option<&str>) -> Result<String, ApiError> {
    let Some(raw) = chosen else {
        return Ok(keys::generate());
    };
    let valid = raw.strip_prefix("sk-").is_some_and(|rest| {
        CHOSEN_KEY_CHARS.contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !valid {
        return Err(ApiError::invalid_param(
            param,
            format!(
                "a chosen `{param}` must be `sk-` followed by {} to {} of A-Z, a-z, 0-9, `_` and `-`",
                CHOSEN_KEY_CHARS.start(),
                CHOSEN_KEY_CHARS.end()
            ),
        ));
    }
    Ok(raw.to_owned())
}

/// The response that carries a raw key, the one time it is shown.
fn minted(raw: &str, row: &KeyRow) -> Value {
    let mut body = row.to_json();
    body["key"] = Value::String(raw.to_owned());
    body
}

pub async fn generate(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<KeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let mut values = KeyValues::default();
    let tier = request.tier.unwrap_or(state.config.default_tier);
    values.apply(&request, Some(tier), now, &state.pii.entity_names())?;
    unlimited_needs_master(&caller, "tier", request.tier, Some(&request.limits))?;
    let raw = new_raw_key("key", request.key.as_deref())?;
    let mut tx = state.db.pool().await?.begin().await?;
    ensure_owner(&mut tx, &values, now).await?;
    let row = insert_generated(&mut tx, &raw, &values, &caller, now, request_id).await?;
    tx.commit().await?;
    Ok(Json(minted(&raw, &row)))
}

/// Stores a new key and records its `key.generate` admin action, in the caller's transaction.
async fn insert_generated(
    tx: &mut Transaction<'_, Postgres>,
    raw: &str,
    values: &KeyValues,
    caller: &Caller,
    now: DateTime<Utc>,
    request_id: RequestId,
) -> Result<KeyRow, ApiError> {
    let hash = KeyHash::of(raw);
    let row = store(
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

pub async fn update(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<KeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let key = request
        .key
        .clone()
        .ok_or_else(|| ApiError::invalid_param("key", "`key` names the key to update"))?;
    unlimited_needs_master(&caller, "tier", request.tier, Some(&request.limits))?;
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    let before = find(&mut *tx, &key, true).await?;
    let mut values = KeyValues::from_row(&before);
    values.apply(&request, request.tier, now, &state.pii.entity_names())?;
    ensure_owner(&mut tx, &values, now).await?;
    let after = store(
        &mut tx,
        &before.token,
        &before.key_name,
        &values,
        &caller,
        now,
        false,
    )
    .await?;
    Action {
        at: now,
        request_id,
        caller: &caller,
        action: "key.update",
        object_type: "key",
        object_id: &after.token,
        before: Some(before.to_json()),
        after: Some(after.to_json()),
    }
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(after.to_json()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_aliases: Vec<String>,
    /// Erase instead (llmlite's extension): the key rows go, and their spend rows lose alias,
    /// client address, `end_user` and free text ([`super::erasure`]).
    #[serde(default)]
    erase: bool,
}

pub async fn delete(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<DeleteRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.keys.is_empty() && request.key_aliases.is_empty() {
        return Err(ApiError::invalid_param(
            "keys",
            "give `keys` or `key_aliases`",
        ));
    }
    if request.keys.len() + request.key_aliases.len() > 100 {
        return Err(ApiError::invalid_param("keys", "at most 100 keys per call"));
    }
    let hashes = request
        .keys
        .iter()
        .map(|k| hash_of(k))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens: Vec<&str> = hashes.iter().map(KeyHash::as_str).collect();
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    // Every key in one statement, in token order: two deletes naming the same keys in different
    // orders cannot deadlock.
    // An erasure may name a key deleted earlier (its row was kept for the record).
    let active = if request.erase { "true" } else { "is_active" };
    let sql = format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken
         WHERE {active} AND (token = ANY($1) OR key_alias = ANY($2))
         ORDER BY token FOR UPDATE"
    );
    let rows = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(&tokens)
        .bind(&request.key_aliases)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
    if !tokens.iter().all(|t| rows.iter().any(|r| r.token == *t)) {
        return Err(ApiError::NotFound("key not found".into()));
    }
    if let Some(alias) = request
        .key_aliases
        .iter()
        .find(|a| !rows.iter().any(|r| r.key_alias.as_ref() == Some(*a)))
    {
        return Err(ApiError::NotFound(format!("no key with alias `{alias}`")));
    }
    if request.erase {
        let erased: Vec<String> = rows.iter().map(|r| r.token.clone()).collect();
        super::erasure::erase_keys(&state, &mut tx, &caller, request_id, now, &erased).await?;
    } else {
        for row in &rows {
            deactivate(&mut tx, row, &caller, now, request_id, "key.delete").await?;
        }
    }
    tx.commit().await?;
    // LiteLLM echoes what it was given; a raw key is never echoed, its hash stands in.
    let deleted: Vec<String> = request
        .keys
        .iter()
        .map(|k| KeyHash::from_key_or_hash(k).map_or_else(String::new, |h| h.to_string()))
        .chain(request.key_aliases.iter().cloned())
        .collect();
    Ok(Json(json!({ "deleted_keys": deleted })))
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

#[derive(Debug, Deserialize)]
pub struct InfoQuery {
    key: Option<String>,
}

/// `GET /key/info?key=`: admins may ask about any key; a plain key about itself only (and
/// without `key`, it is about itself). In the URL, `key` must be the key's hash: a raw key
/// there is refused before this runs ([`crate::http`]), and goes in the body of
/// `POST /key/info` instead.
pub async fn info(
    caller: Caller,
    state: State<AppState>,
    ApiQuery(query): ApiQuery<InfoQuery>,
) -> Result<Json<Value>, ApiError> {
    key_info(caller, state, query).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoBody {
    key: Option<String>,
}

/// `POST /key/info` with `{"key": ...}`: the same, with the key where logs do not keep it.
pub async fn info_from_body(
    caller: Caller,
    state: State<AppState>,
    ApiJson(body): ApiJson<InfoBody>,
) -> Result<Json<Value>, ApiError> {
    key_info(caller, state, InfoQuery { key: body.key }).await
}

async fn key_info(
    caller: Caller,
    State(state): State<AppState>,
    query: InfoQuery,
) -> Result<Json<Value>, ApiError> {
    let target = match (&query.key, &caller) {
        (Some(key), _) => KeyHash::from_key_or_hash(key).ok_or_else(|| {
            ApiError::invalid_param("key", "`key` must be a key (`sk-...`) or its hash")
        })?,
        (None, Caller::Key { hash, .. }) => hash.clone(),
        (None, Caller::Master) => {
            return Err(ApiError::invalid_param(
                "key",
                "`key` is required with the master key",
            ));
        }
    };
    if let Caller::Key {
        hash, admin: false, ..
    } = &caller
        && *hash != target
    {
        return Err(ApiError::PermissionDenied(
            "a key may only read its own information".into(),
        ));
    }
    let row = find(state.db.pool().await?, target.as_str(), false).await?;
    Ok(Json(json!({ "key": row.token, "info": row.to_json() })))
}

/// The largest `older_than_days` (about a hundred years).
const MAX_AGE_DAYS: i64 = 36_500;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
    size: Option<i64>,
    page_size: Option<i64>,
    user_id: Option<String>,
    team_id: Option<String>,
    key_alias: Option<String>,
    /// Only keys whose secret is at least this many days old: since the last rotation, else
    /// since creation (rotation hygiene, as the rotation report counts it).
    older_than_days: Option<i64>,
    #[serde(default)]
    return_full_object: bool,
}

pub async fn list(
    Admin(_): Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = Page::either(query.page, query.size, query.page_size)?;
    let created_before = match query.older_than_days {
        None => None,
        Some(days) if (0..=MAX_AGE_DAYS).contains(&days) => {
            Some(state.clock.now() - chrono::Duration::days(days))
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "older_than_days",
                format!("`older_than_days` must be 0 to {MAX_AGE_DAYS}"),
            ));
        }
    };
    let filter = "is_active
         AND ($1::text IS NULL OR user_id = $1)
         AND ($2::text IS NULL OR team_id = $2)
         AND ($3::text IS NULL OR key_alias = $3)
         AND ($4::timestamptz IS NULL OR COALESCE(last_rotation_at, created_at) <= $4)";
    // The count and the page from one snapshot, so they agree.
    let mut tx = super::snapshot(&state).await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM litellm_verificationtoken WHERE {filter}"
    )))
    .bind(&query.user_id)
    .bind(&query.team_id)
    .bind(&query.key_alias)
    .bind(created_before)
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    let rows = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_verificationtoken WHERE {filter}
         ORDER BY created_at, token LIMIT $5 OFFSET $6"
    )))
    .bind(&query.user_id)
    .bind(&query.team_id)
    .bind(&query.key_alias)
    .bind(created_before)
    .bind(page.size)
    .bind(page.offset())
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let keys: Vec<Value> = rows
        .iter()
        .map(|row| {
            if query.return_full_object {
                row.to_json()
            } else {
                Value::String(row.token.clone())
            }
        })
        .collect();
    Ok(Json(json!({
        "keys": keys,
        "total_count": total,
        "current_page": page.page,
        "total_pages": page.total_pages(total),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    key: Option<String>,
    /// How long the old key keeps working (`24h`); none ends it at once.
    grace_period: Option<Duration>,
    /// A caller-chosen new raw key.
    new_key: Option<String>,
}

pub async fn regenerate(
    admin: Admin,
    state: State<AppState>,
    request_id: Extension<RequestId>,
    ApiJson(request): ApiJson<RegenerateRequest>,
) -> Result<Json<Value>, ApiError> {
    rotate(admin, state, request_id, request).await
}

/// `POST /key/{key}/regenerate`, with an optional body.
pub async fn regenerate_path(
    admin: Admin,
    state: State<AppState>,
    request_id: Extension<RequestId>,
    Path(key): Path<String>,
    body: bytes::Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut request: RegenerateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RegenerateRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?
    };
    request.key = Some(key);
    rotate(admin, state, request_id, request).await
}

async fn rotate(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    request: RegenerateRequest,
) -> Result<Json<Value>, ApiError> {
    let key = request
        .key
        .clone()
        .ok_or_else(|| ApiError::invalid_param("key", "`key` names the key to regenerate"))?;
    let now = state.clock.now();
    let raw = new_raw_key("new_key", request.new_key.as_deref())?;
    let new_hash = KeyHash::of(&raw);
    let mut tx = state.db.pool().await?.begin().await?;
    let before = find(&mut *tx, &key, true).await?;
    // The row keeps its spend and limits; its token changes (grace entries follow by cascade).
    let sql = format!(
        "UPDATE litellm_verificationtoken
         SET token = $2, key_name = $3, updated_by = $4, updated_at = $5, last_rotation_at = $5
         WHERE token = $1 RETURNING {COLUMNS}"
    );
    let after = sqlx::query_as::<_, KeyRow>(sqlx::AssertSqlSafe(sql))
        .bind(&before.token)
        .bind(new_hash.as_str())
        .bind(keys::short_name(&raw))
        .bind(caller.actor())
        .bind(now)
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, || "that key already exists".to_owned()))?;
    if let Some(grace) = request.grace_period {
        sqlx::query(
            "INSERT INTO llmlite_deprecated_token (token, active_token, revoke_at, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&before.token)
        .bind(new_hash.as_str())
        .bind(grace.0.after(now))
        .bind(now)
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    }
    let mut recorded = after.to_json();
    recorded["previous_token"] = Value::String(before.token.clone());
    recorded["grace_period"] = request
        .grace_period
        .map_or(Value::Null, |g| Value::String(g.0.to_string()));
    Action {
        at: now,
        request_id,
        caller: &caller,
        action: "key.regenerate",
        object_type: "key",
        object_id: &after.token,
        before: Some(before.to_json()),
        after: Some(recorded),
    }
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(minted(&raw, &after)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    key: String,
}

pub async fn block(
    admin: Admin,
    state: State<AppState>,
    request_id: Extension<RequestId>,
    ApiJson(request): ApiJson<BlockRequest>,
) -> Result<Json<Value>, ApiError> {
    set_blocked(admin, state, request_id, &request.key, true).await
}

pub async fn unblock(
    admin: Admin,
    state: State<AppState>,
    request_id: Extension<RequestId>,
    ApiJson(request): ApiJson<BlockRequest>,
) -> Result<Json<Value>, ApiError> {
    set_blocked(admin, state, request_id, &request.key, false).await
}

async fn set_blocked(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    key: &str,
    blocked: bool,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    let before = find(&mut *tx, key, true).await?;
    let after = set_blocked_row(&mut tx, &before, blocked, &caller, now, request_id).await?;
    tx.commit().await?;
    Ok(Json(after.to_json()))
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
    let mut values = KeyValues {
        user_id: Some(user_id.to_owned()),
        tier: Some(tier),
        ..KeyValues::default()
    };
    tier.apply_to(&mut values.limits, now);
    let row = insert_generated(tx, &raw, &values, caller, now, request_id).await?;
    Ok((raw, row))
}

/// A page of the live keys of a user or a team, oldest first, and how many there are in all: a
/// plain read, no locks (run it in a [`super::snapshot`] so the two agree).
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
