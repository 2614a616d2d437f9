//! The model call and a whole answer: retries and fallbacks under the invocation's deadline, and
//! the end every one-body answer shares (charge the usage, screen the answer for PII, write the
//! headers, settle after the response). Adapters say how to call and what the answer is.

use std::future::Future;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};

pub use super::invocation::{deadline_error, until_deadline};
use super::{Adapter, Admitted, Call};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::clients::bedrock::{self, BedrockFailure};
use crate::clients::guardrail::Source;
use crate::error::{ApiError, Refusal};
use crate::pii::OutputGuard;
use crate::record::{RequestRecord, Status};
use crate::settlement::Guard;

/// An answer, as an adapter rendered it: the model that gave it, what it used, its body, and
/// any headers of the adapter's own.
pub struct Answered<B> {
    pub model: Arc<ModelEntry>,
    pub usage: TokenUsage,
    pub body: B,
    pub headers: HeaderMap,
}

/// A call that gave no answer: the error, how the request ended, and what it used where that
/// is known (else a cut call pays its prompt at the estimate).
#[derive(Debug)]
pub struct Failed {
    pub error: ApiError,
    pub status: Status,
    pub used: Option<(Arc<ModelEntry>, TokenUsage)>,
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Failed {
            error,
            status: Status::Failure,
            used: None,
        }
    }
}

impl Failed {
    /// The call was cut by the invocation's deadline.
    pub fn deadline() -> Failed {
        Failed {
            error: deadline_error(),
            status: Status::Deadline,
            used: None,
        }
    }
}

/// A whole answer's body: screened for PII (when answers are scanned) and by the guardrail
/// (when the key or team names one), then written out.
pub trait AnswerBody: Send {
    /// Runs every text of the answer through the output guard.
    fn screen(&mut self, output: &mut OutputGuard);
    /// The texts of the answer a guardrail judges (what [`AnswerBody::screen`] screens).
    fn texts(&mut self) -> Vec<&mut String>;
    fn into_bytes(self) -> Vec<u8>;
}

/// Calls `each` on the request's planned models in turn (retries, then fallbacks) until the
/// invocation's deadline: the answer and the model that gave it.
pub async fn fallbacks<'c, A, T, F, Fut>(
    call: &'c Call<A>,
    each: F,
) -> Result<(T, &'c A::Planned), Failed>
where
    A: Adapter,
    F: FnMut(&'c A::Planned) -> Fut,
    Fut: Future<Output = Result<T, BedrockFailure>>,
{
    let trace = call.guard.trace();
    let called = until_deadline(
        call.invocation.deadline,
        bedrock::with_fallbacks(&call.state.retry, &call.plan, &call.alias, &trace, each),
    )
    .await;
    match called {
        Some(Ok(called)) => Ok(called),
        Some(Err(error)) => Err(error.into()),
        None => Err(Failed::deadline()),
    }
}

/// Ends a call answered in one body: charged, screened (PII, then the guardrail), answered,
/// settled after the response. `upstream` is when the model call began.
pub async fn complete<A: Adapter, B: AnswerBody>(
    call: Call<A>,
    answered: Result<Answered<B>, Failed>,
    upstream: std::time::Instant,
) -> Result<Response, Refusal> {
    let Call {
        state,
        admitted,
        mut guard,
        output,
        guardrail,
        invocation,
        ..
    } = call;
    guard.record().upstream_ms = upstream.elapsed().as_secs_f64() * 1000.0;
    let Answered {
        model,
        usage,
        mut body,
        headers,
    } = match answered {
        Ok(answered) => answered,
        Err(failed) => return Err(failed.settle(guard)),
    };
    guard.record().charge(&model, usage);
    if let Some(mut output) = output {
        body.screen(&mut output);
        guard.record().note_output(output.report());
        if let Some(error) = output.blocked() {
            // The answer is withheld; the request pays for it, as the model produced it.
            return Err(end(guard, error, Status::Failure));
        }
    }
    if let Some(guardrail) = &guardrail {
        let texts = body.texts();
        let judged = super::guardrail::judge(
            &state,
            guardrail,
            invocation.deadline,
            guard.record(),
            Source::Output,
            texts,
        )
        .await;
        if let Err(error) = judged {
            // Withheld, or not judged: the request pays for the answer the model produced.
            return Err(end(guard, error, Status::Failure));
        }
    }
    let bytes = body.into_bytes();
    let record = guard.record();
    record.response_bytes = bytes.len() as u64;
    record.status_code = 200;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    write_headers(
        response.headers_mut(),
        &admitted,
        guard.record_ref(),
        Some(&model),
    );
    response.headers_mut().extend(headers);
    if let Some(record) = guard.record_ref() {
        server_timing(
            response.headers_mut(),
            record,
            record.upstream_ms,
            guard.elapsed_ms(),
        );
    }
    guard.finish(Status::Success);
    Ok(response)
}

impl Failed {
    /// Ends the request: charged what it used, if known, settled, and the error for the client.
    pub fn settle(self, mut guard: Guard) -> Refusal {
        if let Some((model, usage)) = &self.used {
            guard.record().charge(model, *usage);
        }
        end(guard, self.error, self.status)
    }
}

/// Ends an admitted request with `error` and `status`: settled (its reservation released, its
/// failure recorded), and the error for the client.
pub fn end(mut guard: Guard, error: ApiError, status: Status) -> Refusal {
    guard.record().fail(&error);
    guard.finish(status);
    error.into()
}

/// The rate-limit, cost and spend headers of an answer.
pub fn write_headers(
    headers: &mut HeaderMap,
    admitted: &Admitted,
    record: Option<&RequestRecord>,
    served: Option<&Arc<ModelEntry>>,
) {
    admitted.write_headers(headers);
    let cost = record.map(|r| r.cost);
    if let Some(cost) = cost
        && let Ok(value) = HeaderValue::from_str(&cost.to_string())
    {
        headers.insert("x-litellm-response-cost", value);
    }
    // The key's spend with this request's cost, as settlement will make it.
    let spend = admitted.key_spend + cost.unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(&spend.to_string()) {
        headers.insert("x-litellm-key-spend", value);
    }
    if let Some(served) = served
        && let Ok(value) = HeaderValue::from_str(served.alias.as_str())
    {
        headers.insert("x-llmlite-served-model", value);
    }
}

/// `server-timing`: the gateway's stages, the model call (`upstream`: to the whole answer, or to
/// a stream's first event) and the total so far, in milliseconds. Browsers' developer tools and
/// the hot-path bench read it; it says nothing a client could not time itself but the split.
pub fn server_timing(
    headers: &mut HeaderMap,
    record: &RequestRecord,
    upstream_ms: f64,
    total_ms: f64,
) {
    let s = &record.stages;
    // The guardrail's stage only when the key or team names one.
    let guardrail = match &record.guardrail {
        Some(_) => format!("guardrail;dur={:.3}, ", s.guardrail_ms),
        None => String::new(),
    };
    let value = format!(
        "parse;dur={:.3}, admit;dur={:.3}, pii;dur={:.3}, {guardrail}upstream;dur={:.3}, \
         total;dur={:.3}",
        s.parse_ms, s.admit_ms, s.pii_ms, upstream_ms, total_ms
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("server-timing", value);
    }
}
