//! A wire-level Secrets Manager double on loopback: `GetSecretValue` (JSON 1.1 protocol, as the
//! real SDK client speaks it) with the `AWSCURRENT` and `AWSPREVIOUS` staging labels, and
//! `put` doing what `PutSecretValue` does to them, so a test can rotate a secret under a running
//! gateway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use llmlite::config::local_aws_config;
use serde_json::{Value, json};

use crate::serve;

#[derive(Clone)]
struct Version {
    text: String,
    /// Seconds since the epoch, as the API sends `CreatedDate`.
    created: f64,
}

#[derive(Default)]
struct Secret {
    current: Option<Version>,
    previous: Option<Version>,
}

/// The double: its endpoint, its secrets by ARN, and every request it answered.
#[derive(Clone)]
pub struct SecretsManager {
    pub endpoint: String,
    secrets: Arc<Mutex<HashMap<String, Secret>>>,
    calls: Arc<Mutex<Vec<Value>>>,
    /// While set, every request fails with a 500 (an outage).
    failing: Arc<AtomicBool>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn answer(
    status: StatusCode,
    body: Value,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
}

impl SecretsManager {
    pub async fn start() -> Self {
        let double = SecretsManager {
            endpoint: String::new(),
            secrets: Arc::default(),
            calls: Arc::default(),
            failing: Arc::default(),
        };
        let served = double.clone();
        let router = Router::new().route(
            "/",
            post(move |headers: HeaderMap, body: String| {
                let served = served.clone();
                async move { served.handle(&headers, &body) }
            }),
        );
        let addr = serve(router).await;
        SecretsManager {
            endpoint: format!("http://{addr}"),
            ..double
        }
    }

    fn handle(
        &self,
        headers: &HeaderMap,
        body: &str,
    ) -> (StatusCode, [(&'static str, &'static str); 1], String) {
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let request: Value = serde_json::from_str(body).unwrap_or_default();
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(json!({ "target": target, "request": request }));
        }
        if self.failing.load(Ordering::SeqCst) {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "__type": "InternalServiceError", "message": "outage" }),
            );
        }
        let not_found = |message: &str| {
            answer(
                StatusCode::BAD_REQUEST,
                json!({ "__type": "ResourceNotFoundException", "message": message }),
            )
        };
        if target != "secretsmanager.GetSecretValue" {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "__type": "InvalidRequestException", "message": "not served" }),
            );
        }
        let arn = request["SecretId"].as_str().unwrap_or_default();
        let stage = request["VersionStage"].as_str().unwrap_or("AWSCURRENT");
        let Ok(secrets) = self.secrets.lock() else {
            return not_found("poisoned");
        };
        let Some(secret) = secrets.get(arn) else {
            return not_found("Secrets Manager can't find the specified secret.");
        };
        let version = match stage {
            "AWSCURRENT" => secret.current.as_ref(),
            "AWSPREVIOUS" => secret.previous.as_ref(),
            _ => None,
        };
        let Some(version) = version else {
            return not_found(
                "Secrets Manager can't find the specified secret value for staging label",
            );
        };
        answer(
            StatusCode::OK,
            json!({
                "ARN": arn,
                "Name": arn.rsplit(':').next().unwrap_or(arn),
                "SecretString": version.text,
                "VersionId": format!("v-{}", version.created),
                "VersionStages": [stage],
                "CreatedDate": version.created,
            }),
        )
    }

    /// As `PutSecretValue`: `text` becomes `AWSCURRENT`, created now, and the version it
    /// replaces becomes `AWSPREVIOUS`.
    pub fn put(&self, arn: &str, text: &str) {
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        let secret = secrets.entry(arn.to_owned()).or_default();
        secret.previous = secret.current.take();
        secret.current = Some(Version {
            text: text.to_owned(),
            created: now(),
        });
    }

    /// Moves the current version's creation date `secs` into the past (a rotation that happened
    /// that long ago).
    pub fn age_current(&self, arn: &str, secs: f64) {
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = secrets.get_mut(arn).and_then(|s| s.current.as_mut()) {
            current.created -= secs;
        }
    }

    /// Starts (`true`) or ends an outage.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The requests answered so far: `{"target", "request"}`.
    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// AWS configuration that sends every service to this double (the tests point Bedrock and
    /// S3 elsewhere explicitly), with fixed credentials.
    pub async fn aws_config(&self) -> SdkConfig {
        let base = local_aws_config("eu-west-2").await;
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                base.credentials_provider()
                    .expect("local configuration has credentials"),
            )
            .load()
            .await
    }
}
