//! The Bedrock double's Anthropic operations (InvokeModel, InvokeModelWithResponseStream,
//! CountTokens), driven by the real `aws-sdk-bedrockruntime` client as the gateway uses it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{
    BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig,
};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ConversationRole, ConverseTokensRequest,
    CountTokensInput, ImageBlock, ImageFormat, ImageSource, InvokeModelTokensRequest, Message,
    ResponseStream, SystemContentBlock,
};
use base64::Engine;
use llmlite::dev::bedrock_double::BedrockDouble;
use serde_json::{Value, json};

const MODEL: &str = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0";
/// A PNG signature, base64: 8 bytes.
const PNG: &str = "iVBORw0KGgo=";

/// A client built as `shared/src/state.rs` builds it, pointed at the double.
fn client(double: &BedrockDouble) -> Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-2"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(double.endpoint())
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .build();
    Client::from_conf(config)
}

/// An Anthropic Messages body as Bedrock takes it, with `extra` fields merged in.
fn body(content: Value, extra: Value) -> Value {
    let mut body = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
    });
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        body[key] = value;
    }
    body
}

fn blob(body: &Value) -> Blob {
    Blob::new(serde_json::to_vec(body).unwrap())
}

async fn invoke(client: &Client, model: &str, body: &Value) -> Value {
    let out = client
        .invoke_model()
        .model_id(model)
        .content_type("application/json")
        .accept("application/json")
        .body(blob(body))
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), "application/json");
    serde_json::from_slice(out.body().as_ref()).unwrap()
}

type StreamError = aws_sdk_bedrockruntime::types::error::ResponseStreamError;

/// The decoded Anthropic events of a streamed invocation, and the receiver's error (the service's
/// exception) if one ended it.
async fn invoke_stream(
    client: &Client,
    model: &str,
    body: &Value,
) -> (Vec<Value>, Option<StreamError>) {
    let mut out = client
        .invoke_model_with_response_stream()
        .model_id(model)
        .content_type("application/json")
        .body(blob(body))
        .send()
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        match out.body.recv().await {
            Ok(Some(ResponseStream::Chunk(part))) => {
                let bytes = part.bytes().expect("a chunk carries bytes");
                events.push(serde_json::from_slice(bytes.as_ref()).unwrap());
            }
            Ok(Some(other)) => panic!("unexpected stream member {other:?}"),
            Ok(None) => return (events, None),
            Err(error) => return (events, Some(error.into_service_error())),
        }
    }
}

fn text_of(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "text")
        .map(|b| b["text"].as_str().unwrap())
        .collect()
}

async fn count_invoke_body(client: &Client, model: &str, body: &Value) -> i32 {
    client
        .count_tokens()
        .model_id(model)
        .input(CountTokensInput::InvokeModel(
            InvokeModelTokensRequest::builder()
                .body(blob(body))
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .unwrap()
        .input_tokens()
}

async fn calls(double: &BedrockDouble) -> Vec<Value> {
    reqwest::get(format!("{}/__double/calls", double.endpoint()))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

#[tokio::test]
async fn invoke_model_echoes_the_last_user_text_with_usage_and_headers() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);

    let message = invoke(
        &client,
        MODEL,
        &body(json!("hello there world"), json!({"system": "be brief"})),
    )
    .await;
    assert!(
        message["id"].as_str().unwrap().starts_with("msg_bdrk_"),
        "{message}"
    );
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], MODEL);
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "echo: hello there world"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    // "be brief" (2) + "hello there world" (3) in; "echo: hello there world" (4) out.
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 5, "output_tokens": 4,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
               "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}})
    );

    // Blocks, a cache point and an image: the cache write is reported apart from the input.
    let message = invoke(
        &client,
        MODEL,
        &body(
            json!([
                {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "and the question"}
            ]),
            json!({"system": [{"type": "text", "text": "be brief"}]}),
        ),
    )
    .await;
    assert_eq!(
        text_of(&message),
        "echo: a long shared preamble and the question [image: png, about 9 bytes]"
    );
    assert_eq!(message["usage"]["cache_creation_input_tokens"], 6);
    assert_eq!(
        message["usage"]["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 0})
    );
    assert_eq!(message["usage"]["input_tokens"], 103);

    // The token counts in the headers, as Bedrock sends them.
    let response = reqwest::Client::new()
        .post(format!("{}/model/{MODEL}/invoke", double.endpoint()))
        .json(&body(json!("hello there world"), json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(header("x-amzn-bedrock-input-token-count"), 3);
    assert_eq!(header("x-amzn-bedrock-output-token-count"), 4);

    let operations: Vec<Value> = calls(&double)
        .await
        .iter()
        .map(|c| c["operation"].clone())
        .collect();
    assert_eq!(operations, vec![json!("invoke"); 3]);
}

#[tokio::test]
async fn invoke_model_stops_at_stop_sequences_and_max_tokens() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);

    let message = invoke(
        &client,
        MODEL,
        &body(
            json!("hello there world"),
            json!({"stop_sequences": ["world", "there"]}),
        ),
    )
    .await;
    assert_eq!(text_of(&message), "echo: hello ");
    assert_eq!(message["stop_reason"], "stop_sequence");
    assert_eq!(message["stop_sequence"], "there");

    let message = invoke(
        &client,
        MODEL,
        &body(json!("hello there world"), json!({"max_tokens": 2})),
    )
    .await;
    assert_eq!(text_of(&message), "echo: hello");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 2);
}

