//! A message streamed as Anthropic's server-sent events (`stream: true`). Bedrock's
//! `InvokeModelWithResponseStream` carries Anthropic's own events, one per `chunk`; the
//! [`AnthropicDecoder`] reads them (the model named as the client named it, a `ping` after
//! `message_start`, Bedrock's invocation metrics taken out, text deltas handed to the relay as
//! text so the PII window and coalescing apply), and the [`AnthropicEncoder`] writes them back.
//! The relay (`pipeline::relay`) does the rest.

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::ResponseStream;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};

use super::{Planned, answered_tier, usage_of};
use crate::adapters::chat::converse::bedrock_tier;
use crate::catalog::TokenUsage;
use crate::clients::bedrock::BedrockFailure;
use crate::error::{ApiError, ErrorShape};
use crate::pipeline::relay::{Decoder, Encoder, Piece, Streaming};

/// The model's stream of Anthropic events.
pub type AnthropicEvents = EventReceiver<ResponseStream, ResponseStreamError>;

/// Opens an `InvokeModelWithResponseStream` for one planned model.
pub fn open(
    client: &aws_sdk_bedrockruntime::Client,
    planned: &Planned,
) -> impl std::future::Future<Output = Result<AnthropicEvents, BedrockFailure>> + Send + use<> {
    let call = client
        .invoke_model_with_response_stream()
        .model_id(&planned.model.bedrock_model_id)
        .content_type("application/json")
        .accept("application/json")
        .body(Blob::new(planned.body.to_vec()))
        .set_service_tier(planned.service_tier.map(bedrock_tier));
    async move {
        call.send()
            .await
            .map(|output| output.body)
            .map_err(|e| BedrockFailure::from_sdk(&e))
    }
}

/// The decoder and encoder of a message streamed for `alias` by `planned`, with `headers` of
/// its own.
pub fn streaming(
    alias: &str,
    planned: &Planned,
    headers: HeaderMap,
) -> Streaming<AnthropicDecoder, AnthropicEncoder> {
    Streaming {
        decoder: AnthropicDecoder {
            alias: alias.to_owned(),
            service_tier: answered_tier(planned.service_tier),
            usage: None,
            output: 0,
            finished: false,
        },
        encoder: AnthropicEncoder,
        headers,
    }
}

/// What a `content_block_delta`'s text is: its `delta.type` and the field that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    InputJson,
    Thinking,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Text, Kind::InputJson, Kind::Thinking];

    fn field(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::InputJson => "partial_json",
            Kind::Thinking => "thinking",
        }
    }

    fn delta_type(self) -> &'static str {
        match self {
            Kind::Text => "text_delta",
            Kind::InputJson => "input_json_delta",
            Kind::Thinking => "thinking_delta",
        }
    }
}

/// The text a `content_block_delta` carries, and its kind.
fn delta_text(event: &Value) -> Option<(Kind, &str)> {
    let delta = event.get("delta")?;
    Kind::ALL.into_iter().find_map(|kind| {
        delta
            .get(kind.field())
            .and_then(Value::as_str)
            .map(|t| (kind, t))
    })
}

/// Reads Anthropic events from Bedrock's chunks.
pub struct AnthropicDecoder {
    alias: String,
    /// The tier `message_start`'s usage names.
    service_tier: &'static str,
    /// `message_start`'s usage (or the invocation metrics), and `message_delta`'s output count.
    usage: Option<TokenUsage>,
    output: u64,
    finished: bool,
}

impl AnthropicDecoder {
    /// Notes what an event tells of the usage, and takes Bedrock's invocation metrics out of it.
    fn account(&mut self, event: &mut Value) {
        match event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "message_start" => {
                self.usage = Some(usage_of(event.get("message").and_then(|m| m.get("usage"))));
            }
            "message_delta" => {
                let output = usage_of(event.get("usage")).output;
                self.output = self.output.max(output);
            }
            "message_stop" => {
                if let Some(metrics) = event
                    .as_object_mut()
                    .and_then(|e| e.remove("amazon-bedrock-invocationMetrics"))
                    && self.usage.is_none()
                {
                    let count = |f: &str| metrics.get(f).and_then(Value::as_u64).unwrap_or(0);
                    self.usage = Some(TokenUsage {
                        input: count("inputTokenCount"),
                        output: count("outputTokenCount"),
                        ..TokenUsage::default()
                    });
                }
                self.finished = true;
            }
            _ => {}
        }
    }
}

impl Decoder for AnthropicDecoder {
    type Event = ResponseStream;
    type Kind = Kind;
    type Out = Value;

    fn decode(
        &mut self,
        received: ResponseStream,
        pieces: &mut Vec<Piece<Kind, Value>>,
    ) -> Result<(), ApiError> {
        let ResponseStream::Chunk(part) = received else {
            return Ok(());
        };
        let Some(bytes) = part.bytes() else {
            return Ok(());
        };
        let mut event = match serde_json::from_slice::<Value>(bytes.as_ref()) {
            Ok(event @ Value::Object(_)) => event,
            _ => {
                return Err(ApiError::Upstream(
                    "the model stream sent an event that is not JSON".into(),
                ));
            }
        };
        self.account(&mut event);
        let index = || event.get("index").and_then(Value::as_i64).unwrap_or(0);
        match event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "message_start" => {
                if let Some(message) = event.get_mut("message") {
                    message["model"] = json!(self.alias);
                    if let Some(usage) = message.get_mut("usage").and_then(Value::as_object_mut) {
                        usage.insert("service_tier".into(), json!(self.service_tier));
                    }
                }
                pieces.push(Piece::Event(event));
                pieces.push(Piece::Event(json!({"type": "ping"})));
            }
            "content_block_delta" => match delta_text(&event) {
                Some((kind, text)) => pieces.push(Piece::Text {
                    block: index(),
                    kind,
                    text: text.to_owned(),
                }),
                None => pieces.push(Piece::Event(event)),
            },
            "content_block_stop" => {
                pieces.push(Piece::BlockEnd(index()));
                pieces.push(Piece::Event(event));
            }
            _ => pieces.push(Piece::Event(event)),
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.finished
    }

    /// Bedrock's usage, with the output relayed as a floor; or the prompt estimate and the
    /// output relayed.
    fn usage(&self, relayed: u64, estimated_input: u64) -> TokenUsage {
        match self.usage {
            Some(usage) => TokenUsage {
                output: self.output.max(usage.output).max(relayed),
                ..usage
            },
            None => TokenUsage {
                input: estimated_input,
                output: relayed,
                ..TokenUsage::default()
            },
        }
    }
}

/// Writes Anthropic's events.
pub struct AnthropicEncoder;

fn sse(event: &Value) -> Bytes {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("error");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

impl Encoder<Kind, Value> for AnthropicEncoder {
    fn start(&mut self) -> Bytes {
        Bytes::new()
    }

    fn text(&mut self, block: i64, kind: Kind, text: String) -> Bytes {
        sse(&json!({
            "type": "content_block_delta",
            "index": block,
            "delta": { "type": kind.delta_type(), kind.field(): text },
        }))
    }

    fn event(&mut self, event: Value) -> Bytes {
        sse(&event)
    }

    /// Nothing: the model's own `message_stop` ended the stream.
    fn end(&mut self, _usage: &TokenUsage) -> Bytes {
        Bytes::new()
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        sse(&ErrorShape::Anthropic.body(error))
    }
}
