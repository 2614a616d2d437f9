//! PostgreSQL: the [`Database`] handle, the migrations, and the rules every query follows.
//!
//! The Lambdas reach the database through RDS Proxy, which pins a client to one server connection
//! whenever a session uses named prepared statements. So: the statement cache is off, every query
//! runs with `.persistent(false)` (unnamed statements), there are no session-level settings or
//! advisory locks on request paths, and a Lambda keeps only one or two connections.
//!
//! With `LLMLITE_DB_IAM_AUTH`, connections authenticate with RDS IAM tokens. A token is a
//! SigV4-presigned string made locally (no network call) and is valid for 15 minutes; it is only
//! checked when a connection opens, so the handle renews it before it is 10 minutes old and
//! open connections live on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};
use tokio::sync::Mutex;

use crate::config::{self, ConfigError, DatabaseConfig, EnvSource};
use crate::error::ApiError;

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a request waits for a pooled connection before it fails with 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// An IAM token is renewed when it is this old (tokens last 15 minutes).
const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(600);

/// Why the database did not answer a ping.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// No pool to ask (an IAM token could not be made, say).
    #[error("{0}")]
    Pool(ApiError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// The database handle: a lazily connecting pool, plus IAM token renewal when configured.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    iam: Option<Arc<IamAuth>>,
}

struct IamAuth {
    generator: AuthTokenGenerator,
    aws: SdkConfig,
    base: PgConnectOptions,
    issued: Mutex<Option<Instant>>,
}

impl Database {
    /// A handle that connects on first use, so a function starts even while the database is
    /// away and `/health/readiness` can say so. `aws` is needed only for IAM authentication.
    pub fn new(db: &DatabaseConfig, aws: Option<&SdkConfig>) -> Result<Self, ConfigError> {
        let options = db.options.clone().statement_cache_capacity(0);
        let pool = PgPoolOptions::new()
            .max_connections(db.pool_size)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            // A liveness ping before every checkout would cost a round trip on each request; a
            // dead connection fails its query instead and is dropped from the pool.
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let iam = if db.iam_auth {
            let aws = aws.ok_or_else(|| ConfigError {
                variable: "LLMLITE_DB_IAM_AUTH",
                reason: "IAM authentication needs the AWS configuration".into(),
            })?;
            let region = aws.region().ok_or_else(|| ConfigError {
                variable: "AWS_REGION",
                reason: "IAM tokens must be signed for an explicit region".into(),
            })?;
            let token_config = TokenConfig::builder()
                .hostname(options.get_host())
                .port(u64::from(options.get_port()))
                .username(options.get_username())
                .region(region.clone())
                .build()
                .map_err(|e| ConfigError {
                    variable: "DATABASE_URL",
                    reason: format!("cannot sign IAM tokens for it: {e}"),
                })?;
            Some(Arc::new(IamAuth {
                generator: AuthTokenGenerator::new(token_config),
                aws: aws.clone(),
                base: options,
                issued: Mutex::new(None),
            }))
        } else {
            None
        };
        Ok(Database { pool, iam })
    }

    /// Reads `DATABASE_URL` and friends; loads the AWS configuration only for IAM auth. For the
    /// functions that need nothing else (health, spend-rollup).
    pub async fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let db = DatabaseConfig::from_env(env)?;
        let aws = if db.iam_auth {
            Some(config::aws_sdk_config(&config::aws_region(env)?).await)
        } else {
            None
        };
        Self::new(&db, aws.as_ref())
    }

    /// The pool, with a fresh IAM token in place for any connection it opens next.
    pub async fn pool(&self) -> Result<&PgPool, ApiError> {
        if let Some(iam) = &self.iam {
            let mut issued = iam.issued.lock().await;
            if issued.is_none_or(|at| at.elapsed() >= TOKEN_RENEW_AFTER) {
                let token =
                    iam.generator.auth_token(&iam.aws).await.map_err(|e| {
                        ApiError::DatabaseUnavailable(format!("IAM auth token: {e}"))
                    })?;
                self.pool
                    .set_connect_options(iam.base.clone().password(token.as_str()));
                *issued = Some(Instant::now());
            }
        }
        Ok(&self.pool)
    }

    /// One connection of its own, outside the pool (with a fresh IAM token when configured),
    /// for work that needs a session to itself: the migrations handler's role setup.
    pub async fn connection(&self) -> Result<PgConnection, ApiError> {
        let options = self.pool().await?.connect_options();
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| ApiError::DatabaseUnavailable(e.to_string()))
    }

    /// Applies pending migrations: `llmlite migrate`, `llmlite dev`, and on AWS the deploy's
    /// custom resource ([`crate::deploy`]). Through RDS Proxy the migrator's session-level
    /// advisory lock pins that one session while it runs; request paths never do this.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let pool = self
            .pool()
            .await
            .map_err(|e| MigrateError::Source(Box::new(e)))?;
        MIGRATOR.run(pool).await
    }

    /// One trivial round trip, bounded by `timeout`. If the pooled connection has gone stale
    /// (the database restarted or failed over), a fresh connection decides: readiness reports
    /// the database, not the pool's memory of it.
    pub async fn ping(&self, timeout: Duration) -> Result<(), PingError> {
        let round_trip = async {
            let pool = self.pool().await.map_err(PingError::Pool)?;
            let pooled = sqlx::query_scalar::<_, i32>("SELECT 1")
                .persistent(false)
                .fetch_one(pool)
                .await;
            if pooled.is_ok() {
                return Ok(());
            }
            let mut fresh = PgConnection::connect_with(&pool.connect_options()).await?;
            let result = sqlx::query_scalar::<_, i32>("SELECT 1")
                .persistent(false)
                .fetch_one(&mut fresh)
                .await;
            let _ = fresh.close().await;
            result.map(|_| ()).map_err(PingError::from)
        };
        match tokio::time::timeout(timeout, round_trip).await {
            Ok(answer) => answer,
            Err(_) => Err(PingError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_rds::config::Credentials;
    use std::collections::HashMap;

    #[tokio::test]
    async fn iam_tokens_are_signed_for_the_proxy_and_installed_before_use() {
        let env: HashMap<String, String> = HashMap::from([
            (
                "DATABASE_URL".into(),
                "postgres://llmlite_app@proxy.example.eu-west-2.rds.amazonaws.com:5432/llmlite"
                    .into(),
            ),
            ("LLMLITE_DB_IAM_AUTH".into(), "true".into()),
        ]);
        let db = DatabaseConfig::from_env(&env).unwrap();
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            ))
            .load()
            .await;
        assert!(
            Database::new(&db, None).is_err(),
            "IAM auth without AWS config"
        );
        let database = Database::new(&db, Some(&aws)).unwrap();
        let pool = database.pool().await.unwrap();
        let options = format!("{:?}", pool.connect_options());
        for part in [
            "proxy.example.eu-west-2.rds.amazonaws.com:5432/?Action=connect",
            "DBUser=llmlite_app",
            "X-Amz-Signature=",
            "eu-west-2%2Frds-db%2Faws4_request",
        ] {
            assert!(
                options.contains(part),
                "{part} missing from the installed token"
            );
        }
    }
}
