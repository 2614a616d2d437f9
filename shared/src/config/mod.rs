//! Configuration from environment variables, validated at start-up. A bad value stops the process
//! with an error that names the variable (and never echoes a secret).
//!
//! | variable | meaning |
//! |---|---|
//! | `DATABASE_URL` | PostgreSQL URL (required) |
//! | `LLMLITE_DB_POOL_SIZE` | connections per process (default 2: one Lambda serves one request at a time; `llmlite serve`: from its concurrency, see [`ServeConfig`]) |
//! | `LLMLITE_MAX_CONCURRENCY` | `llmlite serve` only: requests in flight at once (default 1000; 0 is the default) |
//! | `LLMLITE_SETTLE_BATCH` | `llmlite serve` only: settlements written in one transaction at most (group commit; default 64; 1: each alone) |
//! | `LLMLITE_DB_IAM_AUTH` | `true`: authenticate with RDS IAM tokens (RDS Proxy), over verified TLS |
//! | `LITELLM_MASTER_KEY` | the admin master key, `sk-...` |
//! | `LITELLM_MASTER_KEY_SECRET_ARN` | or: a Secrets Manager secret holding it |
//! | `LLMLITE_MASTER_KEY_TTL_SECS` | how often the secret is re-read (default 300) |
//! | `LLMLITE_PSEUDONYM_SECRET` | the key erasure pseudonyms are made under (default: a random key kept in the database) |
//! | `LLMLITE_MASTER_KEY_GRACE_SECS` | how long the previous key stays accepted after a rotation (default 3600) |
//! | `AWS_REGION` | default `eu-west-2` |
//! | `LLMLITE_MODELS` | path to a model catalog file (default: the built-in one) |
//! | `LLMLITE_AUDIT_BUCKET`, `LLMLITE_AUDIT_KMS_KEY_ID` | the audit bucket and its SSE-KMS key |
//! | `LLMLITE_AUDIT_DIR` | audit records without a bucket (default `./llmlite-audit`) |
//! | `LLMLITE_PII_POLICY` | JSON `{"ENTITY": "BLOCK"\|"MASK"\|"LOG"\|"ALLOW"}` merged over the default |
//! | `LLMLITE_PII_ENTITIES` | JSON `{"NAME": "regex"}`: custom PII entities |
//! | `LLMLITE_DEFAULT_MAX_TOKENS` | output limit of a request that sets none (default 4096) |
//! | `LLMLITE_SETTLEMENT_MARGIN_MS` | in Lambda, time kept back from the invocation's deadline to end the answer and settle it (default 30000) |
//! | `LLMLITE_DEFAULT_TIER` | `standard` (default), `admin` or `none`: the limits of a key created without a `tier` (see [`crate::admin::keys`]) |
//! | `LLMLITE_KEY_MAX_AGE_DAYS` | a key whose secret is this old is listed for rotation in the daily report (default 90) |
//! | `LLMLITE_ALLOWED_MODEL_PREFIXES` | comma-separated model-ID prefixes (`eu.`): a catalog with any other model ID is refused (empty: no restriction) |
//!
//! The AWS SDK reads its own standard variables too, including `AWS_ENDPOINT_URL_<SERVICE>`.
//!
//! Reading the environment ([`EnvSource`]) and the error naming a bad variable ([`ConfigError`])
//! live in [`crate::env`], below every module that reads its own variables; they are re-exported
//! here, where they were always imported from.

mod aws;
mod database;
mod models;
mod pii;
mod serve;
pub mod sign_in;

use std::sync::Arc;

use aws_config::SdkConfig;

use crate::catalog::ModelCatalog;
use crate::keys::SecretKey;
use crate::keys::Tier;
use crate::master_key::MasterKey;

pub use crate::env::{ConfigError, EnvSource, Overlay, ProcessEnv};
pub use aws::{DEFAULT_REGION, aws_region, aws_sdk_config, local_aws_config};
pub use database::{DEFAULT_POOL_SIZE, DatabaseConfig};
pub use serve::{DEFAULT_MAX_CONCURRENCY, ServeConfig};

use crate::env::non_empty;
use models::{allowed_model_prefixes, check_residency, load_catalog};
use pii::load_pii;

