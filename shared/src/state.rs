//! The state the chat and admin handlers share: configuration and the clients built once per
//! process (per Lambda execution environment) and reused across requests.

use std::sync::Arc;

use aws_sdk_bedrockruntime::config::StalledStreamProtectionConfig;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;

use crate::clients::bedrock::RetryPolicy;
use crate::clients::store::Database;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, EnvSource};

/// A streamed answer silent this long gets a comment: API Gateway cuts a stream after 5 minutes
/// without a byte.
pub const SSE_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Database,
    pub bedrock: aws_sdk_bedrockruntime::Client,
    pub s3: aws_sdk_s3::Client,
    /// Retries of throttled and failing Bedrock calls, before fallbacks.
    pub retry: RetryPolicy,
    /// The time every check and stamp uses.
    pub clock: Clock,
    /// The refill period of the rate-limit buckets.
    pub rate_period: std::time::Duration,
    /// The PII detectors, built once.
    pub pii: Arc<crate::pii::Scanner>,
    /// Where audit records go.
    pub audit: crate::clients::audit::Auditor,
    /// Whether to write EMF metric lines (in a Lambda, or with `LLMLITE_EMF=true`).
    pub emf: bool,
    /// Settlements in flight and the settlement outbox of this process.
    pub settlements: crate::settlement::Settler,
    /// How long a streamed answer may be silent before the relay sends a comment.
    pub sse_keep_alive: std::time::Duration,
    /// The company's OpenID Provider, when the console signs people in through it.
    pub oidc: Option<Arc<crate::clients::oidc::Provider>>,
    /// Faults a test injects; all off unless a test turns them on (feature `dev` only).
    #[cfg(feature = "dev")]
    pub hooks: TestHooks,
}

/// Faults injected by tests through the state they build, to prove what the gateway does when
/// its own code fails. Nothing outside a test sets them (no configuration reads them), and a
/// build without the `dev` feature (every Lambda function) does not have them.
#[cfg(feature = "dev")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks {
    /// Panic right after a request is admitted.
    pub panic_after_admission: bool,
}

#[cfg(feature = "dev")]
impl TestHooks {
    #[allow(clippy::panic, reason = "the injected fault is a panic")]
    pub fn after_admission(&self) {
        if self.panic_after_admission {
            panic!("injected panic after admission (TestHooks)");
        }
    }
}

/// The S3 client for the audit bucket. An endpoint override (`AWS_ENDPOINT_URL_S3`: a local S3
/// such as moto's server) is addressed path-style, as local servers expect.
fn s3_client(config: &Config) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(&config.aws);
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// The Bedrock client: our own retries (so fallbacks and the client's 429 follow them), a short
/// connect timeout, and no stalled-stream protection: a model may think silently for a long time
/// before its first token (aws-sdk-rust#1287), and the function's own timeout bounds the call.
fn bedrock_client(config: &Config) -> aws_sdk_bedrockruntime::Client {
    let mut builder = aws_sdk_bedrockruntime::config::Builder::from(&config.aws)
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build(),
        );
    if let Some(endpoint) = &config.bedrock_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    // The request's tags on every call, for Bedrock's invocation logs.
    builder = builder.interceptor(crate::clients::attribution::Tagger);
    aws_sdk_bedrockruntime::Client::from_conf(builder.build())
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let db = Database::new(&config.database, Some(&config.aws))?;
        let bedrock = bedrock_client(&config);
        let s3 = s3_client(&config);
        let audit = crate::clients::audit::Auditor::new(
            match &config.audit_bucket {
                Some(bucket) => crate::clients::audit::Sink::S3 {
                    client: s3.clone(),
                    bucket: bucket.clone(),
                    kms_key_id: config.audit_kms_key_id.clone(),
                },
                None => crate::clients::audit::Sink::Directory(config.audit_dir.clone()),
            },
            db.clone(),
        );
        let rate_period = config.rate_period;
        let pii = crate::pii::Scanner::with_options(&config.pii_custom, &config.pii_options)
            .map_err(|e| ConfigError {
                variable: "LLMLITE_PII_ENTITIES",
                reason: e.to_string(),
            })?;
        let pii = Arc::new(pii);
        // The detectors compile on a thread of their own: start-up goes on without them, and
        // a first request that needs them before they are ready waits for them.
        let warming = Arc::clone(&pii);
        if let Err(e) = std::thread::Builder::new()
            .name("llmlite-pii-warm".into())
            .spawn(move || warming.warm())
        {
            tracing::warn!(error = %e, "PII detectors compile on first use");
        }
        let clock = Clock::default();
        let emf = crate::clients::telemetry::emf_enabled();
        let settlements =
            crate::settlement::Settler::new(db.clone(), audit.clone(), clock.clone(), emf);
        let oidc = match &config.sign_in.oidc {
            Some(settings) => Some(Arc::new(
                crate::clients::oidc::Provider::new(settings.clone())
                    .map_err(|reason| ConfigError::new("LLMLITE_OIDC_ISSUER", reason))?,
            )),
            None => None,
        };
        Ok(AppState {
            oidc,
            config: Arc::new(config),
            db,
            bedrock,
            s3,
            retry: RetryPolicy::default(),
            clock,
            rate_period,
            pii,
            audit,
            emf,
            settlements,
            sse_keep_alive: SSE_KEEP_ALIVE,
            #[cfg(feature = "dev")]
            hooks: TestHooks::default(),
        })
    }

    /// Loads and validates the configuration from `env`, then builds the clients.
    pub async fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        Self::new(Config::load(env).await?)
    }
}
