//! The master key read from Secrets Manager and re-read after its TTL (`llmlite::master_key`):
//! the real SDK client against a wire-level double on loopback, the gateway over real HTTP. A
//! rotated key takes over within the TTL; the old one is refused after the grace window; an
//! outage of Secrets Manager keeps the key already read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::net::SocketAddr;
use std::time::Duration;

use llmlite_tests::secrets_manager::SecretsManager;
use llmlite_tests::{TestDb, serve};
use serde_json::json;

const ARN: &str = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:llmlite-master-Zx90Qw";
const OLD: &str = "OldSuffix0123456789abcdefghijklmnopqrstuvwxyzAB";
const NEW: &str = "NewSuffix0123456789abcdefghijklmnopqrstuvwxyzAB";
/// The TTL the tests run with; they wait a little longer than this for it to pass.
const TTL: Duration = Duration::from_secs(1);
const PAST_TTL: Duration = Duration::from_millis(1300);

fn secret(suffix: &str) -> String {
    json!({ "master_key_suffix": suffix }).to_string()
}

fn key(suffix: &str) -> String {
    format!("sk-{suffix}")
}

/// A gateway whose master key is the double's secret, with the TTL above and `grace_secs`.
async fn gateway(secrets: &SecretsManager, grace_secs: u64) -> (TestDb, SocketAddr) {
    let db = TestDb::new().await;
    let mut env = db.env();
    env.remove("LITELLM_MASTER_KEY");
    env.insert("LITELLM_MASTER_KEY_SECRET_ARN".into(), ARN.into());
    env.insert(
        "LLMLITE_MASTER_KEY_TTL_SECS".into(),
        TTL.as_secs().to_string(),
    );
    env.insert(
        "LLMLITE_MASTER_KEY_GRACE_SECS".into(),
        grace_secs.to_string(),
    );
    env.insert(
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".into(),
        "http://127.0.0.1:9".into(),
    );
    let state = TestDb::state_from(env, secrets.aws_config().await).await;
    let addr = serve(llmlite::all_routes(state)).await;
    (db, addr)
}

/// The status of an admin request made with `key`.
async fn status(addr: SocketAddr, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/key/list"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn reads_of(secrets: &SecretsManager, stage: Option<&str>) -> usize {
    secrets
        .calls()
        .iter()
        .filter(|c| c["target"] == "secretsmanager.GetSecretValue")
        .filter(|c| c["request"]["VersionStage"].as_str() == stage)
        .count()
}

#[tokio::test]
async fn after_the_ttl_a_rotated_master_key_replaces_the_old_one() {
    let secrets = SecretsManager::start().await;
    secrets.put(ARN, &secret(OLD));
    let (_db, addr) = gateway(&secrets, 0).await;
    assert_eq!(status(addr, &key(OLD)).await, 200);
    assert_eq!(status(addr, &key(NEW)).await, 401);

    secrets.put(ARN, &secret(NEW));
    tokio::time::sleep(PAST_TTL).await;

    assert_eq!(status(addr, &key(NEW)).await, 200);
    assert_eq!(status(addr, &key(OLD)).await, 401);
    // No grace window: the previous version is never asked for.
    assert!(reads_of(&secrets, None) >= 2);
    assert_eq!(reads_of(&secrets, Some("AWSPREVIOUS")), 0);
}

#[tokio::test]
async fn within_the_grace_window_both_keys_work_and_after_it_only_the_new_one() {
    let secrets = SecretsManager::start().await;
    secrets.put(ARN, &secret(OLD));
    // The first version is older than the window: there is no previous one to accept.
    secrets.age_current(ARN, 7200.0);
    let (_db, addr) = gateway(&secrets, 3600).await;
    assert_eq!(reads_of(&secrets, Some("AWSPREVIOUS")), 0);

    secrets.put(ARN, &secret(NEW));
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(addr, &key(NEW)).await, 200);
    assert_eq!(
        status(addr, &key(OLD)).await,
        200,
        "the old key, within the grace window"
    );
    assert!(reads_of(&secrets, Some("AWSPREVIOUS")) >= 1);

    // The rotation is now two hours old: the window has closed.
    secrets.age_current(ARN, 7200.0);
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(addr, &key(NEW)).await, 200);
    assert_eq!(status(addr, &key(OLD)).await, 401);
}

#[tokio::test]
async fn an_outage_of_secrets_manager_keeps_the_key_already_read() {
    let secrets = SecretsManager::start().await;
    secrets.put(ARN, &secret(OLD));
    let (_db, addr) = gateway(&secrets, 0).await;

    secrets.set_failing(true);
    tokio::time::sleep(PAST_TTL).await;
    assert_eq!(status(addr, &key(OLD)).await, 200);
    assert_eq!(status(addr, "sk-NotTheMasterKey0123456789").await, 401);

    // Back, with a rotated key: it takes over once the retry is due.
    secrets.set_failing(false);
    secrets.put(ARN, &secret(NEW));
    let mut waited = Duration::ZERO;
    while status(addr, &key(NEW)).await != 200 {
        assert!(
            waited < llmlite::master_key::RETRY_AFTER_FAILURE + Duration::from_secs(30),
            "the new key never took over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    assert_eq!(status(addr, &key(OLD)).await, 401);
}
