//! OpenAI's embeddings (`POST /v1/embeddings`, `/embeddings`) over real HTTP, against the Bedrock
//! double's Titan and Cohere InvokeModel: a batch split to each model's per-call limit and
//! reassembled in order, admitted once and settled once (`call_type` `aembedding`) at Bedrock's
//! token counts, under the same keys, limits, budgets, PII guard and audit as chat.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use base64::Engine;
use llmlite::dev::bedrock_double::embedding_vector;
use llmlite_tests::{KeyBy, MASTER_KEY, TestGateway};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const TITAN: &str = "titan-embed-text-v2";
const COHERE: &str = "cohere-embed-english-v3";

const EMBEDDINGS: &str = "/v1/embeddings";

/// The vectors of an answer, decoded from base64 where they are.
fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["index"], i, "{item}");
            assert_eq!(item["object"], "embedding");
            match &item["embedding"] {
                Value::String(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap()
                    .chunks(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Value::Array(floats) => floats.iter().map(|f| f.as_f64().unwrap() as f32).collect(),
                other => panic!("{other}"),
            }
        })
        .collect()
}

fn price(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[tokio::test]
async fn batches_are_split_per_model_reassembled_in_order_and_settled_once_at_bedrocks_count() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "search", "max_budget": 5}))
        .await;

    // One string on Titan, the default 1024 dimensions, floats.
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": TITAN, "input": "hello embedding world", "user": "svc"}),
        )
        .await;
    let answer = reply.json();
    assert_eq!(reply.status, 200, "{answer}");
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], TITAN);
    assert_eq!(
        vectors(&answer),
        [embedding_vector("hello embedding world", 1024)]
    );
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let cost: Decimal = reply.headers["x-litellm-response-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        cost,
        price("0.02") * Decimal::from(3) / Decimal::from(1_000_000)
    );

    // 200 texts on Cohere (96 a call: three calls), base64, on the path without /v1.
    let texts: Vec<String> = (0..200).map(|i| format!("passage number {i}")).collect();
    let response = gw
        .post(
            "/embeddings",
            &key,
            json!({"model": COHERE, "input": texts, "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(response.status, 200);
    let answer = response.json();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| embedding_vector(t, 1024)).collect();
    assert_eq!(vectors(&answer), expected);
    assert_eq!(answer["usage"]["prompt_tokens"], 600);

    // Seven texts on Titan at 256 dimensions: seven calls, concurrently, in order.
    let seven: Vec<String> = (0..7).map(|i| format!("short text {i}")).collect();
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": TITAN, "input": seven, "dimensions": 256, "encoding_format": "float"}),
        )
        .await;
    let answer = reply.json();
    assert_eq!(reply.status, 200, "{answer}");
    let expected: Vec<Vec<f32>> = seven.iter().map(|t| embedding_vector(t, 256)).collect();
    assert_eq!(vectors(&answer), expected);

    let calls = gw.bedrock_calls().await;
    let invokes: Vec<&Value> = calls
        .iter()
        .filter(|c| c["operation"] == "invoke")
        .collect();
    assert_eq!(invokes.len(), 1 + 3 + 7, "{calls:?}");
    let cohere_sizes: Vec<usize> = invokes
        .iter()
        .filter(|c| c["model_id"] == "cohere.embed-english-v3")
        .map(|c| c["body"]["texts"].as_array().unwrap().len())
        .collect();
    let mut sorted = cohere_sizes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [8, 96, 96]);
    assert!(
        invokes
            .iter()
            .filter(|c| c["model_id"] == "amazon.titan-embed-text-v2:0")
            .all(|c| c["body"]["inputText"].is_string())
    );

    // Three requests, three rows, each once; the key pays exactly what they say.
    let rows = gw.spend_rows().await;
    let tokens: Vec<i64> = rows.iter().map(|r| r.prompt_tokens).collect();
    assert_eq!(tokens, [3, 600, 21]);
    for row in &rows {
        assert_eq!(
            (row.call_type.as_str(), row.status.as_str()),
            ("aembedding", "success")
        );
    }
    assert_eq!(rows[0].spend, cost);
    assert_eq!(
        rows[1].spend,
        price("0.10") * Decimal::from(600) / Decimal::from(1_000_000)
    );
    let total: Decimal = rows.iter().map(|r| r.spend).sum();
    assert_eq!(gw.key_spend(KeyBy::Alias("search")).await, total);
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_400s_naming_the_field_and_spends_nothing() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "strict", "max_budget": 1, "rpm_limit": 100}))
        .await;
    let too_many: Vec<String> = (0..2049).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({"model": TITAN, "input": []}), "input"),
        (json!({"model": COHERE, "input": too_many}), "input"),
        (
            json!({"model": COHERE, "input": "x", "dimensions": 256}),
            "dimensions",
        ),
        (
            json!({"model": TITAN, "input": "x", "dimensions": 300}),
            "dimensions",
        ),
        (json!({"model": TITAN, "input": [[1, 2, 3], [4]]}), "input"),
        (json!({"model": TITAN, "input": [1, 2, 3]}), "input"),
        (json!({"model": TITAN, "input": ""}), "input"),
        (
            json!({"model": TITAN, "input": ["fine", "nul \u{0} here"]}),
            "input",
        ),
        (json!({"model": TITAN, "input": {"text": "x"}}), "input"),
        (json!({"model": TITAN, "input": ["a", 1]}), "input"),
        (
            json!({"model": TITAN, "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (
            json!({"model": TITAN, "input": "x", "dimensions": "256"}),
            "dimensions",
        ),
        (
            json!({"model": TITAN, "input": "x", "input_type": "search_query"}),
            "input_type",
        ),
        (json!({"model": TITAN, "input": "x", "user": 7}), "user"),
        (
            json!({"model": TITAN, "input": "x", "stream": true}),
            "stream",
        ),
        (json!({"model": ["titan"], "input": "x"}), "model"),
        (json!({"model": "claude-haiku-4-5", "input": "x"}), "model"),
    ];
    for (body, field) in cases {
        let reply = gw.post(EMBEDDINGS, &key, body.clone()).await;
        let error = reply.json();
        assert_eq!(reply.status, 400, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["param"], field, "{body}: {error}");
        assert_eq!(error["error"]["code"], "400");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    // Not JSON, and an unknown model (404 to a working key).
    let response = gw
        .client
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await;
    let error = reply.json();
    assert_eq!(reply.status, 404, "{error}");
    // No key: 401 before the body is read.
    let response = gw
        .request(
            Method::POST,
            EMBEDDINGS,
            None,
            Some(&json!({"model": TITAN, "input": "x"})),
        )
        .await;
    assert_eq!(response.status, 401);

    assert!(gw.bedrock_calls().await.is_empty());
    assert!(gw.spend_rows().await.is_empty());
    assert_eq!(gw.key_spend(KeyBy::Alias("strict")).await, Decimal::ZERO);
    // Nothing was taken from the rate limit either: the key's 100 requests are all there.
    let remaining = gw
        .post(EMBEDDINGS, &key, json!({"model": TITAN, "input": "ok"}))
        .await;
    assert_eq!(remaining.status, 200);
    assert_eq!(remaining.headers["x-ratelimit-remaining-requests"], "99");
}

#[tokio::test]
async fn chat_and_embedding_aliases_are_not_interchangeable_and_models_lists_both() {
    let gw = TestGateway::start().await;
    let response = gw
        .chat(json!({"model": TITAN, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(response.status, 400);
    let error = response.json();
    assert_eq!(error["error"]["param"], "model", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/embeddings")
    );
    let response = gw
        .post(
            "/v1/messages",
            MASTER_KEY,
            json!({"model": COHERE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status, 400);
    let error = response.json();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    let reply = gw
        .post(
            EMBEDDINGS,
            MASTER_KEY,
            json!({"model": "claude-sonnet-4-5", "input": "x"}),
        )
        .await;
    let error = reply.json();
    assert_eq!(reply.status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/chat/completions")
    );
    assert!(gw.bedrock_calls().await.is_empty());

    // OpenAI lists its embedding models with the rest; Anthropic's list has chat models only.
    let models = gw.get("/v1/models", MASTER_KEY).await.json();
    let owner = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["owned_by"].clone())
    };
    assert_eq!(owner(TITAN), Some(json!("amazon")));
    assert_eq!(owner("cohere-embed-multilingual-v3"), Some(json!("cohere")));
    assert_eq!(owner("claude-sonnet-4-5"), Some(json!("anthropic")));
    let anthropic: Value = gw
        .client
        .get(gw.url("/v1/models"))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!anthropic.to_string().contains(TITAN), "{anthropic}");
}

#[tokio::test]
async fn a_batch_with_a_failing_part_settles_once_paying_the_parts_bedrock_answered() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"key_alias": "partial"})).await;
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": TITAN,
                   "input": ["one two", "bad [[error:400:ValidationException]]", "three"]}),
        )
        .await;
    let error = reply.json();
    assert_eq!(reply.status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bedrock refused"),
        "{error}"
    );
    // Bedrock's own refusal: Cohere's 96-text limit is kept by the split, so only a scripted
    // failure reaches it; a throttled part is retried, then fails the request as a 429.
    gw.script(json!([{"throttle": true}, {"throttle": true}, {"throttle": true}]))
        .await;
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": COHERE, "input": ["a b", "c"]}),
        )
        .await;
    assert_eq!(reply.status, 429);

    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    // The two parts that answered (2 + 1 words) are paid; the failed one is not.
    assert_eq!(rows[0].status, "failure");
    assert_eq!(rows[0].prompt_tokens, 3);
    assert_eq!(
        rows[0].spend,
        price("0.02") * Decimal::from(3) / Decimal::from(1_000_000)
    );
    assert_eq!(
        (rows[1].status.as_str(), rows[1].prompt_tokens),
        ("failure", 0)
    );
    assert_eq!(gw.key_spend(KeyBy::Alias("partial")).await, rows[0].spend);
    let open = gw.count("SELECT count(*) FROM llmlite_inflight").await;
    assert_eq!(open, 0, "every reservation was released");
}

