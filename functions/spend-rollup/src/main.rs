//! Lambda function `spend-rollup`: run by an EventBridge schedule for the daily rollups, budget
//! resets, expiries, the audit outbox, cost reports and retention (`llmlite::rollup`), and by
//! CloudFormation on deploy for the database migrations (`llmlite::deploy`).

use lambda_runtime::{LambdaEvent, service_fn};
use llmlite::config::ProcessEnv;
use llmlite::{AppState, clients::telemetry, rollup};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_json();
    let state = AppState::from_env(&ProcessEnv).await?;
    let reports = rollup::reports_sink(&state, &ProcessEnv);
    let retention = rollup::retention_days(&ProcessEnv);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (state, reports) = (state.clone(), reports.clone());
        async move { rollup::handle_event(&state, &reports, retention, event.payload).await }
    }))
    .await
}
