//! The audit trail: one record per chat request and per admin action, in the documented
//! layout, with no secrets and no loss (local-directory sink; the S3 sink is the same code). An
//! admin request ships only its own action; the backlog is the rollup's, each action shipped
//! once and only when written.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llmlite::clients::audit::{Auditor, Sink};
use llmlite::rollup;
use llmlite_tests::{MASTER_KEY, MotoS3, Reply, TestGateway};
use serde_json::{Value, json};

/// Where a gateway's records went: its local directory, or the S3 bucket (moto).
enum Store<'a> {
    Dir(PathBuf),
    S3(&'a MotoS3, &'a TestGateway),
}

impl Store<'_> {
    /// Every (object key, record) under `prefix`: a batch of request records gives one entry
    /// per line.
    async fn records(&self, prefix: &str) -> Vec<(String, Value)> {
        match self {
            Store::Dir(root) => llmlite_tests::files_under(&root.join(prefix))
                .into_iter()
                .flat_map(|p| {
                    let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    llmlite_tests::audit_object_records(&key, &std::fs::read(&p).unwrap())
                })
                .collect(),
            Store::S3(moto, gw) => {
                let mut out = Vec::new();
                for key in moto.keys(BUCKET, prefix).await {
                    let object = gw
                        .state
                        .s3
                        .get_object()
                        .bucket(BUCKET)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = object.body.collect().await.unwrap().into_bytes();
                    out.extend(llmlite_tests::audit_object_records(&key, &bytes));
                }
                out
            }
        }
    }

    /// The record of `request_id` and its object's key, once the gateway's queue has shipped.
    async fn record_for(&self, gw: &TestGateway, request_id: &str) -> (String, Value) {
        gw.state.audit.ship_requests(true).await.unwrap();
        self.records("audit/")
            .await
            .into_iter()
            .find(|(_, r)| r["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no record for {request_id}"))
    }
}

const BUCKET: &str = "llmlite-audit-kinds";

async fn chat(gw: &TestGateway, key: &str, text: &str) -> (u16, String) {
    let response = Reply::read(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
            .header("user-agent", "audit-test/1.0")
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": text}]})),
    )
    .await;
    // Records are written after the response, with settlement.
    gw.settled().await;
    (response.status, response.request_id())
}

const REQUEST_FIELDS: &[&str] = &[
    "call_type",
    "client_ip",
    "cost",
    "error_type",
    "guardrail",
    "key_alias",
    "key_hash",
    "latency_ms",
    "model",
    "model_id",
    "overhead_ms",
    "pii",
    "pii_output",
    "presented_key_hash",
    "request_bytes",
    "request_id",
    "response_bytes",
    "service_tier",
    "stages",
    "status",
    "status_code",
    "team_id",
    "timestamp",
    "tokens",
    "trace_id",
    "upstream_ms",
    "user_agent",
    "user_id",
];

/// A record's field names, sorted.
fn field_names(record: &Value) -> Vec<&str> {
    let mut fields: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    fields
}

#[tokio::test]
async fn every_request_leaves_one_record_in_the_documented_shape() {
    let gw = TestGateway::start().await;
    let store = Store::Dir(gw.db.audit_dir());
    request_records(&gw, &store).await;
}

#[tokio::test]
async fn every_request_leaves_one_record_in_the_documented_shape_on_s3() {
    let Some(moto) = MotoS3::start().await else {
        eprintln!("skipped: moto is not installed (pip install \"moto[server]\")");
        return;
    };
    moto.create_bucket(BUCKET).await;
    let gw = TestGateway::start_with(&[
        ("AWS_ENDPOINT_URL_S3", &moto.endpoint),
        ("LLMLITE_AUDIT_BUCKET", BUCKET),
    ])
    .await;
    request_records(&gw, &Store::S3(&moto, &gw)).await;
    admin_records(&gw, &Store::S3(&moto, &gw)).await;
}

