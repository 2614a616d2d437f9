//! OpenTelemetry traces, end to end: `llmlite dev` exports over OTLP/HTTP
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`) to a receiver in this test that decodes each export with the
//! official OTLP definitions (`opentelemetry-proto`). A chat completion (continuing a client's
//! `traceparent`), a streamed `/v1/messages` and a refused request are checked: the span tree,
//! the GenAI attributes with the token counts the spend rows hold, and that no prompt text is in
//! any span. A second gateway exports to a collector that accepts connections and never answers:
//! its requests are timed side by side with the first's, and it says so once in its log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::Dev;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::{Value, json};

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
    events: Vec<String>,
    /// When each event happened (Unix nanoseconds).
    event_times: Vec<u64>,
    start: u64,
    end: u64,
    service: String,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// `SPAN_KIND_SERVER` and `SPAN_KIND_CLIENT` in OTLP.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver on loopback: every span exported to it, decoded.
async fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let spans = Arc::new(Mutex::new(Vec::<Got>::new()));
    let kept = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| text(a.value.as_ref()))
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        kept.push(Got {
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            name: span.name,
                            kind: span.kind,
                            attributes: span
                                .attributes
                                .iter()
                                .map(|a| (a.key.clone(), text(a.value.as_ref())))
                                .collect(),
                            events: span
                                .events
                                .iter()
                                .map(|e| {
                                    let attributes: Vec<String> = e
                                        .attributes
                                        .iter()
                                        .map(|a| format!("{}={}", a.key, text(a.value.as_ref())))
                                        .collect();
                                    format!("{} {}", e.name, attributes.join(" "))
                                })
                                .collect(),
                            event_times: span.events.iter().map(|e| e.time_unix_nano).collect(),
                            start: span.start_time_unix_nano,
                            end: span.end_time_unix_nano,
                            service: service.clone(),
                        });
                    }
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

/// The prompt text every request carries; no span may hold it.
const SECRET: &str = "zebra-lantern-4471";

fn request_id(reply: &reqwest::Response) -> String {
    reply.headers()["x-request-id"].to_str().unwrap().to_owned()
}

/// Waits until the trace of the request `id` holds its server span and `after` (the span that
/// follows the response), and returns that trace's spans.
async fn trace_of(spans: &Arc<Mutex<Vec<Got>>>, id: &str, after: &str) -> (Got, Vec<Got>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            {
                let spans = spans.lock().unwrap();
                if let Some(server) = spans
                    .iter()
                    .find(|s| s.attr("llmlite.request_id") == Some(id))
                {
                    let trace: Vec<Got> = spans
                        .iter()
                        .filter(|s| s.trace_id == server.trace_id)
                        .cloned()
                        .collect();
                    if trace.iter().any(|s| s.name == after) {
                        return (server.clone(), trace);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the trace of {id} with its {after} span"))
}

fn children<'a>(trace: &'a [Got], parent: &Got) -> Vec<&'a Got> {
    trace
        .iter()
        .filter(|s| s.parent == parent.span_id)
        .collect()
}

async fn spend_tokens(db: &sqlx::PgPool, id: &str) -> (i64, i64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT prompt_tokens::bigint, completion_tokens::bigint FROM litellm_spend
                 WHERE request_id = $1",
            )
            .bind(id)
            .fetch_optional(db)
            .await
            .unwrap();
            if let Some(row) = row {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the spend row")
}

/// Checks that the attempt `call` carries the input and output tokens of request `id`'s spend
/// row; the output tokens.
async fn usage_is_the_spend_rows(call: &Got, db: &sqlx::PgPool, id: &str) -> i64 {
    let (prompt, completion) = spend_tokens(db, id).await;
    assert_eq!(
        call.attr("gen_ai.usage.input_tokens"),
        Some(prompt.to_string().as_str())
    );
    assert_eq!(
        call.attr("gen_ai.usage.output_tokens"),
        Some(completion.to_string().as_str())
    );
    completion
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_with_genai_attributes_and_no_prompt_text() {
    let (endpoint, spans) = receiver().await;
    let dev = Dev::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "llmlite-under-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", dev.addr);
    let key = dev.team_key(&client, "search", &["claude-haiku-4-5"]).await;
    let db = sqlx::PgPool::connect(&dev.database_url).await.unwrap();

    // 1. A chat completion, continuing the client's trace.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let chat = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 40,
                      "messages": [{"role": "user", "content": format!("say hi {SECRET}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let chat_id = request_id(&chat);
    let answer: Value = chat.json().await.unwrap();

    // 2. A streamed `/v1/messages`.
    let streamed = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": format!("stream {SECRET}")}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let stream_id = request_id(&streamed);
    assert!(streamed.text().await.unwrap().contains("message_stop"));

    // 3. A refusal: a model the key may not use.
    let refused = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "claude-sonnet-4-5",
                      "messages": [{"role": "user", "content": SECRET}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused_id = request_id(&refused);

    // The chat's trace continues the client's.
    let (server, trace) = trace_of(&spans, &chat_id, "settlement").await;
    assert_eq!(server.trace_id, client_trace);
    assert_eq!(server.parent, client_span);
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(server.service, "llmlite-under-test");
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.route"), Some("/v1/chat/completions"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("llmlite.admission"), Some("admitted"));
    assert_eq!(server.attr("llmlite.team"), Some("search"));
    assert_eq!(server.attr("llmlite.fallback_index"), Some("0"));
    assert_eq!(server.attr("llmlite.key").map(str::len), Some(12));
    let spent: String =
        sqlx::query_scalar("SELECT spend::text FROM litellm_spend WHERE request_id = $1")
            .bind(&chat_id)
            .fetch_one(&db)
            .await
            .unwrap();
    let spent: rust_decimal::Decimal = spent.parse().unwrap();
    let traced: rust_decimal::Decimal = server.attr("llmlite.cost").unwrap().parse().unwrap();
    assert_eq!(traced, spent, "the trace's cost is the spend row's");
    let names: Vec<&str> = children(&trace, &server)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for stage in ["admission", "pii_guard", "settlement"] {
        assert!(names.contains(&stage), "{stage} in {names:?}");
    }
    let calls: Vec<&Got> = children(&trace, &server)
        .into_iter()
        .filter(|s| s.kind == CLIENT)
        .collect();
    assert_eq!(calls.len(), 1, "one Bedrock attempt: {names:?}");
    let call = calls[0];
    assert!(call.name.starts_with("chat "), "{}", call.name);
    assert_eq!(call.attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(call.attr("gen_ai.provider.name"), Some("aws.bedrock"));
    assert_eq!(call.attr("gen_ai.request.max_tokens"), Some("40"));
    let model_id = call.attr("gen_ai.request.model").unwrap();
    assert!(model_id.contains("claude-haiku-4-5"), "{model_id}");
    assert_eq!(call.attr("gen_ai.response.model"), Some(model_id));
    let completion = usage_is_the_spend_rows(call, &db, &chat_id).await;
    assert_eq!(
        answer["usage"]["completion_tokens"].as_i64(),
        Some(completion),
        "the double's count"
    );
    assert_eq!(call.attr("gen_ai.usage.cache_read.input_tokens"), Some("0"));

    // The stream: its attempt carries the first token and the stream's usage.
    let (server, trace) = trace_of(&spans, &stream_id, "settlement").await;
    assert_eq!(server.name, "POST /v1/messages");
    assert_ne!(server.trace_id, client_trace, "a trace of its own");
    assert!(server.parent.is_empty() || server.parent.chars().all(|c| c == '0'));
    let call = children(&trace, &server)
        .into_iter()
        .find(|s| s.kind == CLIENT)
        .expect("the Bedrock attempt");
    assert!(
        call.events
            .iter()
            .any(|e| e.starts_with("gen_ai.first_token")),
        "{:?}",
        call.events
    );
    assert!(call.attr("llmlite.time_to_first_token_ms").is_some());
    // The attempt that answered lasts to the stream's end, after its first token, and the
    // request's span to its own end.
    let first_token = call.event_times[0];
    assert!(
        call.start < first_token && first_token <= call.end,
        "{call:?}"
    );
    assert!(server.end >= call.end, "{server:?} {call:?}");
    let completion = usage_is_the_spend_rows(call, &db, &stream_id).await;
    assert!(completion > 0);

    // The refusal: admission said no, its audit record was queued, no model was called.
    let (server, trace) = trace_of(&spans, &refused_id, "audit").await;
    assert_eq!(server.attr("http.response.status_code"), Some("403"));
    let verdict = server.attr("llmlite.admission").unwrap();
    assert_ne!(verdict, "admitted");
    assert_eq!(server.attr("error.type"), Some(verdict));
    assert!(
        trace.iter().all(|s| s.kind != CLIENT),
        "no model call: {trace:?}"
    );
    let names: Vec<&str> = children(&trace, &server)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        names.contains(&"admission") && names.contains(&"audit"),
        "{names:?}"
    );

    // A traceparent that is not one (bad hex, the all-zero trace ID) starts a trace of its own.
    for bad in [
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "not a traceparent at all",
    ] {
        let reply = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .header("traceparent", bad)
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 8,
                          "messages": [{"role": "user", "content": SECRET}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{bad}");
        let (server, _) = trace_of(&spans, &request_id(&reply), "settlement").await;
        assert!(server.parent.is_empty(), "{bad}: {server:?}");
        assert_ne!(server.trace_id, "0".repeat(32));
    }

    // No prompt text and no key anywhere.
    let all = spans.lock().unwrap().clone();
    for span in &all {
        for (name, value) in &span.attributes {
            assert!(
                !value.contains(SECRET),
                "{name} of {} holds prompt text",
                span.name
            );
            assert!(
                !value.contains(&key) && !value.contains("sk-"),
                "{name} of {} holds a key",
                span.name
            );
        }
        for event in &span.events {
            assert!(
                !event.contains(SECRET),
                "an event of {} holds prompt text",
                span.name
            );
        }
    }

    dev.stop().await;
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_requests_nothing_and_is_logged_once() {
    let (endpoint, spans) = receiver().await;
    let live = Dev::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let log =
        std::env::temp_dir().join(format!("llmlite-dead-collector-{}.log", std::process::id()));
    let dead_endpoint = black_hole().await;
    let dead = Dev::start_logging(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead_endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    )
    .await;
    let client = reqwest::Client::new();
    let keys = [
        live.team_key(&client, "search", &["claude-haiku-4-5"])
            .await,
        dead.team_key(&client, "search", &["claude-haiku-4-5"])
            .await,
    ];
    let gateways = [&live, &dead];
    // Side by side: the two gateways' requests interleaved, so both see the same machine.
    let mut took: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for n in 0..60 {
        for (i, gateway) in gateways.iter().enumerate() {
            let started = Instant::now();
            let reply = client
                .post(format!("http://{}/v1/chat/completions", gateway.addr))
                .bearer_auth(&keys[i])
                .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 8,
                              "messages": [{"role": "user", "content": format!("n {n}")}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            reply.bytes().await.unwrap();
            took[i].push(started.elapsed());
        }
    }
    let p50 = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let worst = |times: &[Duration]| times.iter().max().copied().unwrap_or_default();
    let (live_worst, dead_worst) = (worst(&took[0]), worst(&took[1]));
    let (live_p50, dead_p50) = (p50(&mut took[0]), p50(&mut took[1]));
    eprintln!(
        "p50 with a live collector {live_p50:?}, with one that never answers {dead_p50:?}; \
         slowest {live_worst:?} and {dead_worst:?}"
    );
    // Export waits up to its 1 s timeout per batch on the dead collector: had any request
    // waited for it, it would show here. (A blocking bound, not a timing claim: the figures
    // are printed above, and the overhead is measured by the hot_path bench.)
    assert!(
        dead_p50 < live_p50 + Duration::from_millis(200),
        "{dead_p50:?} vs {live_p50:?}"
    );
    assert!(dead_worst < Duration::from_millis(900), "{dead_worst:?}");
    assert!(
        !spans.lock().unwrap().is_empty(),
        "the live gateway exported"
    );
    // Several batches failed; the log says so once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    dead.stop().await;
    live.stop().await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.matches("traces not exported").count(), 1, "{logged}");
}

/// A client that hangs up mid-stream, with traces on: the request still settles once (as
/// `client_closed`) and its trace still ends, with the settlement after it.
#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_still_ends_its_trace_and_pays_once() {
    let (endpoint, spans) = receiver().await;
    let gw = llmlite_tests::TestGateway::start().await;
    let (_serve, base) = llmlite_tests::spawn_serve(
        std::path::Path::new(common::LLMLITE),
        &gw.db.url,
        &gw.double.endpoint(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let minted = gw.mint_key(json!({"max_budget": 5})).await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();
    // A slow answer: one word a delta, 200 ms apart.
    gw.script(json!([{"event_gap_ms": 200}])).await;
    let body = json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 400,
                      "messages": [{"role": "user", "content": "lorem ipsum dolor sit amet ".repeat(50)}]})
    .to_string();
    let received = common::hang_up_after(
        &base,
        key,
        "/v1/chat/completions",
        &body,
        "\"content\":\"echo",
    )
    .await;
    let id = received
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id")
        .trim()
        .to_owned();
    let (server, trace) = trace_of(&spans, &id, "settlement").await;
    assert_eq!(server.attr("llmlite.status"), Some("client_closed"));
    let call = children(&trace, &server)
        .into_iter()
        .find(|s| s.kind == CLIENT)
        .expect("the Bedrock attempt");
    assert!(call.end >= call.event_times[0], "{call:?}");
    llmlite_tests::wait_until_settled(&gw.db.pool).await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT request_id, status FROM litellm_spend WHERE api_key = $1")
            .bind(token)
            .persistent(false)
            .fetch_all(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(id, "client_closed".to_owned())], "paid once");
}
