//! Every admitted request pays exactly once, whatever the client, the model, the database or
//! the gateway's own code does (issue 13). Real PostgreSQL, the real gateway over HTTP, the
//! wire-level Bedrock double.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::str::FromStr;
use std::time::Duration;

use futures_util::future::join_all;
use llmlite_tests::{KeyBy, Outage, Reply, SpendRow, TestGateway, sse_data};
use rust_decimal::Decimal;
use serde_json::{Value, json};

async fn key_id(gw: &TestGateway, token: &str) -> i64 {
    sqlx::query_scalar("SELECT key_id FROM litellm_verificationtoken WHERE token = $1")
        .bind(token)
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap()
}

const CHAT: &str = "/v1/chat/completions";

fn ask(text: &str) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 64,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_nul_in_user_or_metadata_is_refused_before_anything_is_taken() {
    let gw = TestGateway::start().await;
    let minted = gw
        .mint_key(json!({"rpm_limit": 100, "tpm_limit": 100000, "max_parallel_requests": 1, "max_budget": 1}))
        .await;
    let key = minted["key"].as_str().unwrap();
    let with = |field: &str, value: Value, stream: bool| {
        let mut body = ask("hello");
        body[field] = value;
        body["stream"] = json!(stream);
        body
    };
    let hostile = [
        ("user", json!("a\u{0}b")),
        ("user", json!("bell\u{7}")),
        ("user", json!("x".repeat(257))),
        ("metadata", json!({"x": "a\u{0}b"})),
        ("metadata", json!({"a\u{1}": "b"})),
        ("metadata", json!({"deep": [{"x": ["\u{1b}[31m"]}]})),
    ];
    for stream in [false, true] {
        for (field, value) in &hostile {
            let response = gw.post(CHAT, key, with(field, value.clone(), stream)).await;
            assert_eq!(response.status, 400, "{field}: {value}");
            let body = response.json();
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["param"], *field);
            assert!(!body.to_string().contains('\u{0}'));
        }
    }
    gw.settled().await;
    // Nothing taken: no lease, no bucket, no spend row, no call to Bedrock.
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_rate_bucket").await,
        0
    );
    assert_eq!(gw.count("SELECT count(*) FROM litellm_spend").await, 0);
    assert!(gw.bedrock_calls().await.is_empty());

    // Tabs and newlines are text; a 256-character `user` is kept whole.
    let fine = gw
        .post(
            CHAT,
            key,
            with("user", json!(format!("{}\t\r\n", "u".repeat(253))), false),
        )
        .await;
    assert_eq!(fine.status, 200);
    gw.settled().await;
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].spend > Decimal::ZERO, "the accepted request paid");
}

#[tokio::test]
async fn a_panic_after_admission_releases_the_slot_and_settles_once() {
    let gw = TestGateway::start_adjusted(&[], |state| {
        state.hooks.panic_after_admission = true;
    })
    .await;
    let key = gw
        .mint_raw_key(json!({"max_parallel_requests": 1, "rpm_limit": 100}))
        .await;
    for _ in 0..3 {
        // Not 429: the first panic's slot came back.
        let response = gw.post(CHAT, &key, ask("boom")).await;
        assert_eq!(response.status, 500);
        let body = response.json();
        assert_eq!(body["error"]["type"], "internal_server_error");
        gw.settled().await;
    }
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 3, "one spend row each: {rows:?}");
    assert!(rows.iter().all(|r| r.status == "panic"), "{rows:?}");
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
    assert!(gw.bedrock_calls().await.is_empty());
}

#[tokio::test]
async fn an_upstream_stream_cut_settles_what_was_received() {
    let gw = TestGateway::start().await;
    let minted = gw.mint_key(json!({"tpm_limit": 100000})).await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();
    // messageStart, contentBlockStart... the stream breaks after six events.
    gw.script(json!([{"break_after": 6}])).await;
    let mut body = ask("one two three four five six seven eight nine ten");
    body["stream"] = json!(true);
    let response = gw.post(CHAT, key, body).await;
    assert_eq!(response.status, 200);
    let id = response.request_id();
    let events = sse_data(&response.text);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let deltas: Vec<String> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|c| !c.is_empty())
        .collect();
    assert!(!deltas.is_empty());
    // Without Bedrock's count: a delta is at least one token, four bytes a token otherwise.
    let bytes: usize = deltas.iter().map(String::len).sum();
    let received = (deltas.len() as i64).max(bytes.div_ceil(4) as i64);

    gw.settled().await;
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 1);
    let SpendRow {
        request_id: row_id,
        status,
        spend,
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..
    } = &rows[0];
    assert_eq!(
        (row_id.as_str(), status.as_str()),
        (id.as_str(), "upstream_cut")
    );
    // The prompt at admission's estimate (ceil(48 / 4) + 4 framing), the output relayed.
    assert_eq!(*prompt, 16);
    assert_eq!(*completion, received);
    // Haiku 4.5 in the EU: $1.10 in, $5.50 out per million.
    let expected = Decimal::from_str("0.0000011").unwrap() * Decimal::from(*prompt)
        + Decimal::from_str("0.0000055").unwrap() * Decimal::from(*completion);
    assert_eq!(*spend, expected);
    let id = key_id(&gw, token).await;
    assert_eq!(gw.key_spend(KeyBy::Id(id)).await, expected);
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
}

