//! `/key/*`: generate, update, delete, info, list, regenerate (with a grace period), block and
//! unblock virtual keys. Keys are stored by hash only.
//!
//! The handlers are here; what a request body resolves to is in [`request`], the key rows and
//! their SQL in [`store`], and the tiers themselves in [`crate::keys::Tier`].

pub mod own;
mod request;
pub mod store;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::fields::Duration;
use super::{Action, Page};
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::http::{ApiJson, ApiQuery, RequestId};
/// Kept at its old path: the tiers moved down to [`crate::keys`], below configuration.
pub use crate::keys::Tier;
use crate::keys::{self, KeyHash};
use crate::state::AppState;
pub use request::{KeyRequest, unlimited_needs_master};
use request::{KeyValues, hash_of, new_raw_key};
pub use store::{
    KeyRow, Owner, add_key_page, deactivate, generate_for_user, lock_keys, set_blocked_row,
};

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
    let values = KeyValues::new_key(
        &request,
        state.config.default_tier,
        now,
        state.pii.entity_names(),
    )?;
    unlimited_needs_master(&caller, "tier", request.tier, Some(&request.limits))?;
    let raw = new_raw_key("key", request.key.as_deref())?;
    let mut tx = state.db.pool().await?.begin().await?;
    store::ensure_owner(&mut tx, &values, now).await?;
    let row = store::insert_generated(&mut tx, &raw, &values, &caller, now, request_id).await?;
    tx.commit().await?;
    Ok(Json(minted(&raw, &row)))
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
    let before = store::find(&mut *tx, &key, true).await?;
    let mut values = before.values();
    values.apply(&request, request.tier, now, state.pii.entity_names())?;
    store::ensure_owner(&mut tx, &values, now).await?;
    let after = store::write(
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
    // An erasure may name a key deleted earlier (its row was kept for the record).
    let rows = store::lock_named(&mut tx, &tokens, &request.key_aliases, request.erase).await?;
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
        (None, Caller::Master | Caller::User { .. }) => {
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
    let row = store::find(state.db.pool().await?, target.as_str(), false).await?;
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
    let filter = store::ListFilter {
        user_id: query.user_id.as_deref(),
        team_id: query.team_id.as_deref(),
        key_alias: query.key_alias.as_deref(),
        created_before,
    };
    // The count and the page from one snapshot, so they agree.
    let mut tx = super::snapshot(&state).await?;
    let (rows, total) = store::list_page(&mut tx, &filter, page).await?;
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
    let before = store::find(&mut *tx, &key, true).await?;
    let after = store::retoken(
        &mut tx,
        &before,
        &new_hash,
        &keys::short_name(&raw),
        &caller,
        now,
    )
    .await?;
    if let Some(grace) = request.grace_period {
        store::keep_until(&mut tx, &before, &new_hash, grace.0.after(now), now).await?;
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
    let before = store::find(&mut *tx, key, true).await?;
    let after = set_blocked_row(&mut tx, &before, blocked, &caller, now, request_id).await?;
    tx.commit().await?;
    Ok(Json(after.to_json()))
}