/// Everything the chat and admin functions need.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    /// The admin master key (re-read from its secret every TTL, see [`crate::master_key`]).
    pub master_key: MasterKey,
    pub aws_region: String,
    pub catalog: Arc<ModelCatalog>,
    pub aws: SdkConfig,
    /// The refill period of the RPM and TPM buckets (`LLMLITE_RATE_PERIOD_SECS`, default 60:
    /// per minute). Tests lengthen it so that refill during a run is negligible.
    pub rate_period: std::time::Duration,
    /// `LLMLITE_DEFAULT_MAX_TOKENS` (default 4096): the output limit of a request that sets
    /// none, capped by the model's own maximum. It also sizes the budget reservation.
    pub default_max_tokens: u32,
    /// `LLMLITE_SETTLEMENT_MARGIN_MS` (default 30 s): in Lambda, the model call's deadline is
    /// the invocation's deadline less this, so that the answer can end and settle before Lambda
    /// stops the function. At least [`crate::settlement::SETTLE_WITHIN`] in production.
    pub settlement_margin: std::time::Duration,
    /// `LLMLITE_AUDIT_BUCKET`: where audit records go; without it, `audit_dir`.
    pub audit_bucket: Option<String>,
    /// `LLMLITE_AUDIT_KMS_KEY_ID`: SSE-KMS key for audit objects.
    pub audit_kms_key_id: Option<String>,
    /// `LLMLITE_AUDIT_DIR` (default `./llmlite-audit`): audit records when there is no bucket.
    pub audit_dir: std::path::PathBuf,
    /// `AWS_ENDPOINT_URL_S3`, read here too so that a local S3 is addressed path-style.
    pub s3_endpoint: Option<String>,
    /// The global PII policy: the built-in default with `LLMLITE_PII_POLICY` on top.
    pub pii_policy: crate::pii::Policy,
    /// Custom PII entities from `LLMLITE_PII_ENTITIES`: (name, regex), already checked.
    pub pii_custom: Vec<(String, String)>,
    /// The detectors' settings: `LLMLITE_PII_PHONE_REGIONS` (default
    /// `GB,US,IE,DE,FR,ES,IT,NL`) and `LLMLITE_PII_CONTEXT` (context words per entity).
    pub pii_options: crate::pii::Options,
    /// `LLMLITE_PSEUDONYM_SECRET`: the key erasure's pseudonyms are made under (at least 32
    /// characters); without it the database keeps a random one ([`crate::admin::erasure`]).
    pub pseudonym_secret: Option<SecretKey>,
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, read here as well as by the SDK so that `llmlite dev`
    /// can point Bedrock at its double without touching the process environment.
    pub bedrock_endpoint: Option<String>,
    /// `LLMLITE_DEFAULT_TIER` (default `standard`): the tier whose limits a new key starts from
    /// when its request names no `tier`.
    pub default_tier: Tier,
    /// `LLMLITE_KEY_MAX_AGE_DAYS` (default 90, the LLD's rotation period): keys whose secret is
    /// at least this many days old are due for rotation.
    pub key_max_age_days: u32,
    /// `LLMLITE_ALLOWED_MODEL_PREFIXES`: the model-ID prefixes the catalog was checked against
    /// at start-up (empty: no restriction).
    pub allowed_model_prefixes: Vec<String>,
    /// How people sign in to the console ([`sign_in`]).
    pub sign_in: sign_in::SignIn,
}

impl Config {
    /// Reads and validates the whole configuration from `env`.
    pub async fn load(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let region = aws_region(env)?;
        let aws = aws_sdk_config(&region).await;
        Self::load_with_aws(env, aws).await
    }

