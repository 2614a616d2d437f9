//! The database roles (`llmlite::clients::db_roles`), made by the migrations custom resource as deployed:
//! the `events/` fixture with its role properties, secrets read by the real SDK client from a
//! Secrets Manager double, against a real PostgreSQL server. Then the whole gateway runs as the
//! application role, and that role is shown to be unable to change the schema or the audit
//! trail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::HashMap;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use llmlite::clients::audit::Sink;
use llmlite::crypto::scram_sha256_verifier;
use llmlite::rollup;
use llmlite_tests::deploy::{request, response_url};
use llmlite_tests::secrets_manager::SecretsManager;
use llmlite_tests::{
    MASTER_KEY, TestDb, TestGateway, on_server_blocking, server_url, user_of, with_user,
};
use serde_json::{Value, json};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

const OWNER_ARN: &str =
    "arn:aws:secretsmanager:eu-west-2:123456789012:secret:llmlite-db-owner-Ab12Cd";
const APP_ARN: &str = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:llmlite-db-app-Ef34Gh";
/// Passwords as the template's secrets generate them, except for a quote and a space: they
/// reach the server only inside a verifier, never as SQL text.
const OWNER_PASSWORD: &str = "Owner0password1with'a quote2and3space";
const APP_PASSWORD: &str = "App0password1Generated2By3SecretsManager";

/// Two roles of this test's own (roles belong to the whole server, and tests run at once),
/// dropped when it ends: declared before the database, so dropped after it.
struct Roles {
    owner: String,
    app: String,
}

impl Roles {
    fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Roles {
            owner: format!("llmlite_owner_{}", &tag[..12]),
            app: format!("llmlite_app_{}", &tag[..12]),
        }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        on_server_blocking(format!(
            "DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {}",
            self.app, self.owner
        ));
    }
}

/// The deploy: the migrations resource, with the role properties, run by the spend-rollup
/// function's entry point as the application role (its `DATABASE_URL`). Returns the answer.
async fn deploy(db: &TestDb, roles: &Roles, secrets: &SecretsManager, kind: &str) -> Value {
    let mut env: HashMap<String, String> = db.env();
    env.insert("DATABASE_URL".into(), with_user(&db.url, &roles.app));
    env.insert(
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".into(),
        "http://127.0.0.1:9".into(),
    );
    let state = TestDb::state_from(env, secrets.aws_config().await).await;
    let (url, received) = response_url(StatusCode::OK).await;
    let event = request(&url, |e| {
        e["RequestType"] = kind.into();
        if kind == "Update" {
            e["PhysicalResourceId"] = "llmlite-database-migrations".into();
        }
        let properties = &mut e["ResourceProperties"];
        properties["AdminUser"] = user_of(server_url()).into();
        properties["OwnerSecretArn"] = OWNER_ARN.into();
        properties["AppSecretArn"] = APP_ARN.into();
    });
    let reports = Sink::Directory(std::env::temp_dir().join("llmlite-db-roles-reports"));
    let answer = rollup::handle_event(&state, &reports, 90, event)
        .await
        .unwrap();
    assert_eq!(received.0.lock().unwrap().len(), 1);
    answer
}

/// The two role secrets, holding `owner` and `app` as the role names.
async fn secrets_for(owner: &str, app: &str) -> SecretsManager {
    let secrets = SecretsManager::start().await;
    secrets.put(
        OWNER_ARN,
        &json!({"username": owner, "password": OWNER_PASSWORD}).to_string(),
    );
    secrets.put(
        APP_ARN,
        &json!({"username": app, "password": APP_PASSWORD}).to_string(),
    );
    secrets
}

