//! Erasure on request (`llmlite::admin::erasure`) and personal data kept out of the admin audit
//! trail, over real HTTP against a real PostgreSQL: after a user is erased, no text or JSON
//! column of any table holds their ID or e-mail, the spend totals by day and model are
//! unchanged, and the audit records hold pseudonyms and counts only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite::clients::audit::Sink;
use llmlite::keys::KeyHash;
use llmlite::rollup;
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The audit records written so far, as text (the request queue shipped first): one per
/// object, one per line of a batch of request records.
async fn audit_records(gw: &TestGateway) -> Vec<String> {
    gw.settled().await;
    gw.state.audit.ship_requests(true).await.unwrap();
    llmlite_tests::files_under(&gw.db.audit_dir())
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn chat(gw: &TestGateway, key: &str, end_user: &str) -> u16 {
    gw.post(
        "/v1/chat/completions",
        key,
        json!({"model": "claude-haiku-4-5", "max_tokens": 16, "user": end_user,
               "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await
    .status
}

/// Every (table, column) of the schema that holds text or JSON.
async fn text_columns(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
          WHERE table_schema = 'public'
            AND (data_type IN ('text', 'jsonb', 'json', 'character varying') OR udt_name = '_text')
          ORDER BY 1, 2",
    )
    .persistent(false)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The `(table.column, rows)` where `needle` appears anywhere in the value.
async fn search(pool: &PgPool, needle: &str) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for (table, column) in text_columns(pool).await {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\" WHERE strpos(\"{column}\"::text, $1) > 0"
        )))
        .bind(needle)
        .persistent(false)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            found.push((format!("{table}.{column}"), n));
        }
    }
    found
}

