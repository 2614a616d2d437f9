//! The request pipeline every model API shares: chat completions, Anthropic's Messages,
//! Responses and embeddings are [`Adapter`]s of it. A request's story, written once:
//!
//! 1. authenticate (the key from the headers; missing is a 401 before the body is read);
//! 2. parse (the adapter reads its body; everything that can be refused is refused here);
//! 3. the model chain (an unknown model is a 404 only to a caller whose key works), planned by
//!    the adapter for each model;
//! 4. record and admit (one SQL round trip; a refusal is recorded, with nothing to settle);
//! 5. from here a settlement [`Guard`] owns the request: every way out settles exactly once;
//! 6. the fallbacks the key may not use are dropped; the PII guard runs over every text the model
//!    will see (block, or mask and plan again), then the key's or team's Bedrock guardrail, if it
//!    names one ([`guardrail`]: block, or mask and plan again);
//! 7. the adapter calls the model and answers, whole ([`call::complete`]) or streamed
//!    ([`relay::stream`]), under the invocation's deadline; settlement follows the response.
//!
//! Errors are rendered in the adapter's [`ErrorShape`]. Adding an API is adding an adapter: this
//! module does not change.

pub mod admission;
pub mod call;
pub mod guardrail;
pub mod invocation;
pub mod relay;

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth;
use crate::catalog::{ModelAlias, ModelEntry};
use crate::clients::attribution::Attribution;
use crate::clients::bedrock::Candidate;
use crate::clients::guardrail::{Guardrail, Source};
use crate::clients::traces::{self, Trace};
use crate::error::{ApiError, ErrorShape, Refusal};
use crate::http::RequestId;
use crate::keys::KeyHash;
use crate::pii::{OutputGuard, Policy, Report, Scanner};
use crate::record::{CallType, Client, RequestRecord, Status};
use crate::settlement::Guard;
use crate::state::AppState;
pub use admission::Admitted;
pub use invocation::{Delivery, Invocation};

/// Which models serve an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Models {
    /// Chat models, with their fallback chains.
    Chat,
    /// An embedding model, on its own.
    Embedding,
}

/// What a request keeps with its spend row (never in the audit record).
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    /// The client's end user (`user`, `metadata.user_id`).
    pub end_user: Option<String>,
    /// The request's `metadata`, within [`MAX_ACCOUNTING_METADATA`].
    pub metadata: Option<Map<String, Value>>,
}

/// One API on the pipeline: how its requests are read, planned, guarded and answered.
pub trait Adapter: Sized + Send + Sync + 'static {
    /// The body as it arrives (deserialized from JSON).
    type Body: DeserializeOwned + Send;
    /// The request as the adapter serves it.
    type Request: Send + Sync + 'static;
    /// One model of the request's chain, with the request translated for it.
    type Planned: Candidate + Send + Sync + 'static;

    /// The spend row's `call_type`.
    const CALL_TYPE: CallType;
    /// The shape of its errors.
    const SHAPE: ErrorShape;
    /// The models that serve it.
    const MODELS: Models;

    /// Reads and checks the body (and the request's headers); every refusal names its field.
    fn parse(&mut self, body: Self::Body, headers: &HeaderMap) -> Result<Self::Request, ApiError>;

    /// The model the client asked for.
    fn model(request: &Self::Request) -> &str;

    /// The prompt's tokens, estimated for admission.
    fn estimate(request: &Self::Request) -> u64;

    /// What the spend row keeps of the request.
    fn accounting(request: &Self::Request) -> Accounting;

    /// The request translated for each model of `chain` (the first is the one asked for, which
    /// the request must fit); refuses what cannot be delivered through `invocation`.
    fn plan(
        &self,
        state: &AppState,
        request: &Self::Request,
        chain: &[Arc<ModelEntry>],
        invocation: &Invocation,
    ) -> Result<Vec<Self::Planned>, ApiError>;

    /// The PII guard over every text the model will see.
    fn guard_pii(request: &mut Self::Request, scanner: &Scanner, policy: &Policy) -> Report;

    /// The texts a Bedrock guardrail judges: the conversation the model will read
    /// ([`guardrail::chat_texts`], [`guardrail::messages_texts`]).
    fn guardrail_texts(request: &mut Self::Request) -> Vec<&mut String>;

    /// Calls the model and answers: [`call::complete`] or [`relay::stream`].
    fn respond(&self, call: Call<Self>) -> impl Future<Output = Result<Response, Refusal>> + Send;

    /// An error in the API's own terms (the Responses API names its own fields, which it
    /// learnt in [`Adapter::parse`]).
    fn refine(&self, error: ApiError) -> ApiError {
        error
    }
}

