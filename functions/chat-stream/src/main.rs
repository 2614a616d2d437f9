//! Lambda function `chat-stream`, behind API Gateway's REST response streaming: the `chat`
//! function's routes, with each streamed completion relayed chunk by chunk as the model writes.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    chat::run(chat::Mode::Streaming).await
}
