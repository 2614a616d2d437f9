//! A real Prometheus server (Debian's `prometheus`) scrapes `llmlite dev`'s `/metrics`
//! (`LLMLITE_METRICS_ADDR`, the listener `serve` and `dev` share), and its HTTP API is asked what
//! it saw: the request count and token totals equal the spend rows, a refusal is counted apart by
//! its reason, and the streamed request is in the time-to-first-token histogram.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Dev;
use llmlite_tests::free_port;
use serde_json::{Value, json};
use tokio::process::Command;

/// The single value of the instant query `query`, or `None` while Prometheus has none.
async fn query(client: &reqwest::Client, prometheus: &str, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let answer: Value = client
        .get(format!("{prometheus}/api/v1/query?query={encoded}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_real_prometheus_scrapes_serve_and_its_totals_equal_the_spend_rows() {
    let Ok(found) = Command::new("prometheus").arg("--version").output().await else {
        // As for the SDK tests (`llmlite_tests::tool_installed`): CI must run it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: apt-get install prometheus"
        );
        eprintln!("skipped: Debian's prometheus is not installed (.ci/run installs it)");
        return;
    };
    assert!(found.status.success());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let dev = Dev::start_with(&[("LLMLITE_METRICS_ADDR", &metrics_addr)]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", dev.addr);
    let key = dev.team_key(&client, "search", &["claude-haiku-4-5"]).await;

    // Three answers, one stream, and a refusal (a model the key may not use).
    for n in 0..3 {
        let reply = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 16,
                          "messages": [{"role": "user", "content": format!("count me {n}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let streamed = client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude-haiku-4-5", "max_tokens": 32, "stream": true,
                      "messages": [{"role": "user", "content": "stream me a few words"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(streamed.text().await.unwrap().contains("message_stop"));
    let refused = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // The spend rows, once all four have settled.
    let db = sqlx::PgPool::connect(&dev.database_url).await.unwrap();
    let rows = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let rows: (i64, i64, i64, rust_decimal::Decimal) = sqlx::query_as(
                "SELECT count(*), coalesce(sum(prompt_tokens), 0)::bigint,
                        coalesce(sum(completion_tokens), 0)::bigint, coalesce(sum(spend), 0)
                 FROM litellm_spend",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            if rows.0 == 4 {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("four spend rows");

    // Prometheus, scraping every second.
    let dir = std::env::temp_dir().join(format!("llmlite-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: llmlite\n    \
             static_configs:\n      - targets: ['{metrics_addr}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let prometheus = format!("http://{web}");
    let counted = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(n) = query(&client, &prometheus, "sum(llmlite_requests_total)").await
                && n >= 4.0
            {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("Prometheus scraped the four requests");

    let (count, prompt, completion, spend) = rows;
    assert_eq!(counted, count as f64);
    let tokens = |direction: &str| {
        format!("sum(llmlite_tokens_total{{team=\"search\",direction=\"{direction}\"}})")
    };
    assert_eq!(
        query(&client, &prometheus, &tokens("input")).await,
        Some(prompt as f64)
    );
    assert_eq!(
        query(&client, &prometheus, &tokens("output")).await,
        Some(completion as f64)
    );
    let spent = query(&client, &prometheus, "sum(llmlite_spend_usd_total)")
        .await
        .unwrap();
    let exact: f64 = spend.to_string().parse().unwrap();
    assert!((spent - exact).abs() < 1e-9, "{spent} vs {exact}");
    for (asked, expected) in [
        (
            "sum(llmlite_admission_refusals_total{reason=\"model_not_allowed\"})",
            1.0,
        ),
        (
            "sum(llmlite_time_to_first_token_seconds_count{route=\"anthropic_messages\"})",
            1.0,
        ),
        (
            "sum(llmlite_requests_total{route=\"acompletion\",status=\"200\"})",
            3.0,
        ),
        ("llmlite_settlement_outbox_depth", 0.0),
    ] {
        assert_eq!(
            query(&client, &prometheus, asked).await,
            Some(expected),
            "{asked}"
        );
    }

    // `/metrics` is not on the gateway's own listener (the ALB's).
    let gateway = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(gateway.status(), 404);

    server.kill().await.unwrap();
    dev.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
