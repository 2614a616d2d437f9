//! A loopback double of the Lambda Runtime API and Extensions API, for running a real function
//! binary as Lambda would: it hands out invocations (with their deadlines), takes buffered and
//! streamed responses (relaying each streamed chunk to the test as it arrives), and tells
//! internal extensions about each invocation.
//!
//! What it saw is logged in order: `runtime: event`, `extension: INVOKE`, `runtime: response`,
//! `extension: next` (an extension done with an invocation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::TestGateway;

/// The function ARN the double reports.
const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-2:123456789012:function:llmlite-test";

/// Milliseconds since the Unix epoch, as Lambda writes deadlines.
pub fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(now.as_millis()).expect("ms fit u64")
}

/// A piece of a function's response, as it reaches the double.
#[derive(Debug, Clone)]
pub enum Part {
    /// The response request's headers (`lambda-runtime-function-response-mode`, ...).
    Head(HeaderMap),
    /// A chunk of its body, as it arrived.
    Chunk(Bytes),
    /// The body is complete.
    End,
    /// The function reported an error for the invocation instead (`/error`).
    Error(String),
}

struct Queued {
    id: String,
    event: Value,
    deadline_ms: u64,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<String>>,
    /// Invocations for the runtime to take, in order.
    queue: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
    next: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Queued>>>,
    /// Invocations the runtime has taken, for the extensions: (id, deadline).
    taken: Mutex<Option<mpsc::UnboundedSender<(String, u64)>>>,
    taken_rx: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<(String, u64)>>>,
    /// Where each invocation's response goes.
    responders: Mutex<HashMap<String, mpsc::UnboundedSender<Part>>>,
    /// How many times the extension has said it is done with an invocation.
    extension_done: Option<watch::Sender<u32>>,
    /// When the runtime first asked for an invocation: the end of its init.
    first_next: watch::Sender<Option<std::time::Instant>>,
}

/// The running double.
pub struct RuntimeApi {
    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub addr: String,
    shared: Arc<Shared>,
    done: watch::Receiver<u32>,
    count: std::sync::atomic::AtomicU32,
}

/// One invocation handed to the function, and its response as it arrives.
pub struct Invoked {
    pub id: String,
    pub parts: mpsc::UnboundedReceiver<Part>,
}

impl Invoked {
    /// The next part, waiting at most `within`.
    pub async fn part(&mut self, within: Duration) -> Part {
        match tokio::time::timeout(within, self.parts.recv()).await {
            Ok(Some(part)) => part,
            Ok(None) => panic!("the double dropped invocation {}", self.id),
            Err(_) => panic!("no response part for {} within {within:?}", self.id),
        }
    }

    /// The whole response: the request's headers and the body.
    pub async fn collect(&mut self, within: Duration) -> (HeaderMap, Vec<u8>) {
        let mut head = HeaderMap::new();
        let mut body = Vec::new();
        loop {
            match self.part(within).await {
                Part::Head(h) => head = h,
                Part::Chunk(c) => body.extend_from_slice(&c),
                Part::End => return (head, body),
                Part::Error(e) => panic!("invocation {} failed: {e}", self.id),
            }
        }
    }
}

/// A streamed HTTP response's bytes split as Lambda reads them: the metadata prelude (JSON),
/// then, after eight NUL bytes, the body. `None` until the separator has arrived.
pub fn split_prelude(bytes: &[u8]) -> Option<(Value, &[u8])> {
    let at = bytes.windows(8).position(|w| w == [0u8; 8])?;
    let prelude = serde_json::from_slice(&bytes[..at]).expect("the prelude is JSON");
    Some((prelude, &bytes[at + 8..]))
}

