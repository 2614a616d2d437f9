//! `GET /ui/operations`: the last hour by model: request rate, latency p50 and p99, time to first
//! token, and error rate. Drawn from the spend rows, which every instance writes (a Lambda
//! environment's or a container's own metrics would show only its own requests): one query,
//! which PostgreSQL aggregates over the hour's rows (the `start_time` index bounds it).
//!
//! What it cannot show: requests refused before admission (no key, a limit, a budget) have no
//! spend row; Prometheus' `llmlite_admission_refusals_total` and the dashboard count those.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::csrf::signed_in;
use super::html::{escape, page, with_status};
use crate::error::ApiError;
use crate::state::AppState;

/// The window the page covers.
const WINDOW_MINUTES: i64 = 60;

/// One model's hour.
#[derive(Debug, sqlx::FromRow)]
struct ModelHour {
    model: String,
    requests: i64,
    errors: i64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Streamed answers' time to first token, median (none when nothing streamed).
    ttft_p50_ms: Option<f64>,
    streamed: i64,
}

/// The hour's rows by model, busiest first; the last row (`model` NULL) is every model's.
async fn last_hour(state: &AppState, now: DateTime<Utc>) -> Result<Vec<ModelHour>, ApiError> {
    let from = now - chrono::Duration::minutes(WINDOW_MINUTES);
    Ok(sqlx::query_as(
        "SELECT COALESCE(model, '') AS model, count(*) AS requests,
                count(*) FILTER (WHERE status <> 'success') AS errors,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY request_duration_ms) AS p50_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY request_duration_ms) AS p99_ms,
                percentile_cont(0.5) WITHIN GROUP
                    (ORDER BY (metadata->>'llmlite_ttft_ms')::float8) AS ttft_p50_ms,
                count(metadata->'llmlite_ttft_ms') AS streamed
         FROM litellm_spend
         WHERE start_time >= $1 AND start_time <= $2
         GROUP BY ROLLUP (model)
         ORDER BY (model IS NULL), count(*) DESC, model",
    )
    .bind(from)
    .bind(now)
    .persistent(false)
    .fetch_all(state.db.pool().await?)
    .await?)
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "–".to_owned(),
    }
}

fn row(hour: &ModelHour, total: bool) -> String {
    let rate = hour.requests as f64 / WINDOW_MINUTES as f64;
    let error_rate = if hour.requests > 0 {
        100.0 * hour.errors as f64 / hour.requests as f64
    } else {
        0.0
    };
    let name = if total {
        "All models".to_owned()
    } else {
        escape(&hour.model)
    };
    let class = if total { " class=\"total\"" } else { "" };
    format!(
        "<tr{class} data-model=\"{}\"><td>{name}</td><td>{}</td><td>{rate:.2}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{error_rate:.1}%</td></tr>",
        if total { "" } else { &name },
        hour.requests,
        ms(hour.p50_ms),
        ms(hour.p99_ms),
        ms(hour.ttft_p50_ms),
        hour.streamed,
    )
}

/// `GET /ui/operations`.
pub(super) async fn operations_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let now = state.clock.now();
    let hours = match last_hour(&state, now).await {
        Ok(hours) => hours,
        Err(error) => {
            tracing::warn!(%error, "operations page not read");
            let body = "<h2>Operations</h2><p class=\"error\">The database did not answer; \
                        try again shortly.</p>";
            return with_status(
                page("Operations", Some(&session), body),
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    let count = hours.len();
    let rows: String = hours
        .iter()
        .enumerate()
        .map(|(i, hour)| row(hour, i + 1 == count))
        .collect();
    let table = if count == 0 {
        "<p id=\"quiet\">No requests in the last hour.</p>".to_owned()
    } else {
        format!(
            "<table class=\"operations\"><thead><tr><th>Model</th><th>Requests</th>\
             <th>Per minute</th><th>p50</th><th>p99</th><th>TTFT p50</th><th>Streamed</th>\
             <th>Errors</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let body = format!(
        "<h2>Operations</h2><p class=\"note\">The last hour, to {} UTC, from the spend rows every \
         instance writes: latency from arrival to the answer's end; time to first token for \
         streamed answers. Requests refused before admission (keys, limits, budgets) are not \
         here: Prometheus and the CloudWatch dashboard count them.</p>{table}",
        now.format("%H:%M")
    );
    page("Operations", Some(&session), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_escapes_the_model_and_shows_rates() {
        let hour = ModelHour {
            model: "<b>m</b>".into(),
            requests: 120,
            errors: 6,
            p50_ms: Some(420.0),
            p99_ms: Some(2500.0),
            ttft_p50_ms: None,
            streamed: 0,
        };
        let html = row(&hour, false);
        assert!(html.contains("&lt;b&gt;m&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("<td>2.00</td>"), "{html}");
        assert!(html.contains("420 ms") && html.contains("2.50 s"), "{html}");
        assert!(html.contains("5.0%"), "{html}");
        assert!(html.contains("<td>–</td>"), "{html}");
    }
}
