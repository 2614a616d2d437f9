//! Nothing secret reaches the logs: a real `llmlite serve` at debug level, driven with a known
//! raw key, the master key and a prompt marker, and every line it wrote searched for them. Its
//! EMF metric lines are checked on the way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::LLMLITE;
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const MARKER: &str = "ZEBRA-MARKER-7781";

#[tokio::test]
async fn no_key_and_no_prompt_is_ever_logged() {
    let gw = TestGateway::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let audit = std::env::temp_dir().join(format!("llmlite-audit-redaction-{port}"));
    let mut child = Command::new(LLMLITE)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &gw.db.url)
        .env("LITELLM_MASTER_KEY", MASTER_KEY)
        .env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", gw.double.endpoint())
        .env("AWS_REGION", "eu-west-2")
        .env("AWS_ACCESS_KEY_ID", "LLMLITETEST")
        .env("AWS_SECRET_ACCESS_KEY", "llmlite-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("LLMLITE_AUDIT_DIR", &audit)
        .env("LLMLITE_EMF", "true")
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let err = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    while client.get(format!("{base}/health")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let minted: Value = client
        .post(format!("{base}/key/generate"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"key_alias": "redaction", "rpm_limit": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let raw = minted["key"].as_str().unwrap().to_owned();
    for n in 0..5 {
        let response = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&raw)
            .json(&json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": format!("{MARKER} {n}")}]}))
            .send()
            .await
            .unwrap();
        assert!(response.status() == 200 || response.status() == 429);
    }
    for (path, body, status) in [
        ("/key/update", json!({"key": raw, "tpm_limit": 9}), 200),
        ("/key/info", json!({"key": raw}), 200),
        // In a URL the key is refused (URLs are logged by whatever is in front).
        ("/key/info", Value::Null, 400),
        ("/key/block", json!({"key": raw}), 200),
    ] {
        let request = if body.is_null() {
            client.get(format!("{base}{path}?key={raw}"))
        } else {
            client.post(format!("{base}{path}")).json(&body)
        };
        assert_eq!(
            request
                .bearer_auth(MASTER_KEY)
                .send()
                .await
                .unwrap()
                .status(),
            status,
            "{path}"
        );
    }
    // A refused key, a wrong master key and a key in the wrong place still leave no trace.
    let wrong = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-wrong-secret-key-5550001")
        .json(&json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": MARKER}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let misplaced = client
        .post(format!("{base}/key/generate"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"key_alias": raw}))
        .send()
        .await
        .unwrap();
    assert_eq!(misplaced.status(), 200);

    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    child.wait().await.unwrap();
    let (stdout, stderr) = (out.await.unwrap(), err.await.unwrap());
    let logs = format!("{stdout}\n{stderr}");
    assert!(logs.lines().count() > 20, "debug logs were captured");
    for secret in [
        &raw[3..],
        &MASTER_KEY[3..],
        "wrong-secret-key-5550001",
        MARKER,
        "Bearer ",
    ] {
        assert!(!logs.contains(secret), "{secret} was logged");
    }

    // One EMF line per chat request (5 with the key, 1 refused), each well-formed.
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 6, "{stdout}");
    for line in &emf {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "LLMLite");
        for metric in directive["Metrics"].as_array().unwrap() {
            assert!(line[metric["Name"].as_str().unwrap()].is_number());
        }
    }
    assert_eq!(
        emf.iter().filter(|l| l["Throttled"] == 1).count(),
        2,
        "rpm 3 of 5"
    );
    assert_eq!(emf.iter().filter(|l| l["AuthFailures"] == 1).count(), 1);
    let _ = std::fs::remove_dir_all(audit);
}
