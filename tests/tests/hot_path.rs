//! The chat hot path with virtual keys: admission and settlement on real PostgreSQL, exact
//! under concurrency.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::str::FromStr;
use std::time::Duration;

use futures_util::future::join_all;
use llmlite_tests::{KeyBy, Reply, TestGateway};
use rust_decimal::Decimal;
use serde_json::{Value, json};

async fn new_key(gw: &TestGateway, body: Value) -> (String, String) {
    let minted = gw.mint_key(body).await;
    (
        minted["key"].as_str().unwrap().to_owned(),
        minted["token"].as_str().unwrap().to_owned(),
    )
}

/// The API a request goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    /// Anthropic's Messages API, `/v1/messages`.
    Messages,
}

/// One request through `api`, settled before it returns: what a test checks next is settled.
async fn ask_as(
    gw: &TestGateway,
    api: Api,
    key: &str,
    model: &str,
    text: impl AsRef<str>,
) -> Reply {
    let path = match api {
        Api::Chat => "/v1/chat/completions",
        Api::Messages => "/v1/messages",
    };
    let body = json!({"model": model, "messages": [{"role": "user", "content": text.as_ref()}],
                      "max_tokens": 16});
    let response = gw.post(path, key, body).await;
    gw.settled().await;
    response
}

/// A chat completion, as [`ask_as`].
async fn chat_as(gw: &TestGateway, key: &str, model: &str, text: impl AsRef<str>) -> Reply {
    ask_as(gw, Api::Chat, key, model, text).await
}

fn error_type(response: Reply) -> (u16, String) {
    let status = response.status;
    let body = response.json();
    (
        status,
        body["error"]["type"].as_str().unwrap_or("").to_owned(),
    )
}

async fn decimal(gw: &TestGateway, sql: &str, bind: &str) -> Decimal {
    sqlx::query_scalar::<_, Option<Decimal>>(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(bind)
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_virtual_key_chats_and_pays_exactly() {
    let gw = TestGateway::start().await;
    let (key, token) = new_key(
        &gw,
        json!({"rpm_limit": 100, "tpm_limit": 10000, "max_budget": 1}),
    )
    .await;
    let response = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 16, "user": "alice@example.com",
                     "metadata": {"project": "apollo"},
                     "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
    assert_eq!(response.status, 200);
    gw.settled().await;
    let headers = response.headers;
    let cost = headers["x-litellm-response-cost"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(headers["x-litellm-key-spend"].to_str().unwrap(), cost);
    assert_eq!(headers["x-ratelimit-limit-requests"], "100");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "99");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "10000");
    assert!(headers.contains_key("x-ratelimit-remaining-tokens"));
    assert!(headers.contains_key("x-ratelimit-reset-requests"));
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();

    let row: (String, Decimal, i64, i64, String) = sqlx::query_as(
        "SELECT api_key, spend, prompt_tokens, completion_tokens, status FROM litellm_spend WHERE request_id = $1",
    )
    .bind(&request_id)
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, token);
    let (end_user, metadata): (Option<String>, Value) =
        sqlx::query_as("SELECT end_user, metadata FROM litellm_spend WHERE request_id = $1")
            .bind(&request_id)
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(end_user.as_deref(), Some("alice@example.com"));
    assert_eq!(metadata, json!({"project": "apollo"}));
    assert_eq!(row.1, Decimal::from_str(&cost).unwrap());
    assert_eq!((row.2, row.3, row.4.as_str()), (2, 3, "success"));
    let spend = gw.key_spend(KeyBy::Token(&token)).await;
    assert_eq!(spend, row.1);
    let inflight: i64 = sqlx::query_scalar("SELECT count(*) FROM llmlite_inflight")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(inflight, 0, "settlement released the lease");
}

