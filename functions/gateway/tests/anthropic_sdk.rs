//! The official Anthropic Python SDK against a running `llmlite dev` (`tests/compat/anthropic_sdk.py`).
//! CI installs the SDK; elsewhere the test says how to get it and passes only outside CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

use common::Dev;
use tokio::process::Command;

#[tokio::test]
async fn the_anthropic_python_sdk_works_against_llmlite() {
    if !common::tool_installed("python3", &["-c", "import anthropic"], "anthropic").await {
        return;
    }
    let dev = Dev::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/compat/anthropic_sdk.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .env("LLMLITE_BASE_URL", format!("http://{}", dev.addr))
        .env("LLMLITE_KEY", &dev.master_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    dev.stop().await;
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
