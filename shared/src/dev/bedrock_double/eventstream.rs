//! The `application/vnd.amazon.eventstream` framing of both streaming operations: frames with
//! valid CRCs, paced by the behaviour's gaps, broken where it asks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Behaviour, DoubleState};

/// behaviour asks for, which becomes a `modelStreamErrorException` frame; one frame per chunk,
/// so clients see them arrive separately, `event_gap_ms` apart.
pub(super) fn event_stream(
    state: Arc<DoubleState>,
    behaviour: &Behaviour,
    all: Vec<(bool, Bytes)>,
) -> Response {
    let mut frames = Vec::new();
    for (sent, (delta, frame)) in all.into_iter().enumerate() {
        if behaviour.break_after == Some(sent) {
            frames.push((
                false,
                exception_frame("modelStreamErrorException", "the model stream broke"),
            ));
            break;
        }
        frames.push((delta, frame));
    }
    let gap = Duration::from_millis(behaviour.event_gap_ms.unwrap_or(0));
    let stream = futures_util::StreamExt::then(
        futures_util::stream::iter(frames.into_iter().enumerate()),
        move |(index, (delta, frame))| {
            let state = Arc::clone(&state);
            async move {
                if index > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                if delta {
                    state.deltas_sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, std::convert::Infallible>(frame)
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/vnd.amazon.eventstream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn frame(headers: Vec<(&str, &str)>, payload: &Value) -> Bytes {
    let message = headers.into_iter().fold(
        Message::new(Bytes::from(payload.to_string())),
        |message, (name, value)| {
            message.add_header(Header::new(
                name.to_owned(),
                HeaderValue::String(value.to_owned().into()),
            ))
        },
    );
    let mut buffer = Vec::new();
    // Writing to a Vec cannot fail for frames of this size.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut buffer);
    Bytes::from(buffer)
}

pub(super) fn event_frame(event_type: &str, payload: &Value) -> Bytes {
    frame(
        vec![
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", "application/json"),
        ],
        payload,
    )
}

/// An InvokeModelWithResponseStream `chunk`: one Anthropic stream event, base64 in `bytes`.
pub(super) fn chunk_frame(event: &Value) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    event_frame("chunk", &json!({ "bytes": bytes }))
}

fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    frame(
        vec![
            (":message-type", "exception"),
            (":exception-type", exception_type),
            (":content-type", "application/json"),
        ],
        &json!({ "message": message }),
    )
}
