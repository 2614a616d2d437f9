//! The ceiling on requests in flight in `llmlite serve`: what a Lambda function's reserved
//! concurrency is to the chat functions, for a container. Each request takes a place when it
//! arrives and gives it back when its answer's last byte is written (a stream holds its place
//! to the end), or when the client goes away. A request that finds no place is answered at
//! once, 503 with `Retry-After` in its API family's error shape, before it is authenticated,
//! admitted or charged: a burst is refused cheaply instead of queueing on the database and
//! Bedrock until every request is slow.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::http::refuse;
use crate::routes::{Function, all_routes};
use crate::state::AppState;

/// What `llmlite serve` answers: every route ([`all_routes`]), at most `max_in_flight` requests
/// at once.
pub fn serve_routes(state: AppState, max_in_flight: usize) -> Router {
    with_ceiling(all_routes(state), max_in_flight)
}

/// What `llmlite serve`'s metrics listener answers (`LLMLITE_METRICS_ADDR`, a port of its own
/// that the ALB never reaches): `GET /metrics`, Prometheus' text format. `None` when the
/// process keeps no metrics.
pub fn metrics_routes(state: AppState) -> Option<Router> {
    let metrics = state.settlements.metrics()?;
    let render = move || {
        let (state, metrics) = (state.clone(), Arc::clone(&metrics));
        async move {
            let pool = state
                .db
                .pool()
                .await
                .ok()
                .map(|pool| (pool.size(), pool.num_idle()));
            let text = metrics.render(state.settlements.pending(), state.settlements.open(), pool);
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
        }
    };
    Some(Router::new().route("/metrics", axum::routing::get(render)))
}

/// `router`, answering at most `max` requests at once. Health checks take no place: an
/// orchestrator that found a busy task unhealthy would replace it, and end its streams.
pub fn with_ceiling(router: Router, max: usize) -> Router {
    let places = Arc::new(Semaphore::new(max));
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let places = Arc::clone(&places);
        async move { admit(&places, max, request, next).await }
    }))
}

async fn admit(places: &Arc<Semaphore>, max: usize, request: Request, next: Next) -> Response {
    if Function::for_path(request.uri().path()) == Some(Function::Health) {
        return next.run(request).await;
    }
    let Ok(place) = Arc::clone(places).try_acquire_owned() else {
        return refuse(request.uri().path(), ApiError::AtCapacity { limit: max });
    };
    next.run(request).await.map(|body| {
        Body::new(Holding {
            body,
            _place: place,
        })
    })
}

/// An answer's body that keeps its request's place until the body is finished or dropped.
struct Holding {
    body: Body,
    _place: OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
