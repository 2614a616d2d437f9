//! `CountTokens`, for either input: an InvokeModel body (base64, as the SDK sends it) or a
//! Converse one.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::request::Request;
use super::{Shared, malformed, prelude, record, validation_error};

pub(super) async fn count_tokens(
    State(state): Shared,
    Path(model_id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return malformed();
    };
    let invoke_body = body["input"]["invokeModel"]["body"].as_str().map(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    });
    let mut entry = json!({ "operation": "count-tokens", "model_id": model_id, "body": body });
    if let Some(Some(decoded)) = &invoke_body {
        entry["invoke_body"] = decoded.clone();
    }
    record(&state, entry);
    if model_id.contains("no-count-tokens") {
        return validation_error("The provided model doesn't support counting tokens.");
    }
    let request = match (invoke_body, body["input"].get("converse")) {
        (Some(Some(decoded)), _) => Request::from_anthropic(&decoded),
        (Some(None), _) => {
            return validation_error(
                "Malformed input request: the invokeModel body is not base64-encoded JSON",
            );
        }
        (None, Some(converse)) => Request::from_converse(converse),
        (None, None) => {
            return validation_error("input must hold either invokeModel or converse");
        }
    };
    if let Err(response) = prelude(&state, &model_id, &request).await {
        return response;
    }
    Json(json!({ "inputTokens": request.input_tokens().total })).into_response()
}
