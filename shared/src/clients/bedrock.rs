//! Bedrock, as every adapter calls it: its failures classified for retries, fallbacks and the
//! client's status, bounded jittered retries, and the walk down a request's model chain
//! (fallbacks). What each API sends (Converse, InvokeModel) is its adapter's.

use std::time::Duration;

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};

use tracing::Instrument;

use crate::catalog::ModelEntry;
use crate::clients::traces::{self, Trace};
use crate::error::ApiError;

/// Why a Bedrock call failed, classified for retries, fallbacks and the client's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BedrockFailure {
    Validation(String),
    AccessDenied,
    NotFound,
    Throttled,
    ModelTimeout,
    ModelError(String),
    Unavailable,
    Internal(String),
    Transport(String),
}

impl BedrockFailure {
    /// Classifies an error by its Bedrock error code.
    pub fn from_code(code: Option<&str>, message: Option<&str>) -> Self {
        let message = message.unwrap_or("no message").to_owned();
        match code.unwrap_or_default() {
            "ValidationException" | "validationException" => BedrockFailure::Validation(message),
            "AccessDeniedException" | "accessDeniedException" => BedrockFailure::AccessDenied,
            "ResourceNotFoundException" | "resourceNotFoundException" => BedrockFailure::NotFound,
            "ThrottlingException"
            | "throttlingException"
            | "ModelNotReadyException"
            | "modelNotReadyException"
            | "ServiceQuotaExceededException" => BedrockFailure::Throttled,
            "ModelTimeoutException" | "modelTimeoutException" => BedrockFailure::ModelTimeout,
            "ModelErrorException"
            | "modelErrorException"
            | "ModelStreamErrorException"
            | "modelStreamErrorException" => BedrockFailure::ModelError(message),
            "ServiceUnavailableException" | "serviceUnavailableException" => {
                BedrockFailure::Unavailable
            }
            other => BedrockFailure::Internal(format!("{other}: {message}")),
        }
    }

    /// Classifies an SDK error.
    pub fn from_sdk<E, R>(error: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match error {
            SdkError::ServiceError(context) => {
                Self::from_code(context.err().code(), context.err().message())
            }
            SdkError::TimeoutError(_) => BedrockFailure::Transport("timed out".into()),
            SdkError::DispatchFailure(failure) => {
                BedrockFailure::Transport(format!("could not reach Bedrock: {failure:?}"))
            }
            other => BedrockFailure::Internal(format!(
                "{}",
                aws_sdk_bedrockruntime::error::DisplayErrorContext(other)
            )),
        }
    }

    /// Its kind, as a trace's `error.type` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            BedrockFailure::Validation(_) => "validation",
            BedrockFailure::AccessDenied => "access_denied",
            BedrockFailure::NotFound => "not_found",
            BedrockFailure::Throttled => "throttled",
            BedrockFailure::ModelTimeout => "model_timeout",
            BedrockFailure::ModelError(_) => "model_error",
            BedrockFailure::Unavailable => "unavailable",
            BedrockFailure::Internal(_) => "internal",
            BedrockFailure::Transport(_) => "transport",
        }
    }

    /// Worth trying again, on this model or a fallback.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            BedrockFailure::Throttled
                | BedrockFailure::Unavailable
                | BedrockFailure::Internal(_)
                | BedrockFailure::Transport(_)
        )
    }

    pub fn into_api_error(self, alias: &str) -> ApiError {
        match self {
            BedrockFailure::Validation(message) => {
                ApiError::invalid_request(format!("Bedrock refused the request: {message}"))
            }
            BedrockFailure::AccessDenied => ApiError::Upstream(format!(
                "the gateway is not permitted to call model `{alias}` on Bedrock (a deployment misconfiguration)"
            )),
            BedrockFailure::NotFound => ApiError::Upstream(format!(
                "model `{alias}` is not available on Bedrock in this region (a catalog misconfiguration)"
            )),
            BedrockFailure::Throttled => ApiError::RateLimited {
                message: format!("Bedrock is throttling model `{alias}`; retry shortly"),
                retry_after_secs: THROTTLE_RETRY_AFTER_SECS,
            },
            BedrockFailure::ModelTimeout => {
                ApiError::UpstreamTimeout(format!("model `{alias}` did not answer in time"))
            }
            BedrockFailure::ModelError(message) => {
                ApiError::Upstream(format!("model `{alias}` failed: {message}"))
            }
            BedrockFailure::Unavailable => {
                ApiError::UpstreamUnavailable(format!("Bedrock is unavailable for model `{alias}`"))
            }
            BedrockFailure::Internal(detail) | BedrockFailure::Transport(detail) => {
                tracing::warn!(%detail, "Bedrock call failed");
                ApiError::Upstream(format!("Bedrock failed to answer for model `{alias}`"))
            }
        }
    }
}

