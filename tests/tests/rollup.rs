//! The spend rollup on real PostgreSQL, with an injectable clock: exact daily totals counted
//! once, resets and expiries on time, reports that match, and retention that never deletes a
//! row before it is rolled up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::path::PathBuf;
use std::time::Duration;

use llmlite::clients::audit::Sink;
use llmlite::rollup;
use llmlite_tests::{KeyBy, MotoS3, TestGateway};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// Spend rows over three days, two users, two teams and two models: 3 x 4 x `per` rows.
async fn seed(gw: &TestGateway, per: i64) {
    sqlx::query(
        "INSERT INTO litellm_spend (request_id, call_type, api_key, user_id, team_id, model,
             prompt_tokens, completion_tokens, cache_read_input_tokens, total_tokens, spend,
             start_time, end_time, status)
         SELECT 'r-' || d || '-' || g || '-' || n, 'acompletion', repeat(to_hex(g % 2 + 10), 64),
                'user-' || (g % 2), 'team-' || (g / 2), CASE WHEN g % 2 = 0 THEN 'claude-haiku-4-5' ELSE 'claude-sonnet-4-5' END,
                10 + n, 5 + n % 7, n % 3, 15 + n + n % 7, (0.000001 * (n + 1))::numeric,
                timestamptz '2026-11-26 12:00:00+00' + make_interval(days => d) + make_interval(secs => n),
                timestamptz '2026-11-26 12:00:01+00' + make_interval(days => d) + make_interval(secs => n),
                CASE WHEN n % 10 = 0 THEN 'failure' ELSE 'success' END
         FROM generate_series(0, 2) d, generate_series(0, 3) g, generate_series(1, $1) n",
    )
    .bind(per)
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
}

async fn totals(gw: &TestGateway) -> (Decimal, i64, i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(spend), 0), COALESCE(sum(api_requests), 0)::bigint,
                COALESCE(sum(prompt_tokens), 0)::bigint, COALESCE(sum(failed_requests), 0)::bigint
         FROM litellm_dailyuserspend",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap()
}

async fn raw_totals(gw: &TestGateway) -> (Decimal, i64, i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(spend), 0), count(*), COALESCE(sum(prompt_tokens), 0)::bigint,
                count(*) FILTER (WHERE status = 'failure')
         FROM litellm_spend",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap()
}

fn dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("llmlite-reports-{name}-{}", std::process::id()))
}

#[tokio::test]
async fn daily_totals_equal_the_raw_rows_and_are_counted_once() {
    let gw = TestGateway::start().await;
    seed(&gw, 250).await;
    let raw = raw_totals(&gw).await;
    assert_eq!(raw.1, 3000);
    let reports = Sink::Directory(dir("once"));
    let now = gw.state.clock.now();
    // Two runs at once, then a rerun.
    let (a, b) = tokio::join!(
        rollup::run(&gw.state, &reports, 90, now),
        rollup::run(&gw.state, &reports, 90, now)
    );
    assert_eq!(a.unwrap().rows_rolled + b.unwrap().rows_rolled, 3000);
    assert_eq!(totals(&gw).await, raw);
    assert_eq!(
        rollup::run(&gw.state, &reports, 90, now)
            .await
            .unwrap()
            .rows_rolled,
        0
    );
    assert_eq!(totals(&gw).await, raw, "a rerun adds nothing");

    // Per day and group, exactly the raw rows.
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT (start_time AT TIME ZONE 'UTC')::date AS date, user_id, team_id, api_key, model,
                    sum(spend) AS spend, count(*) AS n, sum(completion_tokens) AS c
             FROM litellm_spend GROUP BY 1, 2, 3, 4, 5) r
         FULL JOIN litellm_dailyuserspend d USING (date, user_id, team_id, api_key, model)
         WHERE r.spend IS DISTINCT FROM d.spend OR r.n IS DISTINCT FROM d.api_requests
            OR r.c IS DISTINCT FROM d.completion_tokens",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);

    // New rows are rolled incrementally.
    sqlx::query(
        "INSERT INTO litellm_spend (request_id, call_type, api_key, model, spend, start_time, end_time, status)
         VALUES ('late', 'acompletion', repeat('c', 64), 'claude-haiku-4-5', 0.5, now(), now(), 'success')",
    )
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        rollup::run(&gw.state, &reports, 90, now)
            .await
            .unwrap()
            .rows_rolled,
        1
    );
    assert_eq!(totals(&gw).await, raw_totals(&gw).await);
    let _ = std::fs::remove_dir_all(dir("once"));
}