fn weather_tool() -> Value {
    json!([{
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}
    }])
}

#[tokio::test]
async fn invoke_model_calls_a_named_tool_and_answers_its_result() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);
    let question = "use get_weather for Paris";

    let message = invoke(
        &client,
        MODEL,
        &body(json!(question), json!({"tools": weather_tool()})),
    )
    .await;
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "toolu_bdrk_double_0", "name": "get_weather",
                "input": {"input": question}}])
    );
    assert_eq!(message["stop_reason"], "tool_use");

    // `tool_choice` none: the tools are not called.
    let message = invoke(
        &client,
        MODEL,
        &body(
            json!(question),
            json!({"tools": weather_tool(), "tool_choice": {"type": "none"}}),
        ),
    )
    .await;
    assert_eq!(text_of(&message), format!("echo: {question}"));

    // The result, as a string and as blocks.
    for content in [json!("sunny"), json!([{"type": "text", "text": "sunny"}])] {
        let mut follow_up = body(json!(question), json!({"tools": weather_tool()}));
        follow_up["messages"]
            .as_array_mut()
            .unwrap()
            .extend([
                json!({"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_bdrk_double_0", "name": "get_weather", "input": {"input": question}}
                ]}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_bdrk_double_0", "content": content}
                ]}),
            ]);
        let message = invoke(&client, MODEL, &follow_up).await;
        assert_eq!(text_of(&message), "Tool result: sunny");
        assert_eq!(message["stop_reason"], "end_turn");
    }
}

#[tokio::test]
async fn invoke_model_thinks_first_when_asked() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);

    let message = invoke(
        &client,
        MODEL,
        &body(
            json!("think hard"),
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
                   "anthropic_beta": ["interleaved-thinking-2025-05-14"]}),
        ),
    )
    .await;
    assert_eq!(
        message["content"][0],
        json!({"type": "thinking", "thinking": "thinking about: think hard",
               "signature": "double-signature"})
    );
    assert_eq!(
        message["content"][1],
        json!({"type": "text", "text": "echo: think hard"})
    );
    assert_eq!(message["usage"]["output_tokens"], 7);

    // A previous turn's thinking and redacted thinking are taken and not counted.
    let mut next = body(
        json!("think hard"),
        json!({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}),
    );
    next["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "earlier thoughts", "signature": "double-signature"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "earlier answer"}
        ]}),
        json!({"role": "user", "content": "again"}),
    ]);
    let message = invoke(&client, MODEL, &next).await;
    assert_eq!(message["content"][0]["thinking"], "thinking about: again");
    // "think hard" (2) + "earlier answer" (2) + "again" (1).
    assert_eq!(message["usage"]["input_tokens"], 5);
}