/// What a client throttled by Bedrock is told to wait.
pub const THROTTLE_RETRY_AFTER_SECS: u64 = 2;

/// Bounded exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per model, first one included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_delay);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }
}

/// One model a request may be served by, as planned for it: the model, and the output limit the
/// request has there (which sizes its budget reservation). Chat completions plan Converse
/// requests; Anthropic's Messages API plans InvokeModel bodies.
pub trait Candidate {
    fn model(&self) -> &std::sync::Arc<ModelEntry>;
    fn max_tokens(&self) -> u32;
    /// Whether the request, as planned for this model, writes the cache for an hour: it may
    /// then pay the 1-hour write price for its prompt, and a policy may forbid it.
    fn cache_1h(&self) -> bool {
        false
    }
    /// The service tier the request names (`None`: Bedrock's default, unnamed). The model
    /// offers it: a plan for a model that does not is never made.
    fn service_tier(&self) -> Option<crate::catalog::ServiceTier> {
        None
    }
    /// The prices the request pays on this model: its tier's.
    fn prices(&self) -> &crate::catalog::TokenPrices {
        self.model().charged_at(self.service_tier())
    }
}

/// Calls `call` on each planned model in turn, retrying transient failures with `retry`'s
/// jittered backoff before moving to the next. Returns the answer and the model that gave it.
/// Each attempt is a GenAI client span of `trace`; the one that answers is kept open in it until
/// the request ends.
pub async fn with_fallbacks<'p, P, T, F, Fut>(
    retry: &RetryPolicy,
    plan: &'p [P],
    alias: &str,
    trace: &Trace,
    mut call: F,
) -> Result<(T, &'p P), ApiError>
where
    P: Candidate,
    F: FnMut(&'p P) -> Fut,
    Fut: std::future::Future<Output = Result<T, BedrockFailure>>,
{
    let mut last_failure = None;
    for (index, planned) in plan.iter().enumerate() {
        for attempt in 1..=retry.attempts {
            let model = planned.model();
            let span = traces::attempt_span(
                if model.embedding.is_some() {
                    "embeddings"
                } else {
                    "chat"
                },
                &model.bedrock_model_id,
                model.alias.as_str(),
                planned.max_tokens(),
                index,
                attempt,
            );
            let called = call(planned).instrument(span.clone()).await;
            if let Err(failure) = &called {
                traces::failed(&span, failure.kind());
            }
            match called {
                Ok(answer) => {
                    trace.answered(span, index);
                    return Ok((answer, planned));
                }
                Err(failure) if failure.transient() => {
                    tracing::warn!(model = %planned.model().alias, attempt, ?failure, "Bedrock call failed, retrying");
                    last_failure = Some(failure);
                    if attempt < retry.attempts {
                        tokio::time::sleep(retry.delay(attempt)).await;
                    }
                }
                Err(failure) => return Err(failure.into_api_error(alias)),
            }
        }
    }
    Err(last_failure
        .unwrap_or(BedrockFailure::Unavailable)
        .into_api_error(alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let policy = RetryPolicy::default();
        for retry in 1..10 {
            assert!(policy.delay(retry) <= policy.max_delay);
        }
    }
}
