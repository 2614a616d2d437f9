//! The HTTP router, over real HTTP: unknown routes, wrong methods, oversized and malformed bodies
//! all get OpenAI-shaped errors with the right status, and nothing panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use axum::Router;
use axum::routing::{get, post};
use llmlite::all_routes;
use llmlite::http::{ApiJson, MAX_BODY_BYTES, finish};
use llmlite_tests::{TestDb, serve};
use serde::Deserialize;
use serde_json::{Value, json};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "status {status}"
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(body["error"]["code"], status.to_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn unknown_routes_are_json_404_wherever_the_alb_would_send_them() {
    let db = TestDb::new().await;
    let addr = serve(all_routes(db.state().await)).await;
    let client = reqwest::Client::new();
    for path in [
        "/",
        "/nope",
        "/v1/nothing-here",
        "/key/nothing",
        "/healthz",
        "/V1/models",
    ] {
        let (status, body) = error_of(
            client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["type"], "not_found_error", "{path}");
    }
}

#[tokio::test]
async fn wrong_method_is_json_405() {
    let db = TestDb::new().await;
    let addr = serve(all_routes(db.state().await)).await;
    let client = reqwest::Client::new();
    for (method, path) in [
        ("POST", "/health"),
        ("DELETE", "/health/readiness"),
        ("PUT", "/health/liveliness"),
    ] {
        let request = client.request(method.parse().unwrap(), format!("http://{addr}{path}"));
        let (status, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(body["error"]["type"], "method_not_allowed");
    }
}

#[tokio::test]
async fn bodies_over_one_megabyte_are_json_413_on_every_path() {
    let db = TestDb::new().await;
    let addr = serve(all_routes(db.state().await)).await;
    let client = reqwest::Client::new();
    let big = vec![b'x'; MAX_BODY_BYTES + 1];
    for path in [
        "/v1/chat/completions",
        "/key/generate",
        "/health",
        "/elsewhere",
    ] {
        let response = client
            .post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(response).await;
        assert_eq!(status, 413, "{path}");
        assert_eq!(body["error"]["type"], "request_too_large");
    }
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "only parsed")]
struct Shaped {
    model: String,
    max_tokens: u32,
}

/// A route mounted with the gateway's own layers, to exercise the JSON extractor end to end.
fn json_routes() -> Router {
    finish(
        Router::new()
            .route(
                "/echo",
                post(|ApiJson(v): ApiJson<Value>| async move { axum::Json(v) }),
            )
            .route(
                "/shaped",
                post(|ApiJson(_): ApiJson<Shaped>| async { "ok" }),
            )
            .route("/boom", get(boom)),
    )
}

#[tokio::test]
async fn malformed_bodies_are_400s_that_say_what_is_wrong() {
    let addr = serve(json_routes()).await;
    let client = reqwest::Client::new();
    let post = |path: &str, content_type: Option<&str>, body: &'static str| {
        let mut request = client.post(format!("http://{addr}{path}")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };

    let (status, body) = error_of(
        post("/echo", Some("application/json"), "{\"a\": ")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );

    let (status, body) = error_of(post("/echo", Some("text/plain"), "{}").await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text/plain"),
        "{body}"
    );

    let (status, body) = error_of(post("/echo", None, "{}").await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no content type"),
        "{body}"
    );

    let (status, body) = error_of(post("/echo", Some("application/json"), "").await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("empty"),
        "{body}"
    );

    let (status, body) = error_of(
        post("/shaped", Some("application/json"), r#"{"model": "m"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{body}"
    );

    // A key pasted into the wrong field is not echoed back.
    let (status, body) = error_of(
        post(
            "/shaped",
            Some("application/json"),
            r#"{"model": "m", "max_tokens": "sk-live-0123456789abcdef"}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(!body.to_string().contains("0123456789abcdef"), "{body}");

    let ok = post(
        "/echo",
        Some("application/json; charset=utf-8"),
        r#"{"a": [1, 2]}"#,
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"a": [1, 2]}));
}

#[tokio::test]
async fn a_body_without_a_length_is_still_cut_off_at_the_limit() {
    let addr = serve(json_routes()).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..17).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/echo"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    let (status, _) = error_of(response).await;
    assert_eq!(status, 413);
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::iter(chunks)
}

async fn boom() -> &'static str {
    panic!("a bug")
}

