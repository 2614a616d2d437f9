//! Arbitrary bodies through the translator: it never panics, and every refusal is a 4xx in
//! the OpenAI shape.
#[allow(clippy::wildcard_imports, reason = "the translation under test")]
use super::*;
use crate::catalog::ModelCatalog;
use proptest::prelude::*;
use serde_json::json;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3.0f64..3.0).prop_map(Value::from),
        "[a-z_ ]{0,12}".prop_map(Value::from),
        Just(json!("data:image/png;base64,iVBORw0KGgo=")),
        Just(json!("https://example.com/x.png")),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn part() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_json().prop_map(|t| json!({"type": "text", "text": t})),
        "[a-z ]{0,10}".prop_map(
            |t| json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})
        ),
        scalar().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
        any_json(),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    let role = prop_oneof![
        Just("system"),
        Just("developer"),
        Just("user"),
        Just("assistant"),
        Just("tool"),
        Just("function")
    ];
    let content = prop_oneof![
        "[a-z ]{0,20}".prop_map(Value::from),
        prop::collection::vec(part(), 0..4).prop_map(Value::from),
        any_json(),
    ];
    let tool_calls = prop_oneof![
        Just(Value::Null),
        ("[a-z_]{1,8}", any_json()).prop_map(|(name, args)| json!([{
            "id": "call_1", "type": "function",
            "function": {"name": name, "arguments": args.to_string()}
        }])),
        any_json(),
    ];
    (role, content, tool_calls, any_json()).prop_map(|(role, content, calls, id)| {
        json!({"role": role, "content": content, "tool_calls": calls, "tool_call_id": id})
    })
}

fn request() -> impl Strategy<Value = Value> {
    let model = prop_oneof![
        Just("claude-sonnet-4-5"),
        Just("claude-3-5-sonnet"),
        Just("claude-sonnet-4")
    ];
    let extras = prop::collection::btree_map(
        prop_oneof![
            Just("max_tokens"),
            Just("max_completion_tokens"),
            Just("temperature"),
            Just("top_p"),
            Just("stop"),
            Just("tools"),
            Just("tool_choice"),
            Just("response_format"),
            Just("reasoning_effort"),
            Just("n"),
            Just("logprobs"),
            Just("modalities"),
            Just("stream"),
        ],
        any_json(),
        0..6,
    );
    (model, prop::collection::vec(message(), 0..6), extras).prop_map(|(model, messages, extras)| {
        let mut body = json!({"model": model, "messages": messages});
        for (k, v) in extras {
            body[k] = v;
        }
        body
    })
}

fn check(body: Value) -> Result<(), TestCaseError> {
    let catalog = ModelCatalog::builtin().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let parsed: ChatCompletionRequest = match serde_json::from_value(body) {
        Ok(parsed) => parsed,
        // The extractor turns this into a 400 `invalid_request_error`.
        Err(_) => return Ok(()),
    };
    let Some(model) = catalog.get(&parsed.model) else {
        return Ok(());
    };
    if let Err(error) = translate(&parsed, model, 4096) {
        prop_assert!(error.status().is_client_error(), "{error:?}");
        let body =
            serde_json::to_value(error.body()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(body["error"]["message"].is_string());
        prop_assert!(body["error"]["type"].is_string());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn request_shaped_bodies_never_panic(body in request()) {
        check(body)?;
    }

    #[test]
    fn arbitrary_json_never_panics(body in any_json()) {
        check(body)?;
    }
}
