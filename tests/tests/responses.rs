//! OpenAI's Responses API (`POST /v1/responses`, stateless) through the real gateway, the real
//! Bedrock SDK client and the wire-level Bedrock double, over real HTTP, with real PostgreSQL: the
//! chat path's keys, limits, budgets, settlement and audit, in Responses' shapes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{Event, KeyBy, MASTER_KEY, Reply, TestGateway};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const RESPONSES: &str = "/v1/responses";

async fn ok(gw: &TestGateway, body: Value) -> Value {
    let reply = gw.post(RESPONSES, MASTER_KEY, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

async fn streamed(gw: &TestGateway, body: Value) -> Vec<Value> {
    let events: Vec<Value> = gw
        .stream(RESPONSES, MASTER_KEY, body)
        .await
        .iter()
        .map(Event::typed)
        .collect();
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n as u64, "{event}");
    }
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

const WEATHER: &str = "get_weather";

fn tools() -> Value {
    json!([
        {"type": "function", "name": WEATHER, "description": "Weather for a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}},
    ])
}

#[tokio::test]
async fn a_response_comes_back_in_responses_shape_and_settles_as_aresponses() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "codex", "max_budget": 5}))
        .await;
    let Reply {
        status,
        headers,
        text,
    } = gw
        .post(
            RESPONSES,
            &key,
            json!({"model": "claude-haiku-4-5", "instructions": "You are terse.",
                   "input": "hello there", "max_output_tokens": 50, "metadata": {"run": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "claude-haiku-4-5");
    let id = body["id"].as_str().unwrap();
    let request_id = headers["x-request-id"].to_str().unwrap().replace('-', "");
    assert_eq!(id, format!("resp_{request_id}"));
    assert!(body["created_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body["instructions"], "You are terse.");
    assert_eq!(body["max_output_tokens"], 50);
    assert_eq!(body["metadata"], json!({"run": "1"}));
    assert_eq!(body["store"], false);
    let output = body["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "{body}");
    assert_eq!(output[0]["type"], "message");
    assert_eq!(output[0]["role"], "assistant");
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(
        output[0]["content"],
        json!([{"type": "output_text", "text": "echo: hello there", "annotations": [], "logprobs": []}])
    );
    // 3 instruction words + 2 input words in; 3 words out; exactly chat's cost.
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(body["usage"]["output_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 8);
    assert_eq!(body["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(headers["x-litellm-response-cost"], "0.000022");
    let calls = gw.bedrock_calls().await;
    assert_eq!(calls[0]["operation"], "converse");
    assert_eq!(
        calls[0]["body"]["system"],
        json!([{"text": "You are terse."}])
    );
    assert_eq!(calls[0]["body"]["inferenceConfig"]["maxTokens"], 50);

    // Streamed, at the root path too.
    let events: Vec<Value> = gw
        .stream(
            "/responses",
            &key,
            json!({"model": "claude-haiku-4-5", "input": "stream me a reply", "stream": true}),
        )
        .await
        .iter()
        .map(Event::typed)
        .collect();
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let id = events[0]["response"]["id"].as_str().unwrap();
    assert_eq!(events[0]["response"]["status"], "in_progress");
    let done = &events[12]["response"];
    assert_eq!(done["id"], id);
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "echo: stream me a reply"
    );
    assert_eq!(events[9]["text"], "echo: stream me a reply");
    assert_eq!(done["usage"]["output_tokens"], 5);
    assert_eq!(events[4]["item_id"], done["output"][0]["id"]);

    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(
            (row.call_type.as_str(), row.status.as_str()),
            ("aresponses", "success")
        );
    }
    assert_eq!(rows[0].spend, "0.000022".parse::<Decimal>().unwrap());
    let key_spend = gw.key_spend(KeyBy::Alias("codex")).await;
    assert_eq!(key_spend, rows[0].spend + rows[1].spend);

    // The audit record names the route.
    let record = gw
        .audit_record(headers["x-request-id"].to_str().unwrap())
        .await;
    assert_eq!(record["call_type"], "aresponses", "{record}");
    assert_eq!(record["status"], "success", "{record}");
    assert!(!record.to_string().contains("hello there"));
}

#[tokio::test]
async fn a_two_turn_function_calling_loop_works_even_when_the_follow_up_offers_no_tools() {
    let gw = TestGateway::start().await;
    let question = json!({"role": "user", "content": [{"type": "input_text", "text": "call get_weather and get_time"}]});
    let first = ok(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": [question], "tools": tools()}),
    )
    .await;
    let output = first["output"].as_array().unwrap().clone();
    let calls: Vec<&Value> = output
        .iter()
        .filter(|i| i["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 2, "{first}");
    assert_eq!(calls[0]["name"], WEATHER);
    assert_eq!(calls[1]["name"], "get_time");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(calls[0]["status"], "completed");
    let arguments: Value = serde_json::from_str(calls[0]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["input"], "call get_weather and get_time");

    // The next turn replays the output items as the SDKs do, and adds the results.
    let mut input = vec![question.clone()];
    input.extend(output.iter().cloned());
    input.push(
        json!({"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "18C"}),
    );
    input.push(
        json!({"type": "function_call_output", "call_id": calls[1]["call_id"], "output": "noon"}),
    );
    let second = ok(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": input, "tools": tools()}),
    )
    .await;
    assert_eq!(
        second["output"][0]["content"][0]["text"], "Tool result: 18C; noon",
        "{second}"
    );

    // Without `tools`, Converse still needs a toolConfig for the history's tool blocks (the
    // double refuses it otherwise, as Bedrock does): the history's tools are declared.
    let third = ok(&gw, json!({"model": "claude-sonnet-4-5", "input": input})).await;
    assert_eq!(
        third["output"][0]["content"][0]["text"], "Tool result: 18C; noon",
        "{third}"
    );
    let calls = gw.bedrock_calls().await;
    let declared: Vec<&str> = calls[2]["body"]["toolConfig"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["toolSpec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(declared, [WEATHER, "get_time"]);
    assert_eq!(
        calls[2]["body"]["messages"][1]["content"][0]["toolUse"]["name"],
        WEATHER
    );

    // Streamed, the calls come as function-call items with argument deltas.
    let events = streamed(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": [question], "tools": tools(), "stream": true}),
    )
    .await;
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_item.added")
        .map(|e| &e["item"])
        .collect();
    assert_eq!(added.len(), 2, "{events:?}");
    assert_eq!(added[0]["type"], "function_call");
    assert_eq!(added[0]["name"], WEATHER);
    let arguments: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta" && e["output_index"] == 0)
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.done")
        .collect();
    assert_eq!(done[0]["arguments"], arguments.as_str());
    serde_json::from_str::<Value>(&arguments).unwrap();
    let completed = events.last().unwrap();
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(
        completed["response"]["output"][1]["call_id"],
        added[1]["call_id"]
    );
}

#[tokio::test]
async fn a_json_schema_text_format_answers_with_the_json_alone() {
    let gw = TestGateway::start().await;
    let schema = json!({"type": "object", "properties": {"input": {"type": "string"}},
                        "required": ["input"], "additionalProperties": false});
    let body = ok(
        &gw,
        json!({"model": "claude-sonnet-4", "input": "give me json",
               "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": true}}}),
    )
    .await;
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    let answer: Value = serde_json::from_str(text).unwrap();
    assert_eq!(answer, json!({"input": "give me json"}));
    assert_eq!(body["status"], "completed");
    assert_eq!(body["text"]["format"]["name"], "answer");
    let calls = gw.bedrock_calls().await;
    assert_eq!(
        calls[0]["body"]["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "json_response"}})
    );
}

#[tokio::test]
async fn a_mid_stream_failure_ends_with_response_failed_and_a_cut_answer_is_incomplete() {
    let gw = TestGateway::start().await;
    gw.script(json!([{"break_after": 3}])).await;
    let events = streamed(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": "a b c d e f", "stream": true}),
    )
    .await;
    let kinds = types(&events);
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    let failed = &events.last().unwrap()["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "upstream_error");
    assert_eq!(failed["output"][0]["status"], "incomplete");
    assert!(!kinds.contains(&"response.completed"));

    // Cut at max_output_tokens: `incomplete`, with the reason.
    let body = ok(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": "one two three four five six", "max_output_tokens": 3}),
    )
    .await;
    assert_eq!(body["status"], "incomplete", "{body}");
    assert_eq!(
        body["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    let events = streamed(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": "one two three four five six",
               "max_output_tokens": 3, "stream": true}),
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "response.incomplete");

    let rows = gw.spend_rows().await;
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["upstream_cut", "success", "success"]);
}

#[tokio::test]
async fn bad_input_gets_openai_shaped_400s_naming_the_field_and_nothing_is_spent() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "careful", "max_budget": 1, "rpm_limit": 100}))
        .await;
    let model = "claude-sonnet-4-5";
    let call = |id: &str| json!({"type": "function_call", "call_id": id, "name": WEATHER, "arguments": "{}"});
    let cases = [
        (
            json!({"model": model, "input": "x", "previous_response_id": "resp_123"}),
            "previous_response_id",
        ),
        (
            json!({"model": model, "input": "x", "store": true}),
            "store",
        ),
        (
            json!({"model": model, "input": "x", "store": "yes"}),
            "store",
        ),
        (
            json!({"model": model, "input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": model, "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": model, "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": model, "input": "x", "tools": [tools()[0].clone(), {"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
            "tools[1].type",
        ),
        (
            json!({"model": model, "input": "x", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}),
            "tools[0].type",
        ),
        (
            json!({"model": model, "input": "x", "tools": [{"type": "computer_use_preview"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": model, "input": "x", "tool_choice": {"type": "web_search_preview"}}),
            "tool_choice",
        ),
        (json!({"model": model, "input": ""}), "input"),
        (json!({"model": model, "input": []}), "input"),
        (json!({"model": model}), "input"),
        (json!({"model": model, "input": 42}), "input"),
        (json!({"model": model, "input": "nul \u{0} byte"}), "input"),
        (
            json!({"model": model, "input": [{"role": "user", "content": [{"type": "input_text", "text": "a\u{0}"}]}]}),
            "input[0].content[0].text",
        ),
        (
            json!({"model": model, "input": "x", "instructions": "be\u{0}"}),
            "instructions",
        ),
        (
            json!({"model": model, "input": "x", "user": "al\u{0}ice"}),
            "user",
        ),
        (
            json!({"model": model, "input": "x", "metadata": {"k": "v\u{0}"}}),
            "metadata",
        ),
        (
            json!({"model": model, "input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": model, "input": [{"role": "user", "content": 5}]}),
            "input[0].content",
        ),
        (
            json!({"model": model, "input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input[0]",
        ),
        (
            json!({"model": model, "input": [{"type": "web_search_call", "id": "ws_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": model, "input": [{"role": "user", "content": "x"}, call("bad id!")]}),
            "input[1].call_id",
        ),
        (
            json!({"model": model, "input": [{"role": "user", "content": "x"}, {"type": "function_call", "call_id": "c1", "name": WEATHER, "arguments": "{not json"}]}),
            "input[1].arguments",
        ),
        (
            json!({"model": model, "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": model, "input": "x", "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": model, "input": "x", "temperature": 1.5}),
            "temperature",
        ),
        (
            json!({"model": model, "input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            json!({"model": model, "input": "x", "max_output_tokens": "many"}),
            "max_output_tokens",
        ),
        (
            json!({"model": model, "input": "x", "max_output_tokens": 10_000_000}),
            "max_output_tokens",
        ),
        (
            json!({"model": model, "input": "x", "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": model, "input": "x", "reasoning": {"effort": "extreme"}}),
            "reasoning.effort",
        ),
        (
            json!({"model": model, "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}),
            "text.format.schema",
        ),
        (
            json!({"model": model, "input": "x", "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"model": model, "input": [{"role": "assistant", "content": "first"}]}),
            "input",
        ),
        (json!({"input": "x"}), "model"),
    ];
    for (body, param) in &cases {
        let Reply {
            status,
            headers,
            text,
        } = gw.post(RESPONSES, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert_eq!(headers["content-type"], "application/json");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            error["error"]["type"], "invalid_request_error",
            "{body}: {text}"
        );
        assert_eq!(error["error"]["param"], *param, "{body}: {text}");
        assert_eq!(error["error"]["code"], "400", "{text}");
        assert!(!text.contains('\u{0}'));
    }
    let error: Value = gw.post(RESPONSES, &key, cases[0].0.clone()).await.json();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("send the whole conversation"), "{message}");

    // Not JSON, and not an object.
    let response = Reply::read(
        gw.client
            .post(gw.url(RESPONSES))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(gw.post(RESPONSES, &key, json!([1])).await.status, 400);
    // No key: 401 before the body is read.
    let response = gw
        .request(
            Method::POST,
            RESPONSES,
            None,
            Some(&json!({"model": model, "input": "x"})),
        )
        .await;
    assert_eq!(response.status, 401);

    // Nothing reached Bedrock, nothing was spent, no request was counted.
    assert!(gw.bedrock_calls().await.is_empty());
    assert!(gw.spend_rows().await.is_empty());
    let (spend, buckets): (Decimal, i64) = sqlx::query_as(
        "SELECT (SELECT spend FROM litellm_verificationtoken WHERE key_alias = 'careful'),
                (SELECT count(*) FROM llmlite_rate_bucket)",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(spend, Decimal::ZERO);
    assert_eq!(buckets, 0);
}

#[tokio::test]
async fn budgets_and_rate_limits_hold_on_the_responses_route() {
    let gw = TestGateway::start().await;
    // Two requests a minute.
    let limited = gw.mint_raw_key(json!({"rpm_limit": 2})).await;
    for n in 0..2 {
        let Reply { status, text, .. } = gw
            .post(
                RESPONSES,
                &limited,
                json!({"model": "claude-haiku-4-5", "input": format!("turn {n}")}),
            )
            .await;
        assert_eq!(status, 200, "{text}");
    }
    let Reply {
        status,
        headers,
        text,
    } = gw
        .post(
            RESPONSES,
            &limited,
            json!({"model": "claude-haiku-4-5", "input": "one more"}),
        )
        .await;
    assert_eq!(status, 429, "{text}");
    assert!(headers.contains_key("retry-after"));
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_exceeded");

    // Tokens a minute: a prompt of about 500 tokens takes the whole bucket of 50 (and its
    // settlement more), so the next request waits.
    let tpm = gw.mint_raw_key(json!({"tpm_limit": 50})).await;
    let big = json!({"model": "claude-haiku-4-5", "input": "word ".repeat(400)});
    assert_eq!(gw.post(RESPONSES, &tpm, big.clone()).await.status, 200);
    gw.settled().await;
    let Reply {
        status,
        headers,
        text,
    } = gw.post(RESPONSES, &tpm, big).await;
    assert_eq!(status, 429, "{text}");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "50");

    // A budget the worst case does not fit: 403 before Bedrock, nothing spent.
    let poor = gw
        .mint_raw_key(json!({"key_alias": "poor", "max_budget": 0.0001}))
        .await;
    let Reply { status, text, .. } = gw
        .post(
            RESPONSES,
            &poor,
            json!({"model": "claude-sonnet-4-5", "input": "hello", "max_output_tokens": 1000}),
        )
        .await;
    assert_eq!(status, 403, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "budget_exceeded");
    assert_eq!(gw.bedrock_calls().await.len(), 3);

    // Spend never passes the budget under concurrency.
    let budget = gw
        .mint_raw_key(json!({"key_alias": "tight", "max_budget": 0.001}))
        .await;
    let requests = (0..12).map(|n| {
        let gw = &gw;
        let budget = budget.clone();
        async move {
            gw.post(
                RESPONSES,
                &budget,
                json!({"model": "claude-haiku-4-5", "input": format!("concurrent {n}"),
                       "max_output_tokens": 100, "stream": n % 2 == 0}),
            )
            .await
            .status
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    assert!(statuses.contains(&403), "{statuses:?}");
    gw.settled().await;
    let (spend, max_budget, rows): (Decimal, Decimal, i64) = sqlx::query_as(
        "SELECT k.spend, k.max_budget,
                (SELECT count(*) FROM litellm_spend s WHERE s.api_key = k.token AND s.status = 'success')
           FROM litellm_verificationtoken k WHERE k.key_alias = 'tight'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert!(spend <= max_budget, "{spend} > {max_budget}");
    assert_eq!(rows, statuses.iter().filter(|s| **s == 200).count() as i64);
    let row_total: Decimal = sqlx::query_scalar(
        "SELECT coalesce(sum(s.spend), 0) FROM litellm_spend s
           JOIN litellm_verificationtoken k ON s.api_key = k.token WHERE k.key_alias = 'tight'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(row_total, spend);
}

#[tokio::test]
async fn pii_in_a_function_call_output_is_blocked_before_bedrock() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    let Reply { status, text, .. } = gw.post(RESPONSES, &key,
        json!({"model": "claude-sonnet-4-5", "input": [
            {"role": "user", "content": "look it up"},
            {"type": "function_call", "call_id": "call_1", "name": WEATHER, "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "card 4539 1488 0343 6467"},
        ], "tools": tools()}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "pii_blocked");
    assert!(!text.contains("4539"));
    assert!(gw.bedrock_calls().await.is_empty());
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].call_type.as_str(), rows[0].status.as_str()),
        ("aresponses", "failure")
    );
    assert_eq!(rows[0].spend, Decimal::ZERO);
}

#[tokio::test]
async fn reasoning_effort_thinks_and_the_thinking_comes_back_as_a_reasoning_summary() {
    let gw = TestGateway::start().await;
    let body = ok(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": "think hard", "reasoning": {"effort": "medium"}}),
    )
    .await;
    let output = body["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning", "{body}");
    assert_eq!(
        output[0]["summary"],
        json!([{"type": "summary_text", "text": "thinking about: think hard"}])
    );
    assert_eq!(output[1]["type"], "message");
    assert_eq!(body["reasoning"]["effort"], "medium");
    let sent = gw.bedrock_calls().await[0]["body"].clone();
    assert_eq!(
        sent["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 4096}})
    );

    // Streamed: a reasoning item with summary deltas, closed before the message opens; and a
    // replayed reasoning item in the next turn's input is left out of what Bedrock is sent.
    let events = streamed(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": "think hard", "stream": true,
               "reasoning": {"effort": "low"}}),
    )
    .await;
    let kinds = types(&events);
    assert_eq!(
        kinds[2..5],
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta"
        ],
        "{kinds:?}"
    );
    let summary: String = events
        .iter()
        .filter(|e| e["type"] == "response.reasoning_summary_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(summary, "thinking about: think hard");
    let completed = &events.last().unwrap()["response"];
    assert_eq!(completed["output"][0]["type"], "reasoning");
    assert_eq!(
        completed["output"][1]["content"][0]["text"],
        "echo: think hard"
    );
    let mut input = vec![json!({"role": "user", "content": "think hard"})];
    input.extend(completed["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "and again"}));
    let again = ok(&gw, json!({"model": "claude-sonnet-4-5", "input": input})).await;
    assert_eq!(again["output"][0]["content"][0]["text"], "echo: and again");
    let sent = gw.bedrock_calls().await[2]["body"]["messages"].clone();
    assert_eq!(
        sent,
        json!([
            {"role": "user", "content": [{"text": "think hard"}]},
            {"role": "assistant", "content": [{"text": "echo: think hard"}]},
            {"role": "user", "content": [{"text": "and again"}]},
        ])
    );
}

#[tokio::test]
async fn a_named_tool_choice_forces_that_tool_and_images_travel_inline() {
    let gw = TestGateway::start().await;
    let body = ok(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": "what time is it", "tools": tools(),
               "tool_choice": {"type": "function", "name": "get_time"}}),
    )
    .await;
    assert_eq!(body["output"][0]["type"], "function_call", "{body}");
    assert_eq!(body["output"][0]["name"], "get_time");
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "name": "get_time"})
    );
    // A 1x1 PNG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let image = ok(
        &gw,
        json!({"model": "claude-sonnet-4-5", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this"},
            {"type": "input_image", "image_url": format!("data:image/png;base64,{png}")},
        ]}]}),
    )
    .await;
    assert_eq!(image["status"], "completed");
    let calls = gw.bedrock_calls().await;
    assert_eq!(
        calls[0]["body"]["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "get_time"}})
    );
    assert_eq!(
        calls[1]["body"]["messages"][0]["content"][1]["image"]["format"],
        "png"
    );
    // A remote image is refused, naming the item.
    let Reply { status, text, .. } = gw
        .post(
            RESPONSES,
            MASTER_KEY,
            json!({"model": "claude-sonnet-4-5", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["param"], "input");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input[0]: remote image URLs"),
        "{text}"
    );
}
