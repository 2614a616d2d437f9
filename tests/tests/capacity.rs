//! `llmlite serve`'s ceiling on requests in flight (`LLMLITE_MAX_CONCURRENCY`), the container's
//! reserved concurrency, through the router `serve` runs: the request over it is answered at
//! once, 503 with `retry-after` in its API's error shape, and never reaches Bedrock or the bill;
//! a place is held until the answer's last byte, a stream's included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::{Duration, Instant};

use llmlite_tests::{Reply, TestGateway};
use serde_json::{Value, json};

/// How many requests the gateway under test serves at once.
const CEILING: usize = 2;

fn chat(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": text}]})
}

fn message(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
           "messages": [{"role": "user", "content": text}]})
}

/// Waits until the double has been asked `n` times: the requests are past admission and in
/// flight. Bounded, so a lost request fails the test instead of hanging it.
async fn until_bedrock_has(gw: &TestGateway, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.bedrock_calls().await.len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} requests never reached Bedrock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The refusal every API family gets at the ceiling: 503, `retry-after: 1`, JSON, with a
/// request ID and the security headers every answer carries.
fn assert_refused_at_capacity(reply: &Reply) {
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(reply.headers.contains_key("strict-transport-security"));
    assert!(!reply.request_id().is_empty());
}

#[tokio::test]
async fn the_request_over_the_ceiling_is_refused_at_once_in_its_apis_shape_and_never_charged() {
    let gw = TestGateway::start_capped(CEILING).await;
    let key = gw.mint_raw_key(json!({})).await;

    // Slow answers take every place.
    let held: Vec<_> = (0..CEILING)
        .map(|i| {
            let request = gw
                .client
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&chat(&format!("[[latency:3000]] held {i}")));
            tokio::spawn(Reply::read(request))
        })
        .collect();
    until_bedrock_has(&gw, CEILING).await;

    let started = Instant::now();
    let over_chat = gw
        .post("/v1/chat/completions", &key, chat("one too many"))
        .await;
    let over_messages = gw.post("/v1/messages", &key, message("one too many")).await;
    let waited = started.elapsed();
    // Answered while the places were still taken: refused, not queued behind them.
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "the held requests ended before the refusals came back ({waited:?})"
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    assert_refused_at_capacity(&over_chat);
    let body = over_chat.json();
    assert_eq!(body["error"]["type"], "service_unavailable", "{body}");
    assert_eq!(body["error"]["code"], "503", "{body}");
    assert!(body["error"]["param"].is_null(), "{body}");
    let text = body["error"]["message"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "at capacity, with the most requests in flight it serves at once ({CEILING})"
        )),
        "{text}"
    );

    // /v1/messages is Anthropic's API: its SDK (and Claude Code) read Anthropic's shape.
    assert_refused_at_capacity(&over_messages);
    let body = over_messages.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Health checks take no place: a busy process is not an unhealthy one.
    let liveness = gw
        .client
        .get(gw.url("/health/liveness"))
        .send()
        .await
        .unwrap();
    assert_eq!(liveness.status(), 200);

    for h in held {
        let reply = h.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // The places are given back.
    let after = gw.post("/v1/chat/completions", &key, chat("after")).await;
    assert_eq!(after.status, 200, "{}", after.text);

    // The refused requests never reached Bedrock, and nothing was charged for them.
    assert_eq!(gw.bedrock_calls().await.len(), CEILING + 1);
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), CEILING + 1, "{rows:#?}");
    for refused in [&over_chat, &over_messages] {
        let id = refused.request_id();
        assert!(rows.iter().all(|r| r.request_id != id), "{id} was charged");
    }
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_inflight").await,
        0,
        "no lease is left behind"
    );
}

#[tokio::test]
async fn a_stream_keeps_its_place_until_its_last_event() {
    let gw = TestGateway::start_capped(1).await;
    let key = gw.mint_raw_key(json!({})).await;
    // A model that answers slowly: a pause before each event after the first.
    gw.script(json!([{"event_gap_ms": 250}])).await;

    let mut body = chat("one two three four five six seven eight nine ten");
    body["stream"] = json!(true);
    let stream = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // Its headers are out, its events are still coming: the one place is still taken.
    let over = gw
        .post("/v1/chat/completions", &key, chat("meanwhile"))
        .await;
    assert_refused_at_capacity(&over);

    let events = stream.text().await.unwrap();
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    // The last event written, the place is free again.
    let after = gw.post("/v1/chat/completions", &key, chat("after")).await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(gw.spend_rows().await.len(), 2);
}
