//! The console's read-only pages: spend (a daily stacked chart drawn in the browser from JSON,
//! totals and CSV, all from the daily rollup plus what is not rolled up yet), the model catalog,
//! and the admin audit trail.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::csrf::{anyone_signed_in, signed_in};
use super::html::{escape, page, with_status};
use crate::error::ApiError;
use crate::state::AppState;

/// The longest range the spend page shows.
pub const MAX_DAYS: i64 = 90;

#[derive(Deserialize, Default)]
pub(super) struct SpendQuery {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    days: Option<String>,
}

/// What spend is grouped by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Model,
    Team,
    Key,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::Model => "model",
            Group::Team => "team",
            Group::Key => "key",
        }
    }

    /// The SQL naming a row's group (`t` is the spend or rollup row, `k` its key).
    fn sql(self) -> &'static str {
        match self {
            Group::Model => "t.model",
            Group::Team => "COALESCE(t.team_id, '(no team)')",
            Group::Key => "COALESCE(k.key_alias, k.key_name, left(t.api_key, 12))",
        }
    }

    /// The SQL of a row's group key, with no join: the key's hash for `key`.
    fn key_sql(self) -> &'static str {
        match self {
            Group::Key => "t.api_key",
            other => other.sql(),
        }
    }
}

/// A checked spend query: the group and the range's first and last day.
struct Range {
    group: Group,
    /// A person's own spend only: the user whose keys it is limited to.
    owner: Option<String>,
    days: i64,
    from: NaiveDate,
    to: NaiveDate,
}

/// Why a spend query was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum RangeError {
    #[error("cannot group spend by `{0}`: use model, team or key")]
    Group(String),
    #[error("the range must be 1 to {MAX_DAYS} days, not `{0}`")]
    Days(String),
}

fn range(state: &AppState, query: &SpendQuery) -> Result<Range, RangeError> {
    let group = match query.group.as_deref().unwrap_or("model") {
        "model" => Group::Model,
        "team" => Group::Team,
        "key" => Group::Key,
        other => return Err(RangeError::Group(other.to_owned())),
    };
    let days = match query.days.as_deref().map(str::trim) {
        None | Some("") => 30,
        Some(days) => days
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=MAX_DAYS).contains(d))
            .ok_or_else(|| RangeError::Days(days.to_owned()))?,
    };
    let to = state.clock.now().date_naive();
    Ok(Range {
        group,
        owner: None,
        days,
        from: to - Duration::days(days - 1),
        to,
    })
}

#[derive(sqlx::FromRow)]
struct SpendRow {
    date: NaiveDate,
    name: String,
    spend: Decimal,
    requests: i64,
    tokens: i64,
}

/// Spend per day and group over the range: the daily rollup, plus the rows not rolled up yet
/// (today's, say), each row counted once (a row is marked rolled in the statement that counts
/// it).
async fn spend_rows(state: &AppState, range: &Range) -> Result<Vec<SpendRow>, ApiError> {
    let group = range.group.sql();
    let owned = owned("$3");
    let sql = format!(
        "WITH days AS (
             SELECT t.date, {group} AS name, sum(t.spend) AS spend,
                    sum(t.api_requests) AS requests,
                    sum(t.prompt_tokens + t.completion_tokens) AS tokens
             FROM litellm_dailyuserspend t
             LEFT JOIN litellm_verificationtoken k ON k.token = t.api_key
             WHERE t.date BETWEEN $1 AND $2 AND {owned}
             GROUP BY 1, 2
             UNION ALL
             SELECT (t.start_time AT TIME ZONE 'UTC')::date, {group}, sum(t.spend), count(*),
                    sum(t.prompt_tokens + t.completion_tokens)
             FROM litellm_spend t
             LEFT JOIN litellm_verificationtoken k ON k.token = t.api_key
             WHERE t.rolled_at IS NULL AND {owned}
               AND t.start_time >= $1::timestamp AT TIME ZONE 'UTC'
               AND t.start_time < ($2 + 1)::timestamp AT TIME ZONE 'UTC'
             GROUP BY 1, 2
         )
         SELECT date, name, sum(spend) AS spend, sum(requests)::bigint AS requests,
                sum(tokens)::bigint AS tokens
         FROM days GROUP BY 1, 2 ORDER BY 1, 2"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(range.from)
        .bind(range.to)
        .bind(range.owner.as_deref())
        .persistent(false)
        .fetch_all(state.db.pool().await?)
        .await?)
}

