//! Configuration: the master key from Secrets Manager, read by the real AWS SDK client from a
//! wire-level double on loopback; bad variables stop start-up with an error that names them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::HashMap;

use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use llmlite::config::{Config, ConfigError};
use llmlite_tests::secrets_manager::SecretsManager;

async fn aws_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("eu-west-2"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .load()
        .await
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const SECRET_ARN: &str = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:llmlite-master";

/// Loads the configuration with the master key taken from `arn`, served by a double holding
/// `secret` under [`SECRET_ARN`]; also returns the targets of the calls the double saw.
async fn load_from_secret(secret: &str, arn: &str) -> (Result<Config, ConfigError>, Vec<String>) {
    let double = SecretsManager::start().await;
    double.put(SECRET_ARN, secret);
    let result = Config::load_with_aws(
        &env(&[
            ("DATABASE_URL", "postgres://llmlite@127.0.0.1/llmlite"),
            ("LITELLM_MASTER_KEY_SECRET_ARN", arn),
        ]),
        double.aws_config().await,
    )
    .await;
    let seen = double
        .calls()
        .iter()
        .map(|c| c["target"].as_str().unwrap_or_default().to_owned())
        .collect();
    (result, seen)
}

#[tokio::test]
async fn the_master_key_can_come_from_secrets_manager() {
    let shapes = [
        (
            r#"{"LITELLM_MASTER_KEY":"sk-from-secrets-manager-0001"}"#,
            "sk-from-secrets-manager-0001",
        ),
        // The shape template.yaml's MasterKeySecret generates: the key is sk- and the suffix.
        (
            r#"{"master_key_suffix":"a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4"}"#,
            "sk-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4",
        ),
    ];
    for (secret, key) in shapes {
        let (config, calls) = load_from_secret(secret, SECRET_ARN).await;
        assert!(config.unwrap().master_key.matches(key).await, "{secret}");
        // The current version, and (it was created just now, within the grace window) the
        // previous one, which this secret does not have.
        assert_eq!(
            calls,
            [
                "secretsmanager.GetSecretValue",
                "secretsmanager.GetSecretValue"
            ]
        );
    }
}

#[tokio::test]
async fn an_unreadable_secret_stops_start_up_naming_the_variable() {
    let other = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:other";
    let err = load_from_secret("sk-unused-0000000000000", other)
        .await
        .0
        .unwrap_err();
    assert_eq!(err.variable, "LITELLM_MASTER_KEY_SECRET_ARN");
    assert!(err.reason.contains("ResourceNotFoundException"), "{err}");
}

#[tokio::test]
async fn a_weak_secret_is_refused_without_echoing_it() {
    let err = load_from_secret("sk-1234", SECRET_ARN).await.0.unwrap_err();
    assert_eq!(err.variable, "LITELLM_MASTER_KEY_SECRET_ARN");
    assert!(!err.to_string().contains("sk-1234"));
}

#[tokio::test]
async fn missing_or_conflicting_variables_are_named() {
    let aws = aws_for("http://127.0.0.1:9").await;
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("LITELLM_MASTER_KEY", "sk-0123456789abcdefgh")],
            "DATABASE_URL",
        ),
        (&[("DATABASE_URL", "postgres://h/db")], "LITELLM_MASTER_KEY"),
        (
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("LITELLM_MASTER_KEY", "sk-0123456789abcdefgh"),
                ("LITELLM_MASTER_KEY_SECRET_ARN", "arn:x"),
            ],
            "LITELLM_MASTER_KEY_SECRET_ARN",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("LITELLM_MASTER_KEY", "sk-0123456789abcdefgh"),
                ("LLMLITE_MODELS", "/no/such/catalog.toml"),
            ],
            "LLMLITE_MODELS",
        ),
    ];
    for (pairs, variable) in cases {
        let err = Config::load_with_aws(&env(pairs), aws.clone())
            .await
            .unwrap_err();
        assert_eq!(err.variable, variable, "{err}");
        assert!(err.to_string().contains(variable));
    }
}