/// Objects of the schema (relations, functions, types) not owned by `role`.
async fn not_owned_by(pool: &PgPool, role: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
          WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r','p','v','m','S','c')
            AND c.relowner <> coalesce((SELECT oid FROM pg_roles WHERE rolname = $1), 0)
         UNION ALL
         SELECT p.proname::text FROM pg_proc p
          WHERE p.pronamespace = 'public'::regnamespace
            AND p.proowner <> coalesce((SELECT oid FROM pg_roles WHERE rolname = $1), 0)",
    )
    .bind(role)
    .persistent(false)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn stored_verifier(pool: &PgPool, role: &str) -> String {
    sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .persistent(false)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The verifier PostgreSQL holds for `role` is the one its secret's password gives: RDS Proxy,
/// logging in with the secret, gets in.
async fn assert_password_is(pool: &PgPool, role: &str, password: &str) {
    let stored = stored_verifier(pool, role).await;
    let (iterations, rest) = stored
        .strip_prefix("SCRAM-SHA-256$")
        .and_then(|r| r.split_once(':'))
        .unwrap_or_else(|| panic!("{role}: not a SCRAM verifier"));
    let salt = STANDARD.decode(rest.split('$').next().unwrap()).unwrap();
    assert_eq!(
        scram_sha256_verifier(password, &salt, iterations.parse().unwrap()),
        stored,
        "{role}"
    );
}

#[tokio::test]
async fn a_stack_from_before_the_roles_hands_its_schema_to_the_owner_and_keeps_passwords() {
    let roles = Roles::new();
    // Migrated by the server's superuser, as a stack from before the roles was by its master.
    let db = TestDb::new().await;
    let secrets = secrets_for(&roles.owner, &roles.app).await;
    assert!(!not_owned_by(&db.pool, &roles.owner).await.is_empty());

    let answer = deploy(&db, &roles, &secrets, "Update").await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(
        not_owned_by(&db.pool, &roles.owner).await,
        Vec::<String>::new()
    );
    assert_password_is(&db.pool, &roles.owner, OWNER_PASSWORD).await;
    assert_password_is(&db.pool, &roles.app, APP_PASSWORD).await;

    // The rotation function has since changed the app role's password: a later deploy, with
    // the secret as rotation left it, must not change it back or anything else.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {} PASSWORD 'Rotated0password1by2the3rotation4function'",
        roles.app
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let rotated = stored_verifier(&db.pool, &roles.app).await;
    let answer = deploy(&db, &roles, &secrets, "Update").await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(stored_verifier(&db.pool, &roles.app).await, rotated);
    assert_eq!(
        not_owned_by(&db.pool, &roles.owner).await,
        Vec::<String>::new()
    );

    // Neither role may create roles or databases.
    let (create_role, create_db): (bool, bool) = sqlx::query_as(
        "SELECT bool_or(rolcreaterole), bool_or(rolcreatedb) FROM pg_roles WHERE rolname = ANY($1)",
    )
    .bind(vec![roles.owner.clone(), roles.app.clone()])
    .persistent(false)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!create_role && !create_db);
}

#[tokio::test]
async fn the_resource_fails_the_deploy_naming_a_secret_it_cannot_use() {
    let roles = Roles::new();
    let db = TestDb::empty().await;
    // The app secret holds a role name that would be SQL.
    let secrets = secrets_for(&roles.owner, "x; DROP TABLE y").await;
    let answer = deploy(&db, &roles, &secrets, "Create").await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.contains(APP_ARN), "{reason}");
    assert!(!reason.contains(APP_PASSWORD) && !reason.contains(OWNER_PASSWORD));
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    )
    .persistent(false)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was migrated");
}

/// Runs `sql` as `conn`'s role and returns the SQLSTATE it failed with.
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => panic!("the application role was allowed: {sql}"),
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
            .unwrap_or_else(|| panic!("{sql}: {e}")),
    }
}

