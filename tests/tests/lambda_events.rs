//! The `events/` fixtures, fed through the same adapter `lambda_http::run` wraps each function's
//! router in, and the ALB-shaped responses that come back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent};
use llmlite::health_routes;
use llmlite_tests::TestDb;
use serde_json::Value;
use tower::ServiceExt;

fn fixture(name: &str) -> LambdaEvent<LambdaRequest> {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let request: LambdaRequest = serde_json::from_str(&text).unwrap();
    LambdaEvent::new(request, Context::default())
}

async fn invoke(router: axum::Router, event: LambdaEvent<LambdaRequest>) -> Value {
    let adapter: Adapter<'_, _, _> = Adapter::from(router);
    let response = adapter.oneshot(event).await.unwrap();
    serde_json::to_value(&response).unwrap()
}

fn body_json(response: &Value) -> Value {
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn alb_health_events_get_alb_responses() {
    let db = TestDb::new().await;

    let response = invoke(health_routes(db.db.clone()), fixture("health-get.json")).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["statusDescription"], "200 OK");
    assert_eq!(response["headers"]["content-type"], "application/json");
    assert_eq!(body_json(&response)["status"], "healthy");

    let response = invoke(
        health_routes(db.db.clone()),
        fixture("health-readiness.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(body_json(&response)["db"], "ok");

    let response = invoke(
        health_routes(db.db.clone()),
        fixture("health-post-not-allowed.json"),
    )
    .await;
    assert_eq!(response["statusCode"], 405, "{response}");
    assert_eq!(body_json(&response)["error"]["type"], "method_not_allowed");
}
