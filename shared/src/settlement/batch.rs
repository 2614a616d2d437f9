//! Group commit: in `llmlite serve`, the settlements that finish while one is being written go to
//! the database together, in one transaction and one round trip (`llmlite_settle_batch` in
//! `migrations/`).
//!
//! A process serving many requests settles many at once. Alone, each settlement is its own
//! transaction: two round trips, a commit (a WAL flush the request waits out), and its key's and
//! team's row locks held from its `UPDATE` to that commit, which is what concurrent requests on
//! one key or one team queue behind. One committer task takes whatever has queued (up to the
//! batch size) and settles it as one: the locks are taken once, in one order, and released by
//! one commit. While a batch is written the next one gathers, so a quiet process settles one
//! request at a time, as before, and a busy one in batches as large as its load.
//!
//! Nothing about exactness changes: the batch function settles each request with
//! `llmlite_settle_recorded`, idempotent on the request ID; a batch the database refuses as a
//! whole (one request's value it cannot take, a deadlock) is settled again one request at a time,
//! so one bad record never costs the others; and a batch that cannot reach the database (or that
//! it rolls back, a deadlock's victim) gives each of its requests that error, which
//! [`super::Settler`] retries and then sends to the outbox, as it does a single settlement's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};

use super::{ATTEMPT_WITHIN, Settled};
use crate::clients::store::Database;
use crate::error::ApiError;
use crate::record::RequestRecord;

/// One settlement's values, as `llmlite_settle_recorded` takes them.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    call_type: &'static str,
    presented: Option<String>,
    request_id: String,
    key_id: Option<i64>,
    token: String,
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    end_user: Option<String>,
    model: String,
    model_id: Option<String>,
    prompt: i64,
    completion: i64,
    cache_read: i64,
    cache_write: i64,
    cost: Decimal,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    status: &'static str,
    error_type: Option<String>,
    metadata: serde_json::Value,
    audit: String,
    detail: serde_json::Value,
}

impl Row {
    pub(crate) fn of(r: &RequestRecord) -> Row {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Row {
            call_type: r.call_type.as_str(),
            presented: r
                .payer
                .presented_key_hash
                .as_ref()
                .map(|h| h.as_str().to_owned()),
            request_id: r.request_id.to_string(),
            key_id: r.payer.key_id,
            token: r
                .payer
                .key_hash
                .as_ref()
                .map(|h| h.as_str().to_owned())
                .unwrap_or_default(),
            key_alias: r.payer.key_alias.clone(),
            user_id: r.payer.user_id.clone(),
            team_id: r.payer.team_id.clone(),
            end_user: r.end_user.clone(),
            model: r.model.as_str().to_owned(),
            model_id: r.model_id.clone(),
            prompt: count(r.prompt_tokens()),
            completion: count(r.tokens.output),
            cache_read: count(r.tokens.cache_read),
            cache_write: count(r.tokens.cache_write),
            cost: r.cost.amount(),
            start: r.timestamp,
            end: r.finished.unwrap_or(r.timestamp),
            status: r.status.as_str(),
            error_type: r.error_type.clone(),
            metadata: r.metadata.clone(),
            audit: r.audit().to_string(),
            detail: r.detail(),
        }
    }

    /// One settlement, alone: `llmlite_settle_recorded`.
    pub(crate) async fn settle(&self, db: &Database) -> Result<Settled, ApiError> {
        let (key_spend, queued): (Option<Decimal>, Option<i64>) = sqlx::query_as(
            "SELECT key_spend, queued
               FROM llmlite_settle_recorded($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                            $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
                                            $23)",
        )
        .bind(self.call_type)
        .bind(&self.presented)
        .bind(&self.request_id)
        .bind(self.key_id)
        .bind(&self.token)
        .bind(&self.key_alias)
        .bind(&self.user_id)
        .bind(&self.team_id)
        .bind(&self.end_user)
        .bind(&self.model)
        .bind(&self.model_id)
        .bind(self.prompt)
        .bind(self.completion)
        .bind(self.cache_read)
        .bind(self.cache_write)
        .bind(self.cost)
        .bind(self.start)
        .bind(self.end)
        .bind(self.status)
        .bind(&self.error_type)
        .bind(&self.metadata)
        .bind(&self.audit)
        .bind(&self.detail)
        .persistent(false)
        .fetch_one(db.pool().await?)
        .await?;
        Ok(Settled {
            key_spend: key_spend.unwrap_or_default(),
            queued,
        })
    }
}

