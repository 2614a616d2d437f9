//! The `chat-stream` function as Lambda runs it: the real binary against a loopback double of
//! the Runtime API, given the streaming API's event fixtures. Its response leaves in Lambda's
//! streaming format (a JSON prelude, eight NUL bytes, the body) chunk by chunk as the model
//! writes; the invocation's deadline cuts a model that runs too long, and the cut request
//! settles with status `deadline`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::{Duration, Instant};

use llmlite_tests::lambda_runtime::{Part, RuntimeApi, has_content_delta, now_ms, split_prelude};
use llmlite_tests::{TestGateway, sse_data};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_chat-stream");

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The streaming fixture with `body` as its request.
fn streaming_event(body: &Value) -> Value {
    let mut event = fixture("apigw-chat-completion-stream.json");
    event["body"] = Value::String(body.to_string());
    event
}

/// The SSE events with what differs between two runs of one request (its ID and time) blanked.
fn normalised(body: &str) -> Vec<String> {
    sse_data(body)
        .into_iter()
        .map(|data| match serde_json::from_str::<Value>(&data) {
            Ok(mut chunk) if chunk.get("id").is_some() => {
                chunk["id"] = json!("chatcmpl-X");
                chunk["created"] = json!(0);
                chunk.to_string()
            }
            _ => data,
        })
        .collect()
}

/// A spend row's status and tokens, once the request has settled.
async fn settled(gw: &TestGateway) -> (String, i64, i64) {
    for _ in 0..300 {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT status, prompt_tokens::bigint, completion_tokens::bigint FROM litellm_spend",
        )
        .persistent(false)
        .fetch_optional(&gw.db.pool)
        .await
        .unwrap();
        if let Some(row) = row {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no spend row");
}

#[tokio::test]
async fn a_streamed_answer_leaves_the_function_delta_by_delta_in_lambdas_streaming_format() {
    let gw = TestGateway::start().await;
    let api = RuntimeApi::start().await;
    let mut function = api.spawn(BINARY, &gw, &[]);
    // 49 words: "echo: " and the 49 are 50 deltas, 100 ms apart.
    let words: Vec<String> = (1..=49).map(|n| format!("w{n}")).collect();
    let request = json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": words.join(" ")}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    gw.script(json!([{"event_gap_ms": 100}])).await;

    let started = Instant::now();
    let mut invoked = api.invoke(streaming_event(&request), now_ms() + 120_000);
    let mut bytes = Vec::new();
    let mut head = None;
    let mut first_content = None;
    loop {
        match invoked.part(Duration::from_secs(120)).await {
            Part::Head(h) => head = Some(h),
            Part::Chunk(chunk) => {
                bytes.extend_from_slice(&chunk);
                if first_content.is_none() && has_content_delta(&bytes) {
                    first_content = Some((gw.double.deltas_sent(), started.elapsed()));
                }
            }
            Part::End => break,
            Part::Error(e) => panic!("{e}"),
        }
    }
    let total = started.elapsed();

    // Lambda's streaming response: the mode header, the HTTP integration content type...
    let head = head.unwrap();
    assert_eq!(head["lambda-runtime-function-response-mode"], "streaming");
    assert_eq!(
        head["content-type"],
        "application/vnd.awslambda.http-integration-response"
    );
    // ...a JSON prelude, eight NUL bytes, the event stream.
    let (prelude, body) = split_prelude(&bytes).expect("prelude and separator");
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "text/event-stream");
    assert!(prelude["headers"]["x-request-id"].is_string(), "{prelude}");
    let body = String::from_utf8(body.to_vec()).unwrap();

    // The first content left before the double had written its tenth delta.
    let (deltas_then, ttft) = first_content.expect("a content chunk");
    assert!(
        deltas_then < 10,
        "the first content chunk arrived when the double had sent {deltas_then} of 50 deltas"
    );
    assert_eq!(gw.double.deltas_sent(), 50);
    eprintln!(
        "streaming entry point: first content after {} ms ({deltas_then} deltas sent), \
         whole answer after {} ms",
        ttft.as_millis(),
        total.as_millis()
    );

    // The same request through `llmlite serve` gives the same events.
    let served = gw.chat(request).await;
    assert_eq!(served.status, 200);
    let served = served.text;
    assert_eq!(normalised(&body), normalised(&served));
    let events = normalised(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(
        events.len(),
        1 + 50 + 1 + 1 + 1,
        "role, deltas, finish, usage, [DONE]"
    );

    // Both settle.
    assert!(api.extension_done(1, Duration::from_secs(30)).await);
    llmlite_tests::wait_until_settled(&gw.db.pool).await;
    let statuses: Vec<(String, i64)> = gw
        .spend_rows()
        .await
        .into_iter()
        .map(|row| (row.status, row.completion_tokens))
        .collect();
    assert_eq!(
        statuses,
        vec![("success".to_owned(), 50), ("success".to_owned(), 50)]
    );
    let _ = function.kill().await;
}

#[tokio::test]
async fn the_deadline_ends_a_slow_stream_with_an_error_event_and_it_settles_as_deadline() {
    let gw = TestGateway::start().await;
    let api = RuntimeApi::start().await;
    // A second of the two the invocation has is kept for settlement.
    let mut function = api.spawn(BINARY, &gw, &[("LLMLITE_SETTLEMENT_MARGIN_MS", "1000")]);
    // The model starts at once, then sleeps 5 s before each further event.
    gw.script(json!([{"event_gap_ms": 5000}])).await;
    let request = json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "a slow answer"}],
        "stream": true,
    });
    let deadline_ms = now_ms() + 2_000;
    let mut invoked = api.invoke(streaming_event(&request), deadline_ms);
    let (_, bytes) = invoked.collect(Duration::from_secs(30)).await;
    let ended_ms = now_ms();
    assert!(
        ended_ms < deadline_ms,
        "the stream ended {} ms after the invocation's deadline",
        ended_ms - deadline_ms
    );
    let (prelude, body) = split_prelude(&bytes).unwrap();
    assert_eq!(prelude["statusCode"], 200);
    let events = sse_data(&String::from_utf8_lossy(body));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "timeout", "{events:?}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{last}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");

    // Settled before the environment may be frozen: status `deadline`, the prompt paid.
    assert!(api.extension_done(1, Duration::from_secs(30)).await);
    let (status, prompt_tokens, _) = settled(&gw).await;
    assert_eq!(status, "deadline");
    assert!(prompt_tokens > 0);
    let _ = function.kill().await;
}

