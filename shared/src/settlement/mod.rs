//! Settlement: every admitted request pays exactly once, whatever the client, the model or the
//! network does.
//!
//! - A [`Guard`] owns an admitted request's [`RequestRecord`]. Every way out hands the record to
//!   settlement exactly once: [`Guard::finish`] on the paths the handler sees; the guard's `Drop`
//!   for the ones it does not (a client that hangs up drops the handler's future; a panic
//!   unwinds through it).
//! - Settlement runs after the response, as a task of its own ([`Settler`]). The reservation
//!   taken at admission holds the budget until settlement lands, so exactness does not depend on
//!   timing. [`Settler::drain`] waits for every open request to settle: the Lambda extension
//!   calls it before the environment is frozen, `llmlite serve` before it exits.
//! - One settlement is one SQL round trip (`llmlite_settle_recorded`, idempotent on the request
//!   ID), which also queues the request's audit record (see [`crate::clients::audit`]). In
//!   `llmlite serve` the settlements that finish together share one ([`batch`]: group commit). When
//!   the database refuses, the record goes to the outbox: kept in memory and replayed after the
//!   next settlement that succeeds on this instance, and written to the audit sink under
//!   `settlements/pending/`, which the rollup replays. It is never only logged.

mod batch;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::catalog::{ModelEntry, TokenUsage};
use crate::clients::audit::{Auditor, SinkError};
use crate::clients::store::Database;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::record::{RequestRecord, Status};
pub use batch::GroupCommits;
use batch::{GroupCommit, Row};

/// Where durable copies of unsettled records wait, under the audit sink.
pub const OUTBOX_PREFIX: &str = "settlements/pending/";

/// One settlement attempt's bound: the pool's acquire timeout and the round trip. An attempt cut
/// here may still have landed; the outbox's replay of it is then a no-op.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(8);
/// The bound on the outbox write, and on the audit write beside the settlement.
const OUTBOX_WITHIN: Duration = Duration::from_secs(5);
/// The longest one settlement takes: two attempts, the pause between them and the outbox write.
/// In Lambda the model call's deadline keeps at least this back (`LLMLITE_SETTLEMENT_MARGIN_MS`).
pub const SETTLE_WITHIN: Duration =
    Duration::from_secs(2 * ATTEMPT_WITHIN.as_secs() + OUTBOX_WITHIN.as_secs() + 1);

/// Settlements in flight, the records waiting for the database to come back, and what
/// settling needs (the database, the audit sink, the clock): one per process, in the state.
#[derive(Clone)]
pub struct Settler {
    inner: Arc<Inner>,
    to: Arc<Destination>,
    /// The committer that batches settlements (`serve`); `None`: each settles alone (a Lambda
    /// environment serves one request at a time).
    batch: Option<Arc<GroupCommit>>,
    /// Prometheus metrics (`llmlite serve` with `LLMLITE_METRICS_ADDR`); `None` elsewhere.
    metrics: Option<Arc<crate::clients::metrics::Metrics>>,
}

/// Where settlements, audit records and metrics go.
struct Destination {
    db: Database,
    audit: Auditor,
    clock: Clock,
    /// Whether to write EMF metric lines.
    emf: bool,
}

#[derive(Default)]
struct Inner {
    /// Admitted requests not yet settled (or handed to the outbox).
    open: AtomicUsize,
    idle: Notify,
    /// Records the database refused, replayed after the next settlement that succeeds.
    pending: std::sync::Mutex<Vec<RequestRecord>>,
}

