//! PostgreSQL: the pool, the migrations, and the rules every query follows.
//!
//! The Lambdas reach the database through RDS Proxy, which pins a client to one server connection
//! whenever a session uses named prepared statements. So: the statement cache is off, every query
//! runs with `.persistent(false)` (unnamed statements), there are no session-level settings or
//! advisory locks on request paths, and a Lambda keeps only one or two connections.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a request waits for a pooled connection before it fails with 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool that connects on first use, so a function starts even while the database is away and
/// `/health/readiness` can say so.
pub fn connect_lazy(db: &DatabaseConfig) -> PgPool {
    PgPoolOptions::new()
        .max_connections(db.pool_size)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(300)))
        // A liveness ping before every checkout would cost a round trip on each request; a dead
        // connection fails its query instead and is dropped from the pool.
        .test_before_acquire(false)
        .connect_lazy_with(db.options.clone().statement_cache_capacity(0))
}

/// Applies pending migrations. Run by `llmlite migrate` and `llmlite dev` straight against the
/// database (not through RDS Proxy: the migrator takes a session-level advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// One trivial round trip, bounded by `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    let query = sqlx::query_scalar::<_, i32>("SELECT 1")
        .persistent(false)
        .fetch_one(pool);
    match tokio::time::timeout(timeout, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}
