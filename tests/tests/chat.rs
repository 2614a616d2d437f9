//! Chat completions through the real gateway, the real Bedrock SDK client and the wire-level
//! Bedrock double, over real HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{MASTER_KEY, Reply, TestGateway, models_file};
use reqwest::Method;
use serde_json::{Value, json};

fn ok_json(reply: Reply) -> (reqwest::header::HeaderMap, Value) {
    let body = reply.json();
    assert_eq!(reply.status, 200, "{body}");
    (reply.headers, body)
}

fn error_json(reply: Reply, status: u16) -> Value {
    assert_eq!(reply.status, status);
    assert_eq!(reply.headers["content-type"], "application/json");
    let body = reply.json();
    assert_eq!(body["error"]["code"], status.to_string(), "{body}");
    body
}

fn message(body: &Value) -> &Value {
    &body["choices"][0]["message"]
}

#[tokio::test]
async fn a_plain_completion_comes_back_in_openai_shape_with_its_exact_cost() {
    let gw = TestGateway::start().await;
    let (headers, body) = ok_json(
        gw.chat(json!({
            "model": "claude-haiku-4-5",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hello there"}
            ]
        }))
        .await,
    );
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(message(&body)["role"], "assistant");
    assert_eq!(message(&body)["content"], "echo: hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 3 system words + 2 user words in; 3 words out.
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 8);
    // 5 x $1.10 + 3 x $5.50 per million, exactly.
    assert_eq!(headers["x-litellm-response-cost"], "0.000022");
    assert!(headers.contains_key("x-request-id"));

    let calls = gw.bedrock_calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["operation"], "converse");
    assert_eq!(
        calls[0]["model_id"],
        "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
    );
    assert_eq!(
        calls[0]["body"]["system"],
        json!([{"text": "You are terse."}])
    );
}

#[tokio::test]
async fn consecutive_turns_of_one_role_are_merged_for_bedrock() {
    let gw = TestGateway::start().await;
    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
                {"role": "assistant", "content": "reply"},
                {"role": "developer", "content": "be kind"},
                {"role": "user", "content": "third question"}
            ]
        }))
        .await,
    );
    assert_eq!(message(&body)["content"], "echo: third question");
    let sent = &gw.bedrock_calls().await[0]["body"];
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"text": "first"}, {"text": "second"}]},
            {"role": "assistant", "content": [{"text": "reply"}]},
            {"role": "user", "content": [{"text": "third question"}]}
        ])
    );
    assert_eq!(sent["system"], json!([{"text": "be kind"}]));
}

#[tokio::test]
async fn temperature_and_top_p_are_not_sent_together_to_models_that_refuse_them() {
    let gw = TestGateway::start().await;
    for model in ["claude-sonnet-4-5", "claude-sonnet-4"] {
        ok_json(
            gw.chat(json!({
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.5,
                "top_p": 0.75,
                "max_tokens": 100
            }))
            .await,
        );
    }
    let calls = gw.bedrock_calls().await;
    assert_eq!(
        calls[0]["body"]["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 0.5})
    );
    assert_eq!(
        calls[1]["body"]["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 0.5, "topP": 0.75})
    );
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {
            "name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    ])
}

#[tokio::test]
async fn a_tool_round_trip_call_result_answer() {
    let gw = TestGateway::start().await;
    let (_, first) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "use get_weather for Paris"}],
            "tools": weather_tools(),
            "tool_choice": "auto"
        }))
        .await,
    );
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    assert!(message(&first)["content"].is_null());
    let call = &message(&first)["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"input": "use get_weather for Paris"}));

    let (_, second) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "user", "content": "use get_weather for Paris"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}
            ],
            "tools": weather_tools()
        }))
        .await,
    );
    assert_eq!(message(&second)["content"], "Tool result: 18C and sunny");
    let sent = &gw.bedrock_calls().await[1]["body"];
    assert_eq!(
        sent["messages"][1]["content"][0]["toolUse"]["toolUseId"],
        call["id"]
    );
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["toolUseId"],
        call["id"]
    );
    assert_eq!(sent["toolConfig"]["toolChoice"], Value::Null);
}

