//! The state the chat and admin handlers share: configuration and the clients built once per
//! process (per Lambda execution environment) and reused across requests.

use std::sync::Arc;

use crate::config::{Config, ConfigError, EnvSource};
use crate::store::Database;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Database,
    pub bedrock: aws_sdk_bedrockruntime::Client,
    pub s3: aws_sdk_s3::Client,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let db = Database::new(&config.database, Some(&config.aws))?;
        let bedrock = aws_sdk_bedrockruntime::Client::new(&config.aws);
        let s3 = aws_sdk_s3::Client::new(&config.aws);
        Ok(AppState {
            config: Arc::new(config),
            db,
            bedrock,
            s3,
        })
    }

    /// Loads and validates the configuration from `env`, then builds the clients.
    pub async fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        Self::new(Config::load(env).await?)
    }
}