/// The SQL that keeps a spend or rollup row `t` when parameter `p` is null, or names the user
/// whose key made it.
fn owned(p: &str) -> String {
    format!(
        "({p}::text IS NULL OR t.api_key IN \
         (SELECT token FROM litellm_verificationtoken WHERE user_id = {p}))"
    )
}

/// The daily rollup over the range plus the rows not rolled up yet, one row each, as `days`
/// (`date`, group key `g`, `spend`, `requests`, `tokens`): the CTE every summary reads.
fn days_cte(group: Group) -> String {
    let g = group.key_sql();
    let owned = owned("$4");
    format!(
        "days AS (
             SELECT t.date, {g} AS g, t.spend, t.api_requests AS requests,
                    t.prompt_tokens + t.completion_tokens AS tokens
             FROM litellm_dailyuserspend t
             WHERE t.date BETWEEN $1 AND $2 AND {owned}
             UNION ALL
             SELECT (t.start_time AT TIME ZONE 'UTC')::date, {g}, t.spend, 1,
                    t.prompt_tokens + t.completion_tokens
             FROM litellm_spend t
             WHERE t.rolled_at IS NULL AND {owned}
               AND t.start_time >= $1::timestamp AT TIME ZONE 'UTC'
               AND t.start_time < ($2 + 1)::timestamp AT TIME ZONE 'UTC'
         )"
    )
}

/// A chart cell: a day's spend of one of the largest groups, or (`g` null) of the others.
#[derive(sqlx::FromRow)]
struct Cell {
    date: NaiveDate,
    g: Option<String>,
    spend: Decimal,
    requests: i64,
    tokens: i64,
}

/// A group's total over the range, with its display name and how many groups there are.
#[derive(sqlx::FromRow)]
struct GroupTotal {
    g: String,
    name: String,
    spend: Decimal,
    requests: i64,
    groups: i64,
}

/// What the page and the chart show, summed by the database: the chart's cells (the largest
/// groups by day, the rest as one) and the largest groups' totals. A page over millions of rows
/// reads a few hundred.
struct Summary {
    cells: Vec<Cell>,
    groups: Vec<GroupTotal>,
}

async fn summary(state: &AppState, range: &Range) -> Result<Summary, ApiError> {
    let days = days_cte(range.group);
    let cells_sql = format!(
        "WITH {days},
         top AS (SELECT g FROM days GROUP BY g ORDER BY sum(spend) DESC, g LIMIT $3)
         SELECT d.date, top.g, sum(d.spend) AS spend, sum(d.requests)::bigint AS requests,
                sum(d.tokens)::bigint AS tokens
         FROM days d LEFT JOIN top ON top.g = d.g
         GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let name = match range.group {
        Group::Key => "COALESCE(k.key_alias, k.key_name, left(per.g, 12))",
        _ => "per.g",
    };
    let join = match range.group {
        Group::Key => "LEFT JOIN litellm_verificationtoken k ON k.token = per.g",
        _ => "",
    };
    let groups_sql = format!(
        "WITH {days},
         per AS (SELECT g, sum(spend) AS spend, sum(requests)::bigint AS requests
                 FROM days GROUP BY g)
         SELECT per.g, {name} AS name, per.spend, per.requests, count(*) OVER () AS groups
         FROM per {join}
         ORDER BY per.spend DESC, per.g LIMIT $3"
    );
    let series = i64::try_from(CHART_SERIES).unwrap_or(10);
    let rows = i64::try_from(TABLE_ROWS).unwrap_or(100);
    let mut tx = crate::admin::snapshot(state).await?;
    let cells = sqlx::query_as(sqlx::AssertSqlSafe(cells_sql))
        .bind(range.from)
        .bind(range.to)
        .bind(series)
        .bind(range.owner.as_deref())
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
    let groups = sqlx::query_as(sqlx::AssertSqlSafe(groups_sql))
        .bind(range.from)
        .bind(range.to)
        .bind(rows)
        .bind(range.owner.as_deref())
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Summary { cells, groups })
}

