//! The PII guard over the model's answers (`"output": true` in a key's policy, or
//! `LLMLITE_PII_SCAN_OUTPUT`), over real HTTP on both APIs, streamed and not. The Bedrock double
//! answers `[[say64:...]]` with text the prompt does not carry, so a card number appears only in
//! the answer; streamed, the double sends it word by word, so its four groups arrive in four
//! deltas.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use base64::Engine;
use llmlite_tests::{Reply, SpendRow, TestGateway, sse_data, sse_events};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const ANSWER: &str = "your card 4539 1488 0343 6467 is on file";
const MASKED: &str = "your card <CREDIT_CARD> is on file";

/// A prompt whose answer is `text`.
fn say(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("please answer [[say64:{encoded}]]")
}

/// A request on `path` whose answer is [`ANSWER`], once it has settled.
async fn ask(gw: &TestGateway, key: &str, path: &str, stream: bool) -> Reply {
    let body = json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": say(ANSWER)}],
    });
    let reply = gw.post(path, key, body).await;
    gw.settled().await;
    reply
}

async fn openai(gw: &TestGateway, key: &str, stream: bool) -> Reply {
    ask(gw, key, "/v1/chat/completions", stream).await
}

async fn anthropic(gw: &TestGateway, key: &str, stream: bool) -> Reply {
    ask(gw, key, "/v1/messages", stream).await
}

/// The text of an OpenAI stream's content deltas, joined.
fn openai_stream_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The text of an Anthropic stream's text deltas, joined.
fn anthropic_stream_text(body: &str) -> String {
    sse_events(body)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_card_number_in_an_answer_is_masked_on_both_apis_streamed_or_not() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "MASK", "output": true}}))
        .await;

    let sent = openai(&gw, &key, false).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let body: Value = serde_json::from_str(&sent.text).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], MASKED);
    let SpendRow {
        status,
        spend: cost,
        metadata,
        ..
    } = gw.spend_row(&sent.request_id()).await;
    assert_eq!(status, "success");
    assert!(cost > Decimal::ZERO);
    assert_eq!(metadata["llmlite_pii_output"], json!({"CREDIT_CARD": 1}));

    let sent = openai(&gw, &key, true).await;
    assert_eq!(sent.status, 200);
    assert_eq!(openai_stream_text(&sent.text), MASKED);
    assert!(!sent.text.contains("4539 ") && !sent.text.contains("6467 "));
    assert!(sent.text.contains("[DONE]"));
    let SpendRow {
        status, metadata, ..
    } = gw.spend_row(&sent.request_id()).await;
    assert_eq!(status, "success");
    assert_eq!(metadata["llmlite_pii_output"], json!({"CREDIT_CARD": 1}));

    let sent = anthropic(&gw, &key, false).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let body: Value = serde_json::from_str(&sent.text).unwrap();
    assert_eq!(body["content"][0]["text"], MASKED);

    let sent = anthropic(&gw, &key, true).await;
    assert_eq!(sent.status, 200);
    assert_eq!(anthropic_stream_text(&sent.text), MASKED);
    assert!(!sent.text.contains("4539 ") && !sent.text.contains("6467 "));
    assert!(sent.text.contains("message_stop"));
    let SpendRow { metadata, .. } = gw.spend_row(&sent.request_id()).await;
    assert_eq!(metadata["llmlite_pii_output"], json!({"CREDIT_CARD": 1}));
}

#[tokio::test]
async fn the_card_was_split_across_deltas_by_the_model() {
    // Without the output guard the double's stream carries the card in separate deltas: the
    // masking above is the window's doing, not one delta's.
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "MASK"}}))
        .await;
    let sent = openai(&gw, &key, true).await;
    let deltas: Vec<String> = sse_data(&sent.text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        deltas
            .iter()
            .any(|d| d.contains("4539 ") && !d.contains("6467 "))
    );
    assert!(
        deltas
            .iter()
            .any(|d| d.contains("6467 ") && !d.contains("4539 "))
    );
}

#[tokio::test]
async fn with_the_setting_off_the_answer_is_untouched() {
    let gw = TestGateway::start().await;
    // MASK for prompts, nothing said about answers: off, as by default.
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "MASK"}}))
        .await;
    let sent = openai(&gw, &key, false).await;
    let body: Value = serde_json::from_str(&sent.text).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    let sent = openai(&gw, &key, true).await;
    assert_eq!(openai_stream_text(&sent.text), ANSWER);
    let sent = anthropic(&gw, &key, true).await;
    assert_eq!(anthropic_stream_text(&sent.text), ANSWER);
    let SpendRow { metadata, .. } = gw.spend_row(&sent.request_id()).await;
    assert!(metadata.get("llmlite_pii_output").is_none(), "{metadata}");
}

