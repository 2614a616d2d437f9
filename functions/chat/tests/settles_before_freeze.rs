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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Notify, oneshot};

/// What the Runtime API double saw, in order.
#[derive(Default)]
struct Seen {
    log: Mutex<Vec<String>>,
    /// Taken by the first `invocation/next`: the event to hand out.
    event: Mutex<Option<Value>>,
    /// Signalled when the runtime posts the response.
    responded: Notify,
    /// Signalled when the extension asks for its second event (it is done with the first).
    extension_done: Notify,
    /// The extension's `event/next` calls so far.
    extension_calls: Mutex<u32>,
    /// Lets the first INVOKE through to the extension once the runtime has the event.
    dispatched: Notify,
    response: Mutex<Option<(String, String)>>,
}

type Shared = State<Arc<Seen>>;

fn note(seen: &Seen, what: &str) {
    seen.log.lock().unwrap().push(what.to_owned());
}

fn deadline_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(now.as_millis()).unwrap() + 60_000
}

async fn register() -> impl IntoResponse {
    (
        [("lambda-extension-identifier", "llmlite-ext-1")],
        axum::Json(
            json!({"functionName": "chat", "functionVersion": "$LATEST", "handler": "bootstrap"}),
        ),
    )
}

async fn extension_next(State(seen): Shared) -> axum::response::Response {
    let call = {
        let mut calls = seen.extension_calls.lock().unwrap();
        *calls += 1;
        *calls
    };
    if call == 1 {
        seen.dispatched.notified().await;
        note(&seen, "extension: INVOKE");
        return axum::Json(json!({"eventType": "INVOKE", "deadlineMs": deadline_ms(),
                                 "requestId": "invoke-1",
                                 "invokedFunctionArn": "arn:aws:lambda:eu-west-2:123456789012:function:chat",
                                 "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-0-0"}}))
        .into_response();
    }
    note(&seen, "extension: next");
    seen.extension_done.notify_one();
    std::future::pending::<()>().await;
    StatusCode::OK.into_response()
}

async fn invocation_next(State(seen): Shared) -> axum::response::Response {
    let event = seen.event.lock().unwrap().take();
    let Some(event) = event else {
        // The environment would be frozen here; the test ends first.
        std::future::pending::<()>().await;
        return StatusCode::OK.into_response();
    };
    note(&seen, "runtime: event");
    seen.dispatched.notify_one();
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", "invoke-1".parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline_ms().to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-2:123456789012:function:chat"
            .parse()
            .unwrap(),
    );
    (headers, axum::Json(event)).into_response()
}

async fn invocation_response(
    State(seen): Shared,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    note(&seen, "runtime: response");
    *seen.response.lock().unwrap() = Some((id, body));
    seen.responded.notify_one();
    StatusCode::ACCEPTED
}

async fn invocation_error(State(seen): Shared, body: String) -> StatusCode {
    note(&seen, &format!("runtime: error {body}"));
    StatusCode::ACCEPTED
}

async fn runtime_api(seen: Arc<Seen>) -> String {
    let app = Router::new()
        .route("/2020-01-01/extension/register", post(register))
        .route("/2020-01-01/extension/event/next", get(extension_next))
        .route("/2018-06-01/runtime/invocation/next", get(invocation_next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(invocation_error))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

#[tokio::test]
async fn the_chat_function_settles_after_its_response_and_before_it_may_be_frozen() {
    let gw = TestGateway::start().await;
    let seen = Arc::new(Seen::default());
    let fixture: Value =
        serde_json::from_str(include_str!("../../../events/chat-completion.json")).unwrap();
    assert!(fixture.to_string().contains(MASTER_KEY));
    *seen.event.lock().unwrap() = Some(fixture);
    let api = runtime_api(Arc::clone(&seen)).await;

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

    let mut function = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "chat")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/test/chat")
        .env("DATABASE_URL", &gw.db.url)
        .env("LITELLM_MASTER_KEY", MASTER_KEY)
        .env("AWS_REGION", "eu-west-2")
        .env("AWS_ACCESS_KEY_ID", "LLMLITETEST")
        .env("AWS_SECRET_ACCESS_KEY", "llmlite-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", gw.double.endpoint())
        .env("LLMLITE_AUDIT_DIR", gw.db.audit_dir())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The answer goes out while settlement is still held back...
    tokio::time::timeout(Duration::from_secs(120), seen.responded.notified())
        .await
        .expect("the function answered");
    let (id, body) = seen.response.lock().unwrap().clone().unwrap();
    assert_eq!(id, "invoke-1");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    // ...and the extension keeps the environment awake while it is.
    let (done_tx, done_rx) = oneshot::channel();
    let watcher = Arc::clone(&seen);
    tokio::spawn(async move {
        watcher.extension_done.notified().await;
        let _ = done_tx.send(());
    });
    let mut done_rx = done_rx;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut done_rx)
            .await
            .is_err(),
        "the extension asked for its next event before the request settled: {:?}",
        seen.log.lock().unwrap()
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
    tokio::time::timeout(Duration::from_secs(30), done_rx)
        .await
        .expect("the extension finished once the request settled")
        .unwrap();
    let settled: (String, i64) =
        sqlx::query_as("SELECT status, completion_tokens FROM litellm_spend")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(settled.0, "success");
    assert!(settled.1 > 0);
    let log = seen.log.lock().unwrap().clone();
    let at = |what: &str| log.iter().position(|l| l == what).unwrap();
    assert!(at("runtime: response") < at("extension: next"), "{log:?}");
    assert_eq!(
        log.last().map(String::as_str),
        Some("extension: next"),
        "{log:?}"
    );
    let _ = function.kill().await;
}