/// Whether a streamed chat completion's bytes so far (prelude and body, as Lambda reads them)
/// hold a chunk with content: the first token a client would show.
pub fn has_content_delta(bytes: &[u8]) -> bool {
    split_prelude(bytes).is_some_and(|(_, body)| {
        crate::sse_data(&String::from_utf8_lossy(body))
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .any(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
            })
    })
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (queue, next) = mpsc::unbounded_channel();
        let (taken, taken_rx) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Some(queue)),
            next: tokio::sync::Mutex::new(Some(next)),
            taken: Mutex::new(Some(taken)),
            taken_rx: tokio::sync::Mutex::new(Some(taken_rx)),
            extension_done: Some(done_tx),
            ..Shared::default()
        });
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
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi {
            addr,
            shared,
            done,
            count: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Queues `event` for the function, to end at `deadline_ms` (ms since the epoch).
    pub fn invoke(&self, event: Value, deadline_ms: u64) -> Invoked {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let id = format!("invoke-{n}");
        let (tx, parts) = mpsc::unbounded_channel();
        lock(&self.shared.responders).insert(id.clone(), tx);
        if let Some(queue) = lock(&self.shared.queue).as_ref() {
            let _ = queue.send(Queued {
                id: id.clone(),
                event,
                deadline_ms,
            });
        }
        Invoked { id, parts }
    }

    /// What the double saw, in order.
    pub fn log(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// When the function first asked for an invocation (the end of its init), waiting at most
    /// `within` for it.
    pub async fn first_next(&self, within: Duration) -> Option<std::time::Instant> {
        let mut at = self.shared.first_next.subscribe();
        match tokio::time::timeout(within, at.wait_for(Option::is_some)).await {
            Ok(Ok(at)) => *at,
            _ => None,
        }
    }

    /// Waits until the extension has said `n` times that it is done with an invocation.
    pub async fn extension_done(&self, n: u32, within: Duration) -> bool {
        let mut done = self.done.clone();
        tokio::time::timeout(within, done.wait_for(|count| *count >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts the function `binary` against this double, configured as the template configures
    /// it but with `gateway`'s database, Bedrock double and audit directory, plus `extra`.
    pub fn spawn(
        &self,
        binary: &str,
        gateway: &TestGateway,
        extra: &[(&str, &str)],
    ) -> tokio::process::Child {
        self.spawn_via(&[], binary, gateway, extra)
    }

    /// As [`RuntimeApi::spawn`], through `wrapper` (a command that ends by running its last
    /// argument, the binary: a shell that first moves itself into a cgroup, say).
    pub fn spawn_via(
        &self,
        wrapper: &[&str],
        binary: &str,
        gateway: &TestGateway,
        extra: &[(&str, &str)],
    ) -> tokio::process::Child {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => tokio::process::Command::new(binary),
        };
        command
            .env("AWS_LAMBDA_RUNTIME_API", &self.addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", "llmlite-test")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/test/llmlite")
            .env("DATABASE_URL", &gateway.db.url)
            .env("LITELLM_MASTER_KEY", crate::MASTER_KEY)
            .env("AWS_REGION", "eu-west-2")
            // As `TestDb::env`: keys made without limits are unlimited in tests.
            .env("LLMLITE_DEFAULT_TIER", "none")
            .env("AWS_ACCESS_KEY_ID", "LLMLITETEST")
            .env("AWS_SECRET_ACCESS_KEY", "llmlite-test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                gateway.double.endpoint(),
            )
            .env("LLMLITE_AUDIT_DIR", gateway.db.audit_dir())
            .env("RUST_LOG", "warn");
        for (name, value) in extra {
            command.env(name, value);
        }
        command
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the function binary")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Api = State<Arc<Shared>>;

fn note(shared: &Shared, what: &str) {
    lock(&shared.log).push(what.to_owned());
}

async fn register() -> impl IntoResponse {
    (
        [("lambda-extension-identifier", "llmlite-ext-1")],
        axum::Json(
            json!({"functionName": "llmlite-test", "functionVersion": "$LATEST", "handler": "bootstrap"}),
        ),
    )
}

/// An extension's `next`: after the first, it is done with the previous invocation. Answers
/// with the next invocation once the runtime has taken it.
async fn extension_next(State(shared): Api) -> Response {
    let mut taken = shared.taken_rx.lock().await;
    let first = lock(&shared.log).iter().all(|l| l != "extension: INVOKE");
    if !first {
        note(&shared, "extension: next");
        if let Some(done) = &shared.extension_done {
            done.send_modify(|n| *n += 1);
        }
    }
    let Some((id, deadline_ms)) = (match taken.as_mut() {
        Some(rx) => rx.recv().await,
        None => None,
    }) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    note(&shared, "extension: INVOKE");
    axum::Json(
        json!({"eventType": "INVOKE", "deadlineMs": deadline_ms, "requestId": id,
                      "invokedFunctionArn": FUNCTION_ARN,
                      "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-0-0"}}),
    )
    .into_response()
}

async fn invocation_next(State(shared): Api) -> Response {
    shared.first_next.send_if_modified(|at| {
        at.is_none()
            .then(|| *at = Some(std::time::Instant::now()))
            .is_some()
    });
    let queued = {
        let mut next = shared.next.lock().await;
        match next.as_mut() {
            Some(rx) => rx.recv().await,
            None => None,
        }
    };
    let Some(queued) = queued else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    note(&shared, "runtime: event");
    if let Some(taken) = lock(&shared.taken).as_ref() {
        let _ = taken.send((queued.id.clone(), queued.deadline_ms));
    }
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &queued.id);
    set(
        "lambda-runtime-deadline-ms",
        &queued.deadline_ms.to_string(),
    );
    set("lambda-runtime-invoked-function-arn", FUNCTION_ARN);
    set("lambda-runtime-trace-id", "Root=1-0-0;Parent=0;Sampled=0");
    (headers, axum::Json(queued.event)).into_response()
}

/// A response, buffered or streamed: each body chunk is relayed as it arrives.
async fn invocation_response(
    State(shared): Api,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let Some(responder) = lock(&shared.responders).get(&id).cloned() else {
        return StatusCode::BAD_REQUEST;
    };
    let _ = responder.send(Part::Head(headers));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    let _ = responder.send(Part::Chunk(data));
                }
            }
            Err(e) => {
                let _ = responder.send(Part::Error(format!("body: {e}")));
                return StatusCode::BAD_REQUEST;
            }
        }
    }
    note(&shared, "runtime: response");
    let _ = responder.send(Part::End);
    StatusCode::ACCEPTED
}

async fn invocation_error(State(shared): Api, Path(id): Path<String>, body: String) -> StatusCode {
    note(&shared, &format!("runtime: error {body}"));
    if let Some(responder) = lock(&shared.responders).get(&id) {
        let _ = responder.send(Part::Error(body));
    }
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): Api, body: String) -> StatusCode {
    note(&shared, &format!("runtime: init error {body}"));
    StatusCode::ACCEPTED
}