async fn request_records(gw: &TestGateway, store: &Store<'_>) {
    let minted = gw
        .mint_key(json!({"key_alias": "audited", "rpm_limit": 2}))
        .await;
    let key = minted["key"].as_str().unwrap();
    let token = minted["token"].as_str().unwrap();

    let (status, ok_id) = chat(gw, key, "hello audit MARKER-PROMPT-TEXT").await;
    assert_eq!(status, 200);
    let (object_key, record) = store.record_for(gw, &ok_id).await;
    // A batch: `audit/YYYY/MM/DD/requests-...jsonl`, one record per line.
    assert!(
        object_key.starts_with("audit/20")
            && object_key.contains("/requests-")
            && object_key.ends_with(".jsonl"),
        "{object_key}"
    );
    assert_eq!(field_names(&record), REQUEST_FIELDS);
    assert_eq!(record["request_id"], ok_id);
    assert_eq!(record["key_hash"], token);
    assert_eq!(record["key_alias"], "audited");
    assert_eq!(record["model"], "claude-haiku-4-5");
    assert_eq!(
        record["model_id"],
        "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
    );
    assert_eq!(record["status_code"], 200);
    assert_eq!(record["error_type"], Value::Null);
    assert_eq!(
        record["tokens"],
        json!({"input": 3, "output": 4, "cache_read": 0, "cache_write": 0, "cache_write_1h": 0})
    );
    assert_eq!(record["cost"], "0.0000253");
    // The address the ALB appended, not the one the client wrote first.
    assert_eq!(record["client_ip"], "203.0.113.7");
    assert_eq!(record["user_agent"], "audit-test/1.0");
    assert!(record["response_bytes"].as_u64().unwrap() > 100);
    assert!(record["latency_ms"].as_f64().unwrap() >= record["upstream_ms"].as_f64().unwrap());

    // Rate-limited (rpm 2: the third request), PII-blocked, and an upstream failure.
    assert_eq!(chat(gw, key, "second").await.0, 200);
    let (status, limited) = chat(gw, key, "third").await;
    assert_eq!(status, 429);
    let (_, record) = store.record_for(gw, &limited).await;
    assert_eq!(
        field_names(&record),
        REQUEST_FIELDS,
        "a refusal has the same shape"
    );
    assert_eq!(record["key_hash"], token);
    assert_eq!(
        (record["status_code"].clone(), record["error_type"].clone()),
        (json!(429), json!("rate_limit_exceeded"))
    );

    let other = gw.mint_raw_key(json!({})).await;
    let (status, blocked) = chat(gw, &other, "card 4539 1488 0343 6467").await;
    assert_eq!(status, 400);
    let (_, record) = store.record_for(gw, &blocked).await;
    assert_eq!(record["error_type"], "pii_blocked");
    assert_eq!(record["pii"], json!({"CREDIT_CARD": 1}));

    gw.script(json!([{"error": {"status": 424, "type": "ModelErrorException"}}]))
        .await;
    let (status, failed) = chat(gw, &other, "will fail").await;
    assert_eq!(status, 502);
    let (_, record) = store.record_for(gw, &failed).await;
    assert_eq!(
        (record["status_code"].clone(), record["error_type"].clone()),
        (json!(502), json!("upstream_error"))
    );

    // Never the prompt, the raw key or the master key.
    for (path, record) in store.records("audit/").await {
        let text = record.to_string();
        for secret in [
            "MARKER-PROMPT-TEXT",
            &key[3..],
            &other[3..],
            MASTER_KEY,
            "4539 1488",
        ] {
            assert!(!text.contains(secret), "{secret} in {path}");
        }
    }
}

#[tokio::test]
async fn admin_actions_are_shipped_with_who_and_what() {
    let gw = TestGateway::start().await;
    admin_records(&gw, &Store::Dir(gw.db.audit_dir())).await;
}