#[tokio::test]
async fn rotation_in_flight_keeps_the_spend() {
    let gw = TestGateway::start().await;
    let minted = gw.mint_key(json!({"max_budget": 1})).await;
    let key = minted["key"].as_str().unwrap().to_owned();
    let token = minted["token"].as_str().unwrap().to_owned();
    let id = key_id(&gw, &token).await;
    gw.script(json!([{"latency_ms": 1500}])).await;
    let slow = {
        let (client, url) = (gw.client.clone(), gw.url(CHAT));
        let key = key.clone();
        tokio::spawn(Reply::read(
            client
                .post(url)
                .bearer_auth(key)
                .json(&ask("rotate me while I think")),
        ))
    };
    // Admitted under the old token, then the key is regenerated while Bedrock thinks.
    while gw.count("SELECT count(*) FROM llmlite_inflight").await == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rotated = gw.admin("/key/regenerate", json!({"key": key})).await;
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    let response = slow.await.unwrap();
    assert_eq!(response.status, 200);
    let cost = Decimal::from_str(
        response.headers["x-litellm-response-cost"]
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert!(cost > Decimal::ZERO);
    gw.settled().await;
    // The spend landed on the key (now under its new token), not on a hash that is gone.
    assert_eq!(gw.key_spend(KeyBy::Id(id)).await, cost);
    let on_new = gw.key_spend(KeyBy::Token(&new_token)).await;
    assert_eq!(on_new, cost);
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status.as_str(), rows[0].spend), ("success", cost));
}

fn catalog_with_fallback() -> std::path::PathBuf {
    llmlite_tests::models_file(
        r#"
[[model]]
alias = "primary"
bedrock_model_id = "eu.anthropic.double-always-throttle"
max_output_tokens = 1000
context_window = 200000
prices = { input = "1", output = "5", cache_read = "0.1", cache_write = "1.25" }
fallbacks = ["dear-backup"]

[[model]]
alias = "dear-backup"
bedrock_model_id = "global.anthropic.double-backup"
max_output_tokens = 1000
context_window = 200000
prices = { input = "15", output = "75", cache_read = "1.5", cache_write = "18.75" }
"#,
    )
}

