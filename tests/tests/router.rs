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

/// The template's listener rules, read as text: `(priority, patterns, target function)`.
fn template_listener_rules() -> Vec<(u32, Vec<String>, llmlite::routes::Function)> {
    use llmlite::routes::Function;
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml beside the workspace");
    // Top-level resources are the two-space-indented `Name:` lines; a block runs to the next one.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in template.lines() {
        let top = line
            .strip_prefix("  ")
            .filter(|rest| !rest.starts_with(' '));
        match top.and_then(|rest| rest.strip_suffix(':')) {
            Some(name) if !name.contains(' ') && !name.is_empty() => {
                blocks.push((name.to_owned(), String::new()));
            }
            _ => {
                if let Some((_, body)) = blocks.last_mut() {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    let field = |body: &str, key: &str| -> Option<String> {
        body.lines()
            .find_map(|line| line.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let function_of_group = |group: &str| -> Function {
        let body = &blocks
            .iter()
            .find(|(name, _)| name == group)
            .expect(group)
            .1;
        let targets = field(body, "Targets:").expect("target group has Targets");
        match targets.as_str() {
            "[{Id: !GetAtt ChatFunction.Arn}]" => Function::Chat,
            "[{Id: !GetAtt KeyAdminFunction.Arn}]" => Function::KeyAdmin,
            "[{Id: !GetAtt HealthFunction.Arn}]" => Function::Health,
            other => panic!("{group} targets {other}"),
        }
    };
    let mut rules: Vec<_> = blocks
        .iter()
        .filter(|(_, body)| body.contains("Type: AWS::ElasticLoadBalancingV2::ListenerRule"))
        .map(|(name, body)| {
            let priority: u32 = field(body, "Priority:").expect(name).parse().expect(name);
            let conditions = field(body, "Conditions:").expect(name);
            let values = conditions
                .split_once("Values: [")
                .and_then(|(_, rest)| rest.split_once(']'))
                .expect(name)
                .0;
            let patterns = values
                .split(',')
                .map(|p| p.trim().trim_matches('"').to_owned())
                .collect();
            let actions = field(body, "Actions:").expect(name);
            let group = actions
                .split_once("TargetGroupArn: !Ref ")
                .and_then(|(_, rest)| rest.split_once('}'))
                .expect(name)
                .0
                .trim();
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
