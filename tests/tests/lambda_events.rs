//! The `events/` fixtures, fed through the same adapter `lambda_http::run` wraps each function's
//! router in, and the ALB-shaped responses that come back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use futures_util::StreamExt;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, StreamAdapter};
use llmlite::{admin_routes, chat_routes, health_routes};
use llmlite_tests::{TestDb, TestGateway, responses_events, sse_data};
use serde_json::Value;
use tower::ServiceExt;

fn fixture(name: &str) -> LambdaEvent<LambdaRequest> {
    fixture_with(name, |_| {})
}

/// The fixture `name` with `change` applied to its JSON.
fn fixture_with(name: &str, change: impl FnOnce(&mut Value)) -> LambdaEvent<LambdaRequest> {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut json: Value = serde_json::from_str(&text).unwrap();
    change(&mut json);
    let request: LambdaRequest = serde_json::from_value(json).unwrap();
    LambdaEvent::new(request, Context::default())
}

async fn invoke(router: axum::Router, event: LambdaEvent<LambdaRequest>) -> Value {
    let adapter: Adapter<'_, _, _> = Adapter::from(router);
    let response = adapter.oneshot(event).await.unwrap();
    serde_json::to_value(&response).unwrap()
}

/// Through the adapter `lambda_http::run_with_streaming_response` wraps the `chat-stream`
/// function's router in: the metadata prelude, and the body as it streamed.
async fn invoke_streaming(
    router: axum::Router,
    event: LambdaEvent<LambdaRequest>,
) -> (u16, http::HeaderMap, String) {
    let adapter: StreamAdapter<'_, _, _> = StreamAdapter::from(router);
    let response = adapter.oneshot(event).await.unwrap();
    let prelude = response.metadata_prelude;
    let mut stream = response.stream;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    (
        prelude.status_code.as_u16(),
        prelude.headers,
        String::from_utf8(body).unwrap(),
    )
}

