//! Spend queries: `GET /spend/logs` (one row per request, a page at a time) and
//! `GET /global/spend/report` (totals per day and team, user, key or model, over a required
//! range of at most [`MAX_REPORT_DAYS`] days).
//!
//! The report reads the daily rollups plus the spend rows not rolled up yet, in one statement:
//! one snapshot, in which a row is either marked rolled and counted in a rollup (the rollup
//! does both in one statement) or unmarked and counted raw, never both and never neither. So it
//! equals the raw rows to the last decimal, costs a few rows a day and group however many
//! requests there were, and still reports days whose raw rows retention has deleted.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Page;
use super::fields;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::ApiQuery;
use crate::keys::KeyHash;
use crate::state::AppState;

/// The longest range a report covers, in days (both ends counted).
pub const MAX_REPORT_DAYS: i64 = 366;

/// A time window; either end may be open.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `[start, end)` from `start_date` and `end_date` (`YYYY-MM-DD`, end inclusive).
fn window(start: Option<&str>, end: Option<&str>) -> Result<Window, ApiError> {
    let day = |param: &str, text: &str| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .ok_or_else(|| ApiError::invalid_param(param, format!("`{param}` must be YYYY-MM-DD")))
    };
    let start = start.map(|s| day("start_date", s)).transpose()?;
    let end = end
        .map(|e| day("end_date", e).map(|d| d + chrono::Duration::days(1)))
        .transpose()?;
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(ApiError::invalid_param(
            "end_date",
            "`end_date` is before `start_date`",
        ));
    }
    Ok((start, end))
}

/// The first and last day of a report: both required, `YYYY-MM-DD`, in order, at most
/// [`MAX_REPORT_DAYS`] days.
pub fn report_range(
    start: Option<&str>,
    end: Option<&str>,
) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let day = |param: &str, text: Option<&str>| {
        let text = text.ok_or_else(|| {
            ApiError::invalid_param(
                param,
                format!("`{param}` (YYYY-MM-DD) is required: a report covers a date range"),
            )
        })?;
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid_param(param, format!("`{param}` must be YYYY-MM-DD")))
    };
    let (first, last) = (day("start_date", start)?, day("end_date", end)?);
    if last < first {
        return Err(ApiError::invalid_param(
            "end_date",
            "`end_date` is before `start_date`",
        ));
    }
    if (last - first).num_days() + 1 > MAX_REPORT_DAYS {
        return Err(ApiError::invalid_param(
            "end_date",
            format!(
                "a report covers at most {MAX_REPORT_DAYS} days from `start_date` to `end_date`"
            ),
        ));
    }
    Ok((first, last))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    api_key: Option<String>,
    user_id: Option<String>,
    request_id: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    page: Option<i64>,
    page_size: Option<i64>,
    size: Option<i64>,
}

/// `X-Total-Count`: how many rows match a list that is answered as a bare array (LiteLLM's
/// shape), across all its pages.
pub const TOTAL_COUNT: &str = "x-total-count";
/// `X-Total-Pages`: how many pages those rows fill at the requested size.
pub const TOTAL_PAGES: &str = "x-total-pages";

#[derive(sqlx::FromRow)]
struct SpendRow {
    request_id: String,
    call_type: String,
    api_key: String,
    presented_key_hash: Option<String>,
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    end_user: Option<String>,
    model: String,
    model_id: Option<String>,
    custom_llm_provider: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    cache_read_input_tokens: i64,
    cache_creation_input_tokens: i64,
    cache_creation_1h_input_tokens: i64,
    service_tier: Option<String>,
    total_tokens: i64,
    spend: Decimal,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    request_duration_ms: i64,
    status: String,
    error_type: Option<String>,
    metadata: Value,
}

