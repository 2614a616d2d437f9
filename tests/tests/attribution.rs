//! Attribution (issue #28): every Bedrock call carries the request's tags to Bedrock's
//! invocation logs (Converse's `requestMetadata`, InvokeModel's `X-Amzn-Bedrock-Request-Metadata`
//! header), so a log line joins its spend row. The double refuses tags that break Bedrock's rules,
//! as Bedrock does. Real PostgreSQL, the gateway over HTTP, the wire-level Bedrock double.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::TestGateway;
use serde_json::{Value, json};

/// The double's record of the call made for the request `request_id`: its operation and tags.
async fn tags_of(gw: &TestGateway, request_id: &str) -> Vec<(String, Value)> {
    gw.bedrock_calls()
        .await
        .into_iter()
        .filter(|call| call["request_metadata"]["llmlite_request_id"] == request_id)
        .map(|call| {
            (
                call["operation"].as_str().unwrap().to_owned(),
                call["request_metadata"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_api_tags_its_bedrock_calls_with_the_request_the_key_and_the_team() {
    let gw = TestGateway::start().await;
    // A team ID Bedrock's tag rules do not allow as it is, and a user ID that is an e-mail.
    let team = "Platform Team/ü";
    gw.admin("/team/new", json!({"team_id": team})).await;
    gw.admin("/user/new", json!({"user_id": "dev@example.com"}))
        .await;
    let minted = gw
        .mint_key(json!({"team_id": team, "user_id": "dev@example.com"}))
        .await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();

    let chat = json!({"model": "claude-haiku-4-5", "max_tokens": 32,
                      "messages": [{"role": "user", "content": "hello"}]});
    let messages = json!({"model": "claude-sonnet-4-5", "max_tokens": 32,
                          "messages": [{"role": "user", "content": "hello"}]});
    let stream = |mut body: Value| {
        body["stream"] = json!(true);
        body
    };
    let cases = [
        ("/v1/chat/completions", chat.clone(), "converse"),
        ("/v1/chat/completions", stream(chat), "converse-stream"),
        ("/v1/messages", messages.clone(), "invoke"),
        (
            "/v1/messages",
            stream(messages),
            "invoke-with-response-stream",
        ),
        (
            "/v1/responses",
            json!({"model": "claude-haiku-4-5", "input": "hello"}),
            "converse",
        ),
        (
            "/v1/embeddings",
            json!({"model": "titan-embed-text-v2", "input": "hello"}),
            "invoke",
        ),
    ];
    for (path, body, operation) in cases {
        let reply = gw.post(path, key, body).await;
        assert_eq!(reply.status, 200, "{path} {operation}: {}", reply.text);
        let request_id = reply.request_id();
        let calls = tags_of(&gw, &request_id).await;
        assert_eq!(calls.len(), 1, "{path} {operation}: {calls:?}");
        let (called, tags) = &calls[0];
        assert_eq!(called, operation, "{path}");
        assert_eq!(
            tags,
            &json!({"llmlite_request_id": request_id, "llmlite_key": &token[..16],
                    "llmlite_team": "Platform Team/_"}),
            "{path} {operation}"
        );
        let spend = gw.spend_row(&request_id).await;
        assert!(
            spend
                .api_key
                .starts_with(tags["llmlite_key"].as_str().unwrap()),
            "the tag joins the spend row"
        );
    }
    // Never the user's ID (an e-mail here), in any call.
    let everything = Value::Array(gw.bedrock_calls().await).to_string();
    assert!(!everything.contains("dev@example.com"));

    // The master key's requests have no team: the request and the key's prefix, which joins
    // their spend rows as any key's does.
    let reply = gw
        .chat(json!({"model": "claude-haiku-4-5", "max_tokens": 8,
                     "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 200);
    let request_id = reply.request_id();
    let calls = tags_of(&gw, &request_id).await;
    let spend = gw.spend_row(&request_id).await;
    assert_eq!(
        calls[0].1,
        json!({"llmlite_request_id": request_id, "llmlite_key": &spend.api_key[..16]})
    );
}
