//! The `spend-rollup` function (and `llmlite rollup`): daily rollups of the spend rows, budget
//! resets, key expiries and ended grace periods, the audit outbox, cost and key-rotation
//! reports, and retention.
//!
//! Each spend row is counted exactly once: the rollup marks the rows it aggregates
//! (`rolled_at`) in the same statement that adds them to the daily totals, so a rerun finds
//! nothing new and two runs at once cannot both take a row (the second waits on the row locks,
//! then skips). A transaction-scoped advisory lock keeps concurrent runs from contending.
//! Retention only ever deletes rows already rolled up, in bounded batches.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::clients::audit::{AuditError, Sink};
use crate::error::ApiError;
use crate::reports::{ReportError, csv_field, put_report};
use crate::state::AppState;

/// Rows deleted per retention batch: short transactions, no long locks.
const RETENTION_BATCH: i64 = 5_000;
/// Spend rows per rollup statement.
const ROLLUP_BATCH: i64 = 50_000;

/// Why a run stopped: the database, the audit trail or a report failed. The next run picks up
/// where it left off.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    /// No database connection (or no IAM token for one).
    #[error(transparent)]
    Unavailable(#[from] ApiError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The summary could not be turned into the invocation's result.
    #[error(transparent)]
    Summary(#[from] serde_json::Error),
}

/// The error as text, for callers whose own error is still text.
impl From<RollupError> for String {
    fn from(e: RollupError) -> String {
        e.to_string()
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub rows_rolled: u64,
    pub days_reported: Vec<NaiveDate>,
    pub budgets_reset: i64,
    pub keys_expired: u64,
    pub grace_periods_ended: u64,
    pub records_redriven: u64,
    /// Request audit records shipped from the queue, and the objects they went in.
    pub audit_shipped: crate::clients::audit::Shipped,
    /// Settlements the database had refused, replayed from the outbox.
    pub settlements_replayed: u64,
    /// Leases that expired unsettled, charged at their prompt estimate as `lost`.
    pub leases_charged_lost: i64,
    pub spend_rows_deleted: u64,
    /// Live keys whose secret is at least `LLMLITE_KEY_MAX_AGE_DAYS` old (the rotation report).
    pub keys_due_for_rotation: u64,
    pub duration_ms: u64,
}

/// Runs every job once, at `now`.
pub async fn run(
    state: &AppState,
    reports: &Sink,
    retention_days: i64,
    now: DateTime<Utc>,
) -> Result<Summary, RollupError> {
    let started = Instant::now();
    let pool = state.db.pool().await?;
    // 0. Settlements the database refused (any instance's outbox), then leases whose instance
    //    died before it settled: first, so that this run rolls them up with the rest. An
    //    outbox that cannot be read (S3 away) stops nothing else, but the leases wait too: one
    //    of them may have its real settlement in that outbox. The next run tries again.
    let (settlements_replayed, leases_charged_lost) = match state.settlements.replay_outbox().await
    {
        Ok(replay) => (
            replay.settled,
            sqlx::query_scalar("SELECT llmlite_charge_lost_leases($1)")
                .bind(now)
                .persistent(false)
                .fetch_one(pool)
                .await?,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "settlement outbox not read: replay and lost leases wait");
            (0, 0)
        }
    };
    let mut summary = Summary {
        settlements_replayed,
        leases_charged_lost,
        ..Summary::default()
    };

    // 1. Daily rollups, in batches, each in one transaction.
    let mut days: BTreeSet<NaiveDate> = BTreeSet::new();
    loop {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7326001)")
            .persistent(false)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            // Another run is rolling up right now; it will count these rows.
            break;
        }
        let rolled: Vec<(i64, NaiveDate)> = sqlx::query_as(
            "WITH batch AS (
                 UPDATE litellm_spend SET rolled_at = $1
                 WHERE request_id IN (
                     SELECT request_id FROM litellm_spend
                     WHERE rolled_at IS NULL ORDER BY start_time LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING *
             ), totals AS (
                 INSERT INTO litellm_dailyuserspend AS d
                     (date, user_id, team_id, api_key, model, custom_llm_provider, endpoint,
                      prompt_tokens, completion_tokens, cache_read_input_tokens,
                      cache_creation_input_tokens, cache_creation_1h_input_tokens, spend,
                      api_requests, successful_requests, failed_requests, updated_at)
                 SELECT (start_time AT TIME ZONE 'UTC')::date, user_id, team_id, api_key, model,
                        custom_llm_provider,
                        CASE call_type WHEN 'anthropic_messages' THEN '/v1/messages'
                                       WHEN 'aembedding' THEN '/v1/embeddings'
                                       WHEN 'aresponses' THEN '/v1/responses'
                                       ELSE '/v1/chat/completions' END,
                        sum(prompt_tokens), sum(completion_tokens), sum(cache_read_input_tokens),
                        sum(cache_creation_input_tokens), sum(cache_creation_1h_input_tokens),
                        sum(spend), count(*),
                        count(*) FILTER (WHERE status = 'success'),
                        count(*) FILTER (WHERE status <> 'success'), $1
                 FROM batch
                 GROUP BY 1, 2, 3, 4, 5, 6, 7
                 ON CONFLICT (date, user_id, team_id, api_key, model, custom_llm_provider, endpoint)
                 DO UPDATE SET
                     prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
                     completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
                     cache_read_input_tokens = d.cache_read_input_tokens + EXCLUDED.cache_read_input_tokens,
                     cache_creation_input_tokens = d.cache_creation_input_tokens + EXCLUDED.cache_creation_input_tokens,
                     cache_creation_1h_input_tokens = d.cache_creation_1h_input_tokens + EXCLUDED.cache_creation_1h_input_tokens,
                     spend = d.spend + EXCLUDED.spend,
                     api_requests = d.api_requests + EXCLUDED.api_requests,
                     successful_requests = d.successful_requests + EXCLUDED.successful_requests,
                     failed_requests = d.failed_requests + EXCLUDED.failed_requests,
                     updated_at = EXCLUDED.updated_at
                 RETURNING date
             )
             SELECT (SELECT count(*) FROM batch), date FROM totals",
        )
        .bind(now)
        .bind(ROLLUP_BATCH)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        ?;
        tx.commit().await?;
        let count = rolled.first().map_or(0, |(n, _)| *n);
        summary.rows_rolled += u64::try_from(count).unwrap_or(0);
        days.extend(rolled.into_iter().map(|(_, day)| day));
        if count < ROLLUP_BATCH {
            break;
        }
    }

    // 2. Budget periods that have ended (the same function the hot path uses lazily).
    summary.budgets_reset = sqlx::query_scalar("SELECT llmlite_reset_budgets($1)")
        .bind(now)
        .persistent(false)
        .fetch_one(pool)
        .await?;

    // 3. Expired keys and ended grace periods, each recorded for the audit trail.
    let expired: Vec<(String,)> = sqlx::query_as(
        "WITH expired AS (
             UPDATE litellm_verificationtoken SET is_active = false, updated_by = 'rollup', updated_at = $1
             WHERE is_active AND expires IS NOT NULL AND expires <= $1
             RETURNING token, key_alias, expires
         ), recorded AS (
             INSERT INTO llmlite_admin_action (at, request_id, actor, action, object_type, object_id, before, after)
             SELECT $1, 'rollup', 'rollup', 'key.expire', 'key', token,
                    jsonb_build_object('is_active', true, 'key_alias', key_alias, 'expires', expires),
                    jsonb_build_object('is_active', false)
             FROM expired
         )
         SELECT token FROM expired",
    )
    .bind(now)
    .persistent(false)
    .fetch_all(pool)
    .await
    ?;
    summary.keys_expired = expired.len() as u64;
    let ended: Vec<(String,)> = sqlx::query_as(
        "WITH ended AS (
             DELETE FROM llmlite_deprecated_token WHERE revoke_at <= $1
             RETURNING token, active_token, revoke_at
         ), recorded AS (
             INSERT INTO llmlite_admin_action (at, request_id, actor, action, object_type, object_id, before, after)
             SELECT $1, 'rollup', 'rollup', 'key.grace_end', 'key', active_token,
                    jsonb_build_object('previous_token', token, 'revoke_at', revoke_at), NULL
             FROM ended
         )
         SELECT token FROM ended",
    )
    .bind(now)
    .persistent(false)
    .fetch_all(pool)
    .await
    ?;
    summary.grace_periods_ended = ended.len() as u64;

    // 4. The audit trail: request records queued (every one, whatever the batch's size), admin
    //    actions (these included) and the outbox.
    summary.audit_shipped = state.audit.ship_requests(true).await?;
    summary.records_redriven += state.audit.ship_admin_actions().await?;
    loop {
        let round = state.audit.redrive(500).await?;
        summary.records_redriven += round.shipped;
        if round.shipped + round.failed < 500 {
            break;
        }
    }

    // 5. Reports: every day rolled up in this run, and today so far.
    days.insert(now.date_naive());
    for day in &days {
        daily_report(state, reports, *day).await?;
    }
    budget_report(state, reports, now).await?;
    summary.keys_due_for_rotation =
        crate::rotation::report(state, reports, now, state.config.key_max_age_days).await?;
    summary.days_reported = days.into_iter().collect();

    // 6. Retention: rolled-up rows only, in bounded batches.
    loop {
        let deleted = sqlx::query(
            "DELETE FROM litellm_spend WHERE request_id IN (
                 SELECT request_id FROM litellm_spend
                 WHERE rolled_at IS NOT NULL AND start_time < $1 - make_interval(days => $2::int)
                 LIMIT $3)",
        )
        .bind(now)
        .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
        .bind(RETENTION_BATCH)
        .persistent(false)
        .execute(pool)
        .await?
        .rows_affected();
        summary.spend_rows_deleted += deleted;
        if deleted < RETENTION_BATCH as u64 {
            break;
        }
    }

    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if state.emf {
        let line = json!({
            "_aws": {"Timestamp": now.timestamp_millis(), "CloudWatchMetrics": [{
                "Namespace": "LLMLite", "Dimensions": [[]],
                "Metrics": [
                    {"Name": "RollupRows", "Unit": "Count"}, {"Name": "BudgetsReset", "Unit": "Count"},
                    {"Name": "KeysExpired", "Unit": "Count"}, {"Name": "RecordsRedriven", "Unit": "Count"},
                    {"Name": "RollupDuration", "Unit": "Milliseconds"}]}]},
            "RollupRows": summary.rows_rolled, "BudgetsReset": summary.budgets_reset,
            "KeysExpired": summary.keys_expired, "RecordsRedriven": summary.records_redriven,
            "RollupDuration": summary.duration_ms,
        });
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    Ok(summary)
}

