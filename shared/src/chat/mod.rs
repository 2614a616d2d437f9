//! The `chat` function: `POST /v1/chat/completions` (and `/chat/completions`), `GET /v1/models`
//! (and `/models`); it also serves Anthropic's Messages API (`anthropic`), embeddings
//! (`embeddings`) and the Responses API (`responses`, which takes this module's path).
//! Requests are translated to Bedrock Converse (`bedrock`), answers back to
//! OpenAI's shapes (`openai`). `stream: true` uses ConverseStream and answers with server-sent
//! events: chunk by chunk from `llmlite`, as one complete body behind the ALB (which cannot
//! stream a Lambda response).
//!
//! A request's story: parse, admit, guard, call, respond, settle. Once admitted, a request is
//! owned by a settlement [`Guard`](crate::settlement::Guard) that settles it exactly once,
//! after the response, whatever happens; [`record::RequestRecord`] carries what is known of it.

mod complete;
pub mod invocation;
pub mod record;
pub(crate) mod stream;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::HeaderMap;
use serde_json::Value;

use crate::admission::{self, Admitted, Refusal};
use crate::auth::{self, Caller};
use crate::bedrock::{self, Planned};
use crate::catalog::{ModelAlias, ModelEntry};
use crate::error::ApiError;
use crate::http::{ApiJson, RequestId};
use crate::keys::KeyHash;
use crate::openai::{ChatCompletionRequest, ModelList, ModelObject};
use crate::settlement::Guard;
use crate::state::AppState;
pub use invocation::{Delivery, Invocation};
use record::{CallType, Client, RequestRecord, Status};

/// `created` for catalog models, which have no release dates of their own.
const MODELS_CREATED: i64 = 1_677_610_602;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(crate::anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(crate::anthropic::count_tokens),
        )
        .route("/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(crate::embeddings::embeddings))
        .route("/embeddings", post(crate::embeddings::embeddings))
        .route("/v1/responses", post(crate::responses::responses))
        .route("/responses", post(crate::responses::responses))
        .route("/v1/models", get(list_models))
        .route("/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/models/{model}", get(get_model))
        .with_state(state)
}

fn model_object(alias: &str, owned_by: &'static str) -> ModelObject {
    ModelObject {
        id: alias.to_owned(),
        object: "model",
        created: MODELS_CREATED,
        owned_by,
    }
}

