//! The console's keys table (`/ui/keys`): every key with its owner, models, budget, limits,
//! last activity and status, filtered and paged by the database, with its action buttons.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::Session;
use super::csrf::signed_in;
use super::html::{escape, form_encode, page};
use crate::admin::keys::store::{COLUMNS, KeyRow};
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub(super) struct KeysQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

/// A row of the keys table: the admin API's key row, and how many keys the filter matches.
#[derive(sqlx::FromRow)]
struct ListedKey {
    #[sqlx(flatten)]
    key: KeyRow,
    total: i64,
}

/// Rows a page of the keys table shows.
const KEYS_PER_PAGE: i64 = 50;

/// The keys table: alias, owner, models, budget, limits, last activity and status; filtered and
/// paginated by the database.
pub(super) async fn keys_page(
    State(state): State<AppState>,
    Extension(_request_id): Extension<RequestId>,
    headers: HeaderMap,
    Query(query): Query<KeysQuery>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let page_number = match query.page.as_deref().map(str::parse::<u32>) {
        None => 1,
        Some(Ok(n)) if (1..=100_000).contains(&n) => i64::from(n),
        Some(_) => {
            let mut response = page(
                "Keys",
                Some(&session),
                "<p class=\"error\" role=\"alert\">The page number must be a whole number from \
                 1 to 100000.</p><p><a href=\"/ui/keys\">All keys</a></p>",
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    // The filter is text: LIKE's wildcards in it match themselves.
    let search = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| {
            let literal = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{literal}%")
        });
    let team = query
        .team
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let rows: Result<Vec<ListedKey>, ApiError> = async {
        let sql = format!(
            "SELECT {COLUMNS}, count(*) OVER () AS total
             FROM litellm_verificationtoken
             WHERE ($1::text IS NULL OR key_alias ILIKE $1 OR user_id ILIKE $1 OR key_name ILIKE $1)
               AND ($2::text IS NULL OR team_id = $2)
             ORDER BY created_at DESC, token
             LIMIT $3 OFFSET $4"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&search)
            .bind(team)
            .bind(KEYS_PER_PAGE)
            .bind((page_number - 1) * KEYS_PER_PAGE)
            .persistent(false)
            .fetch_all(state.db.pool().await?)
            .await?)
    }
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let mut response = page(
                "Keys",
                Some(&session),
                &format!(
                    "<p class=\"error\" role=\"alert\">The keys could not be read: {}</p>",
                    escape(&error.to_string())
                ),
            );
            *response.status_mut() = error.status();
            return response;
        }
    };
    let now = state.clock.now();
    let total = rows.first().map_or(0, |r| r.total);
    let mut table = String::from(
        "<table class=\"keys\"><thead><tr><th>Alias</th><th>Key</th><th>Owner</th>\
         <th>Models</th><th>Budget</th><th>RPM / TPM</th><th>Last active</th><th>Status</th>\
         <th>Actions</th></tr></thead><tbody>",
    );
    for ListedKey { key: r, .. } in &rows {
        let owner = [
            r.user_id.as_deref().map(|u| format!("user {}", escape(u))),
            r.team_id.as_deref().map(|t| format!("team {}", escape(t))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("<br>");
        let models = if r.limits.models.is_empty() {
            "all".to_owned()
        } else {
            r.limits
                .models
                .iter()
                .map(|m| escape(m))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let budget = match r.limits.max_budget {
            Some(max) if max > Decimal::ZERO => {
                let used = (r.spend / max * Decimal::from(100))
                    .round()
                    .clamp(Decimal::ZERO, Decimal::from(100));
                let reset = r
                    .limits
                    .budget_reset_at
                    .map(|at| format!(" · resets {}", at.format("%Y-%m-%d")))
                    .unwrap_or_default();
                format!(
                    "<meter min=\"0\" max=\"100\" value=\"{used}\"></meter> ${} of ${}{reset}",
                    r.spend.normalize(),
                    max.normalize()
                )
            }
            Some(max) => format!("${} of ${}", r.spend.normalize(), max.normalize()),
            None => format!("${} (no budget)", r.spend.normalize()),
        };
        let limit = |l: Option<i64>| l.map_or("–".to_owned(), |l| l.to_string());
        let status = if !r.is_active {
            "deleted"
        } else if r.blocked {
            "blocked"
        } else if r.expires.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        let actions = if r.is_active {
            let toggle = if r.blocked { "unblock" } else { "block" };
            [toggle, "delete"]
                .iter()
                .map(|action| action_form(&session, &r.token, action))
                .collect::<String>()
        } else {
            String::new()
        };
        table.push_str(&format!(
            "<tr data-token=\"{}\"><td><a href=\"/ui/keys/{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{} / {}</td><td>{}</td><td class=\"status-{status}\">{status}</td>\
             <td class=\"actions\">{actions}</td></tr>",
            escape(&r.token),
            escape(&r.token),
            escape(r.key_alias.as_deref().unwrap_or("(no alias)")),
            escape(&r.key_name),
            owner,
            models,
            budget,
            limit(r.limits.rpm_limit),
            limit(r.limits.tpm_limit),
            r.last_active.map_or("never".to_owned(), |at| at
                .format("%Y-%m-%d %H:%M")
                .to_string()),
        ));
    }
    table.push_str("</tbody></table>");
    let pages = (total + KEYS_PER_PAGE - 1) / KEYS_PER_PAGE;
    let link = |n: i64, label: &str| {
        let mut params = vec![format!("page={n}")];
        if let Some(q) = &query.q {
            params.push(format!("q={}", form_encode(q)));
        }
        if let Some(t) = team {
            params.push(format!("team={}", form_encode(t)));
        }
        format!(
            "<a href=\"/ui/keys?{}\">{label}</a>",
            escape(&params.join("&"))
        )
    };
    let noun = if total == 1 { "key" } else { "keys" };
    let mut pager = format!(
        "<p class=\"pager\">{total} {noun} · page {page_number} of {}",
        pages.max(1)
    );
    if page_number > 1 {
        pager.push_str(&format!(" · {}", link(page_number - 1, "previous")));
    }
    if page_number < pages {
        pager.push_str(&format!(" · {}", link(page_number + 1, "next")));
    }
    pager.push_str("</p>");
    let filters = format!(
        "<form method=\"get\" action=\"/ui/keys\" class=\"filters\">\
         <input name=\"q\" placeholder=\"alias, user or key name\" value=\"{}\">\
         <input name=\"team\" placeholder=\"team\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        escape(query.q.as_deref().unwrap_or("")),
        escape(team.unwrap_or("")),
    );
    page(
        "Keys",
        Some(&session),
        &format!("<h2>Keys</h2>{filters}{table}{pager}"),
    )
}

/// A button that posts `action` for the key `token`, with the session's CSRF token.
fn action_form(session: &Session, token: &str, action: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/ui/keys/action\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"key\" value=\"{}\">\
         <button type=\"submit\" name=\"action\" value=\"{action}\">{action}</button></form>",
        escape(session.csrf()),
        escape(token),
    )
}
