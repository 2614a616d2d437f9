//! Chat completions on Bedrock Converse: OpenAI requests translated to Converse (validated
//! first: what cannot be served is refused by name), answers' stop reasons and usage translated
//! back, and the Converse and ConverseStream calls for one planned model.
//!
//! What is translated, ignored or refused is listed in docs/chat-completions.md.

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, AutoToolChoice, CachePointBlock, CachePointType, ContentBlock, ConversationRole,
    ImageBlock, ImageFormat, ImageSource, InferenceConfiguration, JsonSchemaDefinition, Message,
    OutputConfig, OutputFormat, OutputFormatStructure, OutputFormatType, SpecificToolChoice,
    StopReason, SystemContentBlock, Tool, ToolChoice, ToolConfiguration, ToolInputSchema,
    ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document, Number};
use base64::Engine;
use serde_json::{Map, Value};

use crate::clients::bedrock::{BedrockFailure, Candidate};
pub use answer::{finish_reason, from_document, openai_usage, to_document, token_usage};
use options::{max_tokens, sampling, stop_sequences, thinking_budget};
use tools::{history_tools, tool_choice, tool_spec, tool_specs};

mod answer;
mod options;
#[cfg(test)]
mod properties;
mod tools;
use crate::catalog::{CacheTtl, ModelEntry, ServiceTier, TokenUsage};
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
    /// Bedrock's native structured output, for `response_format: json_schema` on a model the
    /// catalog flags for it.
    pub output_config: Option<OutputConfig>,
    pub max_tokens: u32,
    /// A cache point asks for a 1-hour write.
    pub cache_1h: bool,
    /// The service tier the request names (the model offers it).
    pub service_tier: Option<ServiceTier>,
}

