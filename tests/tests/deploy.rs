//! The database-migrations custom resource (`llmlite::deploy`): the `events/` fixture of a
//! CloudFormation request, fed through the spend-rollup function's entry point, against a real
//! empty database, answering a loopback stand-in for CloudFormation's pre-signed S3 URL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use axum::http::StatusCode;
use llmlite::clients::audit::Sink;
use llmlite::clients::store::MIGRATOR;
use llmlite::rollup;
use llmlite_tests::TestDb;
use llmlite_tests::deploy::{response_url, without_roles};
use serde_json::Value;

async fn applied_versions(db: &TestDb) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .persistent(false)
        .fetch_all(&db.pool)
        .await
        .unwrap_or_default()
}

async fn has_keys_table(db: &TestDb) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass('litellm_verificationtoken') IS NOT NULL")
        .persistent(false)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn newest_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap()
}

/// The fixture without its role properties (see [`without_roles`]).
fn request(url: &str, change: impl FnOnce(&mut Value)) -> Value {
    llmlite_tests::deploy::request(url, |e| {
        without_roles(e);
        change(e);
    })
}

fn reports() -> Sink {
    Sink::Directory(std::env::temp_dir().join("llmlite-deploy-test-reports"))
}

#[tokio::test]
async fn create_migrates_an_empty_database_and_answers_cloudformation() {
    let db = TestDb::empty().await;
    let state = db.state().await;
    let (url, received) = response_url(StatusCode::OK).await;
    assert!(!has_keys_table(&db).await);

    let answer = rollup::handle_event(&state, &reports(), 90, request(&url, |_| {}))
        .await
        .unwrap();

    let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(applied_versions(&db).await, all);
    assert!(has_keys_table(&db).await);
    let sent = received.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let (headers, body) = &sent[0];
    assert_eq!(body, &answer);
    assert_eq!(body["Status"], "SUCCESS", "{body}");
    assert_eq!(body["PhysicalResourceId"], "llmlite-database-migrations");
    assert_eq!(body["RequestId"], "0f7e1d2c-3b4a-5968-7a8b-9c0d1e2f3a4b");
    assert_eq!(body["LogicalResourceId"], "DatabaseMigrations");
    assert_eq!(
        body["StackId"],
        "arn:aws:cloudformation:eu-west-2:123456789012:stack/llmlite/5b6d3c50-cd9a-11f0-9b3a-0a1b2c3d4e5f"
    );
    assert_eq!(body["Data"]["Version"], newest_migration().to_string());
    assert!(body.get("Reason").is_none(), "{body}");
    // The pre-signed URL's signature covers no content type.
    assert!(headers.get("content-type").is_none(), "{headers:?}");
}

#[tokio::test]
async fn update_is_idempotent_and_delete_keeps_the_schema() {
    let db = TestDb::empty().await;
    let state = db.state().await;
    let (url, received) = response_url(StatusCode::OK).await;

    for kind in ["Create", "Update", "Update"] {
        let event = request(&url, |e| {
            e["RequestType"] = kind.into();
            if kind == "Update" {
                e["PhysicalResourceId"] = "llmlite-database-migrations".into();
                e["OldResourceProperties"] = e["ResourceProperties"].clone();
            }
        });
        let answer = rollup::handle_event(&state, &reports(), 90, event)
            .await
            .unwrap();
        assert_eq!(answer["Status"], "SUCCESS", "{kind}: {answer}");
    }
    assert_eq!(applied_versions(&db).await.len(), MIGRATOR.iter().count());

    let delete = request(&url, |e| {
        e["RequestType"] = "Delete".into();
        e["PhysicalResourceId"] = "llmlite-database-migrations".into();
    });
    let answer = rollup::handle_event(&state, &reports(), 90, delete)
        .await
        .unwrap();
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["Data"], serde_json::json!({}));
    assert!(
        has_keys_table(&db).await,
        "a stack delete must not drop the schema"
    );
    assert_eq!(received.0.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_template_ahead_of_the_code_fails_the_deploy_without_migrating() {
    let db = TestDb::empty().await;
    let state = db.state().await;
    let (url, received) = response_url(StatusCode::OK).await;

    let event = request(&url, |e| {
        e["ResourceProperties"]["LatestMigration"] = "29991231000000_future.sql".into();
    });
    let answer = rollup::handle_event(&state, &reports(), 90, event)
        .await
        .unwrap();

    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains("29991231000000"), "{reason}");
    assert_eq!(received.0.lock().unwrap()[0].1, answer);
    assert!(!has_keys_table(&db).await);
}

#[tokio::test]
async fn an_unreachable_database_fails_the_deploy_and_still_answers() {
    let db = TestDb::empty().await;
    // Nothing listens on port 9: the pool cannot connect.
    let state = db
        .state_with(&[(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:9/nowhere?connect_timeout=2",
        )])
        .await;
    let (url, received) = response_url(StatusCode::OK).await;

    let answer = rollup::handle_event(&state, &reports(), 90, request(&url, |_| {}))
        .await
        .unwrap();

    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"]
            .as_str()
            .unwrap()
            .starts_with("migrating the database failed"),
        "{answer}"
    );
    assert_eq!(received.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_answer_fails_the_invocation_so_lambda_retries_it() {
    let db = TestDb::empty().await;
    let state = db.state().await;
    let (url, received) = response_url(StatusCode::FORBIDDEN).await;

    let error = rollup::handle_event(&state, &reports(), 90, request(&url, |_| {}))
        .await
        .unwrap_err();

    assert!(error.contains("403"), "{error}");
    assert_eq!(received.0.lock().unwrap().len(), 1);
    // The migrations ran; the retry will find nothing to do and answer again.
    assert!(has_keys_table(&db).await);
}

#[tokio::test]
async fn a_malformed_request_is_refused_without_touching_the_database() {
    let db = TestDb::empty().await;
    let state = db.state().await;
    let (url, received) = response_url(StatusCode::OK).await;

    let event = request(&url, |e| e["RequestType"] = "Rename".into());
    let error = rollup::handle_event(&state, &reports(), 90, event)
        .await
        .unwrap_err();

    assert!(error.contains("custom-resource request"), "{error}");
    assert!(received.0.lock().unwrap().is_empty());
    assert!(!has_keys_table(&db).await);
}

#[tokio::test]
async fn role_properties_come_all_three_or_not_at_all() {
    let db = TestDb::empty().await;
    let state = db.state().await;
    let (url, received) = response_url(StatusCode::OK).await;

    let event = request(&url, |e| {
        e["ResourceProperties"]["AdminUser"] = "llmlite".into();
        e["ResourceProperties"]["AppSecretArn"] =
            "arn:aws:secretsmanager:eu-west-2:123456789012:secret:app".into();
    });
    let answer = rollup::handle_event(&state, &reports(), 90, event)
        .await
        .unwrap();

    assert_eq!(answer["Status"], "FAILED", "{answer}");
    assert!(
        answer["Reason"].as_str().unwrap().contains("go together"),
        "{answer}"
    );
    assert_eq!(received.0.lock().unwrap().len(), 1);
    assert!(!has_keys_table(&db).await);
}