    /// As [`Config::load`], with an AWS configuration built by the caller.
    pub async fn load_with_aws(env: &impl EnvSource, aws: SdkConfig) -> Result<Self, ConfigError> {
        let aws_region = aws_region(env)?;
        let database = DatabaseConfig::from_env(env)?;
        let catalog = load_catalog(env)?;
        let allowed_model_prefixes = allowed_model_prefixes(env)?;
        check_residency(&catalog, &allowed_model_prefixes)?;
        let catalog = Arc::new(catalog);
        let default_tier = default_tier(env)?;
        let key_max_age_days = match non_empty(env, "LLMLITE_KEY_MAX_AGE_DAYS") {
            None => DEFAULT_KEY_MAX_AGE_DAYS,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=3650).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("LLMLITE_KEY_MAX_AGE_DAYS", "must be 1 to 3650 days")
                })?,
        };
        let master_key = MasterKey::from_env(env, &aws).await?;
        let sign_in = sign_in::SignIn::from_env(env, &aws).await?;
        let pseudonym_secret = match non_empty(env, "LLMLITE_PSEUDONYM_SECRET") {
            None => None,
            Some(secret) if secret.len() >= 32 => Some(SecretKey::new(secret)),
            Some(_) => {
                return Err(ConfigError::new(
                    "LLMLITE_PSEUDONYM_SECRET",
                    "must be at least 32 characters",
                ));
            }
        };
        let bedrock_endpoint = non_empty(env, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME");
        if bedrock_endpoint
            .as_deref()
            .is_some_and(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Err(ConfigError::new(
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                "must be an http:// or https:// URL",
            ));
        }
        let rate_period = match non_empty(env, "LLMLITE_RATE_PERIOD_SECS") {
            None => 60,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("LLMLITE_RATE_PERIOD_SECS", "must be 1 to 86400 seconds")
                })?,
        };
        let default_max_tokens = match non_empty(env, "LLMLITE_DEFAULT_MAX_TOKENS") {
            None => DEFAULT_MAX_TOKENS,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("LLMLITE_DEFAULT_MAX_TOKENS", "must be 1 to 1000000 tokens")
                })?,
        };
        let settlement_margin = match non_empty(env, "LLMLITE_SETTLEMENT_MARGIN_MS") {
            None => DEFAULT_SETTLEMENT_MARGIN,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=600_000).contains(n))
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| {
                    ConfigError::new(
                        "LLMLITE_SETTLEMENT_MARGIN_MS",
                        "must be 1 to 600000 milliseconds",
                    )
                })?,
        };
        let (pii_custom, pii_policy, pii_options) = load_pii(env)?;
        let audit_bucket = non_empty(env, "LLMLITE_AUDIT_BUCKET");
        if audit_bucket.as_deref().is_some_and(|b| {
            !(3..=63).contains(&b.len())
                || !b
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        }) {
            return Err(ConfigError::new(
                "LLMLITE_AUDIT_BUCKET",
                "is not an S3 bucket name",
            ));
        }
        Ok(Config {
            sign_in,
            audit_bucket,
            audit_kms_key_id: non_empty(env, "LLMLITE_AUDIT_KMS_KEY_ID"),
            audit_dir: non_empty(env, "LLMLITE_AUDIT_DIR").map_or_else(
                || std::path::PathBuf::from("llmlite-audit"),
                std::path::PathBuf::from,
            ),
            s3_endpoint: non_empty(env, "AWS_ENDPOINT_URL_S3"),
            database,
            master_key,
            pseudonym_secret,
            aws_region,
            catalog,
            aws,
            pii_policy,
            pii_custom,
            pii_options,
            rate_period: std::time::Duration::from_secs(rate_period),
            default_max_tokens,
            settlement_margin,
            bedrock_endpoint,
            default_tier,
            key_max_age_days,
            allowed_model_prefixes,
        })
    }
}

/// The output limit of a request that sets none: enough for an ordinary long answer, far
/// below the newest models' 64,000, which would make every request reserve over a dollar.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The time kept back from a Lambda invocation's deadline by default: settlement's own bound
/// ([`crate::settlement::SETTLE_WITHIN`]) and a few seconds to end the answer.
pub const DEFAULT_SETTLEMENT_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The LLD's rotation period: keys older than this are listed for rotation.
pub const DEFAULT_KEY_MAX_AGE_DAYS: u32 = 90;

/// `LLMLITE_DEFAULT_TIER`: `standard` unless set; `none` only when written out.
fn default_tier(env: &impl EnvSource) -> Result<Tier, ConfigError> {
    match non_empty(env, "LLMLITE_DEFAULT_TIER") {
        None => Ok(Tier::Standard),
        Some(v) => Tier::parse(&v).ok_or_else(|| {
            ConfigError::new(
                "LLMLITE_DEFAULT_TIER",
                format!("`{v}` is not a tier: use standard, admin or none"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map as env;

    #[test]
    fn the_default_tier_is_standard_and_anything_unknown_is_refused() {
        assert_eq!(default_tier(&env(&[])).unwrap(), Tier::Standard);
        assert_eq!(
            default_tier(&env(&[("LLMLITE_DEFAULT_TIER", "none")])).unwrap(),
            Tier::Unlimited
        );
        assert_eq!(
            default_tier(&env(&[("LLMLITE_DEFAULT_TIER", "gold")]))
                .unwrap_err()
                .variable,
            "LLMLITE_DEFAULT_TIER"
        );
    }
}
