//! Bedrock Guardrails as an optional layer (issue #28): a key's or team's `guardrail` judges the
//! prompt after the PII guard and the answer after the model, whole or in windows. The official
//! SDKs (`tests/compat/guardrails.py`) drive the gateway against the wire-level Bedrock double's
//! guardrail (employee IDs ANONYMIZED, the topic "mergers" BLOCKED); the spend rows, audit
//! records and the double's calls are then held against what was asked. The HTTP checks below
//! cover the streams' endings, a guardrail that cannot judge, and the admin field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use base64::Engine;
use llmlite::dev::bedrock_double::BLOCKED_OUTPUT;
use llmlite_tests::{MASTER_KEY, TestGateway, models_file, price};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const CATALOG: &str = r#"
[[model]]
alias = "sonnet"
bedrock_model_id = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = { input = "3.30", output = "16.50", cache_read = "0.33", cache_write = "4.125", cache_write_1h = "6.60" }
temperature_and_top_p = false

[guardrails]
content = "0.15"
topic = "0.15"
sensitive_information = "0.10"
contextual_grounding = "0.10"
"#;

/// What a spend row says of one request, with what its guardrail did.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    prompt_tokens: i64,
    completion_tokens: i64,
    spend: Decimal,
    status: String,
    metadata: Value,
}

