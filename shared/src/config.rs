//! Configuration from environment variables, validated at start-up. A bad value stops the process
//! with an error that names the variable (and never echoes a secret).
//!
//! | variable | meaning |
//! |---|---|
//! | `DATABASE_URL` | PostgreSQL URL (required) |
//! | `LLMLITE_DB_POOL_SIZE` | connections per process (default 2: one Lambda serves one request at a time) |
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

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::catalog::ModelCatalog;
use crate::keys::{SecretKey, Tier};
use crate::master_key::MasterKey;

pub const DEFAULT_REGION: &str = "eu-west-2";
pub const DEFAULT_POOL_SIZE: u32 = 2;

/// Where configuration comes from: the process environment, or a map in tests.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Variables set here win over the ones underneath (`llmlite dev` injects its own database).
pub struct Overlay<'a, E: EnvSource> {
    pub overrides: HashMap<String, String>,
    pub base: &'a E,
}

impl<E: EnvSource> EnvSource for Overlay<'_, E> {
    fn var(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| self.base.var(name))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            variable,
            reason: reason.into(),
        }
    }
}

/// A non-empty value, or `None` for unset or blank.
pub(crate) fn non_empty(env: &impl EnvSource, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// How to reach PostgreSQL. `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub options: PgConnectOptions,
    pub pool_size: u32,
    /// Authenticate with short-lived RDS IAM tokens instead of a password.
    pub iam_auth: bool,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .field("pool_size", &self.pool_size)
            .field("iam_auth", &self.iam_auth)
            .finish()
    }
}

impl DatabaseConfig {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let url = non_empty(env, "DATABASE_URL")
            .ok_or_else(|| ConfigError::new("DATABASE_URL", "is not set"))?;
        // sqlx's message can quote the URL, password included: give our own.
        let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let options = PgConnectOptions::from_str(&url)
            .ok()
            .filter(|_| scheme_ok)
            .ok_or_else(|| {
                ConfigError::new(
                    "DATABASE_URL",
                    "is not a valid PostgreSQL URL (postgres://user:password@host:port/database)",
                )
            })?;
        let pool_size = match non_empty(env, "LLMLITE_DB_POOL_SIZE") {
            None => DEFAULT_POOL_SIZE,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "LLMLITE_DB_POOL_SIZE",
                        "must be a whole number from 1 to 100",
                    )
                })?,
        };
        let iam_auth = match non_empty(env, "LLMLITE_DB_IAM_AUTH").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => {
                return Err(ConfigError::new(
                    "LLMLITE_DB_IAM_AUTH",
                    "must be true or false",
                ));
            }
        };
        let options = if iam_auth {
            if url_has_password(&url) {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "must not carry a password when LLMLITE_DB_IAM_AUTH is true",
                ));
            }
            // IAM tokens travel as passwords: only over TLS, to a verified server. RDS Proxy's
            // certificates chain to the Amazon roots, which are in the bundled root store.
            options.ssl_mode(PgSslMode::VerifyFull)
        } else {
            options
        };
        Ok(DatabaseConfig {
            options,
            pool_size,
            iam_auth,
        })
    }
}

impl DatabaseConfig {
    /// The same server and settings, logged in as `user` with one connection (the migrations
    /// handler's admin and owner sessions). With IAM authentication the token is `user`'s.
    pub fn as_user(&self, user: &str) -> DatabaseConfig {
        DatabaseConfig {
            options: self.options.clone().username(user),
            pool_size: 1,
            iam_auth: self.iam_auth,
        }
    }
}

/// True when the URL's authority has `user:password@`.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

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
}