fn body_json(response: &Value) -> Value {
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn alb_health_events_get_alb_responses() {
    let db = TestDb::new().await;

    let response = invoke(health_routes(db.db.clone()), fixture("health-get.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["statusDescription"], "200 OK");
    assert_eq!(response["headers"]["content-type"], "application/json");
    assert_eq!(body_json(&response)["status"], "healthy");

    let response = invoke(
        health_routes(db.db.clone()),
        fixture("health-readiness.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(body_json(&response)["db"], "ok");

    let response = invoke(
        health_routes(db.db.clone()),
        fixture("health-post-not-allowed.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 405, "{response}");
    assert_eq!(body_json(&response)["error"]["type"], "method_not_allowed");
}

#[tokio::test]
async fn alb_chat_events_get_complete_alb_responses() {
    let gw = TestGateway::start().await;

    let response = invoke(
        chat_routes(gw.state.clone()),
        fixture("chat-completion.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert!(response["headers"]["x-request-id"].is_string());
    assert!(response["headers"]["x-litellm-response-cost"].is_string());
    let body = body_json(&response);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: Hello from the ALB"
    );

    // Behind the ALB a stream is one complete, valid event-stream body.
    let response = invoke(
        chat_routes(gw.state.clone()),
        fixture("chat-completion-stream.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["headers"]["content-type"], "text/event-stream");
    assert_eq!(response["isBase64Encoded"], false);
    let events = sse_data(response["body"].as_str().unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: Stream through the ALB");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);

    let response = invoke(chat_routes(gw.state.clone()), fixture("models.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(body_json(&response)["object"], "list");
}

#[tokio::test]
async fn alb_responses_events_get_complete_alb_responses() {
    let gw = TestGateway::start().await;

    let response = invoke(chat_routes(gw.state.clone()), fixture("responses.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert!(response["headers"]["x-litellm-response-cost"].is_string());
    let body = body_json(&response);
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert!(body["id"].as_str().unwrap().starts_with("resp_"), "{body}");
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "echo: Hello from the ALB"
    );
    // "Be brief." and "Hello from the ALB": 6 words in, 5 out.
    assert_eq!(body["usage"]["input_tokens"], 6, "{body}");
    assert_eq!(body["usage"]["output_tokens"], 5, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 11, "{body}");

    // Behind the ALB a stream is one complete body of Responses events, at `/responses` too.
    let response = invoke(
        chat_routes(gw.state.clone()),
        fixture("responses-stream.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["headers"]["content-type"], "text/event-stream");
    let events = responses_events(response["body"].as_str().unwrap());
    assert_eq!(events[0]["type"], "response.created");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{last}");
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n as u64, "{event}");
    }
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: Stream through the ALB");
    assert_eq!(last["response"]["usage"]["output_tokens"], 5, "{last}");
}

#[tokio::test]
async fn alb_key_admin_events_generate_read_and_delete_a_key() {
    let gw = TestGateway::start().await;
    let routes = || admin_routes(gw.state.clone());

    let response = invoke(routes(), fixture("key-generate.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let generated = body_json(&response);
    assert_eq!(generated["key"], "sk-fixture-key-0000000000000001");
    assert_eq!(generated["tpm_limit"], 10000);

    let response = invoke(routes(), fixture("key-info.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let info = body_json(&response);
    assert_eq!(info["key"], generated["token"]);
    assert_eq!(info["info"]["key_alias"], "fixture-key");
    assert!(
        !response.to_string().contains("0000000000000001"),
        "no raw key in the info response"
    );

    // The fixture names the key by its hash; the raw key in its place is refused, unechoed.
    let raw_in_url = fixture_with("key-info.json", |e| {
        e["queryStringParameters"]["key"] = "sk-fixture-key-0000000000000001".into();
    });
    let response = invoke(routes(), raw_in_url).await;
    assert_eq!(response["statusCode"], 400, "{response}");
    assert!(!response.to_string().contains("0000000000000001"));

    let response = invoke(routes(), fixture("key-delete.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let response = invoke(routes(), fixture("key-info.json")).await;
    assert_eq!(response["statusCode"], 404, "{response}");
}

/// The streaming API's events carry the stage (`live`), which `lambda_http` puts in front of the
/// path; the function routes on the path the client asked for. Non-streamed answers come back
/// whole through the streaming adapter too (aws-lambda-rust-runtime #805 and #967 were empty
/// bodies there).
#[tokio::test]
async fn api_gateway_events_reach_the_chat_routes_without_their_stage() {
    let gw = TestGateway::start().await;

    let (status, headers, body) = invoke_streaming(
        chat::router(gw.state.clone(), chat::Mode::Streaming),
        fixture("apigw-chat-completion.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("x-litellm-response-cost"));
    let completion: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "echo: Hello from API Gateway"
    );

    let (status, headers, body) = invoke_streaming(
        chat::router(gw.state.clone(), chat::Mode::Streaming),
        fixture("apigw-chat-completion-stream.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "echo: Stream through API Gateway");

    // The Responses API at the root path, streamed through the same ingress.
    let (status, headers, body) = invoke_streaming(
        chat::router(gw.state.clone(), chat::Mode::Streaming),
        fixture("apigw-responses-stream.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = responses_events(&body);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{last}");
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        "echo: Stream through API Gateway"
    );

    // The bare routes would see `/live/v1/chat/completions`.
    let (status, _, body) = invoke_streaming(
        chat_routes(gw.state.clone()),
        fixture("apigw-chat-completion.json"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/live/v1/chat/completions"), "{body}");
}

#[test]
fn every_fixture_is_a_valid_lambda_event() {
    let dir = format!("{}/../events", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("spend-rollup")
        {
            continue; // an EventBridge event, not an HTTP one: see tests/tests/rollup.rs
        }
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<LambdaRequest>(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        count += 1;
    }
    assert!(count >= 9, "{count} fixtures");
}

/// Every HTTP fixture, through the function the ALB would send it to, in an order where the
/// ones that create things come first: each gets a well-formed ALB response with a JSON (or
/// event-stream) body, and nothing fails on the server side.
#[tokio::test]
async fn every_http_fixture_goes_through_its_functions_handler() {
    let gw = TestGateway::start().await;
    let dir = format!("{}/../events", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with("spend-rollup"))
        .collect();
    // Creators first, the delete last.
    names.sort_by_key(|n| {
        (
            !(n.ends_with("-new.json") || n == "key-generate.json"),
            n == "key-delete.json",
            n.clone(),
        )
    });
    assert!(names.len() >= 19, "{names:?}");
    for name in names {
        let event = fixture(&name);
        let path = match &event.payload {
            LambdaRequest::Alb(alb) => alb.path.clone().unwrap_or_default(),
            // The streaming API serves the chat function's paths only.
            LambdaRequest::ApiGatewayV1(rest) => {
                let path = rest.path.clone().unwrap_or_default();
                assert_eq!(
                    llmlite::Function::for_path(&path),
                    Some(llmlite::Function::Chat),
                    "{name}"
                );
                let (status, headers, body) =
                    invoke_streaming(chat::router(gw.state.clone(), chat::Mode::Streaming), event)
                        .await;
                assert_eq!(status, 200, "{name}: {body}");
                if headers["content-type"] == "text/event-stream" && name.contains("responses") {
                    assert!(
                        body.contains("event: response.completed\n"),
                        "{name}: {body}"
                    );
                } else if headers["content-type"] == "text/event-stream" {
                    assert!(body.ends_with("data: [DONE]\n\n"), "{name}: {body}");
                } else {
                    serde_json::from_str::<Value>(&body)
                        .unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
                }
                continue;
            }
            _ => panic!("{name} is neither an ALB nor an API Gateway REST event"),
        };
        let router = match llmlite::Function::for_path(&path) {
            Some(llmlite::Function::Chat) => chat_routes(gw.state.clone()),
            Some(llmlite::Function::KeyAdmin) => admin_routes(gw.state.clone()),
            Some(llmlite::Function::Health) => health_routes(gw.db.db.clone()),
            None => panic!("{name}: the ALB would not route {path}"),
        };
        let response = invoke(router, event).await;
        let status = response["statusCode"].as_u64().unwrap();
        // A fixture named for a refusal expects it; every other one succeeds.
        let expected = if name.contains("not-allowed") {
            405
        } else {
            200
        };
        assert_eq!(status, expected, "{name}: {response}");
        let body = response["body"].as_str().unwrap();
        if response["headers"]["content-type"] == "text/event-stream"
            && name.starts_with("responses")
        {
            assert!(body.contains("event: response.completed\n"), "{name}");
        } else if response["headers"]["content-type"] == "text/event-stream" {
            assert!(body.ends_with("data: [DONE]\n\n"), "{name}");
        } else {
            serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
        }
    }
}
