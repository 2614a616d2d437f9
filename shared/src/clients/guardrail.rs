//! Bedrock Guardrails (`ApplyGuardrail`), the optional managed layer a key or team names: what a
//! guardrail is called with, and its verdict read from Bedrock's answer. The pipeline decides
//! where it runs (the prompt before Bedrock, the answer after it, whole or in windows).

use aws_sdk_bedrockruntime::types::{
    GuardrailAction, GuardrailAssessment, GuardrailContentBlock, GuardrailContentSource,
    GuardrailTextBlock, GuardrailUsage,
};
use serde::{Deserialize, Serialize};

use super::bedrock::{BedrockFailure, RetryPolicy};
use crate::catalog::{GuardrailPrices, GuardrailUnits};
use crate::error::ApiError;
use crate::money::Money;

/// A guardrail, as a key or team names it: `{"id": "...", "version": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailRef {
    /// The guardrail's ID or ARN.
    pub id: String,
    /// A version number, or `DRAFT`.
    pub version: String,
}

impl GuardrailRef {
    /// Reads a stored or sent guardrail, checked against Bedrock's patterns for both fields (so
    /// nothing Bedrock would refuse is ever stored). The error names the field, not its value.
    pub fn parse(value: &serde_json::Value) -> Result<GuardrailRef, String> {
        let guardrail = GuardrailRef::deserialize(value).map_err(|_| {
            "`guardrail` is an object with a string `id` and a string `version`, or null".to_owned()
        })?;
        if !valid_id(&guardrail.id) {
            return Err(
                "`guardrail.id` is a guardrail ID (lowercase letters and digits, up to \
                        64) or a guardrail ARN"
                    .into(),
            );
        }
        if !valid_version(&guardrail.version) {
            return Err(
                "`guardrail.version` is a version number (1 to 99999999) or `DRAFT`".into(),
            );
        }
        Ok(guardrail)
    }

    /// `id:version`, as records name it.
    pub fn name(&self) -> String {
        format!("{}:{}", self.id, self.version)
    }
}

fn plain_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A guardrail ID, or its ARN (`arn:aws[-part]:bedrock:<region>:<account>:guardrail/<id>`).
fn valid_id(id: &str) -> bool {
    if plain_id(id) {
        return true;
    }
    let parts: Vec<&str> = id.splitn(6, ':').collect();
    let [arn, partition, "bedrock", region, account, resource] = parts.as_slice() else {
        return false;
    };
    *arn == "arn"
        && partition.strip_prefix("aws").is_some_and(|rest| {
            rest.split('-')
                .skip(1)
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
                && (rest.is_empty() || rest.starts_with('-'))
        })
        && (1..=20).contains(&region.len())
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource.strip_prefix("guardrail/").is_some_and(plain_id)
}

fn valid_version(version: &str) -> bool {
    version == "DRAFT"
        || (!version.starts_with('0')
            && (1..=8).contains(&version.len())
            && version.chars().all(|c| c.is_ascii_digit()))
}

/// What is judged: the prompt, or the model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Input,
    Output,
}

/// A guardrail's verdict on some texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Pass,
    /// Masked (ANONYMIZE): the texts as the guardrail rewrote them, one per text sent.
    Masked(Vec<String>),
    /// BLOCKED: the guardrail's message for the client.
    Blocked(String),
}

/// One `ApplyGuardrail` call: its verdict, and the units it is charged for.
#[derive(Debug, Clone)]
pub struct Applied {
    pub verdict: Verdict,
    pub units: GuardrailUnits,
}

/// The longest guardrail message a client is shown.
const MAX_MESSAGE_CHARS: usize = 1000;

/// The guardrail a request runs under, with what its units cost.
#[derive(Debug, Clone)]
pub struct Guardrail {
    pub guardrail: GuardrailRef,
    pub prices: GuardrailPrices,
}

impl Guardrail {
    /// What `units` cost.
    pub fn cost(&self, units: &GuardrailUnits) -> Money {
        self.prices.cost(units)
    }

    /// Judges `texts` (each a content block of its own). Transient failures are retried with
    /// `retry`; any other failure, or an answer that cannot be applied, is an error: a request
    /// whose guardrail cannot judge it is not served (the guardrail fails closed).
    pub async fn apply(
        &self,
        bedrock: &aws_sdk_bedrockruntime::Client,
        retry: &RetryPolicy,
        source: Source,
        texts: &[&str],
    ) -> Result<Applied, GuardrailFailure> {
        let content: Vec<GuardrailContentBlock> = texts
            .iter()
            .filter_map(|text| {
                GuardrailTextBlock::builder()
                    .text(*text)
                    .build()
                    .ok()
                    .map(GuardrailContentBlock::Text)
            })
            .collect();
        let source = match source {
            Source::Input => GuardrailContentSource::Input,
            Source::Output => GuardrailContentSource::Output,
        };
        let mut attempt = 1;
        let answer = loop {
            let sent = bedrock
                .apply_guardrail()
                .guardrail_identifier(&self.guardrail.id)
                .guardrail_version(&self.guardrail.version)
                .source(source.clone())
                .set_content(Some(content.clone()))
                .send()
                .await;
            match sent {
                Ok(answer) => break answer,
                Err(error) => {
                    let failure = BedrockFailure::from_sdk(&error);
                    if !failure.transient() || attempt >= retry.attempts {
                        return Err(GuardrailFailure {
                            guardrail: self.guardrail.name(),
                            failure,
                        });
                    }
                    tokio::time::sleep(retry.delay(attempt)).await;
                    attempt += 1;
                }
            }
        };
        let units = answer.usage().map(units_of).unwrap_or_default();
        let outputs: Vec<String> = answer
            .outputs()
            .iter()
            .map(|o| o.text().unwrap_or_default().to_owned())
            .collect();
        let verdict = if *answer.action() != GuardrailAction::GuardrailIntervened {
            Verdict::Pass
        } else if answer.assessments().iter().any(blocks) || outputs.len() != texts.len() {
            // A block, or a rewrite that cannot be matched to what was sent: the guardrail's
            // first output is its blocked message.
            Verdict::Blocked(message(outputs.first().map(String::as_str)))
        } else {
            Verdict::Masked(outputs)
        };
        Ok(Applied { verdict, units })
    }
}