/// Rows in LiteLLM's `SpendLogs` shape, newest first, a page at a time: the body is LiteLLM's
/// bare array, and the headers [`TOTAL_COUNT`] and [`TOTAL_PAGES`] say how many there are.
pub async fn logs(
    Admin(_): Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<([(&'static str, String); 2], Json<Value>), ApiError> {
    let page = Page::either(query.page, query.size, query.page_size)?;
    let (start, end) = window(query.start_date.as_deref(), query.end_date.as_deref())?;
    let api_key = query
        .api_key
        .as_deref()
        .map(|k| {
            KeyHash::from_key_or_hash(k).ok_or_else(|| {
                ApiError::invalid_param("api_key", "`api_key` must be a key or its hash")
            })
        })
        .transpose()?;
    let filter = "($1::text IS NULL OR api_key = $1)
           AND ($2::text IS NULL OR user_id = $2)
           AND ($3::text IS NULL OR request_id = $3)
           AND ($4::timestamptz IS NULL OR start_time >= $4)
           AND ($5::timestamptz IS NULL OR start_time < $5)";
    let api_key = api_key.as_ref().map(KeyHash::as_str);
    // The count and the page from one snapshot, so they agree.
    let mut tx = super::snapshot(&state).await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM litellm_spend WHERE {filter}"
    )))
    .bind(api_key)
    .bind(&query.user_id)
    .bind(&query.request_id)
    .bind(start)
    .bind(end)
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    let rows: Vec<SpendRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT request_id, call_type, api_key, presented_key_hash, key_alias, user_id, team_id, end_user, model,
                model_id, custom_llm_provider, prompt_tokens, completion_tokens,
                cache_read_input_tokens, cache_creation_input_tokens,
                cache_creation_1h_input_tokens, service_tier, total_tokens, spend,
                start_time, end_time, request_duration_ms, status, error_type, metadata
         FROM litellm_spend
         WHERE {filter}
         ORDER BY start_time DESC, request_id
         LIMIT $6 OFFSET $7"
    )))
    .bind(api_key)
    .bind(&query.user_id)
    .bind(&query.request_id)
    .bind(start)
    .bind(end)
    .bind(page.size)
    .bind(page.offset())
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "request_id": r.request_id,
                "call_type": r.call_type,
                "api_key": r.api_key,
                "presented_key_hash": r.presented_key_hash,
                "key_alias": r.key_alias,
                "user": r.user_id,
                "team_id": r.team_id,
                "end_user": r.end_user,
                "model": r.model,
                "model_id": r.model_id,
                "custom_llm_provider": r.custom_llm_provider,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cache_read_input_tokens": r.cache_read_input_tokens,
                "cache_creation_input_tokens": r.cache_creation_input_tokens,
                "cache_creation_1h_input_tokens": r.cache_creation_1h_input_tokens,
                "service_tier": r.service_tier,
                "total_tokens": r.total_tokens,
                "spend": fields::money(r.spend),
                "startTime": r.start_time,
                "endTime": r.end_time,
                "request_duration_ms": r.request_duration_ms,
                "status": r.status,
                "error_type": r.error_type,
                "metadata": r.metadata,
            })
        })
        .collect();
    Ok((
        [
            (TOTAL_COUNT, total.to_string()),
            (TOTAL_PAGES, page.total_pages(total).to_string()),
        ],
        Json(Value::Array(rows)),
    ))
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    #[default]
    Team,
    User,
    Key,
    Model,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            GroupBy::Team => "team_id",
            GroupBy::User => "user_id",
            GroupBy::Key => "api_key",
            GroupBy::Model => "model",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    #[serde(default)]
    group_by: GroupBy,
}

#[derive(sqlx::FromRow)]
struct ReportRow {
    day: NaiveDate,
    group_id: Option<String>,
    spend: Decimal,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    api_requests: i64,
    successful_requests: i64,
    failed_requests: i64,
}

/// Totals per UTC day and group, oldest day first: the daily rollups plus the rows not rolled
/// up yet (see the module comment). Failed requests are those that did not succeed (`failure`
/// and `lost`), as the rollup counts them; total tokens are prompt plus completion tokens.
pub async fn report(
    Admin(_): Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let (first, last) = report_range(query.start_date.as_deref(), query.end_date.as_deref())?;
    let column = query.group_by.column();
    // `column` is one of four fixed names, never input. The raw rows' window is bound as UTC
    // instants (not `$1::date`, which the session's time zone would shift).
    let sql = format!(
        "WITH days AS (
             SELECT date AS day, {column} AS group_id, spend, prompt_tokens, completion_tokens,
                    api_requests, successful_requests, failed_requests
             FROM litellm_dailyuserspend
             WHERE date BETWEEN $1 AND $2
             UNION ALL
             SELECT (start_time AT TIME ZONE 'UTC')::date, {column}, spend, prompt_tokens,
                    completion_tokens, 1, (status = 'success')::int, (status <> 'success')::int
             FROM litellm_spend
             WHERE rolled_at IS NULL AND start_time >= $3 AND start_time < $4
         )
         SELECT day, group_id, sum(spend) AS spend, sum(prompt_tokens)::bigint AS prompt_tokens,
                sum(completion_tokens)::bigint AS completion_tokens,
                sum(prompt_tokens + completion_tokens)::bigint AS total_tokens,
                sum(api_requests)::bigint AS api_requests,
                sum(successful_requests)::bigint AS successful_requests,
                sum(failed_requests)::bigint AS failed_requests
         FROM days
         GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let from = first.and_time(chrono::NaiveTime::MIN).and_utc();
    let to = (last + chrono::Duration::days(1))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let rows: Vec<ReportRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(first)
        .bind(last)
        .bind(from)
        .bind(to)
        .persistent(false)
        .fetch_all(state.db.pool().await?)
        .await?;
    let group_key = match query.group_by {
        GroupBy::Team => "team_id",
        GroupBy::User => "user_id",
        GroupBy::Key => "api_key",
        GroupBy::Model => "model",
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut row = json!({
                "date": r.day,
                "spend": fields::money(r.spend),
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": r.total_tokens,
                "api_requests": r.api_requests,
                "successful_requests": r.successful_requests,
                "failed_requests": r.failed_requests,
            });
            row[group_key] = r.group_id.map_or(Value::Null, Value::String);
            row
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}