#[tokio::test]
async fn the_application_role_runs_the_gateway_but_cannot_change_the_schema_or_the_audit_trail() {
    let roles = Roles::new();
    let db = TestDb::empty().await;
    let secrets = secrets_for(&roles.owner, &roles.app).await;
    let answer = deploy(&db, &roles, &secrets, "Create").await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");

    // The whole gateway, connected as the application role.
    let app_url = with_user(&db.url, &roles.app);
    let gw = TestGateway::start_on(db, &[("DATABASE_URL", app_url.as_str())], |_| {}).await;
    let key = gw
        .mint_raw_key(json!({"max_budget": 5, "models": ["claude-haiku-4-5"], "rpm_limit": 100}))
        .await;
    let chat = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 32,
                   "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text);
    let messages = gw
        .post(
            "/v1/messages",
            &key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 32,
                   "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    assert_eq!(messages.status, 200, "{}", messages.text);
    gw.settled().await;
    let info = gw.post("/key/info", MASTER_KEY, json!({"key": key})).await;
    assert_eq!(info.status, 200);
    let info = info.json();
    let spend: f64 = info["info"]["spend"].as_f64().unwrap();
    assert!(spend > 0.0, "both requests were charged: {info}");
    gw.admin("/key/update", json!({"key": key, "max_budget": 6}))
        .await;
    gw.admin("/team/new", json!({"team_id": "roles-team"}))
        .await;
    gw.admin(
        "/user/new",
        json!({"user_id": "roles-user", "teams": ["roles-team"]}),
    )
    .await;
    // Erasure rewrites audit rows only through its SECURITY DEFINER function.
    let erased = gw
        .admin(
            "/user/delete",
            json!({"user_ids": ["roles-user"], "erase": true}),
        )
        .await;
    assert_eq!(erased["erased"], true, "{erased}");
    gw.admin("/key/block", json!({"key": key})).await;
    gw.admin("/key/delete", json!({"keys": [key]})).await;
    for path in [
        "/spend/logs",
        "/global/spend/report?start_date=2026-11-01&end_date=2026-11-30",
        "/team/list",
        "/key/list",
        "/health/readiness",
    ] {
        let response = gw.get(path, MASTER_KEY).await;
        assert_eq!(response.status, 200, "{path}");
    }
    // The daily rollup, as the application role.
    let schedule: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/spend-rollup-schedule.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let reports = Sink::Directory(std::env::temp_dir().join("llmlite-db-roles-reports"));
    rollup::handle_event(&gw.state, &reports, 90, schedule)
        .await
        .unwrap();
    // Every admin action was recorded and shipped: the one column the role may set.
    let (actions, unshipped): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE shipped_at IS NULL) FROM llmlite_admin_action",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert!(actions >= 6, "{actions}");
    assert_eq!(unshipped, 0);

    // What the role may not do.
    let mut app = PgConnection::connect(&app_url).await.unwrap();
    let denied = "42501";
    for sql in [
        "DROP TABLE litellm_spend",
        "DROP FUNCTION llmlite_allows(TEXT[], TEXT)",
        "ALTER TABLE litellm_verificationtoken ADD COLUMN note TEXT",
        "ALTER TABLE litellm_verificationtoken OWNER TO CURRENT_USER",
        "CREATE TABLE shadow (a INT)",
        "CREATE TEMPORARY TABLE shadow (a INT)",
        "CREATE FUNCTION llmlite_shadow() RETURNS INT LANGUAGE sql AS 'SELECT 1'",
        "CREATE OR REPLACE FUNCTION llmlite_allows(p_models TEXT[], p_model TEXT) \
         RETURNS BOOLEAN LANGUAGE sql AS 'SELECT true'",
        "CREATE FUNCTION pg_temp.shadow() RETURNS INT LANGUAGE sql AS 'SELECT 1'",
        "UPDATE llmlite_admin_action SET actor = 'nobody'",
        "UPDATE llmlite_admin_action SET after = NULL, shipped_at = now()",
        "DELETE FROM llmlite_admin_action",
        "TRUNCATE llmlite_admin_action",
        "TRUNCATE litellm_spend",
        "DELETE FROM _sqlx_migrations",
        "CREATE ROLE shadow",
    ] {
        assert_eq!(refused(&mut app, sql).await, denied, "{sql}");
    }
    let altered_role = format!("ALTER ROLE {} CREATEROLE", roles.app);
    assert_eq!(refused(&mut app, &altered_role).await, denied);
    // The audit rows are as they were written.
    let untouched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM llmlite_admin_action WHERE actor <> 'nobody'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(untouched, actions);
    let _ = app.close().await;
}
