//! `/team/*`: teams carry their own budget, limits and model list, shared by their keys.
//! Deleting a team blocks its keys.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::{Postgres, Transaction};

use super::fields::{self, Features, FeaturesPatch, Limits, LimitsPatch, patch};
use super::keys::{self, Owner};
use super::{Action, Page, conflict_or};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::{ApiJson, ApiQuery, RequestId};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct TeamRequest {
    team_id: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    team_alias: Option<Option<String>>,
    blocked: Option<bool>,
    #[serde(default, deserialize_with = "patch")]
    pii_policy: Option<Option<Value>>,
    /// Self-service: the most live keys a member may give themselves (`null`: the default, 5).
    #[serde(default, deserialize_with = "patch")]
    max_keys_per_user: Option<Option<i32>>,
    /// Self-service: the largest tier a member may give themselves (`standard` or `admin`;
    /// `null`: `standard`).
    #[serde(default, deserialize_with = "patch")]
    max_self_service_tier: Option<Option<String>>,
    #[serde(flatten)]
    limits: LimitsPatch,
    #[serde(flatten)]
    features: FeaturesPatch,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamRow {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub spend: Decimal,
    #[sqlx(flatten)]
    pub limits: Limits,
    pub blocked: bool,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pii_policy: Option<Value>,
    #[sqlx(flatten)]
    pub features: Features,
    pub max_keys_per_user: Option<i32>,
    pub max_self_service_tier: Option<String>,
}

const COLUMNS: &str = "team_id, team_alias, spend, models, max_budget, soft_budget, \
    budget_duration, budget_reset_at, tpm_limit, rpm_limit, max_parallel_requests, metadata, \
    blocked, created_by, created_at, updated_at, pii_policy, allow_cache_1h, allowed_service_tiers, \
    guardrail, residency, max_keys_per_user, max_self_service_tier";

impl TeamRow {
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "team_id": self.team_id,
            "team_alias": self.team_alias,
            "spend": fields::money(self.spend),
            "blocked": self.blocked,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "pii_policy": self.pii_policy,
            "max_keys_per_user": self.max_keys_per_user,
            "max_self_service_tier": self.max_self_service_tier,
        });
        self.limits.write_json(&mut out);
        self.features.write_json(&mut out);
        out
    }

    fn apply(
        &mut self,
        request: &TeamRequest,
        now: DateTime<Utc>,
        pii_entities: &[String],
    ) -> Result<(), ApiError> {
        fields::no_unknown_fields(&request.unknown)?;
        if let Some(v) = &request.pii_policy {
            self.pii_policy = fields::pii_policy(v.as_ref(), pii_entities)?;
        }
        self.features.apply(&request.features)?;
        if let Some(v) = &request.team_alias {
            self.team_alias = v.clone();
        }
        if let Some(v) = request.blocked {
            self.blocked = v;
        }
        if let Some(v) = request.max_keys_per_user {
            if v.is_some_and(|n| !(0..=1000).contains(&n)) {
                return Err(ApiError::invalid_param(
                    "max_keys_per_user",
                    "`max_keys_per_user` must be 0 to 1000",
                ));
            }
            self.max_keys_per_user = v;
        }
        if let Some(v) = &request.max_self_service_tier {
            if v.as_deref()
                .is_some_and(|t| !matches!(t, "standard" | "admin"))
            {
                return Err(ApiError::invalid_param(
                    "max_self_service_tier",
                    "`max_self_service_tier` must be standard or admin (an unlimited key needs \
                     the master key)",
                ));
            }
            self.max_self_service_tier = v.clone();
        }
        self.limits.apply(&request.limits, now)?;
        fields::text("team_id", &self.team_id)?;
        fields::optional_text("team_alias", self.team_alias.as_deref())
    }
}

/// The team `team_id`, locked for update when `lock`.
async fn find(
    executor: impl sqlx::PgExecutor<'_>,
    team_id: &str,
    lock: bool,
) -> Result<TeamRow, ApiError> {
    sqlx::query_as::<_, TeamRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_teamtable WHERE team_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    )))
    .bind(team_id)
    .persistent(false)
    .fetch_optional(executor)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("team `{team_id}` not found")))
}

async fn save(
    tx: &mut Transaction<'_, Postgres>,
    row: &TeamRow,
    now: DateTime<Utc>,
    insert: bool,
) -> Result<TeamRow, ApiError> {
    let sql = if insert {
        format!(
            "INSERT INTO litellm_teamtable
                 (team_id, team_alias, models, max_budget, soft_budget, budget_duration,
                  budget_reset_at, tpm_limit, rpm_limit, max_parallel_requests, blocked, metadata,
                  created_by, created_at, updated_at, pii_policy, allow_cache_1h,
                  allowed_service_tiers, guardrail, residency, max_keys_per_user,
                  max_self_service_tier)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16,
                     $17, $18, $19, $20, $21)
             RETURNING {COLUMNS}"
        )
    } else {
        format!(
            "UPDATE litellm_teamtable SET
                 team_alias = $2, models = $3, max_budget = $4, soft_budget = $5,
                 budget_duration = $6, budget_reset_at = $7, tpm_limit = $8, rpm_limit = $9,
                 max_parallel_requests = $10, blocked = $11, metadata = $12,
                 created_by = COALESCE(created_by, $13), updated_at = $14, pii_policy = $15,
                 allow_cache_1h = $16, allowed_service_tiers = $17, guardrail = $18,
                 residency = $19, max_keys_per_user = $20, max_self_service_tier = $21
             WHERE team_id = $1
             RETURNING {COLUMNS}"
        )
    };
    sqlx::query_as::<_, TeamRow>(sqlx::AssertSqlSafe(sql))
        .bind(&row.team_id)
        .bind(&row.team_alias)
        .bind(&row.limits.models)
        .bind(row.limits.max_budget)
        .bind(row.limits.soft_budget)
        .bind(row.limits.budget_duration)
        .bind(row.limits.budget_reset_at)
        .bind(row.limits.tpm_limit)
        .bind(row.limits.rpm_limit)
        .bind(row.limits.max_parallel_requests)
        .bind(row.blocked)
        .bind(&row.limits.metadata)
        .bind(&row.created_by)
        .bind(now)
        .bind(&row.pii_policy)
        .bind(row.features.allow_cache_1h)
        .bind(&row.features.allowed_service_tiers)
        .bind(&row.features.guardrail)
        .bind(&row.features.residency)
        .bind(row.max_keys_per_user)
        .bind(&row.max_self_service_tier)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| conflict_or(e, || format!("team `{}` already exists", row.team_id)))
}

pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<TeamRequest>,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let mut row = TeamRow {
        team_id: request
            .team_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        team_alias: None,
        spend: Decimal::ZERO,
        limits: Limits::default(),
        blocked: false,
        created_by: Some(caller.actor()),
        created_at: now,
        updated_at: now,
        pii_policy: None,
        features: Default::default(),
        max_keys_per_user: None,
        max_self_service_tier: None,
    };
    row.apply(&request, now, state.pii.entity_names())?;
    let mut tx = state.db.pool().await?.begin().await?;
    let saved = save(&mut tx, &row, now, true).await?;
    Action {
        at: now,
        request_id,
        caller: &caller,
        action: "team.new",
        object_type: "team",
        object_id: &saved.team_id,
        before: None,
        after: Some(saved.to_json()),
    }
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Json(saved.to_json()))
}

pub async fn update(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<TeamRequest>,
) -> Result<Json<Value>, ApiError> {
    let team_id = request
        .team_id
        .clone()
        .ok_or_else(|| ApiError::invalid_param("team_id", "`team_id` names the team to update"))?;
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    // Only the team row: no key or user row is touched, so no lock order to keep.
    let before = find(&mut *tx, &team_id, true).await?;
    let mut row = before.clone();
    row.apply(&request, now, state.pii.entity_names())?;
    let after = save(&mut tx, &row, now, false).await?;
    Action {
        at: now,
        request_id,
        caller: &caller,
        action: "team.update",
        object_type: "team",
        object_id: &team_id,
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
    team_id: String,
    /// The page of the team's keys (`page`, and `size` or `page_size`).
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
    let team = find(&mut *tx, &query.team_id, false).await?;
    let mut out = json!({"team_id": team.team_id, "team_info": team.to_json()});
    keys::add_key_page(&mut tx, Owner::Team, &query.team_id, page, &mut out).await?;
    tx.commit().await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
    page_size: Option<i64>,
    size: Option<i64>,
}

/// `GET /team/list`: teams oldest first, a page at a time, in the shape of LiteLLM's paged
/// team list (`teams`, `total`, `page`, `page_size`, `total_pages`).
pub async fn list(
    Admin(_): Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = Page::either(query.page, query.size, query.page_size)?;
    // The count and the page from one snapshot, so they agree.
    let mut tx = super::snapshot(&state).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_teamtable")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
    let rows = sqlx::query_as::<_, TeamRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_teamtable ORDER BY created_at, team_id LIMIT $1 OFFSET $2"
    )))
    .bind(page.size)
    .bind(page.offset())
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({
        "teams": rows.iter().map(TeamRow::to_json).collect::<Vec<_>>(),
        "total": total,
        "page": page.page,
        "page_size": page.size,
        "total_pages": page.total_pages(total),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    team_ids: Vec<String>,
}

/// Deletes teams. Their keys are blocked (and keep their rows); members lose the membership.
pub async fn delete(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(request): ApiJson<DeleteRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.team_ids.is_empty() || request.team_ids.len() > 100 {
        return Err(ApiError::invalid_param(
            "team_ids",
            "give 1 to 100 `team_ids`",
        ));
    }
    let now = state.clock.now();
    let mut tx = state.db.pool().await?.begin().await?;
    // Admission's order: the teams' keys, then their members, then the teams (each set in one
    // ordered statement).
    let keys = keys::lock_keys(&mut tx, Owner::Team, &request.team_ids).await?;
    sqlx::query("SELECT 1 FROM litellm_usertable WHERE teams && $1 ORDER BY user_id FOR UPDATE")
        .bind(&request.team_ids)
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    let teams = sqlx::query_as::<_, TeamRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM litellm_teamtable WHERE team_id = ANY($1)
         ORDER BY team_id FOR UPDATE"
    )))
    .bind(&request.team_ids)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    if let Some(missing) = request
        .team_ids
        .iter()
        .find(|id| !teams.iter().any(|t| &t.team_id == *id))
    {
        return Err(ApiError::NotFound(format!("team `{missing}` not found")));
    }
    for before in &teams {
        for key in keys
            .iter()
            .filter(|k| k.is_active && k.team_id.as_ref() == Some(&before.team_id))
        {
            keys::set_blocked_row(&mut tx, key, true, &caller, now, request_id).await?;
        }
        sqlx::query(
            "UPDATE litellm_usertable SET teams = array_remove(teams, $1) WHERE $1 = ANY(teams)",
        )
        .bind(&before.team_id)
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM litellm_teamtable WHERE team_id = $1")
            .bind(&before.team_id)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        Action {
            at: now,
            request_id,
            caller: &caller,
            action: "team.delete",
            object_type: "team",
            object_id: &before.team_id,
            before: Some(before.to_json()),
            after: None,
        }
        .record(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Json(json!({ "deleted_teams": request.team_ids })))
}
