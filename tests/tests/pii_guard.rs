//! The PII guard on the chat route: the Bedrock double shows what actually left the gateway.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{MASTER_KEY, SpendRow, TestGateway};
use serde_json::{Value, json};

async fn chat(gw: &TestGateway, key: &str, messages: Value) -> (u16, Value, String) {
    chat_with(gw, key, json!({"messages": messages})).await
}

/// A chat request made of `fields` (`messages`, `tools`, ...) on top of the model and a limit.
async fn chat_with(gw: &TestGateway, key: &str, fields: Value) -> (u16, Value, String) {
    let mut body = json!({"model": "claude-haiku-4-5", "max_tokens": 64});
    for (name, value) in fields.as_object().unwrap() {
        body[name] = value.clone();
    }
    let reply = gw.post("/v1/chat/completions", key, body).await;
    gw.settled().await;
    (reply.status, reply.json(), reply.request_id())
}

async fn sent_to_bedrock(gw: &TestGateway) -> Vec<String> {
    gw.bedrock_calls()
        .await
        .iter()
        .map(|c| c["body"].to_string())
        .collect()
}

#[tokio::test]
async fn masked_text_reaches_the_model_never_the_pii() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    let (status, body, request_id) = chat(
        &gw,
        &key,
        json!([
            {"role": "system", "content": "Support desk. Escalations: boss@example.com"},
            {"role": "user", "content": "Email jane.doe@example.org or ring +44 20 7946 0958 from 10.1.2.3"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"email\": \"jane.doe@example.org\"}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "found: jane.doe@example.org, 07700 900123"}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = sent_to_bedrock(&gw).await.join("\n");
    for secret in [
        "boss@example.com",
        "jane.doe@example.org",
        "7946 0958",
        "07700 900123",
    ] {
        assert!(!sent.contains(secret), "{secret} reached Bedrock: {sent}");
    }
    assert!(
        sent.contains("<EMAIL_ADDRESS>") && sent.contains("<PHONE_NUMBER>"),
        "{sent}"
    );
    // LOG: the IP address went through, and was counted.
    assert!(sent.contains("10.1.2.3"));
    let SpendRow {
        status, metadata, ..
    } = gw.spend_row(&request_id).await;
    assert_eq!(status, "success");
    assert_eq!(
        metadata["llmlite_pii"],
        json!({"EMAIL_ADDRESS": 4, "PHONE_NUMBER": 2, "IP_ADDRESS": 1})
    );
    assert!(!metadata.to_string().contains("jane"));
}

#[tokio::test]
async fn a_block_never_reaches_the_model() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    let (status, body, request_id) = chat(
        &gw,
        &key,
        json!([{"role": "user", "content": "charge 4539 1488 0343 6467 and SSN 536-90-4399 and 536-90-4390"}]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "pii_blocked");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("CREDIT_CARD (1)") && message.contains("US_SSN (2)"),
        "{message}"
    );
    assert!(
        !message.contains("4539") && !message.contains("536-90"),
        "{message}"
    );
    assert!(gw.bedrock_calls().await.is_empty(), "nothing was sent");
    let SpendRow {
        status, metadata, ..
    } = gw.spend_row(&request_id).await;
    assert_eq!(status, "failure");
    assert_eq!(
        metadata["llmlite_pii"],
        json!({"CREDIT_CARD": 1, "US_SSN": 2})
    );
}

#[tokio::test]
async fn a_key_policy_beats_the_team_and_the_global_one() {
    // Globally, emails are blocked.
    let gw =
        TestGateway::start_with(&[("LLMLITE_PII_POLICY", r#"{"EMAIL_ADDRESS": "BLOCK"}"#)]).await;
    let email = json!([{"role": "user", "content": "write to ops@example.net"}]);

    let plain = gw.mint_raw_key(json!({})).await;
    assert_eq!(chat(&gw, &plain, email.clone()).await.0, 400);

    let allowed = gw
        .mint_key(json!({"pii_policy": {"EMAIL_ADDRESS": "ALLOW"}}))
        .await;
    assert_eq!(allowed["pii_policy"], json!({"EMAIL_ADDRESS": "ALLOW"}));
    let (status, _, _) = chat(&gw, allowed["key"].as_str().unwrap(), email.clone()).await;
    assert_eq!(status, 200);
    assert!(
        sent_to_bedrock(&gw)
            .await
            .join("\n")
            .contains("ops@example.net"),
        "ALLOW sends it as is"
    );

    // A team that masks; its key inherits that, and a key of its own policy beats it.
    gw.admin(
        "/team/new",
        json!({"team_id": "masked", "pii_policy": {"EMAIL_ADDRESS": "MASK"}}),
    )
    .await;
    let team_key = gw.mint_raw_key(json!({"team_id": "masked"})).await;
    assert_eq!(chat(&gw, &team_key, email.clone()).await.0, 200);
    assert!(
        sent_to_bedrock(&gw)
            .await
            .last()
            .unwrap()
            .contains("<EMAIL_ADDRESS>")
    );
    let strict = gw
        .mint_key(json!({"team_id": "masked", "pii_policy": {"*": "BLOCK"}}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chat(&gw, &strict, email.clone()).await.0, 400);

    // `{"*": "ALLOW"}` turns the guard off for a key.
    let off = gw.mint_raw_key(json!({"pii_policy": {"*": "ALLOW"}})).await;
    let card = json!([{"role": "user", "content": "card 4539 1488 0343 6467"}]);
    assert_eq!(chat(&gw, &off, card).await.0, 200);

    // Bad policies are refused at the admin API.
    for bad in [
        json!({"EMAIL": "BLOCK"}),
        json!({"EMAIL_ADDRESS": "SHRED"}),
        json!("BLOCK"),
    ] {
        let response = gw
            .post("/key/generate", MASTER_KEY, json!({"pii_policy": bad}))
            .await;
        assert_eq!(response.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn custom_entities_from_configuration() {
    let gw = TestGateway::start_with(&[
        (
            "LLMLITE_PII_ENTITIES",
            r#"{"EMPLOYEE_ID": "\\bEMP-\\d{6}\\b"}"#,
        ),
        ("LLMLITE_PII_POLICY", r#"{"EMPLOYEE_ID": "MASK"}"#),
    ])
    .await;
    let key = gw.mint_raw_key(json!({})).await;
    let (status, _, _) = chat(
        &gw,
        &key,
        json!([{"role": "user", "content": "promote EMP-004217 today"}]),
    )
    .await;
    assert_eq!(status, 200);
    let sent = sent_to_bedrock(&gw).await.join("\n");
    assert!(
        sent.contains("promote <EMPLOYEE_ID> today") && !sent.contains("004217"),
        "{sent}"
    );
}

/// A Luhn-valid Visa number, not a documented test card.
const CARD: &str = "4539 1488 0343 6467";

/// Requests that carry `CARD` only outside the messages: in a tool's description, in its
/// parameters' schema (a value, and a property name), and in a `response_format` schema.
fn card_outside_the_messages() -> Vec<(&'static str, Value)> {
    let user = json!([{"role": "user", "content": "what is on file?"}]);
    let tool = |description: &str, parameters: Value| {
        json!([{"type": "function", "function": {
            "name": "lookup", "description": description, "parameters": parameters}}])
    };
    let plain_parameters = json!({"type": "object", "properties": {"id": {"type": "string"}}});
    vec![
        (
            "tool description",
            json!({"messages": user, "tools": tool(&format!("Looks up card {CARD}"), plain_parameters.clone())}),
        ),
        (
            "tool parameters",
            json!({"messages": user, "tools": tool("Looks up a card", json!({"type": "object",
                "properties": {"card": {"type": "string", "description": format!("always {CARD}")}}}))}),
        ),
        (
            "a property name in tool parameters",
            json!({"messages": user, "tools": tool("Looks up a card", json!({"type": "object",
                "properties": {CARD: {"type": "string"}}}))}),
        ),
        (
            "response_format schema",
            json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": {"type": "object", "properties": {
                    "card": {"type": "string", "description": format!("echo {CARD}")}}}}}}),
        ),
    ]
}

#[tokio::test]
async fn a_card_number_in_a_tool_definition_is_blocked() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "BLOCK"}}))
        .await;
    for (place, fields) in card_outside_the_messages() {
        let (status, body, _) = chat_with(&gw, &key, fields).await;
        assert_eq!(status, 400, "{place}: {body}");
        assert_eq!(body["error"]["type"], "pii_blocked", "{place}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("CREDIT_CARD (1)"),
            "{place}: {body}"
        );
    }
    assert!(gw.bedrock_calls().await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_masked_tool_definition_reaches_the_model_masked() {
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"CREDIT_CARD": "MASK"}}))
        .await;
    for (place, fields) in card_outside_the_messages() {
        let (status, body, _) = chat_with(&gw, &key, fields).await;
        assert_eq!(status, 200, "{place}: {body}");
        let sent = sent_to_bedrock(&gw).await.pop().unwrap();
        assert!(
            !sent.contains(CARD) && sent.contains("<CREDIT_CARD>"),
            "{place}: {sent}"
        );
    }
}

