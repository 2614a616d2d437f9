//! A successful chat request costs exactly two database statements: admission and settlement.
//! Counted from sqlx's own per-statement events, in a test binary of its own so that nothing
//! else runs queries meanwhile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use llmlite_tests::TestGateway;
use serde_json::json;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

struct CountStatements(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn a_chat_request_is_exactly_two_statements() {
    let statements = Arc::new(AtomicUsize::new(0));
    let subscriber = Registry::default().with(CountStatements(Arc::clone(&statements)));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let gw = TestGateway::start().await;
    let minted = gw
        .mint_key(json!({"rpm_limit": 100, "tpm_limit": 100000, "max_budget": 10, "max_parallel_requests": 5}))
        .await;
    let key = minted["key"].as_str().unwrap();
    let chat = || {
        gw.post(
            "/v1/chat/completions",
            key,
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "count me"}]}),
        )
    };
    assert_eq!(chat().await.status, 200, "warm-up");
    gw.settled().await;
    for _ in 0..3 {
        statements.store(0, Ordering::SeqCst);
        let response = chat().await;
        assert_eq!(response.status, 200);
        // Settlement follows the response.
        gw.settled().await;
        assert_eq!(statements.load(Ordering::SeqCst), 2);
    }
    statements.store(0, Ordering::SeqCst);
    let streamed = gw
        .post(
            "/v1/chat/completions",
            key,
            json!({"model": "claude-haiku-4-5", "stream": true, "messages": [{"role": "user", "content": "count me"}]}),
        )
        .await;
    assert!(streamed.text.ends_with("data: [DONE]\n\n"));
    gw.settled().await;
    assert_eq!(statements.load(Ordering::SeqCst), 2);
}
