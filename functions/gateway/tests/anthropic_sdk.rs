//! The official Anthropic Python SDK against a running `llmlite dev` (`tests/compat/anthropic_sdk.py`).
//! CI installs the SDK; elsewhere the test says how to get it and passes only outside CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

#[tokio::test]
async fn the_anthropic_python_sdk_works_against_llmlite() {
    if !llmlite_tests::tool_installed("python3", &["-c", "import anthropic"], "anthropic").await {
        return;
    }
    common::sdk_check("anthropic_sdk.py", "").await;
}
