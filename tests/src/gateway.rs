//! The whole gateway over real HTTP, with its own database and Bedrock double, and what a test
//! does with it: requests as a client sends them, the double's script and calls, and what the
//! database says was charged.

use std::net::SocketAddr;

use llmlite::AppState;
use llmlite::dev::bedrock_double::BedrockDouble;
use reqwest::Method;
use serde_json::Value;
use sqlx::types::Decimal;

use crate::reply::{Event, Reply};
use crate::{MASTER_KEY, TestDb, serve, with_authority};

/// The version header Anthropic's clients send on the Messages API.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The whole gateway over real HTTP, with its own database and Bedrock double.
pub struct TestGateway {
    pub db: TestDb,
    pub double: BedrockDouble,
    pub state: AppState,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra environment variables (`LLMLITE_MODELS`, say).
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_adjusted(extra, |_| {}).await
    }

    /// With extra environment variables, and `adjust` applied to the state before it serves
    /// (to inject a fault through [`llmlite::state::TestHooks`], say).
    pub async fn start_adjusted(
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut AppState),
    ) -> Self {
        Self::start_on(TestDb::new().await, extra, adjust).await
    }

    /// A gateway that reaches its PostgreSQL server at `authority` (`host:port`: a forwarder
    /// the test can cut, say) instead of directly; the test's own pool still goes direct.
    pub async fn start_via(authority: &str) -> Self {
        let db = TestDb::new().await;
        let url = with_authority(&db.url, authority);
        Self::start_on(db, &[("DATABASE_URL", &url)], |_| {}).await
    }

    /// A gateway that answers at most `max_in_flight` requests at once, as `llmlite serve`
    /// does with `LLMLITE_MAX_CONCURRENCY` (the router `serve` runs).
    pub async fn start_capped(max_in_flight: usize) -> Self {
        Self::start_serving(
            TestDb::new().await,
            &[],
            |_| {},
            |state| llmlite::serve_routes(state, max_in_flight),
        )
        .await
    }

    /// A gateway on an existing database `db`, with extra environment variables.
    pub async fn start_on(
        db: TestDb,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut AppState),
    ) -> Self {
        Self::start_serving(db, extra, adjust, llmlite::all_routes).await
    }

    /// A gateway on `listener`, bound by the caller (its URL is in `extra`, say), with extra
    /// environment variables; its database reached at `via` (`host:port`: a forwarder the test
    /// can cut) when given.
    pub async fn start_bound(
        listener: tokio::net::TcpListener,
        extra: &[(&str, &str)],
        via: Option<&str>,
    ) -> Self {
        let db = TestDb::new().await;
        let url = via.map(|authority| with_authority(&db.url, authority));
        let mut env = extra.to_vec();
        if let Some(url) = &url {
            env.push(("DATABASE_URL", url));
        }
        Self::start_listening(db, &env, |_| {}, llmlite::all_routes, Some(listener)).await
    }

    /// A gateway on `db` serving the router `routes` makes of its state.
    async fn start_serving(
        db: TestDb,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut AppState),
        routes: impl FnOnce(AppState) -> axum::Router,
    ) -> Self {
        Self::start_listening(db, extra, adjust, routes, None).await
    }

    async fn start_listening(
        db: TestDb,
        extra: &[(&str, &str)],
        adjust: impl FnOnce(&mut AppState),
        routes: impl FnOnce(AppState) -> axum::Router,
        listener: Option<tokio::net::TcpListener>,
    ) -> Self {
        let double = BedrockDouble::start(0)
            .await
            .expect("start the Bedrock double");
        let endpoint = double.endpoint();
        let mut env: Vec<(&str, &str)> = vec![("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &endpoint)];
        env.extend_from_slice(extra);
        let mut state = db.state_with(&env).await;
        adjust(&mut state);
        let addr = match listener {
            Some(listener) => crate::serve_on(listener, routes(state.clone())),
            None => serve(routes(state.clone())).await,
        };
        TestGateway {
            db,
            double,
            state,
            addr,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until every request this gateway admitted has settled (settlement follows the
    /// response, in a task of its own).
    pub async fn settled(&self) {
        self.state.settlements.drain().await;
    }

    /// Queues behaviours for the double's next calls.
    pub async fn script(&self, behaviours: serde_json::Value) {
        let response = self
            .client
            .post(format!("{}/__double/script", self.double.endpoint()))
            .json(&behaviours)
            .send()
            .await
            .expect("script the double");
        assert!(response.status().is_success());
    }

    /// What the double was asked, in order.
    pub async fn bedrock_calls(&self) -> Vec<serde_json::Value> {
        self.client
            .get(format!("{}/__double/calls", self.double.endpoint()))
            .send()
            .await
            .expect("ask the double")
            .json()
            .await
            .expect("calls as JSON")
    }
}

/// Requests, as a client sends them.
impl TestGateway {
    /// `method path`, with `key` presented as the path's clients present it (Anthropic's, on
    /// `/v1/messages...`: `x-api-key` and `anthropic-version`; OpenAI's elsewhere: a bearer
    /// token) and `body` as JSON; the answer, read whole.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = if path.starts_with("/v1/messages") {
                request
                    .header("x-api-key", key)
                    .header("anthropic-version", ANTHROPIC_VERSION)
            } else {
                request.bearer_auth(key)
            };
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Reply::read(request).await
    }

    /// `POST path` with `body`, as `key`.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(key), Some(&body))
            .await
    }

    /// `GET path`, as `key`.
    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.request(Method::GET, path, Some(key), None).await
    }

    /// `POST path` with `body` (a request that asks to stream), as `key`: the events of the
    /// stream, which must be a 200 and `text/event-stream`.
    pub async fn stream(&self, path: &str, key: &str, body: Value) -> Vec<Event> {
        let reply = self.post(path, key, body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.headers["content-type"], "text/event-stream");
        reply.events()
    }

    /// `POST /v1/chat/completions` with the master key.
    pub async fn chat(&self, body: Value) -> Reply {
        self.post("/v1/chat/completions", MASTER_KEY, body).await
    }

    /// `POST /key/generate` with the master key; the response (with `key` and `token`).
    pub async fn mint_key(&self, body: Value) -> Value {
        let reply = self.post("/key/generate", MASTER_KEY, body).await;
        assert!((200..300).contains(&reply.status), "{}", reply.status);
        reply.json()
    }

    /// [`TestGateway::mint_key`], for just the raw `sk-` key.
    pub async fn mint_raw_key(&self, body: Value) -> String {
        self.mint_key(body).await["key"]
            .as_str()
            .expect("a generated key")
            .to_owned()
    }

    /// Runs `tests/compat/<script>` (the official OpenAI and Anthropic Python SDKs against this
    /// gateway, `LLMLITE_BASE_URL`, with `keys` as `LLMLITE_KEYS`), which must report every
    /// check passed; the JSON object it prints last. `None` when the SDKs are not installed
    /// here (CI installs them).
    pub async fn run_sdk_script(&self, script: &str, keys: &Value) -> Option<Value> {
        if !crate::tool_installed(
            "python3",
            &["-c", "import openai, anthropic"],
            "openai anthropic",
        )
        .await
        {
            return None;
        }
        let script = format!("{}/compat/{script}", env!("CARGO_MANIFEST_DIR"));
        let output = tokio::process::Command::new("python3")
            .arg(script)
            .env("LLMLITE_BASE_URL", format!("http://{}", self.addr))
            .env("LLMLITE_KEYS", keys.to_string())
            .output()
            .await
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains(" passed, 0 failed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        Some(serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}")))
    }

    /// `POST path` with the master key, expecting 200; the response body.
    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let reply = self.post(path, MASTER_KEY, body).await;
        assert_eq!(reply.status, 200, "{path}");
        reply.json()
    }
}