#[tokio::test]
async fn the_deadline_answers_a_slow_non_streamed_request_with_504() {
    let gw = TestGateway::start().await;
    let api = RuntimeApi::start().await;
    let mut function = api.spawn(BINARY, &gw, &[("LLMLITE_SETTLEMENT_MARGIN_MS", "1000")]);
    gw.script(json!([{"latency_ms": 5000}])).await;
    let mut event = fixture("apigw-chat-completion.json");
    event["body"] = json!(
        json!({"model": "claude-sonnet-4-5",
               "messages": [{"role": "user", "content": "a slow answer"}]})
        .to_string()
    );
    // 4 s to the deadline, 1 s of it the margin: the model call is cut at 3 s, well before the
    // double's 5 s answer, and a function slow to take the event on a busy machine still has
    // time to call the model (with less than the margin left it would take nothing).
    let deadline_ms = now_ms() + 4_000;
    let mut invoked = api.invoke(event, deadline_ms);
    let (_, bytes) = invoked.collect(Duration::from_secs(30)).await;
    assert!(now_ms() < deadline_ms);
    let (prelude, body) = split_prelude(&bytes).unwrap();
    assert_eq!(prelude["statusCode"], 504, "{prelude}");
    let error: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(error["error"]["type"], "timeout", "{error}");

    assert!(api.extension_done(1, Duration::from_secs(30)).await);
    let (status, prompt_tokens, completion_tokens) = settled(&gw).await;
    assert_eq!(status, "deadline");
    assert!(prompt_tokens > 0, "the prompt was read: it is paid");
    assert_eq!(completion_tokens, 0);

    // An invocation with less time left than the margin takes nothing and calls no model.
    let calls = gw.bedrock_calls().await.len();
    let mut late = api.invoke(fixture("apigw-chat-completion.json"), now_ms() + 500);
    let (_, bytes) = late.collect(Duration::from_secs(30)).await;
    let (prelude, _) = split_prelude(&bytes).unwrap();
    assert_eq!(prelude["statusCode"], 504, "{prelude}");
    assert_eq!(gw.bedrock_calls().await.len(), calls);
    let rows = gw.count("SELECT count(*) FROM litellm_spend").await;
    assert_eq!(rows, 1);
    let _ = function.kill().await;
}