async fn row(gw: &TestGateway, request_id: &str) -> Row {
    gw.settled().await;
    sqlx::query_as(
        "SELECT prompt_tokens, completion_tokens, spend, status, metadata
         FROM litellm_spend WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap_or_else(|e| panic!("no spend row for {request_id}: {e}"))
}

/// The cost of a row's tokens at `sonnet`'s prices, plus its guardrail units at the catalog's
/// (content 0.15, topic 0.15, PII 0.10 per 1,000 units; the regex and word filters free),
/// worked out here from the row's own counts.
fn cost(row: &Row) -> Decimal {
    let units = &row.metadata["llmlite_guardrail"]["units"];
    let n = |policy: &str| Decimal::from(units[policy].as_u64().unwrap_or(0));
    (price("3.30") * Decimal::from(row.prompt_tokens)
        + price("16.50") * Decimal::from(row.completion_tokens))
        / Decimal::from(1_000_000)
        + (price("0.15") * n("content")
            + price("0.15") * n("topic")
            + price("0.10") * n("sensitive_information")
            + price("0.10") * n("contextual_grounding"))
            / Decimal::from(1000)
}

/// Keys: `guarded` names a guardrail; `team_guarded` names none and its team does.
async fn keys(gw: &TestGateway) -> Value {
    let team = gw
        .admin(
            "/team/new",
            json!({"team_id": "secure", "guardrail": {"id": "gr0team", "version": "DRAFT"}}),
        )
        .await;
    assert_eq!(
        team["guardrail"],
        json!({"id": "gr0team", "version": "DRAFT"})
    );
    json!({
        "guarded": gw.mint_raw_key(json!({"key_alias": "guarded",
            "guardrail": {"id": "gr0abc12", "version": "3"}})).await,
        "team_guarded": gw.mint_raw_key(json!({"key_alias": "team-guarded", "team_id": "secure"})).await,
    })
}

/// The double's `ApplyGuardrail` calls.
async fn guardrail_calls(gw: &TestGateway) -> Vec<Value> {
    gw.bedrock_calls()
        .await
        .into_iter()
        .filter(|c| c["operation"] == "apply-guardrail")
        .collect()
}

/// The double's model calls for `request_id` (Converse and InvokeModel carry its tags).
async fn model_calls(gw: &TestGateway, request_id: &str) -> Vec<Value> {
    gw.bedrock_calls()
        .await
        .into_iter()
        .filter(|c| c["request_metadata"]["llmlite_request_id"] == request_id)
        .collect()
}

#[tokio::test]
async fn guardrails_mask_block_and_charge_through_both_sdks() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let keys = keys(&gw).await;
    let Some(results) = gw.run_sdk_script("guardrails.py", &keys).await else {
        return;
    };
    let id = |name: &str| results[name].as_str().unwrap().to_owned();

    // ANONYMIZE: Bedrock got the masked prompt, never the ID; the key's guardrail judged it,
    // and the team's judged the team key's.
    for (name, raw) in [
        ("openai_masked", "EMP-123456"),
        ("anthropic_masked", "EMP-765432"),
    ] {
        let calls = model_calls(&gw, &id(name)).await;
        assert_eq!(calls.len(), 1, "{name}");
        let body = calls[0]["body"].to_string();
        assert!(
            body.contains("{EMPLOYEE_ID}") && !body.contains(raw),
            "{body}"
        );
        let row = row(&gw, &id(name)).await;
        let guardrail = &row.metadata["llmlite_guardrail"];
        assert_eq!(guardrail["input"], "masked", "{guardrail}");
        assert_eq!(guardrail["output"], "none", "{guardrail}");
        // One short text in, one short answer out: one unit each, per policy.
        assert_eq!(guardrail["calls"], 2, "{guardrail}");
        assert_eq!(guardrail["units"]["content"], 2, "{guardrail}");
        assert_eq!(row.spend, cost(&row), "{name}");
        // Two units of three priced policies: the guardrail's part of the spend.
        assert_eq!(
            price(guardrail["cost"].as_str().unwrap()),
            price("0.0008"),
            "{guardrail}"
        );
    }
    let named: Vec<String> = guardrail_calls(&gw)
        .await
        .iter()
        .map(|c| format!("{}:{}", c["guardrail"].as_str().unwrap(), c["version"]))
        .collect();
    assert!(named.contains(&"gr0abc12:\"3\"".to_owned()), "{named:?}");
    assert!(named.contains(&"gr0team:\"DRAFT\"".to_owned()), "{named:?}");

    // BLOCKED on the prompt: no model was called; the request paid the guardrail's units and
    // nothing else, once, and its audit record says so.
    for name in ["openai_blocked", "anthropic_blocked"] {
        let request_id = id(name);
        assert!(model_calls(&gw, &request_id).await.is_empty(), "{name}");
        let row = row(&gw, &request_id).await;
        assert_eq!(row.status, "failure");
        assert_eq!((row.prompt_tokens, row.completion_tokens), (0, 0));
        assert_eq!(row.metadata["llmlite_guardrail"]["input"], "blocked");
        assert_eq!(
            row.spend,
            price("0.0004"),
            "one unit of three priced policies"
        );
        let audit = gw.audit_record(&request_id).await;
        assert_eq!(audit["error_type"], "guardrail_blocked", "{audit}");
        assert_eq!(audit["guardrail"]["input"], "blocked", "{audit}");
        assert_eq!(audit["cost"], "0.0004");
    }

    // BLOCKED mid-stream: the model's whole answer is paid (Bedrock's count), with every
    // window the guardrail judged.
    for name in ["openai_stream_blocked", "anthropic_stream_blocked"] {
        let row = row(&gw, &id(name)).await;
        assert_eq!(row.status, "failure", "{name}");
        let guardrail = &row.metadata["llmlite_guardrail"];
        assert_eq!(guardrail["output"], "blocked", "{guardrail}");
        // The prompt, then the answer's three windows (1,000, 1,000 and 171 characters): the
        // last one, with the denied topic, blocked.
        assert_eq!(guardrail["calls"], 4, "{guardrail}");
        assert!(row.completion_tokens >= 250, "{}", row.completion_tokens);
        assert_eq!(row.spend, cost(&row), "{name}");
    }

    // Exactly once: every request has one row, and each key's spend is its rows' sum.
    gw.settled().await;
    let mismatched: i64 = gw
        .count(
            "SELECT count(*) FROM litellm_verificationtoken v
             WHERE v.spend <> (SELECT coalesce(sum(s.spend), 0) FROM litellm_spend s
                               WHERE s.api_key = v.token)",
        )
        .await;
    assert_eq!(mismatched, 0);
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_inflight").await,
        0,
        "no lease is left"
    );
}

