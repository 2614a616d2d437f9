//! The schema, applied to a real PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite::clients::store::Database;
use llmlite_tests::TestDb;

#[tokio::test]
async fn migrations_apply_cleanly_to_an_empty_database_and_again_as_a_no_op() {
    let db = TestDb::empty().await;
    db.db.migrate().await.expect("first run");
    db.db.migrate().await.expect("second run is a no-op");

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .persistent(false)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "litellm_dailyuserspend",
            "litellm_proxy_config",
            "litellm_spend",
            "litellm_teamtable",
            "litellm_usertable",
            "litellm_verificationtoken",
            "llmlite_admin_action",
            "llmlite_audit_outbox",
            "llmlite_audit_queue",
            "llmlite_audit_shipper",
            "llmlite_cli_credential",
            "llmlite_console_session",
            "llmlite_deprecated_token",
            "llmlite_device_grant",
            "llmlite_inflight",
            "llmlite_rate_bucket",
            "llmlite_sign_in_failure",
            "llmlite_sign_in_state",
        ]
    );
}

#[tokio::test]
async fn money_is_numeric_and_no_column_is_a_float() {
    let db = TestDb::new().await;
    let floats: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('real', 'double precision', 'money')",
    )
    .persistent(false)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(floats.is_empty(), "float columns: {floats:?}");

    let money: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns
         WHERE table_schema = 'public'
           AND column_name IN ('spend', 'max_budget', 'soft_budget', 'reserved')
         ORDER BY 1",
    )
    .persistent(false)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(money.len() >= 10, "{money:?}");
    for (column, data_type) in money {
        assert_eq!(data_type, "numeric", "{column}");
    }
}

#[tokio::test]
async fn keys_are_stored_by_hash_only() {
    let db = TestDb::new().await;
    let raw_key_as_token = sqlx::query(
        "INSERT INTO litellm_verificationtoken (token, key_name) VALUES ($1, 'sk-...abcd')",
    )
    .bind("sk-this-is-a-raw-key-abcd")
    .persistent(false)
    .execute(&db.pool)
    .await;
    assert!(
        raw_key_as_token.is_err(),
        "a raw key must not fit the token column"
    );

    let hash = llmlite::keys::KeyHash::of("sk-this-is-a-raw-key-abcd");
    sqlx::query("INSERT INTO litellm_verificationtoken (token, key_name) VALUES ($1, $2)")
        .bind(hash.as_str())
        .bind(llmlite::keys::short_name("sk-this-is-a-raw-key-abcd"))
        .persistent(false)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn exact_decimal_spend_survives_a_round_trip() {
    use rust_decimal::Decimal;
    use std::str::FromStr;

    let db = TestDb::new().await;
    let hash = llmlite::keys::KeyHash::of("sk-round-trip-key");
    let tiny = Decimal::from_str("0.0000033").unwrap();
    sqlx::query(
        "INSERT INTO litellm_verificationtoken (token, key_name, spend) VALUES ($1, 'sk-...-key', $2)",
    )
    .bind(hash.as_str())
    .bind(tiny)
    .persistent(false)
    .execute(&db.pool)
    .await
    .unwrap();
    // A million additions of 3.3 micro-dollars is exactly 3.3 dollars: no float drift.
    sqlx::query(
        "UPDATE litellm_verificationtoken SET spend = spend + $2 * 999999 WHERE token = $1",
    )
    .bind(hash.as_str())
    .bind(tiny)
    .persistent(false)
    .execute(&db.pool)
    .await
    .unwrap();
    let spend: Decimal =
        sqlx::query_scalar("SELECT spend FROM litellm_verificationtoken WHERE token = $1")
            .bind(hash.as_str())
            .persistent(false)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(spend, Decimal::from_str("3.3").unwrap());
}

#[tokio::test]
async fn queries_leave_no_prepared_statements_behind_for_rds_proxy() {
    let db = TestDb::new().await;
    // One connection, so the check below runs on the connection the ping used.
    let mut one = llmlite_tests::database_config(&db.url);
    one.pool_size = 1;
    let db_one = Database::new(&one, None).unwrap();
    db_one
        .ping(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let pool_one = db_one.pool().await.unwrap();
    let prepared: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(pool_one)
        .await
        .unwrap();
    assert_eq!(
        prepared, 0,
        "named prepared statements pin RDS Proxy sessions"
    );
}
