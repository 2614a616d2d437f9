//! Rate limits hold across gateway processes: three `llmlite serve` processes share one
//! database; 60 concurrent clients of one key with `rpm_limit` 30 get exactly 30 answers (on
//! chat completions and on Anthropic's Messages API), and a `tpm_limit` admits exactly as many
//! requests as its tokens cover. Embeddings (`/v1/embeddings`) hold to the same limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use common::LLMLITE;
use futures_util::future::join_all;
use llmlite_tests::{KeyBy, TestGateway, spawn_serve, wait_until_settled};
use serde_json::{Value, json};
use tokio::process::Child;

/// Three `llmlite serve` processes on `gw`'s database and Bedrock double. A day-long refill
/// period: a burst's few seconds refill nothing.
async fn three_gateways(gw: &TestGateway) -> Vec<(Child, String)> {
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let binary = std::path::Path::new(LLMLITE);
        let extra = [("LLMLITE_RATE_PERIOD_SECS", "86400")];
        gateways.push(spawn_serve(binary, &gw.db.url, &gw.double.endpoint(), &extra).await);
    }
    gateways
}

/// Sends `count` concurrent requests of `body` as `key` to `path`, spread over the gateways;
/// the statuses.
async fn burst(
    gateways: &[(Child, String)],
    path: &str,
    key: &str,
    count: usize,
    body: &Value,
) -> Vec<u16> {
    let client = reqwest::Client::new();
    let requests = (0..count).map(|n| {
        let url = format!("{}{path}", gateways[n % gateways.len()].1);
        let request = client.post(url).bearer_auth(key).json(body);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    join_all(requests).await
}

/// A request of `text` on `path` (`/v1/chat/completions`, Anthropic's `/v1/messages`, or
/// `/v1/responses`).
fn ask(path: &str, text: &str) -> Value {
    if path == RESPONSES {
        json!({"model": "claude-haiku-4-5", "max_output_tokens": 16, "input": text})
    } else {
        json!({"model": "claude-haiku-4-5", "max_tokens": 16,
               "messages": [{"role": "user", "content": text}]})
    }
}

/// An embeddings request of `texts`.
fn embed(texts: &[&str]) -> Value {
    json!({"model": "cohere-embed-english-v3", "input": texts})
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const RESPONSES: &str = "/v1/responses";
const EMBEDDINGS: &str = "/v1/embeddings";

fn tally(statuses: &[u16]) -> (usize, usize) {
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    (ok, limited)
}

#[tokio::test]
async fn limits_are_exact_across_three_gateway_processes() {
    let gw = TestGateway::start().await;
    let gateways = three_gateways(&gw).await;

    let rpm_key = gw.mint_raw_key(json!({"rpm_limit": 30})).await;
    let statuses = burst(&gateways, CHAT, &rpm_key, 60, &ask(CHAT, "one request")).await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // The same through Anthropic's Messages API.
    let messages_key = gw.mint_raw_key(json!({"rpm_limit": 30})).await;
    let body = ask(MESSAGES, "one request");
    let statuses = burst(&gateways, MESSAGES, &messages_key, 60, &body).await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // And through the Responses API.
    let responses_key = gw.mint_raw_key(json!({"rpm_limit": 30})).await;
    let body = ask(RESPONSES, "one request");
    let statuses = burst(&gateways, RESPONSES, &responses_key, 60, &body).await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // Five 4- and 5-letter words: admission estimates ceil(25 / 4) + 4 = 11 tokens, and the
    // double counts 5 in + 6 out = 11, so every admitted request takes exactly 11 of 110.
    let tpm_key = gw.mint_raw_key(json!({"tpm_limit": 110})).await;
    let body = ask(CHAT, "aaaa bbbb cccc dddd eeeee");
    let statuses = burst(&gateways, CHAT, &tpm_key, 30, &body).await;
    assert_eq!(tally(&statuses), (10, 20), "{statuses:?}");

    // Each process settles after its responses; wait for the last settlements to land.
    wait_until_settled(&gw.db.pool).await;
    let rows = gw
        .count("SELECT count(*) FROM litellm_spend WHERE status = 'success'")
        .await;
    assert_eq!(rows, 100, "every admitted request was settled once");
    let messages = gw
        .count("SELECT count(*) FROM litellm_spend WHERE call_type = 'anthropic_messages'")
        .await;
    assert_eq!(messages, 30);
    let responses = gw
        .count("SELECT count(*) FROM litellm_spend WHERE call_type = 'aresponses'")
        .await;
    assert_eq!(responses, 30);
}

#[tokio::test]
async fn embeddings_limits_are_exact_across_three_gateway_processes() {
    let gw = TestGateway::start().await;
    let gateways = three_gateways(&gw).await;

    let rpm_key = gw.mint_raw_key(json!({"rpm_limit": 30})).await;
    let body = embed(&["one text", "two"]);
    let statuses = burst(&gateways, EMBEDDINGS, &rpm_key, 60, &body).await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // Three three-letter texts: admission estimates 3 x ceil(3 / 4) = 3 tokens and the double
    // counts 3 words, so every admitted batch takes exactly 3 of 30.
    let tpm_key = gw.mint_raw_key(json!({"tpm_limit": 30})).await;
    let body = embed(&["aaa", "bbb", "ccc"]);
    let statuses = burst(&gateways, EMBEDDINGS, &tpm_key, 30, &body).await;
    assert_eq!(tally(&statuses), (10, 20), "{statuses:?}");

    // A budget of exactly five batches: at $0.10 per million tokens, 3 tokens cost $0.0000003.
    let budget_key = gw.mint_raw_key(json!({"max_budget": 0.0000015})).await;
    let statuses = burst(&gateways, EMBEDDINGS, &budget_key, 20, &body).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let over = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!((ok, over), (5, 15), "{statuses:?}");

    wait_until_settled(&gw.db.pool).await;
    let (rows, tokens): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(prompt_tokens)::bigint FROM litellm_spend
         WHERE call_type = 'aembedding' AND status = 'success'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(rows, 45, "every admitted batch was settled once");
    assert_eq!(tokens, Some(30 * 3 + 10 * 3 + 5 * 3));
    let spend = gw
        .key_spend(KeyBy::Token(
            llmlite::keys::KeyHash::of(&budget_key).as_str(),
        ))
        .await;
    assert_eq!(
        spend,
        "0.0000015".parse().unwrap(),
        "the budget is spent exactly"
    );
}

/// The RPM limit holds across three processes when the requests write the cache for an hour
/// and ask for the priority tier: 60 concurrent clients of one key with `rpm_limit` 30 (allowed
/// priority) get exactly 30 answers, each settled once at its own price.
#[tokio::test]
async fn limits_are_exact_across_processes_with_hour_writes_and_priority_requests() {
    let catalog = llmlite_tests::models_file(
        r#"
[[model]]
alias = "claude-haiku-4-5"
bedrock_model_id = "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = { input = "1.10", output = "5.50", cache_read = "0.11", cache_write = "1.375", cache_write_1h = "2.20" }
temperature_and_top_p = false

[model.service_tiers]
priority = { input = "1.925", output = "9.625", cache_read = "0.1925", cache_write = "2.40625", cache_write_1h = "3.85" }
"#,
    );
    let catalog = catalog.to_str().unwrap();
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", catalog)]).await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let extra = [
            ("LLMLITE_RATE_PERIOD_SECS", "86400"),
            ("LLMLITE_MODELS", catalog),
        ];
        let binary = std::path::Path::new(LLMLITE);
        gateways.push(spawn_serve(binary, &gw.db.url, &gw.double.endpoint(), &extra).await);
    }
    let key = gw
        .mint_raw_key(json!({"rpm_limit": 30, "allowed_service_tiers": ["default", "priority"]}))
        .await;
    let client = reqwest::Client::new();
    let requests = (0..60).map(|n| {
        let url = format!("{}{CHAT}", gateways[n % gateways.len()].1);
        let body = if n % 2 == 0 {
            json!({"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user",
                   "content": [{"type": "text", "text": format!("a long prefix {n}"),
                                "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                               {"type": "text", "text": "go"}]}]})
        } else {
            json!({"model": "claude-haiku-4-5", "max_tokens": 16, "service_tier": "priority",
                   "messages": [{"role": "user", "content": format!("fast {n}")}]})
        };
        let request = client.post(url).bearer_auth(&key).json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = join_all(requests).await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    wait_until_settled(&gw.db.pool).await;
    let rows = gw
        .count("SELECT count(*) FROM litellm_spend WHERE status = 'success'")
        .await;
    assert_eq!(rows, 30, "every admitted request was settled once");
    // Each kind priced at its own rate: a 1-hour write at 2.20, a priority answer at 9.625.
    let mispriced = gw
        .count(
            "SELECT count(*) FROM litellm_spend WHERE status = 'success' AND spend <>
               CASE WHEN service_tier = 'priority'
                    THEN ((prompt_tokens - cache_read_input_tokens - cache_creation_input_tokens) * 1.925
                          + completion_tokens * 9.625) / 1000000
                    ELSE ((prompt_tokens - cache_read_input_tokens - cache_creation_input_tokens) * 1.10
                          + completion_tokens * 5.50
                          + cache_creation_1h_input_tokens * 2.20) / 1000000 END",
        )
        .await;
    assert_eq!(mispriced, 0);
    let hour_writes = gw
        .count("SELECT count(*) FROM litellm_spend WHERE cache_creation_1h_input_tokens > 0")
        .await;
    let priority = gw
        .count("SELECT count(*) FROM litellm_spend WHERE service_tier = 'priority'")
        .await;
    assert!(hour_writes > 0 && priority > 0 && hour_writes + priority == 30);
    // The key's spend is its rows', to the last digit.
    let consistent = gw
        .count(
            "SELECT count(*) FROM litellm_verificationtoken v
             WHERE v.spend = (SELECT sum(spend) FROM litellm_spend s WHERE s.api_key = v.token)",
        )
        .await;
    assert_eq!(consistent, 1);
}
