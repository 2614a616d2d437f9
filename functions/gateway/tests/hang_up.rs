//! A client that hangs up mid-stream still pays: `llmlite serve` over a real socket that the
//! client closes after the first chunk. It pays for its prompt (admission's estimate: Bedrock's
//! own count comes only at the end of the stream) and for the output it was sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use common::{LLMLITE, hang_up_after};
use llmlite_tests::{KeyBy, TestGateway, spawn_serve, wait_until_settled};
use rust_decimal::Decimal;
use serde_json::json;

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_pays_for_its_prompt_and_received_output() {
    let gw = TestGateway::start().await;
    let (_serve, base) = spawn_serve(
        std::path::Path::new(LLMLITE),
        &gw.db.url,
        &gw.double.endpoint(),
        &[],
    )
    .await;
    let minted = gw.mint_key(json!({"max_budget": 5})).await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();

    // A long prompt (about 20,000 tokens by admission's estimate) and a slow answer: the
    // double echoes the prompt, one word a delta, 200 ms apart.
    gw.script(json!([{"event_gap_ms": 200}])).await;
    let prompt = "lorem ipsum dolor sit amet ".repeat(3000);
    let body = json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 400,
                      "messages": [{"role": "user", "content": prompt}]})
    .to_string();
    // Read until the first content delta has arrived, then hang up.
    let received = hang_up_after(
        &base,
        key,
        "/v1/chat/completions",
        &body,
        "\"content\":\"echo",
    )
    .await;
    assert!(received.starts_with("HTTP/1.1 200"));

    wait_until_settled(&gw.db.pool).await;
    let (status, prompt_tokens, completion_tokens, spend): (String, i64, i64, Decimal) =
        sqlx::query_as(
            "SELECT status, prompt_tokens, completion_tokens, spend FROM litellm_spend
             WHERE api_key = $1",
        )
        .bind(token)
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "client_closed");
    // ceil(81,000 / 4) + 4: the estimate admission took.
    assert_eq!(prompt_tokens, 20_254);
    // It hung up after the first delta or so, long before the 400 the answer would have had.
    assert!(
        (1..=3).contains(&completion_tokens),
        "{completion_tokens} output tokens"
    );
    // Haiku 4.5 in the EU: $1.10 in, $5.50 out per million.
    let expected = Decimal::new(11, 7) * Decimal::from(prompt_tokens)
        + Decimal::new(55, 7) * Decimal::from(completion_tokens);
    assert_eq!(spend, expected);
    assert_eq!(gw.key_spend(KeyBy::Token(token)).await, expected);
}

/// The same on the Responses route, whose events are rewritten from the chat stream's: hanging
/// up there still ends the model call and settles the request exactly once.
#[tokio::test]
async fn a_responses_client_that_hangs_up_mid_stream_settles_exactly_once() {
    let gw = TestGateway::start().await;
    let (_serve, base) = spawn_serve(
        std::path::Path::new(LLMLITE),
        &gw.db.url,
        &gw.double.endpoint(),
        &[],
    )
    .await;
    let minted = gw.mint_key(json!({"max_budget": 5})).await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();

    gw.script(json!([{"event_gap_ms": 200}])).await;
    let prompt = "lorem ipsum dolor sit amet ".repeat(3000);
    let body = json!({"model": "claude-haiku-4-5", "stream": true, "max_output_tokens": 400,
                      "input": prompt})
    .to_string();
    let received = hang_up_after(&base, key, "/v1/responses", &body, "\"delta\":\"echo").await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        received.contains("event: response.output_text.delta"),
        "{received}"
    );
    let deltas_at_hang_up = gw.double.deltas_sent();

    wait_until_settled(&gw.db.pool).await;
    let rows: Vec<(String, String, i64, i64, Decimal)> = sqlx::query_as(
        "SELECT call_type, status, prompt_tokens, completion_tokens, spend FROM litellm_spend
         WHERE api_key = $1",
    )
    .bind(token)
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "settled exactly once: {rows:?}");
    let (call_type, status, prompt_tokens, completion_tokens, spend) = rows[0].clone();
    assert_eq!(
        (call_type.as_str(), status.as_str()),
        ("aresponses", "client_closed")
    );
    assert_eq!(prompt_tokens, 20_254);
    assert!(
        (1..=3).contains(&completion_tokens),
        "{completion_tokens} output tokens"
    );
    let expected = Decimal::new(11, 7) * Decimal::from(prompt_tokens)
        + Decimal::new(55, 7) * Decimal::from(completion_tokens);
    assert_eq!(spend, expected);
    assert_eq!(gw.key_spend(KeyBy::Token(token)).await, expected);
    // The model call ended with the client: the double stopped sending soon after.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(
        gw.double.deltas_sent() <= deltas_at_hang_up + 2,
        "{} deltas sent after the hang-up at {deltas_at_hang_up}",
        gw.double.deltas_sent()
    );
}