/// One open request, counted until it is settled.
struct Ticket(Arc<Inner>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Settler {
    pub fn new(db: Database, audit: Auditor, clock: Clock, emf: bool) -> Settler {
        Settler {
            inner: Arc::default(),
            to: Arc::new(Destination {
                db,
                audit,
                clock,
                emf,
            }),
            batch: None,
            metrics: None,
        }
    }

    /// The Prometheus metrics it observes requests in, if any.
    pub fn metrics(&self) -> Option<Arc<crate::clients::metrics::Metrics>> {
        self.metrics.clone()
    }

    /// Observes every request it settles or refuses in `metrics` (Prometheus, `llmlite serve`).
    pub fn with_metrics(mut self, metrics: Arc<crate::clients::metrics::Metrics>) -> Settler {
        self.metrics = Some(metrics);
        self
    }

    /// Settles the requests that finish together in one transaction, up to `max` at a time
    /// (`max` ≤ 1: each alone). For a process serving many requests at once: `llmlite serve`.
    pub fn group_commit(mut self, max: usize) -> Settler {
        self.batch = (max > 1).then(|| Arc::new(GroupCommit::new(max)));
        self
    }

    /// How many transactions have settled how many requests through group commit (zero
    /// without it).
    pub fn group_commits(&self) -> GroupCommits {
        self.batch.as_ref().map(|b| b.figures()).unwrap_or_default()
    }

    fn ticket(&self) -> Ticket {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Ticket(Arc::clone(&self.inner))
    }

    /// How many admitted requests have not settled yet.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// How many records wait in this instance's outbox.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().map_or(0, |p| p.len())
    }

    /// Waits until every admitted request has settled (or gone to the outbox).
    pub async fn drain(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.open() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Opens the guard of an admitted request that arrived at `arrived`.
    pub fn guard(&self, record: RequestRecord, arrived: std::time::Instant) -> Guard {
        Guard {
            record: Some(record),
            settler: self.clone(),
            ticket: Some(self.ticket()),
            arrived,
            model: None,
        }
    }

    /// Records a request refused before admission (nothing to settle): its audit record, metrics
    /// and log line, after the response.
    pub fn report_refusal(&self, record: RequestRecord) {
        let ticket = self.ticket();
        let settler = self.clone();
        let traced = record.finish_trace("audit");
        spawn(async move {
            let (key, audit) = (record.audit_key(), record.audit());
            let queued = settler.to.audit.queue(record.timestamp, &key, &audit);
            if tokio::time::timeout(2 * ATTEMPT_WITHIN, queued)
                .await
                .is_err()
            {
                tracing::error!(request_id = %record.request_id, "audit record not queued in time");
            }
            settler.report(&record, true);
            drop(ticket);
        }
        .instrument(traced));
    }

    fn keep(&self, record: RequestRecord) {
        if let Ok(mut pending) = self.inner.pending.lock() {
            pending.push(record);
        }
    }

    fn take_pending(&self) -> Vec<RequestRecord> {
        self.inner
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

/// The guard of one admitted request: settles it exactly once.
pub struct Guard {
    record: Option<RequestRecord>,
    settler: Settler,
    ticket: Option<Ticket>,
    /// When the request arrived, for the record's latency.
    arrived: std::time::Instant,
    /// The model the request is for: what a client that hangs up before any usage is known
    /// pays its prompt estimate at.
    model: Option<Arc<ModelEntry>>,
}

impl Guard {
    /// The record, to add what becomes known (usage, sizes, timings).
    pub fn record(&mut self) -> &mut RequestRecord {
        // Only `finish` and `drop` take the record, and both consume the guard.
        self.record
            .get_or_insert_with(|| unreachable_record(&self.settler.to.clock))
    }

    pub fn record_ref(&self) -> Option<&RequestRecord> {
        self.record.as_ref()
    }

    /// The request's trace (empty when traces are off).
    pub fn trace(&self) -> crate::clients::traces::Trace {
        self.record
            .as_ref()
            .map(|r| r.trace.clone())
            .unwrap_or_default()
    }

    /// Milliseconds since the request arrived.
    pub fn elapsed_ms(&self) -> f64 {
        self.arrived.elapsed().as_secs_f64() * 1000.0
    }

    /// Names the model the request is for (see [`Guard`]'s `model`).
    pub fn for_model(&mut self, model: Arc<ModelEntry>) {
        self.model = Some(model);
    }

    /// Ends the request with `status` and settles it after the response, in a task of its own.
    pub fn finish(mut self, status: Status) {
        self.hand_over(status);
    }

    fn hand_over(&mut self, status: Status) {
        let (Some(mut record), Some(ticket)) = (self.record.take(), self.ticket.take()) else {
            return;
        };
        record.status = status;
        // A client that went away, or a call cut by the deadline, before any usage was known
        // has still had its prompt read: it pays that, at the estimate. (A panic is the
        // gateway's fault: it pays what it used.)
        if matches!(status, Status::ClientClosed | Status::Deadline)
            && record.model_id.is_none()
            && let Some(model) = &self.model
        {
            let usage = TokenUsage {
                input: record.estimated_input,
                ..TokenUsage::default()
            };
            record.charge(model, usage);
        }
        if record.status_code == 0 {
            record.status_code = match status {
                Status::Success => 200,
                Status::ClientClosed => 499,
                Status::Panic => 500,
                Status::Deadline => 504,
                Status::UpstreamCut | Status::Failure => 502,
            };
        }
        if record.latency_ms == 0.0 {
            record.latency_ms = self.arrived.elapsed().as_secs_f64() * 1000.0;
        }
        let settler = self.settler.clone();
        let traced = record.finish_trace("settlement");
        spawn(
            async move {
                settler.settle(record).await;
                drop(ticket);
            }
            .instrument(traced),
        );
    }
}

/// Runs `task` on the current runtime. Settlement is spawned from request handlers (and from
/// their `Drop`), which always run on one.
fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => tracing::error!("no runtime to settle on: the lease will be charged as lost"),
    }
}

impl Settler {
    /// The metrics and the log line of a request (`refused`: by admission).
    fn report(&self, record: &RequestRecord, refused: bool) {
        let mut metrics = record.metrics();
        metrics.outbox = u64::try_from(self.pending()).unwrap_or(u64::MAX);
        crate::clients::telemetry::report_request(
            &record.request_id.to_string(),
            record.payer.key_hash.as_ref().map(|h| h.as_str()),
            &metrics,
            self.to.emf,
        );
        if let Some(prometheus) = &self.metrics {
            prometheus.observe(&metrics, refused);
        }
    }

    /// Settles `record` (which queues its audit record) and reports its metrics; a record the
    /// database refuses goes to the outbox, and its audit record is queued when it is replayed.
    /// After a settlement that succeeds, replays this instance's outbox, and every
    /// [`SHIP_EVERY`] queued records ships the audit queue.
    pub async fn settle(&self, mut record: RequestRecord) {
        record.finished.get_or_insert(self.to.clock.now());
        let settled = self.settle_with_retries(&record).await;
        self.report(&record, false);
        match settled {
            Ok(settled) => {
                if settled.queued.is_some_and(|id| id % SHIP_EVERY == 0) {
                    // Bounded: in a Lambda the environment waits for this before its next
                    // request, and an S3 that does not answer must not hold it. A shipment cut
                    // here rolls back; its records stay queued for the next one.
                    let shipping = self.to.audit.ship_requests(false).instrument(
                        tracing::info_span!(target: crate::clients::traces::TARGET, "audit.ship"),
                    );
                    match tokio::time::timeout(OUTBOX_WITHIN, shipping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "audit queue not shipped; a later run will");
                        }
                        Err(_) => {
                            tracing::warn!("audit queue not shipped in time; a later run will")
                        }
                    }
                }
                self.replay_pending().await;
            }
            Err(error) => self.to_outbox(record, &error).await,
        }
    }

    /// One settlement, tried twice (a dropped connection is replaced on the second attempt). Each
    /// attempt may wait the pool's acquire timeout; past that the outbox takes the record.
    async fn settle_with_retries(&self, record: &RequestRecord) -> Result<Settled, ApiError> {
        let mut last = None;
        for attempt in 0..2u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            let attempt = tokio::time::timeout(ATTEMPT_WITHIN, self.settle_once(record)).await;
            match attempt.unwrap_or_else(|_| {
                Err(ApiError::DatabaseUnavailable(format!(
                    "no settlement within {} s",
                    ATTEMPT_WITHIN.as_secs()
                )))
            }) {
                Ok(spend) => return Ok(spend),
                // The database took the call and refused it: retrying cannot help.
                Err(e @ ApiError::InvalidRequest { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::Internal("settlement not attempted".into())))
    }

    /// `llmlite_settle_recorded` (`llmlite_settle`, with the call type, the hash the client
    /// presented and the audit record to queue): one round trip, or a share of one batch's.
    pub async fn settle_once(&self, r: &RequestRecord) -> Result<Settled, ApiError> {
        let row = Row::of(r);
        match &self.batch {
            Some(batch) => batch.settle(row, &self.to.db).await,
            None => row.settle(&self.to.db).await,
        }
    }

    /// Keeps a record the database refused: in this instance's memory, and durably in the sink.
    async fn to_outbox(&self, record: RequestRecord, error: &ApiError) {
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let key = outbox_key(&record);
        let put = self.to.audit.sink.write(&key, &body, "application/json");
        let put = match tokio::time::timeout(OUTBOX_WITHIN, put).await {
            Ok(written) => written.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} s", OUTBOX_WITHIN.as_secs())),
        };
        match put {
            Ok(()) => tracing::warn!(
                request_id = %record.request_id, error = %error,
                "settlement deferred: the database refused it; kept in the outbox"
            ),
            Err(e) => tracing::error!(
                request_id = %record.request_id, error = %error, sink_error = %e,
                // The audit view: what to charge, without the `user` field or free-text metadata.
                record = %record.audit(),
                "settlement deferred: the database and the outbox sink both refused it; kept in memory"
            ),
        }
        self.keep(record);
    }

    /// Replays this instance's outbox; what still fails goes back.
    async fn replay_pending(&self) {
        let pending = self.take_pending();
        for record in pending {
            match self.settle_once(&record).await {
                Ok(_) => {
                    if let Err(e) = self.to.audit.sink.delete(&outbox_key(&record)).await {
                        // A replay of it later is a no-op (settlement is idempotent).
                        tracing::warn!(request_id = %record.request_id, error = %e, "settled outbox record not removed");
                    }
                }
                Err(_) => self.keep(record),
            }
        }
    }

    /// Replays the durable outbox (every instance's): the rollup's part. Each record is settled
    /// (idempotently) and then removed.
    pub async fn replay_outbox(&self) -> Result<Replay, SinkError> {
        let mut replay = Replay::default();
        for key in self.to.audit.sink.list(OUTBOX_PREFIX).await? {
            let record: RequestRecord = match self.to.audit.sink.get(&key).await {
                Ok(body) => match serde_json::from_slice(&body) {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::error!(key, error = %e, "unreadable outbox record left in place");
                        replay.failed += 1;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(key, error = %e, "outbox record not read");
                    replay.failed += 1;
                    continue;
                }
            };
            match self.settle_once(&record).await {
                Ok(_) => {
                    self.to.audit.sink.delete(&key).await?;
                    replay.settled += 1;
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "outbox record not settled yet");
                    replay.failed += 1;
                }
            }
        }
        Ok(replay)
    }
}

