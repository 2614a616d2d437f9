//! The APIs the `chat` function speaks, each an adapter of the request pipeline
//! (`crate::pipeline`): it reads its request into the pipeline's plan, translates to and from
//! Bedrock, and writes its own answers and errors.
//!
//! - [`chat`]: OpenAI's chat completions, on Converse;
//! - [`anthropic`]: Anthropic's Messages API, on InvokeModel;
//! - [`responses`]: OpenAI's Responses API, on the chat adapter's Converse translation;
//! - [`embeddings`]: OpenAI's embeddings, on Titan and Cohere through InvokeModel;
//! - [`models`]: the model list (no model call, so not on the pipeline).

pub mod anthropic;
pub mod chat;
pub mod embeddings;
pub mod models;
pub mod responses;
