//! The `key-admin` function: LiteLLM's admin API for keys, users and teams, and spend queries.
//!
//! Field names and response shapes follow LiteLLM's so its scripts keep working. Every write is
//! one transaction that also records the action (who, what, the non-secret fields before and
//! after) in `llmlite_admin_action`; the request then ships its own actions to the audit trail,
//! and the rollup ships whatever is left. A raw key appears in exactly two responses: the one
//! that mints it (generate, user/new) and the one that rotates it.
//!
//! Locks follow admission's order (`llmlite_admit`: key, then user, then team) so an admin
//! write never deadlocks with chat traffic: a write locks the key rows it touches first (ordered
//! by token), then user rows (by id), then team rows (by id). Reads take no row locks at all.
//!
//! Input limits (anything beyond is a 400): aliases, IDs and emails up to 256 characters; up to
//! 100 models of up to 128 characters; metadata a JSON object of at most 16 KiB; budgets from 0
//! to 1,000,000,000 dollars; rate limits from 0 to 10^12; parallel requests from 0 to 100,000.

pub mod erasure;
pub mod fields;
pub mod keys;
pub mod scim;
pub mod spend;
pub mod teams;
pub mod users;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/key/generate", post(keys::generate))
        .route("/key/update", post(keys::update))
        .route("/key/delete", post(keys::delete))
        .route("/key/info", get(keys::info).post(keys::info_from_body))
        .route("/key/list", get(keys::list))
        .route("/key/regenerate", post(keys::regenerate))
        .route("/key/{key}/regenerate", post(keys::regenerate_path))
        .route("/key/block", post(keys::block))
        .route("/key/unblock", post(keys::unblock))
        .route("/user/new", post(users::create))
        .route("/user/info", get(users::info))
        .route("/user/update", post(users::update))
        .route("/user/delete", post(users::delete))
        .route("/user/list", get(users::list))
        .route("/team/new", post(teams::create))
        .route("/team/info", get(teams::info))
        .route("/team/update", post(teams::update))
        .route("/team/delete", post(teams::delete))
        .route("/team/list", get(teams::list))
        .route("/spend/logs", get(spend::logs))
        .route("/global/spend/report", get(spend::report))
        .route("/openapi.json", get(openapi))
        .route(
            "/scim/v2/Users/{user_id}",
            get(scim::get_user).patch(scim::patch_user),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ship_audit,
        ))
        .with_state(state)
}

/// How long an admin write may spend shipping its own audit record after the change committed.
/// Past it the answer goes out anyway; the record stays unshipped for the rollup.
pub const SHIP_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// After a successful change, ships the admin actions that request recorded (in its own
/// transaction) to the audit trail, within [`SHIP_BUDGET`]. Older unshipped actions are the
/// rollup's: a backlog never holds up a committed change, whose answer may carry a raw key.
pub(crate) async fn ship_audit(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = request.method() == http::Method::POST;
    let request_id = request.extensions().get::<RequestId>().copied();
    let response = next.run(request).await;
    if write
        && response.status().is_success()
        && let Some(request_id) = request_id
    {
        match tokio::time::timeout(SHIP_BUDGET, state.audit.ship_request_actions(request_id)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "admin action not shipped yet; the rollup will");
            }
            Err(_) => tracing::warn!("admin action not shipped in time; the rollup will"),
        }
    }
    response
}

/// A read-only transaction on one snapshot, for reads that span tables. It takes no row locks,
/// so it never waits on (or deadlocks with) admission and settlement.
pub async fn snapshot(state: &AppState) -> Result<Transaction<'static, Postgres>, ApiError> {
    Ok(state
        .db
        .pool()
        .await?
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?)
}

/// The OpenAPI 3 document of every route (`shared/openapi.json`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

tokio::task_local! {
    /// Set by the console around the admin handlers it calls: its actions are recorded as
    /// coming from the console.
    pub static VIA_CONSOLE: ();
}

/// Where the action being recorded came from: `console` inside [`VIA_CONSOLE`], else `api`.
fn via() -> &'static str {
    if VIA_CONSOLE.try_with(|()| ()).is_ok() {
        "console"
    } else {
        "api"
    }
}

