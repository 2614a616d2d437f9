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
use std::time::Duration;

use axum::Router;
use llmlite::AppState;
use llmlite::clients::bedrock::RetryPolicy;
use llmlite::clients::store::Database;
use llmlite::config::{self, Config, DatabaseConfig};
use llmlite::dev::embedded_pg::EmbeddedPostgres;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

pub mod bench;
pub mod deploy;
mod gateway;
pub mod lambda_runtime;
pub mod oidc;
mod reply;
pub mod secrets_manager;

pub use gateway::{KeyBy, SpendRow, TestGateway};
pub use reply::{Event, Reply, responses_events, sse_data, sse_events};

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

/// Every file under `root`, recursively, sorted (audit records, reports).
/// Every request audit record under a sink directory `root`, with the object (file) it is in:
/// the lines of each batch (`requests-*.jsonl`), and the records written alone (`request-*.json`,
/// a refusal the database did not queue).
pub fn audit_records(root: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let mut records = Vec::new();
    for path in files_under(&root.join("audit")) {
        let key = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let name = key.rsplit('/').next().unwrap_or_default();
        if name.starts_with("requests-") || name.starts_with("request-") {
            let bytes = std::fs::read(&path).unwrap_or_default();
            records.extend(audit_object_records(&key, &bytes));
        }
    }
    records
}

/// The records an audit object holds, each with the object's key: a batch (`.jsonl`) one per
/// line, any other object one.
pub fn audit_object_records(key: &str, bytes: &[u8]) -> Vec<(String, serde_json::Value)> {
    if key.ends_with(".jsonl") {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let record = serde_json::from_str(l).expect("an audit line is JSON");
                (key.to_owned(), record)
            })
            .collect()
    } else {
        let record = serde_json::from_slice(bytes).expect("an audit record is JSON");
        vec![(key.to_owned(), record)]
    }
}

pub fn files_under(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Whether the PyPI tool a test drives is installed (`program args` succeeds). CI installs
/// every one, so there a missing tool fails the test; elsewhere the test is skipped, saying how
/// to get it.
pub async fn tool_installed(program: &str, args: &[&str], pip_name: &str) -> bool {
    let installed = tokio::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: pip install {pip_name}"
        );
        eprintln!("skipped: {pip_name} is not installed (pip install {pip_name})");
    }
    installed
}

/// A loopback port nothing listens on now (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// An exact decimal (a price or a spend) written as the catalog writes it: `"3.30"`.
pub fn price(text: &str) -> sqlx::types::Decimal {
    text.parse()
        .unwrap_or_else(|e| panic!("`{text}` is not a decimal: {e}"))
}

/// A model catalog file (for `LLMLITE_MODELS`) holding `toml`, alone in a new temporary
/// directory: the file's parent, for the test to remove.
pub fn models_file(toml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("llmlite-models-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let path = dir.join("models.toml");
    std::fs::write(&path, toml).expect("write the model catalog");
    path
}

/// Replaces the user of a PostgreSQL URL (the servers the tests use trust loopback logins).
pub fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{rest}")
}

/// The user of a PostgreSQL URL.
pub fn user_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let userinfo = rest.split_once('@').map_or("", |(userinfo, _)| userinfo);
    userinfo.split(':').next().unwrap_or(userinfo)
}

/// The `host:port` of a PostgreSQL URL.
pub fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Replaces the `host:port` of a PostgreSQL URL.
pub fn with_authority(url: &str, authority: &str) -> String {
    url.replacen(self::authority(url), authority, 1)
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

    /// Where this database's gateways write audit records (no bucket configured).
    pub fn audit_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("llmlite-audit-{}", self.name))
    }

    /// The environment a gateway for this database is configured with. Keys made without
    /// limits are unlimited here (`LLMLITE_DEFAULT_TIER=none`): tests of rate limits, budgets
    /// and the rest set the limits they test, and a default tier would only blur them. The
    /// tier tests set the variable themselves (`""`: the production default, `standard`).
    pub fn env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("DATABASE_URL".to_owned(), self.url.clone()),
            ("LITELLM_MASTER_KEY".to_owned(), MASTER_KEY.to_owned()),
            ("AWS_REGION".to_owned(), "eu-west-2".to_owned()),
            ("LLMLITE_DEFAULT_TIER".to_owned(), "none".to_owned()),
            (
                "LLMLITE_AUDIT_DIR".to_owned(),
                self.audit_dir().to_string_lossy().into_owned(),
            ),
        ])
    }

    /// Application state for this database, with Bedrock at `bedrock_endpoint` (nothing
    /// listens at the default) and no AWS credential chain consulted.
    pub async fn state(&self) -> AppState {
        self.state_with(&[]).await
    }

    /// As [`TestDb::state`], with extra environment variables.
    pub async fn state_with(&self, extra: &[(&str, &str)]) -> AppState {
        let mut env = self.env();
        env.insert(
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        );
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        Self::state_from(env, config::local_aws_config("eu-west-2").await).await
    }

    /// Application state from exactly `env`, with `aws` as the AWS configuration (a Secrets
    /// Manager double's, say).
    pub async fn state_from(env: HashMap<String, String>, aws: aws_config::SdkConfig) -> AppState {
        let config = Config::load_with_aws(&env, aws)
            .await
            .expect("test configuration");
        let mut state = AppState::new(config).expect("test state");
        // Quick retries: the tests count attempts, not wall time.
        state.retry = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        state
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.audit_dir());
        on_server_blocking(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Runs `sql` (ours, not input) on the test server as its superuser, and waits for it: for
/// clean-up in `Drop`, which runs outside any async context we can rely on, so on a thread and
/// runtime of its own. Failures are ignored (clean-up is best effort).
pub fn on_server_blocking(sql: String) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(server_url()).await.ok()?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .ok()
        })
    })
    .join();
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
    serve_on(listener, router)
}

