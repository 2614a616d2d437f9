//! Lambda function `spend-rollup`, run by an EventBridge schedule. Its jobs (daily rollups,
//! budget resets, expiries, the audit outbox) arrive with issue #8; until then it checks that the
//! database answers, so a deployment shows whether the schedule and its network path work.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use llmlite::config::{DatabaseConfig, ProcessEnv};
use llmlite::{store, telemetry};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_json();
    let database = DatabaseConfig::from_env(&ProcessEnv)?;
    let pool = store::connect_lazy(&database);
    lambda_runtime::run(service_fn(|event: LambdaEvent<EventBridgeEvent<Value>>| {
        let pool = pool.clone();
        async move {
            store::ping(&pool, store::ACQUIRE_TIMEOUT).await?;
            Ok::<_, lambda_runtime::Error>(json!({ "status": "ok", "event_id": event.payload.id }))
        }
    }))
    .await
}
