//! Tools: OpenAI's function tools as Converse tool specs, the tools a conversation's history
//! called, and `tool_choice`.

#[allow(
    clippy::wildcard_imports,
    reason = "the translation's own types and helpers"
)]
use super::*;

pub(super) fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A Converse tool spec; `strict` asks Bedrock to hold the model's calls to `parameters` exactly.
pub(super) fn tool_spec(
    name: &str,
    description: Option<&str>,
    parameters: &Value,
    strict: bool,
) -> Result<ToolSpecification, ApiError> {
    ToolSpecification::builder()
        .name(name)
        .set_description(description.filter(|d| !d.is_empty()).map(str::to_owned))
        .input_schema(ToolInputSchema::Json(to_document(parameters)))
        .set_strict(strict.then_some(true))
        .build()
        .map_err(build_error)
}

/// The tools a conversation called, declared with an open schema.
pub(super) fn history_tools(
    turns: &[(ConversationRole, Vec<ContentBlock>)],
) -> Result<Vec<ToolSpecification>, ApiError> {
    let mut names: Vec<&str> = Vec::new();
    for block in turns.iter().flat_map(|(_, blocks)| blocks) {
        if let ContentBlock::ToolUse(tool) = block
            && !names.contains(&tool.name())
        {
            names.push(tool.name());
        }
    }
    let open = serde_json::json!({"type": "object"});
    names
        .into_iter()
        .map(|name| {
            tool_spec(
                name,
                Some("Called earlier in this conversation; not offered in this request."),
                &open,
                false,
            )
        })
        .collect()
}

/// The request's tools; `strict` ones stay strict where the model has structured output
/// (`structured`), and are sent as plain tools elsewhere.
pub(super) fn tool_specs(
    request: &ChatCompletionRequest,
    structured: bool,
) -> Result<Vec<ToolSpecification>, ApiError> {
    let Some(tools) = &request.tools else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .map(|tool| {
            if tool.kind != "function" {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!("tool type `{}` is not supported; use `function`", tool.kind),
                ));
            }
            let f = &tool.function;
            if !valid_tool_name(&f.name) {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!(
                        "tool name `{}` must be 1-64 letters, digits, `_` or `-`",
                        f.name
                    ),
                ));
            }
            let parameters = match &f.parameters {
                None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    return Err(ApiError::invalid_param(
                        "tools",
                        format!(
                            "tool `{}`: `parameters` must be a JSON schema object",
                            f.name
                        ),
                    ));
                }
            };
            let strict = structured && f.strict == Some(true);
            tool_spec(&f.name, f.description.as_deref(), &parameters, strict)
        })
        .collect()
}

pub(super) fn tool_choice(
    request: &ChatCompletionRequest,
    tools: &[ToolSpecification],
) -> Result<Option<ToolChoice>, ApiError> {
    let Some(choice) = &request.tool_choice else {
        return Ok(None);
    };
    if tools.is_empty() {
        return match choice {
            OpenAiToolChoice::Mode(mode) if mode == "none" || mode == "auto" => Ok(None),
            _ => Err(ApiError::invalid_param(
                "tool_choice",
                "`tool_choice` needs `tools`",
            )),
        };
    }
    let choice = match choice {
        OpenAiToolChoice::Mode(mode) => match mode.as_str() {
            "auto" | "none" => ToolChoice::Auto(AutoToolChoice::builder().build()),
            "required" => ToolChoice::Any(AnyToolChoice::builder().build()),
            other => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("`tool_choice` `{other}` is not one of auto, none, required"),
                ));
            }
        },
        OpenAiToolChoice::Named(named) => {
            if !tools.iter().any(|t| t.name() == named.function.name) {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!(
                        "`tool_choice` names `{}`, which is not in `tools`",
                        named.function.name
                    ),
                ));
            }
            ToolChoice::Tool(
                SpecificToolChoice::builder()
                    .name(&named.function.name)
                    .build()
                    .map_err(build_error)?,
            )
        }
    };
    Ok(Some(choice))
}
