//! Native structured output (issue #28): on a model the catalog flags for it, a `json_schema`
//! response format (chat's `response_format`, the Responses API's `text.format`) goes to
//! Bedrock as Converse's `outputConfig.textFormat`, also beside the caller's own tools and
//! reasoning, where the forced-tool emulation cannot go, and `strict: true` on a function tool
//! is passed on; a model without the flag keeps the emulation and plain tools. The gateway over HTTP, the wire-level Bedrock double (which answers a structured
//! request with an instance of its schema).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{TestGateway, models_file};
use serde_json::{Value, json};

/// Two aliases of one model: `native` flagged for structured output, `emulated` not.
fn catalog() -> String {
    ["native", "emulated"]
        .iter()
        .map(|alias| {
            format!(
                r#"
[[model]]
alias = "{alias}"
bedrock_model_id = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = {{ input = "3.30", output = "16.50", cache_read = "0.33", cache_write = "4.125" }}
temperature_and_top_p = false
reasoning = true
structured_output = {}
"#,
                *alias == "native"
            )
        })
        .collect()
}

fn schema() -> Value {
    json!({"type": "object", "additionalProperties": false,
           "required": ["city", "population", "districts"],
           "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                          "districts": {"type": "array", "items": {"type": "string"}}}})
}

/// The answer conforms to [`schema`].
fn conforms(answer: &Value) -> bool {
    answer["city"].is_string()
        && answer["population"].is_i64()
        && answer["districts"]
            .as_array()
            .is_some_and(|d| !d.is_empty() && d.iter().all(Value::is_string))
        && answer.as_object().is_some_and(|o| o.len() == 3)
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "weather", "description": "The weather",
           "strict": true,
           "parameters": {"type": "object", "additionalProperties": false,
                          "required": ["city"],
                          "properties": {"city": {"type": "string"}}}}})
}

