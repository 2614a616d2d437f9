//! Company sign-in in a real headless Chromium (`tests/compat/sso_browser.py`, selenium and
//! Debian's chromium-driver) against `llmlite dev` signing people in through a real OpenID
//! Provider (npm `oidc-provider`, `tests/oidc/provider.mjs`). CI installs them; elsewhere the
//! test says how to get them and passes only outside CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use tokio::process::Command;

#[tokio::test]
async fn admins_and_developers_sign_in_with_the_company_account_in_a_real_browser() {
    let Some((dev, op, base)) = common::company_dev(&[
        ("LLMLITE_OIDC_ROLE_MAP", r#"{"llm-admins": "proxy_admin"}"#),
        ("LLMLITE_OIDC_TEAM_MAP", r#"{"developers": "team-dev"}"#),
    ])
    .await
    else {
        return;
    };
    let client = reqwest::Client::new();
    let admin = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(&dev.master_key)
            .json(&body)
            .send()
    };
    let made = admin(
        "/team/new",
        serde_json::json!({"team_id": "team-dev", "max_keys_per_user": 2}),
    )
    .await
    .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    let other: serde_json::Value = admin(
        "/key/generate",
        serde_json::json!({"user_id": "someone-else", "key_alias": "other-persons-key"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let other_hash = other["token"].as_str().unwrap().to_owned();

    let out = std::env::temp_dir().join(format!("llmlite-sso-browser-{}", std::process::id()));
    eprintln!(
        "company sign-in browser test output (failure screenshots): {}",
        out.display()
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/compat/sso_browser.py"
    );
    let mut command = Command::new("python3");
    command
        .arg(script)
        .env("LLMLITE_URL", &base)
        .env("LLMLITE_ISSUER", &op.issuer)
        .env("LLMLITE_OTHER_KEY", &other_hash)
        .env("LLMLITE_OUT", &out);
    // `LLMLITE_SCREENSHOTS=docs cargo test -p llmlite-gateway --test sso_browser` refreshes the
    // README's screenshots of the sign-in and self-service pages.
    if let Ok(dir) = std::env::var("LLMLITE_SCREENSHOTS") {
        command.env("LLMLITE_SCREENSHOTS", dir);
    }
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    // What the browser did, as the database and the provider saw it.
    let log = op.log().await;
    let keys: Vec<(String, Option<String>, Option<String>)> = {
        let db = sqlx::PgPool::connect(&dev.database_url).await.unwrap();
        sqlx::query_as(
            "SELECT key_alias, team_id, tier FROM litellm_verificationtoken
             WHERE user_id = 'bob@example.com' ORDER BY created_at",
        )
        .persistent(false)
        .fetch_all(&db)
        .await
        .unwrap()
    };
    dev.stop().await;
    op.stop().await;
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\nscreenshots and pages: {}",
        out.display()
    );
    assert!(stdout.contains("9 passed, 0 failed"), "{stdout}");
    // One key, his, of his team, at the standard tier: the refused attempts made nothing.
    assert_eq!(
        keys,
        [(
            "bob-laptop".to_owned(),
            Some("team-dev".to_owned()),
            Some("standard".to_owned())
        )]
    );
    // Two sign-outs ended at the provider too, each naming its session.
    let ended = log["end_session"].as_array().unwrap();
    assert_eq!(ended.len(), 2, "{log}");
    assert!(ended.iter().all(|e| e["id_token_hint"] == true), "{log}");
    let _ = std::fs::remove_dir_all(&out);
}