/// The service tier an OpenAI `service_tier` names: `auto` (or none) is Bedrock's default,
/// unnamed; `default`, `flex` and `priority` are Bedrock's tiers of those names.
pub fn service_tier(value: Option<&str>) -> Result<Option<ServiceTier>, ApiError> {
    match value {
        None | Some("auto") => Ok(None),
        Some("default") => Ok(Some(ServiceTier::Default)),
        Some("flex") => Ok(Some(ServiceTier::Flex)),
        Some("priority") => Ok(Some(ServiceTier::Priority)),
        Some(_) => Err(ApiError::invalid_param(
            "service_tier",
            "`service_tier` must be `auto`, `default`, `flex` or `priority`",
        )),
    }
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
    let tier = service_tier(request.service_tier.as_deref())?;
    if let Some(tier) = tier
        && model.prices_at(Some(tier)).is_none()
    {
        return Err(crate::catalog::no_tier(model, tier, "service_tier"));
    }
    let max_tokens = max_tokens(request, model, default_max_tokens)?;
    let thinking_budget = thinking_budget(request, model, max_tokens)?;

    let mut json_tool = false;
    let mut system = Vec::new();
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    let mut images = 0usize;
    let mut cache_1h = false;

    for (index, message) in request.messages.iter().enumerate() {
        match message {
            ChatMessage::System { content } | ChatMessage::Developer { content } => {
                system.extend(cached_text(
                    content,
                    index,
                    model,
                    &mut cache_1h,
                    SystemContentBlock::Text,
                    SystemContentBlock::CachePoint,
                )?);
            }
            ChatMessage::User { content } => {
                let blocks = user_blocks(content, index, model, &mut images, &mut cache_1h)?;
                push_turn(&mut turns, ConversationRole::User, blocks);
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = match content {
                    Some(content) => cached_text(
                        content,
                        index,
                        model,
                        &mut cache_1h,
                        ContentBlock::Text,
                        ContentBlock::CachePoint,
                    )?,
                    None => Vec::new(),
                };
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
        tool_specs(request, model.flags.structured_output)?
    };
    let mut choice = tool_choice(request, &tools)?;
    let mut output_config = None;
    match &request.response_format {
        // Natively, where the model has it: beside the caller's tools and thinking too.
        Some(ResponseFormat::JsonSchema { json_schema }) if model.flags.structured_output => {
            output_config = Some(native_schema(json_schema)?);
        }
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
                false,
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
        output_config,
        max_tokens,
        cache_1h,
        service_tier: tier,
    })
}

/// Converse's `outputConfig` for a `json_schema` response format: the schema as a JSON string,
/// with its name (`response` when the request gives none).
fn native_schema(json_schema: &crate::openai::JsonSchemaFormat) -> Result<OutputConfig, ApiError> {
    let schema = match &json_schema.schema {
        None => serde_json::json!({"type": "object"}),
        Some(schema @ Value::Object(_)) => schema.clone(),
        // Refused here, before admission, not by Bedrock after it.
        Some(_) => {
            return Err(ApiError::invalid_param(
                "response_format",
                "`json_schema.schema` must be a JSON schema object",
            ));
        }
    };
    let definition = JsonSchemaDefinition::builder()
        .schema(schema.to_string())
        .name(
            json_schema
                .name
                .clone()
                .unwrap_or_else(|| "response".to_owned()),
        )
        .build()
        .map_err(build_error)?;
    let format = OutputFormat::builder()
        .r#type(OutputFormatType::JsonSchema)
        .structure(OutputFormatStructure::JsonSchema(definition))
        .build()
        .map_err(build_error)?;
    Ok(OutputConfig::builder().text_format(format).build())
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

/// A cache point written for `ttl`: an hour only on a model the catalog prices 1-hour writes
/// for (elsewhere the request does not fit the model), five minutes (Bedrock's default, so no
/// `ttl` is sent) otherwise. Notes a 1-hour write in `cache_1h`.
fn cache_point(
    model: &ModelEntry,
    ttl: CacheTtl,
    cache_1h: &mut bool,
) -> Result<CachePointBlock, ApiError> {
    let block = CachePointBlock::builder().r#type(CachePointType::Default);
    let block = match ttl {
        CacheTtl::FiveMinutes => block,
        CacheTtl::OneHour if model.prices.offers_cache_1h() => {
            *cache_1h = true;
            block.ttl(aws_sdk_bedrockruntime::types::CacheTtl::OneHour)
        }
        CacheTtl::OneHour => return Err(crate::catalog::no_cache_1h(model, "messages")),
    };
    block.build().map_err(build_error)
}

/// The text of a message that may only hold text, with each part's cache point.
fn text_parts(
    content: &Content,
    index: usize,
) -> Result<Vec<(String, Option<CacheTtl>)>, ApiError> {
    match content {
        Content::Text(text) => Ok(vec![(text.clone(), None)]),
        Content::Parts(parts) => parts
            .iter()
            .map(|part| match part {
                ContentPart::Text { text, .. } => Ok((text.clone(), part.cache_point())),
                ContentPart::ImageUrl { .. } => Err(ApiError::invalid_param(
                    "messages",
                    format!("messages[{index}]: images are only accepted in user messages"),
                )),
            })
            .collect(),
    }
}

/// A text-only message's blocks, in order: each non-empty text, then its cache point where the
/// model caches; `text` and `point` make the blocks of the message's place (system or turn).
fn cached_text<B>(
    content: &Content,
    index: usize,
    model: &ModelEntry,
    cache_1h: &mut bool,
    text: impl Fn(String) -> B,
    point: impl Fn(CachePointBlock) -> B,
) -> Result<Vec<B>, ApiError> {
    let mut blocks = Vec::new();
    for (part, cache) in text_parts(content, index)? {
        if !part.trim().is_empty() {
            blocks.push(text(part));
        }
        if let Some(ttl) = cache.filter(|_| model.flags.prompt_caching) {
            blocks.push(point(cache_point(model, ttl, cache_1h)?));
        }
    }
    Ok(blocks)
}

fn user_blocks(
    content: &Content,
    index: usize,
    model: &ModelEntry,
    images: &mut usize,
    cache_1h: &mut bool,
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
        if let Some(ttl) = part.cache_point().filter(|_| model.flags.prompt_caching) {
            blocks.push(ContentBlock::CachePoint(cache_point(model, ttl, cache_1h)?));
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

    fn cache_1h(&self) -> bool {
        self.converse.cache_1h
    }

    fn service_tier(&self) -> Option<ServiceTier> {
        self.converse.service_tier
    }
}

/// Bedrock's `serviceTier` for a tier.
pub fn bedrock_tier(tier: ServiceTier) -> aws_sdk_bedrockruntime::types::ServiceTierType {
    aws_sdk_bedrockruntime::types::ServiceTierType::from(tier.as_str())
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

/// A Converse or ConverseStream builder with `planned`'s request set on it (the two operations'
/// builders are distinct types with the same setters).
macro_rules! with_request {
    ($builder:expr, $planned:expr) => {{
        let c = $planned.converse.clone();
        $builder
            .model_id(&$planned.model.bedrock_model_id)
            .set_system((!c.system.is_empty()).then_some(c.system))
            .set_messages(Some(c.messages))
            .inference_config(c.inference)
            .set_tool_config(c.tool_config)
            .set_additional_model_request_fields(c.additional_fields)
            .set_output_config(c.output_config)
            .set_service_tier(c.service_tier.and_then(|tier| {
                aws_sdk_bedrockruntime::types::ServiceTier::builder()
                    .r#type($crate::adapters::chat::converse::bedrock_tier(tier))
                    .build()
                    .ok()
            }))
    }};
}

/// A Converse call for one planned model.
pub fn converse_call(
    client: &aws_sdk_bedrockruntime::Client,
    planned: &Planned,
) -> aws_sdk_bedrockruntime::operation::converse::builders::ConverseFluentBuilder {
    with_request!(client.converse(), planned)
}

/// A ConverseStream call for one planned model.
pub fn converse_stream_call(
    client: &aws_sdk_bedrockruntime::Client,
    planned: &Planned,
) -> aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamFluentBuilder {
    with_request!(client.converse_stream(), planned)
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
