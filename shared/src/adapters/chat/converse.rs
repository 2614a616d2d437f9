//! Chat completions on Bedrock Converse: OpenAI requests translated to Converse (validated
//! first: what cannot be served is refused by name), answers' stop reasons and usage translated
//! back, and the Converse and ConverseStream calls for one planned model.
//!
//! What is translated, ignored or refused is listed in docs/chat-completions.md.

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, AutoToolChoice, CachePointBlock, CachePointType, ContentBlock, ConversationRole,
    ImageBlock, ImageFormat, ImageSource, InferenceConfiguration, Message, SpecificToolChoice,
    StopReason, SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema,
    ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document, Number};
use base64::Engine;
use serde_json::{Map, Value};

use crate::bedrock::{BedrockFailure, Candidate};
use crate::catalog::{ModelEntry, TokenUsage};
use crate::error::ApiError;
use crate::openai::{
    ChatCompletionRequest, ChatMessage, Content, ContentPart, ReasoningEffort, ResponseFormat,
    Stop, ToolChoice as OpenAiToolChoice, Usage,
};

/// The name of the tool that carries a `json_schema` answer.
pub const JSON_TOOL: &str = "json_response";

const MAX_IMAGES: usize = 20;
const MAX_IMAGE_BYTES: usize = 3_750_000;
const MAX_STOP_SEQUENCES: usize = 4;
/// Claude's smallest thinking budget.
const MIN_THINKING_BUDGET: u32 = 1024;

/// Fields we refuse by name, because silently ignoring them would give a wrong answer.
const REFUSED_FIELDS: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "audio",
    "functions",
    "function_call",
    "prediction",
    "web_search_options",
];

/// A Converse request, ready to send to one model.
#[derive(Debug, Clone)]
pub struct ConverseRequest {
    pub system: Vec<SystemContentBlock>,
    pub messages: Vec<Message>,
    pub inference: InferenceConfiguration,
    pub tool_config: Option<ToolConfiguration>,
    pub additional_fields: Option<Document>,
    /// Set when `response_format: json_schema` is served through a forced tool call.
    pub json_tool: bool,
    pub max_tokens: u32,
}

fn build_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("building the Bedrock request: {e}"))
}

/// Checks what does not depend on the model: `n`, refused fields, messages present.
pub fn validate(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must not be empty",
        ));
    }
    match request.n {
        Some(0) => return Err(ApiError::invalid_param("n", "`n` must be at least 1")),
        Some(n) if n > 1 => {
            return Err(ApiError::invalid_param(
                "n",
                "`n` greater than 1 is not supported: Bedrock returns one choice per request",
            ));
        }
        _ => {}
    }
    for field in REFUSED_FIELDS {
        match request.other.get(*field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => {
                return Err(ApiError::invalid_param(
                    field,
                    format!("`{field}` is not supported by llmlite"),
                ));
            }
        }
    }
    if let Some(modalities) = request.other.get("modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|v| v == "text"));
        if !text_only && !modalities.is_null() {
            return Err(ApiError::invalid_param(
                "modalities",
                "only the `text` modality is supported",
            ));
        }
    }
    Ok(())
}

