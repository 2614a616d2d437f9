//! A person's own keys, from the console's self-service page: create, regenerate and delete,
//! within the policy of the team the key is for (`max_keys_per_user` live keys,
//! `max_self_service_tier` at most; without a team, or where the team says nothing, the
//! defaults of [`crate::config::sign_in`]). The key is always the person's own: its user is the
//! caller, its team one of theirs, and no limit is typed in (the tier gives them). Each change
//! is an admin action by `user:<id>`, as the admin API would record it.

use serde_json::Value;

use super::request::{KeyRequest, KeyValues, new_raw_key};
use super::{RegenerateRequest, minted, rotate, store};
use crate::auth::{Admin, Caller};
use crate::config::sign_in::{DEFAULT_MAX_KEYS_PER_USER, DEFAULT_SELF_SERVICE_TIER};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::keys::Tier;
use crate::state::AppState;

/// What a person may ask for.
#[derive(Debug, Default, Clone)]
pub struct OwnKey {
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub tier: Option<Tier>,
    pub models: Vec<String>,
    /// How long the key lives (`None`: until deleted).
    pub duration: Option<String>,
    /// A short-lived key for `llmlite key`: the credential it is made for. Such keys do not
    /// count against the live keys a person may have (they end by themselves), and are marked
    /// in their metadata (`llmlite_cli_credential`).
    pub short_lived: Option<String>,
}

/// The order of tiers, for "at most".
fn rank(tier: Tier) -> u8 {
    match tier {
        Tier::Standard => 0,
        Tier::Admin => 1,
        Tier::Unlimited => 2,
    }
}

/// The person a self-service caller is, if they may change their own keys.
fn person(caller: &Caller) -> Result<&str, ApiError> {
    match caller {
        Caller::User { user_id, role, .. } if !role.ends_with("_viewer") => Ok(user_id),
        Caller::User { .. } => Err(ApiError::PermissionDenied(
            "a viewer role reads; it does not create or change keys".into(),
        )),
        _ => Err(ApiError::PermissionDenied(
            "self-service is for people signed in with their company account".into(),
        )),
    }
}

#[derive(sqlx::FromRow)]
struct Policy {
    max_keys_per_user: Option<i32>,
    max_self_service_tier: Option<String>,
}

/// What the person may have: (live keys, the largest tier) for keys of `team_id`.
pub async fn policy(
    executor: impl sqlx::PgExecutor<'_>,
    team_id: Option<&str>,
) -> Result<(i32, Tier), ApiError> {
    let found: Option<Policy> = match team_id {
        None => None,
        Some(team) => {
            sqlx::query_as(
                "SELECT max_keys_per_user, max_self_service_tier FROM litellm_teamtable
                 WHERE team_id = $1",
            )
            .bind(team)
            .persistent(false)
            .fetch_optional(executor)
            .await?
        }
    };
    let max_keys = found
        .as_ref()
        .and_then(|p| p.max_keys_per_user)
        .unwrap_or(DEFAULT_MAX_KEYS_PER_USER);
    let max_tier = found
        .and_then(|p| p.max_self_service_tier)
        .and_then(|t| Tier::parse(&t))
        .unwrap_or(DEFAULT_SELF_SERVICE_TIER);
    Ok((max_keys, max_tier))
}