#[derive(sqlx::FromRow)]
struct DailyRow {
    user_id: Option<String>,
    team_id: Option<String>,
    key_alias: Option<String>,
    model: String,
    call_type: String,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    spend: Decimal,
}

/// `reports/daily/YYYY-MM-DD.json` and `.csv`: requests, tokens and spend per user, team,
/// key alias, model and call type (the daily table's `endpoint`).
async fn daily_report(state: &AppState, reports: &Sink, day: NaiveDate) -> Result<(), ReportError> {
    let rows: Vec<DailyRow> = sqlx::query_as(
        "SELECT d.user_id, d.team_id, k.key_alias, d.model,
                CASE d.endpoint WHEN '/v1/messages' THEN 'anthropic_messages'
                                WHEN '/v1/embeddings' THEN 'aembedding'
                                WHEN '/v1/responses' THEN 'aresponses'
                                ELSE 'acompletion' END AS call_type,
                sum(d.api_requests)::bigint AS requests,
                sum(d.prompt_tokens)::bigint AS prompt_tokens,
                sum(d.completion_tokens)::bigint AS completion_tokens, sum(d.spend) AS spend
         FROM litellm_dailyuserspend d
         LEFT JOIN litellm_verificationtoken k ON k.token = d.api_key
         WHERE d.date = $1
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    )
    .bind(day)
    .persistent(false)
    .fetch_all(state.db.pool().await?)
    .await?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"user_id": r.user_id, "team_id": r.team_id, "key_alias": r.key_alias,
                   "model": r.model, "call_type": r.call_type, "requests": r.requests,
                   "prompt_tokens": r.prompt_tokens,
                   "completion_tokens": r.completion_tokens, "spend": r.spend.normalize().to_string()})
        })
        .collect();
    let report = json!({"date": day, "rows": json_rows});
    let mut csv = String::from(
        "date,user_id,team_id,key_alias,model,call_type,requests,prompt_tokens,completion_tokens,spend\n",
    );
    for r in &rows {
        csv.push_str(&format!(
            "{day},{},{},{},{},{},{},{},{},{}\n",
            csv_field(r.user_id.as_deref().unwrap_or("")),
            csv_field(r.team_id.as_deref().unwrap_or("")),
            csv_field(r.key_alias.as_deref().unwrap_or("")),
            csv_field(&r.model),
            r.call_type,
            r.requests,
            r.prompt_tokens,
            r.completion_tokens,
            r.spend.normalize()
        ));
    }
    Ok(put_report(reports, &format!("reports/daily/{day}"), &report, &csv).await?)
}

