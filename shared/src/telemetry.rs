//! Logging set-up. Lambdas write one JSON object per line (CloudWatch adds the timestamp); the
//! local gateway writes readable lines. `RUST_LOG` sets the filter (default `info`).

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// For the Lambda functions.
pub fn init_json() {
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .try_init();
}

/// For the `llmlite` binary.
pub fn init_text() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .try_init();
}