#[tokio::test]
async fn revocation_block_expiry_and_model_denial_apply_on_the_very_next_request() {
    let gw = TestGateway::start().await;
    let chat = |key: String| {
        let gw = &gw;
        async move { error_type(chat_as(gw, &key, "claude-haiku-4-5", "hi").await) }
    };

    let (deleted, _) = new_key(&gw, json!({})).await;
    assert_eq!(chat(deleted.clone()).await.0, 200);
    gw.admin("/key/delete", json!({"keys": [deleted]})).await;
    assert_eq!(chat(deleted).await, (401, "inactive_key".into()));

    let (blocked, _) = new_key(&gw, json!({})).await;
    assert_eq!(chat(blocked.clone()).await.0, 200);
    gw.admin("/key/block", json!({"key": blocked})).await;
    assert_eq!(chat(blocked.clone()).await, (401, "blocked_key".into()));
    gw.admin("/key/unblock", json!({"key": blocked})).await;
    assert_eq!(chat(blocked).await.0, 200);

    let (expiring, _) = new_key(&gw, json!({"duration": "1h"})).await;
    assert_eq!(chat(expiring.clone()).await.0, 200);
    gw.state.clock.advance(Duration::from_secs(3601));
    assert_eq!(chat(expiring).await, (401, "expired_key".into()));

    let (narrow, _) = new_key(&gw, json!({"models": ["claude-sonnet-4-5"]})).await;
    assert_eq!(
        chat(narrow.clone()).await,
        (403, "model_not_allowed".into())
    );
    assert_eq!(
        error_type(chat_as(&gw, &narrow, "claude-sonnet-4-5", "hi").await).0,
        200
    );

    gw.admin(
        "/team/new",
        json!({"team_id": "haiku-only", "models": ["claude-haiku-4-5"]}),
    )
    .await;
    let (team_key, _) = new_key(&gw, json!({"team_id": "haiku-only"})).await;
    assert_eq!(
        error_type(chat_as(&gw, &team_key, "claude-sonnet-4-5", "hi").await),
        (403, "model_not_allowed".into())
    );
    assert_eq!(chat(team_key).await.0, 200);

    assert_eq!(
        chat("sk-never-issued-0000000000".into()).await,
        (401, "token_not_found_in_db".into())
    );
}

#[tokio::test]
async fn models_lists_only_what_the_key_may_use() {
    let gw = TestGateway::start().await;
    let (key, _) = new_key(
        &gw,
        json!({"models": ["claude-haiku-4-5", "claude-3-opus"]}),
    )
    .await;
    let body = gw.get("/v1/models", &key).await.json();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude-haiku-4-5", "claude-3-opus"]);
    let hidden = gw.get("/v1/models/claude-sonnet-4-5", &key).await;
    assert_eq!(hidden.status, 404);
}