#[tokio::test]
async fn parallel_tool_calls_and_tool_choice_modes() {
    let gw = TestGateway::start().await;
    let (_, both) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "call get_weather and get_time"}],
            "tools": weather_tools()
        }))
        .await,
    );
    let calls = message(&both)["tool_calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    for (choice, expected) in [
        (json!("required"), json!({"any": {}})),
        (
            json!({"type": "function", "function": {"name": "get_time"}}),
            json!({"tool": {"name": "get_time"}}),
        ),
    ] {
        ok_json(
            gw.chat(json!({
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": "anything"}],
                "tools": weather_tools(),
                "tool_choice": choice
            }))
            .await,
        );
        let sent = gw.bedrock_calls().await.last().unwrap()["body"].clone();
        assert_eq!(sent["toolConfig"]["toolChoice"], expected);
    }
    // `none` without tool history: no tools go to Bedrock at all.
    ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "get_weather please"}],
            "tools": weather_tools(),
            "tool_choice": "none"
        }))
        .await,
    );
    assert!(
        gw.bedrock_calls().await.last().unwrap()["body"]
            .get("toolConfig")
            .is_none()
    );

    let body = error_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}],
            "tools": weather_tools(),
            "tool_choice": {"type": "function", "function": {"name": "nope"}}
        }))
        .await,
        400,
    );
    assert_eq!(body["error"]["param"], "tool_choice");
}

#[tokio::test]
async fn images_travel_as_bytes_and_remote_urls_are_refused() {
    let gw = TestGateway::start().await;
    // A 1x1 PNG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}
            ]}]
        }))
        .await,
    );
    assert!(
        message(&body)["content"]
            .as_str()
            .unwrap()
            .contains("[image: png"),
        "{body}"
    );
    let sent = &gw.bedrock_calls().await[0]["body"];
    assert_eq!(sent["messages"][0]["content"][1]["image"]["format"], "png");
    assert_eq!(
        sent["messages"][0]["content"][1]["image"]["source"]["bytes"],
        png
    );

    for (url, needle) in [
        (
            "https://example.com/cat.png",
            "remote image URLs are not supported",
        ),
        ("data:image/tiff;base64,AAAA", "image/tiff"),
        ("data:image/png;base64,@@@", "not valid base64"),
    ] {
        let body = error_json(
            gw.chat(json!({
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}}
                ]}]
            }))
            .await,
            400,
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
}

#[tokio::test]
async fn stop_sequences_and_max_tokens() {
    let gw = TestGateway::start().await;
    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "hello there friend"}],
            "stop": "friend"
        }))
        .await,
    );
    assert_eq!(message(&body)["content"], "echo: hello there ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        gw.bedrock_calls().await[0]["body"]["inferenceConfig"]["stopSequences"],
        json!(["friend"])
    );

    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "one two three four"}],
            "max_completion_tokens": 2
        }))
        .await,
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(message(&body)["content"], "echo: one");

    let body = error_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}],
            "stop": ["a", "b", "c", "d", "e"]
        }))
        .await,
        400,
    );
    assert_eq!(body["error"]["param"], "stop");
    let body = error_json(
        gw.chat(json!({
            "model": "claude-3-5-sonnet",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 100000
        }))
        .await,
        400,
    );
    assert_eq!(body["error"]["param"], "max_tokens");
}

async fn stream_body(gw: &TestGateway, body: Value) -> Vec<String> {
    gw.stream("/v1/chat/completions", MASTER_KEY, body)
        .await
        .into_iter()
        .map(|event| event.data)
        .collect()
}

fn parse_chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn streaming_sends_role_deltas_finish_then_done_and_usage_only_when_asked() {
    let gw = TestGateway::start().await;
    let request = json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "stream this to me"}],
        "stream": true
    });
    let events = stream_body(&gw, request.clone()).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parse_chunks(&events);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: stream this to me");
    assert!(chunks.len() > 4, "deltas arrive separately");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "claude-sonnet-4-5")
    );

    let mut with_usage = request;
    with_usage["stream_options"] = json!({"include_usage": true});
    let events = stream_body(&gw, with_usage).await;
    let chunks = parse_chunks(&events);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 4);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(gw.bedrock_calls().await[0]["operation"], "converse-stream");
}

#[tokio::test]
async fn streamed_tool_calls_are_indexed_by_call_not_by_content_block() {
    let gw = TestGateway::start().await;
    let events = stream_body(
        &gw,
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "call get_weather and get_time"}],
            "tools": weather_tools(),
            "reasoning_effort": "low",
            "stream": true
        }),
    )
    .await;
    let chunks = parse_chunks(&events);
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert!(reasoning.starts_with("thinking about"), "{reasoning}");
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    // Reasoning is content block 0, so the calls are blocks 1 and 2, but calls 0 and 1.
    let starts: Vec<(u64, &str)> = deltas
        .iter()
        .filter(|d| d.get("id").is_some())
        .map(|d| {
            (
                d["index"].as_u64().unwrap(),
                d["function"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(starts, [(0, "get_weather"), (1, "get_time")]);
    for index in [0u64, 1] {
        let arguments: String = deltas
            .iter()
            .filter(|d| d["index"] == index)
            .filter_map(|d| d["function"]["arguments"].as_str())
            .collect();
        let parsed: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(parsed["input"], "call get_weather and get_time");
    }
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn a_mid_stream_failure_ends_with_an_error_event_not_a_silent_cut() {
    let gw = TestGateway::start().await;
    gw.script(json!([{"break_after": 3}])).await;
    let events = stream_body(
        &gw,
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "a b c d e f"}], "stream": true}),
    )
    .await;
    assert_ne!(events.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "502", "{last}");
    assert!(events.iter().all(|e| e != "[DONE]"));
}

