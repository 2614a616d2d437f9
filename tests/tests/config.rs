//! Configuration: the master key from Secrets Manager, read by the real AWS SDK client from a
//! wire-level double on loopback; bad variables stop start-up with an error that names them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use llmlite::config::{Config, ConfigError};
use llmlite_tests::serve;
use serde_json::{Value, json};

/// Answers `GetSecretValue` for one ARN with `secret`, and records the targets it was asked for.
async fn secrets_manager_double(secret: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let router = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: String| {
            let seen = Arc::clone(&seen);
            async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(target.clone());
                let request: Value = serde_json::from_str(&body).unwrap_or_default();
                let arn = SECRET_ARN;
                if target == "secretsmanager.GetSecretValue" && request["SecretId"] == arn {
                    (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/x-amz-json-1.1")],
                        json!({ "ARN": arn, "Name": "llmlite-master", "SecretString": secret })
                            .to_string(),
                    )
                } else {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "application/x-amz-json-1.1")],
                        json!({ "__type": "ResourceNotFoundException", "message": "no such secret" })
                            .to_string(),
                    )
                }
            }
        }),
    );
    let addr = serve(router).await;
    (format!("http://{addr}"), calls)
}

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
/// `secret`; also returns the calls the double saw.
async fn load_from_secret(
    secret: &'static str,
    arn: &str,
) -> (Result<Config, ConfigError>, Vec<String>) {
    let (endpoint, calls) = secrets_manager_double(secret).await;
    let result = Config::load_with_aws(
        &env(&[
            ("DATABASE_URL", "postgres://llmlite@127.0.0.1/llmlite"),
            ("LITELLM_MASTER_KEY_SECRET_ARN", arn),
        ]),
        aws_for(&endpoint).await,
    )
    .await;
    let seen = calls.lock().unwrap().clone();
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
        assert!(config.unwrap().master_key.matches(key), "{secret}");
        assert_eq!(calls, ["secretsmanager.GetSecretValue"]);
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