/// Spend and tokens by day and model, from the raw rows and from the rollups.
async fn totals(pool: &PgPool) -> Vec<(String, String, String, i64)> {
    sqlx::query_as(
        "SELECT 'raw', (start_time AT TIME ZONE 'UTC')::date::text, model || ' ' || sum(spend)::text,
                sum(prompt_tokens + completion_tokens)::bigint
           FROM litellm_spend GROUP BY 2, model
         UNION ALL
         SELECT 'rollup', date::text, model || ' ' || sum(spend)::text,
                sum(prompt_tokens + completion_tokens)::bigint
           FROM litellm_dailyuserspend GROUP BY 2, model
         ORDER BY 1, 2, 3",
    )
    .persistent(false)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_erased_user_leaves_no_id_or_email_anywhere_and_the_totals_stay() {
    let gw = TestGateway::start().await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let user_id = format!("erasure-subject-{tag}");
    let email = format!("subject.{tag}@example.org");
    let (status, created) = gw
        .post(
            "/user/new",
            MASTER_KEY,
            json!({"user_id": user_id, "user_email": email, "user_alias": format!("Subject {tag}")}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{created}");
    let first = created["key"].as_str().unwrap().to_owned();
    let (status, second) = gw
        .post(
            "/key/generate",
            MASTER_KEY,
            json!({"user_id": user_id, "key_alias": format!("laptop-of-{user_id}"),
                   "metadata": {"contact": email}}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{second}");
    let second = second["key"].as_str().unwrap().to_owned();
    // A bystander whose requests name the subject as their end user.
    let (_, bystander) = gw
        .post(
            "/user/new",
            MASTER_KEY,
            json!({"user_id": format!("bystander-{tag}")}),
        )
        .await
        .status_and_json();
    let bystander = bystander["key"].as_str().unwrap().to_owned();

    for _ in 0..3 {
        assert_eq!(chat(&gw, &first, &email).await, 200);
        assert_eq!(chat(&gw, &second, "subject's-phone").await, 200);
        assert_eq!(chat(&gw, &bystander, &user_id).await, 200);
    }
    gw.settled().await;
    // Yesterday's rows are rolled up; today's are not yet.
    let reports = Sink::Directory(std::env::temp_dir().join(format!("llmlite-erasure-{tag}")));
    gw.state.clock.advance(Duration::from_secs(86_400));
    rollup::run(&gw.state, &reports, 90, gw.state.clock.now())
        .await
        .unwrap();
    assert_eq!(chat(&gw, &first, &email).await, 200);
    assert_eq!(chat(&gw, &bystander, &email).await, 200);
    gw.settled().await;
    gw.post(
        "/key/update",
        MASTER_KEY,
        json!({"key": second, "key_alias": format!("renamed-{user_id}")}),
    )
    .await;

    let before = totals(&gw.db.pool).await;
    assert!(!search(&gw.db.pool, &user_id).await.is_empty());
    assert!(!search(&gw.db.pool, &email).await.is_empty());

    let (status, answer) = gw
        .post(
            "/user/delete",
            MASTER_KEY,
            json!({"user_ids": [user_id], "erase": true}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{answer}");
    let pseudonym = answer["pseudonyms"][0].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("erased-user-"), "{pseudonym}");

    // Nothing left, anywhere; the amounts are all still there.
    assert_eq!(search(&gw.db.pool, &user_id).await, Vec::new());
    assert_eq!(search(&gw.db.pool, &email).await, Vec::new());
    assert_eq!(search(&gw.db.pool, "subject's-phone").await, Vec::new());
    assert_eq!(totals(&gw.db.pool).await, before);
    let (rows, rolled): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM litellm_spend WHERE user_id = $1),
                (SELECT count(*) FROM litellm_dailyuserspend WHERE user_id = $1)",
    )
    .bind(&pseudonym)
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((rows, rolled > 0), (7, true));
    // Its keys are gone with it; the bystander's still works.
    assert_eq!(chat(&gw, &first, "x").await, 401);
    assert_eq!(chat(&gw, &bystander, "x").await, 200);

    // The audit trail: the erasure's record holds the pseudonym and counts, and no record ever
    // written holds the e-mail or free text.
    let records = audit_records(&gw).await;
    let erasure: Vec<&String> = records
        .iter()
        .filter(|r| r.contains("user.erase"))
        .collect();
    assert_eq!(erasure.len(), 1, "one erasure record");
    let erasure: Value = serde_json::from_str(erasure[0]).unwrap();
    assert_eq!(erasure["object_id"], pseudonym, "{erasure}");
    let erased = &erasure["after"]["erased"];
    assert_eq!(erased["keys"], 2, "{erasure}");
    assert_eq!(erased["users"], 1, "{erasure}");
    assert!(erased["spend_rows"].as_u64().unwrap() >= 7, "{erasure}");
    assert!(erased["rollup_rows"].as_u64().unwrap() >= 1, "{erasure}");
    assert!(!erasure.to_string().contains(&user_id));
    for record in &records {
        assert!(!record.contains(&email), "{record}");
    }
    // No admin record carries the free-text alias (request records name the key by its hash
    // and alias, as README "Audit trail" says).
    for record in records.iter().filter(|r| r.contains("\"action\"")) {
        assert!(!record.contains("laptop-of-"), "{record}");
    }
}

#[tokio::test]
async fn admin_records_keep_ids_but_never_free_text() {
    let gw = TestGateway::start().await;
    let (status, _) = gw
        .post(
            "/user/new",
            MASTER_KEY,
            json!({"user_id": "free-text-user", "user_email": "jane.doe@example.com",
                   "user_alias": "Jane Doe", "auto_create_key": false}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200);
    let (_, key) = gw
        .post(
            "/key/generate",
            MASTER_KEY,
            json!({"user_id": "free-text-user", "key_alias": "janes-laptop",
                   "metadata": {"note": "Jane's card 4111"}}),
        )
        .await
        .status_and_json();
    gw.post(
        "/key/update",
        MASTER_KEY,
        json!({"key": key["token"], "key_alias": "janes-desktop"}),
    )
    .await;
    let rows: Vec<(String, Option<Value>, Option<Value>)> =
        sqlx::query_as("SELECT action, before, after FROM llmlite_admin_action ORDER BY id")
            .persistent(false)
            .fetch_all(&gw.db.pool)
            .await
            .unwrap();
    let text = format!("{rows:?}");
    for private in [
        "jane.doe@example.com",
        "Jane Doe",
        "janes-laptop",
        "janes-desktop",
        "4111",
    ] {
        assert!(!text.contains(private), "{private} in {text}");
    }
    // IDs stay, and a changed field says so.
    assert!(text.contains("free-text-user"));
    let update = rows.iter().find(|(a, _, _)| a == "key.update").unwrap();
    assert_eq!(update.1.as_ref().unwrap()["key_alias"], "[redacted]");
    assert_eq!(
        update.2.as_ref().unwrap()["key_alias"],
        "[redacted, changed]"
    );
    assert_eq!(update.2.as_ref().unwrap()["metadata"], "[redacted]");
    for record in audit_records(&gw).await {
        assert!(!record.contains("jane.doe@example.com"), "{record}");
    }
}

#[tokio::test]
async fn erasing_a_key_removes_its_row_and_the_free_text_of_its_spend() {
    let gw = TestGateway::start().await;
    let (_, minted) = gw
        .post(
            "/key/generate",
            MASTER_KEY,
            json!({"key_alias": "to-be-erased", "user_id": "keeps-their-account"}),
        )
        .await
        .status_and_json();
    let key = minted["key"].as_str().unwrap().to_owned();
    let hash = KeyHash::of(&key);
    for _ in 0..2 {
        assert_eq!(chat(&gw, &key, "end-user-pat").await, 200);
    }
    gw.settled().await;
    let before = totals(&gw.db.pool).await;

    // An admin may erase; a plain key may not, and nothing happens.
    let (status, _) = gw
        .post("/key/delete", &key, json!({"keys": [key], "erase": true}))
        .await
        .status_and_json();
    assert_eq!(status, 403);
    assert_eq!(chat(&gw, &key, "end-user-pat").await, 200);
    gw.settled().await;
    let before_with_third = totals(&gw.db.pool).await;
    assert_ne!(before, before_with_third);

    let (status, answer) = gw
        .post(
            "/key/delete",
            MASTER_KEY,
            json!({"keys": [key], "erase": true}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deleted_keys"][0], hash.as_str());
    assert_eq!(search(&gw.db.pool, "to-be-erased").await, Vec::new());
    assert_eq!(search(&gw.db.pool, "end-user-pat").await, Vec::new());
    assert_eq!(totals(&gw.db.pool).await, before_with_third);
    let (keys, spend_rows, user): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM litellm_verificationtoken WHERE token = $1),
                (SELECT count(*) FROM litellm_spend WHERE api_key = $1),
                (SELECT count(*) FROM litellm_usertable WHERE user_id = 'keys-their-account'
                   OR user_id = 'keeps-their-account')",
    )
    .bind(hash.as_str())
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((keys, spend_rows, user), (0, 3, 1));
    assert_eq!(chat(&gw, &key, "x").await, 401);
}

#[tokio::test]
async fn an_erasure_waits_for_requests_in_flight_and_pseudonyms_are_stable() {
    let gw = TestGateway::start().await;
    let (_, minted) = gw
        .post("/user/new", MASTER_KEY, json!({"user_id": "busy-subject"}))
        .await
        .status_and_json();
    let key = minted["key"].as_str().unwrap().to_owned();
    // A request in flight (its lease), as admission leaves it.
    sqlx::query(
        "INSERT INTO llmlite_inflight (request_id, token, user_id, reserved, lease_expires_at)
         VALUES ('in-flight-1', $1, 'busy-subject', 0.01, now() + interval '10 minutes')",
    )
    .bind(KeyHash::of(&key).as_str())
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
    let erase = json!({"user_ids": ["busy-subject"], "erase": true});
    let (status, refused) = gw
        .post("/user/delete", MASTER_KEY, erase.clone())
        .await
        .status_and_json();
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in flight")
    );
    assert_eq!(chat(&gw, &key, "x").await, 200, "nothing was erased");
    gw.settled().await;

    sqlx::query("DELETE FROM llmlite_inflight WHERE request_id = 'in-flight-1'")
        .persistent(false)
        .execute(&gw.db.pool)
        .await
        .unwrap();
    let (status, first) = gw
        .post("/user/delete", MASTER_KEY, erase.clone())
        .await
        .status_and_json();
    assert_eq!(status, 200, "{first}");
    // The same ID, made again and erased again, gets the same pseudonym.
    gw.post("/user/new", MASTER_KEY, json!({"user_id": "busy-subject"}))
        .await;
    let (status, second) = gw
        .post("/user/delete", MASTER_KEY, erase)
        .await
        .status_and_json();
    assert_eq!(status, 200, "{second}");
    assert_eq!(first["pseudonyms"], second["pseudonyms"]);
    // An unknown user is a 404 and erases nothing.
    let (status, _) = gw
        .post(
            "/user/delete",
            MASTER_KEY,
            json!({"user_ids": ["nobody-at-all"], "erase": true}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn malformed_or_hostile_erasure_requests_are_refused_and_erase_nothing() {
    let gw = TestGateway::start().await;
    gw.post("/user/new", MASTER_KEY, json!({"user_id": "stays-put"}))
        .await;
    for (body, status) in [
        (json!({"user_ids": ["stays-put"], "erase": "yes"}), 400),
        (json!({"user_ids": ["stays-put"], "erase": 1}), 400),
        (json!({"user_ids": [], "erase": true}), 400),
        // PostgreSQL takes no NUL in text: refused as invalid, before anything changes.
        (json!({"user_ids": ["stays\u{0}put"], "erase": true}), 400),
        (
            json!({"user_ids": ["stays-put\u{202e}"], "erase": true}),
            404,
        ),
    ] {
        let (got, answer) = gw
            .post("/user/delete", MASTER_KEY, body.clone())
            .await
            .status_and_json();
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["error"]["message"].is_string(),
            "OpenAI shape: {answer}"
        );
    }
    let (got, answer) = gw
        .post(
            "/key/delete",
            MASTER_KEY,
            json!({"keys": ["sk-not\u{0}a-key-0000000000"], "erase": true}),
        )
        .await
        .status_and_json();
    assert!((400..500).contains(&got), "{answer}");
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM litellm_usertable WHERE user_id = 'stays-put'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(users, 1, "nothing was erased");
}