fn say(text: &str) -> String {
    format!(
        "[[say64:{}]]",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// Streams end with an error event and no ending when the guardrail blocks mid-answer, in each
/// API's shape; the text sent before is what the guardrail cleared.
#[tokio::test]
async fn a_stream_the_guardrail_blocks_ends_with_an_error_event_and_no_ending() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let key = gw
        .mint_raw_key(json!({"guardrail": {"id": "gr0abc12", "version": "1"}}))
        .await;
    let answer = format!(
        "{} Then the merger.",
        (0..250)
            .map(|i| format!("w{i}."))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let message = json!([{"role": "user", "content": say(&answer)}]);

    let events = gw
        .stream(
            "/v1/chat/completions",
            &key,
            json!({"model": "sonnet", "stream": true, "max_tokens": 1000, "messages": message}),
        )
        .await;
    assert!(events.iter().all(|e| e.data != "[DONE]"), "{events:?}");
    let last = events.last().unwrap().json();
    assert_eq!(last["error"]["type"], "guardrail_blocked", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains(BLOCKED_OUTPUT)
    );
    let sent: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        sent.starts_with("w0. w1.") && !sent.contains("merger"),
        "{sent}"
    );

    let events = gw
        .stream(
            "/v1/messages",
            &key,
            json!({"model": "sonnet", "stream": true, "max_tokens": 1000, "messages": message}),
        )
        .await;
    assert!(
        events
            .iter()
            .all(|e| e.name.as_deref() != Some("message_stop")),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["type"], "invalid_request_error");

    let events = gw
        .stream(
            "/v1/responses",
            &key,
            json!({"model": "sonnet", "stream": true, "max_output_tokens": 1000,
                   "input": say(&answer)}),
        )
        .await;
    assert!(
        events
            .iter()
            .all(|e| e.name.as_deref() != Some("response.completed")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.name.as_deref() == Some("response.failed")),
        "{events:?}"
    );

    // Under the window, nothing is sent before the guardrail has judged it: a short blocked
    // answer sends no text at all.
    let events = gw
        .stream(
            "/v1/chat/completions",
            &key,
            json!({"model": "sonnet", "stream": true,
                   "messages": [{"role": "user", "content": say("merger talk")}]}),
        )
        .await;
    assert!(
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .all(|v| v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .is_empty()),
        "{events:?}"
    );
}

/// A guardrail that cannot judge the request fails closed: nothing reaches a model, the request
/// settles once, and nothing stays reserved. And the admin field takes only what Bedrock would.
#[tokio::test]
async fn a_guardrail_that_cannot_judge_fails_closed_and_bad_settings_are_refused() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let missing = gw
        .mint_raw_key(json!({"key_alias": "missing",
            "guardrail": {"id": "gr0missing", "version": "1"}}))
        .await;
    let chat = |text: &str| json!({"model": "sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": text}]});
    let reply = gw
        .post("/v1/chat/completions", &missing, chat("hello"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert!(reply.text.contains("gr0missing:1"), "{}", reply.text);
    let reply = gw
        .post(
            "/v1/messages",
            &missing,
            json!({"model": "sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text);
    assert_eq!(reply.json()["type"], "error");

    // Unavailable: retried, then a 503; still no model call.
    let unavailable = gw
        .mint_raw_key(json!({"guardrail": {"id": "gr0abc12", "version": "1"}}))
        .await;
    let reply = gw
        .post(
            "/v1/chat/completions",
            &unavailable,
            chat("[[guardrail-error:503:ServiceUnavailableException]]"),
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    let calls = gw.bedrock_calls().await;
    assert!(
        calls.iter().all(|c| c["operation"] == "apply-guardrail"),
        "no model was called: {calls:?}"
    );
    assert_eq!(calls.len(), 2 + 3, "two refused, then three tries");
    gw.settled().await;
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
    assert_eq!(gw.count("SELECT count(*) FROM litellm_spend").await, 3);
    assert_eq!(
        gw.count("SELECT count(*) FROM litellm_spend WHERE spend <> 0")
            .await,
        0,
        "an unjudged request costs nothing"
    );

    // The admin field: Bedrock's patterns only, named but never echoed; null clears it.
    for bad in [
        json!({"id": "GR0", "version": "1"}),
        json!({"id": "gr0\u{0}x", "version": "1"}),
        json!({"id": "gr0", "version": "0"}),
        json!({"id": "gr0", "version": "DRAFT", "region": "us"}),
        json!({"id": "arn:aws:bedrock:eu-west-2:123:guardrail/gr0", "version": "1"}),
        json!("gr0"),
    ] {
        let reply = gw
            .post(
                "/key/update",
                MASTER_KEY,
                json!({"key": missing, "guardrail": bad}),
            )
            .await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
        assert_eq!(
            reply.json()["error"]["param"],
            "guardrail",
            "{}",
            reply.text
        );
        assert!(
            !reply.text.contains("GR0") && !reply.text.contains('\u{0}'),
            "{}",
            reply.text
        );
        let reply = gw
            .post(
                "/team/new",
                MASTER_KEY,
                json!({"team_id": "t", "guardrail": bad}),
            )
            .await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
    }
    let arn = "arn:aws:bedrock:eu-west-2:123456789012:guardrail/gr0abc12";
    gw.admin(
        "/key/update",
        json!({"key": missing, "guardrail": {"id": arn, "version": "7"}}),
    )
    .await;
    let info = gw.admin("/key/info", json!({"key": missing})).await;
    assert_eq!(
        info["info"]["guardrail"],
        json!({"id": arn, "version": "7"})
    );
    // An ARN reaches Bedrock whole (escaped in the path), and the answer times the guardrail.
    let reply = gw
        .post("/v1/chat/completions", &missing, chat("hello again"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let timing = reply.headers["server-timing"].to_str().unwrap().to_owned();
    assert!(timing.contains("guardrail;dur="), "{timing}");
    let last = guardrail_calls(&gw).await.pop().unwrap();
    assert_eq!(
        (last["guardrail"].as_str(), last["version"].as_str()),
        (Some(arn), Some("7"))
    );
    gw.admin("/key/update", json!({"key": missing, "guardrail": null}))
        .await;
    let info = gw.admin("/key/info", json!({"key": missing})).await;
    assert_eq!(info["info"]["guardrail"], Value::Null);
    // Without one, the request is served and no guardrail is called.
    let before = guardrail_calls(&gw).await.len();
    let reply = gw
        .post(
            "/v1/chat/completions",
            &missing,
            chat("Tell me about the merger"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(guardrail_calls(&gw).await.len(), before);
}

/// Every API that sends text runs it past the guardrail: embeddings' inputs too (they have no
/// answer to judge). Odd text (a NUL, a right-to-left override, an emoji) reaches the guardrail
/// and the model intact around what it masks.
#[tokio::test]
async fn embeddings_and_odd_text_go_through_the_guardrail() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"guardrail": {"id": "gr0abc12", "version": "1"}}))
        .await;
    let embed = |input: Value| json!({"model": "titan-embed-text-v2", "input": input});
    let reply = gw
        .post(
            "/v1/embeddings",
            &key,
            embed(json!("file EMP-123456 today")),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let calls = gw.bedrock_calls().await;
    let embedded = calls
        .iter()
        .find(|c| c["model_id"] == "amazon.titan-embed-text-v2:0")
        .unwrap();
    assert_eq!(embedded["body"]["inputText"], "file {EMPLOYEE_ID} today");
    let row = gw.spend_row(&reply.request_id()).await;
    assert_eq!(row.metadata["llmlite_guardrail"]["input"], "masked");
    assert!(row.metadata["llmlite_guardrail"]["output"].is_null());

    let reply = gw
        .post("/v1/embeddings", &key, embed(json!(["fine", "the Merger"])))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json()["error"]["type"], "guardrail_blocked");
    assert_eq!(
        gw.bedrock_calls()
            .await
            .iter()
            .filter(|c| c["operation"] != "apply-guardrail")
            .count(),
        1,
        "the blocked batch reached no model"
    );

    let odd = "EMP-654321 \u{0} \u{202e}txet \u{1f980}";
    let reply = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 32,
                   "messages": [{"role": "user", "content": odd}]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer = reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(answer, "echo: {EMPLOYEE_ID} \u{0} \u{202e}txet \u{1f980}");
    let judged = guardrail_calls(&gw).await;
    assert!(
        judged
            .iter()
            .any(|c| c["texts"][0] == odd && c["source"] == "INPUT"),
        "{judged:?}"
    );
}

/// A client that hangs up while a guarded answer streams: the request settles once, with the
/// guardrail's units of the windows judged, and holds no lease.
#[tokio::test]
async fn a_hang_up_mid_stream_pays_once_with_the_guardrails_units() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let key = gw
        .mint_raw_key(json!({"guardrail": {"id": "gr0abc12", "version": "1"}}))
        .await;
    gw.script(json!([{"event_gap_ms": 20}])).await;
    let answer = (0..600)
        .map(|i| format!("w{i}."))
        .collect::<Vec<_>>()
        .join(" ");
    let mut response = gw
        .client
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .bearer_auth(&key)
        .json(
            &json!({"model": "sonnet", "max_tokens": 2000, "stream": true,
                      "messages": [{"role": "user", "content": say(&answer)}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // Read until the first judged window's text has arrived, then hang up.
    let mut seen = String::new();
    while !seen.contains("w1.") {
        let chunk = response.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);

    let row = row(&gw, &request_id).await;
    assert_eq!(row.status, "client_closed");
    let guardrail = &row.metadata["llmlite_guardrail"];
    assert_eq!(guardrail["input"], "none", "{guardrail}");
    assert!(guardrail["calls"].as_u64().unwrap() >= 2, "{guardrail}");
    assert_eq!(row.spend, cost(&row), "{guardrail}");
    let (rows, leases): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM litellm_spend WHERE request_id = $1),
                (SELECT count(*) FROM llmlite_inflight)",
    )
    .bind(&request_id)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((rows, leases), (1, 0));
}
