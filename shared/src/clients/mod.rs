//! The infrastructure clients: what the gateway calls and how.
//!
//! - [`bedrock`]: Bedrock's failures classified, bounded jittered retries and the walk down a
//!   model chain (every adapter's calls go through it);
//! - [`guardrail`]: Bedrock Guardrails (`ApplyGuardrail`), called and read;
//! - [`attribution`]: the request's tags on every Bedrock call, for Bedrock's invocation logs;
//! - [`store`]: PostgreSQL, through RDS Proxy without pinning: the pool, IAM tokens, migrations;
//! - [`audit`]: the audit sink (S3 or a directory) and its outbox;
//! - [`db_roles`]: the database's owner and application roles;
//! - [`telemetry`]: logs (redacted) and EMF metric lines;
//! - [`metrics`]: Prometheus metrics for `llmlite serve`;
//! - [`traces`]: OpenTelemetry traces (GenAI conventions) over OTLP.

pub mod attribution;
pub mod audit;
pub mod bedrock;
pub mod db_roles;
pub mod guardrail;
pub mod metrics;
pub mod oauth_http;
pub mod oidc;
pub mod store;
pub mod telemetry;
pub mod traces;