#[tokio::test]
async fn rpm_admits_exactly_the_bucket_under_concurrency() {
    // A day-long refill period: the burst's few seconds refill nothing, so the count is exact.
    let gw = TestGateway::start_with(&[("LLMLITE_RATE_PERIOD_SECS", "86400")]).await;
    let (key, _) = new_key(&gw, json!({"rpm_limit": 30})).await;
    let responses =
        join_all((0..60).map(|n| chat_as(&gw, &key, "claude-haiku-4-5", format!("request {n}"))))
            .await;
    let mut ok = 0;
    for response in responses {
        match response.status {
            200 => ok += 1,
            429 => {
                assert!(response.headers.contains_key("retry-after"));
                assert_eq!(response.headers["x-ratelimit-remaining-requests"], "0");
                assert_eq!(error_type(response).1, "rate_limit_exceeded");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 30);
}

#[tokio::test]
async fn tpm_takes_the_estimate_then_charges_the_actual_tokens() {
    let gw = TestGateway::start().await;
    let (key, token) = new_key(&gw, json!({"tpm_limit": 100})).await;
    // "one two three four five six seven eight": 8 words in, "echo: ..." 9 words out = 17
    // tokens by the double's count; the admission estimate is 38/4 + 4 = 14.
    let text = "one two three four five six seven eight";
    let mut admitted = 0;
    loop {
        let response = chat_as(&gw, &key, "claude-haiku-4-5", text).await;
        if response.status == 429 {
            break;
        }
        assert_eq!(response.status, 200);
        admitted += 1;
        assert!(admitted < 20);
    }
    // After k requests the bucket holds 100 - 17k; a request needs 14: k = 6 fit (100 - 85 = 15
    // leaves room for a sixth), the seventh does not.
    assert_eq!(admitted, 6);
    let level: Decimal = sqlx::query_scalar(
        "SELECT tokens FROM llmlite_rate_bucket WHERE scope = 'key' AND scope_id = $1 AND resource = 'tpm'",
    )
    .bind(&token)
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert!(level < Decimal::from(14), "{level}");
}

#[tokio::test]
async fn spend_never_passes_the_budget_under_50_concurrent_requests() {
    budget_holds_under_50_concurrent_requests(Api::Chat, "budget_exceeded").await;
}

#[tokio::test]
async fn spend_never_passes_the_budget_under_50_concurrent_messages() {
    budget_holds_under_50_concurrent_requests(Api::Messages, "permission_error").await;
}

/// 50 requests at once through `api` against a key whose budget covers some: the refused get
/// 403 with `refused_as`, and the key's, its user's and its team's spend equal its rows', never
/// over the budget.
async fn budget_holds_under_50_concurrent_requests(api: Api, refused_as: &str) {
    let gw = TestGateway::start().await;
    gw.admin("/team/new", json!({"team_id": "thrifty"})).await;
    gw.admin(
        "/user/new",
        json!({"user_id": "penny", "auto_create_key": false}),
    )
    .await;
    // Haiku: $1.10 in, $5.50 out per million. Each request reserves ~ (6 + 16 x 5.5) millionths.
    let (key, token) = new_key(
        &gw,
        json!({"max_budget": "0.0009", "user_id": "penny", "team_id": "thrifty"}),
    )
    .await;
    let responses =
        join_all((0..50).map(|n| ask_as(&gw, api, &key, "claude-haiku-4-5", format!("spend {n}"))))
            .await;
    let mut ok = 0;
    for response in responses {
        match response.status {
            200 => ok += 1,
            403 => assert_eq!(error_type(response).1, refused_as),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok > 0 && ok < 50, "{ok} admitted");
    let key_spend = gw.key_spend(KeyBy::Token(&token)).await;
    let rows = decimal(
        &gw,
        "SELECT sum(spend) FROM litellm_spend WHERE api_key = $1",
        &token,
    )
    .await;
    let user = decimal(
        &gw,
        "SELECT spend FROM litellm_usertable WHERE user_id = $1",
        "penny",
    )
    .await;
    let team = decimal(
        &gw,
        "SELECT spend FROM litellm_teamtable WHERE team_id = $1",
        "thrifty",
    )
    .await;
    assert!(
        key_spend <= Decimal::from_str("0.0009").unwrap(),
        "{key_spend}"
    );
    assert!(key_spend > Decimal::ZERO);
    assert_eq!(rows, key_spend);
    assert_eq!(user, key_spend);
    assert_eq!(team, key_spend);
}

#[tokio::test]
async fn budgets_reset_when_their_period_ends() {
    let gw = TestGateway::start().await;
    let (key, token) = new_key(
        &gw,
        json!({"max_budget": "0.0002", "budget_duration": "1h"}),
    )
    .await;
    let mut admitted = 0;
    while chat_as(&gw, &key, "claude-haiku-4-5", "x").await.status == 200 {
        admitted += 1;
        assert!(admitted < 50);
    }
    let (status, kind) = error_type(chat_as(&gw, &key, "claude-haiku-4-5", "x").await);
    assert_eq!((status, kind.as_str()), (403, "budget_exceeded"));
    gw.state.clock.advance(Duration::from_secs(3601));
    assert_eq!(
        chat_as(&gw, &key, "claude-haiku-4-5", "x").await.status,
        200,
        "a new period"
    );
    let spend = gw.key_spend(KeyBy::Token(&token)).await;
    assert!(spend < Decimal::from_str("0.0002").unwrap());

    // The same reset, for the rollup function, over every row whose period has ended.
    let later = gw.state.clock.now() + std::time::Duration::from_secs(7200);
    let reset: i64 = sqlx::query_scalar("SELECT llmlite_reset_budgets($1)")
        .bind(later)
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(reset, 1);
    let spend = gw.key_spend(KeyBy::Token(&token)).await;
    assert_eq!(spend, Decimal::ZERO);
}

#[tokio::test]
async fn a_failed_upstream_call_releases_everything_and_records_the_failure() {
    let gw = TestGateway::start().await;
    let (key, token) = new_key(&gw, json!({"max_parallel_requests": 1, "tpm_limit": 1000})).await;
    gw.script(json!([{"error": {"status": 400, "type": "ValidationException"}}]))
        .await;
    let response = chat_as(&gw, &key, "claude-haiku-4-5", "doomed").await;
    assert_eq!(response.status, 400);
    let request_id = response.request_id();
    let (status, spend, error): (String, Decimal, Option<String>) =
        sqlx::query_as("SELECT status, spend, error_type FROM litellm_spend WHERE request_id = $1")
            .bind(&request_id)
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), spend, error.as_deref()),
        ("failure", Decimal::ZERO, Some("invalid_request_error"))
    );
    // The parallel slot and the token estimate came back: the next request runs.
    let tokens: Decimal = sqlx::query_scalar(
        "SELECT tokens FROM llmlite_rate_bucket WHERE scope_id = $1 AND resource = 'tpm'",
    )
    .bind(&token)
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(tokens, Decimal::from(1000));
    assert_eq!(
        chat_as(&gw, &key, "claude-haiku-4-5", "fine").await.status,
        200
    );
}

