//! A SCIM 2.0-style deactivation route (RFC 7644), for an identity provider's provisioning to
//! disable a person the moment they leave: `PATCH /scim/v2/Users/{user_id}` with a PatchOp that
//! replaces `active`, and `GET /scim/v2/Users/{user_id}`. Only `active` is managed here (users
//! are made at their first sign-in); the caller is an admin key, as the provisioning
//! connector's bearer token. Disabling is [`super::users::set_disabled`]: sessions, `llmlite
//! key` credentials and short-lived keys end at once, other keys are blocked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// SCIM's error shape.
fn scim_error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/scim+json")],
        Json(
            json!({"schemas": [ERROR_SCHEMA], "status": status.as_u16().to_string(),
                    "detail": detail}),
        ),
    )
        .into_response()
}

fn from_api(error: &ApiError) -> Response {
    scim_error(error.status(), &error.to_string())
}

/// The user as SCIM shows them.
async fn resource(state: &AppState, user_id: &str) -> Result<Value, ApiError> {
    let row: Option<(Option<String>, Option<String>, bool)> = sqlx::query_as(
        "SELECT user_email, user_alias, disabled_at IS NULL FROM litellm_usertable
         WHERE user_id = $1",
    )
    .bind(user_id)
    .persistent(false)
    .fetch_optional(state.db.pool().await?)
    .await?;
    let (email, name, active) =
        row.ok_or_else(|| ApiError::NotFound(format!("user `{user_id}` not found")))?;
    Ok(json!({
        "schemas": [USER_SCHEMA],
        "id": user_id,
        "userName": email.clone().unwrap_or_else(|| user_id.to_owned()),
        "displayName": name,
        "active": active,
        "emails": email.map(|e| vec![json!({"value": e, "primary": true})]).unwrap_or_default(),
    }))
}

/// `GET /scim/v2/Users/{user_id}`.
pub async fn get_user(
    Admin(_): Admin,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Response {
    match resource(&state, &user_id).await {
        Ok(user) => scim_json(user),
        Err(error) => from_api(&error),
    }
}

fn scim_json(value: Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/scim+json")],
        Json(value),
    )
        .into_response()
}

/// The `active` a PatchOp sets: `{"op": "replace", "path": "active", "value": false}`, or
/// `{"op": "replace", "value": {"active": false}}` (what Entra ID and Okta send).
fn active_of(patch: &Value) -> Result<bool, String> {
    let schemas = patch["schemas"].as_array().cloned().unwrap_or_default();
    if !schemas.iter().any(|s| s == PATCH_SCHEMA) {
        return Err(format!("the body must be a PatchOp ({PATCH_SCHEMA})"));
    }
    let operations = patch["Operations"]
        .as_array()
        .ok_or("`Operations` must be a list")?;
    let mut active = None;
    for op in operations {
        let kind = op["op"].as_str().unwrap_or("").to_ascii_lowercase();
        if kind != "replace" && kind != "add" {
            return Err(format!("only replace is supported, not `{kind}`"));
        }
        let value = match op["path"].as_str() {
            Some(path) if path.eq_ignore_ascii_case("active") => op["value"].clone(),
            Some(path) => return Err(format!("only `active` is managed here, not `{path}`")),
            None => op["value"]["active"].clone(),
        };
        active = Some(match value {
            Value::Bool(b) => b,
            // Entra ID has sent "False" as a string.
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            _ => return Err("`active` must be true or false".to_owned()),
        });
    }
    active.ok_or_else(|| "no operation sets `active`".to_owned())
}

/// `PATCH /scim/v2/Users/{user_id}`.
pub async fn patch_user(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(user_id): Path<String>,
    body: Bytes,
) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return scim_error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    let active = match active_of(&patch) {
        Ok(active) => active,
        Err(detail) => return scim_error(StatusCode::BAD_REQUEST, &detail),
    };
    let done = super::users::set_disabled(&state, &caller, request_id, &user_id, !active).await;
    match done {
        Ok(_) => match resource(&state, &user_id).await {
            Ok(user) => scim_json(user),
            Err(error) => from_api(&error),
        },
        Err(error) => from_api(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_patch_shapes_set_active_and_nothing_else_is_taken() {
        let op = |ops: Value| json!({"schemas": [PATCH_SCHEMA], "Operations": ops});
        assert_eq!(
            active_of(&op(
                json!([{"op": "replace", "path": "active", "value": false}])
            )),
            Ok(false)
        );
        assert_eq!(
            active_of(&op(json!([{"op": "Replace", "value": {"active": "True"}}]))),
            Ok(true)
        );
        assert!(
            active_of(&op(
                json!([{"op": "replace", "path": "userName", "value": "x"}])
            ))
            .is_err()
        );
        assert!(active_of(&op(json!([{"op": "remove", "path": "active"}]))).is_err());
        assert!(active_of(&json!({"Operations": []})).is_err());
        assert!(
            active_of(&op(
                json!([{"op": "replace", "path": "active", "value": 0}])
            ))
            .is_err()
        );
    }
}
