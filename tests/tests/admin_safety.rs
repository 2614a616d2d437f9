//! The admin API next to live traffic: info reads and writes never deadlock with chat
//! admission and settlement,. (How admin actions are shipped is in
//! `audit.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use llmlite_tests::{MASTER_KEY, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};

/// `(status, body)` of one call with the master key or `key`.
async fn call(
    gw: &TestGateway,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = gw.client.request(method, gw.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn team_and_user_info_during_traffic_never_deadlock() {
    let gw = TestGateway::start_with(&[("LLMLITE_DB_POOL_SIZE", "8")]).await;
    gw.admin("/team/new", json!({"team_id": "busy-team"})).await;
    gw.admin(
        "/user/new",
        json!({"user_id": "busy-user", "teams": ["busy-team"], "auto_create_key": false}),
    )
    .await;
    let mut keys = Vec::new();
    for n in 0..6 {
        let minted = gw
            .mint_key(json!({"user_id": "busy-user", "team_id": "busy-team", "key_alias": format!("busy-{n}")}))
            .await;
        keys.push((
            minted["key"].as_str().unwrap().to_owned(),
            minted["token"].as_str().unwrap().to_owned(),
        ));
    }

    let chats = (0..200).map(|n| {
        let key = keys[n % keys.len()].0.clone();
        let gw = &gw;
        async move {
            let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                              "messages": [{"role": "user", "content": format!("busy {n}")}]});
            let (status, body) =
                call(gw, Method::POST, "/v1/chat/completions", &key, Some(body)).await;
            (format!("chat {n}"), status, body)
        }
    });
    let reads = (0..60).map(|n| {
        let token = keys[n % keys.len()].1.clone();
        let gw = &gw;
        async move {
            let path = match n % 3 {
                0 => "/team/info?team_id=busy-team".to_owned(),
                1 => "/user/info?user_id=busy-user".to_owned(),
                _ => format!("/key/info?key={token}"),
            };
            let (status, body) = call(gw, Method::GET, &path, MASTER_KEY, None).await;
            (path, status, body)
        }
    });
    let writes = (0..12).map(|n| {
        let token = keys[n % keys.len()].1.clone();
        let gw = &gw;
        async move {
            let (path, body) = match n % 3 {
                0 => (
                    "/team/update",
                    json!({"team_id": "busy-team", "team_alias": format!("busy {n}")}),
                ),
                1 => (
                    "/user/update",
                    json!({"user_id": "busy-user", "user_alias": format!("busy {n}")}),
                ),
                _ => (
                    "/key/update",
                    json!({"key": token, "metadata": {"round": n}}),
                ),
            };
            let (status, body) = call(gw, Method::POST, path, MASTER_KEY, Some(body)).await;
            (path.to_owned(), status, body)
        }
    });
    // Interleave the three kinds, then send them all at once.
    type Call<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (String, u16, Value)> + 'a>>;
    let mut all: Vec<Call<'_>> = Vec::new();
    let (mut chats, mut reads, mut writes) =
        (chats.peekable(), reads.peekable(), writes.peekable());
    while chats.peek().is_some() || reads.peek().is_some() || writes.peek().is_some() {
        for _ in 0..3 {
            if let Some(f) = chats.next() {
                all.push(Box::pin(f));
            }
        }
        if let Some(f) = reads.next() {
            all.push(Box::pin(f));
        }
        if let Some(f) = writes.next() {
            all.push(Box::pin(f));
        }
    }
    let results = join_all(all).await;
    let failures: Vec<String> = results
        .iter()
        .filter(|(_, status, _)| *status >= 500)
        .map(|(what, status, body)| format!("{what}: {status} {body}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} answers were 5xx:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
    for (what, status, body) in &results {
        assert_eq!(*status, 200, "{what}: {body}");
    }
    // Every chat is settled (settlement may land just after its answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let settled: i64 =
            sqlx::query_scalar("SELECT count(*) FROM litellm_spend WHERE team_id = 'busy-team'")
                .persistent(false)
                .fetch_one(&gw.db.pool)
                .await
                .unwrap();
        if settled == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{settled} of 200 chats settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
