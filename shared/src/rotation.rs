//! Key-age hygiene: the rollup's report of the live keys due for rotation (the LLD's 90 days),
//! with who owns them, at `reports/rotation/YYYY-MM-DD.json` and `.csv` beside the daily spend
//! report.
//!
//! A key's age is measured from its newest secret: its last `/key/regenerate`
//! (`last_rotation_at`), else its creation. Rotating a key takes it off the list.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::clients::audit::Sink;
use crate::reports::{ReportError, csv_field, put_report};
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct DueKey {
    token: String,
    key_name: String,
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    created_at: DateTime<Utc>,
    last_rotation_at: Option<DateTime<Utc>>,
    age_days: i64,
}

/// Writes the rotation report for `now`: every live key whose secret is at least
/// `max_age_days` old, oldest first. Returns how many keys it lists.
pub async fn report(
    state: &AppState,
    reports: &Sink,
    now: DateTime<Utc>,
    max_age_days: u32,
) -> Result<u64, ReportError> {
    let keys: Vec<DueKey> = sqlx::query_as(
        "SELECT token, key_name, key_alias, user_id, team_id, created_at, last_rotation_at,
                floor(EXTRACT(EPOCH FROM ($1 - COALESCE(last_rotation_at, created_at))) / 86400)::bigint
                    AS age_days
         FROM litellm_verificationtoken
         WHERE is_active AND COALESCE(last_rotation_at, created_at) <= $1 - make_interval(days => $2)
         ORDER BY COALESCE(last_rotation_at, created_at), token",
    )
    .bind(now)
    .bind(i32::try_from(max_age_days).unwrap_or(i32::MAX))
    .persistent(false)
    .fetch_all(state.db.pool().await?)
    .await?;
    let day = now.date_naive();
    let entries: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({"token": k.token, "key_name": k.key_name, "key_alias": k.key_alias,
                   "user_id": k.user_id, "team_id": k.team_id, "created_at": k.created_at,
                   "last_rotation_at": k.last_rotation_at, "age_days": k.age_days})
        })
        .collect();
    let body = json!({"date": day, "generated_at": now, "max_age_days": max_age_days,
                      "due_for_rotation": entries});
    let mut csv = String::from(
        "date,token,key_name,key_alias,user_id,team_id,created_at,last_rotation_at,age_days\n",
    );
    for k in &keys {
        csv.push_str(&format!(
            "{day},{},{},{},{},{},{},{},{}\n",
            k.token,
            csv_field(&k.key_name),
            csv_field(k.key_alias.as_deref().unwrap_or("")),
            csv_field(k.user_id.as_deref().unwrap_or("")),
            csv_field(k.team_id.as_deref().unwrap_or("")),
            k.created_at.to_rfc3339(),
            k.last_rotation_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            k.age_days
        ));
    }
    put_report(reports, &format!("reports/rotation/{day}"), &body, &csv).await?;
    Ok(keys.len() as u64)
}
