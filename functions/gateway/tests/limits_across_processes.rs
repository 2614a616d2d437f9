//! Rate limits hold across gateway processes: three `llmlite serve` processes share one
//! database; 60 concurrent clients of one key with `rpm_limit` 30 get exactly 30 answers, and a
//! `tpm_limit` admits exactly as many requests as its tokens cover.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{LLMLITE, STARTUP_LIMIT};
use futures_util::future::join_all;
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(gw: &TestGateway) -> (Child, String) {
    let port = free_port();
    let child = Command::new(LLMLITE)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &gw.db.url)
        .env("LITELLM_MASTER_KEY", MASTER_KEY)
        .env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", gw.double.endpoint())
        .env("AWS_REGION", "eu-west-2")
        .env("AWS_ACCESS_KEY_ID", "LLMLITETEST")
        .env("AWS_SECRET_ACCESS_KEY", "llmlite-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // A day-long refill period: the burst's few seconds refill nothing.
        .env("LLMLITE_RATE_PERIOD_SECS", "86400")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    tokio::time::timeout(STARTUP_LIMIT, async {
        while client.get(format!("{base}/health")).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("llmlite serve did not start");
    (child, base)
}

async fn mint(gw: &TestGateway, body: Value) -> String {
    let minted: Value = gw
        .client
        .post(gw.url("/key/generate"))
        .bearer_auth(MASTER_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    minted["key"].as_str().unwrap().to_owned()
}

/// Sends `count` concurrent chats of `text` as `key`, spread over the gateways; the statuses.
async fn burst(gateways: &[(Child, String)], key: &str, count: usize, text: &str) -> Vec<u16> {
    let client = reqwest::Client::new();
    let requests = (0..count).map(|n| {
        let url = format!("{}/v1/chat/completions", gateways[n % gateways.len()].1);
        let request = client
            .post(url)
            .bearer_auth(key)
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 16,
                          "messages": [{"role": "user", "content": text}]}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    join_all(requests).await
}

fn tally(statuses: &[u16]) -> (usize, usize) {
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    (ok, limited)
}

#[tokio::test]
async fn limits_are_exact_across_three_gateway_processes() {
    let gw = TestGateway::start().await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(serve(&gw).await);
    }

    let rpm_key = mint(&gw, json!({"rpm_limit": 30})).await;
    let statuses = burst(&gateways, &rpm_key, 60, "one request").await;
    assert_eq!(tally(&statuses), (30, 30), "{statuses:?}");

    // Five 4- and 5-letter words: admission estimates ceil(25 / 4) + 4 = 11 tokens, and the
    // double counts 5 in + 6 out = 11, so every admitted request takes exactly 11 of 110.
    let tpm_key = mint(&gw, json!({"tpm_limit": 110})).await;
    let statuses = burst(&gateways, &tpm_key, 30, "aaaa bbbb cccc dddd eeeee").await;
    assert_eq!(tally(&statuses), (10, 20), "{statuses:?}");

    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM litellm_spend WHERE status = 'success'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(rows, 40, "every admitted request was settled once");
}
