//! Writing the reports the rollup makes (daily spend, budgets, key rotation): CSV fields, the
//! `{base}.json` + `{base}.csv` pair, and [`ReportError`], why a report could not be made. Each
//! report's query lives with its job ([`crate::rollup`], [`crate::rotation`]); the writing is
//! shared here so that neither of those modules imports the other.

use serde_json::Value;

use crate::clients::audit::{Sink, SinkError};
use crate::error::ApiError;

/// Why a report was not written: its query failed, or the sink refused it.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No database connection (or no IAM token for one).
    #[error(transparent)]
    Unavailable(#[from] ApiError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// One CSV field: quoted (inner quotes doubled) when it holds a comma, quote or line break.
pub(crate) fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Writes a report as `{base}.json` and `{base}.csv`.
pub(crate) async fn put_report(
    reports: &Sink,
    base: &str,
    json: &Value,
    csv: &str,
) -> Result<(), SinkError> {
    reports
        .write(
            &format!("{base}.json"),
            json.to_string().as_bytes(),
            "application/json",
        )
        .await?;
    reports
        .write(&format!("{base}.csv"), csv.as_bytes(), "text/csv")
        .await
}
