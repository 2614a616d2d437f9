//! Lambda function `chat`, behind the ALB: OpenAI-compatible chat completions and models
//! (`/v1/*`, `/chat/*`, `/models`). A streamed completion is one complete event-stream body.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    chat::run(chat::Mode::Buffered).await
}