pub fn aws_region(env: &impl EnvSource) -> Result<String, ConfigError> {
    let region = non_empty(env, "AWS_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let valid = region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.contains('-');
    if valid {
        Ok(region)
    } else {
        Err(ConfigError::new(
            "AWS_REGION",
            format!("`{region}` is not an AWS region name such as eu-west-2"),
        ))
    }
}

/// AWS configuration with fixed, fake credentials, for talking to local doubles only (`llmlite
/// dev` and the tests): no credential chain is consulted, so nothing reaches for a metadata
/// service or a profile.
pub async fn local_aws_config(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(aws_sdk_bedrockruntime::config::Credentials::new(
            "LLMLITELOCAL",
            "llmlite-local-secret",
            None,
            None,
            "llmlite-local",
        ))
        .load()
        .await
}

/// The shared AWS SDK configuration for `region`. It honours the SDK's standard environment
/// variables (credentials, `AWS_ENDPOINT_URL_<SERVICE>`, profiles).
pub async fn aws_sdk_config(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .load()
        .await
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

/// `LLMLITE_ALLOWED_MODEL_PREFIXES`: comma-separated, blanks dropped.
fn allowed_model_prefixes(env: &impl EnvSource) -> Result<Vec<String>, ConfigError> {
    let prefixes: Vec<String> = non_empty(env, "LLMLITE_ALLOWED_MODEL_PREFIXES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if prefixes
        .iter()
        .any(|p| p.len() > 128 || p.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        return Err(ConfigError::new(
            "LLMLITE_ALLOWED_MODEL_PREFIXES",
            "must be comma-separated model-ID prefixes such as `eu.`",
        ));
    }
    Ok(prefixes)
}

/// The part of a model ID its geography prefix starts: the ID itself, or an ARN's resource name
/// (`arn:aws:bedrock:eu-west-2:1:inference-profile/eu.anthropic...` is checked as
/// `eu.anthropic...`).
fn model_id_name(id: &str) -> &str {
    if id.starts_with("arn:") {
        id.rsplit('/').next().unwrap_or(id)
    } else {
        id
    }
}

/// Refuses a catalog with a model ID (a fallback's included: fallbacks are catalog entries)
/// outside `prefixes`, naming the model, so that no request can be routed beyond the allowed
/// geography. No prefixes: no restriction.
fn check_residency(catalog: &ModelCatalog, prefixes: &[String]) -> Result<(), ConfigError> {
    if prefixes.is_empty() {
        return Ok(());
    }
    let Some(outside) = catalog.models().iter().find(|m| {
        let name = model_id_name(&m.bedrock_model_id);
        !prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }) else {
        return Ok(());
    };
    let fallback_of: Vec<&str> = catalog
        .models()
        .iter()
        .filter(|m| m.fallbacks.contains(&outside.alias))
        .map(|m| m.alias.as_str())
        .collect();
    let role = if fallback_of.is_empty() {
        String::new()
    } else {
        format!(", the fallback of `{}`,", fallback_of.join("`, `"))
    };
    Err(ConfigError::new(
        "LLMLITE_ALLOWED_MODEL_PREFIXES",
        format!(
            "model `{}`{role} has the model ID `{}`, which starts with none of the allowed \
             prefixes `{}`: requests for it could be processed outside the allowed geography",
            outside.alias,
            outside.bedrock_model_id,
            prefixes.join(",")
        ),
    ))
}

fn load_catalog(env: &impl EnvSource) -> Result<ModelCatalog, ConfigError> {
    match non_empty(env, "LLMLITE_MODELS") {
        None => ModelCatalog::builtin()
            .map_err(|e| ConfigError::new("LLMLITE_MODELS", format!("built-in catalog: {e}"))),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new("LLMLITE_MODELS", format!("{path}: {e}")))?;
            ModelCatalog::parse(&text)
                .map_err(|e| ConfigError::new("LLMLITE_MODELS", format!("{path}: {e}")))
        }
    }
}

/// Custom PII entities and the global PII policy, checked.
type PiiSettings = (
    Vec<(String, String)>,
    crate::pii::Policy,
    crate::pii::Options,
);

fn load_pii(env: &impl EnvSource) -> Result<PiiSettings, ConfigError> {
    const ENTITIES: &str = "LLMLITE_PII_ENTITIES";
    const POLICY: &str = "LLMLITE_PII_POLICY";
    const REGIONS: &str = "LLMLITE_PII_PHONE_REGIONS";
    const CONTEXT: &str = "LLMLITE_PII_CONTEXT";
    const SCAN_OUTPUT: &str = "LLMLITE_PII_SCAN_OUTPUT";
    let mut options = crate::pii::Options::default();
    if let Some(list) = non_empty(env, REGIONS) {
        options.phone_regions = crate::pii::phone::regions(&list).map_err(|bad| {
            ConfigError::new(
                REGIONS,
                format!("`{bad}` is not a region code libphonenumber knows (GB, US, DE, ...)"),
            )
        })?;
        if options.phone_regions.is_empty() {
            return Err(ConfigError::new(REGIONS, "names no region"));
        }
    }
    if let Some(text) = non_empty(env, CONTEXT) {
        let map: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(&text)
            .map_err(|_| {
                ConfigError::new(
                    CONTEXT,
                    "must be a JSON object of entity to a list of words",
                )
            })?;
        options.cues =
            crate::pii::Cues::with_overrides(&map).map_err(|e| ConfigError::new(CONTEXT, e))?;
    }
    let scan_output = match non_empty(env, SCAN_OUTPUT).as_deref() {
        None => None,
        Some("false" | "0") => Some(false),
        Some("true" | "1") => Some(true),
        Some(_) => return Err(ConfigError::new(SCAN_OUTPUT, "must be true or false")),
    };
    let custom: Vec<(String, String)> = match non_empty(env, ENTITIES) {
        None => Vec::new(),
        Some(text) => {
            let map: HashMap<String, String> = serde_json::from_str(&text).map_err(|_| {
                ConfigError::new(ENTITIES, "must be a JSON object of entity name to regex")
            })?;
            let mut custom: Vec<(String, String)> = map.into_iter().collect();
            custom.sort();
            custom
        }
    };
    let scanner = crate::pii::Scanner::with_options(&custom, &options)
        .map_err(|e| ConfigError::new(ENTITIES, e.to_string()))?;
    let policy = match non_empty(env, POLICY) {
        None => crate::pii::Policy::builtin(),
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| ConfigError::new(POLICY, "is not JSON"))?;
            let overrides = crate::pii::Policy::parse(&value, &scanner.entity_names())
                .map_err(|e| ConfigError::new(POLICY, e))?;
            crate::pii::Policy::builtin().overlay(&overrides)
        }
    };
    let policy = match scan_output {
        Some(scan) => policy.with_output(scan),
        None => policy,
    };
    Ok((custom, policy, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn database_url_is_required_and_checked_without_echoing_it() {
        let err = DatabaseConfig::from_env(&env(&[])).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let err = DatabaseConfig::from_env(&env(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]))
            .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"));
        let ok = DatabaseConfig::from_env(&env(&[(
            "DATABASE_URL",
            "postgres://u:hunter2@db.example:5433/llm",
        )]))
        .unwrap();
        assert_eq!(ok.pool_size, DEFAULT_POOL_SIZE);
        assert!(!format!("{ok:?}").contains("hunter2"));
    }

    #[test]
    fn iam_auth_forces_verified_tls_and_refuses_a_password() {
        let ok = DatabaseConfig::from_env(&env(&[
            (
                "DATABASE_URL",
                "postgres://llmlite@proxy.example:5432/llmlite",
            ),
            ("LLMLITE_DB_IAM_AUTH", "true"),
        ]))
        .unwrap();
        assert!(ok.iam_auth);
        assert!(matches!(ok.options.get_ssl_mode(), PgSslMode::VerifyFull));
        let err = DatabaseConfig::from_env(&env(&[
            (
                "DATABASE_URL",
                "postgres://llmlite:pw@proxy.example/llmlite",
            ),
            ("LLMLITE_DB_IAM_AUTH", "1"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let err = DatabaseConfig::from_env(&env(&[
            ("DATABASE_URL", "postgres://llmlite@proxy.example/llmlite"),
            ("LLMLITE_DB_IAM_AUTH", "yes please"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "LLMLITE_DB_IAM_AUTH");
        assert!(url_has_password("postgres://u:p@h/db"));
        assert!(!url_has_password("postgres://u@h/db?x=a:b@c"));
        assert!(!url_has_password("postgres://h/db"));
    }

    #[test]
    fn pool_size_must_be_sane() {
        for bad in ["0", "abc", "1000", "-1"] {
            let err = DatabaseConfig::from_env(&env(&[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("LLMLITE_DB_POOL_SIZE", bad),
            ]))
            .unwrap_err();
            assert_eq!(err.variable, "LLMLITE_DB_POOL_SIZE", "{bad}");
        }
    }

    #[test]
    fn region_defaults_to_london_and_is_validated() {
        assert_eq!(aws_region(&env(&[])).unwrap(), "eu-west-2");
        assert_eq!(
            aws_region(&env(&[("AWS_REGION", "us-east-1")])).unwrap(),
            "us-east-1"
        );
        assert_eq!(
            aws_region(&env(&[("AWS_REGION", "EU WEST")]))
                .unwrap_err()
                .variable,
            "AWS_REGION"
        );
    }

    #[test]
    fn pii_settings_are_checked() {
        let (custom, policy, _) = load_pii(&env(&[
            ("LLMLITE_PII_ENTITIES", r#"{"TICKET": "TCK-\\d+"}"#),
            (
                "LLMLITE_PII_POLICY",
                r#"{"TICKET": "BLOCK", "EMAIL_ADDRESS": "LOG"}"#,
            ),
        ]))
        .unwrap();
        assert_eq!(custom, [("TICKET".to_owned(), r"TCK-\d+".to_owned())]);
        assert_eq!(policy.action("TICKET"), crate::pii::Action::Block);
        assert_eq!(policy.action("EMAIL_ADDRESS"), crate::pii::Action::Log);
        assert_eq!(policy.action("CREDIT_CARD"), crate::pii::Action::Block);
        assert!(!policy.scans_output());
        let (_, policy, options) = load_pii(&env(&[
            ("LLMLITE_PII_SCAN_OUTPUT", "true"),
            ("LLMLITE_PII_PHONE_REGIONS", "gb, us"),
            ("LLMLITE_PII_CONTEXT", r#"{"PHONE_NUMBER": ["Rufnummer"]}"#),
        ]))
        .unwrap();
        assert!(policy.scans_output());
        assert_eq!(options.phone_regions.len(), 2);
        assert!(
            options
                .cues
                .near("PHONE_NUMBER", "Rufnummer 3646398060", 10, 20)
        );
        assert!(!options.cues.near("PHONE_NUMBER", "call 3646398060", 5, 15));
        // A policy's own `output` stands unless the variable is set.
        let (_, policy, _) =
            load_pii(&env(&[("LLMLITE_PII_POLICY", r#"{"output": true}"#)])).unwrap();
        assert!(policy.scans_output());
        for (variable, value) in [
            ("LLMLITE_PII_POLICY", r#"{"TICKET": "BLOCK"}"#),
            ("LLMLITE_PII_POLICY", "not json"),
            ("LLMLITE_PII_ENTITIES", r#"{"bad name": "x"}"#),
            ("LLMLITE_PII_ENTITIES", r#"{"OK": "("}"#),
            ("LLMLITE_PII_PHONE_REGIONS", "GB,XX"),
            ("LLMLITE_PII_PHONE_REGIONS", " , "),
            ("LLMLITE_PII_CONTEXT", r#"{"EMAIL_ADDRESS": ["mail"]}"#),
            ("LLMLITE_PII_CONTEXT", r#"{"PHONE_NUMBER": "tel"}"#),
            ("LLMLITE_PII_CONTEXT", r#"{"PHONE_NUMBER": [""]}"#),
            ("LLMLITE_PII_SCAN_OUTPUT", "yes"),
        ] {
            assert_eq!(
                load_pii(&env(&[(variable, value)])).unwrap_err().variable,
                variable,
                "{value}"
            );
        }
    }

    #[test]
    fn residency_prefixes_are_read_and_checked_on_arn_resource_names() {
        assert_eq!(
            allowed_model_prefixes(&env(&[("LLMLITE_ALLOWED_MODEL_PREFIXES", " eu., ,apac.")]))
                .unwrap(),
            ["eu.", "apac."]
        );
        assert!(allowed_model_prefixes(&env(&[])).unwrap().is_empty());
        assert_eq!(
            allowed_model_prefixes(&env(&[("LLMLITE_ALLOWED_MODEL_PREFIXES", "eu. us.")]))
                .unwrap_err()
                .variable,
            "LLMLITE_ALLOWED_MODEL_PREFIXES"
        );
        assert_eq!(
            model_id_name("arn:aws:bedrock:eu-west-2:1:inference-profile/eu.anthropic.x"),
            "eu.anthropic.x"
        );
        assert_eq!(model_id_name("global.anthropic.x"), "global.anthropic.x");
        let builtin = ModelCatalog::builtin().unwrap();
        // The template's setting: EU profiles, and the in-Region embedding models by ID.
        let template: Vec<String> = [
            "eu.",
            "amazon.titan-embed-text-v2:0",
            "cohere.embed-english-v3",
            "cohere.embed-multilingual-v3",
        ]
        .map(str::to_owned)
        .to_vec();
        assert!(check_residency(&builtin, &template).is_ok());
        // EU profiles alone refuse the embedding models, which have none.
        assert!(check_residency(&builtin, &["eu.".to_owned()]).is_err());
        assert!(check_residency(&builtin, &[]).is_ok());
        assert!(check_residency(&builtin, &["global.".to_owned()]).is_err());
    }

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

    #[test]
    fn catalog_errors_name_the_variable_and_file() {
        let err =
            load_catalog(&env(&[("LLMLITE_MODELS", "/nonexistent/models.toml")])).unwrap_err();
        assert_eq!(err.variable, "LLMLITE_MODELS");
        assert!(err.reason.contains("/nonexistent/models.toml"));
        assert!(load_catalog(&env(&[])).is_ok());
    }
}
