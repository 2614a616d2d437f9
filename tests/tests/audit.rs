//! The audit trail: one record per chat request and per admin action, in the documented
//! layout, with no secrets and no loss (local-directory sink; the S3 sink is the same code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::path::{Path, PathBuf};

use llmlite::audit::{Auditor, Sink};
use llmlite_tests::{MASTER_KEY, MotoS3, TestGateway};
use serde_json::{Value, json};

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Where a gateway's records went: its local directory, or the S3 bucket (moto).
enum Store<'a> {
    Dir(PathBuf),
    S3(&'a MotoS3, &'a TestGateway),
}

impl Store<'_> {
    /// Every (object key, record) under `prefix`.
    async fn records(&self, prefix: &str) -> Vec<(String, Value)> {
        match self {
            Store::Dir(root) => files(&root.join(prefix))
                .into_iter()
                .map(|p| {
                    let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    (
                        key,
                        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
                    )
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
                    out.push((key, serde_json::from_slice(&bytes).unwrap()));
                }
                out
            }
        }
    }

    async fn record_for(&self, request_id: &str) -> (String, Value) {
        self.records("audit/")
            .await
            .into_iter()
            .find(|(k, _)| k.ends_with(&format!("-{request_id}.json")))
            .unwrap_or_else(|| panic!("no record for {request_id}"))
    }
}

const BUCKET: &str = "llmlite-audit-kinds";

async fn chat(gw: &TestGateway, key: &str, text: &str) -> (u16, String) {
    let response = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-forwarded-for", "203.0.113.7, 10.1.1.5")
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    // Records are written after the response, with settlement.
    gw.settled().await;
    (
        response.status().as_u16(),
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned(),
    )
}

const REQUEST_FIELDS: &[&str] = &[
    "client_ip",
    "cost",
    "error_type",
    "key_alias",
    "key_hash",
    "latency_ms",
    "model",
    "model_id",
    "overhead_ms",
    "pii",
    "request_bytes",
    "request_id",
    "response_bytes",
    "status",
    "status_code",
    "team_id",
    "timestamp",
    "tokens",
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
    let (object_key, record) = store.record_for(&ok_id).await;
    assert!(
        object_key.starts_with("audit/20") && object_key.contains("/request-"),
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
        json!({"input": 3, "output": 4, "cache_read": 0, "cache_write": 0})
    );
    assert_eq!(record["cost"], "0.0000253");
    assert_eq!(record["client_ip"], "203.0.113.7");
    assert_eq!(record["user_agent"], "audit-test/1.0");
    assert!(record["response_bytes"].as_u64().unwrap() > 100);
    assert!(record["latency_ms"].as_f64().unwrap() >= record["upstream_ms"].as_f64().unwrap());

    // Rate-limited (rpm 2: the third request), PII-blocked, and an upstream failure.
    assert_eq!(chat(gw, key, "second").await.0, 200);
    let (status, limited) = chat(gw, key, "third").await;
    assert_eq!(status, 429);
    let (_, record) = store.record_for(&limited).await;
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
    let (_, record) = store.record_for(&blocked).await;
    assert_eq!(record["error_type"], "pii_blocked");
    assert_eq!(record["pii"], json!({"CREDIT_CARD": 1}));

    gw.script(json!([{"error": {"status": 424, "type": "ModelErrorException"}}]))
        .await;
    let (status, failed) = chat(gw, &other, "will fail").await;
    assert_eq!(status, 502);
    let (_, record) = store.record_for(&failed).await;
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
    assert_eq!(files(&target).len(), 2);
    assert_eq!(
        working.redrive(100).await.unwrap().shipped,
        0,
        "nothing left"
    );
    let _ = std::fs::remove_file(blocked);
    let _ = std::fs::remove_dir_all(target);
}