/// Several settlements in one transaction: `llmlite_settle_batch`, one array per parameter.
/// Answers in the order of `rows`.
async fn settle_all(db: &Database, rows: &[&Row]) -> Result<Vec<Settled>, ApiError> {
    fn column<T>(rows: &[&Row], f: impl Fn(&Row) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r)).collect()
    }
    let settled: Vec<(Option<String>, Option<Decimal>, Option<i64>)> = sqlx::query_as(
        "SELECT settled_request, key_spend, queued
           FROM llmlite_settle_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                     $15, $16, $17, $18, $19, $20, $21, $22, $23)",
    )
    .bind(column(rows, |r| r.call_type))
    .bind(column(rows, |r| r.presented.clone()))
    .bind(column(rows, |r| r.request_id.clone()))
    .bind(column(rows, |r| r.key_id))
    .bind(column(rows, |r| r.token.clone()))
    .bind(column(rows, |r| r.key_alias.clone()))
    .bind(column(rows, |r| r.user_id.clone()))
    .bind(column(rows, |r| r.team_id.clone()))
    .bind(column(rows, |r| r.end_user.clone()))
    .bind(column(rows, |r| r.model.clone()))
    .bind(column(rows, |r| r.model_id.clone()))
    .bind(column(rows, |r| r.prompt))
    .bind(column(rows, |r| r.completion))
    .bind(column(rows, |r| r.cache_read))
    .bind(column(rows, |r| r.cache_write))
    .bind(column(rows, |r| r.cost))
    .bind(column(rows, |r| r.start))
    .bind(column(rows, |r| r.end))
    .bind(column(rows, |r| r.status))
    .bind(column(rows, |r| r.error_type.clone()))
    .bind(column(rows, |r| r.metadata.clone()))
    .bind(column(rows, |r| r.audit.clone()))
    .bind(column(rows, |r| r.detail.clone()))
    .persistent(false)
    .fetch_all(db.pool().await?)
    .await?;
    if settled.len() != rows.len()
        || settled
            .iter()
            .zip(rows)
            .any(|((id, _, _), row)| id.as_deref() != Some(row.request_id.as_str()))
    {
        return Err(ApiError::Internal(format!(
            "a batch of {} settlements answered {} rows out of order",
            rows.len(),
            settled.len()
        )));
    }
    Ok(settled
        .into_iter()
        .map(|(_, key_spend, queued)| Settled {
            key_spend: key_spend.unwrap_or_default(),
            queued,
        })
        .collect())
}

/// One settlement waiting for the committer.
struct Job {
    row: Row,
    reply: oneshot::Sender<Result<Settled, ApiError>>,
}

/// The committer of one process: settlements queue here, and one task writes them in batches.
pub(crate) struct GroupCommit {
    max: usize,
    queue: OnceLock<mpsc::UnboundedSender<Job>>,
    counts: Arc<Counts>,
}

/// What the committer has written.
#[derive(Default)]
struct Counts {
    /// Transactions: batches, and settlements written alone.
    commits: AtomicU64,
    /// Settlements in them.
    settled: AtomicU64,
    /// Batches the database refused as a whole, whose requests were then settled one by one.
    refused: AtomicU64,
    /// Batches that failed for a reason of the moment (the database away, or chosen as a
    /// deadlock's victim), whose requests got that error to retry.
    failed: AtomicU64,
}