/// What the pipeline knows of a request before its body is read: its key, its ID, its
/// invocation, and its headers.
pub struct Inbound {
    pub key: Option<String>,
    pub request_id: RequestId,
    pub invocation: Invocation,
    pub headers: HeaderMap,
    pub arrived: std::time::Instant,
    /// The route that matched (its trace span's `http.route`).
    pub route: Option<axum::extract::MatchedPath>,
}

impl<S: Send + Sync> FromRequestParts<S> for Inbound {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Inbound {
            key: auth::api_key(&parts.headers).map(str::to_owned),
            request_id: parts
                .extensions
                .get::<RequestId>()
                .copied()
                .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4())),
            invocation: parts
                .extensions
                .get::<Invocation>()
                .copied()
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            arrived: std::time::Instant::now(),
            route: parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .cloned(),
        })
    }
}

/// An admitted, guarded request, ready for the model: what an adapter answers with.
pub struct Call<A: Adapter> {
    pub state: AppState,
    pub request: A::Request,
    /// The models it may be served by, in order, each with the request translated for it.
    pub plan: Vec<A::Planned>,
    pub admitted: Admitted,
    pub guard: Guard,
    pub invocation: Invocation,
    /// The answer's PII guard, when the policy scans answers.
    pub output: Option<OutputGuard>,
    /// The key's or team's Bedrock guardrail, which judges the answer too.
    pub guardrail: Option<Guardrail>,
    /// The name the client asked for: answers name it, whichever model served.
    pub alias: String,
    pub request_id: RequestId,
}

/// The axum handler of an adapter's route: the pipeline, for `A`.
pub async fn handler<A: Adapter + Default>(
    axum::extract::State(state): axum::extract::State<AppState>,
    inbound: Inbound,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(A::default(), state, inbound, body).await
}

/// The pipeline, for `adapter`: the answer, or the error in the adapter's shape. The request is
/// one trace (see [`crate::clients::traces`]) when traces are on.
pub async fn handle<A: Adapter>(
    mut adapter: A,
    state: AppState,
    inbound: Inbound,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = traces::request_span(
        &inbound.headers,
        inbound.route.as_ref().map_or("", |r| r.as_str()),
        &inbound.request_id,
        match A::MODELS {
            Models::Chat => "chat",
            Models::Embedding => "embeddings",
        },
    );
    let response = match serve(&mut adapter, state, inbound, body)
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(refusal) => {
            let error = adapter.refine(refusal.error);
            traces::refused(&span, error.kind(), error.status().as_u16());
            Refusal { error, ..refusal }
                .in_shape(A::SHAPE)
                .into_response()
        }
    };
    if !span.is_disabled() {
        span.set_attribute(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
    }
    response
}