#[tokio::test]
async fn budgets_rate_limits_pii_and_the_audit_trail_hold_on_embeddings() {
    let gw = TestGateway::start().await;

    // A budget smaller than the batch's estimate: refused before Bedrock is called.
    let key = gw
        .mint_raw_key(json!({"key_alias": "tiny", "max_budget": 0.0000001}))
        .await;
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": TITAN, "input": "forty bytes of text, ten estimated toks"}),
        )
        .await;
    let error = reply.json();
    assert_eq!(reply.status, 403, "{error}");
    assert_eq!(error["error"]["type"], "budget_exceeded");

    // Two requests a minute: the third is limited, whatever its batch size.
    let key = gw
        .mint_raw_key(json!({"key_alias": "rpm", "rpm_limit": 2}))
        .await;
    for expected in [200, 200, 429] {
        let reply = gw
            .post(
                EMBEDDINGS,
                &key,
                json!({"model": COHERE, "input": ["a", "b", "c"]}),
            )
            .await;
        assert_eq!(reply.status, expected);
        if expected == 429 {
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    // Ten tokens a minute: batches of three estimated (and counted) tokens; the fourth is over.
    let key = gw
        .mint_raw_key(json!({"key_alias": "tpm", "tpm_limit": 10}))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = gw
            .post(
                EMBEDDINGS,
                &key,
                json!({"model": COHERE, "input": ["qzq", "wxw", "zvz"]}),
            )
            .await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let bedrock_before = gw.bedrock_calls().await.len();

    // A card number in any input blocks the batch; an e-mail address is masked before Bedrock.
    let key = gw.mint_raw_key(json!({"key_alias": "pii"})).await;
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": COHERE, "input": ["fine", "card 4539 1488 0343 6467"]}),
        )
        .await;
    let error = reply.json();
    assert_eq!(reply.status, 400, "{error}");
    assert_eq!(error["error"]["type"], "pii_blocked");
    assert!(!error.to_string().contains("4539"));
    assert_eq!(gw.bedrock_calls().await.len(), bedrock_before);
    let reply = gw
        .post(
            EMBEDDINGS,
            &key,
            json!({"model": TITAN, "input": ["mail boss@example.com today"]}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let calls = gw.bedrock_calls().await;
    let sent = calls.last().unwrap()["body"]["inputText"].as_str().unwrap();
    assert!(!sent.contains("boss@example.com"), "{sent}");

    // Every admitted request left one audit record with its call type, and no input text.
    gw.settled().await;
    gw.state.audit.ship_requests(true).await.unwrap();
    let records: Vec<Value> = llmlite_tests::audit_records(&gw.db.audit_dir())
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    let embeddings: Vec<&Value> = records
        .iter()
        .filter(|r| r["call_type"] == "aembedding")
        .collect();
    // Refusals before admission (budget, rate) are recorded too: 1 + 3 + 4 + 2.
    assert_eq!(embeddings.len(), 10, "{records:?}");
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("boss@example.com") && !text.contains("qzq"));
    let blocked = embeddings
        .iter()
        .find(|r| r["error_type"] == "pii_blocked")
        .unwrap();
    assert_eq!(blocked["pii"]["CREDIT_CARD"], 1, "{blocked}");
}

#[tokio::test]
async fn metadata_is_kept_as_chat_keeps_it_up_to_16_kib() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    let big = "x".repeat(20 * 1024);
    for (metadata, expected) in [
        (json!({"team": "search"}), json!({"team": "search"})),
        // `llmlite_` keys are the gateway's: a client's cannot pass for them.
        (
            json!({"team": "search", "llmlite_pii": {"EMAIL": 0}, "llmlite_ttft_ms": 1}),
            json!({"team": "search"}),
        ),
        (
            json!({"blob": big}),
            json!({"llmlite_note": "metadata over 16 KiB was not kept"}),
        ),
    ] {
        let body = json!({"model": "titan-embed-text-v2", "input": "hello", "metadata": metadata});
        let reply = gw.post(EMBEDDINGS, &key, body).await;
        assert_eq!(reply.status, 200);
        gw.settled().await;
        let kept: Value = sqlx::query_scalar(
            "SELECT metadata FROM litellm_spend ORDER BY start_time DESC LIMIT 1",
        )
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
        assert_eq!(kept, expected);
    }
}