async fn admin_records(gw: &TestGateway, store: &Store<'_>) {
    let minted = gw.mint_key(json!({"key_alias": "watched"})).await;
    let raw = minted["key"].as_str().unwrap().to_owned();
    for (path, body) in [
        ("/key/update", json!({"key": raw, "tpm_limit": 5})),
        ("/key/block", json!({"key": raw})),
        ("/key/unblock", json!({"key": raw})),
        ("/key/regenerate", json!({"key": raw})),
        ("/team/new", json!({"team_id": "audited"})),
        (
            "/user/new",
            json!({"user_id": "auditor", "auto_create_key": false}),
        ),
    ] {
        gw.admin(path, body).await;
    }
    let admin: Vec<(String, Value)> = store
        .records("audit/admin/")
        .await
        .into_iter()
        .map(|(key, record)| {
            (
                key.rsplit('/').next().unwrap_or_default().to_owned(),
                record,
            )
        })
        .collect();
    let mut actions: Vec<String> = admin
        .iter()
        .map(|(_, r)| r["action"].as_str().unwrap().to_owned())
        .collect();
    actions.sort();
    // Kinds of action (a gateway used by an earlier check has generated keys before).
    actions.dedup();
    assert_eq!(
        actions,
        [
            "key.block",
            "key.generate",
            "key.regenerate",
            "key.unblock",
            "key.update",
            "team.new",
            "user.new"
        ]
    );
    for (name, record) in &admin {
        assert_eq!(record["actor"], "master_key", "{name}");
        assert!(
            name.starts_with(&record["action"].as_str().unwrap().replace('.', "-")),
            "{name}"
        );
        assert!(!record.to_string().contains(&raw[3..]), "raw key in {name}");
    }
    let update = admin
        .iter()
        .find(|(_, r)| r["action"] == "key.update")
        .unwrap();
    assert_eq!(update.1["before"]["tpm_limit"], Value::Null);
    assert_eq!(update.1["after"]["tpm_limit"], 5);
}

#[tokio::test]
async fn a_record_that_cannot_be_written_waits_in_the_outbox_until_redriven() {
    let gw = TestGateway::start().await;
    // A "directory" that is a file: every write fails.
    let blocked =
        std::env::temp_dir().join(format!("llmlite-audit-blocked-{}", std::process::id()));
    std::fs::write(&blocked, b"not a directory").unwrap();
    let broken = Auditor::new(Sink::Directory(blocked.clone()), gw.state.db.clone());
    broken
        .write(
            "audit/2026/11/29/request-x-1.json",
            &json!({"request_id": "1"}),
        )
        .await;
    broken
        .write(
            "audit/2026/11/29/request-x-2.json",
            &json!({"request_id": "2"}),
        )
        .await;
    broken
        .write(
            "audit/2026/11/29/request-x-2.json",
            &json!({"request_id": "2"}),
        )
        .await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM llmlite_audit_outbox")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 2, "one outbox row per object key");
    assert_eq!(broken.redrive(100).await.unwrap().failed, 2);

    sqlx::query("UPDATE llmlite_audit_outbox SET next_attempt_at = now()")
        .persistent(false)
        .execute(&gw.db.pool)
        .await
        .unwrap();
    let target = std::env::temp_dir().join(format!("llmlite-audit-redrive-{}", std::process::id()));
    let working = Auditor::new(Sink::Directory(target.clone()), gw.state.db.clone());
    let report = working.redrive(100).await.unwrap();
    assert_eq!((report.shipped, report.failed), (2, 0));
    assert_eq!(llmlite_tests::files_under(&target).len(), 2);
    assert_eq!(
        working.redrive(100).await.unwrap().shipped,
        0,
        "nothing left"
    );
    let _ = std::fs::remove_file(blocked);
    let _ = std::fs::remove_dir_all(target);
}

/// The admin action objects under a sink directory, by object key.
fn admin_objects(root: &Path) -> Vec<String> {
    llmlite_tests::files_under(&root.join("audit/admin"))
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "llmlite-audit-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Unshipped admin actions, as a backlog a stalled audit sink would leave.
async fn backlog(gw: &TestGateway, count: i64) {
    sqlx::query(
        "INSERT INTO llmlite_admin_action (at, request_id, actor, action, object_type, object_id,
                                           before, after)
         SELECT now() - make_interval(secs => n), 'backlog-' || n, 'master_key', 'key.update',
                'key', 'backlog-key-' || n, NULL, jsonb_build_object('n', n)
         FROM generate_series(1, $1) n",
    )
    .bind(count)
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
}