/// The most series the chart draws: the largest groups; the rest are summed as `(other)`.
const CHART_SERIES: usize = 10;
/// The most groups the page's table lists (the CSV has them all).
const TABLE_ROWS: usize = 100;

/// The chart's data: every day of the range, and a value a day for each of the largest groups
/// (named as the table names them) and `(other)` for the rest.
fn chart_json(range: &Range, summary: &Summary) -> serde_json::Value {
    let days: Vec<NaiveDate> = (0..range.days)
        .map(|n| range.from + Duration::days(n))
        .collect();
    let mut keys: Vec<Option<&str>> = summary
        .groups
        .iter()
        .take(CHART_SERIES)
        .map(|t| Some(t.g.as_str()))
        .collect();
    if summary.cells.iter().any(|c| c.g.is_none()) {
        keys.push(None);
    }
    let index: HashMap<Option<&str>, usize> =
        keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut grid = vec![vec![Decimal::ZERO; days.len()]; keys.len()];
    for cell in &summary.cells {
        let series = index.get(&cell.g.as_deref()).copied();
        let day = usize::try_from((cell.date - range.from).num_days()).ok();
        if let (Some(series), Some(day)) = (series, day)
            && let Some(value) = grid.get_mut(series).and_then(|s| s.get_mut(day))
        {
            *value += cell.spend;
        }
    }
    let name = |key: Option<&str>| -> String {
        match key {
            Some(g) => summary
                .groups
                .iter()
                .find(|t| t.g == g)
                .map_or_else(|| g.to_owned(), |t| t.name.clone()),
            None => "(other)".to_owned(),
        }
    };
    let series: Vec<serde_json::Value> = keys
        .iter()
        .zip(&grid)
        .map(|(key, values)| {
            let values: Vec<String> = values.iter().map(|v| v.normalize().to_string()).collect();
            json!({"name": name(*key), "values": values})
        })
        .collect();
    let spend: Decimal = summary.cells.iter().map(|c| c.spend).sum();
    json!({
        "group": range.group.name(),
        "from": range.from,
        "to": range.to,
        "days": days,
        "series": series,
        "groups": summary.groups.first().map_or(0, |t| t.groups),
        "totals": {
            "spend": spend.normalize().to_string(),
            "requests": summary.cells.iter().map(|c| c.requests).sum::<i64>(),
            "tokens": summary.cells.iter().map(|c| c.tokens).sum::<i64>(),
        },
    })
}

fn api_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "console_error", "param": null,
                                "code": status.as_u16().to_string()}});
    (status, axum::Json(body)).into_response()
}

/// The range a spend API request asks for, or its JSON error (401 without a session, as an
/// API).
async fn api_range(
    state: &AppState,
    headers: &HeaderMap,
    query: &SpendQuery,
) -> Result<Range, Response> {
    let Ok(session) = anyone_signed_in(state, headers).await else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "sign in to the console first",
        ));
    };
    let mut range =
        range(state, query).map_err(|e| api_error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    range.owner = owner(&session);
    Ok(range)
}

/// Whose spend a session sees: everyone's for an admin, a person's own otherwise.
fn owner(session: &super::Session) -> Option<String> {
    if session.is_self_service() {
        // A self-service session is a person's: without a user it sees nothing.
        Some(session.caller().user_id().unwrap_or("").to_owned())
    } else {
        None
    }
}

