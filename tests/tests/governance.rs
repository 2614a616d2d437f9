//! Key governance over real HTTP and PostgreSQL (issue 18): new keys get the default tier's
//! limits unless the master key chooses otherwise, rotation grace periods show which key was
//! presented, old keys are listed for rotation, and the catalog is held to the allowed
//! geography.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite::clients::audit::Sink;
use llmlite::config::Config;
use llmlite::keys::KeyHash;
use llmlite::rollup;
use llmlite_tests::{MASTER_KEY, TestDb, TestGateway};
use serde_json::{Value, json};

/// The production default: `LLMLITE_DEFAULT_TIER` unset (the harness sets `none`).
const PRODUCTION_DEFAULT: &[(&str, &str)] = &[("LLMLITE_DEFAULT_TIER", "")];

/// The tier and the four limits a tier sets, as a key object shows them.
fn limits(key: &Value) -> Value {
    json!([
        key["tier"],
        key["tpm_limit"],
        key["rpm_limit"],
        key["max_budget"],
        key["budget_duration"]
    ])
}

fn standard() -> Value {
    json!(["standard", 10000, 100, 50.0, "30d"])
}

fn unlimited() -> Value {
    json!(["none", null, null, null, null])
}

/// The `after` of the admin action recorded for `action` on the key `token`.
async fn recorded_after(gw: &TestGateway, action: &str, token: &str) -> Value {
    sqlx::query_scalar(
        "SELECT after FROM llmlite_admin_action WHERE action = $1 AND object_id = $2",
    )
    .bind(action)
    .bind(token)
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap()
}

/// A key of a `proxy_admin` user: an admin, but not the master key.
async fn admin_key(gw: &TestGateway) -> String {
    gw.admin(
        "/user/new",
        json!({"user_id": "ops", "user_role": "proxy_admin", "auto_create_key": false}),
    )
    .await;
    gw.mint_raw_key(json!({"user_id": "ops", "tier": "admin"}))
        .await
}

/// The template's residency setting: the EU profiles, and the in-Region embedding models by ID.
const TEMPLATE_PREFIXES: &str =
    "eu.,amazon.titan-embed-text-v2:0,cohere.embed-english-v3,cohere.embed-multilingual-v3";

#[tokio::test]
async fn a_key_made_without_limits_gets_the_standard_tier_and_the_tier_is_enforced() {
    let gw = TestGateway::start_with(PRODUCTION_DEFAULT).await;
    let minted = gw.mint_key(json!({"key_alias": "no-limits-given"})).await;
    assert_eq!(limits(&minted), standard());
    let token = minted["token"].as_str().unwrap();
    assert_eq!(
        limits(&recorded_after(&gw, "key.generate", token).await),
        standard()
    );
    let stored: Option<String> =
        sqlx::query_scalar("SELECT tier FROM litellm_verificationtoken WHERE token = $1")
            .bind(token)
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some("standard"));

    // A limit given overrides the tier's; the others stay.
    let partial = gw.mint_key(json!({"rpm_limit": 5})).await;
    assert_eq!(limits(&partial), json!(["standard", 10000, 5, 50.0, "30d"]));

    // The limits are the ones admission enforces: the chat path reports them.
    let (_, headers) = chat_with(&gw, minted["key"].as_str().unwrap()).await;
    assert_eq!(headers["x-ratelimit-limit-requests"], "100");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "10000");
}

#[tokio::test]
async fn the_default_tier_is_a_setting_and_none_must_be_written_out() {
    let gw = TestGateway::start_with(&[("LLMLITE_DEFAULT_TIER", "none")]).await;
    let minted = gw.mint_key(json!({})).await;
    assert_eq!(limits(&minted), unlimited());
    let gw = TestGateway::start_with(&[("LLMLITE_DEFAULT_TIER", "admin")]).await;
    let minted = gw.mint_key(json!({})).await;
    assert_eq!(
        limits(&minted),
        json!(["admin", 100000, 1000, 500.0, "30d"])
    );

    let db = TestDb::new().await;
    for bad in ["unlimited", "Standard-ish", "0"] {
        let mut env = db.env();
        env.insert("LLMLITE_DEFAULT_TIER".into(), bad.into());
        let err = Config::load_with_aws(&env, llmlite::config::local_aws_config("eu-west-2").await)
            .await
            .unwrap_err();
        assert_eq!(err.variable, "LLMLITE_DEFAULT_TIER", "{bad}");
        assert!(err.to_string().contains("LLMLITE_DEFAULT_TIER"));
    }
}