async fn shipped(gw: &TestGateway) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE shipped_at IS NOT NULL),
                count(*) FILTER (WHERE shipped_at IS NULL)
         FROM llmlite_admin_action",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap()
}

async fn outbox(gw: &TestGateway) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM llmlite_audit_outbox")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn key_generate_ships_only_its_own_action() {
    let gw = TestGateway::start().await;
    backlog(&gw, 10_000).await;

    let started = Instant::now();
    let minted = gw.mint_key(json!({"key_alias": "behind-a-backlog"})).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "/key/generate took {took:?}");
    let token = minted["token"].as_str().unwrap();
    assert_eq!(
        shipped(&gw).await,
        (1, 10_000),
        "its own action, nothing else"
    );
    let own: Option<String> = sqlx::query_scalar(
        "SELECT object_id FROM llmlite_admin_action WHERE shipped_at IS NOT NULL",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(own.as_deref(), Some(token));
    let own_files = admin_objects(&gw.db.audit_dir());
    assert_eq!(own_files.len(), 1, "{own_files:?}");
    assert!(own_files[0].contains("key-generate-"), "{own_files:?}");

    // Two rollups at once, each with its own sink: every write is counted, so an action
    // shipped by both would be in both directories.
    let (dir_a, dir_b) = (temp("rollup-a"), temp("rollup-b"));
    let mut a = gw.state.clone();
    a.audit = Auditor::new(Sink::Directory(dir_a.clone()), gw.state.db.clone());
    let mut b = gw.state.clone();
    b.audit = Auditor::new(Sink::Directory(dir_b.clone()), gw.state.db.clone());
    let reports = Sink::Directory(temp("reports"));
    let now = gw.state.clock.now();
    let (ra, rb) = tokio::join!(
        rollup::run(&a, &reports, 90, now),
        rollup::run(&b, &reports, 90, now)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.records_redriven + rb.records_redriven, 10_000);
    assert_eq!(shipped(&gw).await, (10_001, 0));
    let (written_a, written_b) = (admin_objects(&dir_a), admin_objects(&dir_b));
    let union: BTreeSet<&String> = written_a.iter().chain(&written_b).collect();
    assert_eq!(
        written_a.len() + written_b.len(),
        10_000,
        "each backlog action written exactly once"
    );
    assert_eq!(union.len(), 10_000, "no action written by both rollups");
    assert!(!union.iter().any(|f| f.contains("key-generate-")));
    assert_eq!(outbox(&gw).await, 0);

    // A third run finds nothing to do.
    let again = rollup::run(&a, &reports, 90, now).await.unwrap();
    assert_eq!(again.records_redriven, 0);
    for dir in [dir_a, dir_b] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn an_action_the_sink_refuses_stays_unshipped_and_out_of_the_outbox() {
    // A "directory" that is a file: every write fails.
    let blocked = temp("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let gw = TestGateway::start_with(&[("LLMLITE_AUDIT_DIR", blocked.to_str().unwrap())]).await;

    let started = Instant::now();
    let response = gw
        .post(
            "/key/generate",
            MASTER_KEY,
            json!({"key_alias": "unshippable"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(response.status, 200);
    let body = response.json();
    assert!(body["key"].as_str().unwrap().starts_with("sk-"));
    assert!(took < Duration::from_secs(3), "/key/generate took {took:?}");
    assert_eq!(shipped(&gw).await, (0, 1), "not delivered, so not shipped");
    assert_eq!(outbox(&gw).await, 0, "the action table already keeps it");

    // The rollup with the same broken sink leaves it too; with a working one, ships it.
    let reports = Sink::Directory(temp("reports"));
    let now = gw.state.clock.now();
    let failed = rollup::run(&gw.state, &reports, 90, now).await.unwrap();
    assert_eq!(failed.records_redriven, 0);
    assert_eq!(shipped(&gw).await, (0, 1));
    assert_eq!(outbox(&gw).await, 0);
    let working = temp("working");
    let mut fixed = gw.state.clone();
    fixed.audit = Auditor::new(Sink::Directory(working.clone()), gw.state.db.clone());
    let run = rollup::run(&fixed, &reports, 90, now).await.unwrap();
    assert_eq!(run.records_redriven, 1);
    assert_eq!(shipped(&gw).await, (1, 0));
    assert_eq!(admin_objects(&working).len(), 1);
    let _ = std::fs::remove_file(blocked);
    let _ = std::fs::remove_dir_all(working);
}

/// `n` request records queued directly (request IDs `{tag}-1`...), `age` old, each with `pad`
/// bytes of padding.
async fn queue_records(gw: &TestGateway, tag: &str, n: i64, age_secs: i64, pad: i64) {
    sqlx::query(
        "INSERT INTO llmlite_audit_queue (at, record)
         SELECT now() - make_interval(secs => $2),
                jsonb_build_object('request_id', $4 || '-' || g, 'pad', repeat('x', $3::int))::text
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .bind(age_secs)
    .bind(pad)
    .bind(tag)
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_request_queue_ships_in_batches_once_due_and_keeps_what_it_cannot_write() {
    let gw = TestGateway::start().await;
    let root = temp("batches");
    let auditor = Auditor::new(Sink::Directory(root.clone()), gw.state.db.clone());

    // A few young records are not due: they wait for company.
    queue_records(&gw, "young", 10, 0, 100).await;
    assert_eq!(auditor.ship_requests(false).await.unwrap().records, 0);
    // The oldest has waited past the limit: the batch goes, in one object.
    sqlx::query("UPDATE llmlite_audit_queue SET at = now() - interval '11 minutes'")
        .persistent(false)
        .execute(&gw.db.pool)
        .await
        .unwrap();
    let shipped = auditor.ship_requests(false).await.unwrap();
    assert_eq!((shipped.records, shipped.objects), (10, 1));
    // 128 KiB is due at once, whatever its age.
    queue_records(&gw, "large", 140, 0, 1000).await;
    assert_eq!(auditor.ship_requests(false).await.unwrap().records, 140);
    let objects = llmlite_tests::files_under(&root.join("audit"));
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(
        std::fs::metadata(&objects[1]).unwrap().len() >= 128 * 1024
            || std::fs::metadata(&objects[0]).unwrap().len() >= 128 * 1024
    );

    // A sink that refuses every write: nothing leaves the queue, nothing is lost.
    let blocked = temp("blocked-file");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let broken = Auditor::new(Sink::Directory(blocked.clone()), gw.state.db.clone());
    queue_records(&gw, "kept", 50, 0, 10).await;
    assert_eq!(broken.ship_requests(true).await.unwrap().records, 0);
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_audit_queue").await,
        50
    );
    assert_eq!(auditor.ship_requests(true).await.unwrap().records, 50);

    // Two shippers at once over 6,000 records (two batches' worth): each record once.
    queue_records(&gw, "raced", 6000, 0, 10).await;
    let (a, b) = tokio::join!(auditor.ship_requests(true), auditor.ship_requests(true));
    let (a, b) = (a.unwrap().records, b.unwrap().records);
    // One of them may find the other shipping and leave; a later run takes what is left.
    let rest = auditor.ship_requests(true).await.unwrap().records;
    assert_eq!(a + b + rest, 6000);
    let mut ids: Vec<String> = llmlite_tests::audit_records(&root)
        .into_iter()
        .map(|(_, r)| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (total, ids.len()),
        (10 + 140 + 50 + 6000, 10 + 140 + 50 + 6000)
    );
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_audit_queue").await,
        0
    );
    let _ = std::fs::remove_file(blocked);
    let _ = std::fs::remove_dir_all(root);
}