#[tokio::test]
async fn streamed_invocations_carry_the_same_answer_event_by_event() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);
    let request = body(
        json!("the quick brown fox"),
        json!({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}),
    );

    let whole = invoke(&client, MODEL, &request).await;
    let (events, error) = invoke_stream(&client, MODEL, &request).await;
    assert!(error.is_none(), "{error:?}");

    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "content_block_start" => {
                format!("start:{}", e["content_block"]["type"].as_str().unwrap())
            }
            "content_block_delta" => e["delta"]["type"].as_str().unwrap().to_owned(),
            other => other.to_owned(),
        })
        .collect();
    let mut expected = vec![
        "message_start",
        "start:thinking",
        "thinking_delta",
        "signature_delta",
        "content_block_stop",
        "start:text",
    ];
    expected.extend(["text_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(kinds, expected);

    let start = &events[0]["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_bdrk_"));
    assert_eq!(start["model"], MODEL);
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        start["usage"]["input_tokens"],
        whole["usage"]["input_tokens"]
    );
    assert_eq!(start["usage"]["output_tokens"], 1);

    let thinking: String = events
        .iter()
        .filter_map(|e| e["delta"]["thinking"].as_str())
        .collect();
    assert_eq!(thinking, whole["content"][0]["thinking"].as_str().unwrap());
    let text: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, text_of(&whole));
    assert!(
        events
            .iter()
            .filter(|e| e["type"] != "message_start" && e["type"] != "message_stop")
            .filter(|e| e["type"] != "message_delta")
            .all(|e| e["index"] == 0 || e["index"] == 1)
    );

    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], whole["stop_reason"]);
    assert_eq!(delta["delta"]["stop_sequence"], Value::Null);
    assert_eq!(
        delta["usage"]["output_tokens"],
        whole["usage"]["output_tokens"]
    );

    let metrics = &events[events.len() - 1]["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["inputTokenCount"], whole["usage"]["input_tokens"]);
    assert_eq!(metrics["outputTokenCount"], whole["usage"]["output_tokens"]);
    assert!(metrics["invocationLatency"].as_u64().is_some(), "{metrics}");
    assert!(metrics["firstByteLatency"].as_u64().is_some(), "{metrics}");

    // Every content delta is counted as it leaves.
    assert_eq!(double.deltas_sent(), 7);
    assert_eq!(
        calls(&double).await[1]["operation"],
        "invoke-with-response-stream"
    );
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_as_json_in_two_halves() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);
    // Multi-byte text, so a naive split would land inside a character.
    let question = "get_weather à Paris, ça va? été";
    let request = body(json!(question), json!({"tools": weather_tool()}));

    let (events, error) = invoke_stream(&client, MODEL, &request).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events[1]["content_block"],
        json!({"type": "tool_use", "id": "toolu_bdrk_double_0", "name": "get_weather", "input": {}})
    );
    let parts: Vec<&str> = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(parts.len(), 2);
    let input: Value = serde_json::from_str(&parts.concat()).unwrap();
    assert_eq!(input, json!({"input": question}));
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn a_break_mid_stream_is_an_error_from_the_receiver() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);

    let (events, error) = invoke_stream(
        &client,
        MODEL,
        &body(json!("[[break:3]] one two three"), json!({})),
    )
    .await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2]["type"], "content_block_delta");
    let error = error.expect("the stream broke");
    assert!(error.is_model_stream_error_exception(), "{error:?}");
    // message_start and content_block_start are not deltas.
    assert_eq!(double.deltas_sent(), 1);

    // The same from the script.
    reqwest::Client::new()
        .post(format!("{}/__double/script", double.endpoint()))
        .json(&json!([{"break_after": 0}]))
        .send()
        .await
        .unwrap();
    let (events, error) = invoke_stream(&client, MODEL, &body(json!("hello"), json!({}))).await;
    assert!(events.is_empty(), "{events:?}");
    assert!(
        error
            .expect("the stream broke")
            .is_model_stream_error_exception()
    );
}

#[tokio::test]
async fn scripted_event_gaps_slow_the_stream() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);
    reqwest::Client::new()
        .post(format!("{}/__double/script", double.endpoint()))
        .json(&json!([{"event_gap_ms": 40}]))
        .send()
        .await
        .unwrap();

    let started = Instant::now();
    let (events, error) = invoke_stream(&client, MODEL, &body(json!("a b"), json!({}))).await;
    assert!(error.is_none(), "{error:?}");
    // message_start, block start, 3 deltas, block stop, message_delta, message_stop.
    assert_eq!(events.len(), 8);
    assert!(started.elapsed() >= Duration::from_millis(40 * 7));
    let metrics = &events[7]["amazon-bedrock-invocationMetrics"];
    assert!(
        metrics["invocationLatency"].as_u64().unwrap() >= 40 * 7,
        "{metrics}"
    );
}

#[tokio::test]
async fn failures_on_demand_are_the_sdk_errors() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);

    let error = client
        .invoke_model()
        .model_id(MODEL)
        .body(blob(&body(json!("[[throttle]] hello"), json!({}))))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_throttling_exception(), "{error:?}");

    let error = client
        .invoke_model_with_response_stream()
        .model_id(MODEL)
        .body(blob(&body(json!("[[throttle]] hello"), json!({}))))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_throttling_exception(), "{error:?}");

    let error = client
        .invoke_model()
        .model_id("eu.anthropic.always-unavailable-v1:0")
        .body(blob(&body(json!("hello"), json!({}))))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_service_unavailable_exception(), "{error:?}");

    let error = client
        .count_tokens()
        .model_id(MODEL)
        .input(CountTokensInput::InvokeModel(
            InvokeModelTokensRequest::builder()
                .body(blob(&body(
                    json!("[[error:500:InternalServerException]]"),
                    json!({}),
                )))
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_internal_server_exception(), "{error:?}");
}

#[tokio::test]
async fn bodies_bedrock_would_refuse_are_validation_exceptions() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);
    let with_stream = body(json!("hello"), json!({"stream": true}));
    let with_model = body(json!("hello"), json!({"model": MODEL}));
    let mut unversioned = body(json!("hello"), json!({}));
    unversioned
        .as_object_mut()
        .unwrap()
        .remove("anthropic_version");
    for (request, says) in [
        (&with_stream, "extraneous key [stream]"),
        (&with_model, "extraneous key [model]"),
        (&unversioned, "required key [anthropic_version]"),
    ] {
        let error = client
            .invoke_model()
            .model_id(MODEL)
            .body(blob(request))
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(error.is_validation_exception(), "{error:?}");
        assert!(error.meta().message().unwrap().contains(says), "{error:?}");
    }
}

