//! The request's options: `tools`, `tool_choice`, `reasoning` and `text.format`, read into their
//! chat-completion forms.

#[allow(
    clippy::wildcard_imports,
    reason = "the request reader's helpers and types"
)]
use super::input::valid_name;
use super::*;

/// `tools`: function tools only. Built-in tools (web search, file search, code interpreter,
/// computer use, ...) are services OpenAI runs; Bedrock has none of them.
pub(super) fn tools(value: Option<&Value>) -> Result<Option<Vec<Tool>>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Array(tools) = value else {
        return Err(invalid("tools", "`tools` must be a list"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let at = format!("tools[{index}]");
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => {}
                Some(other) => {
                    return Err(invalid(
                        &format!("{at}.type"),
                        format!(
                            "tool type `{other}` is not supported: llmlite serves `function` \
                             tools only (built-in tools run on OpenAI's servers)"
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        &format!("{at}.type"),
                        format!("`{at}.type` is required"),
                    ));
                }
            }
            let name = text(
                tool.get("name").unwrap_or(&Value::Null),
                &format!("{at}.name"),
            )?;
            if !valid_name(&name) {
                return Err(invalid(
                    &format!("{at}.name"),
                    format!("`{at}.name` must be 1-64 letters, digits, `_` or `-`"),
                ));
            }
            let description = match tool.get("description") {
                None | Some(Value::Null) => None,
                Some(d) => Some(text(d, &format!("{at}.description"))?),
            };
            let parameters = match tool.get("parameters") {
                None | Some(Value::Null) => None,
                Some(p @ Value::Object(_)) => Some(p.clone()),
                Some(_) => {
                    return Err(invalid(
                        &format!("{at}.parameters"),
                        format!("`{at}.parameters` must be a JSON schema object"),
                    ));
                }
            };
            let strict = match tool.get("strict") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(strict)) => Some(*strict),
                Some(_) => {
                    return Err(invalid(
                        &format!("{at}.strict"),
                        format!("`{at}.strict` must be true or false"),
                    ));
                }
            };
            Ok(Tool {
                kind: "function".to_owned(),
                function: FunctionDefinition {
                    name,
                    description,
                    parameters,
                    strict,
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `tool_choice`: a mode, or `{"type": "function", "name"}`.
pub(super) fn tool_choice(value: Option<&Value>) -> Result<Option<ToolChoice>, ApiError> {
    match value {
        None => Ok(None),
        Some(Value::String(mode)) => Ok(Some(ToolChoice::Mode(mode.clone()))),
        Some(Value::Object(choice)) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => Ok(Some(ToolChoice::Named(NamedToolChoice {
                kind: "function".to_owned(),
                function: NamedFunction {
                    name: text(
                        choice.get("name").unwrap_or(&Value::Null),
                        "tool_choice.name",
                    )?,
                },
            }))),
            Some(other) => Err(invalid(
                "tool_choice",
                format!(
                    "`tool_choice` of type `{other}` is not supported: use a mode (auto, none, \
                     required) or `{{\"type\": \"function\", \"name\": ...}}`"
                ),
            )),
            None => Err(invalid(
                "tool_choice.type",
                "`tool_choice.type` is required",
            )),
        },
        Some(_) => Err(invalid(
            "tool_choice",
            "`tool_choice` must be a string or an object",
        )),
    }
}

/// `reasoning.effort`; `reasoning.summary` is not read (a reasoning model's summary comes
/// when it thinks).
pub(super) fn reasoning(value: Option<&Value>) -> Result<Option<ReasoningEffort>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Object(reasoning) = value else {
        return Err(invalid("reasoning", "`reasoning` must be an object"));
    };
    match reasoning.get("effort") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(effort)) => match effort.as_str() {
            "none" => Ok(None),
            "minimal" => Ok(Some(ReasoningEffort::Minimal)),
            "low" => Ok(Some(ReasoningEffort::Low)),
            "medium" => Ok(Some(ReasoningEffort::Medium)),
            "high" | "xhigh" => Ok(Some(ReasoningEffort::High)),
            other => Err(invalid(
                "reasoning.effort",
                format!(
                    "`reasoning.effort` `{other}` is not one of none, minimal, low, medium, high"
                ),
            )),
        },
        Some(_) => Err(invalid(
            "reasoning.effort",
            "`reasoning.effort` must be a string",
        )),
    }
}

/// `text.format`: `text`, `json_object`, or `json_schema` (`name`, `schema`).
pub(super) fn text_format(value: Option<&Value>) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Object(text) = value else {
        return Err(invalid("text", "`text` must be an object"));
    };
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Some(ResponseFormat::Text)),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let schema = match format.get("schema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                _ => {
                    return Err(invalid(
                        "text.format.schema",
                        "`text.format.schema` must be a JSON schema object",
                    ));
                }
            };
            Ok(Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: format
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    schema: Some(schema),
                },
            }))
        }
        _ => Err(invalid(
            "text.format.type",
            "`text.format.type` must be one of text, json_object, json_schema",
        )),
    }
}
