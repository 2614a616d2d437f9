//! What the gateway answered, read whole: its status, headers and body, and the body's
//! server-sent events when it streamed.

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A response, read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// Sends `request` and reads the whole answer.
    pub async fn read(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the request is sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("the body is read");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// The body as JSON (failing the test, with the body, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The status, and the body as JSON (`null` when it is not JSON).
    pub fn status_and_json(&self) -> (u16, Value) {
        (
            self.status,
            serde_json::from_str(&self.text).unwrap_or(Value::Null),
        )
    }

    /// The `x-request-id` the gateway gave the request.
    pub fn request_id(&self) -> String {
        self.headers["x-request-id"]
            .to_str()
            .expect("a request ID is ASCII")
            .to_owned()
    }

    /// The body's server-sent events.
    pub fn events(&self) -> Vec<Event> {
        sse_events(&self.text)
    }
}

/// One server-sent event: its `event:` name (Anthropic's and the Responses API's streams name
/// their events; chat completions' do not) and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }

    /// The data as JSON, for a stream whose every event names its data's `type` (Anthropic's,
    /// the Responses API's): fails the test when the name is missing or differs.
    pub fn typed(&self) -> Value {
        let Some(name) = &self.name else {
            panic!("an unnamed event: {self:?}");
        };
        let data = self.json();
        assert_eq!(data["type"], name.as_str(), "{self:?}");
        data
    }
}

/// Every event of a server-sent-event body, in order.
pub fn sse_events(body: &str) -> Vec<Event> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| Event {
            name: event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned),
            data: event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n"),
        })
        .collect()
}

/// The `data:` payloads of a server-sent-event body's unnamed events, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The events of a Responses event stream (`event: <type>` and `data: <json>` lines each), as
/// their data's JSON; each event's `event:` line must name its data's `type`.
pub fn responses_events(body: &str) -> Vec<Value> {
    sse_events(body).iter().map(Event::typed).collect()
}
