//! The chat function's Lambda entry points, one per way a response leaves: `chat` behind the ALB
//! (the response handed over whole, at most 1 MB), and `chat-stream` behind API Gateway's REST
//! response streaming (chunk by chunk, up to 15 minutes). Both serve the same routes, and both
//! settle each request after its response, before Lambda may freeze the environment.

mod settle_after;

use std::time::Duration;

use axum::Router;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use llmlite::config::ProcessEnv;
use llmlite::pipeline::{Delivery, Invocation};
use llmlite::{AppState, chat_routes, clients::telemetry};

/// How the function hands its responses to Lambda.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One response document, as an ALB's Lambda target answers.
    Buffered,
    /// Lambda response streaming (`InvokeWithResponseStream`): a metadata prelude, eight NUL
    /// bytes, then the body as it is produced.
    Streaming,
}

/// Runs the function: state built once per execution environment, the settling extension
/// registered before the runtime starts.
pub async fn run(mode: Mode) -> Result<(), lambda_http::Error> {
    telemetry::init_json();
    let state = AppState::from_env(&ProcessEnv).await?;
    let (router, extension) = settle_after::register(router(state.clone(), mode), state).await?;
    match mode {
        Mode::Buffered => tokio::try_join!(lambda_http::run(router), extension)?,
        Mode::Streaming => {
            tokio::try_join!(lambda_http::run_with_streaming_response(router), extension)?
        }
    };
    Ok(())
}

/// The chat routes as the function serves them: each request told when its invocation ends
/// (Lambda's deadline less the settlement margin) and how its response is delivered.
pub fn router(state: AppState, mode: Mode) -> Router {
    let margin = state.config.settlement_margin;
    let delivery = match mode {
        Mode::Buffered => Delivery::ALB,
        Mode::Streaming => Delivery::Streamed,
    };
    let entry =
        axum::middleware::from_fn(move |request, next| invocation(margin, delivery, request, next));
    // Around the router, not inside it: the path may change, and routing must see the new one.
    Router::new().fallback_service(tower::Layer::layer(&entry, chat_routes(state)))
}

async fn invocation(
    margin: Duration,
    delivery: Delivery,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let deadline_ms = request.lambda_context_ref().map_or(0, |c| c.deadline);
    if let Some(path) = resource_path(&request) {
        let query = request.uri().query().map(|q| format!("?{q}"));
        if let Ok(uri) = format!("{path}{}", query.unwrap_or_default()).parse() {
            *request.uri_mut() = uri;
        }
    }
    request
        .extensions_mut()
        .insert(Invocation::lambda(deadline_ms, margin, delivery));
    next.run(request).await
}

/// For an API Gateway REST event, the path the client asked for. `lambda_http` puts the stage
/// name in front of it (`/live/v1/...`), which is right for the `execute-api` URL but not for
/// the custom domain the streaming API is reached by (its default endpoint is disabled).
fn resource_path(request: &axum::extract::Request) -> Option<String> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(_)) => {
            let raw = request.raw_http_path();
            (!raw.is_empty() && raw != request.uri().path()).then(|| raw.to_owned())
        }
        _ => None,
    }
}
