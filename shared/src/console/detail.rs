//! One key's page: every limit that applies to it (its own, its user's, its team's) with the
//! spend, the reservations of requests in flight and the rate buckets' levels now, which limit
//! would refuse the next request, its last 50 requests (metadata only), and how to set a client
//! up with it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::csrf::{anyone_signed_in, forbidden};
use super::html::{escape, page, with_status};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct Scope {
    scope: String,
    id: String,
    max_budget: Option<Decimal>,
    spend: Decimal,
    budget_reset_at: Option<DateTime<Utc>>,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    max_parallel_requests: Option<i32>,
    in_flight: i64,
    reserved: Decimal,
}

#[derive(sqlx::FromRow)]
struct Bucket {
    scope: String,
    resource: String,
    capacity: i64,
    tokens: Decimal,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct KeyHead {
    key_alias: Option<String>,
    key_name: String,
    blocked: bool,
    is_active: bool,
    expires: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Request {
    request_id: String,
    call_type: String,
    model: String,
    status: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    spend: Decimal,
    start_time: DateTime<Utc>,
}

/// Everything the page shows, read in one snapshot.
struct Detail {
    head: KeyHead,
    scopes: Vec<Scope>,
    buckets: Vec<Bucket>,
    requests: Vec<Request>,
}

async fn read(state: &AppState, token: &str) -> Result<Option<Detail>, ApiError> {
    let mut tx = crate::admin::snapshot(state).await?;
    let head: Option<KeyHead> = sqlx::query_as(
        "SELECT key_alias, key_name, blocked, is_active, expires, created_at
         FROM litellm_verificationtoken WHERE token = $1",
    )
    .bind(token)
    .persistent(false)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(head) = head else {
        return Ok(None);
    };
    let now = state.clock.now();
    let scopes: Vec<Scope> = sqlx::query_as(
        "WITH k AS (SELECT * FROM litellm_verificationtoken WHERE token = $1),
         s AS (
             SELECT 1 AS rank, 'key' AS scope, k.token AS id, k.max_budget, k.spend,
                    k.budget_reset_at, k.rpm_limit, k.tpm_limit, k.max_parallel_requests
             FROM k
             UNION ALL
             SELECT 2, 'user', u.user_id, u.max_budget, u.spend, u.budget_reset_at, u.rpm_limit,
                    u.tpm_limit, u.max_parallel_requests
             FROM k JOIN litellm_usertable u ON u.user_id = k.user_id
             UNION ALL
             SELECT 3, 'team', t.team_id, t.max_budget, t.spend, t.budget_reset_at, t.rpm_limit,
                    t.tpm_limit, t.max_parallel_requests
             FROM k JOIN litellm_teamtable t ON t.team_id = k.team_id
         )
         SELECT s.scope, s.id, s.max_budget, s.spend, s.budget_reset_at, s.rpm_limit::bigint,
                s.tpm_limit::bigint, s.max_parallel_requests,
                count(f.request_id) AS in_flight, COALESCE(sum(f.reserved), 0) AS reserved
         FROM s
         LEFT JOIN llmlite_inflight f ON f.lease_expires_at > $2 AND (
                (s.scope = 'key' AND f.token = s.id)
             OR (s.scope = 'user' AND f.user_id = s.id)
             OR (s.scope = 'team' AND f.team_id = s.id))
         GROUP BY s.rank, s.scope, s.id, s.max_budget, s.spend, s.budget_reset_at, s.rpm_limit,
                  s.tpm_limit, s.max_parallel_requests
         ORDER BY s.rank",
    )
    .bind(token)
    .bind(now)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    let scope_names: Vec<String> = scopes.iter().map(|s| s.scope.clone()).collect();
    let scope_ids: Vec<String> = scopes.iter().map(|s| s.id.clone()).collect();
    let buckets: Vec<Bucket> = sqlx::query_as(
        "SELECT b.scope, b.resource, b.capacity, b.tokens, b.updated_at
         FROM llmlite_rate_bucket b
         JOIN unnest($1::text[], $2::text[]) AS w(scope, id) ON w.scope = b.scope AND w.id = b.scope_id",
    )
    .bind(&scope_names)
    .bind(&scope_ids)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    let requests: Vec<Request> = sqlx::query_as(
        "SELECT request_id, call_type, model, status, prompt_tokens, completion_tokens, spend,
                start_time
         FROM litellm_spend WHERE api_key = $1 ORDER BY start_time DESC LIMIT 50",
    )
    .bind(token)
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Detail {
        head,
        scopes,
        buckets,
        requests,
    }))
}

