//! `input`: a string, or items (messages, function calls and their outputs) read into chat
//! messages, each refusal naming the item.

#[allow(
    clippy::wildcard_imports,
    reason = "the request reader's helpers and types"
)]
use super::*;

/// `input`: a string (one user message) or a list of items.
pub(super) fn input(
    value: Option<&Value>,
    messages: &mut Vec<ChatMessage>,
    origins: &mut Vec<String>,
) -> Result<(), ApiError> {
    let items = match value {
        None | Some(Value::Null) => {
            return Err(invalid(
                "input",
                "`input` is required: a string or a list of items",
            ));
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(invalid("input", "`input` must not be empty"));
        }
        Some(s @ Value::String(_)) => {
            messages.push(ChatMessage::User {
                content: Content::Text(text(s, "input")?),
            });
            origins.push("input".to_owned());
            return Ok(());
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("input", "`input` must not be empty"));
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(invalid(
                "input",
                "`input` must be a string or a list of items",
            ));
        }
    };
    for (index, item) in items.iter().enumerate() {
        let at = format!("input[{index}]");
        let Value::Object(item) = item else {
            return Err(invalid(&at, format!("`{at}` must be an object")));
        };
        let kind = match item.get("type") {
            None | Some(Value::Null) => "message",
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("`{at}.type` must be a string"),
                ));
            }
        };
        let message = match kind {
            "message" => message(item, &at)?,
            "function_call" => {
                let name = text(
                    item.get("name").unwrap_or(&Value::Null),
                    &format!("{at}.name"),
                )?;
                let arguments = match item.get("arguments") {
                    None | Some(Value::Null) => String::new(),
                    Some(arguments) => text(arguments, &format!("{at}.arguments"))?,
                };
                if !arguments.trim().is_empty()
                    && serde_json::from_str::<Value>(&arguments).is_err()
                {
                    return Err(invalid(
                        &format!("{at}.arguments"),
                        format!("`{at}.arguments` must be JSON text"),
                    ));
                }
                if !valid_name(&name) {
                    return Err(invalid(
                        &format!("{at}.name"),
                        format!("`{at}.name` must be 1-64 letters, digits, `_` or `-`"),
                    ));
                }
                ChatMessage::Assistant {
                    content: None,
                    tool_calls: Some(vec![ToolCall {
                        id: call_id(item, &at)?,
                        kind: "function".to_owned(),
                        function: FunctionCall { name, arguments },
                    }]),
                }
            }
            "function_call_output" => {
                let param = format!("{at}.output");
                let content = match item.get("output") {
                    Some(s @ Value::String(_)) => Content::Text(text(s, &param)?),
                    Some(Value::Array(parts)) => Content::Parts(text_parts(parts, &param)?),
                    _ => {
                        return Err(invalid(
                            &param,
                            format!("`{param}` must be a string or a list of text parts"),
                        ));
                    }
                };
                ChatMessage::Tool {
                    content,
                    tool_call_id: call_id(item, &at)?,
                }
            }
            // A reasoning item of an earlier answer: Bedrock cannot be given it back without its
            // signature, so it is left out, as chat completions leave out `reasoning_content`.
            "reasoning" => continue,
            "item_reference" => {
                return Err(invalid(
                    &at,
                    format!(
                        "`{at}` is an item reference: llmlite keeps no items; send the item itself"
                    ),
                ));
            }
            other => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!(
                        "input items of type `{other}` are not supported: llmlite serves \
                         messages, `function_call` and `function_call_output` items"
                    ),
                ));
            }
        };
        messages.push(message);
        origins.push(at);
    }
    Ok(())
}

/// A message item: `role` and `content` (a string or parts).
pub(super) fn message(item: &Map<String, Value>, at: &str) -> Result<ChatMessage, ApiError> {
    let param = format!("{at}.content");
    let content = match item.get("content") {
        Some(s @ Value::String(_)) => Content::Text(text(s, &param)?),
        Some(Value::Array(parts)) => Content::Parts(content_parts(parts, &param)?),
        _ => {
            return Err(invalid(
                &param,
                format!("`{param}` must be a string or a list of content parts"),
            ));
        }
    };
    Ok(match item.get("role").and_then(Value::as_str) {
        Some("user") => ChatMessage::User { content },
        Some("assistant") => ChatMessage::Assistant {
            content: Some(content),
            tool_calls: None,
        },
        Some("system") => ChatMessage::System { content },
        Some("developer") => ChatMessage::Developer { content },
        _ => {
            return Err(invalid(
                &format!("{at}.role"),
                format!("`{at}.role` must be one of user, assistant, system, developer"),
            ));
        }
    })
}

pub(super) fn content_parts(parts: &[Value], param: &str) -> Result<Vec<ContentPart>, ApiError> {
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| {
            let at = format!("{param}[{index}]");
            match part.get("type").and_then(Value::as_str) {
                Some("input_text" | "output_text" | "text") => Ok(ContentPart::Text {
                    text: text(
                        part.get("text").unwrap_or(&Value::Null),
                        &format!("{at}.text"),
                    )?,
                    cache_control: None,
                }),
                Some("refusal") => Ok(ContentPart::Text {
                    text: text(
                        part.get("refusal").unwrap_or(&Value::Null),
                        &format!("{at}.refusal"),
                    )?,
                    cache_control: None,
                }),
                Some("input_image") => match part.get("image_url") {
                    Some(Value::String(url)) => Ok(ContentPart::ImageUrl {
                        image_url: ImageUrl { url: url.clone() },
                        cache_control: None,
                    }),
                    _ => Err(invalid(
                        &format!("{at}.image_url"),
                        "images must be sent inline as `image_url: \"data:image/png;base64,...\"` \
                         (llmlite keeps no files)",
                    )),
                },
                Some(other) => Err(invalid(
                    &format!("{at}.type"),
                    format!(
                        "content parts of type `{other}` are not supported (input_text, \
                         output_text, input_image)"
                    ),
                )),
                None => Err(invalid(
                    &format!("{at}.type"),
                    format!("`{at}.type` is required"),
                )),
            }
        })
        .collect()
}

/// Parts that may only hold text (a function call's output).
pub(super) fn text_parts(parts: &[Value], param: &str) -> Result<Vec<ContentPart>, ApiError> {
    let parts = content_parts(parts, param)?;
    if parts
        .iter()
        .any(|p| matches!(p, ContentPart::ImageUrl { .. }))
    {
        return Err(invalid(
            param,
            format!("`{param}` may only hold text parts"),
        ));
    }
    Ok(parts)
}

/// Letters, digits, `_` and `-`, 1-64 of them: what Bedrock takes as a tool's name.
pub(super) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `call_id`, which Bedrock takes as a tool use's ID.
pub(super) fn call_id(item: &Map<String, Value>, at: &str) -> Result<String, ApiError> {
    let param = format!("{at}.call_id");
    let id = text(item.get("call_id").unwrap_or(&Value::Null), &param)?;
    if !valid_name(&id) {
        return Err(invalid(
            &param,
            format!("`{param}` must be 1-64 letters, digits, `_` or `-`"),
        ));
    }
    Ok(id)
}