#[tokio::test]
async fn parallel_requests_are_leased() {
    let gw = TestGateway::start().await;
    let (key, _) = new_key(&gw, json!({"max_parallel_requests": 2})).await;
    // Each call is slow at the double, so all five overlap.
    gw.script(json!([{"latency_ms": 300}, {"latency_ms": 300}, {"latency_ms": 300}, {"latency_ms": 300}, {"latency_ms": 300}])).await;
    let responses = join_all((0..5).map(|_| chat_as(&gw, &key, "claude-haiku-4-5", "slow"))).await;
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let limited = responses.iter().filter(|r| r.status == 429).count();
    assert_eq!(ok + limited, 5);
    assert!(ok >= 2 && limited >= 1, "{ok} ok, {limited} limited");
}

#[tokio::test]
async fn the_chat_path_leaves_no_named_prepared_statement_for_rds_proxy() {
    // One connection, so the check below runs on the session the chat requests used.
    let gw = TestGateway::start_with(&[("LLMLITE_DB_POOL_SIZE", "1")]).await;
    let (key, _) = new_key(&gw, json!({"rpm_limit": 100, "max_budget": 10})).await;
    for _ in 0..3 {
        assert_eq!(
            chat_as(&gw, &key, "claude-haiku-4-5", "prepared?")
                .await
                .status,
            200
        );
    }
    let prepared: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(gw.state.db.pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(prepared, 0);
}

#[tokio::test]
async fn a_small_budget_runs_the_readme_hello_and_a_refusal_says_why_in_numbers() {
    let gw = TestGateway::start().await;
    let hello = |max_tokens: Option<u32>| {
        let mut body = json!({"model": "claude-sonnet-4-5",
                              "messages": [{"role": "user", "content": "Hello"}]});
        if let Some(n) = max_tokens {
            body["max_tokens"] = json!(n);
        }
        body
    };
    let send = |key: String, body: Value| {
        let gw = &gw;
        async move { gw.post("/v1/chat/completions", &key, body).await }
    };

    // A $1 key runs the README's Hello: no `max_tokens` means LLMLITE_DEFAULT_MAX_TOKENS
    // (4,096), not the model's 64,000, which alone would reserve over a dollar.
    let (one_dollar, _) = new_key(&gw, json!({"max_budget": 1})).await;
    assert_eq!(send(one_dollar, hello(None)).await.status, 200);
    let calls = gw.bedrock_calls().await;
    assert_eq!(calls[0]["body"]["inferenceConfig"]["maxTokens"], 4096);

    // A cent does not cover the worst case at 4,096 tokens: the refusal gives the numbers.
    // "Hello" is estimated at ceil(5 / 4) + 4 = 6 prompt tokens, priced at Sonnet 4.5's EU
    // cache-write price ($4.125 per million, dearer than input), plus 4,096 x $16.50 per million.
    let (cent, _) = new_key(&gw, json!({"max_budget": "0.01"})).await;
    let refused = send(cent.clone(), hello(None)).await;
    let (status, body) = (refused.status, refused.json());
    assert_eq!(status, 403);
    assert_eq!(body["error"]["type"], "budget_exceeded");
    assert_eq!(
        body["error"]["message"],
        "key budget exceeded: this request could cost up to 0.06760875 (with max_tokens 4096), \
         and 0.01 of the key's max budget 0.01 is left (spend and requests in flight 0); \
         a lower `max_tokens` would fit"
    );
    // And it would: 100 tokens fit.
    assert_eq!(send(cent, hello(Some(100))).await.status, 200);

    // Below the price of the prompt itself, a lower max_tokens would not help either.
    let (crumb, _) = new_key(&gw, json!({"max_budget": "0.00001"})).await;
    let body = send(crumb, hello(Some(1))).await.json();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("even the prompt alone does not fit"),
        "{body}"
    );
}