/// Serves `router` on a listener already bound (its address known before the gateway is
/// configured: a redirect URI names it, say).
pub fn serve_on(listener: tokio::net::TcpListener, router: Router) -> SocketAddr {
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Starts `llmlite serve` (the binary at `binary`) on a free loopback port against `database_url`
/// and the Bedrock double at `bedrock`, with fake AWS credentials and `extra` variables; returns
/// it with its base URL once `/health` answers.
pub async fn spawn_serve(
    binary: &std::path::Path,
    database_url: &str,
    bedrock: &str,
    extra: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", database_url)
        .env("LITELLM_MASTER_KEY", MASTER_KEY)
        .env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bedrock)
        .env("AWS_REGION", "eu-west-2")
        // As `TestDb::env`: keys made without limits are unlimited in tests.
        .env("LLMLITE_DEFAULT_TIER", "none")
        .env("AWS_ACCESS_KEY_ID", "LLMLITETEST")
        .env("AWS_SECRET_ACCESS_KEY", "llmlite-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .env(
            "LLMLITE_AUDIT_DIR",
            std::env::temp_dir().join(format!("llmlite-audit-serve-{port}")),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in extra {
        command.env(k, v);
    }
    let child = command.spawn().expect("start llmlite serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "llmlite serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

/// Waits until no request holds a lease in the database at `pool`: every request that any
/// gateway process admitted has settled. Bounded: fails after 30 s.
pub async fn wait_until_settled(pool: &PgPool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM llmlite_inflight")
            .persistent(false)
            .fetch_one(pool)
            .await
            .expect("count leases");
        if open == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} requests still unsettled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// moto's S3 server (`pip install "moto[server]"`) on a loopback port, for as long as this lives.
pub struct MotoS3 {
    _child: tokio::process::Child,
    pub endpoint: String,
}

impl MotoS3 {
    /// Starts moto, or `None` when it is not installed (and this is not CI, which installs it).
    pub async fn start() -> Option<Self> {
        let installed = std::process::Command::new("moto_server")
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the S3 tests: pip install \"moto[server]\""
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while client.get(&endpoint).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(MotoS3 {
            _child: child,
            endpoint,
        })
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .expect("create bucket");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Every object key under `prefix`.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint);
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={t}"));
            }
            let xml = reqwest::get(url)
                .await
                .expect("list")
                .text()
                .await
                .expect("xml");
            for part in xml.split("<Key>").skip(1) {
                keys.push(part.split("</Key>").next().unwrap_or_default().to_owned());
            }
            token = xml
                .split("<NextContinuationToken>")
                .nth(1)
                .and_then(|p| p.split("</NextContinuationToken>").next())
                .map(str::to_owned);
            if token.is_none() {
                return keys;
            }
        }
    }
}

/// A loopback TCP forwarder that can be cut and restored: a network outage on demand.
pub struct Outage {
    pub endpoint: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Outage {
    /// Forwards a loopback port to `target` (`host:port`) while up.
    pub async fn forward(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let target = target.to_owned();
        let (flag, tasks) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut list) = tasks.lock() {
                    list.push(task);
                }
            }
        });
        Outage {
            endpoint,
            up,
            connections,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut list) = self.connections.lock() {
            for task in list.drain(..) {
                task.abort();
            }
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `template.yaml`, as JSON: CloudFormation's short-form tags become their long forms
/// (`!Ref X` is `{"Ref": "X"}`, `!Sub s` is `{"Fn::Sub": s}`, `!GetAtt A.B` is
/// `{"Fn::GetAtt": "A.B"}`), so tests read it as CloudFormation does.
pub fn template() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml beside the workspace");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml is YAML");
    yaml_to_json(yaml)
}

fn yaml_to_json(value: serde_yaml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    use serde_yaml::Value as Y;
    match value {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).expect("a YAML number is a JSON number"),
        Y::String(s) => J::String(s),
        Y::Sequence(items) => J::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => J::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml::to_string(&other)
                            .expect("a YAML key renders")
                            .trim()
                            .to_owned(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let long = if name == "Ref" || name == "Condition" {
                name.to_owned()
            } else {
                format!("Fn::{name}")
            };
            serde_json::json!({ long: yaml_to_json(tagged.value) })
        }
    }
}

/// A benchmark's size setting: the environment variable `name`, else `default`.
pub fn bench_env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` percentile (0 to 1, nearest rank) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
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
