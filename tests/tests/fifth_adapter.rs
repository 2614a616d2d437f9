//! A fifth API, written here in the test crate as a pipeline adapter and nothing more: `POST
//! /v1/echo` answers with the text it was sent, without calling a model. It gets what every API
//! gets from the pipeline, with no change to the pipeline's code: authentication, the model
//! allow-list, rate limits, budgets, the PII guard on the prompt and on the answer, settlement
//! exactly once, the audit record, and errors in the shape it chooses (Anthropic's, here).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;
use llmlite::catalog::{ModelEntry, TokenUsage};
use llmlite::clients::bedrock::Candidate;
use llmlite::error::{ApiError, ErrorShape, Refusal};
use llmlite::pii::{OutputGuard, Policy, Report, Scanner};
use llmlite::pipeline::call::{self, AnswerBody, Answered};
use llmlite::pipeline::{self, Accounting, Adapter, Call, Invocation, Models};
use llmlite::record::CallType;
use llmlite::state::AppState;
use llmlite_tests::{KeyBy, MASTER_KEY, TestGateway, serve};
use serde_json::{Value, json};

/// The echo API: `{"model", "text", "user"?}` in, `{"echo": text}` out.
#[derive(Default)]
struct Echo;

struct EchoRequest {
    model: String,
    text: String,
    user: Option<String>,
}

struct EchoPlanned {
    model: Arc<ModelEntry>,
}

impl Candidate for EchoPlanned {
    fn model(&self) -> &Arc<ModelEntry> {
        &self.model
    }

    fn max_tokens(&self) -> u32 {
        16
    }
}

struct EchoBody(String);

impl AnswerBody for EchoBody {
    fn screen(&mut self, output: &mut OutputGuard) {
        output.text(&mut self.0);
    }

    fn texts(&mut self) -> Vec<&mut String> {
        vec![&mut self.0]
    }

    fn into_bytes(self) -> Vec<u8> {
        json!({ "echo": self.0 }).to_string().into_bytes()
    }
}

impl Adapter for Echo {
    type Body = Value;
    type Request = EchoRequest;
    type Planned = EchoPlanned;

    const CALL_TYPE: CallType = CallType::Acompletion;
    const SHAPE: ErrorShape = ErrorShape::Anthropic;
    const MODELS: Models = Models::Chat;

    fn parse(&mut self, body: Value, _headers: &HeaderMap) -> Result<EchoRequest, ApiError> {
        let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let request = EchoRequest {
            model: field("model").ok_or_else(|| ApiError::invalid_param("model", "required"))?,
            text: field("text").ok_or_else(|| ApiError::invalid_param("text", "required"))?,
            user: field("user"),
        };
        pipeline::check_end_user(request.user.as_deref(), "user")?;
        Ok(request)
    }

    fn model(request: &EchoRequest) -> &str {
        &request.model
    }

    fn estimate(request: &EchoRequest) -> u64 {
        request.text.len().div_ceil(4) as u64
    }

    fn accounting(request: &EchoRequest) -> Accounting {
        Accounting {
            end_user: request.user.clone(),
            metadata: None,
        }
    }

    fn plan(
        &self,
        _state: &AppState,
        _request: &EchoRequest,
        chain: &[Arc<ModelEntry>],
        _invocation: &Invocation,
    ) -> Result<Vec<EchoPlanned>, ApiError> {
        Ok(chain
            .iter()
            .map(|model| EchoPlanned {
                model: Arc::clone(model),
            })
            .collect())
    }

    fn guard_pii(request: &mut EchoRequest, scanner: &Scanner, policy: &Policy) -> Report {
        scanner.guard_texts(std::iter::once(&mut request.text), policy)
    }

    fn guardrail_texts(request: &mut EchoRequest) -> Vec<&mut String> {
        vec![&mut request.text]
    }

    async fn respond(&self, call: Call<Self>) -> Result<Response, Refusal> {
        let upstream = std::time::Instant::now();
        let model = Arc::clone(&call.plan[0].model);
        let tokens = call.request.text.len().div_ceil(4) as u64;
        let answered = Ok(Answered {
            model,
            usage: TokenUsage {
                input: tokens,
                output: tokens,
                ..TokenUsage::default()
            },
            body: EchoBody(call.request.text.clone()),
            headers: HeaderMap::new(),
        });
        call::complete(call, answered, upstream).await
    }
}