/// Creates a key of the caller's own. The user row is locked first, so two creations at once
/// cannot both take the last free place.
pub async fn generate(
    state: &AppState,
    caller: &Caller,
    request_id: RequestId,
    own: &OwnKey,
) -> Result<Value, ApiError> {
    let user_id = person(caller)?;
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    let teams: Option<Vec<String>> =
        sqlx::query_scalar("SELECT teams FROM litellm_usertable WHERE user_id = $1 FOR UPDATE")
            .bind(user_id)
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await?;
    let teams = teams.ok_or_else(|| ApiError::PermissionDenied("no such user".into()))?;
    if let Some(team) = &own.team_id
        && !teams.contains(team)
    {
        return Err(ApiError::PermissionDenied(format!(
            "you are not a member of team `{team}`"
        )));
    }
    let (max_keys, max_tier) = policy(&mut *tx, own.team_id.as_deref()).await?;
    let default_tier = if rank(state.config.default_tier) <= rank(max_tier) {
        state.config.default_tier
    } else {
        max_tier
    };
    let tier = own.tier.unwrap_or(default_tier);
    if rank(tier) > rank(max_tier) {
        return Err(ApiError::PermissionDenied(format!(
            "tier `{}` is above what your team lets you give yourself (`{}`): ask an admin",
            tier.as_str(),
            max_tier.as_str()
        )));
    }
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM litellm_verificationtoken
         WHERE user_id = $1 AND team_id IS NOT DISTINCT FROM $2 AND is_active AND NOT blocked
           AND (expires IS NULL OR expires > $3) AND NOT metadata ? 'llmlite_cli_credential'",
    )
    .bind(user_id)
    .bind(own.team_id.as_deref())
    .bind(now)
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    if own.short_lived.is_none() && live >= i64::from(max_keys) {
        return Err(ApiError::PermissionDenied(format!(
            "you have {live} live keys for {}, the most your team allows: delete one first",
            own.team_id
                .as_deref()
                .map_or_else(|| "no team".to_owned(), |t| format!("team `{t}`"))
        )));
    }
    let mut body = serde_json::json!({
        "user_id": user_id,
        "tier": tier.as_str(),
    });
    if let Some(alias) = &own.key_alias {
        body["key_alias"] = Value::from(alias.as_str());
    }
    if let Some(team) = &own.team_id {
        body["team_id"] = Value::from(team.as_str());
    }
    if !own.models.is_empty() {
        body["models"] = Value::from(own.models.clone());
    }
    if let Some(duration) = &own.duration {
        body["duration"] = Value::from(duration.as_str());
    }
    if let Some(credential) = &own.short_lived {
        body["metadata"] = serde_json::json!({ "llmlite_cli_credential": credential });
    }
    let request: KeyRequest =
        serde_json::from_value(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let values = KeyValues::new_key(&request, tier, now, state.pii.entity_names())?;
    let raw = new_raw_key("key", None)?;
    store::ensure_owner(&mut tx, &values, now).await?;
    let row = store::insert_generated(&mut tx, &raw, &values, caller, now, request_id).await?;
    tx.commit().await?;
    Ok(minted(&raw, &row))
}

/// The caller's own live key `key` (raw or hash), or a refusal that says nothing about
/// anybody else's.
async fn own_key(state: &AppState, caller: &Caller, key: &str) -> Result<(), ApiError> {
    let user_id = person(caller)?;
    let row = store::find(state.db.pool().await?, key, false).await;
    match row {
        Ok(row) if row.user_id.as_deref() == Some(user_id) => Ok(()),
        Ok(_) | Err(ApiError::NotFound(_)) => Err(ApiError::PermissionDenied(
            "that is not one of your keys".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Regenerates one of the caller's own keys: a new secret, the old one ends at once.
pub async fn regenerate(
    state: &AppState,
    caller: &Caller,
    request_id: RequestId,
    key: &str,
) -> Result<Value, ApiError> {
    own_key(state, caller, key).await?;
    let request = RegenerateRequest {
        key: Some(key.to_owned()),
        ..RegenerateRequest::default()
    };
    let axum::Json(minted) = rotate(
        Admin(caller.clone()),
        axum::extract::State(state.clone()),
        axum::Extension(request_id),
        request,
    )
    .await?;
    Ok(minted)
}

/// Deletes one of the caller's own keys.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    request_id: RequestId,
    key: &str,
) -> Result<(), ApiError> {
    own_key(state, caller, key).await?;
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    let row = store::find(&mut *tx, key, true).await?;
    store::deactivate(&mut tx, &row, caller, now, request_id, "key.delete").await?;
    tx.commit().await?;
    Ok(())
}
