//! Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) over real HTTP,
//! against the Bedrock double's InvokeModel: the same admission, PII guard, settlement and audit
//! as chat completions, with `call_type` `anthropic_messages` and Anthropic's error shape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{KeyBy, MASTER_KEY, Reply, TestGateway, sse_events};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

#[tokio::test]
async fn a_message_settles_as_anthropic_messages_with_its_exact_cost() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "claude-code", "max_budget": 5}))
        .await;
    let Reply {
        status,
        headers,
        text: body,
    } = gw
        .post(
            "/v1/messages",
            &key,
            json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100,
                   "system": "be brief", "metadata": {"user_id": "alice"},
                   "messages": [{"role": "user", "content": "Hello there"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(message["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(message["content"][0]["text"], "echo: Hello there");
    let cost: Decimal = headers["x-litellm-response-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let events = gw
        .stream(
            "/v1/messages",
            &key,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
                   "messages": [{"role": "user", "content": "stream it"}]}),
        )
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(names[..2], ["message_start", "ping"], "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(
        !events[events.len() - 1]
            .json()
            .to_string()
            .contains("invocationMetrics")
    );
    assert_eq!(events[0].json()["message"]["model"], "claude-sonnet-4-5");

    gw.settled().await;
    let rows: Vec<(String, String, Option<String>, Decimal)> = sqlx::query_as(
        "SELECT call_type, status, end_user, spend FROM litellm_spend ORDER BY start_time",
    )
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(
            (row.0.as_str(), row.1.as_str()),
            ("anthropic_messages", "success")
        );
    }
    assert_eq!(rows[0].2.as_deref(), Some("alice"));
    assert_eq!(rows[0].3, cost);
    let key_spend = gw.key_spend(KeyBy::Alias("claude-code")).await;
    assert_eq!(key_spend, rows[0].3 + rows[1].3);
}

#[tokio::test]
async fn bad_requests_and_keys_get_anthropics_error_shape_before_anything_is_taken() {
    let gw = TestGateway::start().await;
    let cases = [
        (
            MASTER_KEY,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            MASTER_KEY,
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
        ),
        (
            "sk-not-a-key-000000000",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            401,
            "authentication_error",
        ),
        (
            MASTER_KEY,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 999_999, "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
    ];
    for (key, body, status, kind) in cases {
        let Reply {
            status: got, text, ..
        } = gw.post("/v1/messages", key, body.clone()).await;
        assert_eq!(got, status, "{body}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["error"]["type"], kind, "{text}");
        assert!(!text.contains(key) || key == MASTER_KEY);
    }
    // No key at all, and a body that is not JSON.
    let response = Reply::read(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(response.status, 401);
    let error = response.json();
    assert_eq!(error["error"]["type"], "authentication_error");
    let Reply { status, text, .. } = gw.post("/v1/messages", MASTER_KEY, json!([1, 2])).await;
    assert_eq!(status, 400, "{text}");
    assert!(gw.bedrock_calls().await.is_empty());
    gw.settled().await;
    let rows = gw.count("SELECT count(*) FROM litellm_spend").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_card_in_a_tool_result_is_blocked_and_an_email_in_system_is_masked() {
    let gw = TestGateway::start().await;
    let Reply { status, text, .. } = gw.post("/v1/messages", MASTER_KEY,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 50,
               "messages": [
                   {"role": "user", "content": "look it up"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                 "content": [{"type": "text", "text": "card 4539 1488 0343 6467"}]}]}
               ]}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(text.contains("CREDIT_CARD"), "{text}");
    assert!(!text.contains("4539"), "{text}");

    let Reply { status, text, .. } = gw
        .post(
            "/v1/messages",
            MASTER_KEY,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 50,
                   "system": [{"type": "text", "text": "Escalate to boss@example.com"}],
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let calls = gw.bedrock_calls().await;
    let sent = calls.last().unwrap()["body"].to_string();
    assert!(!sent.contains("boss@example.com"), "{sent}");
    assert!(sent.contains("anthropic_version"), "{sent}");
}

#[tokio::test]
async fn count_tokens_needs_a_key_and_takes_nothing_from_its_limits() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"rpm_limit": 1})).await;
    for _ in 0..3 {
        let response = gw
            .post(
                "/v1/messages/count_tokens",
                &key,
                json!({"model": "claude-haiku-4-5",
                       "messages": [{"role": "user", "content": "four words right here"}]}),
            )
            .await;
        assert_eq!(response.status, 200);
        assert!(response.headers.contains_key("x-llmlite-token-count"));
        let counted = response.json();
        assert!(counted["input_tokens"].as_u64().unwrap() > 0, "{counted}");
    }
    // The one request a minute is still there.
    let Reply { status, text, .. } = gw.post("/v1/messages", &key,
        json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let response = gw
        .request(
            Method::POST,
            "/v1/messages/count_tokens",
            None,
            Some(&json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn a_recorded_claude_code_request_streams_with_only_the_betas_bedrock_takes() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"key_alias": "claude-code"})).await;
    let recorded: Value =
        serde_json::from_str(include_str!("../compat/claude-code-messages.json")).unwrap();
    let mut request = gw.client.post(gw.url("/v1/messages"));
    for (name, value) in recorded["headers"].as_object().unwrap() {
        let value = value.as_str().unwrap().replace("KEY", &key);
        request = request.header(name.as_str(), value);
    }
    let response = request
        .body(recorded["body"].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(
        response.headers()["x-llmlite-dropped-betas"],
        "claude-code-20250219,context-management-2025-06-27"
    );
    let body = response.text().await.unwrap();
    let events: Vec<(String, Value)> = sse_events(&body)
        .iter()
        .map(|e| (e.name.clone().unwrap(), e.json()))
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["message_start", "ping"], "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    // The double answers a named tool with a call: the stream carries a tool_use block and its
    // input as JSON deltas, and stops for the tool.
    let tool = events
        .iter()
        .find(|(n, e)| n == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool.1["content_block"]["name"], "Bash");
    let input: String = events
        .iter()
        .filter_map(|(_, e)| e["delta"]["partial_json"].as_str())
        .collect();
    serde_json::from_str::<Value>(&input).unwrap();
    let stop = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");

    // What Bedrock was sent: the two betas it takes, no Anthropic-only fields.
    let calls = gw.bedrock_calls().await;
    let sent = &calls.last().unwrap()["body"];
    assert_eq!(
        calls.last().unwrap()["operation"],
        "invoke-with-response-stream"
    );
    assert_eq!(
        sent["anthropic_beta"],
        json!([
            "interleaved-thinking-2025-05-14",
            "fine-grained-tool-streaming-2025-05-14"
        ])
    );
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    for absent in ["model", "stream", "metadata", "context_management"] {
        assert!(sent.get(absent).is_none(), "{absent}: {sent}");
    }
    gw.settled().await;
    let row: (String, Option<String>, String) =
        sqlx::query_as("SELECT call_type, end_user, status FROM litellm_spend")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        (
            "anthropic_messages".to_owned(),
            Some("user_2f9c0c2b_account__session_7d1e3a44".to_owned()),
            "success".to_owned()
        )
    );
}

#[tokio::test]
async fn the_routers_own_refusals_on_messages_paths_have_anthropics_shape_too() {
    let gw = TestGateway::start().await;
    let too_large = "x".repeat(1024 * 1024 + 1);
    let response = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .header("content-type", "application/json")
        .body(too_large)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "request_too_large", "{error}");

    let response = gw
        .client
        .get(gw.url("/v1/messages"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");

    let response = gw
        .client
        .post(gw.url("/v1/messages/batches"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "not_found_error", "{error}");

    // The OpenAI routes keep theirs.
    let response = gw
        .request(Method::GET, "/v1/chat/completions", None, None)
        .await;
    assert_eq!(response.status, 405);
    let error = response.json();
    assert_eq!(error["error"]["type"], "method_not_allowed", "{error}");
}

#[tokio::test]
async fn one_key_on_both_apis_pays_exactly_what_its_rows_say() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"max_budget": 10})).await;
    let mut requests = Vec::new();
    for n in 0..12 {
        let gw = &gw;
        let key = key.clone();
        requests.push(async move {
            let content = format!("mixed traffic number {n}");
            let (path, body) = if n % 2 == 0 {
                (
                    "/v1/chat/completions",
                    json!({"model": "claude-haiku-4-5", "stream": n % 4 == 0,
                           "messages": [{"role": "user", "content": content}]}),
                )
            } else {
                (
                    "/v1/messages",
                    json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": n % 4 == 1,
                             "messages": [{"role": "user", "content": content}]}),
                )
            };
            let response = gw.post(path, &key, body).await;
            assert_eq!(response.status, 200);
        });
    }
    futures_util::future::join_all(requests).await;
    gw.settled().await;
    let (rows, chat, messages, total): (i64, i64, i64, Decimal) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE call_type = 'acompletion'),
                count(*) FILTER (WHERE call_type = 'anthropic_messages'), sum(spend)
           FROM litellm_spend",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((rows, chat, messages), (12, 6, 6));
    let key_spend: Decimal = sqlx::query_scalar("SELECT spend FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(key_spend, total);
    assert!(total > Decimal::ZERO);
}

