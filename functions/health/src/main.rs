//! Lambda function `health` (`/health*`): liveness, and readiness against the database.

use llmlite::config::{DatabaseConfig, ProcessEnv};
use llmlite::{health_routes, store, telemetry};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init_json();
    // Health needs only the database: no master key, no model clients.
    let database = DatabaseConfig::from_env(&ProcessEnv)?;
    lambda_http::run(health_routes(store::connect_lazy(&database))).await
}