/// Refuses a chat request (completions, messages) for an embedding model, before anything is
/// taken.
pub(crate) fn chat_model(model: &ModelEntry) -> Result<(), ApiError> {
    match model.embedding {
        None => Ok(()),
        Some(_) => Err(ApiError::invalid_param(
            "model",
            format!(
                "model `{}` is an embedding model: POST /v1/embeddings serves it",
                model.alias
            ),
        )),
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
async fn list_models(
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

async fn get_model(
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

/// The key a request carries; missing is a 401 before the body is read.
pub struct BearerKey(pub(crate) String);

impl axum::extract::FromRequestParts<AppState> for BearerKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &AppState,
    ) -> Result<Self, ApiError> {
        auth::api_key(&parts.headers)
            .map(|k| BearerKey(k.to_owned()))
            .ok_or(ApiError::MissingApiKey)
    }
}

/// What every response of one completion shares.
#[derive(Debug, Clone)]
struct Answer {
    id: String,
    created: i64,
    /// The alias the client asked for: responses name it, whichever model served.
    alias: String,
    /// A stream ends with a usage chunk (`stream_options.include_usage`).
    include_usage: bool,
}

async fn chat_completions(
    BearerKey(key): BearerKey,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    invocation: Option<Extension<Invocation>>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, Refusal> {
    let invocation = invocation.map(|Extension(i)| i).unwrap_or_default();
    let admission = admit_completion(
        &state,
        &key,
        request_id,
        invocation,
        &headers,
        &mut request,
        CallType::Acompletion,
    )
    .await?;
    respond(state, &request, admission).await
}

/// A request admitted and guarded, its prompt checked: ready for the model.
pub(crate) struct Admission {
    plan: Vec<Planned>,
    answer: Answer,
    admitted: Admitted,
    guard: Guard,
    /// The answer's PII guard, when the policy scans answers.
    output: Option<crate::pii::OutputGuard>,
    pub(crate) invocation: Invocation,
}

/// Parse, admit, guard: everything before the model call, for every route that speaks chat
/// completions inside (`call_type` names the route in its records). Everything that can be
/// refused is refused before anything is taken; once admitted, the request is owned by a
/// settlement guard.
pub(crate) async fn admit_completion(
    state: &AppState,
    key: &str,
    request_id: RequestId,
    invocation: Invocation,
    headers: &HeaderMap,
    request: &mut ChatCompletionRequest,
    call_type: CallType,
) -> Result<Admission, Refusal> {
    let arrived = std::time::Instant::now();
    // Parse: everything that can be refused is refused here, before anything is taken.
    bedrock::validate(request)?;
    stored_fields(request)?;
    let Some(chain) = state.config.catalog.chain(&request.model) else {
        // An unknown model is a 404 only to a caller with a working key.
        if !state.config.master_key.matches(key).await {
            auth::authenticate_key(state, key).await?;
        }
        return Err(ApiError::ModelNotFound {
            model: request.model.clone(),
        }
        .into());
    };
    if let Some(asked) = chain.first() {
        chat_model(asked)?;
    }
    let plan = bedrock::plan(request, &chain, state.config.default_max_tokens)?;
    if invocation.out_of_time() {
        // Nothing is taken: the invocation has no time left for a model call and its settlement.
        return Err(ApiError::UpstreamTimeout(
            "the gateway has no time left in this invocation; retry".into(),
        )
        .into());
    }
    let estimate = admission::estimate_prompt_tokens(request);
    let mut record = RequestRecord::new(
        request_id,
        state.clock.now(),
        ModelAlias::new(&request.model),
        Client::from_headers(headers),
    );
    record.call_type = call_type;

    // Admit: one round trip; a refusal is recorded, with nothing to settle.
    let (admitted, mut record) = admit(
        state,
        key,
        &request.model,
        &plan,
        (request_id, estimate),
        record,
        arrived,
    )
    .await?;
    record.payer = admitted.payer.clone();
    record.end_user = request.user.clone();
    record.metadata = accounting_metadata(request.metadata.as_ref());
    record.estimated_input = estimate;

    // Guard: from here every way out settles exactly once.
    let mut guard = state.settlements.guard(state, record, arrived);
    if let Some(asked) = plan.first() {
        guard.for_model(std::sync::Arc::clone(&asked.model));
    }
    state.hooks.after_admission();
    let (plan, policy) = match guard_prompt(state, request, &admitted, plan, &mut guard) {
        Ok(guarded) => guarded,
        Err(error) => return Err(fail(guard, error)),
    };
    Ok(Admission {
        plan,
        answer: Answer {
            id: format!("chatcmpl-{}", request_id.simple()),
            created: chrono::Utc::now().timestamp(),
            alias: request.model.clone(),
            include_usage: request
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        },
        admitted,
        guard,
        output: crate::pii::OutputGuard::new(&state.pii, policy),
        invocation,
    })
}

/// Call, respond (in chat completions' shapes); settlement follows the response.
pub(crate) async fn respond(
    state: AppState,
    request: &ChatCompletionRequest,
    admission: Admission,
) -> Result<Response, Refusal> {
    let Admission {
        plan,
        answer,
        admitted,
        guard,
        output,
        invocation,
    } = admission;
    if request.stream.unwrap_or(false) {
        stream::respond(state, plan, answer, admitted, guard, invocation, output).await
    } else {
        complete::respond(state, plan, answer, admitted, guard, invocation, output).await
    }
}

/// Admits a request (`admission::admit`, one round trip) for `alias` served by `plan`, with the
/// request's ID and prompt estimate; the record it will settle with comes back beside it. A
/// refusal is recorded (audit record, metrics, log line: nothing to settle) and returned.
pub(crate) async fn admit(
    state: &AppState,
    key: &str,
    alias: &str,
    plan: &[impl bedrock::Candidate],
    (request_id, estimate): (RequestId, u64),
    mut record: RequestRecord,
    arrived: std::time::Instant,
) -> Result<(Admitted, RequestRecord), Refusal> {
    match admission::admit(state, key, alias, plan, request_id, estimate).await {
        Ok(admitted) => Ok((admitted, record)),
        Err(refusal) => {
            record.payer.key_hash = KeyHash::from_key_or_hash(key);
            record.payer.presented_key_hash = record.payer.key_hash.clone();
            record.fail(&refusal.error);
            record.latency_ms = arrived.elapsed().as_secs_f64() * 1000.0;
            state.settlements.report_refusal(state, record);
            Err(refusal)
        }
    }
}

/// Ends an admitted request with `error`: settled (its reservation released, its failure
/// recorded), and the error for the client.
pub(crate) fn fail(guard: Guard, error: ApiError) -> Refusal {
    end(guard, error, Status::Failure)
}

/// Ends an admitted request with `error` and `status`.
pub(crate) fn end(mut guard: Guard, error: ApiError, status: Status) -> Refusal {
    guard.record().fail(&error);
    guard.finish(status);
    error.into()
}

/// The error of a model call cut by the invocation's deadline.
pub(crate) fn deadline_error() -> ApiError {
    ApiError::UpstreamTimeout(
        "the answer did not finish before the gateway's deadline (the function's time limit \
         less its settlement margin); ask for a shorter answer (a lower max_tokens), or stream it"
            .into(),
    )
}

/// Runs `call` until the invocation's deadline, if it has one; `None` when the deadline came.
pub(crate) async fn until_deadline<T>(
    invocation: &Invocation,
    call: impl Future<Output = T>,
) -> Option<T> {
    match invocation.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, call).await.ok(),
        None => Some(call.await),
    }
}

/// The PII guard, before anything leaves: global policy, then the team's, then the key's. Drops
/// the fallbacks the key may not use, and translates again what masking changed. Returns the
/// plan and the policy, which the answer's guard applies too.
fn guard_prompt(
    state: &AppState,
    request: &mut ChatCompletionRequest,
    admitted: &Admitted,
    mut plan: Vec<Planned>,
    guard: &mut Guard,
) -> Result<(Vec<Planned>, crate::pii::Policy), ApiError> {
    let mut position = 0;
    plan.retain(|p| {
        position += 1;
        position == 1 || admitted.allowed.iter().any(|a| a == p.model.alias.as_str())
    });
    let policy = admitted.pii_policy(&state.config.pii_policy, &state.pii.entity_names());
    let report = state.pii.guard(request, &policy);
    let record = guard.record();
    record.pii = report.to_json();
    if report.counts.is_empty() {
        return Ok((plan, policy));
    }
    if let Value::Object(metadata) = &mut record.metadata {
        metadata.insert("llmlite_pii".to_owned(), report.to_json());
    }
    if !report.blocked.is_empty() {
        return Err(ApiError::PiiBlocked {
            entities: report.blocked_summary(),
        });
    }
    let models: Vec<_> = plan.into_iter().map(|p| p.model).collect();
    let plan = bedrock::plan(request, &models, state.config.default_max_tokens)?;
    Ok((plan, policy))
}

/// No NUL or other C0 control character but tab, CR and LF: what a spend row may keep.
pub(crate) fn clean(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && (c as u32) < 0x20 && !matches!(c, '\t' | '\r' | '\n'))
}