#[tokio::test]
async fn a_json_schema_beside_tools_and_reasoning_uses_native_structured_output() {
    let path = models_file(&catalog());
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let request = |model: &str| {
        json!({"model": model, "max_tokens": 4096, "reasoning_effort": "low",
               "tools": [weather_tool()],
               "messages": [{"role": "user", "content": "Describe Leeds"}],
               "response_format": {"type": "json_schema",
                                   "json_schema": {"name": "city", "schema": schema()}}})
    };

    let reply = gw.chat(request("native")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let answer: Value = serde_json::from_str(content).unwrap();
    assert!(conforms(&answer), "{answer}");
    let calls = gw.bedrock_calls().await;
    let sent = &calls.last().unwrap()["body"];
    let format = &sent["outputConfig"]["textFormat"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["structure"]["jsonSchema"]["name"], "city");
    let schema_sent: Value = serde_json::from_str(
        format["structure"]["jsonSchema"]["schema"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(schema_sent, schema());
    // The caller's tool is offered as it is, with no forced answer tool beside it.
    let tools: Vec<&str> = sent["toolConfig"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["toolSpec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["weather"]);
    assert!(sent["toolConfig"]["toolChoice"].get("tool").is_none());
    // `strict: true` on the caller's tool is passed on.
    assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["strict"], true);
    assert_eq!(
        sent["additionalModelRequestFields"]["thinking"]["type"],
        "enabled"
    );

    // Streamed, the text deltas make up the same JSON.
    let mut streamed = request("native");
    streamed["stream"] = json!(true);
    let text: String = gw
        .stream("/v1/chat/completions", llmlite_tests::MASTER_KEY, streamed)
        .await
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(conforms(&serde_json::from_str(&text).unwrap()), "{text}");

    // A model the catalog does not flag keeps the emulation: no outputConfig is sent, and the
    // tool goes without `strict`.
    let reply = gw.chat(request("emulated")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let calls = gw.bedrock_calls().await;
    let sent = &calls.last().unwrap()["body"];
    assert!(sent.get("outputConfig").is_none());
    assert!(
        sent["toolConfig"]["tools"][0]["toolSpec"]
            .get("strict")
            .is_none()
    );
}

#[tokio::test]
async fn the_responses_apis_text_format_uses_it_too() {
    let path = models_file(&catalog());
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let reply = gw
        .post(
            "/v1/responses",
            llmlite_tests::MASTER_KEY,
            json!({"model": "native", "input": "Describe Leeds",
                   "text": {"format": {"type": "json_schema", "name": "city",
                                       "schema": schema()}}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let text = body["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .find_map(|part| part["text"].as_str().map(str::to_owned))
        .unwrap();
    assert!(conforms(&serde_json::from_str(&text).unwrap()), "{text}");
    let calls = gw.bedrock_calls().await;
    assert_eq!(
        calls.last().unwrap()["body"]["outputConfig"]["textFormat"]["type"],
        "json_schema"
    );
}

#[tokio::test]
async fn a_responses_tool_whose_strict_is_not_a_boolean_is_refused_naming_it() {
    let gw = TestGateway::start().await;
    let reply = gw
        .post(
            "/v1/responses",
            llmlite_tests::MASTER_KEY,
            json!({"model": "claude-haiku-4-5", "input": "hello",
                   "tools": [{"type": "function", "name": "weather", "strict": "yes",
                              "parameters": {"type": "object"}}]}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = &reply.json()["error"];
    assert_eq!(error["param"], "tools[0].strict", "{error}");
    assert!(
        gw.bedrock_calls().await.is_empty(),
        "refused before any call"
    );
}

#[tokio::test]
async fn a_schema_that_is_not_an_object_is_refused_before_anything_is_taken() {
    let path = models_file(&catalog());
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let reply = gw
        .chat(json!({"model": "native", "messages": [{"role": "user", "content": "hi"}],
                     "response_format": {"type": "json_schema",
                                         "json_schema": {"name": "x", "schema": "\u{0}not a schema"}}}))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json()["error"]["param"], "response_format");
    assert!(!reply.text.contains('\u{0}'), "the value is not echoed");
    assert!(gw.bedrock_calls().await.is_empty());
    assert!(gw.spend_rows().await.is_empty(), "nothing taken");
}

/// Anthropic's Messages API: `output_config.format` (and the beta's `output_format`) reaches
/// Bedrock as InvokeModel's `output_config.format` on a flagged model, beside a tool and
/// thinking, and the answer is an instance of the schema; on a model without native structured
/// output, or with a schema that is not an object, it is a 400 before anything is taken.
#[tokio::test]
async fn messages_use_native_structured_output_on_flagged_models() {
    let path = models_file(&catalog());
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let request = |model: &str, format: Value| {
        let mut body = json!({"model": model, "max_tokens": 4096,
               "thinking": {"type": "enabled", "budget_tokens": 1024},
               "tools": [{"name": "weather", "description": "The weather",
                          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
               "messages": [{"role": "user", "content": "Describe Leeds"}]});
        let format = json!({"type": "json_schema", "schema": format});
        body["output_config"] = json!({"format": format});
        body
    };

    let reply = gw
        .post(
            "/v1/messages",
            llmlite_tests::MASTER_KEY,
            request("native", schema()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let message = reply.json();
    let text = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "text")
        .and_then(|b| b["text"].as_str())
        .unwrap()
        .to_owned();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(conforms(&answer), "{answer}");
    let calls = gw.bedrock_calls().await;
    let sent = &calls.last().unwrap()["body"];
    assert_eq!(sent["output_config"]["format"]["schema"], schema());
    assert!(sent.get("output_format").is_none());

    // The beta's name is taken too, and sent under Bedrock's.
    let mut beta = request("native", schema());
    let format = beta["output_config"]["format"].clone();
    beta.as_object_mut().unwrap().remove("output_config");
    beta["output_format"] = format;
    let reply = gw
        .post("/v1/messages", llmlite_tests::MASTER_KEY, beta)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let calls = gw.bedrock_calls().await;
    assert_eq!(
        calls.last().unwrap()["body"]["output_config"]["format"]["schema"],
        schema()
    );

    // Refused before Bedrock: a model without it, a schema that is not an object (with a NUL
    // in it, not echoed), and an output_config field llmlite does not know.
    let before = gw.bedrock_calls().await.len();
    for (body, param) in [
        (request("emulated", schema()), "output_format"),
        (request("native", json!("a\u{0}b")), "output_config.format"),
        (
            {
                let mut body = request("native", schema());
                body["output_config"]["effort"] = json!("high");
                body
            },
            "output_config",
        ),
    ] {
        let reply = gw
            .post("/v1/messages", llmlite_tests::MASTER_KEY, body)
            .await;
        assert_eq!(reply.status, 400, "{param}: {}", reply.text);
        assert_eq!(reply.json()["type"], "error");
        assert!(!reply.text.contains('\u{0}'));
    }
    assert_eq!(gw.bedrock_calls().await.len(), before);
}

/// The built-in catalog's flags, as checked against the Bedrock user guide (docs/models.md):
/// Sonnet, Haiku and Opus 4.5 use Bedrock's native structured output; Sonnet 4.6 and the older
/// models the forced-tool emulation.
#[tokio::test]
async fn the_builtin_catalog_uses_native_structured_output_where_bedrock_lists_it() {
    let gw = TestGateway::start().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"], "additionalProperties": false});
    for (model, native) in [
        ("claude-sonnet-4-5", true),
        ("claude-haiku-4-5", true),
        ("claude-opus-4-5", true),
        ("claude-sonnet-4-6", false),
        ("claude-sonnet-4", false),
    ] {
        let reply = gw
            .chat(
                json!({"model": model, "messages": [{"role": "user", "content": "where?"}],
                         "response_format": {"type": "json_schema",
                                             "json_schema": {"name": "place", "schema": schema}}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text);
        let content = reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        let answer: Value = serde_json::from_str(&content).unwrap();
        // Native: an instance of the schema; emulated: the double's tool input, JSON too.
        assert!(
            answer.is_object() && (!native || answer["city"].is_string()),
            "{model}: {content}"
        );
        let sent = gw.bedrock_calls().await.pop().unwrap()["body"].clone();
        assert_eq!(
            sent["outputConfig"]["textFormat"]["type"] == "json_schema",
            native,
            "{model}: {sent}"
        );
        assert_eq!(
            sent["toolConfig"]["toolChoice"] == json!({"tool": {"name": "json_response"}}),
            !native,
            "{model}: {sent}"
        );
    }
}
