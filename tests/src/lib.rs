//! Test support: a real PostgreSQL database per test, and the gateway served over real HTTP.
//!
//! The server is `DATABASE_URL` when set (CI points it at the machine's PostgreSQL); otherwise a
//! throwaway cluster started once per test binary with the same code as `llmlite dev`, removed
//! when the binary exits. Each test gets its own freshly migrated database, dropped afterwards.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed set-up should stop the test loudly"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use llmlite::AppState;
use llmlite::config::{Config, DatabaseConfig};
use llmlite::embedded_pg::EmbeddedPostgres;
use llmlite::store::Database;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

/// The master key the test configuration uses.
pub const MASTER_KEY: &str = "sk-test-master-key-0123456789";

/// The URL of the server tests create their databases on, with a database that always exists.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        // The cluster must outlive every test's runtime: own it on a thread that never ends.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let cluster = EmbeddedPostgres::start()
                    .await
                    .unwrap_or_else(|e| panic!("no DATABASE_URL and no throwaway cluster: {e}"));
                tx.send(cluster.url("postgres")).expect("send url");
                // Held until the process exits; the cluster's supervisor then removes it.
                std::future::pending::<()>().await;
                drop(cluster);
            });
        });
        rx.recv().expect("the database thread died")
    })
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    format!("{}/{database}{query}", &base[..authority_end])
}

/// A freshly created and migrated database, dropped when this goes out of scope.
pub struct TestDb {
    /// The handle the gateway uses.
    pub db: Database,
    /// Its pool, for queries made by the test itself.
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    /// A new database with the schema applied.
    pub async fn new() -> Self {
        let db = Self::empty().await;
        db.db.migrate().await.expect("migrations apply");
        db
    }

    /// A new database with nothing in it.
    pub async fn empty() -> Self {
        let name = format!("llmlite_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(server_url())
            .await
            .expect("connect to the test server");
        // The name is ours (a UUID), not input: DDL cannot take a bind parameter.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .persistent(false)
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = with_database(server_url(), &name);
        let db = database(&url);
        let pool = db.pool().await.expect("pool").clone();
        TestDb {
            db,
            pool,
            url,
            name,
        }
    }

    /// The environment a gateway for this database is configured with.
    pub fn env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("DATABASE_URL".to_owned(), self.url.clone()),
            ("LITELLM_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
            ("AWS_REGION".to_owned(), "eu-west-2".to_owned()),
        ])
    }

    /// Application state for this database.
    pub async fn state(&self) -> AppState {
        let config = Config::load(&self.env()).await.expect("test configuration");
        AppState::new(config).expect("test state")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we can rely on: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(server_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .persistent(false)
                .execute(&mut admin)
                .await
                .ok()
            })
        })
        .join();
    }
}

pub fn database_config(url: &str) -> DatabaseConfig {
    DatabaseConfig::from_env(&HashMap::from([(
        "DATABASE_URL".to_owned(),
        url.to_owned(),
    )]))
    .expect("valid database URL")
}

/// A database handle for `url`, as the functions build it.
pub fn database(url: &str) -> Database {
    Database::new(&database_config(url), None).expect("database handle")
}

/// Serves `router` over real HTTP on a loopback port, for as long as the test runs.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