fn outbox_key(record: &RequestRecord) -> String {
    format!("{OUTBOX_PREFIX}{}.json", record.request_id)
}

/// Every this many queued audit records, the settlement that queued the last ships the queue
/// (which ships only once it holds 128 KiB): a Lambda function, which has no timer of its own,
/// ships as it goes.
pub const SHIP_EVERY: i64 = 128;

/// A settlement that landed.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// The key's spend afterwards.
    pub key_spend: Decimal,
    /// The audit queue row its record went to (`None`: settled before, by a replay).
    pub queued: Option<i64>,
}

/// What an outbox replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replay {
    pub settled: u64,
    pub failed: u64,
}

/// A record for a guard whose record was taken: cannot happen (see [`Guard::record`]), but a
/// request path must not panic, so it yields a throwaway one.
fn unreachable_record(clock: &Clock) -> RequestRecord {
    tracing::error!("settlement guard used after it settled");
    RequestRecord::new(
        crate::http::RequestId(uuid::Uuid::new_v4()),
        clock.now(),
        crate::catalog::ModelAlias::new("unknown"),
        crate::record::Client::default(),
    )
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.record.is_none() {
            return;
        }
        // Dropped unsettled: unwinding from a panic, or the handler's future was dropped because
        // the client went away. Either way the request is charged for what it used.
        let status = if std::thread::panicking() {
            Status::Panic
        } else {
            Status::ClientClosed
        };
        tracing::warn!(
            status = status.as_str(),
            "request ended early; settling what it used"
        );
        self.hand_over(status);
    }
}