fn counted_content() -> Value {
    json!([
        {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "and the question"}
    ])
}

#[tokio::test]
async fn count_tokens_counts_what_invoke_model_would_for_either_input() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);

    // Without a cache point, CountTokens equals the usage's input tokens.
    let request = body(
        json!([
            {"type": "text", "text": "what is in"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "this picture"}
        ]),
        json!({"system": "you describe images", "tools": weather_tool()}),
    );
    let usage = invoke(&client, MODEL, &request).await["usage"].clone();
    assert_eq!(usage["input_tokens"], 108);
    assert_eq!(count_invoke_body(&client, MODEL, &request).await, 108);

    // With one, it is everything the request sends: the cache write too.
    let request = body(counted_content(), json!({"system": "be brief"}));
    let usage = invoke(&client, MODEL, &request).await["usage"].clone();
    let whole = usage["input_tokens"].as_i64().unwrap()
        + usage["cache_creation_input_tokens"].as_i64().unwrap();
    assert_eq!(
        i64::from(count_invoke_body(&client, MODEL, &request).await),
        whole
    );

    // The SDK sends the InvokeModel body as a base64 string.
    let recorded = calls(&double).await;
    let count = recorded
        .iter()
        .rfind(|c| c["operation"] == "count-tokens")
        .unwrap();
    let sent = count["body"]["input"]["invokeModel"]["body"]
        .as_str()
        .expect("a base64 string");
    let decoded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(sent)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decoded, request);
    assert_eq!(count["invoke_body"], request);

    // The same conversation as Converse: the same count, and the same as Converse's usage.
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("a long shared preamble".into()))
        .content(ContentBlock::CachePoint(
            CachePointBlock::builder()
                .r#type(CachePointType::Default)
                .build()
                .unwrap(),
        ))
        .content(ContentBlock::Image(
            ImageBlock::builder()
                .format(ImageFormat::Png)
                .source(ImageSource::Bytes(Blob::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(PNG)
                        .unwrap(),
                )))
                .build()
                .unwrap(),
        ))
        .content(ContentBlock::Text("and the question".into()))
        .build()
        .unwrap();
    let system = SystemContentBlock::Text("be brief".into());
    let counted = client
        .count_tokens()
        .model_id(MODEL)
        .input(CountTokensInput::Converse(
            ConverseTokensRequest::builder()
                .messages(message.clone())
                .system(system.clone())
                .build(),
        ))
        .send()
        .await
        .unwrap()
        .input_tokens();
    assert_eq!(i64::from(counted), whole);
    let conversed = client
        .converse()
        .model_id(MODEL)
        .messages(message)
        .system(system)
        .send()
        .await
        .unwrap();
    let converse_usage = conversed.usage().unwrap();
    assert_eq!(
        converse_usage.input_tokens(),
        usage["input_tokens"].as_i64().unwrap() as i32
    );
    // The double's cache remembers the invoke's write: the same prefix is read now.
    assert_eq!(
        converse_usage.cache_read_input_tokens(),
        usage["cache_creation_input_tokens"]
            .as_i64()
            .map(|n| n as i32)
    );
    assert_eq!(converse_usage.cache_write_input_tokens(), Some(0));
    let ContentBlock::Text(text) = &conversed.output().unwrap().as_message().unwrap().content()[0]
    else {
        panic!("a text answer")
    };
    assert_eq!(
        text,
        &text_of(&invoke(&client, MODEL, &request).await),
        "one request model answers both APIs alike"
    );
}

#[tokio::test]
async fn a_model_that_cannot_count_tokens_says_so() {
    let double = BedrockDouble::start(0).await.unwrap();
    let client = client(&double);
    let model = "global.anthropic.no-count-tokens-v1:0";
    let request = body(json!("hello"), json!({}));

    let error = client
        .count_tokens()
        .model_id(model)
        .input(CountTokensInput::InvokeModel(
            InvokeModelTokensRequest::builder()
                .body(blob(&request))
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_validation_exception(), "{error:?}");
    assert_eq!(
        error.meta().message(),
        Some("The provided model doesn't support counting tokens.")
    );
    // It still answers.
    assert_eq!(
        text_of(&invoke(&client, model, &request).await),
        "echo: hello"
    );
    let operations: Vec<Value> = calls(&double)
        .await
        .iter()
        .map(|c| c["operation"].clone())
        .collect();
    assert_eq!(operations, vec![json!("count-tokens"), json!("invoke")]);
}