#[tokio::test]
async fn a_digit_of_another_script_in_an_iban_like_word_is_not_a_server_error() {
    // Devanagari digits are three bytes each: the old IBAN check sliced inside one and panicked.
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"pii_policy": {"IBAN_CODE": "BLOCK"}}))
        .await;
    for text in [
        "GB२२ABCDEFGHIJKLMN",
        "pay GB२२ WEST 1234 5698 7654 32 today",
    ] {
        let (status, body, _) = chat(&gw, &key, json!([{"role": "user", "content": text}])).await;
        assert!(
            status == 200 || (status == 400 && body["error"]["type"] == "pii_blocked"),
            "{text}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn phone_numbers_of_every_family_are_masked_and_a_bare_number_needs_a_context_word() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    for number in [
        "(813)274-4867",
        "(0116) 4960246",
        "(020)74960540",
        "(0131) 496 0243",
        "(028) 9018 0537",
        "001-674-420-6952",
        "00 44 20 7946 0958",
        "011 44 20 7946 0958",
        "+44 20 7946 0958",
    ] {
        let text = format!("the office is on {number} during the week");
        let (status, _, _) = chat(&gw, &key, json!([{"role": "user", "content": text}])).await;
        assert_eq!(status, 200);
        let sent = sent_to_bedrock(&gw).await.join("\n");
        assert!(
            sent.contains("the office is on <PHONE_NUMBER> during the week"),
            "{number}: {sent}"
        );
    }
    // A bare national number is a phone number only with a context word.
    let (_, body, _) = chat(
        &gw,
        &key,
        json!([{"role": "user", "content": "order 3646398060 shipped"}]),
    )
    .await;
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("order 3646398060 shipped"),
        "{body}"
    );
    let (_, body, _) = chat(
        &gw,
        &key,
        json!([{"role": "user", "content": "call me on 3646398060 tonight"}]),
    )
    .await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: call me on <PHONE_NUMBER> tonight"
    );
}