/// The gateway's state served with one extra route, the echo API's.
async fn echo_gateway(gw: &TestGateway) -> String {
    let router = Router::new()
        .route("/v1/echo", post(pipeline::handler::<Echo>))
        .with_state(gw.state.clone());
    let addr = serve(llmlite::http::finish(router)).await;
    format!("http://{addr}/v1/echo")
}

async fn echo(gw: &TestGateway, url: &str, key: &str, body: Value) -> (u16, Value) {
    let response = gw
        .client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_fifth_adapter_gets_limits_pii_settlement_and_audit_from_the_pipeline() {
    let gw = TestGateway::start_with(&[("LLMLITE_PII_SCAN_OUTPUT", "true")]).await;
    let url = echo_gateway(&gw).await;
    let minted = gw
        .mint_key(
            json!({"rpm_limit": 2, "models": ["claude-sonnet-4-5"], "max_budget": 10,
                   "pii_policy": {"CREDIT_CARD": "MASK"}}),
        )
        .await;
    let key = minted["key"].as_str().unwrap().to_owned();

    // Authentication, in the shape the adapter chose.
    let response = gw.client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    // Bad input is refused before anything is taken: no spend row, no rate-limit token.
    let (status, body) = echo(&gw, &url, &key, json!({"model": "claude-sonnet-4-5"})).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );

    // The model allow-list.
    let (status, _) = echo(
        &gw,
        &url,
        &key,
        json!({"model": "claude-haiku-4-5", "text": "x"}),
    )
    .await;
    assert_eq!(status, 403);

    // The PII guard, with the global policy (cards are blocked) under the key's (masked).
    let blocked = gw
        .mint_raw_key(json!({"models": ["claude-sonnet-4-5"]}))
        .await;
    let (status, body) = echo(
        &gw,
        &url,
        &blocked,
        json!({"model": "claude-sonnet-4-5", "text": "my card 4539 1488 0343 6467"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CREDIT_CARD"),
        "{body}"
    );
    // The PII guard masks the prompt before the adapter sees it.
    let (status, body) = echo(
        &gw,
        &url,
        &key,
        json!({"model": "claude-sonnet-4-5", "text": "my card 4539 1488 0343 6467 thanks", "user": "qzq-user"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["echo"], "my card <CREDIT_CARD> thanks");

    // Rate limits: the key's RPM of 2 admits one more, then refuses with `retry-after`.
    let (status, _) = echo(
        &gw,
        &url,
        &key,
        json!({"model": "claude-sonnet-4-5", "text": "qzq two"}),
    )
    .await;
    assert_eq!(status, 200);
    let response = gw
        .client
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({"model": "claude-sonnet-4-5", "text": "qzq three"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Settlement: one spend row for each admitted request, the key's spend their sum, and every
    // parallel slot released.
    let rows = gw.spend_rows().await;
    // The blocked request, and the two the RPM admitted.
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0].status, "failure");
    let zero = rust_decimal::Decimal::ZERO;
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.status == "success" && r.spend > zero)
    );
    assert!(
        rows[1].metadata["llmlite_pii"]["CREDIT_CARD"].is_number(),
        "{:?}",
        rows[1].metadata
    );
    let token = minted["token"].as_str().unwrap();
    let total: rust_decimal::Decimal = rows[1..].iter().map(|r| r.spend).sum();
    assert_eq!(gw.key_spend(KeyBy::Token(token)).await, total);
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);

    // The audit trail: a record for each admitted request and each refusal after parsing
    // (allow-list, rate limit), without the card or the end user.
    gw.state.audit.ship_requests(true).await.unwrap();
    let records: Vec<Value> = llmlite_tests::audit_records(&gw.db.audit_dir())
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    for row in &rows {
        assert!(
            records
                .iter()
                .any(|r| r["request_id"] == row.request_id.as_str()),
            "{}",
            row.request_id
        );
    }
    // Three admitted, and two refused by admission (the allow-list, the rate limit).
    assert_eq!(records.len(), rows.len() + 2, "{records:?}");
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        !text.contains("4539 ") && !text.contains("qzq-user"),
        "{text}"
    );

    // The master key is served too.
    let (status, _) = echo(
        &gw,
        &url,
        MASTER_KEY,
        json!({"model": "claude-sonnet-4-5", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 200);
}
