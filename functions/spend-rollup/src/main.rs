//! Lambda function `spend-rollup`, run by an EventBridge schedule. Its jobs (daily rollups,
//! budget resets, expiries, the audit outbox) arrive with issue #8; until then it checks that the
//! database answers, so a deployment shows whether the schedule and its network path work.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use llmlite::config::ProcessEnv;
use llmlite::store::{self, Database};
use llmlite::telemetry;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_json();
    let db = Database::from_env(&ProcessEnv).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<EventBridgeEvent<Value>>| {
        let db = db.clone();
        async move {
            db.ping(store::ACQUIRE_TIMEOUT).await?;
            Ok::<_, lambda_runtime::Error>(json!({ "status": "ok", "event_id": event.payload.id }))
        }
    }))
    .await
}