/// (type, id, alias, spend, budget, next reset) of something near its budget.
type BudgetRow = (
    String,
    String,
    Option<String>,
    Decimal,
    Decimal,
    Option<DateTime<Utc>>,
);

/// `reports/budget/YYYY-MM-DD.json`: keys, users and teams above 80% of their budget.
async fn budget_report(
    state: &AppState,
    reports: &Sink,
    now: DateTime<Utc>,
) -> Result<(), ReportError> {
    let rows: Vec<BudgetRow> = sqlx::query_as(
        "SELECT 'key', token, key_alias, spend, max_budget, budget_reset_at FROM litellm_verificationtoken
          WHERE is_active AND max_budget > 0 AND spend >= 0.8 * max_budget
         UNION ALL
         SELECT 'user', user_id, user_alias, spend, max_budget, budget_reset_at FROM litellm_usertable
          WHERE max_budget > 0 AND spend >= 0.8 * max_budget
         UNION ALL
         SELECT 'team', team_id, team_alias, spend, max_budget, budget_reset_at FROM litellm_teamtable
          WHERE max_budget > 0 AND spend >= 0.8 * max_budget
         ORDER BY 1, 2",
    )
    .persistent(false)
    .fetch_all(state.db.pool().await?)
    .await
    ?;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|(kind, id, alias, spend, budget, reset)| {
            json!({"type": kind, "id": id, "alias": alias, "spend": spend.normalize().to_string(),
                   "max_budget": budget.normalize().to_string(), "budget_reset_at": reset})
        })
        .collect();
    let report = json!({"date": now.date_naive(), "generated_at": now, "over_80_percent": entries});
    Ok(reports
        .write(
            &format!("reports/budget/{}.json", now.date_naive()),
            report.to_string().as_bytes(),
            "application/json",
        )
        .await?)
}

