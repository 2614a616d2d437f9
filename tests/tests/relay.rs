//! The one SSE relay, seen from each streamed API: a model that is silent for longer than the
//! keep-alive interval gets a comment on the wire (API Gateway cuts a stream after 5 minutes
//! without a byte), which every client skips, and the answer is still whole and paid once.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::{Value, json};

/// A gateway whose streams send a keep-alive comment after 100 ms of silence, and whose model
/// pauses 450 ms before each event after the first.
async fn slow_model() -> TestGateway {
    let gw = TestGateway::start_adjusted(&[], |state| {
        state.sse_keep_alive = Duration::from_millis(100);
    })
    .await;
    gw.script(json!([{"event_gap_ms": 450}])).await;
    gw
}

/// A streamed request's whole body, as the wire carried it (comments included).
async fn stream(gw: &TestGateway, path: &str, body: Value) -> String {
    let reply = gw.post(path, MASTER_KEY, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.text
}

/// The body's events with the comments taken out, and how many comments there were.
fn without_comments(body: &str) -> (String, usize) {
    let comments = body.matches(": keep-alive\n\n").count();
    (body.replace(": keep-alive\n\n", ""), comments)
}

#[tokio::test]
async fn a_silent_model_gets_keep_alive_comments_on_every_streamed_api() {
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "stream": true,
                   "messages": [{"role": "user", "content": "hello there"}]}),
            "data: [DONE]",
            "acompletion",
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 64,
                   "messages": [{"role": "user", "content": "hello there"}]}),
            "event: message_stop",
            "anthropic_messages",
        ),
        (
            "/v1/responses",
            json!({"model": "claude-sonnet-4-5", "stream": true, "input": "hello there"}),
            "event: response.completed",
            "aresponses",
        ),
    ];
    for (path, body, ending, call_type) in cases {
        let gw = slow_model().await;
        let text = stream(&gw, path, body).await;
        let (events, comments) = without_comments(&text);
        assert!(comments >= 2, "{path}: {comments} comments in {text}");
        assert!(events.contains(ending), "{path}: {events}");
        // Nothing but whole events and comments: every block is `event:`/`data:` lines.
        for block in events.split("\n\n").filter(|b| !b.is_empty()) {
            assert!(
                block
                    .lines()
                    .all(|l| l.starts_with("data: ") || l.starts_with("event: ")),
                "{path}: {block:?}"
            );
        }
        let rows: Vec<(String, String)> = gw
            .spend_rows()
            .await
            .into_iter()
            .map(|row| (row.call_type, row.status))
            .collect();
        assert_eq!(
            rows,
            vec![(call_type.to_owned(), "success".to_owned())],
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_model_that_keeps_talking_gets_no_comments() {
    let gw = TestGateway::start_adjusted(&[], |state| {
        state.sse_keep_alive = Duration::from_millis(400);
    })
    .await;
    gw.script(json!([{"event_gap_ms": 20}])).await;
    let text = stream(
        &gw,
        "/v1/chat/completions",
        json!({"model": "claude-sonnet-4-5", "stream": true,
               "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    let (events, comments) = without_comments(&text);
    assert_eq!(comments, 0, "{text}");
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");
}
