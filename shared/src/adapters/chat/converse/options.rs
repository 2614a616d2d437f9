//! Inference options: the output limit, the thinking budget `reasoning_effort` asks for,
//! sampling, and stop sequences.

#[allow(
    clippy::wildcard_imports,
    reason = "the translation's own types and helpers"
)]
use super::*;

pub(super) fn max_tokens(
    request: &ChatCompletionRequest,
    model: &ModelEntry,
    default: u32,
) -> Result<u32, ApiError> {
    let (param, requested) = match (request.max_completion_tokens, request.max_tokens) {
        (Some(n), _) => ("max_completion_tokens", Some(n)),
        (None, Some(n)) => ("max_tokens", Some(n)),
        (None, None) => ("max_tokens", None),
    };
    match requested {
        // Thinking comes out of max_tokens: a request that sets none gets the default for its
        // answer on top of the thinking it asked for.
        None => Ok(default
            .saturating_add(wanted_thinking(request, model).unwrap_or(0))
            .min(model.max_output_tokens)),
        Some(0) => Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be at least 1"),
        )),
        Some(n) if n > model.max_output_tokens => Err(ApiError::invalid_param(
            param,
            format!(
                "`{param}` is {n}; model `{}` produces at most {}",
                model.alias, model.max_output_tokens
            ),
        )),
        Some(n) => Ok(n),
    }
}

/// The thinking budget `reasoning_effort` asks for, on a model that reasons. Others ignore it
/// (IDEs send it to every model).
pub(super) fn wanted_thinking(request: &ChatCompletionRequest, model: &ModelEntry) -> Option<u32> {
    let effort = request.reasoning_effort?;
    if !model.flags.reasoning {
        tracing::debug!(model = %model.alias, "reasoning_effort ignored: the model does not reason");
        return None;
    }
    Some(match effort {
        ReasoningEffort::Minimal | ReasoningEffort::Low => MIN_THINKING_BUDGET,
        ReasoningEffort::Medium => 4096,
        ReasoningEffort::High => 16384,
    })
}

/// The thinking budget to send: what was asked for, leaving room for the answer.
pub(super) fn thinking_budget(
    request: &ChatCompletionRequest,
    model: &ModelEntry,
    max_tokens: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(wanted) = wanted_thinking(request, model) else {
        return Ok(None);
    };
    if max_tokens <= MIN_THINKING_BUDGET {
        return Err(ApiError::invalid_param(
            "max_tokens",
            format!(
                "with `reasoning_effort`, `max_tokens` must be more than {MIN_THINKING_BUDGET}"
            ),
        ));
    }
    // The budget must leave room for the answer.
    Ok(Some(wanted.min(max_tokens - 1).max(MIN_THINKING_BUDGET)))
}

pub(super) fn sampling(
    request: &ChatCompletionRequest,
    model: &ModelEntry,
    thinking: bool,
) -> Result<(Option<f32>, Option<f32>), ApiError> {
    for (param, value) in [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
    ] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(ApiError::invalid_param(
                param,
                format!("`{param}` must be between 0 and 1 for Claude models"),
            ));
        }
    }
    if thinking {
        // Claude fixes sampling while it thinks.
        return Ok((None, None));
    }
    match (request.temperature, request.top_p) {
        (Some(t), Some(_)) if !model.flags.temperature_and_top_p => {
            tracing::debug!(model = %model.alias, "top_p dropped: the model refuses temperature and top_p together");
            Ok((Some(t), None))
        }
        other => Ok(other),
    }
}

pub(super) fn stop_sequences(
    request: &ChatCompletionRequest,
) -> Result<Option<Vec<String>>, ApiError> {
    let stops = match &request.stop {
        None => return Ok(None),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(list)) => list.clone(),
    };
    let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    if stops.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::invalid_param(
            "stop",
            format!("at most {MAX_STOP_SEQUENCES} stop sequences"),
        ));
    }
    Ok((!stops.is_empty()).then_some(stops))
}
