//! `GET /v1/models` and `GET /v1/models/{model}` (and `/models`): the catalog's aliases a key may
//! use, in OpenAI's list shape or, for an Anthropic client, Anthropic's.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openai::{ModelList, ModelObject};
use crate::state::AppState;

/// `created` for catalog models, which have no release dates of their own.
const MODELS_CREATED: i64 = 1_677_610_602;

fn model_object(alias: &str, owned_by: &'static str) -> ModelObject {
    ModelObject {
        id: alias.to_owned(),
        object: "model",
        created: MODELS_CREATED,
        owned_by,
    }
}

/// True for a request from an Anthropic client (its SDKs always send `anthropic-version`): it
/// gets Anthropic's shapes on the routes both API families share.
fn anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// A model in Anthropic's shape.
fn anthropic_model(alias: &str) -> Value {
    let created = chrono::DateTime::from_timestamp(MODELS_CREATED, 0).unwrap_or_default();
    serde_json::json!({
        "type": "model",
        "id": alias,
        "display_name": alias,
        "created_at": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The catalog's aliases this key may use (its own, its user's and its team's allow-lists), in
/// OpenAI's list shape (embedding models included, as OpenAI lists them) or, for an Anthropic
/// client, Anthropic's (chat models only: Anthropic's API has no embeddings).
pub async fn list_models(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let anthropic = anthropic_client(&headers);
    let aliases: Vec<(&str, &'static str)> = state
        .config
        .catalog
        .models()
        .iter()
        .filter(|m| !anthropic || m.embedding.is_none())
        .flat_map(|m| {
            std::iter::once(&m.alias)
                .chain(&m.other_aliases)
                .map(|a| (a.as_str(), m.owner()))
        })
        .filter(|(alias, _)| caller.may_use(alias))
        .collect();
    if anthropic {
        let aliases: Vec<&str> = aliases.into_iter().map(|(a, _)| a).collect();
        let data: Vec<Value> = aliases.iter().map(|a| anthropic_model(a)).collect();
        return Json(serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": aliases.first(),
            "last_id": aliases.last(),
        }))
        .into_response();
    }
    Json(ModelList {
        object: "list",
        data: aliases
            .into_iter()
            .map(|(alias, owner)| model_object(alias, owner))
            .collect(),
    })
    .into_response()
}

pub async fn get_model(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    state
        .config
        .catalog
        .get(&model)
        .filter(|_| caller.may_use(&model))
        .map(|entry| {
            if anthropic_client(&headers) {
                Json(anthropic_model(&model)).into_response()
            } else {
                Json(model_object(&model, entry.owner())).into_response()
            }
        })
        .ok_or(ApiError::ModelNotFound { model })
}