#[tokio::test]
async fn bedrock_errors_map_to_the_documented_statuses() {
    let gw = TestGateway::start().await;
    let cases = [
        (400, "ValidationException", 400),
        (403, "AccessDeniedException", 502),
        (404, "ResourceNotFoundException", 502),
        (429, "ThrottlingException", 429),
        (429, "ModelNotReadyException", 429),
        (408, "ModelTimeoutException", 504),
        (424, "ModelErrorException", 502),
        (503, "ServiceUnavailableException", 503),
        (500, "InternalServerException", 502),
    ];
    for (status, kind, expected) in cases {
        // Enough failures for every attempt the gateway makes.
        let failure = json!({"error": {"status": status, "type": kind}});
        gw.script(json!([failure, failure, failure])).await;
        let before = gw.bedrock_calls().await.len();
        let response = gw
            .chat(json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        let retry_after = response.headers.get("retry-after").cloned();
        let body = error_json(response, expected);
        assert!(!body.to_string().contains("arn:aws"), "{body}");
        let attempts = gw.bedrock_calls().await.len() - before;
        let transient = matches!(status, 429 | 500 | 503);
        assert_eq!(attempts, if transient { 3 } else { 1 }, "{kind}");
        if expected == 429 {
            assert_eq!(retry_after.unwrap(), "2", "{kind}");
            assert_eq!(body["error"]["type"], "rate_limit_exceeded");
        }
        // Whatever was left in the script is used up now.
        gw.script(json!([])).await;
        for _ in attempts..3 {
            gw.chat(json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "drain"}]})).await;
        }
    }
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let gw = TestGateway::start().await;
    gw.script(json!([{"throttle": true}, {"throttle": true}]))
        .await;
    let (_, body) = ok_json(
        gw.chat(json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "patience"}]}))
            .await,
    );
    assert_eq!(message(&body)["content"], "echo: patience");
    assert_eq!(gw.bedrock_calls().await.len(), 3);
}

#[tokio::test]
async fn a_throttled_model_falls_back_to_the_next_in_the_catalog() {
    let path = models_file(
        r#"
[[model]]
alias = "primary"
bedrock_model_id = "eu.anthropic.double-always-throttle"
max_output_tokens = 1000
context_window = 200000
prices = { input = "3", output = "15", cache_read = "0.3", cache_write = "3.75" }
fallbacks = ["backup"]

[[model]]
alias = "backup"
bedrock_model_id = "global.anthropic.double-backup"
max_output_tokens = 1000
context_window = 200000
prices = { input = "1", output = "5", cache_read = "0.1", cache_write = "1.25" }
"#,
    );
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let (headers, body) = ok_json(
        gw.chat(
            json!({"model": "primary", "messages": [{"role": "user", "content": "fall back"}]}),
        )
        .await,
    );
    assert_eq!(body["model"], "primary");
    assert_eq!(headers["x-llmlite-served-model"], "backup");
    // Priced at the model that answered: 2 in x $1 + 3 out x $5 per million.
    assert_eq!(headers["x-litellm-response-cost"], "0.000017");
    let models: Vec<String> = gw
        .bedrock_calls()
        .await
        .iter()
        .map(|c| c["model_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        models,
        [
            "eu.anthropic.double-always-throttle",
            "eu.anthropic.double-always-throttle",
            "eu.anthropic.double-always-throttle",
            "global.anthropic.double-backup"
        ]
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn response_format_reasoning_and_prompt_caching() {
    let gw = TestGateway::start().await;
    let schema = json!({"type": "object", "properties": {"input": {"type": "string"}}});
    // Claude Sonnet 4 has no native structured output: the forced-tool emulation answers.
    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4",
            "messages": [{"role": "user", "content": "give me json"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        }))
        .await,
    );
    let content: Value = serde_json::from_str(message(&body)["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"input": "give me json"}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(message(&body).get("tool_calls").is_none());

    ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "json please"}],
            "response_format": {"type": "json_object"}
        }))
        .await,
    );
    let sent = gw.bedrock_calls().await[1]["body"].clone();
    assert!(
        sent["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains("JSON object")
    );

    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "think hard"}],
            "reasoning_effort": "medium",
            "temperature": 0.2
        }))
        .await,
    );
    assert_eq!(
        message(&body)["reasoning_content"],
        "thinking about: think hard"
    );
    let sent = gw.bedrock_calls().await[2]["body"].clone();
    assert_eq!(
        sent["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 4096}})
    );
    // No max_tokens: the default (4,096) is left for the answer, on top of the thinking.
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 8192);
    assert!(sent["inferenceConfig"].get("temperature").is_none());

    let (_, body) = ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "and the question"}
            ]}]
        }))
        .await,
    );
    let sent = gw.bedrock_calls().await[3]["body"].clone();
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"cachePoint": {"type": "default"}})
    );
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 4);
    assert_eq!(body["usage"]["prompt_tokens"], 7);
}