#[tokio::test]
async fn an_unlimited_key_is_the_master_keys_choice_and_is_recorded() {
    let gw = TestGateway::start_with(PRODUCTION_DEFAULT).await;
    let admin = admin_key(&gw).await;
    let keys_before = gw
        .count("SELECT count(*) FROM litellm_verificationtoken")
        .await;

    // An admin key may set limits, not take them away.
    for (body, field) in [
        (json!({"tier": "none"}), "tier"),
        (json!({"tpm_limit": null}), "tpm_limit"),
        (json!({"max_budget": null, "rpm_limit": 3}), "max_budget"),
        (
            json!({"max_parallel_requests": null}),
            "max_parallel_requests",
        ),
    ] {
        let (status, error) = gw
            .post("/key/generate", &admin, body.clone())
            .await
            .status_and_json();
        assert_eq!(status, 403, "{body}: {error}");
        assert_eq!(error["error"]["type"], "permission_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    assert_eq!(
        gw.count("SELECT count(*) FROM litellm_verificationtoken")
            .await,
        keys_before,
        "nothing written"
    );
    let (status, _) = gw
        .post("/key/generate", &admin, json!({"tier": "standard"}))
        .await
        .status_and_json();
    assert_eq!(status, 200);

    // The master key may; the admin record shows it.
    let (status, minted) = gw
        .post("/key/generate", MASTER_KEY, json!({"tier": "none"}))
        .await
        .status_and_json();
    assert_eq!(status, 200, "{minted}");
    assert_eq!(limits(&minted), unlimited());
    let token = minted["token"].as_str().unwrap();
    let after = recorded_after(&gw, "key.generate", token).await;
    assert_eq!(limits(&after), unlimited());
    assert_eq!(after["tier"], "none");
    let (status, nulls) = gw
        .post(
            "/key/generate",
            MASTER_KEY,
            json!({"tpm_limit": null, "rpm_limit": null, "max_budget": null}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200);
    assert_eq!(limits(&nulls), json!(["standard", null, null, null, "30d"]));

    // Taking a limit off an existing key is the master key's too.
    let (status, error) = gw
        .post(
            "/key/update",
            &admin,
            json!({"key": token, "tier": "standard"}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{error}");
    let (status, error) = gw
        .post(
            "/key/update",
            &admin,
            json!({"key": token, "rpm_limit": null}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 403);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`rpm_limit`")
    );
    let (status, updated) = gw
        .post(
            "/key/update",
            MASTER_KEY,
            json!({"key": token, "rpm_limit": null}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200);
    assert_eq!(updated["rpm_limit"], Value::Null);

    // Bad input is a 400 naming the field, and writes nothing.
    let before = gw
        .count("SELECT count(*) FROM litellm_verificationtoken")
        .await;
    let (status, error) = gw
        .post("/key/generate", MASTER_KEY, json!({"tier": "gold"}))
        .await
        .status_and_json();
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("tier"),
        "{error}"
    );
    assert_eq!(
        gw.count("SELECT count(*) FROM litellm_verificationtoken")
            .await,
        before
    );
}

#[tokio::test]
async fn the_key_user_new_mints_gets_the_default_tier_and_none_needs_the_master_key() {
    let gw = TestGateway::start_with(PRODUCTION_DEFAULT).await;
    let created = gw.admin("/user/new", json!({"user_id": "alice"})).await;
    assert_eq!(limits(&created["key_info"]), standard());
    // The user's own fields are the user's: none were given.
    assert_eq!(created["max_budget"], Value::Null);
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        limits(&recorded_after(&gw, "key.generate", token).await),
        standard()
    );

    let admin = admin_key(&gw).await;
    let (status, error) = gw
        .post(
            "/user/new",
            &admin,
            json!({"user_id": "bob", "key_tier": "none"}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 403, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`key_tier`")
    );
    assert_eq!(
        gw.count("SELECT count(*) FROM litellm_usertable WHERE user_id = 'bob'")
            .await,
        0,
        "nothing written"
    );
    let (status, bob) = gw
        .post(
            "/user/new",
            &admin,
            json!({"user_id": "bob", "key_tier": "admin"}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["key_info"]["tier"], "admin");

    let (status, carol) = gw
        .post(
            "/user/new",
            MASTER_KEY,
            json!({"user_id": "carol", "key_tier": "none"}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{carol}");
    assert_eq!(limits(&carol["key_info"]), unlimited());
    let after = recorded_after(&gw, "key.generate", carol["token"].as_str().unwrap()).await;
    assert_eq!(after["tier"], "none");

    let (status, error) = gw
        .post(
            "/user/new",
            MASTER_KEY,
            json!({"user_id": "dan", "key_tier": "none", "auto_create_key": false}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "key_tier");
    let (status, error) = gw
        .post(
            "/user/update",
            MASTER_KEY,
            json!({"user_id": "alice", "key_tier": "admin"}),
        )
        .await
        .status_and_json();
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "key_tier");

    // With the default set to none, the minted key has no limits.
    let gw = TestGateway::start_with(&[("LLMLITE_DEFAULT_TIER", "none")]).await;
    let created = gw.admin("/user/new", json!({"user_id": "erin"})).await;
    assert_eq!(limits(&created["key_info"]), unlimited());
}

/// The spend row of `request_id`: (api_key, presented_key_hash).
async fn spend_hashes(gw: &TestGateway, request_id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT api_key, presented_key_hash FROM litellm_spend WHERE request_id = $1")
        .bind(request_id)
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap()
}

/// A chat request with `key`, settled: its request id and the response headers.
async fn chat_with(gw: &TestGateway, key: &str) -> (String, reqwest::header::HeaderMap) {
    let response = gw
        .post(
            "/v1/chat/completions",
            key,
            json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status, 200);
    let id = response.request_id();
    gw.settled().await;
    (id, response.headers)
}

#[tokio::test]
async fn during_a_grace_period_the_old_key_is_charged_to_the_row_and_shown_as_presented() {
    let gw = TestGateway::start().await;
    let old = gw.mint_raw_key(json!({"key_alias": "rotating"})).await;
    let old_hash = KeyHash::of(&old).to_string();
    let (before, _) = chat_with(&gw, &old).await;
    assert_eq!(
        spend_hashes(&gw, &before).await,
        (old_hash.clone(), Some(old_hash.clone()))
    );

    let rotated = gw
        .admin("/key/regenerate", json!({"key": old, "grace_period": "1h"}))
        .await;
    let new = rotated["key"].as_str().unwrap().to_owned();
    let new_hash = KeyHash::of(&new).to_string();
    assert_ne!(new_hash, old_hash);

    // The old key, in its grace period: charged to the row's current hash, presented as old.
    let (with_old, _) = chat_with(&gw, &old).await;
    assert_eq!(
        spend_hashes(&gw, &with_old).await,
        (new_hash.clone(), Some(old_hash.clone()))
    );
    let record = gw.audit_record(&with_old).await;
    assert_eq!(record["key_hash"], new_hash.as_str());
    assert_eq!(record["presented_key_hash"], old_hash.as_str());
    // The new key: both the same.
    let (with_new, _) = chat_with(&gw, &new).await;
    assert_eq!(
        spend_hashes(&gw, &with_new).await,
        (new_hash.clone(), Some(new_hash.clone()))
    );
    assert_eq!(
        gw.audit_record(&with_new).await["presented_key_hash"],
        new_hash.as_str()
    );

    // /spend/logs shows both.
    let logs = gw
        .get(&format!("/spend/logs?request_id={with_old}"), MASTER_KEY)
        .await
        .json();
    assert_eq!(logs[0]["api_key"], new_hash.as_str());
    assert_eq!(logs[0]["presented_key_hash"], old_hash.as_str());
}

#[tokio::test]
async fn the_previous_settle_functions_still_work_during_a_deploy() {
    let gw = TestGateway::start().await;
    let minted = gw.mint_key(json!({})).await;
    let key_id: i64 =
        sqlx::query_scalar("SELECT key_id FROM litellm_verificationtoken WHERE token = $1")
            .bind(minted["token"].as_str().unwrap())
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    // The previous code's call: llmlite_settle_as, without the presented hash.
    let spend: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT llmlite_settle_as('anthropic_messages', 'old-code-1', $1, $2, NULL, NULL, NULL,
                NULL, 'claude-haiku-4-5', 'eu.x', 10, 5, 0, 0, 0.25, now(), now(), 'success',
                NULL, '{}'::jsonb)",
    )
    .bind(key_id)
    .bind(minted["token"].as_str().unwrap())
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(spend, rust_decimal::Decimal::new(25, 2));
    let row: (String, String, Option<String>) = sqlx::query_as(
        "SELECT call_type, api_key, presented_key_hash FROM litellm_spend WHERE request_id = 'old-code-1'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "anthropic_messages".to_owned(),
            minted["token"].as_str().unwrap().to_owned(),
            None
        )
    );
}

fn reports_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("llmlite-rotation-{name}-{}", std::process::id()))
}

#[tokio::test]
async fn a_key_older_than_the_rotation_age_is_listed_with_its_owner() {
    let gw = TestGateway::start().await;
    gw.admin("/team/new", json!({"team_id": "platform"})).await;
    let old = gw
        .mint_key(json!({"key_alias": "old-laptop", "user_id": "alice", "team_id": "platform"}))
        .await;
    let rotated = gw.mint_key(json!({"key_alias": "rotated"})).await;
    gw.state.clock.advance(Duration::from_secs(81 * 86_400));
    let young = gw
        .mint_key(json!({"key_alias": "new-laptop", "user_id": "bob"}))
        .await;
    gw.admin("/key/regenerate", json!({"key": rotated["token"]}))
        .await;
    gw.state.clock.advance(Duration::from_secs(10 * 86_400));

    let root = reports_dir("due");
    let reports = Sink::Directory(root.clone());
    let now = gw.state.clock.now();
    let summary = rollup::run(&gw.state, &reports, 90, now).await.unwrap();
    assert_eq!(summary.keys_due_for_rotation, 1);
    let day = now.date_naive();
    let report: Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("reports/rotation/{day}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(report["max_age_days"], 90);
    let due = report["due_for_rotation"].as_array().unwrap();
    assert_eq!(due.len(), 1, "{report}");
    let entry = &due[0];
    assert_eq!(entry["token"], old["token"]);
    assert_eq!(entry["key_name"], old["key_name"]);
    assert!(entry["key_name"].as_str().unwrap().starts_with("sk-..."));
    assert_eq!(entry["key_alias"], "old-laptop");
    assert_eq!(entry["user_id"], "alice");
    assert_eq!(entry["team_id"], "platform");
    assert_eq!(entry["age_days"], 91);
    assert_eq!(entry["created_at"], old["created_at"]);
    let text = report.to_string();
    assert!(!text.contains("new-laptop"), "a 10-day-old key is not due");
    assert!(!text.contains(young["token"].as_str().unwrap()));
    assert!(
        !text.contains("\"rotated\""),
        "a rotated key's age starts again"
    );
    let csv = std::fs::read_to_string(root.join(format!("reports/rotation/{day}.csv"))).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .contains(",old-laptop,alice,platform,")
    );

    // The age is a setting.
    let gw10 = TestGateway::start_on(
        TestDb::new().await,
        &[("LLMLITE_KEY_MAX_AGE_DAYS", "5")],
        |_| {},
    )
    .await;
    gw10.mint_key(json!({"key_alias": "six-days"})).await;
    gw10.state.clock.advance(Duration::from_secs(6 * 86_400));
    let summary = rollup::run(&gw10.state, &reports, 90, gw10.state.clock.now())
        .await
        .unwrap();
    assert_eq!(summary.keys_due_for_rotation, 1);
    let _ = std::fs::remove_dir_all(root);
}

/// A catalog with one `eu.` model whose fallback is `fallback_id`.
fn catalog(dir: &std::path::Path, name: &str, fallback_id: &str) -> String {
    let text = format!(
        r#"
[[model]]
alias = "claude-haiku-4-5"
bedrock_model_id = "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = {{ input = "1.10", output = "5.50", cache_read = "0.11", cache_write = "1.375" }}
fallbacks = ["claude-haiku-4-5-elsewhere"]

[[model]]
alias = "claude-haiku-4-5-elsewhere"
bedrock_model_id = "{fallback_id}"
max_output_tokens = 64000
context_window = 200000
prices = {{ input = "1.00", output = "5.00", cache_read = "0.10", cache_write = "1.25" }}
"#
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

async fn load(db: &TestDb, extra: &[(&str, &str)]) -> Result<Config, llmlite::config::ConfigError> {
    let mut env = db.env();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::load_with_aws(&env, llmlite::config::local_aws_config("eu-west-2").await).await
}

#[tokio::test]
async fn a_catalog_outside_the_allowed_prefixes_refuses_to_start_naming_the_model() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("llmlite-residency-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let global = catalog(
        &dir,
        "global.toml",
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
    );
    let eu_only = catalog(
        &dir,
        "eu.toml",
        "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
    );

    // A `global.` profile (a fallback here) with only `eu.` allowed: refused, naming both.
    let err = load(
        &db,
        &[
            ("LLMLITE_MODELS", &global),
            ("LLMLITE_ALLOWED_MODEL_PREFIXES", "eu."),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.variable, "LLMLITE_ALLOWED_MODEL_PREFIXES");
    let message = err.to_string();
    assert!(
        message.contains("LLMLITE_ALLOWED_MODEL_PREFIXES"),
        "{message}"
    );
    assert!(message.contains("claude-haiku-4-5-elsewhere"), "{message}");
    assert!(
        message.contains("global.anthropic.claude-haiku-4-5"),
        "{message}"
    );
    assert!(
        message.contains("fallback of `claude-haiku-4-5`"),
        "{message}"
    );
    // And the gateway does not start on it.
    let refused = [
        ("LLMLITE_MODELS", global.as_str()),
        ("LLMLITE_ALLOWED_MODEL_PREFIXES", "eu."),
    ];
    let started = std::panic::AssertUnwindSafe(TestGateway::start_with(&refused));
    assert!(
        futures_util::FutureExt::catch_unwind(started)
            .await
            .is_err(),
        "the gateway started on a catalog outside the allowed prefixes"
    );

    // Empty: no restriction. Several prefixes: any of them.
    for allowed in ["", " ", "eu.,global."] {
        let config = load(
            &db,
            &[
                ("LLMLITE_MODELS", &global),
                ("LLMLITE_ALLOWED_MODEL_PREFIXES", allowed),
            ],
        )
        .await
        .unwrap();
        assert!(config.catalog.get("claude-haiku-4-5-elsewhere").is_some());
    }
    // An all-`eu.` catalog passes; so does the built-in one, which is all `eu.`.
    load(
        &db,
        &[
            ("LLMLITE_MODELS", &eu_only),
            ("LLMLITE_ALLOWED_MODEL_PREFIXES", "eu."),
        ],
    )
    .await
    .unwrap();
    // The built-in catalog's chat models are all `eu.`; its embedding models are in-Region
    // foundation models, named exactly.
    let builtin = load(
        &db,
        &[("LLMLITE_ALLOWED_MODEL_PREFIXES", TEMPLATE_PREFIXES)],
    )
    .await
    .unwrap();
    assert!(!builtin.catalog.models().is_empty());
    let err = load(&db, &[("LLMLITE_ALLOWED_MODEL_PREFIXES", "eu.")])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("amazon.titan-embed-text-v2:0"),
        "{err}"
    );
    // The built-in catalog is refused where `eu.` is not allowed, naming a model.
    let err = load(&db, &[("LLMLITE_ALLOWED_MODEL_PREFIXES", "us.")])
        .await
        .unwrap_err();
    assert_eq!(err.variable, "LLMLITE_ALLOWED_MODEL_PREFIXES");
    assert!(err.to_string().contains("eu.anthropic."), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_template_holds_the_built_in_catalog_to_the_eu_and_keys_to_the_standard_tier() {
    let template = llmlite_tests::template();
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(globals["LLMLITE_ALLOWED_MODEL_PREFIXES"], TEMPLATE_PREFIXES);
    assert_eq!(globals["LLMLITE_DEFAULT_TIER"], "standard");
    // Every function starts with those settings: the built-in catalog passes.
    let db = TestDb::new().await;
    let config = load(
        &db,
        &[
            (
                "LLMLITE_ALLOWED_MODEL_PREFIXES",
                globals["LLMLITE_ALLOWED_MODEL_PREFIXES"].as_str().unwrap(),
            ),
            (
                "LLMLITE_DEFAULT_TIER",
                globals["LLMLITE_DEFAULT_TIER"].as_str().unwrap(),
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        config.allowed_model_prefixes,
        [
            "eu.",
            "amazon.titan-embed-text-v2:0",
            "cohere.embed-english-v3",
            "cohere.embed-multilingual-v3"
        ]
    );
    assert_eq!(config.default_tier, llmlite::admin::keys::Tier::Standard);
}
