//! The `llmlite` binary as a developer runs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const LLMLITE: &str = env!("CARGO_BIN_EXE_llmlite");

/// Generous bounds so a hung process fails the test instead of hanging CI; not timing claims.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);
const EXIT_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn dev_runs_everything_embedded_and_cleans_up_on_sigterm() {
    let mut child = Command::new(LLMLITE)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("LITELLM_MASTER_KEY")
        .env_remove("LITELLM_MASTER_KEY_SECRET_ARN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut addr = None;
    let mut cluster_dir = None;
    let mut master_key = None;
    tokio::time::timeout(STARTUP_LIMIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("llmlite dev: listening on http://") {
                addr = Some(rest.trim().to_owned());
            } else if let Some(rest) = line
                .trim()
                .strip_prefix("database:   throwaway cluster in ")
            {
                cluster_dir = rest.split(' ').next().map(std::path::PathBuf::from);
            } else if let Some(rest) = line.trim().strip_prefix("master key: ") {
                master_key = Some(rest.to_owned());
            } else if line.starts_with("Stop with Ctrl-C") {
                break;
            }
        }
    })
    .await
    .expect("llmlite dev did not start");
    let addr = addr.expect("listening address printed");
    let cluster_dir = cluster_dir.expect("cluster directory printed");
    let master_key = master_key.expect("master key printed");
    assert!(
        master_key.starts_with("sk-") && master_key.len() >= 35,
        "{master_key}"
    );
    assert!(cluster_dir.join("data").is_dir());

    let health: Value = reqwest::get(format!("http://{addr}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
    let readiness = reqwest::get(format!("http://{addr}/health/readiness"))
        .await
        .unwrap();
    assert_eq!(readiness.status(), 200);
    assert_eq!(readiness.json::<Value>().await.unwrap()["db"], "ok");

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(EXIT_LIMIT, child.wait())
        .await
        .expect("llmlite dev did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!cluster_dir.exists(), "the throwaway cluster was removed");
    assert!(
        reqwest::get(format!("http://{addr}/health")).await.is_err(),
        "no longer serving"
    );
}

async fn run_failing(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(LLMLITE);
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("LITELLM_MASTER_KEY")
        .env_remove("LITELLM_MASTER_KEY_SECRET_ARN")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(EXIT_LIMIT, command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serve_and_migrate_refuse_bad_configuration_naming_the_variable() {
    let stderr = run_failing(&["migrate"], &[]).await;
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let stderr = run_failing(&["migrate"], &[("DATABASE_URL", "mysql://u:hunter2@h/db")]).await;
    assert!(
        stderr.contains("DATABASE_URL") && !stderr.contains("hunter2"),
        "{stderr}"
    );

    let stderr = run_failing(&["serve"], &[("DATABASE_URL", "postgres://127.0.0.1:9/db")]).await;
    assert!(stderr.contains("LITELLM_MASTER_KEY"), "{stderr}");

    let stderr = run_failing(
        &["serve"],
        &[
            ("DATABASE_URL", "postgres://127.0.0.1:9/db"),
            ("LITELLM_MASTER_KEY", "sk-short"),
        ],
    )
    .await;
    assert!(
        stderr.contains("LITELLM_MASTER_KEY") && !stderr.contains("sk-short"),
        "{stderr}"
    );
}
