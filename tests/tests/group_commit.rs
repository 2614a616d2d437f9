//! Group commit (issue 27): `llmlite serve` settles the requests that finish together in one
//! transaction, and every request still pays exactly once. Real PostgreSQL, the real gateway
//! over HTTP, the wire-level Bedrock double.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use futures_util::future::join_all;
use llmlite::catalog::ModelAlias;
use llmlite::clients::audit::{Auditor, Sink};
use llmlite::clock::Clock;
use llmlite::error::ApiError;
use llmlite::http::RequestId;
use llmlite::money::Money;
use llmlite::record::{Client, RequestRecord};
use llmlite::settlement::Settler;
use llmlite_tests::{KeyBy, TestDb, TestGateway};
use rust_decimal::Decimal;
use serde_json::json;

const CHAT: &str = "/v1/chat/completions";
const KEYS: usize = 6;
const CLIENTS: usize = 4;
const ROUNDS: usize = 6;

async fn sum(gw: &TestGateway, sql: &str, id: &str) -> Decimal {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Request records shipped to the audit directory `dir`: the lines of its batch objects.
fn shipped_records(dir: &std::path::Path) -> i64 {
    fn walk(dir: &std::path::Path, lines: &mut i64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, lines);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("requests-"))
            {
                let text = std::fs::read_to_string(&path).unwrap();
                *lines += i64::try_from(text.lines().count()).unwrap();
            }
        }
    }
    let mut lines = 0;
    walk(dir, &mut lines);
    lines
}

/// Six keys of one team and one user, every limit set, four clients each asking six times in turn
/// (half of the requests streamed) while an admin updates every key: the team's and the user's
/// rows are taken by every admission and every settlement, so batches and admissions contend for
/// them throughout. A batch that took its locks in another order than admission's would deadlock
/// here, and PostgreSQL would refuse it.
#[tokio::test]
async fn concurrent_requests_settle_in_batches_each_exactly_once() {
    let gw = TestGateway::start_adjusted(&[], |state| {
        state.settlements = state.settlements.clone().group_commit(64);
    })
    .await;
    gw.admin(
        "/team/new",
        json!({"team_id": "busy", "max_budget": 100, "rpm_limit": 100_000,
               "tpm_limit": 1_000_000_000}),
    )
    .await;
    gw.admin(
        "/user/new",
        json!({"user_id": "dev-1", "max_budget": 100, "rpm_limit": 100_000}),
    )
    .await;
    let mut keys = Vec::new();
    for _ in 0..KEYS {
        let minted = gw
            .mint_key(
                json!({"team_id": "busy", "user_id": "dev-1", "max_budget": 10,
                             "rpm_limit": 100_000, "tpm_limit": 1_000_000_000,
                             "max_parallel_requests": 100}),
            )
            .await;
        keys.push((
            minted["key"].as_str().unwrap().to_owned(),
            minted["token"].as_str().unwrap().to_owned(),
        ));
    }

    // Each key has CLIENTS clients, each asking ROUNDS times in turn: admissions keep arriving
    // while earlier requests settle.
    let gw_ref = &gw;
    let requests = keys.iter().flat_map(|(key, _)| {
        (0..CLIENTS).map(move |client| async move {
            let mut statuses = Vec::new();
            for round in 0..ROUNDS {
                let body = json!({"model": "claude-haiku-4-5", "max_tokens": 64,
                                  "messages": [{"role": "user",
                                                "content": format!("hello {client} {round}")}]});
                if (client + round) % 2 == 0 {
                    statuses.push(gw_ref.post(CHAT, key, body).await.status);
                } else {
                    let mut body = body;
                    body["stream"] = json!(true);
                    let events = gw_ref.stream(CHAT, key, body).await;
                    statuses.push(if events.is_empty() { 0 } else { 200 });
                }
            }
            statuses
        })
    });
    let updates = keys.iter().map(|(key, _)| {
        let gw = &gw;
        async move {
            gw.post(
                "/key/update",
                llmlite_tests::MASTER_KEY,
                json!({"key": key, "rpm_limit": 200_000}),
            )
            .await
            .status
        }
    });
    let (statuses, updated) = tokio::join!(join_all(requests), join_all(updates));
    let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(updated.iter().all(|s| *s == 200), "{updated:?}");

    let total = KEYS * CLIENTS * ROUNDS;
    let rows = gw.spend_rows().await;
    assert_eq!(rows.len(), total, "one spend row per request");
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "no request settled twice");
    assert!(
        rows.iter()
            .all(|r| r.status == "success" && r.spend > Decimal::ZERO)
    );

    let mut all = Decimal::ZERO;
    for (_, token) in &keys {
        let of_key: Decimal = rows
            .iter()
            .filter(|r| &r.api_key == token)
            .map(|r| r.spend)
            .sum();
        assert_eq!(gw.key_spend(KeyBy::Token(token)).await, of_key, "{token}");
        all += of_key;
    }
    let team = sum(
        &gw,
        "SELECT spend FROM litellm_teamtable WHERE team_id = $1",
        "busy",
    )
    .await;
    let user = sum(
        &gw,
        "SELECT spend FROM litellm_usertable WHERE user_id = $1",
        "dev-1",
    )
    .await;
    assert_eq!(team, all, "the team's spend is the sum of its rows");
    assert_eq!(user, all, "the user's spend is the sum of its rows");
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
    // One audit record each: queued, or already shipped in a batch (the queue ships once it
    // holds 128 KiB, which these records come close to).
    let queued = gw.count("SELECT count(*) FROM llmlite_audit_queue").await;
    let shipped = shipped_records(&gw.db.audit_dir());
    assert_eq!(
        queued + shipped,
        i64::try_from(total).unwrap(),
        "one audit record each ({queued} queued, {shipped} shipped)"
    );

    let figures = gw.state.settlements.group_commits();
    assert_eq!(
        figures.settled,
        u64::try_from(total).unwrap(),
        "{figures:?}"
    );
    assert!(
        figures.commits < figures.settled,
        "settlements shared transactions: {figures:?}"
    );
    assert_eq!(
        (figures.refused, figures.failed),
        (0, 0),
        "no batch refused or rolled back (a deadlock's victim would be): {figures:?}"
    );
}

