//! The `llmlite` binary as a developer runs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Dev, EXIT_LIMIT, LLMLITE};
use llmlite_tests::{TestGateway, spawn_serve};
use serde_json::{Value, json};
use tokio::process::Command;

#[tokio::test]
async fn dev_runs_everything_embedded_and_cleans_up_on_sigterm() {
    let dev = Dev::start().await;
    let (addr, cluster_dir, master_key) = (
        dev.addr.clone(),
        dev.cluster_dir.clone(),
        dev.master_key.clone(),
    );
    assert!(
        master_key.starts_with("sk-") && master_key.len() >= 35,
        "{master_key}"
    );
    assert!(cluster_dir.join("data").is_dir());

    let health: Value = reqwest::get(format!("http://{addr}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
    let readiness = reqwest::get(format!("http://{addr}/health/readiness"))
        .await
        .unwrap();
    assert_eq!(readiness.status(), 200);
    assert_eq!(readiness.json::<Value>().await.unwrap()["db"], "ok");

    // The chat curl it printed works as pasted.
    let curl = Command::new("sh")
        .args(["-c", &dev.curl])
        .output()
        .await
        .unwrap();
    assert!(curl.status.success());
    let answer: Value = serde_json::from_slice(&curl.stdout).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], "echo: Hello",
        "{answer}"
    );

    dev.stop().await;
    assert!(!cluster_dir.exists(), "the throwaway cluster was removed");
    assert!(
        reqwest::get(format!("http://{addr}/health")).await.is_err(),
        "no longer serving"
    );
}

async fn run_failing(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(LLMLITE);
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("LITELLM_MASTER_KEY")
        .env_remove("LITELLM_MASTER_KEY_SECRET_ARN")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(EXIT_LIMIT, command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serve_and_migrate_refuse_bad_configuration_naming_the_variable() {
    let stderr = run_failing(&["migrate"], &[]).await;
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let stderr = run_failing(&["migrate"], &[("DATABASE_URL", "mysql://u:hunter2@h/db")]).await;
    assert!(
        stderr.contains("DATABASE_URL") && !stderr.contains("hunter2"),
        "{stderr}"
    );

    let stderr = run_failing(&["serve"], &[("DATABASE_URL", "postgres://127.0.0.1:9/db")]).await;
    assert!(stderr.contains("LITELLM_MASTER_KEY"), "{stderr}");

    let stderr = run_failing(
        &["serve"],
        &[
            ("DATABASE_URL", "postgres://127.0.0.1:9/db"),
            ("LITELLM_MASTER_KEY", "sk-short"),
        ],
    )
    .await;
    assert!(
        stderr.contains("LITELLM_MASTER_KEY") && !stderr.contains("sk-short"),
        "{stderr}"
    );

    let stderr = run_failing(
        &["serve"],
        &[
            ("DATABASE_URL", "postgres://127.0.0.1:9/db"),
            ("LITELLM_MASTER_KEY", llmlite_tests::MASTER_KEY),
            ("LLMLITE_MAX_CONCURRENCY", "lots"),
        ],
    )
    .await;
    assert!(stderr.contains("LLMLITE_MAX_CONCURRENCY"), "{stderr}");
}

#[tokio::test]
async fn serve_answers_at_most_llmlite_max_concurrency_requests_at_once() {
    // The in-process gateway provides the database, the Bedrock double and a key.
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    let (_serve, base) = spawn_serve(
        std::path::Path::new(LLMLITE),
        &gw.db.url,
        &gw.double.endpoint(),
        &[("LLMLITE_MAX_CONCURRENCY", "1")],
    )
    .await;
    let client = reqwest::Client::new();
    let ask = |text: &str| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "claude-sonnet-4-5",
                          "messages": [{"role": "user", "content": text}]}))
            .send()
    };

    let held = tokio::spawn(ask("[[latency:3000]] the one place"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.bedrock_calls().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first request never reached Bedrock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let over = ask("one too many").await.unwrap();
    assert!(!held.is_finished(), "refused while the place was taken");
    assert_eq!(over.status(), 503);
    assert_eq!(over.headers()["retry-after"], "1");
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"]["type"], "service_unavailable", "{body}");
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        gw.bedrock_calls().await.len(),
        1,
        "the refused one never reached Bedrock"
    );
}

#[tokio::test]
async fn audit_redrive_ships_the_outbox() {
    let db = llmlite_tests::TestDb::new().await;
    sqlx::query(
        "INSERT INTO llmlite_audit_outbox (object_key, record) VALUES
           ('audit/2026/11/29/request-20261129T000000.000Z-a.json', '{\"request_id\": \"a\"}'),
           ('audit/2026/11/29/request-20261129T000000.000Z-b.json', '{\"request_id\": \"b\"}')",
    )
    .persistent(false)
    .execute(&db.pool)
    .await
    .unwrap();
    // And a request record in the queue, too young and small to be due on its own.
    sqlx::query(
        "INSERT INTO llmlite_audit_queue (at, record) VALUES (now(), '{\"request_id\": \"q\"}')",
    )
    .persistent(false)
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = db.audit_dir();
    let output = Command::new(LLMLITE)
        .args(["audit", "redrive"])
        .env("DATABASE_URL", &db.url)
        .env("LITELLM_MASTER_KEY", llmlite_tests::MASTER_KEY)
        .env("LLMLITE_AUDIT_DIR", &dir)
        .env("AWS_ACCESS_KEY_ID", "LLMLITETEST")
        .env("AWS_SECRET_ACCESS_KEY", "llmlite-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for id in ["a", "b"] {
        let path = dir.join(format!(
            "audit/2026/11/29/request-20261129T000000.000Z-{id}.json"
        ));
        let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record["request_id"], id);
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM llmlite_audit_outbox")
        .persistent(false)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let queued = llmlite_tests::audit_records(&dir);
    assert!(
        queued
            .iter()
            .any(|(key, r)| r["request_id"] == "q" && key.ends_with(".jsonl")),
        "{queued:?}"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM llmlite_audit_queue")
        .persistent(false)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
