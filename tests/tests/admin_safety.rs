//! The admin API next to live traffic: info reads and writes never deadlock with chat
//! admission and settlement, and caller-chosen keys stay inside the redactor's alphabet. (How
//! admin actions are shipped is in `audit.rs`.)
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
            let (status, body) = gw
                .post("/v1/chat/completions", &key, body)
                .await
                .status_and_json();
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
            let (status, body) = gw.get(&path, MASTER_KEY).await.status_and_json();
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
            let (status, body) = gw.post(path, MASTER_KEY, body).await.status_and_json();
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

#[tokio::test]
async fn a_chosen_key_outside_the_redactors_alphabet_is_refused_without_being_echoed() {
    let gw = TestGateway::start().await;
    let existing = gw.mint_key(json!({})).await;
    let token = existing["token"].as_str().unwrap();
    let long = format!("sk-{}", "a".repeat(201));
    let refused = [
        "sk-nul\u{0}in-the-middle-0001",
        "sk-a space in-the-middle-0001",
        "sk-tab\tin-the-middle-00000001",
        "sk-unicode-ключ-in-the-middle-01",
        "sk-emoji-🔑-in-the-middle-0001",
        "sk-dotted.key.in.the.middle.01",
        "sk-slash/and/quote\"0000000001",
        "sk-ends-in-punctuation-0001!",
        "sk-short",
        "sk-",
        "sk-0123456789abcde",
        long.as_str(),
        "pk-not-even-the-prefix-00001",
    ];
    for key in refused {
        let (status, body) = gw
            .post("/key/generate", MASTER_KEY, json!({"key": key}))
            .await
            .status_and_json();
        assert_eq!(status, 400, "{key:?}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{key:?}");
        assert_eq!(body["error"]["param"], "key", "{key:?}");
        let message = body["error"]["message"].as_str().unwrap();
        let secret = key.get(3..).unwrap_or(key);
        assert!(
            secret.len() < 4 || !message.contains(secret),
            "{key:?} echoed: {message}"
        );

        let (status, body) = gw
            .post(
                "/key/regenerate",
                MASTER_KEY,
                json!({"key": token, "new_key": key}),
            )
            .await
            .status_and_json();
        assert_eq!(status, 400, "regenerate {key:?}: {body}");
        assert_eq!(body["error"]["param"], "new_key", "{key:?}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "nothing was stored");

    // The whole alphabet, at both ends of the length range, is accepted.
    for key in [
        "sk-ABCxyz_0123-7890".to_owned(),
        format!("sk-{}", "Z9_-".repeat(50)),
    ] {
        let minted = gw.mint_key(json!({"key": key})).await;
        assert_eq!(minted["key"], key.as_str());
    }
    let rotated = gw
        .admin(
            "/key/regenerate",
            json!({"key": token, "new_key": "sk-rotated_to-a-chosen-key-01"}),
        )
        .await;
    assert_eq!(rotated["key"], "sk-rotated_to-a-chosen-key-01");
}

/// A raw key in a URL (query or path) is refused on every route, in the route's error shape,
/// without echoing it; the key's hash works in its place, and `POST /key/info` takes the key in
/// its body.
#[tokio::test]
async fn a_raw_key_in_a_url_is_refused_without_being_echoed_and_its_hash_works() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"key_alias": "url-test"})).await;
    let hash = llmlite::keys::KeyHash::of(&key);
    let encoded = key.replace('-', "%2D");
    for (method, path, shape, param) in [
        (
            Method::GET,
            format!("/key/info?key={key}"),
            "openai",
            Some("key"),
        ),
        (
            Method::GET,
            format!("/key/info?key={encoded}"),
            "openai",
            Some("key"),
        ),
        (
            Method::GET,
            format!("/spend/logs?api_key={key}"),
            "openai",
            Some("api_key"),
        ),
        (
            Method::POST,
            format!("/key/{key}/regenerate"),
            "openai",
            None,
        ),
        (
            Method::GET,
            format!("/v1/models?key={key}"),
            "openai",
            Some("key"),
        ),
        (
            Method::POST,
            format!("/v1/messages?api_key={key}"),
            "anthropic",
            Some("api_key"),
        ),
        (
            Method::GET,
            format!("/ui/keys?q={key}"),
            "openai",
            Some("q"),
        ),
    ] {
        let response = gw
            .client
            .request(method.clone(), gw.url(&path))
            .bearer_auth(MASTER_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(&key[3..]),
            "{path}: the key was echoed: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        let message = match shape {
            "anthropic" => {
                assert_eq!(body["type"], "error", "{path}: {body}");
                body["error"]["message"].as_str().unwrap().to_owned()
            }
            _ => {
                assert_eq!(body["error"]["param"].as_str(), param, "{path}: {body}");
                body["error"]["message"].as_str().unwrap().to_owned()
            }
        };
        assert!(message.contains("request body"), "{path}: {message}");
        assert!(message.contains("hash"), "{path}: {message}");
    }

    // The hash in the URL, or the key in a body, reads the key.
    let (status, by_hash) = gw
        .get(&format!("/key/info?key={}", hash.as_str()), MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(status, 200, "{by_hash}");
    let (status, by_body) = gw
        .post("/key/info", MASTER_KEY, json!({"key": key}))
        .await
        .status_and_json();
    assert_eq!(status, 200, "{by_body}");
    assert_eq!(by_hash, by_body);
    assert_eq!(by_body["info"]["key_alias"], "url-test");
    // A key may read itself by body, too, and an unknown field is refused.
    let (status, own) = gw
        .post("/key/info", &key, json!({}))
        .await
        .status_and_json();
    assert_eq!(status, 200, "{own}");
    let (status, _) = gw
        .post("/key/info", MASTER_KEY, json!({"key": key, "extra": 1}))
        .await
        .status_and_json();
    assert_eq!(status, 400);
}

/// A number near `f64::MAX` in metadata (found by schemathesis) is refused with a 400, on a key
/// and on a chat request, instead of being stored where `jsonb` would write it back as a
/// 309-digit integer that no longer parses: the key would then answer 500 on every read.
#[tokio::test]
async fn metadata_numbers_that_would_not_read_back_are_refused() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({"key_alias": "huge"})).await;
    let huge = json!({"n": -1.797_693_134_862_315_5e308, "ok": 1});
    let reply = gw
        .post(
            "/key/update",
            MASTER_KEY,
            json!({"key": key, "metadata": {"nested": [huge.clone()]}}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json()["error"]["param"], "metadata");
    // The key still reads back, and still takes ordinary numbers.
    let info = gw.admin("/key/info", json!({"key": key})).await;
    assert_eq!(info["info"]["key_alias"], "huge");
    gw.admin(
        "/key/update",
        json!({"key": key, "metadata": {"n": 1.5e299, "i": -7}}),
    )
    .await;
    assert_eq!(
        gw.admin("/key/info", json!({"key": key})).await["info"]["metadata"]["i"],
        -7
    );

    let reply = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "metadata": huge,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json()["error"]["param"], "metadata");
    assert!(gw.bedrock_calls().await.is_empty());
}
