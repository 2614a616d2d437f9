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
use llmlite_tests::{TestGateway, spawn_serve, wait_until_settled};
use serde_json::{Value, json};
use tokio::process::Child;

async fn mint(gw: &TestGateway, body: Value) -> String {
    gw.mint_key(body).await["key"].as_str().unwrap().to_owned()
}

/// Sends `count` concurrent chats of `text` as `key`, spread over the gateways, to `path`
/// (`/v1/chat/completions`, Anthropic's `/v1/messages`, or `/v1/responses`); the statuses.
async fn burst(
    gateways: &[(Child, String)],
    path: &str,
    key: &str,
    count: usize,
    text: &str,
) -> Vec<u16> {
    let client = reqwest::Client::new();
    let requests = (0..count).map(|n| {
        let url = format!("{}{path}", gateways[n % gateways.len()].1);
        let body = if path == RESPONSES {
            json!({"model": "claude-haiku-4-5", "max_output_tokens": 16, "input": text})
        } else {
            json!({"model": "claude-haiku-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": text}]})
        };
        let request = client.post(url).bearer_auth(key).json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    join_all(requests).await
}

const CHAT: &str = "/v1/chat/completions";
const RESPONSES: &str = "/v1/responses";

fn tally(statuses: &[u16]) -> (usize, usize) {
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    (ok, limited)
}

#[tokio::test]
async fn limits_are_exact_across_three_gateway_processes() {
    let gw = TestGateway::start().await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        // A day-long refill period: the burst's few seconds refill nothing.
        let binary = std::path::Path::new(LLMLITE);
        let extra = [("LLMLITE_RATE_PERIOD_SECS", "86400")];
        gateways.push(spawn_serve(binary, &gw.db.url, &gw.double.endpoint(), &extra).await);
    }

    let rpm_key = mint(&gw, json!({"rpm_limit": 30})).await;
    let statuses = burst(&gateways, CHAT, &rpm_key, 60, "one request").await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // The same through Anthropic's Messages API.
    let messages_key = mint(&gw, json!({"rpm_limit": 30})).await;
    let statuses = burst(&gateways, "/v1/messages", &messages_key, 60, "one request").await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // And through the Responses API.
    let responses_key = mint(&gw, json!({"rpm_limit": 30})).await;
    let statuses = burst(&gateways, RESPONSES, &responses_key, 60, "one request").await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // Five 4- and 5-letter words: admission estimates ceil(25 / 4) + 4 = 11 tokens, and the
    // double counts 5 in + 6 out = 11, so every admitted request takes exactly 11 of 110.
    let tpm_key = mint(&gw, json!({"tpm_limit": 110})).await;
    let statuses = burst(&gateways, CHAT, &tpm_key, 30, "aaaa bbbb cccc dddd eeeee").await;
    assert_eq!(tally(&statuses), (10, 20), "{statuses:?}");

    // Each process settles after its responses; wait for the last settlements to land.
    wait_until_settled(&gw.db.pool).await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM litellm_spend WHERE status = 'success'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, 100, "every admitted request was settled once");
    let messages: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM litellm_spend WHERE call_type = 'anthropic_messages'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(messages, 30);
    let responses: i64 =
        sqlx::query_scalar("SELECT count(*) FROM litellm_spend WHERE call_type = 'aresponses'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(responses, 30);
}

/// Sends `count` concurrent embeddings of `texts` as `key`, spread over the gateways.
async fn embeddings_burst(
    gateways: &[(Child, String)],
    key: &str,
    count: usize,
    texts: &[&str],
) -> Vec<u16> {
    let client = reqwest::Client::new();
    let requests = (0..count).map(|n| {
        let url = format!("{}/v1/embeddings", gateways[n % gateways.len()].1);
        let request = client
            .post(url)
            .bearer_auth(key)
            .json(&json!({"model": "cohere-embed-english-v3", "input": texts}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    join_all(requests).await
}

#[tokio::test]
async fn embeddings_limits_are_exact_across_three_gateway_processes() {
    let gw = TestGateway::start().await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let binary = std::path::Path::new(LLMLITE);
        let extra = [("LLMLITE_RATE_PERIOD_SECS", "86400")];
        gateways.push(spawn_serve(binary, &gw.db.url, &gw.double.endpoint(), &extra).await);
    }

    let rpm_key = mint(&gw, json!({"rpm_limit": 30})).await;
    let statuses = embeddings_burst(&gateways, &rpm_key, 60, &["one text", "two"]).await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // Three three-letter texts: admission estimates 3 x ceil(3 / 4) = 3 tokens and the double
    // counts 3 words, so every admitted batch takes exactly 3 of 30.
    let tpm_key = mint(&gw, json!({"tpm_limit": 30})).await;
    let statuses = embeddings_burst(&gateways, &tpm_key, 30, &["aaa", "bbb", "ccc"]).await;
    assert_eq!(tally(&statuses), (10, 20), "{statuses:?}");

    // A budget of exactly five batches: at $0.10 per million tokens, 3 tokens cost $0.0000003.
    let budget_key = mint(&gw, json!({"max_budget": 0.0000015})).await;
    let statuses = embeddings_burst(&gateways, &budget_key, 20, &["aaa", "bbb", "ccc"]).await;
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
    let spend: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT spend FROM litellm_verificationtoken WHERE token = $1")
            .bind(llmlite::keys::KeyHash::of(&budget_key).as_str())
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(
        spend,
        "0.0000015".parse().unwrap(),
        "the budget is spent exactly"
    );
}
