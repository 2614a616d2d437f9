//! The migrations custom resource's surroundings: a loopback stand-in for CloudFormation's
//! pre-signed response URL, and the `events/` fixture of its request.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use serde_json::Value;

use crate::serve;

/// What the stand-in for the response URL received: one entry per `PUT`.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<(HeaderMap, Value)>>>);

/// A loopback response URL answering `status`, and what it received.
pub async fn response_url(status: StatusCode) -> (String, Received) {
    let received = Received::default();
    let router = Router::new()
        .route(
            "/{*path}",
            put(
                move |State(r): State<Received>, headers: HeaderMap, body: String| async move {
                    r.0.lock()
                        .expect("not poisoned")
                        .push((headers, serde_json::from_str(&body).expect("JSON answer")));
                    status
                },
            ),
        )
        .with_state(received.clone());
    let addr = serve(router).await;
    (
        format!("http://{addr}/cfn-response/stack%7CDatabaseMigrations?X-Amz-Signature=0"),
        received,
    )
}

/// The fixture `events/spend-rollup-migrate.json`, answered at `url`, with `change` applied.
pub fn request(url: &str, change: impl FnOnce(&mut Value)) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/spend-rollup-migrate.json"
    );
    let text = std::fs::read_to_string(path).expect("the fixture exists");
    let mut event: Value = serde_json::from_str(&text).expect("the fixture is JSON");
    event["ResponseURL"] = url.into();
    change(&mut event);
    event
}

/// The resource's role properties, removed: the handler then migrates as `DATABASE_URL`'s user,
/// as for a stack from before the roles (`tests/tests/db_roles.rs` runs the role path).
pub fn without_roles(event: &mut Value) {
    if let Some(properties) = event["ResourceProperties"].as_object_mut() {
        for name in ["AdminUser", "OwnerSecretArn", "AppSecretArn"] {
            properties.remove(name);
        }
    }
}
