//! Lambda function `chat`: OpenAI-compatible chat completions and models (`/v1/*`, `/chat/*`).

mod settle_after;

use llmlite::config::ProcessEnv;
use llmlite::{AppState, chat_routes, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init_json();
    // Built once per execution environment, reused by every invocation it serves.
    let state = AppState::from_env(&ProcessEnv).await?;
    // Registered before the runtime starts: it settles each request after its response.
    let (router, extension) = settle_after::register(chat_routes(state.clone()), state).await?;
    tokio::try_join!(lambda_http::run(router), extension)?;
    Ok(())
}
