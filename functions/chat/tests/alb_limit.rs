//! Behind the ALB a streamed answer is one response of at most 1 MB (the ALB's limit for a
//! Lambda target; more is a 502). The real `chat` binary, against a loopback double of the
//! Runtime API: a 20,000-delta answer arrives whole, its deltas coalesced, far under the limit;
//! an answer that would pass it ends with the documented error event instead, and pays for what
//! was produced.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite::pipeline::invocation::ALB_RESPONSE_LIMIT;
use llmlite_tests::lambda_runtime::{RuntimeApi, now_ms};
use llmlite_tests::{TestGateway, sse_data};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_chat");

/// The ALB fixture for a stream, with `content` as the user's message.
fn alb_stream_event(content: &str, max_tokens: u32) -> Value {
    let path = format!(
        "{}/../../events/chat-completion-stream.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["body"] = json!(
        json!({"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "stream": true,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": content}]})
        .to_string()
    );
    event
}

/// The function's whole response document (what the ALB reads), and its SSE events.
async fn invoke(api: &RuntimeApi, event: Value) -> (usize, Value, Vec<String>) {
    let mut invoked = api.invoke(event, now_ms() + 300_000);
    let (_, bytes) = invoked.collect(Duration::from_secs(300)).await;
    let response: Value = serde_json::from_slice(&bytes).unwrap();
    let events = sse_data(response["body"].as_str().unwrap());
    (bytes.len(), response, events)
}

fn parse(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn a_long_buffered_stream_is_coalesced_under_the_alb_limit_or_ends_with_an_error_event() {
    let gw = TestGateway::start().await;
    let api = RuntimeApi::start().await;
    let mut function = api.spawn(BINARY, &gw, &[]);

    // 20,000 deltas: "echo: " and 19,999 words.
    let words: Vec<String> = (0..19_999).map(|n| format!("w{n}")).collect();
    let prompt = words.join(" ");
    let (size, response, events) = invoke(&api, alb_stream_event(&prompt, 25_000)).await;
    assert_eq!(response["statusCode"], 200);
    assert_eq!(response["headers"]["content-type"], "text/event-stream");
    assert_eq!(gw.double.deltas_sent(), 20_000);
    assert!(size < ALB_RESPONSE_LIMIT, "{size} bytes");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parse(&events);
    assert_eq!(content(&chunks), format!("echo: {prompt}"));
    // Role, a few coalesced content chunks, finish, usage: not 20,000 chunks.
    assert!(chunks.len() < 20, "{} chunks", chunks.len());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 20_000);
    eprintln!(
        "20,000 deltas behind the ALB: {size} bytes in {} chunks",
        chunks.len()
    );

    // 10,000 words of quotes: each `"` is 4 bytes once escaped twice (in the chunk's JSON,
    // then in the ALB's), so the answer would be 1.6 MB.
    let quotes = vec!["\"".repeat(40); 10_000].join(" ");
    let (size, response, events) = invoke(&api, alb_stream_event(&quotes, 12_000)).await;
    assert_eq!(response["statusCode"], 200);
    assert!(size < ALB_RESPONSE_LIMIT, "{size} bytes");
    assert!(
        size > ALB_RESPONSE_LIMIT / 2,
        "{size} bytes: the limit was used"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"), "no [DONE]");
    let chunks = parse(&events);
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["type"], "response_too_large", "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("streaming endpoint"), "{message}");
    let relayed = content(&chunks[..chunks.len() - 1]);
    assert!(quotes.starts_with(relayed.trim_start_matches("echo: ")));

    // Settled: the complete one a success, the cut one a failure that pays what was produced.
    assert!(api.extension_done(2, Duration::from_secs(60)).await);
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT status, error_type, completion_tokens FROM litellm_spend ORDER BY start_time",
    )
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "success");
    assert_eq!(rows[0].2, 20_000);
    assert_eq!(rows[1].0, "failure");
    assert_eq!(rows[1].1.as_deref(), Some("response_too_large"));
    assert!(rows[1].2 > 1_000, "{rows:?}");
    let _ = function.kill().await;
}

/// The Responses route repeats an answer's text in its closing events (the deltas, then
/// `output_text.done`, `content_part.done`, `output_item.done` and `response.completed`), so a
/// buffered Responses stream keeps room for four more copies of what it has written: it stays
/// under 1 MB, and one that would not ends with `response.failed`.
#[tokio::test]
async fn a_buffered_responses_stream_stays_under_the_alb_limit() {
    let gw = TestGateway::start().await;
    let api = RuntimeApi::start().await;
    let mut function = api.spawn(BINARY, &gw, &[]);
    let event = |input: &str, max: u32| {
        let mut event = alb_stream_event("", max);
        event["path"] = json!("/v1/responses");
        event["body"] = json!(
            json!({"model": "claude-sonnet-4-5", "max_output_tokens": max, "stream": true,
                   "input": input})
            .to_string()
        );
        event
    };
    let responses =
        |response: &Value| llmlite_tests::responses_events(response["body"].as_str().unwrap());

    // 5,000 words: about 30 KB of text, five times over.
    let words: Vec<String> = (0..5_000).map(|n| format!("w{n}")).collect();
    let prompt = words.join(" ");
    let mut invoked = api.invoke(event(&prompt, 6_000), now_ms() + 300_000);
    let (_, bytes) = invoked.collect(Duration::from_secs(300)).await;
    assert!(bytes.len() < ALB_RESPONSE_LIMIT, "{} bytes", bytes.len());
    let response: Value = serde_json::from_slice(&bytes).unwrap();
    let events = responses(&response);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{last}");
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        format!("echo: {prompt}")
    );

    // The quotes that overflow the chat stream: within the limit, failed, not completed.
    let quotes = vec!["\"".repeat(40); 10_000].join(" ");
    let mut invoked = api.invoke(event(&quotes, 12_000), now_ms() + 300_000);
    let (_, bytes) = invoked.collect(Duration::from_secs(300)).await;
    assert!(bytes.len() < ALB_RESPONSE_LIMIT, "{} bytes", bytes.len());
    let response: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(response["statusCode"], 200);
    let events = responses(&response);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{last}");
    assert_eq!(last["response"]["error"]["code"], "response_too_large");

    assert!(api.extension_done(2, Duration::from_secs(60)).await);
    let rows: Vec<(String, String)> = gw
        .spend_rows()
        .await
        .into_iter()
        .map(|row| (row.call_type, row.status))
        .collect();
    assert_eq!(
        rows,
        [
            ("aresponses".to_owned(), "success".to_owned()),
            ("aresponses".to_owned(), "failure".to_owned())
        ]
    );
    let _ = function.kill().await;
}
