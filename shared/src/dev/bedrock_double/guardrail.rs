//! `ApplyGuardrail` (`POST /guardrail/{id}/version/{version}/apply`): one guardrail, configured
//! as a security team might, whose verdicts a test scripts through the text it sends:
//!
//! - a denied topic, `Mergers`: any text mentioning "merger" (any case) is BLOCKED, answered
//!   with [`BLOCKED_INPUT`] or [`BLOCKED_OUTPUT`] as the only output;
//! - a sensitive-information regex, `EmployeeId` (`EMP-` and six digits), ANONYMIZED as
//!   `{EMPLOYEE_ID}`: one output per text sent, masked;
//! - `[[guardrail-error:<status>:<Type>]]` in a text answers that error instead; a guardrail ID
//!   containing `missing` is Bedrock's `ResourceNotFoundException`, and a version that is not a
//!   number or `DRAFT` its `ValidationException`.
//!
//! Usage is Bedrock's: every text is `ceil(characters / 1000)` text units, counted for the
//! topic, content and sensitive-information policies, free for the word filter and the regex.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Shared, directives, error_response, malformed, record, validation_error};

/// What the guardrail answers in place of a blocked prompt.
pub const BLOCKED_INPUT: &str = "Sorry, this request is about a denied topic (mergers).";
/// What it answers in place of a blocked answer.
pub const BLOCKED_OUTPUT: &str = "Sorry, the answer touched a denied topic (mergers).";
const MASK: &str = "{EMPLOYEE_ID}";

pub(super) async fn apply_guardrail(
    State(state): Shared,
    Path((id, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return malformed();
    };
    let source = body["source"].as_str().unwrap_or_default().to_owned();
    let texts: Option<Vec<String>> = body["content"].as_array().map(|blocks| {
        blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
            .collect()
    });
    record(
        &state,
        json!({ "operation": "apply-guardrail", "guardrail": id, "version": version,
                "source": source, "texts": texts }),
    );
    let Some(texts) = texts.filter(|t| !t.is_empty()) else {
        return validation_error("content must hold at least one text block");
    };
    if !matches!(source.as_str(), "INPUT" | "OUTPUT") {
        return validation_error("source must be INPUT or OUTPUT");
    }
    if version != "DRAFT" && version.parse::<u32>().map_or(true, |v| v == 0) {
        return validation_error("The guardrail version is not valid.");
    }
    if id.contains("missing") {
        return error_response(
            404,
            "ResourceNotFoundException",
            "The guardrail identifier or version provided does not exist.",
        );
    }
    for text in &texts {
        for directive in directives(text) {
            if let ["guardrail-error", status, kind] =
                directive.split(':').collect::<Vec<_>>().as_slice()
            {
                return error_response(status.parse().unwrap_or(500), kind, "scripted failure");
            }
        }
    }
    Json(judge(&source, &texts)).into_response()
}

/// The guardrail's answer for `texts`.
fn judge(source: &str, texts: &[String]) -> Value {
    let units: u64 = texts
        .iter()
        .map(|t| (t.chars().count() as u64).div_ceil(1000).max(1))
        .sum();
    let characters: usize = texts.iter().map(|t| t.chars().count()).sum();
    let blocked = texts.iter().any(|t| t.to_lowercase().contains("merger"));
    let mut ids = Vec::new();
    let masked: Vec<String> = texts.iter().map(|t| mask(t, &mut ids)).collect();
    let topics = if blocked {
        json!([{ "name": "Mergers", "type": "DENY", "action": "BLOCKED", "detected": true }])
    } else {
        json!([])
    };
    let regexes: Vec<Value> = ids
        .iter()
        .map(|m| {
            json!({ "name": "EmployeeId", "match": m, "regex": "EMP-[0-9]{6}",
                         "action": "ANONYMIZED", "detected": true })
        })
        .collect();
    let (action, outputs) = if blocked {
        let message = if source == "INPUT" {
            BLOCKED_INPUT
        } else {
            BLOCKED_OUTPUT
        };
        ("GUARDRAIL_INTERVENED", json!([{ "text": message }]))
    } else if !ids.is_empty() {
        let outputs: Vec<Value> = masked.iter().map(|t| json!({ "text": t })).collect();
        ("GUARDRAIL_INTERVENED", Value::Array(outputs))
    } else {
        ("NONE", json!([]))
    };
    json!({
        "usage": {
            "topicPolicyUnits": units,
            "contentPolicyUnits": units,
            "wordPolicyUnits": units,
            "sensitiveInformationPolicyUnits": units,
            "sensitiveInformationPolicyFreeUnits": units,
            "contextualGroundingPolicyUnits": 0
        },
        "action": action,
        "outputs": outputs,
        "assessments": [{
            "topicPolicy": { "topics": topics },
            "sensitiveInformationPolicy": { "piiEntities": [], "regexes": regexes }
        }],
        "guardrailCoverage": { "textCharacters": { "guarded": characters, "total": characters } }
    })
}

/// `text` with every employee ID masked; the IDs found are added to `found`.
fn mask(text: &str, found: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("EMP-") {
        let digits = &rest[at + 4..];
        let is_id = digits.len() >= 6
            && digits.as_bytes()[..6].iter().all(u8::is_ascii_digit)
            && !digits.as_bytes().get(6).is_some_and(u8::is_ascii_digit);
        if is_id {
            out.push_str(&rest[..at]);
            out.push_str(MASK);
            found.push(rest[at..at + 10].to_owned());
            rest = &rest[at + 10..];
        } else {
            out.push_str(&rest[..at + 4]);
            rest = &rest[at + 4..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn employee_ids_are_masked_and_nothing_else() {
        let mut found = Vec::new();
        assert_eq!(
            mask(
                "EMP-123456 and EMP-1234567, EMP-12 é EMP-000001.",
                &mut found
            ),
            "{EMPLOYEE_ID} and EMP-1234567, EMP-12 é {EMPLOYEE_ID}."
        );
        assert_eq!(found, ["EMP-123456", "EMP-000001"]);
    }
}