#[tokio::test]
async fn a_panicking_handler_is_a_json_500_and_the_server_lives_on() {
    let addr = serve(json_routes()).await;
    let client = reqwest::Client::new();
    let (status, body) = error_of(
        client
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["message"], "internal server error");
    let again = client
        .post(format!("http://{addr}/echo"))
        .header("content-type", "application/json")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// The template's listener rules: `(priority, patterns, target function)`, by priority.
fn template_listener_rules() -> Vec<(u64, Vec<String>, llmlite::routes::Function)> {
    use llmlite::routes::Function;
    let template = llmlite_tests::template();
    let resources = template["Resources"].as_object().expect("Resources");
    let function_of_group = |group: &str| -> Function {
        let targets = &resources[group]["Properties"]["Targets"];
        match targets[0]["Id"]["Fn::GetAtt"].as_str() {
            Some("ChatFunction.Arn") => Function::Chat,
            Some("KeyAdminFunction.Arn") => Function::KeyAdmin,
            Some("HealthFunction.Arn") => Function::Health,
            _ => panic!("{group} targets {targets}"),
        }
    };
    let mut rules: Vec<_> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule")
        .map(|(name, r)| {
            let p = &r["Properties"];
            assert_eq!(p["ListenerArn"]["Ref"], "HttpsListener", "{name}");
            let priority = p["Priority"].as_u64().expect(name);
            let conditions = p["Conditions"].as_array().expect(name);
            assert_eq!(conditions.len(), 1, "{name}");
            assert_eq!(conditions[0]["Field"], "path-pattern", "{name}");
            let patterns = conditions[0]["PathPatternConfig"]["Values"]
                .as_array()
                .expect(name)
                .iter()
                .map(|v| v.as_str().expect(name).to_owned())
                .collect();
            let actions = p["Actions"].as_array().expect(name);
            assert_eq!(actions.len(), 1, "{name}");
            assert_eq!(actions[0]["Type"], "forward", "{name}");
            let group = actions[0]["TargetGroupArn"]["Ref"].as_str().expect(name);
            (priority, patterns, function_of_group(group))
        })
        .collect();
    rules.sort_by_key(|(priority, _, _)| *priority);
    rules
}

#[test]
fn the_templates_listener_rules_are_the_routers_path_patterns() {
    let rules = template_listener_rules();
    assert!(rules.len() >= 3, "{rules:?}");
    let from_template: Vec<(String, llmlite::routes::Function)> = rules
        .into_iter()
        .flat_map(|(_, patterns, function)| patterns.into_iter().map(move |p| (p, function)))
        .collect();
    let from_code: Vec<(String, llmlite::routes::Function)> = llmlite::routes::ALB_PATH_PATTERNS
        .iter()
        .map(|(pattern, function)| ((*pattern).to_owned(), *function))
        .collect();
    assert_eq!(from_template, from_code);
}

/// Every answer, success or error, on every function's paths, says: HTTPS only, and no sniffing.
#[tokio::test]
async fn every_response_carries_hsts_and_nosniff() {
    let db = TestDb::new().await;
    let addr = serve(all_routes(db.state().await)).await;
    let client = reqwest::Client::new();
    for (path, status) in [
        ("/health", 200),
        ("/health/readiness", 200),
        ("/v1/models", 401),
        ("/key/list", 401),
        ("/ui/login", 200),
        ("/nope", 404),
    ] {
        let response = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let headers = response.headers();
        assert_eq!(
            headers["strict-transport-security"],
            llmlite::http::HSTS,
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(
            headers.get_all("strict-transport-security").iter().count(),
            1
        );
    }
}

/// The ALB's health checks of the chat and key-admin target groups ask those functions for
/// `/health` (template.yaml); each answers it without its database.
#[tokio::test]
async fn the_chat_and_key_admin_functions_answer_their_health_checks() {
    let db = TestDb::new().await;
    let state = db
        .state_with(&[("DATABASE_URL", "postgres://nobody@127.0.0.1:9/nowhere")])
        .await;
    for router in [
        llmlite::chat_routes(state.clone()),
        llmlite::admin_routes(state.clone()),
    ] {
        let addr = serve(router).await;
        let response = reqwest::get(format!("http://{addr}/health")).await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "healthy");
    }
}