/// Translates `request` for `model`.
/// Translates `request` for `model`; `default_max_tokens` is the output limit of a request that
/// sets none (capped by the model's maximum).
pub fn translate(
    request: &ChatCompletionRequest,
    model: &ModelEntry,
    default_max_tokens: u32,
) -> Result<ConverseRequest, ApiError> {
    validate(request)?;
    let max_tokens = max_tokens(request, model, default_max_tokens)?;
    let thinking_budget = thinking_budget(request, model, max_tokens)?;

    let mut json_tool = false;
    let mut system = Vec::new();
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    let mut images = 0usize;
    let caching = model.flags.prompt_caching;

    for (index, message) in request.messages.iter().enumerate() {
        match message {
            ChatMessage::System { content } | ChatMessage::Developer { content } => {
                for (text, cache) in text_parts(content, index)? {
                    if !text.trim().is_empty() {
                        system.push(SystemContentBlock::Text(text));
                    }
                    if cache && caching {
                        system.push(SystemContentBlock::CachePoint(cache_point()?));
                    }
                }
            }
            ChatMessage::User { content } => {
                let blocks = user_blocks(content, index, model, &mut images)?;
                push_turn(&mut turns, ConversationRole::User, blocks);
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::new();
                if let Some(content) = content {
                    for (text, cache) in text_parts(content, index)? {
                        if !text.trim().is_empty() {
                            blocks.push(ContentBlock::Text(text));
                        }
                        if cache && caching {
                            blocks.push(ContentBlock::CachePoint(cache_point()?));
                        }
                    }
                }
                for call in tool_calls.iter().flatten() {
                    let arguments = if call.function.arguments.trim().is_empty() {
                        Value::Object(Map::new())
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            ApiError::invalid_param(
                                "messages",
                                format!(
                                    "messages[{index}]: tool call `{}` has arguments that are not JSON: {e}",
                                    call.id
                                ),
                            )
                        })?
                    };
                    blocks.push(ContentBlock::ToolUse(
                        ToolUseBlock::builder()
                            .tool_use_id(&call.id)
                            .name(&call.function.name)
                            .input(to_document(&arguments))
                            .build()
                            .map_err(build_error)?,
                    ));
                }
                push_turn(&mut turns, ConversationRole::Assistant, blocks);
            }
            ChatMessage::Tool {
                content,
                tool_call_id,
            } => {
                let text = text_parts(content, index)?
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect::<Vec<_>>()
                    .join("\n");
                let text = if text.trim().is_empty() {
                    "(no output)".to_owned()
                } else {
                    text
                };
                let block = ToolResultBlock::builder()
                    .tool_use_id(tool_call_id)
                    .content(ToolResultContentBlock::Text(text))
                    .build()
                    .map_err(build_error)?;
                push_turn(
                    &mut turns,
                    ConversationRole::User,
                    vec![ContentBlock::ToolResult(block)],
                );
            }
        }
    }

    match turns.first() {
        None => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` needs at least one user message besides system messages",
            ));
        }
        Some((ConversationRole::User, _)) => {}
        Some(_) => {
            return Err(ApiError::invalid_param(
                "messages",
                "the first message after the system messages must come from the user",
            ));
        }
    }
    if let Some(empty) = turns.iter().position(|(_, blocks)| blocks.is_empty()) {
        return Err(ApiError::invalid_param(
            "messages",
            format!("conversation turn {empty} has no content"),
        ));
    }
    let history_has_tools = turns.iter().any(|(_, blocks)| {
        blocks
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse(_) | ContentBlock::ToolResult(_)))
    });

    // response_format: a schema is served by forcing a tool whose input is the answer (Claude
    // follows an input schema far more reliably than an instruction); a plain JSON object, or a
    // schema next to the caller's own tools or thinking, by an instruction.
    // `tool_choice: none` drops the tools, unless the conversation already holds tool calls:
    // Converse has no "none" and needs the tools declared then, so they stay, on auto.
    let none = matches!(&request.tool_choice, Some(OpenAiToolChoice::Mode(m)) if m == "none");
    let mut tools = if none && !history_has_tools {
        Vec::new()
    } else {
        tool_specs(request)?
    };
    let mut choice = tool_choice(request, &tools)?;
    match &request.response_format {
        Some(ResponseFormat::JsonSchema { json_schema })
            if tools.is_empty() && thinking_budget.is_none() =>
        {
            let schema = json_schema
                .schema
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            tools.push(tool_spec(
                JSON_TOOL,
                Some("Respond with your answer as this tool's input."),
                &schema,
            )?);
            choice = Some(ToolChoice::Tool(
                SpecificToolChoice::builder()
                    .name(JSON_TOOL)
                    .build()
                    .map_err(build_error)?,
            ));
            json_tool = true;
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema.schema.clone().unwrap_or(Value::Null);
            system.push(SystemContentBlock::Text(format!(
                "Respond only with a JSON value that conforms to this JSON schema, with no other text: {schema}"
            )));
        }
        Some(ResponseFormat::JsonObject) => system.push(SystemContentBlock::Text(
            "Respond only with a single valid JSON object, with no other text.".to_owned(),
        )),
        Some(ResponseFormat::Text) | None => {}
    }
    if thinking_budget.is_some() && matches!(choice, Some(ToolChoice::Any(_) | ToolChoice::Tool(_)))
    {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "`reasoning_effort` cannot be combined with a forced tool choice",
        ));
    }
    // Converse refuses toolUse and toolResult blocks without a toolConfig, even on a follow-up
    // turn that offers no tools: the tools the conversation used are declared then (open schema,
    // on auto) so that the history can be sent at all.
    if tools.is_empty() && history_has_tools {
        tools = history_tools(&turns)?;
    }
    let tool_config = if tools.is_empty() {
        None
    } else {
        Some(
            ToolConfiguration::builder()
                .set_tools(Some(tools.into_iter().map(Tool::ToolSpec).collect()))
                .set_tool_choice(choice)
                .build()
                .map_err(build_error)?,
        )
    };

    let messages = turns
        .into_iter()
        .map(|(role, content)| {
            Message::builder()
                .role(role)
                .set_content(Some(content))
                .build()
                .map_err(build_error)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let (temperature, top_p) = sampling(request, model, thinking_budget.is_some())?;
    let inference = InferenceConfiguration::builder()
        .max_tokens(i32::try_from(max_tokens).unwrap_or(i32::MAX))
        .set_temperature(temperature)
        .set_top_p(top_p)
        .set_stop_sequences(stop_sequences(request)?)
        .build();

    let additional_fields = thinking_budget.map(|budget| {
        to_document(&serde_json::json!({
            "thinking": { "type": "enabled", "budget_tokens": budget }
        }))
    });

    Ok(ConverseRequest {
        system,
        messages,
        inference,
        tool_config,
        additional_fields,
        json_tool,
        max_tokens,
    })
}

/// Bedrock wants strictly alternating roles: a turn of the same role as the last one joins it.
fn push_turn(
    turns: &mut Vec<(ConversationRole, Vec<ContentBlock>)>,
    role: ConversationRole,
    blocks: Vec<ContentBlock>,
) {
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

fn cache_point() -> Result<CachePointBlock, ApiError> {
    CachePointBlock::builder()
        .r#type(CachePointType::Default)
        .build()
        .map_err(build_error)
}

/// The text of a message that may only hold text, with each part's cache flag.
fn text_parts(content: &Content, index: usize) -> Result<Vec<(String, bool)>, ApiError> {
    match content {
        Content::Text(text) => Ok(vec![(text.clone(), false)]),
        Content::Parts(parts) => parts
            .iter()
            .map(|part| match part {
                ContentPart::Text { text, .. } => Ok((text.clone(), part.cache_control())),
                ContentPart::ImageUrl { .. } => Err(ApiError::invalid_param(
                    "messages",
                    format!("messages[{index}]: images are only accepted in user messages"),
                )),
            })
            .collect(),
    }
}

fn user_blocks(
    content: &Content,
    index: usize,
    model: &ModelEntry,
    images: &mut usize,
) -> Result<Vec<ContentBlock>, ApiError> {
    let parts = match content {
        Content::Text(text) if text.trim().is_empty() => return Ok(Vec::new()),
        Content::Text(text) => return Ok(vec![ContentBlock::Text(text.clone())]),
        Content::Parts(parts) => parts,
    };
    let mut blocks = Vec::new();
    for part in parts {
        match part {
            ContentPart::Text { text, .. } => {
                if !text.trim().is_empty() {
                    blocks.push(ContentBlock::Text(text.clone()));
                }
            }
            ContentPart::ImageUrl { image_url, .. } => {
                if !model.flags.images {
                    return Err(ApiError::invalid_param(
                        "messages",
                        format!("model `{}` does not accept images", model.alias),
                    ));
                }
                *images += 1;
                if *images > MAX_IMAGES {
                    return Err(ApiError::invalid_param(
                        "messages",
                        format!("at most {MAX_IMAGES} images per request"),
                    ));
                }
                blocks.push(ContentBlock::Image(image_block(&image_url.url, index)?));
            }
        }
        if part.cache_control() && model.flags.prompt_caching {
            blocks.push(ContentBlock::CachePoint(cache_point()?));
        }
    }
    Ok(blocks)
}

/// A `data:image/...;base64,` URL as an image block. Remote URLs are refused: the functions
/// have no internet access, and fetching for clients would make the gateway an open proxy.
fn image_block(url: &str, index: usize) -> Result<ImageBlock, ApiError> {
    let invalid =
        |msg: String| ApiError::invalid_param("messages", format!("messages[{index}]: {msg}"));
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(invalid(
            "remote image URLs are not supported; send the image inline as a `data:image/png;base64,...` URL".into(),
        ));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| invalid("the image data URL has no `,`".into()))?;
    let mime = meta
        .strip_suffix(";base64")
        .ok_or_else(|| invalid("the image data URL must be base64-encoded".into()))?;
    let format = match mime.to_ascii_lowercase().as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" | "image/jpg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::Webp,
        other => {
            return Err(invalid(format!(
                "image type `{other}` is not supported (png, jpeg, gif, webp)"
            )));
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| invalid(format!("the image is not valid base64: {e}")))?;
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(invalid(format!(
            "an image is {} bytes; the limit is {MAX_IMAGE_BYTES}",
            bytes.len()
        )));
    }
    ImageBlock::builder()
        .format(format)
        .source(ImageSource::Bytes(Blob::new(bytes)))
        .build()
        .map_err(build_error)
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn tool_spec(
    name: &str,
    description: Option<&str>,
    parameters: &Value,
) -> Result<ToolSpecification, ApiError> {
    ToolSpecification::builder()
        .name(name)
        .set_description(description.filter(|d| !d.is_empty()).map(str::to_owned))
        .input_schema(ToolInputSchema::Json(to_document(parameters)))
        .build()
        .map_err(build_error)
}

/// The tools a conversation called, declared with an open schema.
fn history_tools(
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
            )
        })
        .collect()
}

fn tool_specs(request: &ChatCompletionRequest) -> Result<Vec<ToolSpecification>, ApiError> {
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
            tool_spec(&f.name, f.description.as_deref(), &parameters)
        })
        .collect()
}

fn tool_choice(
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

fn max_tokens(
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
fn wanted_thinking(request: &ChatCompletionRequest, model: &ModelEntry) -> Option<u32> {
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
fn thinking_budget(
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

fn sampling(
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

fn stop_sequences(request: &ChatCompletionRequest) -> Result<Option<Vec<String>>, ApiError> {
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

/// OpenAI's `finish_reason` for a Converse stop reason.
pub fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ModelContextWindowExceeded => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFiltered | StopReason::GuardrailIntervened => "content_filter",
        other => {
            tracing::warn!(stop_reason = %other.as_str(), "unmapped Bedrock stop reason, reported as stop");
            "stop"
        }
    }
}

/// Bedrock's token counts.
pub fn token_usage(usage: Option<&aws_sdk_bedrockruntime::types::TokenUsage>) -> TokenUsage {
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    usage.map_or_else(TokenUsage::default, |u| TokenUsage {
        input: count(u.input_tokens()),
        output: count(u.output_tokens()),
        cache_read: count(u.cache_read_input_tokens().unwrap_or(0)),
        cache_write: count(u.cache_write_input_tokens().unwrap_or(0)),
    })
}

/// OpenAI's usage: `prompt_tokens` counts cache reads and writes, which Bedrock's input omits.
pub fn openai_usage(usage: &TokenUsage) -> Usage {
    let prompt = usage.input + usage.cache_read + usage.cache_write;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: usage.output,
        total_tokens: prompt + usage.output,
        prompt_tokens_details: crate::openai::PromptTokensDetails {
            cached_tokens: usage.cache_read,
        },
        cache_read_input_tokens: usage.cache_read,
        cache_creation_input_tokens: usage.cache_write,
    }
}

pub fn to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(to_document).collect()),
        Value::Object(map) => Document::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_document(v)))
                .collect(),
        ),
    }
}

pub fn from_document(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(from_document).collect()),
        Document::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_document(v)))
                .collect(),
        ),
    }
}

/// One model of a request's chain, with the request translated for it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub model: std::sync::Arc<ModelEntry>,
    pub converse: ConverseRequest,
}

impl Candidate for Planned {
    fn model(&self) -> &std::sync::Arc<ModelEntry> {
        &self.model
    }

    fn max_tokens(&self) -> u32 {
        self.converse.max_tokens
    }
}

/// Translates `request` once for each model of `chain`. The first model is the one the client
/// named, and the request must fit it; a fallback it does not fit (a smaller output limit, say)
/// is left out.
pub fn plan(
    request: &ChatCompletionRequest,
    chain: &[std::sync::Arc<ModelEntry>],
    default_max_tokens: u32,
) -> Result<Vec<Planned>, ApiError> {
    let mut planned = Vec::with_capacity(chain.len());
    for (position, model) in chain.iter().enumerate() {
        match translate(request, model, default_max_tokens) {
            Ok(converse) => planned.push(Planned {
                model: std::sync::Arc::clone(model),
                converse,
            }),
            Err(e) if position == 0 => return Err(e),
            Err(_) => {}
        }
    }
    Ok(planned)
}

/// A Converse call for one planned model.
pub fn converse_call(
    client: &aws_sdk_bedrockruntime::Client,
    planned: &Planned,
) -> aws_sdk_bedrockruntime::operation::converse::builders::ConverseFluentBuilder {
    let c = planned.converse.clone();
    client
        .converse()
        .model_id(&planned.model.bedrock_model_id)
        .set_system((!c.system.is_empty()).then_some(c.system))
        .set_messages(Some(c.messages))
        .inference_config(c.inference)
        .set_tool_config(c.tool_config)
        .set_additional_model_request_fields(c.additional_fields)
}

/// A ConverseStream call for one planned model.
pub fn converse_stream_call(
    client: &aws_sdk_bedrockruntime::Client,
    planned: &Planned,
) -> aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamFluentBuilder {
    let c = planned.converse.clone();
    client
        .converse_stream()
        .model_id(&planned.model.bedrock_model_id)
        .set_system((!c.system.is_empty()).then_some(c.system))
        .set_messages(Some(c.messages))
        .inference_config(c.inference)
        .set_tool_config(c.tool_config)
        .set_additional_model_request_fields(c.additional_fields)
}

/// The model's ConverseStream events.
pub type ConverseEvents = aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<
    aws_sdk_bedrockruntime::types::ConverseStreamOutput,
    aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError,
>;

/// Opens a ConverseStream for one planned model: its events, once the first has come.
pub fn open_stream(
    client: &aws_sdk_bedrockruntime::Client,
    planned: &Planned,
) -> impl std::future::Future<Output = Result<ConverseEvents, BedrockFailure>> + Send + use<> {
    let call = converse_stream_call(client, planned);
    async move {
        call.send()
            .await
            .map(|output| output.stream)
            .map_err(|e| BedrockFailure::from_sdk(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(finish_reason(&StopReason::EndTurn), "stop");
        assert_eq!(finish_reason(&StopReason::StopSequence), "stop");
        assert_eq!(finish_reason(&StopReason::MaxTokens), "length");
        assert_eq!(finish_reason(&StopReason::ToolUse), "tool_calls");
        assert_eq!(
            finish_reason(&StopReason::ContentFiltered),
            "content_filter"
        );
        assert_eq!(
            finish_reason(&StopReason::GuardrailIntervened),
            "content_filter"
        );
        assert_eq!(finish_reason(&StopReason::from("something_new")), "stop");
    }

    #[test]
    fn prompt_tokens_include_the_cache() {
        let usage = openai_usage(&TokenUsage {
            input: 10,
            output: 5,
            cache_read: 100,
            cache_write: 20,
        });
        assert_eq!(usage.prompt_tokens, 130);
        assert_eq!(usage.total_tokens, 135);
        assert_eq!(usage.prompt_tokens_details.cached_tokens, 100);
    }

    #[test]
    fn documents_round_trip() {
        let value = serde_json::json!({"a": [1, -2, 2.5, "x", null, true], "b": {}});
        assert_eq!(from_document(&to_document(&value)), value);
    }
}

/// Arbitrary bodies through the translator: it never panics, and every refusal is a 4xx in
/// the OpenAI shape.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::catalog::ModelCatalog;
    use proptest::prelude::*;
    use serde_json::json;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-3.0f64..3.0).prop_map(Value::from),
            "[a-z_ ]{0,12}".prop_map(Value::from),
            Just(json!("data:image/png;base64,iVBORw0KGgo=")),
            Just(json!("https://example.com/x.png")),
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn part() -> impl Strategy<Value = Value> {
        prop_oneof![
            any_json().prop_map(|t| json!({"type": "text", "text": t})),
            "[a-z ]{0,10}".prop_map(
                |t| json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})
            ),
            scalar().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
            any_json(),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        let role = prop_oneof![
            Just("system"),
            Just("developer"),
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("function")
        ];
        let content = prop_oneof![
            "[a-z ]{0,20}".prop_map(Value::from),
            prop::collection::vec(part(), 0..4).prop_map(Value::from),
            any_json(),
        ];
        let tool_calls = prop_oneof![
            Just(Value::Null),
            ("[a-z_]{1,8}", any_json()).prop_map(|(name, args)| json!([{
                "id": "call_1", "type": "function",
                "function": {"name": name, "arguments": args.to_string()}
            }])),
            any_json(),
        ];
        (role, content, tool_calls, any_json()).prop_map(|(role, content, calls, id)| {
            json!({"role": role, "content": content, "tool_calls": calls, "tool_call_id": id})
        })
    }

    fn request() -> impl Strategy<Value = Value> {
        let model = prop_oneof![
            Just("claude-sonnet-4-5"),
            Just("claude-3-5-sonnet"),
            Just("claude-sonnet-4")
        ];
        let extras = prop::collection::btree_map(
            prop_oneof![
                Just("max_tokens"),
                Just("max_completion_tokens"),
                Just("temperature"),
                Just("top_p"),
                Just("stop"),
                Just("tools"),
                Just("tool_choice"),
                Just("response_format"),
                Just("reasoning_effort"),
                Just("n"),
                Just("logprobs"),
                Just("modalities"),
                Just("stream"),
            ],
            any_json(),
            0..6,
        );
        (model, prop::collection::vec(message(), 0..6), extras).prop_map(
            |(model, messages, extras)| {
                let mut body = json!({"model": model, "messages": messages});
                for (k, v) in extras {
                    body[k] = v;
                }
                body
            },
        )
    }

    fn check(body: Value) -> Result<(), TestCaseError> {
        let catalog = ModelCatalog::builtin().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed: ChatCompletionRequest = match serde_json::from_value(body) {
            Ok(parsed) => parsed,
            // The extractor turns this into a 400 `invalid_request_error`.
            Err(_) => return Ok(()),
        };
        let Some(model) = catalog.get(&parsed.model) else {
            return Ok(());
        };
        if let Err(error) = translate(&parsed, model, 4096) {
            prop_assert!(error.status().is_client_error(), "{error:?}");
            let body = serde_json::to_value(error.body())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(body["error"]["message"].is_string());
            prop_assert!(body["error"]["type"].is_string());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn request_shaped_bodies_never_panic(body in request()) {
            check(body)?;
        }

        #[test]
        fn arbitrary_json_never_panics(body in any_json()) {
            check(body)?;
        }
    }
}
