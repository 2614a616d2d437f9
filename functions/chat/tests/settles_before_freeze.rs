//! The chat function settles after its response and before Lambda may freeze it: the real
//! `chat` binary against a loopback double of the Lambda Runtime and Extensions APIs. Lambda
//! freezes an environment once the runtime and every extension have asked for their next event;
//! the extension must not ask until the request's settlement has landed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite_tests::lambda_runtime::{RuntimeApi, now_ms};
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn the_chat_function_settles_after_its_response_and_before_it_may_be_frozen() {
    let gw = TestGateway::start().await;
    let fixture: Value =
        serde_json::from_str(include_str!("../../../events/chat-completion.json")).unwrap();
    assert!(fixture.to_string().contains(MASTER_KEY));
    let api = RuntimeApi::start().await;

    // Hold back every spend row: settlement will wait on this lock, admission does not touch
    // the table.
    let mut blocker = PgConnection::connect(&gw.db.url).await.unwrap();
    sqlx::query("BEGIN")
        .persistent(false)
        .execute(&mut blocker)
        .await
        .unwrap();
    sqlx::query("LOCK TABLE litellm_spend IN SHARE ROW EXCLUSIVE MODE")
        .persistent(false)
        .execute(&mut blocker)
        .await
        .unwrap();

    let mut function = api.spawn(env!("CARGO_BIN_EXE_chat"), &gw, &[]);
    let mut invoked = api.invoke(fixture, now_ms() + 60_000);

    // The answer goes out while settlement is still held back...
    let (_, body) = invoked.collect(Duration::from_secs(120)).await;
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    // ...and the extension keeps the environment awake while it is.
    assert!(
        !api.extension_done(1, Duration::from_secs(1)).await,
        "the extension asked for its next event before the request settled: {:?}",
        api.log()
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_spend")
        .persistent(false)
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    assert_eq!(rows, 0, "not settled yet");
    sqlx::query("COMMIT")
        .persistent(false)
        .execute(&mut blocker)
        .await
        .unwrap();

    // Released: it settles, and only then may the environment be frozen.
    assert!(
        api.extension_done(1, Duration::from_secs(30)).await,
        "the extension finished once the request settled"
    );
    let settled: (String, i64) =
        sqlx::query_as("SELECT status, completion_tokens FROM litellm_spend")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(settled.0, "success");
    assert!(settled.1 > 0);
    let log = api.log();
    let at = |what: &str| log.iter().position(|l| l == what).unwrap();
    assert!(at("runtime: response") < at("extension: next"), "{log:?}");
    assert_eq!(
        log.last().map(String::as_str),
        Some("extension: next"),
        "{log:?}"
    );
    let _ = function.kill().await;
}
