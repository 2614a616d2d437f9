//! Attribution: every Bedrock call carries the request's tags to Bedrock's model-invocation logs,
//! so a line there joins a spend row (issue #28).
//!
//! Bedrock bills the caller's IAM principal, so Cost Explorer shows the whole company as the one
//! role the functions run as. Bedrock's invocation logs record per-request tags: Converse and
//! ConverseStream carry them in the body (`requestMetadata`), InvokeModel and its stream in the
//! `X-Amzn-Bedrock-Request-Metadata` header (a JSON object). The tags are the request's ID (the
//! spend row's `request_id` and the client's `x-request-id`), the first 16 hex digits of the
//! charged key's hash (the spend row's `api_key` starts with them) and the key's team. Never a
//! user's ID or e-mail, never the key itself.
//!
//! One place: the pipeline sets the tags of the request it serves around the adapter's call
//! ([`Attribution::scope`]), and one interceptor on the Bedrock client ([`Tagger`]) writes them
//! into whichever operation the adapter sends, retries and fallbacks included.
//!
//! Bedrock refuses a call whose tags break its rules (at most 16; keys of 1-256 and values of
//! 0-256 characters from `[a-zA-Z0-9\s:_@$#=/+,-.]`), and its log filters take a narrower set
//! (`[a-zA-Z0-9\s._:/=+$@-]`), so a team ID is fitted to both: any other character becomes `_`,
//! and it is cut at 256 characters.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_bedrockruntime::config::interceptors::{
    BeforeSerializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_bedrockruntime::error::BoxError;
use aws_sdk_bedrockruntime::operation::converse::ConverseInput;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamInput;

use crate::http::RequestId;
use crate::keys::KeyHash;

/// The header InvokeModel and InvokeModelWithResponseStream take the tags in.
pub const METADATA_HEADER: &str = "x-amzn-bedrock-request-metadata";

/// How many hex digits of the key's hash are sent: enough to join (64 bits), not the whole hash.
const KEY_PREFIX_LEN: usize = 16;
/// Bedrock's longest tag value.
const MAX_VALUE_LEN: usize = 256;

tokio::task_local! {
    static CURRENT: Attribution;
}

/// The tags of one request, in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    tags: Vec<(&'static str, String)>,
}

impl Attribution {
    /// The tags of the request `request_id`, charged to the key `key` of team `team` (`None`:
    /// the master key, or no team).
    pub fn new(request_id: RequestId, key: Option<&KeyHash>, team: Option<&str>) -> Attribution {
        let mut tags = vec![("llmlite_request_id", request_id.to_string())];
        if let Some(key) = key {
            tags.push((
                "llmlite_key",
                key.as_str().chars().take(KEY_PREFIX_LEN).collect(),
            ));
        }
        if let Some(team) = team {
            tags.push(("llmlite_team", fitted(team)));
        }
        Attribution { tags }
    }

    /// The tags, as Bedrock takes them.
    pub fn map(&self) -> HashMap<String, String> {
        self.tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// Runs `work` (an adapter's model call) with these tags on every Bedrock call it makes.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// The tags of the request being served here, if any.
    fn current() -> Option<Attribution> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

/// A tag value Bedrock accepts and its log filters can match: other characters become `_`, at
/// most 256 characters.
fn fitted(value: &str) -> String {
    value
        .chars()
        .take(MAX_VALUE_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || "._:/=+$@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The Bedrock client's interceptor that writes the current request's tags into each call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tagger;

impl Intercept for Tagger {
    fn name(&self) -> &'static str {
        "llmlite-attribution"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(tags) = Attribution::current() else {
            return Ok(());
        };
        let input = context.input_mut();
        if let Some(converse) = input.downcast_mut::<ConverseInput>() {
            converse.request_metadata = Some(tags.map());
        } else if let Some(converse) = input.downcast_mut::<ConverseStreamInput>() {
            converse.request_metadata = Some(tags.map());
        }
        Ok(())
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(tags) = Attribution::current() else {
            return Ok(());
        };
        let request = context.request_mut();
        // InvokeModel and its stream, by their paths: `/model/{id}/invoke` and
        // `/model/{id}/invoke-with-response-stream`.
        let path = request.uri().split('?').next().unwrap_or_default();
        if path.ends_with("/invoke") || path.ends_with("/invoke-with-response-stream") {
            let value = serde_json::to_string(&tags.map())?;
            request.headers_mut().insert(METADATA_HEADER, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_ids_are_fitted_to_bedrocks_rules() {
        assert_eq!(fitted("platform-eu_1"), "platform-eu_1");
        assert_eq!(fitted("a#b,c"), "a_b_c");
        assert_eq!(fitted("équipe/ü\u{0}\"x\""), "_quipe/___x_");
        assert_eq!(fitted(&"t".repeat(300)).chars().count(), 256);
    }

    #[test]
    fn the_tags_are_the_request_the_key_prefix_and_the_team() {
        let id = RequestId(uuid::Uuid::nil());
        let key = KeyHash::of("sk-test-attribution");
        let tags = Attribution::new(id, Some(&key), Some("team a")).map();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags["llmlite_request_id"], id.to_string());
        assert_eq!(tags["llmlite_key"], key.as_str()[..16]);
        assert_eq!(tags["llmlite_team"], "team a");
        assert_eq!(Attribution::new(id, None, None).map().len(), 1);
    }
}