/// A bucket's level now: refilled at its capacity per rate period since it was last written,
/// up to its capacity.
fn level_now(bucket: &Bucket, now: DateTime<Utc>, period_secs: f64) -> f64 {
    let elapsed = (now - bucket.updated_at).num_milliseconds().max(0) as f64 / 1000.0;
    let capacity = bucket.capacity as f64;
    (bucket.tokens.to_f64().unwrap_or(0.0) + elapsed * capacity / period_secs).min(capacity)
}

/// `GET /ui/keys/{token}`.
pub(super) async fn key_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let session = match anyone_signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    // A person who is not an admin sees their own keys only; another's is refused alike
    // whether it exists or not.
    if session.is_self_service() {
        let owner: Result<Option<Option<String>>, ApiError> =
            async {
                Ok(sqlx::query_scalar(
                    "SELECT user_id FROM litellm_verificationtoken WHERE token = $1",
                )
                .bind(&token)
                .persistent(false)
                .fetch_optional(state.db.pool().await?)
                .await?)
            }
            .await;
        match owner {
            Ok(Some(Some(owner))) if Some(owner.as_str()) == session.caller().user_id() => {}
            Ok(_) => return forbidden(&session, "That is not one of your keys."),
            Err(error) => {
                return with_status(
                    page("Key", Some(&session), &escape(&error.to_string())),
                    error.status(),
                );
            }
        }
    }
    let detail = match read(&state, &token).await {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            let body = "<h2>Key</h2><p class=\"error\" role=\"alert\">No key has that hash.</p>\
                        <p><a href=\"/ui/keys\">All keys</a></p>";
            return with_status(page("Key", Some(&session), body), StatusCode::NOT_FOUND);
        }
        Err(error) => {
            let body = format!(
                "<h2>Key</h2><p class=\"error\" role=\"alert\">{}</p>",
                escape(&error.to_string())
            );
            return with_status(page("Key", Some(&session), &body), error.status());
        }
    };
    let now = state.clock.now();
    let period = state.config.rate_period.as_secs_f64().max(1.0);
    // The least any request can cost: one token in and one out on the cheapest model. A budget
    // with less than that left refuses everything.
    let least = state
        .config
        .catalog
        .models()
        .iter()
        .map(|m| (m.prices.input * 1 + m.prices.output * 1).amount())
        .min()
        .unwrap_or_default();
    let mut refusal: Option<String> = None;
    let mut rows = String::new();
    for s in &detail.scopes {
        let level = |resource: &str| {
            detail
                .buckets
                .iter()
                .find(|b| b.scope == s.scope && b.resource == resource)
                .map(|b| level_now(b, now, period))
        };
        let committed = s.spend + s.reserved;
        let budget = match s.max_budget {
            Some(max) => {
                if max - committed < least && refusal.is_none() {
                    refusal = Some(format!(
                        "the {} budget (${} of ${})",
                        s.scope,
                        committed.normalize(),
                        max.normalize()
                    ));
                }
                let reset = s
                    .budget_reset_at
                    .map(|at| format!(", resets {}", at.format("%Y-%m-%d %H:%M")))
                    .unwrap_or_default();
                format!(
                    "${} spent + ${} reserved of ${}{reset}",
                    s.spend.normalize(),
                    s.reserved.normalize(),
                    max.normalize()
                )
            }
            None => format!("${} spent, no budget", s.spend.normalize()),
        };
        let rate = |limit: Option<i64>, resource: &str, need: f64| match limit {
            Some(limit) => {
                let now_level = level(resource).unwrap_or(limit as f64);
                (
                    format!("{limit} ({:.0} free now)", now_level.max(0.0)),
                    now_level < need,
                )
            }
            None => ("–".to_owned(), false),
        };
        let (rpm, rpm_out) = rate(s.rpm_limit, "rpm", 1.0);
        let (tpm, tpm_out) = rate(s.tpm_limit, "tpm", 1.0);
        for (out, what) in [
            (rpm_out, "requests per minute"),
            (tpm_out, "tokens per minute"),
        ] {
            if out && refusal.is_none() {
                refusal = Some(format!("the {} {what}", s.scope));
            }
        }
        let parallel = match s.max_parallel_requests {
            Some(max) => {
                if s.in_flight >= i64::from(max) && refusal.is_none() {
                    refusal = Some(format!(
                        "the {} parallel requests ({} in flight)",
                        s.scope, s.in_flight
                    ));
                }
                format!("{} of {max} in flight", s.in_flight)
            }
            None => format!("{} in flight", s.in_flight),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{budget}</td><td>{rpm}</td><td>{tpm}</td>\
             <td>{parallel}</td></tr>",
            escape(&s.scope),
            escape(&s.id),
        ));
    }
    let verdict = match (&refusal, detail.head.blocked, detail.head.is_active) {
        (_, _, false) => "The key is deleted: every request is refused.".to_owned(),
        (_, true, _) => "The key is blocked: every request is refused.".to_owned(),
        _ if detail.head.expires.is_some_and(|at| at <= now) => {
            "The key has expired: every request is refused.".to_owned()
        }
        (Some(limit), _, _) => format!("The next request would be refused by {}.", escape(limit)),
        (None, _, _) => "No limit would refuse the next request now.".to_owned(),
    };
    let requests: String = detail
        .requests
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>${}</td>\
                 <td><code>{}</code></td></tr>",
                r.start_time.format("%Y-%m-%d %H:%M:%S"),
                escape(&r.call_type),
                escape(&r.model),
                escape(&r.status),
                r.prompt_tokens,
                r.completion_tokens,
                r.spend.normalize(),
                escape(&r.request_id),
            )
        })
        .collect();
    let set_up =
        super::snippets::snippets(&state, &headers, "$KEY", &|m| session.caller().may_use(m));
    let regenerate = if session.is_self_service() {
        "/ui/me/keys/regenerate"
    } else {
        "/ui/keys/regenerate"
    };
    let name = escape(&detail.head.key_name);
    let body = format!(
        "<h2>Key {}</h2><p><code>{name}</code> · hash <code>{}</code> · created {}</p>\
         <p class=\"verdict\" id=\"verdict\">{verdict}</p>\
         <form method=\"post\" action=\"{regenerate}\" class=\"filters\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"key\" value=\"{}\">\
         <label for=\"grace_period\">Old key keeps working for</label>\
         <input id=\"grace_period\" name=\"grace_period\" placeholder=\"e.g. 24h (empty: stops now)\">\
         <button type=\"submit\">Regenerate</button></form>\
         <h3>Limits that apply</h3>\
         <table class=\"limits\"><thead><tr><th>Scope</th><th>ID</th><th>Budget</th><th>RPM</th>\
         <th>TPM</th><th>Parallel</th></tr></thead><tbody>{rows}</tbody></table>\
         <h3>Last 50 requests</h3>\
         <table class=\"requests\"><thead><tr><th>When (UTC)</th><th>API</th><th>Model</th>\
         <th>Status</th><th>Tokens in / out</th><th>Spend</th><th>Request ID</th></tr></thead>\
         <tbody>{requests}</tbody></table>\
         <p class=\"note\">The set-up below has <code>$KEY</code> where the key ({name}) goes.</p>\
         {set_up}",
        escape(detail.head.key_alias.as_deref().unwrap_or("")),
        escape(&token),
        detail.head.created_at.format("%Y-%m-%d"),
        escape(session.csrf()),
        escape(&token),
    );
    page("Key", Some(&session), &body)
}