fn record(cost: Decimal) -> RequestRecord {
    let mut record = RequestRecord::new(
        RequestId(uuid::Uuid::new_v4()),
        chrono::Utc::now(),
        ModelAlias::new("claude-haiku-4-5"),
        Client::default(),
    );
    record.cost = Money::new(cost);
    record
}

/// A batch with one record the database refuses (a negative cost breaks the spend row's check)
/// is settled again one request at a time: the others land, and only that one is refused.
#[tokio::test]
async fn a_refused_record_costs_its_batch_nothing() {
    let db = TestDb::new().await;
    let dir = db.audit_dir();
    let settler = Settler::new(
        db.db.clone(),
        Auditor::new(Sink::Directory(dir), db.db.clone()),
        Clock::default(),
        false,
    )
    .group_commit(16);
    let mut records: Vec<RequestRecord> = (0..12).map(|i| record(Decimal::new(i + 1, 3))).collect();
    records.insert(5, record(Decimal::NEGATIVE_ONE));
    // One task sends every settlement before the committer runs: one batch of 13.
    let settled = join_all(records.iter().map(|r| settler.settle_once(r))).await;

    for (i, result) in settled.iter().enumerate() {
        if i == 5 {
            assert!(
                matches!(result, Err(ApiError::InvalidRequest { .. })),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "{i}: {result:?}");
        }
    }
    let rows: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT request_id, spend FROM litellm_spend ORDER BY spend")
            .persistent(false)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 12);
    let expected: Vec<(String, Decimal)> = records
        .iter()
        .filter(|r| r.cost.amount() > Decimal::ZERO)
        .map(|r| (r.request_id.to_string(), r.cost.amount()))
        .collect();
    assert_eq!(rows, expected);
    let figures = settler.group_commits();
    assert_eq!(figures.refused, 1, "{figures:?}");
    assert_eq!(figures.settled, 12, "{figures:?}");
}