#[tokio::test]
async fn bad_requests_are_refused_before_bedrock_with_clear_errors() {
    let gw = TestGateway::start().await;
    let cases = [
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model_not_found",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": []}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "assistant", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "function", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
    ];
    for (request, status, kind) in cases {
        let body = error_json(gw.chat(request.clone()).await, status);
        assert_eq!(body["error"]["type"], kind, "{request}");
    }
    assert!(
        gw.bedrock_calls().await.is_empty(),
        "nothing reached Bedrock"
    );

    // Ignored fields do not stop a request.
    ok_json(
        gw.chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}],
            "frequency_penalty": 0.5, "presence_penalty": 0.1, "seed": 7, "user": "alice",
            "metadata": {"team": "blue"}, "parallel_tool_calls": true, "store": false, "n": 1
        }))
        .await,
    );
}

#[tokio::test]
async fn the_chat_routes_need_a_key() {
    let gw = TestGateway::start().await;
    let request =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]});
    let missing = gw
        .request(Method::POST, "/v1/chat/completions", None, Some(&request))
        .await;
    assert_eq!(error_json(missing, 401)["error"]["type"], "missing_api_key");
    let wrong = gw
        .post(
            "/chat/completions",
            "sk-wrong-key-000000000000",
            request.clone(),
        )
        .await;
    let body = error_json(wrong, 401);
    assert_eq!(body["error"]["type"], "token_not_found_in_db");
    assert!(!body.to_string().contains("sk-wrong"));
    let via_header = gw
        .client
        .post(gw.url("/chat/completions"))
        .header("x-api-key", MASTER_KEY)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(via_header.status(), 200);
}

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let gw = TestGateway::start().await;
    for path in ["/v1/models", "/models"] {
        let (_, body) = ok_json(gw.get(path, MASTER_KEY).await);
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        for alias in [
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-3-5-sonnet",
            "claude-3-opus",
        ] {
            assert!(ids.contains(&alias), "{alias} in {path}");
        }
        assert!(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["object"] == "model")
        );
    }
    let one = gw.get("/models/claude-3-opus", MASTER_KEY).await;
    assert_eq!(ok_json(one).1["id"], "claude-3-opus");
    let none = gw.get("/v1/models/nope", MASTER_KEY).await;
    assert_eq!(error_json(none, 404)["error"]["type"], "model_not_found");
    let anonymous = gw.request(Method::GET, "/v1/models", None, None).await;
    assert_eq!(anonymous.status, 401);
}

/// The `server-timing` value's stages, by name.
fn stages(headers: &reqwest::header::HeaderMap) -> std::collections::BTreeMap<String, f64> {
    let value = headers["server-timing"].to_str().unwrap();
    value
        .split(',')
        .map(|part| {
            let (name, dur) = part.trim().split_once(";dur=").unwrap();
            (name.to_owned(), dur.parse::<f64>().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn answers_carry_the_gateways_stages_in_server_timing_and_the_audit_record() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"rpm_limit": 100})).await;
    // The double takes 30 ms to answer: the upstream stage holds it, the gateway's own do not.
    gw.script(json!([{"latency_ms": 30}])).await;
    let reply = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "time me"}]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let timing = stages(&reply.headers);
    assert_eq!(
        timing.keys().map(String::as_str).collect::<Vec<_>>(),
        ["admit", "parse", "pii", "total", "upstream"]
    );
    assert!(timing["upstream"] >= 30.0, "{timing:?}");
    let before_upstream = timing["parse"] + timing["admit"] + timing["pii"];
    assert!(
        timing["total"] >= timing["upstream"] + before_upstream,
        "{timing:?}"
    );
    assert!(
        timing["admit"] > 0.0,
        "admission is a database round trip: {timing:?}"
    );
    let record = gw.audit_record(&reply.request_id()).await;
    // The header rounds to microseconds.
    let recorded = record["stages"]["admit_ms"].as_f64().unwrap();
    assert!((recorded - timing["admit"]).abs() < 0.001, "{record}");

    // A stream's headers leave at its first event: upstream is the time to it.
    gw.script(json!([{"latency_ms": 20}])).await;
    let reply = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 8, "stream": true,
                   "messages": [{"role": "user", "content": "time my stream"}]}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let timing = stages(&reply.headers);
    assert!(
        timing["upstream"] >= 20.0 && timing["total"] >= timing["upstream"],
        "{timing:?}"
    );
}