#[tokio::test]
async fn the_global_setting_turns_it_on_and_a_key_can_turn_it_off() {
    let gw = TestGateway::start_with(&[
        ("LLMLITE_PII_SCAN_OUTPUT", "true"),
        ("LLMLITE_PII_POLICY", r#"{"CREDIT_CARD": "MASK"}"#),
    ])
    .await;
    let key = gw.mint_raw_key(json!({})).await;
    let sent = openai(&gw, &key, true).await;
    assert_eq!(openai_stream_text(&sent.text), MASKED);
    let off = gw
        .mint_raw_key(json!({"pii_policy": {"output": false}}))
        .await;
    let sent = openai(&gw, &off, false).await;
    let body: Value = serde_json::from_str(&sent.text).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
}

#[tokio::test]
async fn a_blocked_answer_is_withheld_and_still_charged() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "BLOCK", "output": true}}))
        .await;

    let sent = openai(&gw, &key, false).await;
    assert_eq!(sent.status, 400, "{}", sent.text);
    let body: Value = serde_json::from_str(&sent.text).unwrap();
    assert_eq!(body["error"]["type"], "pii_blocked_output");
    assert!(!sent.text.contains("4539 "), "{}", sent.text);
    let SpendRow {
        status,
        spend: cost,
        completion_tokens: output_tokens,
        metadata,
        ..
    } = gw.spend_row(&sent.request_id()).await;
    assert_eq!(status, "failure");
    assert!(cost > Decimal::ZERO, "the tokens were produced");
    assert!(output_tokens > 0);
    let produced = output_tokens;
    assert_eq!(metadata["llmlite_pii_output"], json!({"CREDIT_CARD": 1}));

    let sent = openai(&gw, &key, true).await;
    assert_eq!(sent.status, 200);
    assert!(!sent.text.contains("4539 ") && !sent.text.contains("6467 "));
    assert!(
        !sent.text.contains("[DONE]"),
        "an incomplete answer: {}",
        sent.text
    );
    let last: Value = serde_json::from_str(sse_data(&sent.text).last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "pii_blocked_output");
    let SpendRow {
        status,
        spend: cost,
        completion_tokens: output_tokens,
        ..
    } = gw.spend_row(&sent.request_id()).await;
    assert_eq!(status, "failure");
    assert!(cost > Decimal::ZERO);
    assert_eq!(
        output_tokens, produced,
        "Bedrock's own count, read after the block"
    );

    let sent = anthropic(&gw, &key, true).await;
    assert!(!sent.text.contains("4539 ") && !sent.text.contains("6467 "));
    assert!(sent.text.contains("event: error"), "{}", sent.text);
    assert!(!sent.text.contains("message_stop"));
    let SpendRow {
        status,
        completion_tokens: output_tokens,
        ..
    } = gw.spend_row(&sent.request_id()).await;
    assert_eq!(status, "failure");
    // At least Bedrock's count: an Anthropic stream also charges one token a delta as a floor.
    assert!(output_tokens >= produced, "{output_tokens} < {produced}");

    let sent = anthropic(&gw, &key, false).await;
    assert_eq!(sent.status, 400);
    let body: Value = serde_json::from_str(&sent.text).unwrap();
    assert_eq!(body["type"], "error");
    assert!(!sent.text.contains("4539 "));
}

#[tokio::test]
async fn an_output_policy_that_is_not_a_boolean_is_refused() {
    let gw = TestGateway::start().await;
    let response = gw
        .post(
            "/key/generate",
            llmlite_tests::MASTER_KEY,
            json!({"pii_policy": {"output": "yes"}}),
        )
        .await;
    assert_eq!(response.status, 400);
    let body = response.json();
    assert_eq!(body["error"]["param"], "pii_policy");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output"),
        "{body}"
    );
}

#[tokio::test]
async fn a_responses_api_answer_is_masked_too() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "MASK", "output": true}}))
        .await;
    for stream in [false, true] {
        let body = json!({"model": "claude-haiku-4-5", "input": say(ANSWER), "stream": stream});
        let sent = gw.post("/v1/responses", &key, body).await;
        gw.settled().await;
        assert_eq!(sent.status, 200, "{}", sent.text);
        assert!(sent.text.contains("<CREDIT_CARD>"), "{}", sent.text);
        assert!(
            !sent.text.contains("4539 ") && !sent.text.contains("6467 "),
            "{}",
            sent.text
        );
        let SpendRow { metadata, .. } = gw.spend_row(&sent.request_id()).await;
        assert_eq!(metadata["llmlite_pii_output"], json!({"CREDIT_CARD": 1}));
    }
}