#[tokio::test]
async fn a_fallback_model_outside_the_allow_list_is_never_called() {
    let path = catalog_with_fallback();
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let body = json!({"model": "primary", "max_tokens": 1000,
                      "messages": [{"role": "user", "content": "fall back?"}]});

    // Allowed only the primary, with a budget its worst case fits but the backup's does not
    // ($0.005 against $0.075 for 1,000 output tokens): admitted, and only the primary is called.
    let narrow = gw
        .mint_raw_key(json!({"models": ["primary"], "max_budget": 0.01}))
        .await;
    let response = gw.post(CHAT, &narrow, body.clone()).await;
    assert_eq!(
        response.status, 429,
        "the primary is throttled, no fallback"
    );
    let models: Vec<String> = gw
        .bedrock_calls()
        .await
        .iter()
        .map(|c| c["model_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!models.is_empty());
    assert!(
        models
            .iter()
            .all(|m| m == "eu.anthropic.double-always-throttle"),
        "{models:?}"
    );

    // A team that allows only the primary narrows a key that allows both.
    gw.admin(
        "/team/new",
        json!({"team_id": "narrow-team", "models": ["primary"]}),
    )
    .await;
    let teamed = gw
        .mint_raw_key(json!({"team_id": "narrow-team", "models": ["primary", "dear-backup"]}))
        .await;
    assert_eq!(gw.post(CHAT, &teamed, body.clone()).await.status, 429);
    assert!(
        gw.bedrock_calls()
            .await
            .iter()
            .all(|c| c["model_id"] != "global.anthropic.double-backup")
    );

    // Allowed both, the reservation is the backup's worst case, which this budget cannot hold.
    let both = gw
        .mint_raw_key(json!({"models": ["primary", "dear-backup"], "max_budget": 0.01}))
        .await;
    let response = gw.post(CHAT, &both, body.clone()).await;
    assert_eq!(response.status, 403);
    let wide = gw
        .mint_raw_key(json!({"models": ["primary", "dear-backup"], "max_budget": 1}))
        .await;
    let response = gw.post(CHAT, &wide, body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["x-llmlite-served-model"], "dear-backup");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn an_expired_lease_is_charged_by_the_rollup() {
    let gw = TestGateway::start().await;
    let minted = gw
        .mint_key(json!({"user_id": "crash-user", "max_budget": 1}))
        .await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();
    let id = key_id(&gw, token).await;
    // An instance that admits a request and dies before it settles: admission's own SQL,
    // as the chat path calls it, and then nothing.
    let now = chrono::Utc::now();
    let admitted: (String,) = sqlx::query_as(
        "SELECT decision FROM llmlite_admit($1, '{claude-haiku-4-5}', '{0.0004}',
                'eu.anthropic.claude-haiku-4-5-20251001-v1:0', 'crashed-1', $2, 100, 0.00011,
                interval '15 minutes', 60)",
    )
    .bind(llmlite::keys::KeyHash::of(key).as_str())
    .bind(now)
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(admitted.0, "ok");

    let reports = llmlite::clients::audit::Sink::Directory(gw.db.audit_dir().join("reports"));
    // Before the lease ends the request may still settle: nothing is charged.
    let early = llmlite::rollup::run(&gw.state, &reports, 90, now + chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(early.leases_charged_lost, 0);
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 1);

    let late = now + chrono::Duration::minutes(16);
    let (a, b) = tokio::join!(
        llmlite::rollup::run(&gw.state, &reports, 90, late),
        llmlite::rollup::run(&gw.state, &reports, 90, late)
    );
    assert_eq!(
        a.unwrap().leases_charged_lost + b.unwrap().leases_charged_lost,
        1,
        "two concurrent rollups charge it once"
    );
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), 1);
    let expected = Decimal::from_str("0.00011").unwrap();
    assert_eq!(
        (
            rows[0].request_id.as_str(),
            rows[0].status.as_str(),
            rows[0].spend,
            rows[0].prompt_tokens
        ),
        ("crashed-1", "lost", expected, 100)
    );
    assert_eq!(gw.key_spend(KeyBy::Id(id)).await, expected);
    let user: Decimal =
        sqlx::query_scalar("SELECT spend FROM litellm_usertable WHERE user_id = 'crash-user'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(user, expected);
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
}

#[tokio::test]
async fn settlement_survives_a_database_outage() {
    survives_an_outage(|_| {}).await;
}

/// The same with `llmlite serve`'s group commit: the batches that cannot reach the database
/// hand each request its error, and each request's retry and the outbox take over; the rest of
/// the test's checks are the same.
#[tokio::test]
async fn settlement_in_batches_survives_a_database_outage() {
    let settled = survives_an_outage(|state| {
        state.settlements = state.settlements.clone().group_commit(64);
    })
    .await;
    assert!(
        settled.failed > 0 && settled.settled > 0,
        "the committer met the outage and settled after it: {settled:?}"
    );
}

async fn survives_an_outage(
    adjust: impl FnOnce(&mut llmlite::state::AppState),
) -> llmlite::settlement::GroupCommits {
    // The gateway reaches PostgreSQL through a forwarder the test can cut; the test's own pool
    // goes direct.
    let outage = Outage::forward(llmlite_tests::authority(llmlite_tests::server_url())).await;
    let db = llmlite_tests::TestDb::new().await;
    let via = llmlite_tests::with_authority(&db.url, outage.endpoint.trim_start_matches("http://"));
    let gw = TestGateway::start_on(db, &[("DATABASE_URL", &via)], adjust).await;
    let minted = gw
        .mint_key(json!({"max_budget": 10, "user_id": "outage-user"}))
        .await;
    let key = minted["key"].as_str().unwrap().to_owned();
    let token = minted["token"].as_str().unwrap().to_owned();
    let id = key_id(&gw, &token).await;

    // 60 requests admitted, then waiting on a slow model while the database goes away.
    gw.script(json!(vec![json!({"latency_ms": 2000}); 60]))
        .await;
    let in_flight: Vec<_> = (0..60)
        .map(|n| spawn_chat(&gw, &key, format!("during the outage {n}")))
        .collect();
    while gw.count("SELECT count(*) FROM llmlite_inflight").await < 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outage.cut();
    // New requests while it is away are refused, with a time to come back.
    let refused = join_all((0..5).map(|n| gw.post(CHAT, &key, ask(&format!("refused {n}"))))).await;
    for response in &refused {
        assert_eq!(response.status, 503, "{:?}", response.headers);
        assert!(response.headers.contains_key("retry-after"));
    }
    let mut answered = Vec::new();
    for task in in_flight {
        let response = task.await.unwrap();
        assert_eq!(response.status, 200);
        answered.push(response.request_id());
    }
    // Away for longer than the pool's acquire timeout, and than settlement's own retries.
    tokio::time::sleep(Duration::from_secs(12)).await;
    // By now settlement has given up on the database: the records wait in the outbox, in
    // memory and durably.
    assert!(gw.state.settlements.pending() > 0);
    let outbox = llmlite::clients::audit::Sink::Directory(gw.db.audit_dir());
    let kept = outbox
        .list(llmlite::settlement::OUTBOX_PREFIX)
        .await
        .unwrap();
    assert_eq!(kept.len(), gw.state.settlements.pending(), "{kept:?}");
    outage.restore();
    // The next settlement that succeeds replays what this instance kept.
    for n in 0..5 {
        let response = gw.post(CHAT, &key, ask(&format!("after {n}"))).await;
        assert_eq!(response.status, 200);
        answered.push(response.request_id());
        gw.settled().await;
    }
    assert_eq!(
        gw.state.settlements.pending(),
        0,
        "the in-memory outbox replayed"
    );
    // And the rollup replays the durable copies (a no-op for those already settled).
    let replay = gw.state.settlements.replay_outbox().await.unwrap();
    assert_eq!(replay.failed, 0);
    assert!(
        outbox
            .list(llmlite::settlement::OUTBOX_PREFIX)
            .await
            .unwrap()
            .is_empty(),
        "the outbox is empty"
    );

    let rows = gw.spend_rows().await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    answered.sort_unstable();
    assert_eq!(ids, answered, "one spend row per answered request");
    assert!(rows.iter().all(|r| r.status == "success"));
    let sum: Decimal = rows.iter().map(|r| r.spend).sum();
    assert_eq!(gw.key_spend(KeyBy::Id(id)).await, sum);
    let user: Decimal =
        sqlx::query_scalar("SELECT spend FROM litellm_usertable WHERE user_id = 'outage-user'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(user, sum);
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
    gw.state.settlements.group_commits()
}

fn spawn_chat(gw: &TestGateway, key: &str, text: String) -> tokio::task::JoinHandle<Reply> {
    let (client, url, key) = (gw.client.clone(), gw.url(CHAT), key.to_owned());
    tokio::spawn(Reply::read(
        client.post(url).bearer_auth(key).json(&ask(&text)),
    ))
}

/// The routes of issues #19 and #20 settle through the same guard: an embeddings batch, a
/// Responses answer and an answer the PII guard withholds (streamed), all in flight when the
/// database goes away for longer than settlement retries, each settle exactly once when it
/// comes back, and every slot is released.
#[tokio::test]
async fn embeddings_responses_and_withheld_answers_settle_once_across_a_database_outage() {
    use base64::Engine;
    let outage = Outage::forward(llmlite_tests::authority(llmlite_tests::server_url())).await;
    let gw = TestGateway::start_via(outage.endpoint.trim_start_matches("http://")).await;
    let minted = gw
        .mint_key(json!({"max_budget": 10, "pii_policy": {"CREDIT_CARD": "BLOCK", "output": true}}))
        .await;
    let key = minted["key"].as_str().unwrap().to_owned();
    let id = key_id(&gw, minted["token"].as_str().unwrap()).await;
    let card = base64::engine::general_purpose::STANDARD.encode("card 4539 1488 0343 6467");
    let requests = [
        (
            "/v1/embeddings",
            json!({"model": "cohere-embed-english-v3", "input": ["one [[latency:2000]]", "two"]}),
        ),
        (
            "/v1/responses",
            json!({"model": "claude-haiku-4-5", "input": "slow [[latency:2000]]"}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": true,
                   "messages": [{"role": "user", "content": format!("[[latency:2000]] [[say64:{card}]]")}]}),
        ),
    ];
    let in_flight: Vec<_> = requests
        .iter()
        .map(|(path, body)| {
            let request = gw.client.post(gw.url(path)).bearer_auth(&key).json(body);
            tokio::spawn(Reply::read(request))
        })
        .collect();
    while gw.count("SELECT count(*) FROM llmlite_inflight").await < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outage.cut();
    let mut answered = Vec::new();
    for task in in_flight {
        let response = task.await.unwrap();
        assert_eq!(response.status, 200);
        answered.push(response.request_id());
        let body = response.text;
        assert!(!body.contains("4539 "), "{body}");
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(gw.state.settlements.pending() > 0);
    outage.restore();
    let replay = gw.state.settlements.replay_outbox().await.unwrap();
    assert_eq!(replay.failed, 0);
    gw.settled().await;

    let rows = gw.spend_rows().await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    answered.sort_unstable();
    assert_eq!(ids, answered, "one spend row per request");
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "failure").count(),
        1,
        "{statuses:?}"
    );
    assert!(
        rows.iter().all(|r| r.spend > Decimal::ZERO),
        "every one paid: {rows:?}"
    );
    let sum: Decimal = rows.iter().map(|r| r.spend).sum();
    assert_eq!(gw.key_spend(KeyBy::Id(id)).await, sum);
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
}