#[tokio::test]
async fn reports_parse_and_match_the_database() {
    let gw = TestGateway::start().await;
    seed(&gw, 20).await;
    let root = dir("reports");
    let summary = rollup::run(
        &gw.state,
        &Sink::Directory(root.clone()),
        90,
        gw.state.clock.now(),
    )
    .await
    .unwrap();
    assert!(summary.days_reported.len() >= 3);
    let json: Value =
        serde_json::from_slice(&std::fs::read(root.join("reports/daily/2026-11-27.json")).unwrap())
            .unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 users x 2 teams x their models");
    let requests: i64 = rows.iter().map(|r| r["requests"].as_i64().unwrap()).sum();
    assert_eq!(requests, 80);
    let spend: Decimal = rows
        .iter()
        .map(|r| r["spend"].as_str().unwrap().parse::<Decimal>().unwrap())
        .sum();
    let db_spend: Decimal = sqlx::query_scalar(
        "SELECT sum(spend) FROM litellm_spend WHERE (start_time AT TIME ZONE 'UTC')::date = '2026-11-27'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(spend, db_spend);
    let csv = std::fs::read_to_string(root.join("reports/daily/2026-11-27.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "date,user_id,team_id,key_alias,model,call_type,requests,prompt_tokens,completion_tokens,spend"
    );
    assert_eq!(lines.len(), 5);
    let csv_spend: Decimal = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(csv_spend, db_spend);
    assert!(
        root.join(format!(
            "reports/budget/{}.json",
            gw.state.clock.now().date_naive()
        ))
        .exists()
    );
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn resets_and_expiries_happen_at_the_right_instant() {
    let gw = TestGateway::start().await;
    let reports = Sink::Directory(dir("instant"));
    let expiring = gw.mint_key(json!({"duration": "1h", "max_budget": 10, "budget_duration": "2h", "key_alias": "exp"})).await;
    let token = expiring["token"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE litellm_verificationtoken SET spend = 9 WHERE token = $1")
        .bind(&token)
        .persistent(false)
        .execute(&gw.db.pool)
        .await
        .unwrap();
    let rotated = gw.mint_key(json!({"key_alias": "rot"})).await;
    let old = rotated["key"].as_str().unwrap().to_owned();
    let response = gw
        .post(
            "/key/regenerate",
            llmlite_tests::MASTER_KEY,
            json!({"key": old, "grace_period": "30m"}),
        )
        .await;
    assert_eq!(response.status, 200);

    let start = gw.state.clock.now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    let s = rollup::run(&gw.state, &reports, 90, at(29 * 60))
        .await
        .unwrap();
    assert_eq!(
        (s.keys_expired, s.grace_periods_ended, s.budgets_reset),
        (0, 0, 0)
    );
    let s = rollup::run(&gw.state, &reports, 90, at(31 * 60))
        .await
        .unwrap();
    assert_eq!(
        (s.keys_expired, s.grace_periods_ended),
        (0, 1),
        "grace ends at 30 minutes"
    );
    let s = rollup::run(&gw.state, &reports, 90, at(3601))
        .await
        .unwrap();
    assert_eq!(s.keys_expired, 1, "the key expires at one hour");
    let active: bool =
        sqlx::query_scalar("SELECT is_active FROM litellm_verificationtoken WHERE token = $1")
            .bind(&token)
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert!(!active);
    let s = rollup::run(&gw.state, &reports, 90, at(2 * 3600 + 1))
        .await
        .unwrap();
    assert_eq!(s.budgets_reset, 1, "the budget period ends at two hours");
    let spend = gw.key_spend(KeyBy::Token(&token)).await;
    assert_eq!(spend, Decimal::ZERO);
    // Both deactivations reached the audit trail.
    let shipped: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM llmlite_admin_action WHERE actor = 'rollup' AND shipped_at IS NOT NULL ORDER BY id",
    )
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(shipped, ["key.grace_end", "key.expire"]);
    let _ = std::fs::remove_dir_all(dir("instant"));
}

#[tokio::test]
async fn retention_never_deletes_rows_not_rolled_up() {
    let gw = TestGateway::start().await;
    seed(&gw, 10).await; // 2026-11-26 to 2026-11-28
    let reports = Sink::Directory(dir("retention"));
    let later = chrono::DateTime::parse_from_rfc3339("2027-06-01T00:00:00Z")
        .unwrap()
        .to_utc();

    // While another run holds the rollup lock, nothing is rolled up, so nothing may go.
    let mut blocker = gw.db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(7326001)")
        .persistent(false)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let s = rollup::run(&gw.state, &reports, 90, later).await.unwrap();
    assert_eq!((s.rows_rolled, s.spend_rows_deleted), (0, 0));
    blocker.rollback().await.unwrap();

    // Rolled up, then old enough: deleted, and the totals keep them.
    let raw = raw_totals(&gw).await;
    let s = rollup::run(&gw.state, &reports, 90, later).await.unwrap();
    assert_eq!((s.rows_rolled, s.spend_rows_deleted), (120, 120));
    assert_eq!(totals(&gw).await, raw);
    let _ = std::fs::remove_dir_all(dir("retention"));
}

#[tokio::test]
async fn the_schedule_fixture_runs_the_handler_with_reports_on_s3() {
    let Some(moto) = MotoS3::start().await else {
        eprintln!("skipped: moto is not installed (pip install \"moto[server]\")");
        return;
    };
    moto.create_bucket("llmlite-reports-test").await;
    let gw = TestGateway::start_with(&[("AWS_ENDPOINT_URL_S3", &moto.endpoint)]).await;
    seed(&gw, 5).await;
    let reports = Sink::S3 {
        client: gw.state.s3.clone(),
        bucket: "llmlite-reports-test".into(),
        kms_key_id: None,
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/spend-rollup-schedule.json"
    );
    let event = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let summary = rollup::handle_event(&gw.state, &reports, 90, event)
        .await
        .unwrap();
    assert_eq!(summary["rows_rolled"], 60);
    let keys = moto.keys("llmlite-reports-test", "reports/").await;
    for day in ["2026-11-26", "2026-11-27", "2026-11-28"] {
        assert!(
            keys.contains(&format!("reports/daily/{day}.json")),
            "{keys:?}"
        );
        assert!(
            keys.contains(&format!("reports/daily/{day}.csv")),
            "{keys:?}"
        );
    }
    assert!(keys.iter().any(|k| k.starts_with("reports/budget/")));
}

/// The five-minute schedule's event (`events/spend-rollup-ship-audit.json`) ships the request
/// audit queue once it is due, and only that: a young, small queue waits for company.
#[tokio::test]
async fn the_ship_audit_event_ships_the_request_queue_once_due() {
    let gw = TestGateway::start().await;
    let key = gw.mint_raw_key(json!({})).await;
    for n in 0..3 {
        let reply = gw
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": "claude-haiku-4-5", "max_tokens": 8,
                       "messages": [{"role": "user", "content": format!("ship {n}")}]}),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    gw.settled().await;
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_audit_queue").await,
        3
    );
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/spend-rollup-ship-audit.json"
    );
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let reports = Sink::Directory(gw.db.audit_dir().join("reports"));
    let young = rollup::handle_event(&gw.state, &reports, 90, event.clone())
        .await
        .unwrap();
    assert_eq!(young["records"], 0, "{young}");
    sqlx::query("UPDATE llmlite_audit_queue SET at = at - interval '1 hour'")
        .persistent(false)
        .execute(&gw.db.pool)
        .await
        .unwrap();
    let due = rollup::handle_event(&gw.state, &reports, 90, event)
        .await
        .unwrap();
    assert_eq!(
        (due["records"].clone(), due["objects"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_audit_queue").await,
        0
    );
    assert_eq!(
        llmlite_tests::audit_records(&gw.db.audit_dir()).len(),
        3,
        "one record per request"
    );
}
