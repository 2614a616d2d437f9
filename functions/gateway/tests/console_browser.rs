//! The admin console in a real headless Chromium (`tests/compat/console_browser.py`, selenium
//! and Debian's chromium-driver) against a running `llmlite dev`. CI installs them; elsewhere the
//! test says how to get them and passes only outside CI. Failure screenshots go to the folder
//! the test prints.
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
async fn an_admin_walks_the_console_in_a_real_browser() {
    if !common::browser_installed().await {
        return;
    }
    let dev = Dev::start().await;
    let out = std::env::temp_dir().join(format!("llmlite-console-browser-{}", std::process::id()));
    eprintln!(
        "console browser test output (failure screenshots): {}",
        out.display()
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/compat/console_browser.py"
    );
    let mut command = Command::new("python3");
    command
        .arg(script)
        .env("LLMLITE_URL", format!("http://{}", dev.addr))
        .env("LLMLITE_KEY", &dev.master_key)
        .env("LLMLITE_OUT", &out)
        // For `llmlite rollup` against the same database.
        .env("LLMLITE_BIN", common::LLMLITE)
        .env("LLMLITE_DATABASE_URL", &dev.database_url)
        .env(
            "LLMLITE_REPORTS_DIR",
            std::env::temp_dir().join(format!("llmlite-console-reports-{}", std::process::id())),
        );
    // `LLMLITE_SCREENSHOTS=docs cargo test -p llmlite-gateway --test console_browser` refreshes
    // the README's screenshot.
    if let Ok(dir) = std::env::var("LLMLITE_SCREENSHOTS") {
        command.env("LLMLITE_SCREENSHOTS", dir);
    }
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    dev.stop().await;
    assert!(
        output.status.success(),
        "{stdout}\n{stderr}\nscreenshots and pages: {}",
        out.display()
    );
    assert!(stdout.contains("12 passed, 0 failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
