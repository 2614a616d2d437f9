//! Lambda function `health` (`/health*`): liveness, and readiness against the database.

use llmlite::clients::store::Database;
use llmlite::config::ProcessEnv;
use llmlite::{clients::telemetry, health_routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init_json();
    // Health needs only the database: no master key, no model clients.
    let db = Database::from_env(&ProcessEnv).await?;
    lambda_http::run(health_routes(db)).await
}