#[tokio::test]
async fn spend_logs_the_rollup_and_the_reports_tell_the_two_apis_apart() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"key_alias": "both"})).await;
    let Reply { status, text, .. } = gw.post("/v1/messages", &key,
        json!({"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "via messages"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let response = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "via chat"}]}),
        )
        .await;
    assert_eq!(response.status, 200);
    gw.settled().await;

    let logs = gw.get("/spend/logs", MASTER_KEY).await.json();
    let mut call_types: Vec<String> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["call_type"].as_str().unwrap().to_owned())
        .collect();
    call_types.sort();
    assert_eq!(call_types, ["acompletion", "anthropic_messages"], "{logs}");

    let root =
        std::env::temp_dir().join(format!("llmlite-messages-reports-{}", std::process::id()));
    let sink = llmlite::clients::audit::Sink::Directory(root.clone());
    llmlite::rollup::run(&gw.state, &sink, 90, gw.state.clock.now())
        .await
        .unwrap();
    let mut endpoints: Vec<(String, i64)> =
        sqlx::query_as("SELECT endpoint, api_requests FROM litellm_dailyuserspend")
            .persistent(false)
            .fetch_all(&gw.db.pool)
            .await
            .unwrap();
    endpoints.sort();
    assert_eq!(
        endpoints,
        [
            ("/v1/chat/completions".to_owned(), 1),
            ("/v1/messages".to_owned(), 1)
        ]
    );
    let day = gw.state.clock.now().date_naive();
    let report: Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("reports/daily/{day}.json"))).unwrap(),
    )
    .unwrap();
    let mut reported: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["call_type"].as_str().unwrap())
        .collect();
    reported.sort_unstable();
    assert_eq!(reported, ["acompletion", "anthropic_messages"], "{report}");
    let _ = std::fs::remove_dir_all(root);
}
