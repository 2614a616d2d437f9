//! Lambda function `key-admin`: the LiteLLM-compatible admin API (`/key/*`, `/user/*`, `/team/*`, `/spend/*`, `/global/*`).

use llmlite::config::ProcessEnv;
use llmlite::{AppState, admin_routes, clients::telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init_json();
    // Built once per execution environment, reused by every invocation it serves.
    let state = AppState::from_env(&ProcessEnv).await?;
    lambda_http::run(admin_routes(state)).await
}