/// One row of `litellm_spend`: the columns the tests read.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SpendRow {
    pub request_id: String,
    pub call_type: String,
    /// The key's hash.
    pub api_key: String,
    pub status: String,
    pub spend: Decimal,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub metadata: Value,
}

const SPEND_ROW: &str = "SELECT request_id, call_type, api_key, status, spend, prompt_tokens,
                                completion_tokens, metadata
                         FROM litellm_spend";

/// How a test names a key.
#[derive(Debug, Clone, Copy)]
pub enum KeyBy<'a> {
    /// Its hash (`token`), which changes when the key is regenerated.
    Token(&'a str),
    Alias(&'a str),
    /// Its immutable `key_id`.
    Id(i64),
}

/// What the database says, once this gateway's requests have settled.
impl TestGateway {
    /// Every spend row, in the order the requests started.
    pub async fn spend_rows(&self) -> Vec<SpendRow> {
        self.settled().await;
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SPEND_ROW} ORDER BY start_time"
        )))
        .persistent(false)
        .fetch_all(&self.db.pool)
        .await
        .expect("read the spend rows")
    }

    /// The spend row of the request `request_id`.
    pub async fn spend_row(&self, request_id: &str) -> SpendRow {
        self.settled().await;
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SPEND_ROW} WHERE request_id = $1"
        )))
        .bind(request_id)
        .persistent(false)
        .fetch_one(&self.db.pool)
        .await
        .unwrap_or_else(|e| panic!("no spend row for {request_id}: {e}"))
    }

    /// A key's spend.
    pub async fn key_spend(&self, key: KeyBy<'_>) -> Decimal {
        self.settled().await;
        const SPEND: &str = "SELECT spend FROM litellm_verificationtoken";
        let query = match key {
            KeyBy::Token(token) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{SPEND} WHERE token = $1")))
                    .bind(token)
            }
            KeyBy::Alias(alias) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{SPEND} WHERE key_alias = $1")))
                    .bind(alias)
            }
            KeyBy::Id(id) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{SPEND} WHERE key_id = $1")))
                    .bind(id)
            }
        };
        query
            .persistent(false)
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("no spend for {key:?}: {e}"))
    }

    /// The audit record of the request `request_id` (its `x-request-id`), from this gateway's
    /// audit directory, once the queue has been shipped.
    pub async fn audit_record(&self, request_id: &str) -> Value {
        self.settled().await;
        self.state
            .audit
            .ship_requests(true)
            .await
            .expect("ship the audit queue");
        crate::audit_records(&self.db.audit_dir())
            .into_iter()
            .map(|(_, record)| record)
            .find(|record| record["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no audit record for {request_id}"))
    }

    /// The count `sql` (a `SELECT count(*) ...` of the test's own) returns.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .persistent(false)
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
