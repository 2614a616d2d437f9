//! The official OpenAI Python SDK's Responses API (`client.responses.create` and
//! `client.responses.stream`) against a running `llmlite dev` (`tests/compat/openai_responses.py`).
//! CI installs the SDK; elsewhere the test says how to get it and passes only outside CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

mod common;

#[tokio::test]
async fn the_openai_python_sdks_responses_api_works_against_llmlite() {
    if !llmlite_tests::tool_installed("python3", &["-c", "import openai"], "openai").await {
        return;
    }
    common::sdk_check("openai_responses.py", "/v1").await;
}