/// The units of Bedrock's usage, by policy.
fn units_of(usage: &GuardrailUsage) -> GuardrailUnits {
    let n = |v: i32| u64::try_from(v).unwrap_or(0);
    GuardrailUnits {
        content: n(usage.content_policy_units()),
        topic: n(usage.topic_policy_units()),
        sensitive_information: n(usage.sensitive_information_policy_units()),
        sensitive_information_regex: n(usage.sensitive_information_policy_free_units()),
        word: n(usage.word_policy_units()),
        contextual_grounding: n(usage.contextual_grounding_policy_units()),
    }
}

/// Whether any policy of `assessment` blocked.
fn blocks(assessment: &GuardrailAssessment) -> bool {
    const BLOCKED: &str = "BLOCKED";
    let topics = assessment
        .topic_policy()
        .is_some_and(|p| p.topics().iter().any(|t| t.action().as_str() == BLOCKED));
    let content = assessment
        .content_policy()
        .is_some_and(|p| p.filters().iter().any(|f| f.action().as_str() == BLOCKED));
    let words = assessment.word_policy().is_some_and(|p| {
        p.custom_words()
            .iter()
            .any(|w| w.action().as_str() == BLOCKED)
            || p.managed_word_lists()
                .iter()
                .any(|w| w.action().as_str() == BLOCKED)
    });
    let sensitive = assessment.sensitive_information_policy().is_some_and(|p| {
        p.pii_entities()
            .iter()
            .any(|e| e.action().as_str() == BLOCKED)
            || p.regexes().iter().any(|r| r.action().as_str() == BLOCKED)
    });
    let grounding = assessment
        .contextual_grounding_policy()
        .is_some_and(|p| p.filters().iter().any(|f| f.action().as_str() == BLOCKED));
    topics || content || words || sensitive || grounding
}

/// The guardrail's blocked message as a client may see it: control characters dropped, at most
/// [`MAX_MESSAGE_CHARS`] characters.
fn message(text: Option<&str>) -> String {
    let text: String = text
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.trim().is_empty() {
        "the request was blocked by the gateway's guardrail".to_owned()
    } else {
        text
    }
}

/// A guardrail that could not judge a request.
#[derive(Debug, Clone)]
pub struct GuardrailFailure {
    guardrail: String,
    failure: BedrockFailure,
}

impl GuardrailFailure {
    /// The client's error: the request is not served without its guardrail's verdict.
    pub fn into_api_error(self) -> ApiError {
        let GuardrailFailure { guardrail, failure } = self;
        match failure {
            BedrockFailure::Throttled => ApiError::RateLimited {
                message: format!("Bedrock is throttling guardrail `{guardrail}`; retry shortly"),
                retry_after_secs: super::bedrock::THROTTLE_RETRY_AFTER_SECS,
            },
            BedrockFailure::AccessDenied => ApiError::Upstream(format!(
                "the gateway is not permitted to apply guardrail `{guardrail}` (a deployment \
                 misconfiguration: the template's GuardrailArns)"
            )),
            BedrockFailure::NotFound | BedrockFailure::Validation(_) => {
                ApiError::Upstream(format!(
                    "guardrail `{guardrail}` could not be applied: Bedrock does not know it \
                     (the key's or team's `guardrail` setting)"
                ))
            }
            other => {
                tracing::warn!(failure = ?other, %guardrail, "ApplyGuardrail failed");
                ApiError::UpstreamUnavailable(format!(
                    "guardrail `{guardrail}` could not be applied; the request was not sent"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_and_versions_follow_bedrocks_patterns() {
        let ok = |id: &str, version: &str| {
            GuardrailRef::parse(&json!({"id": id, "version": version})).is_ok()
        };
        assert!(ok("gr0abc12", "1"));
        assert!(ok("gr0abc12", "DRAFT"));
        assert!(ok("gr0abc12", "99999999"));
        assert!(ok(
            "arn:aws:bedrock:eu-west-2:123456789012:guardrail/gr0abc12",
            "3"
        ));
        assert!(!ok("GR0", "1"));
        assert!(!ok("gr0\u{0}", "1"));
        assert!(!ok("", "1"));
        assert!(!ok("gr0", "0"));
        assert!(!ok("gr0", "01"));
        assert!(!ok("gr0", "draft"));
        assert!(!ok("gr0", "123456789"));
        assert!(!ok("arn:aws:bedrock:eu-west-2:12345:guardrail/gr0", "1"));
        assert!(!ok("arn:aws:s3:eu-west-2:123456789012:guardrail/gr0", "1"));
        assert!(GuardrailRef::parse(&json!({"id": "gr0", "version": 1})).is_err());
        assert!(GuardrailRef::parse(&json!({"id": "gr0", "version": "1", "x": 1})).is_err());
    }

    #[test]
    fn a_blocked_message_is_bounded_and_printable() {
        assert_eq!(message(Some("no\u{0} way")), "no way");
        assert_eq!(message(Some(&"x".repeat(5000))).len(), MAX_MESSAGE_CHARS);
        assert!(message(None).contains("guardrail"));
    }
}
