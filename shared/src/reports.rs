//! Writing the reports the rollup makes (daily spend, budgets, key rotation): CSV fields and the
//! `{base}.json` + `{base}.csv` pair. Each report's query lives with its job ([`crate::rollup`],
//! [`crate::rotation`]); the writing is shared here so that neither of those modules imports the
//! other.

use serde_json::Value;

use crate::audit::Sink;

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
) -> Result<(), String> {
    reports
        .put(
            &format!("{base}.json"),
            json.to_string().as_bytes(),
            "application/json",
        )
        .await?;
    reports
        .put(&format!("{base}.csv"), csv.as_bytes(), "text/csv")
        .await
}