/// One admin action, recorded in the transaction that makes it.
pub struct Action<'a> {
    pub at: DateTime<Utc>,
    pub request_id: RequestId,
    pub caller: &'a Caller,
    pub action: &'static str,
    pub object_type: &'static str,
    pub object_id: &'a str,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The free-text fields of keys, users and teams. An admin action keeps IDs and numbers, never
/// their values: the record is shipped to write-once storage for years, where nothing could be
/// erased. A value shows as `[redacted]`, or `[redacted, changed]` when the action changed it.
pub const FREE_TEXT_FIELDS: &[&str] = &[
    "user_email",
    "user_alias",
    "key_alias",
    "team_alias",
    "metadata",
];

/// `before` and `after` with their free text replaced (see [`FREE_TEXT_FIELDS`]).
pub fn scrub(before: Option<Value>, after: Option<Value>) -> (Option<Value>, Option<Value>) {
    let original = before.clone();
    let mark = |object: &mut Value, field: &str, changed: bool| {
        if let Some(value) = object.get_mut(field)
            && !value.is_null()
        {
            *value = Value::from(if changed {
                "[redacted, changed]"
            } else {
                "[redacted]"
            });
        }
    };
    let mut before = before;
    let mut after = after;
    for field in FREE_TEXT_FIELDS {
        if let Some(b) = before.as_mut() {
            mark(b, field, false);
        }
        if let Some(a) = after.as_mut() {
            let old = original.as_ref().and_then(|o| o.get(*field));
            let changed = original.is_some() && old != a.get(*field);
            mark(a, field, changed);
        }
    }
    (before, after)
}

impl Action<'_> {
    pub async fn record(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), ApiError> {
        let (before, after) = scrub(self.before, self.after);
        sqlx::query(
            "INSERT INTO llmlite_admin_action
                 (at, request_id, actor, action, object_type, object_id, before, after, via)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.at)
        .bind(self.request_id.to_string())
        .bind(self.caller.actor())
        .bind(self.action)
        .bind(self.object_type)
        .bind(self.object_id)
        .bind(before)
        .bind(after)
        .bind(via())
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// `page` (from 1) and `size` (1 to 100, default 10) of a list. Every list route pages: a list
/// (or a list nested in an answer, such as `/team/info`'s keys) never returns every row.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: i64,
    pub size: i64,
}

impl Page {
    /// `page` with a size named `size` or LiteLLM's `page_size` (either, not both); a bad size
    /// is reported under the name the caller used. (Not a flattened struct: serde's `flatten`
    /// cannot read numbers from a query string.)
    pub fn either(
        page: Option<i64>,
        size: Option<i64>,
        page_size: Option<i64>,
    ) -> Result<Self, ApiError> {
        match (size, page_size) {
            (Some(_), Some(_)) => Err(ApiError::invalid_param(
                "page_size",
                "give `size` or `page_size`, not both",
            )),
            (None, Some(size)) => Self::checked(page, Some(size), "page_size"),
            (size, None) => Self::checked(page, size, "size"),
        }
    }

    fn checked(page: Option<i64>, size: Option<i64>, size_param: &str) -> Result<Self, ApiError> {
        let page = page.unwrap_or(1);
        let size = size.unwrap_or(10);
        if page < 1 {
            return Err(ApiError::invalid_param("page", "`page` starts at 1"));
        }
        if !(1..=100).contains(&size) {
            return Err(ApiError::invalid_param(
                size_param,
                format!("`{size_param}` must be 1 to 100"),
            ));
        }
        Ok(Page { page, size })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.size)
    }

    pub fn total_pages(&self, total: i64) -> i64 {
        (total + self.size - 1) / self.size
    }
}

/// A unique-violation from PostgreSQL, as a 409.
pub fn conflict_or(error: sqlx::Error, what: impl FnOnce() -> String) -> ApiError {
    let unique = error
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "23505");
    if unique {
        ApiError::Conflict(what())
    } else {
        ApiError::from(error)
    }
}