/// The spend-rollup function's entry point: its daily schedule event, or the CloudFormation
/// custom resource that migrates the database on deploy ([`crate::deploy`]). At this edge the
/// typed errors become the text Lambda reports as the failed invocation's message.
pub async fn handle_event(
    state: &AppState,
    reports: &Sink,
    retention_days: i64,
    event: Value,
) -> Result<Value, String> {
    if crate::deploy::is_custom_resource_request(&event) {
        return crate::deploy::handle(state, event)
            .await
            .map_err(|e| e.to_string());
    }
    if event.get("llmlite_task").and_then(Value::as_str) == Some(SHIP_AUDIT) {
        // The frequent schedule's event: only the audit queue, once it is due.
        let shipped = state
            .audit
            .ship_requests(false)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(?shipped, "audit queue shipped");
        return serde_json::to_value(shipped).map_err(|e| e.to_string());
    }
    let event = serde_json::from_value(event)
        .map_err(|e| format!("neither a schedule event nor a custom-resource request: {e}"))?;
    handle(state, reports, retention_days, event)
        .await
        .map_err(|e| e.to_string())
}

/// The `llmlite_task` of the schedule that ships the audit queue (template.yaml, every 5 minutes).
pub const SHIP_AUDIT: &str = "ship-audit";

/// The scheduled event's handler: one run, its summary as the result.
pub async fn handle(
    state: &AppState,
    reports: &Sink,
    retention_days: i64,
    event: aws_lambda_events::eventbridge::EventBridgeEvent<Value>,
) -> Result<Value, RollupError> {
    let summary = run(state, reports, retention_days, state.clock.now()).await?;
    tracing::info!(
        event_id = event.id.as_deref().unwrap_or(""),
        ?summary,
        "rollup done"
    );
    Ok(serde_json::to_value(&summary)?)
}

/// The reports sink from the environment: `LLMLITE_REPORTS_BUCKET`, else the directory
/// `LLMLITE_REPORTS_DIR` (default `./llmlite-reports`).
pub fn reports_sink(state: &AppState, env: &impl crate::config::EnvSource) -> Sink {
    match env
        .var("LLMLITE_REPORTS_BUCKET")
        .filter(|b| !b.trim().is_empty())
    {
        Some(bucket) => Sink::S3 {
            client: state.s3.clone(),
            bucket,
            kms_key_id: state.config.audit_kms_key_id.clone(),
        },
        None => Sink::Directory(
            env.var("LLMLITE_REPORTS_DIR")
                .filter(|d| !d.trim().is_empty())
                .map_or_else(
                    || std::path::PathBuf::from("llmlite-reports"),
                    std::path::PathBuf::from,
                ),
        ),
    }
}

/// `LLMLITE_SPEND_RETENTION_DAYS`, default 90.
pub fn retention_days(env: &impl crate::config::EnvSource) -> i64 {
    env.var("LLMLITE_SPEND_RETENTION_DAYS")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|d| *d >= 1)
        .unwrap_or(90)
}
