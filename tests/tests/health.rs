//! The health function: liveness never touches the database; readiness proves it answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite::health_routes;
use llmlite_tests::{TestDb, database, serve};
use serde_json::Value;
use tokio::net::TcpListener;

/// A URL where nothing listens: connections are refused.
async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("postgres://nobody@127.0.0.1:{port}/nothing")
}

/// A URL where a server accepts connections and then never says a word.
async fn silent_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("postgres://nobody@127.0.0.1:{port}/nothing")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{path}"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn liveness_answers_without_a_database() {
    let addr = serve(health_routes(database(&refused_url().await))).await;
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    for path in ["/health/liveliness", "/health/liveness"] {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, "I'm alive!");
    }
}

#[tokio::test]
async fn readiness_is_ok_when_the_database_answers() {
    let db = TestDb::new().await;
    let addr = serve(health_routes(db.db.clone())).await;
    let (status, body) = get(addr, "/health/readiness").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["db"], "ok");
    assert_eq!(body["status"], "healthy");
}

#[tokio::test]
async fn readiness_is_503_json_when_the_database_refuses_connections() {
    let addr = serve(health_routes(database(&refused_url().await))).await;
    let (status, body) = get(addr, "/health/readiness").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["db"], "unavailable");
    assert_eq!(body["error"]["type"], "service_unavailable");
    assert_eq!(body["error"]["code"], "503");
}

#[tokio::test]
async fn readiness_is_503_json_when_the_database_hangs() {
    let addr = serve(health_routes(database(&silent_url().await))).await;
    let (status, body) = get(addr, "/health/readiness").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "service_unavailable");
}

/// What failed, and where the database is, is for the logs: the public answer is generic and
/// the same however the database is away.
#[tokio::test]
async fn readiness_names_neither_the_database_nor_the_failure() {
    let mut messages = Vec::new();
    for url in [refused_url().await, silent_url().await] {
        let port = url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let addr = serve(health_routes(database(&url))).await;
        let (status, body) = get(addr, "/health/readiness").await;
        assert_eq!(status, 503, "{body}");
        let text = body.to_string();
        for detail in [
            port.as_str(),
            "127.0.0.1",
            "nobody",
            "refused",
            "no answer",
            "os error",
        ] {
            assert!(!text.contains(detail), "{detail} in {text}");
        }
        messages.push(body["error"]["message"].clone());
    }
    assert_eq!(messages[0], messages[1]);
    assert!(
        messages[0]
            .as_str()
            .unwrap()
            .contains("database unavailable")
    );
}

#[tokio::test]
async fn readiness_recovers_when_the_database_returns() {
    // A database that is dropped and re-created under a live pool: the pool reconnects.
    let db = TestDb::new().await;
    let addr = serve(health_routes(db.db.clone())).await;
    assert_eq!(get(addr, "/health/readiness").await.0, 200);
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .persistent(false)
    .fetch_all(&mut other)
    .await
    .unwrap();
    assert!(
        !killed.is_empty(),
        "the pool's connection was there to kill"
    );
    // The pool's connections are dead; readiness still reports the database, which is up.
    assert_eq!(get(addr, "/health/readiness").await.0, 200);
    assert_eq!(get(addr, "/health/readiness").await.0, 200);
}
