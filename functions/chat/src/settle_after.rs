//! Settlement after the response, in Lambda. An environment is frozen once the runtime and every
//! extension wait for the next event, so the response goes out first and an internal extension
//! holds the environment until every admitted request has settled (`Settler::drain`). Lambda
//! bills that time; the client does not wait for it. When traces are on, their spans are flushed
//! there too.

use std::sync::Arc;

use axum::Router;
use lambda_extension::{Extension, LambdaEvent, NextEvent, service_fn};
use llmlite::AppState;
use llmlite::settlement::Settler;
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Registers the extension and wraps `router` so that each response tells it the invocation is
/// answered. Returns the wrapped router and the extension's loop, to run beside the runtime.
pub async fn register(
    router: Router,
    state: AppState,
) -> Result<
    (
        Router,
        impl Future<Output = Result<(), lambda_extension::Error>>,
    ),
    lambda_extension::Error,
> {
    let (answered, waiting) = unbounded_channel::<()>();
    let drain = Arc::new(Drain {
        settlements: state.settlements.clone(),
        answered: Mutex::new(waiting),
    });
    let extension = Extension::new()
        // Internal extensions receive INVOKE events only.
        .with_events(&["INVOKE"])
        .with_events_processor(service_fn(move |event: LambdaEvent| {
            let drain = Arc::clone(&drain);
            async move { drain.after(event).await }
        }))
        .with_extension_name("llmlite-settle")
        .register()
        .await?;
    let router = router.layer(axum::middleware::from_fn(move |request, next| {
        notify(answered.clone(), request, next)
    }));
    Ok((router, extension.run()))
}

async fn notify(
    answered: UnboundedSender<()>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    let _ = answered.send(());
    response
}

struct Drain {
    settlements: Settler,
    answered: Mutex<UnboundedReceiver<()>>,
}

impl Drain {
    /// For one invocation: waits until it is answered (bounded by its deadline, in case the
    /// runtime answered without calling the router), then until everything admitted has settled.
    async fn after(&self, event: LambdaEvent) -> Result<(), lambda_extension::Error> {
        let NextEvent::Invoke(invoke) = event.next else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let left = std::time::Duration::from_millis(invoke.deadline_ms.saturating_sub(now));
        let mut answered = self.answered.lock().await;
        if tokio::time::timeout(left, answered.recv()).await.is_err() {
            tracing::warn!("invocation not answered through the router by its deadline");
        }
        self.settlements.drain().await;
        // The spans of what just ended go out before the environment is frozen (the batch
        // exporter's thread would otherwise hold them until the next invocation thaws it).
        if llmlite::clients::traces::active() {
            let _ = tokio::task::spawn_blocking(llmlite::clients::traces::flush).await;
        }
        Ok(())
    }
}
