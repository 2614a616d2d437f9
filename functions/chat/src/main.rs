//! Lambda function `chat`: OpenAI-compatible chat completions and models (`/v1/*`, `/chat/*`).

use llmlite::config::ProcessEnv;
use llmlite::{AppState, chat_routes, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init_json();
    // Built once per execution environment, reused by every invocation it serves.
    let state = AppState::from_env(&ProcessEnv).await?;
    lambda_http::run(chat_routes(state)).await
}