async fn serve<A: Adapter>(
    adapter: &mut A,
    state: AppState,
    inbound: Inbound,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let Inbound {
        key,
        request_id,
        invocation,
        arrived,
        headers,
        ..
    } = inbound;
    let headers = &headers;
    // Authenticate: a key must be there before the body is read.
    let key = key.ok_or(ApiError::MissingApiKey)?;
    // Parse and plan: everything that can be refused is refused here, before anything is taken.
    let body: A::Body = crate::http::json_body(headers, body)?;
    let mut request = adapter.parse(body, headers)?;
    let alias = A::model(&request).to_owned();
    let chain = chain(&state, &key, &alias, A::MODELS).await?;
    let plan = adapter.plan(&state, &request, &chain, &invocation)?;
    let parsed = arrived.elapsed();
    if invocation.out_of_time() {
        // Nothing is taken: the invocation has no time left for a model call and its settlement.
        return Err(ApiError::UpstreamTimeout(
            "the gateway has no time left in this invocation; retry".into(),
        )
        .into());
    }
    let estimate = A::estimate(&request);
    let mut record = RequestRecord::new(
        request_id,
        state.clock.now(),
        ModelAlias::new(&alias),
        Client::from_headers(headers),
    );
    record.call_type = A::CALL_TYPE;
    record.service_tier = plan.first().and_then(Candidate::service_tier);
    record.trace = Trace::current();

    // Admit: one round trip; a refusal is recorded, with nothing to settle.
    let admitting = std::time::Instant::now();
    let admission = admission::admit(&state, &key, &alias, &plan, request_id, estimate)
        .instrument(tracing::info_span!(target: traces::TARGET, "admission"))
        .await;
    record.stages.parse_ms = ms(parsed);
    record.stages.admit_ms = ms(admitting.elapsed());
    record.trace.note(
        "llmlite.admission",
        match &admission {
            Ok(_) => "admitted",
            Err(refusal) => refusal.error.kind(),
        },
    );
    let admitted = match admission {
        Ok(admitted) => admitted,
        Err(refusal) => {
            record.payer.key_hash = KeyHash::from_key_or_hash(&key);
            record.payer.presented_key_hash = record.payer.key_hash.clone();
            record.fail(&refusal.error);
            record.latency_ms = arrived.elapsed().as_secs_f64() * 1000.0;
            state.settlements.report_refusal(record);
            return Err(refusal);
        }
    };
    let accounting = A::accounting(&request);
    record.payer = admitted.payer.clone();
    record.end_user = accounting.end_user;
    record.metadata = accounting_metadata(accounting.metadata.as_ref());
    record.estimated_input = estimate;

    // Guard: from here every way out settles exactly once.
    let mut guard = state.settlements.guard(record, arrived);
    let plan = allowed(plan, &admitted);
    match plan.first() {
        Some(asked) => guard.for_model(Arc::clone(Candidate::model(asked))),
        // Admission refuses a model with no route the residency allows; this is not reached.
        None => {
            let error = ApiError::Internal("no route to the model is allowed".into());
            return Err(call::end(guard, error, Status::Failure));
        }
    }
    #[cfg(feature = "dev")]
    state.hooks.after_admission();

    // The PII guard, before anything leaves: global policy, then the team's, then the key's.
    let guarding = std::time::Instant::now();
    let policy = admitted.pii_policy(&state.config.pii_policy, state.pii.entity_names());
    let report = tracing::info_span!(target: traces::TARGET, "pii_guard")
        .in_scope(|| A::guard_pii(&mut request, &state.pii, &policy));
    let record = guard.record();
    record.pii = report.to_json();
    let plan = if report.counts.is_empty() {
        plan
    } else {
        if let Value::Object(metadata) = &mut record.metadata {
            metadata.insert("llmlite_pii".to_owned(), report.to_json());
        }
        if !report.blocked.is_empty() {
            let error = ApiError::PiiBlocked {
                entities: report.blocked_summary(),
            };
            return Err(call::end(guard, error, Status::Failure));
        }
        // Masking changed the prompt: it is planned again, for the same models.
        match replan(adapter, &state, &request, &plan, &invocation) {
            Ok(plan) => plan,
            Err(error) => return Err(call::end(guard, error, Status::Failure)),
        }
    };
    guard.record().stages.pii_ms = ms(guarding.elapsed());
    let output = OutputGuard::new(&state.pii, policy);

    // The key's or team's Bedrock guardrail, after the (free) PII guard: its verdict on the
    // prompt, before anything reaches a model.
    let guardrail = match admitted.guardrail() {
        Ok(named) => named.map(|guardrail| Guardrail {
            guardrail,
            prices: state.config.catalog.guardrails,
        }),
        Err(error) => return Err(call::end(guard, error, Status::Failure)),
    };
    let plan = match &guardrail {
        None => plan,
        Some(guardrail) => {
            let judging = std::time::Instant::now();
            let texts = A::guardrail_texts(&mut request);
            let judged = guardrail::judge(
                &state,
                guardrail,
                invocation.deadline,
                guard.record(),
                Source::Input,
                texts,
            )
            .await;
            guard.record().stages.guardrail_ms = ms(judging.elapsed());
            match judged {
                Ok(false) => plan,
                Ok(true) => match replan(adapter, &state, &request, &plan, &invocation) {
                    Ok(plan) => plan,
                    Err(error) => return Err(call::end(guard, error, Status::Failure)),
                },
                Err(error) => return Err(call::end(guard, error, Status::Failure)),
            }
        }
    };
    // Every Bedrock call the adapter makes for it carries the request's tags.
    let tags = Attribution::new(
        request_id,
        admitted.payer.key_hash.as_ref(),
        admitted.payer.team_id.as_deref(),
    );
    let answer = adapter.respond(Call {
        state,
        request,
        plan,
        admitted,
        guard,
        invocation,
        output,
        guardrail,
        alias,
        request_id,
    });
    tags.scope(answer).await
}

/// `plan` made again for the same models, after a guard changed the request.
fn replan<A: Adapter>(
    adapter: &A,
    state: &AppState,
    request: &A::Request,
    plan: &[A::Planned],
    invocation: &Invocation,
) -> Result<Vec<A::Planned>, ApiError> {
    let models: Vec<Arc<ModelEntry>> = plan
        .iter()
        .map(|p| Arc::clone(Candidate::model(p)))
        .collect();
    adapter.plan(state, request, &models, invocation)
}