/// `GET /ui/spend.json`: the chart's data.
pub(super) async fn spend_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SpendQuery>,
) -> Response {
    let range = match api_range(&state, &headers, &query).await {
        Ok(range) => range,
        Err(response) => return response,
    };
    match summary(&state, &range).await {
        Ok(summary) => axum::Json(chart_json(&range, &summary)).into_response(),
        Err(error) => api_error(error.status(), &error.to_string()),
    }
}

/// `GET /ui/spend.csv`: the same figures, one row per day and group.
pub(super) async fn spend_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SpendQuery>,
) -> Response {
    let range = match api_range(&state, &headers, &query).await {
        Ok(range) => range,
        Err(response) => return response,
    };
    let rows = match spend_rows(&state, &range).await {
        Ok(rows) => rows,
        Err(error) => return api_error(error.status(), &error.to_string()),
    };
    let mut csv = format!("date,{},requests,tokens,spend\n", range.group.name());
    for r in &rows {
        let name = if r.name.contains([',', '"', '\n']) {
            format!("\"{}\"", r.name.replace('"', "\"\""))
        } else {
            r.name.clone()
        };
        csv.push_str(&format!(
            "{},{name},{},{},{}\n",
            r.date,
            r.requests,
            r.tokens,
            r.spend.normalize()
        ));
    }
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"llmlite-spend-{}-{}-{}.csv\"",
        range.group.name(),
        range.from,
        range.to
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `GET /ui/spend`: the range form, the totals, the chart (drawn by the console's script from
/// `/ui/spend.json`) and a table of each group's total.
pub(super) async fn spend_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SpendQuery>,
) -> Response {
    let session = match anyone_signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let range = match range(&state, &query) {
        Ok(mut range) => {
            range.owner = owner(&session);
            range
        }
        Err(error) => {
            let body = format!(
                "<h2>Spend</h2><p class=\"error\" role=\"alert\">{}</p>\
                 <p><a href=\"/ui/spend\">The last 30 days by model</a></p>",
                escape(&error.to_string())
            );
            return with_status(
                page("Spend", Some(&session), &body),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let summary = match summary(&state, &range).await {
        Ok(summary) => summary,
        Err(error) => {
            let body = format!(
                "<h2>Spend</h2><p class=\"error\" role=\"alert\">{}</p>",
                escape(&error.to_string())
            );
            return with_status(page("Spend", Some(&session), &body), error.status());
        }
    };
    let data = chart_json(&range, &summary);
    let mut table: String = summary
        .groups
        .iter()
        .map(|t| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>${}</td></tr>",
                escape(&t.name),
                t.requests,
                t.spend.normalize()
            )
        })
        .collect();
    let groups = summary.groups.first().map_or(0, |t| t.groups);
    let listed = i64::try_from(summary.groups.len()).unwrap_or(i64::MAX);
    if groups > listed {
        table.push_str(&format!(
            "<tr><td colspan=\"3\" class=\"note\">and {} more (the CSV has every one)</td></tr>",
            groups - listed
        ));
    }
    let params = format!("group={}&days={}", range.group.name(), range.days);
    let option = |group: Group| {
        let selected = if group == range.group {
            " selected"
        } else {
            ""
        };
        format!("<option value=\"{0}\"{selected}>{0}</option>", group.name())
    };
    let body = format!(
        "<h2>Spend</h2>\
         <form method=\"get\" action=\"/ui/spend\" class=\"filters\">\
         <label for=\"group\">By</label><select id=\"group\" name=\"group\">{}{}{}</select>\
         <label for=\"days\">Days</label>\
         <input id=\"days\" name=\"days\" type=\"number\" min=\"1\" max=\"{MAX_DAYS}\" value=\"{}\">\
         <button type=\"submit\">Show</button></form>\
         <p class=\"totals\">{} to {}: <strong id=\"total-spend\">${}</strong> over {} requests \
         and {} tokens · <a href=\"/ui/spend.csv?{}\">CSV</a></p>\
         <figure id=\"chart\" data-src=\"/ui/spend.json?{}\"></figure>\
         <table class=\"totals\"><thead><tr><th>{}</th><th>Requests</th><th>Spend</th></tr>\
         </thead><tbody>{table}</tbody></table>\
         <script src=\"/ui/static/console.js\"></script>",
        option(Group::Model),
        option(Group::Team),
        option(Group::Key),
        range.days,
        range.from,
        range.to,
        escape(data["totals"]["spend"].as_str().unwrap_or("0")),
        data["totals"]["requests"],
        data["totals"]["tokens"],
        escape(&params),
        escape(&params),
        range.group.name(),
    );
    page("Spend", Some(&session), &body)
}

/// `GET /ui/models`: the catalog, with Bedrock IDs and prices per million tokens.
/// A person who is not an admin sees the models they may use.
pub(super) async fn models_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match anyone_signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let own = session.is_self_service();
    let rows: String = state
        .config
        .catalog
        .models()
        .iter()
        .filter(|m| !own || session.caller().may_use(m.alias.as_str()))
        .map(|m| {
            let aliases = m
                .other_aliases
                .iter()
                .map(|a| escape(a.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "<tr><td>{}</td><td>{aliases}</td><td><code>{}</code></td><td>${}</td>\
                 <td>${}</td><td>${}</td><td>${}</td><td>{}</td></tr>",
                escape(m.alias.as_str()),
                escape(&m.bedrock_model_id),
                m.prices.input.0.amount(),
                m.prices.output.0.amount(),
                m.prices.cache_read.0.amount(),
                m.prices.cache_write.0.amount(),
                m.max_output_tokens,
            )
        })
        .collect();
    let body = format!(
        "<h2>Models</h2><p class=\"note\">Prices are US dollars per million tokens.</p>\
         <table><thead><tr><th>Alias</th><th>Also</th><th>Bedrock ID</th><th>Input</th>\
         <th>Output</th><th>Cache read</th><th>Cache write</th><th>Max output</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    );
    page("Models", Some(&session), &body)
}

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ActionRow {
    at: chrono::DateTime<chrono::Utc>,
    actor: String,
    via: String,
    action: String,
    object_type: String,
    object_id: String,
}

/// `GET /ui/audit`: admin actions, newest first, filterable by actor and action. Keys appear
/// as their hashes (what the trail keeps).
pub(super) async fn audit_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (actor, action) = (text(&query.actor), text(&query.action));
    let rows: Result<Vec<ActionRow>, ApiError> = async {
        Ok(sqlx::query_as(
            "SELECT at, actor, via, action, object_type, object_id FROM llmlite_admin_action
             WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)
             ORDER BY at DESC, id DESC LIMIT 200",
        )
        .bind(&actor)
        .bind(&action)
        .persistent(false)
        .fetch_all(state.db.pool().await?)
        .await?)
    }
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let body = format!(
                "<h2>Audit</h2><p class=\"error\" role=\"alert\">{}</p>",
                escape(&error.to_string())
            );
            return with_status(page("Audit", Some(&session), &body), error.status());
        }
    };
    let table: String = rows
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><code>{}</code></td></tr>",
                r.at.format("%Y-%m-%d %H:%M:%S"),
                escape(&r.actor),
                escape(&r.via),
                escape(&r.action),
                escape(&r.object_type),
                escape(&r.object_id),
            )
        })
        .collect();
    let body = format!(
        "<h2>Audit</h2><form method=\"get\" action=\"/ui/audit\" class=\"filters\">\
         <input name=\"actor\" placeholder=\"actor (master_key or a key hash)\" value=\"{}\">\
         <input name=\"action\" placeholder=\"action (key.generate, ...)\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>\
         <table><thead><tr><th>When (UTC)</th><th>Actor</th><th>Via</th><th>Action</th>\
         <th>Object</th><th>ID</th></tr></thead><tbody>{table}</tbody></table>\
         <p class=\"note\">The newest 200 that match.</p>",
        escape(actor.as_deref().unwrap_or("")),
        escape(action.as_deref().unwrap_or("")),
    );
    page("Audit", Some(&session), &body)
}