/// Group commit's figures: how many transactions settled how many requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupCommits {
    pub commits: u64,
    pub settled: u64,
    pub refused: u64,
    pub failed: u64,
}

impl GroupCommit {
    pub(crate) fn new(max: usize) -> GroupCommit {
        GroupCommit {
            max: max.max(1),
            queue: OnceLock::new(),
            counts: Arc::default(),
        }
    }

    pub(crate) fn figures(&self) -> GroupCommits {
        GroupCommits {
            commits: self.counts.commits.load(Ordering::Relaxed),
            settled: self.counts.settled.load(Ordering::Relaxed),
            refused: self.counts.refused.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
        }
    }

    /// Settles `row` in the next batch. The committer starts on the first settlement (on the
    /// runtime that settles).
    pub(crate) async fn settle(&self, row: Row, db: &Database) -> Result<Settled, ApiError> {
        let queue = self.queue.get_or_init(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            tokio::spawn(commit(db.clone(), jobs, self.max, Arc::clone(&self.counts)));
            queue
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job { row, reply })
            .map_err(|_| ApiError::Internal("the settlement committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("the settlement committer dropped a request".into()))?
    }
}

/// The committer: takes what has queued, up to `max`, and settles it in one transaction.
async fn commit(
    db: Database,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    max: usize,
    counts: Arc<Counts>,
) {
    let mut batch = Vec::with_capacity(max);
    while jobs.recv_many(&mut batch, max).await > 0 {
        let taken: Vec<Job> = std::mem::take(&mut batch);
        let rows: Vec<&Row> = taken.iter().map(|j| &j.row).collect();
        // Bounded like a single attempt: a database that does not answer must not hold every
        // later settlement of the process behind this batch.
        let written = match tokio::time::timeout(ATTEMPT_WITHIN, async {
            if let [row] = rows.as_slice() {
                row.settle(&db).await.map(|s| vec![s])
            } else {
                settle_all(&db, &rows).await
            }
        })
        .await
        {
            Ok(written) => written,
            Err(_) => Err(ApiError::DatabaseUnavailable(format!(
                "no settlement within {} s",
                ATTEMPT_WITHIN.as_secs()
            ))),
        };
        match written {
            Ok(settled) => {
                counts.commits.fetch_add(1, Ordering::Relaxed);
                let n = u64::try_from(settled.len()).unwrap_or(u64::MAX);
                counts.settled.fetch_add(n, Ordering::Relaxed);
                for (job, settled) in taken.into_iter().zip(settled) {
                    let _ = job.reply.send(Ok(settled));
                }
            }
            // The database is away, or rolled the batch back (a deadlock's victim): a moment
            // later it may land, so each request's own retries and outbox take over.
            Err(ApiError::DatabaseUnavailable(reason)) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                for job in taken {
                    let _ = job
                        .reply
                        .send(Err(ApiError::DatabaseUnavailable(reason.clone())));
                }
            }
            Err(error) if taken.len() == 1 => {
                if let Some(job) = taken.into_iter().next() {
                    let _ = job.reply.send(Err(error));
                }
            }
            // A batch refused as a whole: one request at a time, beside the next batch, so one
            // request's refusal is its own.
            Err(error) => {
                tracing::warn!(%error, requests = taken.len(), "a settlement batch was refused; settling its requests one by one");
                counts.refused.fetch_add(1, Ordering::Relaxed);
                for job in taken {
                    let db = db.clone();
                    let counts = Arc::clone(&counts);
                    tokio::spawn(async move {
                        let settled = tokio::time::timeout(ATTEMPT_WITHIN, job.row.settle(&db))
                            .await
                            .unwrap_or_else(|_| {
                                Err(ApiError::DatabaseUnavailable(format!(
                                    "no settlement within {} s",
                                    ATTEMPT_WITHIN.as_secs()
                                )))
                            });
                        if settled.is_ok() {
                            counts.commits.fetch_add(1, Ordering::Relaxed);
                            counts.settled.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = job.reply.send(settled);
                    });
                }
            }
        }
    }
}