/// A duration in milliseconds, as records keep them.
fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The model chain for `alias`: the model (which must serve the API) and its fallbacks. An
/// unknown model is a 404, but only to a caller whose key works.
pub async fn chain(
    state: &AppState,
    key: &str,
    alias: &str,
    models: Models,
) -> Result<Vec<Arc<ModelEntry>>, ApiError> {
    let found = match models {
        Models::Chat => state.config.catalog.chain(alias),
        Models::Embedding => state
            .config
            .catalog
            .get(alias)
            .map(|model| vec![Arc::clone(model)]),
    };
    let Some(chain) = found else {
        if !state.config.master_key.matches(key).await {
            auth::authenticate_key(state, key).await?;
        }
        return Err(ApiError::ModelNotFound {
            model: alias.to_owned(),
        });
    };
    match (
        models,
        chain.first().map(|m| (m.alias.as_str(), &m.embedding)),
    ) {
        (Models::Chat, Some((name, Some(_)))) => Err(ApiError::invalid_param(
            "model",
            format!("model `{name}` is an embedding model: POST /v1/embeddings serves it"),
        )),
        (Models::Embedding, Some((name, None))) => Err(ApiError::invalid_param(
            "model",
            format!(
                "model `{name}` is a chat model, not an embedding model: POST \
                 /v1/chat/completions serves it (GET /v1/models lists the models)"
            ),
        )),
        _ => Ok(chain),
    }
}

/// The plan without the fallbacks the key, its user or its team may not use (the model asked
/// for was checked by admission), and without the routes (inference profiles) their residency
/// does not allow.
fn allowed<P: Candidate>(plan: Vec<P>, admitted: &Admitted) -> Vec<P> {
    let asked = plan.first().map(|p| Candidate::model(p).alias.clone());
    plan.into_iter()
        .filter(|p| {
            let model = Candidate::model(p);
            (Some(&model.alias) == asked.as_ref()
                || admitted.allowed.iter().any(|a| a == model.alias.as_str()))
                && admitted.residency_allows(model.geography())
        })
        .collect()
}

/// No NUL or other C0 control character but tab, CR and LF: what a spend row may keep.
fn clean(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && (c as u32) < 0x20 && !matches!(c, '\t' | '\r' | '\n'))
}

/// The longest end user kept with a spend row.
const MAX_USER_CHARS: usize = 256;

/// The prefix of the spend row metadata's keys the gateway writes.
const GATEWAY_METADATA: &str = "llmlite_";

/// The largest `metadata` kept with a spend row; larger is replaced by a marker.
pub const MAX_ACCOUNTING_METADATA: usize = 16 * 1024;

/// The request's `metadata` as the spend row keeps it. Keys starting `llmlite_` are the
/// gateway's own (PII counts, the guardrail, the time to first token): a client's are dropped,
/// so none can pass for the gateway's.
fn accounting_metadata(metadata: Option<&Map<String, Value>>) -> Value {
    match metadata {
        None => serde_json::json!({}),
        Some(map)
            if serde_json::to_string(map).map_or(usize::MAX, |s| s.len())
                <= MAX_ACCOUNTING_METADATA =>
        {
            Value::Object(
                map.iter()
                    .filter(|(key, _)| !key.starts_with(GATEWAY_METADATA))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            )
        }
        Some(_) => serde_json::json!({ "llmlite_note": "metadata over 16 KiB was not kept" }),
    }
}

/// Refuses an end user PostgreSQL cannot store or the spend row should not keep: control
/// characters (tab, CR and LF aside), or over 256 characters. `param` names the field.
pub fn check_end_user(user: Option<&str>, param: &str) -> Result<(), ApiError> {
    let Some(user) = user else { return Ok(()) };
    if !clean(user) {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must not contain control characters"),
        ));
    }
    if user.chars().count() > MAX_USER_CHARS {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be at most 256 characters"),
        ));
    }
    Ok(())
}

/// Refuses `metadata` whose keys or values hold control characters (tab, CR and LF aside): a
/// request that got past this could be admitted and then never settle.
pub fn check_metadata(metadata: Option<&Map<String, Value>>) -> Result<(), ApiError> {
    fn clean_json(value: &Value) -> bool {
        match value {
            Value::String(s) => clean(s),
            Value::Array(items) => items.iter().all(clean_json),
            Value::Object(map) => map.iter().all(|(k, v)| clean(k) && clean_json(v)),
            _ => true,
        }
    }
    match metadata {
        Some(metadata) if !metadata.iter().all(|(k, v)| clean(k) && clean_json(v)) => {
            Err(ApiError::invalid_param(
                "metadata",
                "`metadata` keys and values must not contain control characters",
            ))
        }
        Some(metadata) if !metadata.values().all(crate::http::numbers_read_back) => Err(
            ApiError::invalid_param("metadata", "`metadata` numbers must be within ±1e300"),
        ),
        _ => Ok(()),
    }
}
