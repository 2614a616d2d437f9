//! The HTTP client the OAuth 2.0 and OpenID Connect crates (`oauth2`, `openidconnect`) call:
//! the company's identity provider from the gateway, and the gateway's token endpoint from
//! `llmlite login` and `llmlite key`. A timeout and a size limit on every answer; nothing
//! logged.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

/// One call may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read.
const MAX_BODY: usize = 1 << 20;

/// An error and its causes, one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP client: hyper over rustls (the system's roots), HTTP/1.1, no redirect followed (the
/// OAuth crates ask for that: a redirect could leak a code or a secret).
#[derive(Clone)]
pub struct OAuthHttp {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Request(String),
    #[error("the identity provider did not answer within {}s", TIMEOUT.as_secs())]
    Timeout,
}

impl OAuthHttp {
    pub fn new() -> Result<Self, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("no TLS trust roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(OAuthHttp {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn send(self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Request(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError::Request(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        })
        .await;
        answer.map_err(|_| HttpError::Timeout)?
    }
}

impl<'c> AsyncHttpClient<'c> for OAuthHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        // The crate wants a `Sync` future; a task's handle is one.
        let task = tokio::spawn(self.clone().send(request));
        Box::pin(async move {
            task.await
                .map_err(|e| HttpError::Request(format!("the request's task failed: {e}")))?
        })
    }
}