/// The longest `user` kept with a spend row.
pub(crate) const MAX_USER_CHARS: usize = 256;

/// Refuses what PostgreSQL cannot store or the spend row should not keep: NUL and other C0
/// control characters (tab, CR and LF aside) in `user` and in `metadata`'s keys and values, and
/// a `user` over 256 characters. A request that got past this could be admitted and then never
/// settle.
fn stored_fields(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    fn clean_json(value: &Value) -> bool {
        match value {
            Value::String(s) => clean(s),
            Value::Array(items) => items.iter().all(clean_json),
            Value::Object(map) => map.iter().all(|(k, v)| clean(k) && clean_json(v)),
            _ => true,
        }
    }
    let refuse = |param: &str, why: &str| Err(ApiError::invalid_param(param, why.to_owned()));
    if let Some(user) = &request.user {
        if !clean(user) {
            return refuse("user", "`user` must not contain control characters");
        }
        if user.chars().count() > MAX_USER_CHARS {
            return refuse("user", "`user` must be at most 256 characters");
        }
    }
    if let Some(metadata) = &request.metadata
        && !metadata.iter().all(|(k, v)| clean(k) && clean_json(v))
    {
        return refuse(
            "metadata",
            "`metadata` keys and values must not contain control characters",
        );
    }
    Ok(())
}

/// The largest `metadata` kept with a spend row; larger is replaced by a marker.
const MAX_ACCOUNTING_METADATA: usize = 16 * 1024;

pub(crate) fn accounting_metadata(metadata: Option<&serde_json::Map<String, Value>>) -> Value {
    match metadata {
        None => serde_json::json!({}),
        Some(map)
            if serde_json::to_string(map).map_or(usize::MAX, |s| s.len())
                <= MAX_ACCOUNTING_METADATA =>
        {
            Value::Object(map.clone())
        }
        Some(_) => serde_json::json!({ "llmlite_note": "metadata over 16 KiB was not kept" }),
    }
}

/// The rate-limit, cost and spend headers of an answer.
pub(crate) fn write_headers(
    headers: &mut HeaderMap,
    admitted: &Admitted,
    record: Option<&RequestRecord>,
    served: Option<&std::sync::Arc<crate::catalog::ModelEntry>>,
) {
    admitted.write_headers(headers);
    let cost = record.map(|r| r.cost);
    if let Some(cost) = cost
        && let Ok(value) = http::HeaderValue::from_str(&cost.to_string())
    {
        headers.insert("x-litellm-response-cost", value);
    }
    // The key's spend with this request's cost, as settlement will make it.
    let spend = admitted.key_spend + cost.unwrap_or_default();
    if let Ok(value) = http::HeaderValue::from_str(&spend.to_string()) {
        headers.insert("x-litellm-key-spend", value);
    }
    if let Some(served) = served
        && let Ok(value) = http::HeaderValue::from_str(served.alias.as_str())
    {
        headers.insert("x-llmlite-served-model", value);
    }
}
