//! `llmlite login` and `llmlite key` end to end: the binary against `llmlite dev`, whose
//! console signs people in through a real OpenID Provider (npm `oidc-provider`), with the
//! approval clicked in a real headless Chromium (`tests/compat/device_browser.py`). The key it
//! prints works, lives as long as it should, is renewed when near its end, and stops, with the
//! sign-in, when the person is deactivated.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::LLMLITE;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// `llmlite key` with the credentials at `path`: (success, stdout, stderr).
async fn llmlite_key(path: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(LLMLITE)
        .arg("key")
        .env("LLMLITE_CREDENTIALS", path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn chat(client: &reqwest::Client, base: &str, key: &str) -> u16 {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": "claude-haiku-4-5",
                                  "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn llmlite_login_and_key_give_a_short_lived_key_that_stops_with_the_person() {
    let Some((dev, op, base)) = common::company_dev(&[
        ("LLMLITE_OIDC_TEAM_MAP", r#"{"developers": "team-dev"}"#),
        ("LLMLITE_SHORT_KEY_HOURS", "1"),
    ])
    .await
    else {
        return;
    };
    let client = reqwest::Client::new();
    let made = client
        .post(format!("{base}/team/new"))
        .bearer_auth(&dev.master_key)
        .json(&serde_json::json!({"team_id": "team-dev"}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());

    let dir = std::env::temp_dir().join(format!("llmlite-login-{}", std::process::id()));
    let credentials = dir.join("config").join("credentials.json");
    let mut login = Command::new(LLMLITE)
        .args(["login", "--gateway", &base])
        .env("LLMLITE_CREDENTIALS", &credentials)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("llmlite login printed where to approve")
        .unwrap()
        .unwrap();
    let url = first
        .strip_prefix("Open ")
        .and_then(|rest| rest.split(" and approve the code ").next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    assert!(
        url.starts_with(&format!("{base}/ui/device?user_code=")),
        "{url}"
    );

    // The approval, in a browser.
    let out = std::env::temp_dir().join(format!("llmlite-device-browser-{}", std::process::id()));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/compat/device_browser.py"
    );
    let browser = Command::new("python3")
        .arg(script)
        .env("LLMLITE_URL", &base)
        .env("LLMLITE_ISSUER", &op.issuer)
        .env("LLMLITE_VERIFY", &url)
        .env("LLMLITE_ACCOUNT", "bob")
        .env("LLMLITE_OUT", &out)
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&browser.stdout);
    assert!(
        browser.status.success() && shown.contains("3 passed, 0 failed"),
        "{shown}\n{}\nscreenshots: {}",
        String::from_utf8_lossy(&browser.stderr),
        out.display()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), login.wait())
        .await
        .expect("llmlite login finished after the approval")
        .unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Signed in."), "{rest}");

    // Only its owner may read the credential.
    let mode = std::fs::metadata(&credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let folder = std::fs::metadata(credentials.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(folder & 0o777, 0o700, "{folder:o}");

    // `llmlite key` prints the key, and only the key; it works; asked again, the same one.
    let (ok, key, stderr) = llmlite_key(&credentials).await;
    assert!(ok, "{stderr}");
    assert!(key.starts_with("sk-") && !key.contains('\n'), "{key}");
    assert_eq!(chat(&client, &base, &key).await, 200);
    let (_, again, _) = llmlite_key(&credentials).await;
    assert_eq!(again, key);

    // It lives an hour, is bob's, and is marked as a short-lived key.
    let db = sqlx::PgPool::connect(&dev.database_url).await.unwrap();
    let (user, lifetime, marked): (Option<String>, f64, bool) = sqlx::query_as(
        "SELECT user_id, extract(epoch FROM expires - created_at)::float8,
                metadata ? 'llmlite_cli_credential'
         FROM litellm_verificationtoken WHERE is_active",
    )
    .persistent(false)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(user.as_deref(), Some("bob@example.com"));
    assert!((lifetime - 3600.0).abs() < 1.0, "{lifetime}");
    assert!(marked);

    // Near its end (as the file says), the next `llmlite key` renews it: a new key, a rotated
    // refresh token.
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    let old_refresh = saved["refresh_token"].as_str().unwrap().to_owned();
    saved["key_expires_at"] = serde_json::json!(chrono_now() + 60);
    std::fs::write(&credentials, serde_json::to_vec(&saved).unwrap()).unwrap();
    let (ok, renewed, stderr) = llmlite_key(&credentials).await;
    assert!(ok, "{stderr}");
    assert_ne!(renewed, key);
    assert_eq!(chat(&client, &base, &renewed).await, 200);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    assert_ne!(saved["refresh_token"].as_str().unwrap(), old_refresh);

    // Deactivated (SCIM, as the company's provisioning would): the key stops at once, and
    // `llmlite key` says the sign-in has ended instead of printing a dead key.
    let patched = client
        .patch(format!("{base}/scim/v2/Users/bob@example.com"))
        .bearer_auth(&dev.master_key)
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(chat(&client, &base, &renewed).await, 401);
    let (ok, printed, stderr) = llmlite_key(&credentials).await;
    assert!(!ok, "{printed}");
    assert!(printed.is_empty(), "no key printed: {printed}");
    assert!(stderr.contains("llmlite login"), "{stderr}");

    dev.stop().await;
    op.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
