//! The audit trail: one JSON object per chat request and per admin action, written to the
//! audit bucket (`LLMLITE_AUDIT_BUCKET`, SSE-KMS with `LLMLITE_AUDIT_KMS_KEY_ID`) or, with no
//! bucket, to a local directory in the same layout (`LLMLITE_AUDIT_DIR`, default
//! `./llmlite-audit`).
//!
//! Request records are queued in PostgreSQL by the settlement that charges the request (in the
//! same statement), and shipped in batches by [`Auditor::ship_requests`] as JSON Lines objects
//! (`audit/YYYY/MM/DD/requests-...jsonl`, at least 128 KiB or 10 minutes old): one PUT per batch,
//! not per request. `llmlite serve` ships every minute, the chat function every 128 records, the
//! rollup function every 5 minutes.
//!
//! No record is lost silently: a write is retried, and a record that still fails goes to
//! the `llmlite_audit_outbox` table, which [`Auditor::redrive`] (the rollup function, and
//! `llmlite audit redrive`) ships later; a queued batch that cannot be written stays queued.
//! Admin actions need no outbox: they are durable in `llmlite_admin_action` and marked shipped
//! only once written; an admin request ships its own, the rollup the rest. Object keys are
//! deterministic, so shipping an admin action twice writes the same object. Records never hold
//! prompt or completion text, nor a raw key.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::primitives::{ByteStream, ByteStreamError};
use aws_sdk_s3::types::ServerSideEncryption;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use crate::clients::store::Database;
use crate::error::ApiError;
use crate::http::RequestId;

/// Admin actions claimed per transaction when shipping.
const ADMIN_BATCH: i64 = 200;
/// Admin action writes in flight at once.
const ADMIN_WRITERS: usize = 16;

/// Why a sink did not write, list, read or delete an object.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// S3 refused the request or could not be reached; shown with the SDK's chain of causes.
    #[error("{}", aws_sdk_s3::error::DisplayErrorContext(.0.as_ref()))]
    S3(Box<dyn std::error::Error + Send + Sync>),
    /// An object's body broke off while it was read.
    #[error(transparent)]
    Body(#[from] ByteStreamError),
    /// The directory sink's file system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl SinkError {
    fn s3(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SinkError::S3(Box::new(e))
    }
}

/// The error as text, for callers whose own error is still text.
impl From<SinkError> for String {
    fn from(e: SinkError) -> String {
        e.to_string()
    }
}

/// Why the audit trail could not be shipped: the database (the outbox, the admin actions) was
/// unavailable or refused a statement. A record the sink refuses is no error here: it stays
/// for a later run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// No database connection (or no IAM token for one).
    #[error(transparent)]
    Unavailable(#[from] ApiError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// The error as text, for callers whose own error is still text.
impl From<AuditError> for String {
    fn from(e: AuditError) -> String {
        e.to_string()
    }
}

/// Where records go.
#[derive(Debug, Clone)]
pub enum Sink {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        kms_key_id: Option<String>,
    },
    Directory(PathBuf),
}

#[derive(Clone)]
pub struct Auditor {
    pub sink: Sink,
    db: Database,
    attempts: u32,
}

/// `audit/YYYY/MM/DD/request-{timestamp}-{request_id}.json`.
pub fn request_key(at: DateTime<Utc>, request_id: &str) -> String {
    format!(
        "audit/{}/request-{}-{request_id}.json",
        at.format("%Y/%m/%d"),
        at.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// `audit/admin/YYYY/MM/DD/{action}-{timestamp}-{id}.json`.
pub fn admin_key(at: DateTime<Utc>, action: &str, id: i64) -> String {
    format!(
        "audit/admin/{}/{}-{}-{id}.json",
        at.format("%Y/%m/%d"),
        action.replace('.', "-"),
        at.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// A row of `llmlite_admin_action`.
#[derive(sqlx::FromRow)]
struct AdminAction {
    id: i64,
    at: DateTime<Utc>,
    request_id: String,
    actor: String,
    action: String,
    object_type: String,
    object_id: String,
    before: Option<Value>,
    after: Option<Value>,
    via: String,
}

/// What a re-drive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redrive {
    pub shipped: u64,
    pub failed: u64,
}

impl Sink {
    /// Writes one object (or file) at `key`.
    pub async fn write(&self, key: &str, body: &[u8], content_type: &str) -> Result<(), SinkError> {
        match self {
            Sink::S3 {
                client,
                bucket,
                kms_key_id,
            } => {
                let mut put = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type(content_type)
                    .body(ByteStream::from(body.to_vec()));
                if let Some(kms) = kms_key_id {
                    put = put
                        .server_side_encryption(ServerSideEncryption::AwsKms)
                        .ssekms_key_id(kms);
                }
                put.send().await.map(|_| ()).map_err(SinkError::s3)
            }
            Sink::Directory(root) => {
                let path = root.join(key);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                Ok(tokio::fs::write(&path, body).await?)
            }
        }
    }

    /// The keys under `prefix`, in order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        match self {
            Sink::S3 { client, bucket, .. } => {
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(SinkError::s3)?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_owned)),
                    );
                }
                Ok(keys)
            }
            Sink::Directory(root) => {
                let dir = root.join(prefix);
                let mut keys = Vec::new();
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
                    Err(e) => return Err(e.into()),
                };
                while let Some(entry) = entries.next_entry().await? {
                    if let Some(name) = entry.file_name().to_str() {
                        keys.push(format!("{prefix}{name}"));
                    }
                }
                keys.sort();
                Ok(keys)
            }
        }
    }

    /// The object (or file) at `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, SinkError> {
        match self {
            Sink::S3 { client, bucket, .. } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(SinkError::s3)?;
                let body = object.body.collect().await?;
                Ok(body.into_bytes().to_vec())
            }
            Sink::Directory(root) => Ok(tokio::fs::read(root.join(key)).await?),
        }
    }

    /// Removes the object (or file) at `key`; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), SinkError> {
        match self {
            Sink::S3 { client, bucket, .. } => client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(SinkError::s3),
            Sink::Directory(root) => match tokio::fs::remove_file(root.join(key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }
}

impl Auditor {
    pub fn new(sink: Sink, db: Database) -> Self {
        Auditor {
            sink,
            db,
            attempts: 3,
        }
    }

    async fn put(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        self.sink.write(key, body, "application/json").await
    }

    /// Writes `body` at `key`, retrying; the last error if no attempt succeeded.
    async fn deliver(&self, key: &str, body: &[u8]) -> Result<(), SinkError> {
        self.deliver_as(key, body, "application/json").await
    }

    /// [`Auditor::deliver`], with the object's content type.
    async fn deliver_as(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), SinkError> {
        let mut attempt = 1;
        loop {
            match self.sink.write(key, body, content_type).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= self.attempts => return Err(e),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            attempt += 1;
        }
    }

    /// Writes `record` at `key`, retrying; a record that cannot be written goes to the outbox.
    pub async fn write(&self, key: &str, record: &Value) {
        let body = serde_json::to_vec(record).unwrap_or_default();
        let Err(last) = self.deliver(key, &body).await else {
            return;
        };
        tracing::warn!(key, error = %last, "audit write failed; record kept in the outbox");
        let saved = async {
            sqlx::query(
                "INSERT INTO llmlite_audit_outbox (object_key, record, attempts, last_error)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (object_key) DO NOTHING",
            )
            .bind(key)
            .bind(record)
            .bind(i32::try_from(self.attempts).unwrap_or(i32::MAX))
            .bind(last.to_string())
            .persistent(false)
            .execute(self.db.pool().await?)
            .await?;
            Ok::<_, AuditError>(())
        };
        if let Err(e) = saved.await {
            // Nowhere left to keep it: say so loudly, with the record (it holds no secrets).
            tracing::error!(key, error = %e, record = %record, "audit record lost: outbox unavailable");
        }
    }

    /// Ships up to `limit` records from the outbox; each shipped one leaves it.
    pub async fn redrive(&self, limit: i64) -> Result<Redrive, AuditError> {
        let pool = self.db.pool().await?;
        let due: Vec<(i64, String, Value)> = sqlx::query_as(
            "SELECT id, object_key, record FROM llmlite_audit_outbox
             WHERE next_attempt_at <= now() ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .persistent(false)
        .fetch_all(pool)
        .await?;
        let mut report = Redrive::default();
        for (id, key, record) in due {
            let body = serde_json::to_vec(&record).unwrap_or_default();
            match self.put(&key, &body).await {
                Ok(()) => {
                    sqlx::query("DELETE FROM llmlite_audit_outbox WHERE id = $1")
                        .bind(id)
                        .persistent(false)
                        .execute(pool)
                        .await?;
                    report.shipped += 1;
                }
                Err(e) => {
                    sqlx::query(
                        "UPDATE llmlite_audit_outbox
                         SET attempts = attempts + 1, last_error = $2,
                             next_attempt_at = now() + least(interval '1 hour',
                                                             interval '10 seconds' * 2 ^ least(attempts, 12))
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(e.to_string())
                    .persistent(false)
                    .execute(pool)
                    .await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Ships the admin actions the request `request_id` recorded: an admin write ships its own
    /// record, never another's.
    pub async fn ship_request_actions(&self, request_id: RequestId) -> Result<u64, AuditError> {
        self.ship(Some(&request_id.to_string())).await
    }

    /// Ships the backlog: every admin action not shipped yet, in batches. Concurrent callers
    /// (two rollups, an admin request) each claim different rows, so no action is written twice.
    pub async fn ship_admin_actions(&self) -> Result<u64, AuditError> {
        self.ship(None).await
    }

    /// Ships unshipped admin actions (of `request_id` only, when given), oldest first. Each
    /// batch is claimed with `FOR UPDATE SKIP LOCKED` in a transaction that stays open while
    /// its records are written, and only the records written are marked shipped. A record the
    /// sink refuses stays unshipped for a later run; a batch with nothing written ends this one
    /// (the sink is down).
    async fn ship(&self, request_id: Option<&str>) -> Result<u64, AuditError> {
        let pool = self.db.pool().await?;
        let mut shipped = 0;
        let mut after = 0_i64;
        loop {
            let mut tx = pool.begin().await?;
            let claimed: Vec<AdminAction> = sqlx::query_as(
                "SELECT id, at, request_id, actor, action, object_type, object_id, before, after,
                        via
                 FROM llmlite_admin_action
                 WHERE shipped_at IS NULL AND id > $1 AND ($2::text IS NULL OR request_id = $2)
                 ORDER BY id LIMIT $3
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(after)
            .bind(request_id)
            .bind(ADMIN_BATCH)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = claimed.last() else {
                return Ok(shipped);
            };
            after = last.id;
            let full = claimed.len() as i64 == ADMIN_BATCH;
            let results: Vec<(i64, Result<(), SinkError>)> =
                futures_util::stream::iter(claimed.into_iter().map(|action| async move {
                    let (id, key, body) = action.object();
                    (id, self.deliver(&key, &body).await)
                }))
                .buffer_unordered(ADMIN_WRITERS)
                .collect()
                .await;
            let mut written = Vec::with_capacity(results.len());
            for (id, result) in results {
                match result {
                    Ok(()) => written.push(id),
                    Err(e) => {
                        tracing::warn!(id, error = %e, "admin action not shipped; a later run will");
                    }
                }
            }
            sqlx::query("UPDATE llmlite_admin_action SET shipped_at = now() WHERE id = ANY($1)")
                .bind(&written)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            shipped += written.len() as u64;
            if written.is_empty() || !full {
                return Ok(shipped);
            }
        }
    }
}

/// The least a batch of request records holds before it is shipped (unless its oldest has
/// waited [`SHIP_WITHIN`]): S3 lifecycle rules move objects under 128 KiB to no archive tier.
pub const SHIP_MIN_BYTES: usize = 128 * 1024;
/// The longest a request record waits in the queue for company, before it ships alone.
pub const SHIP_WITHIN: Duration = Duration::from_secs(10 * 60);
/// Request records per object, at most.
const SHIP_BATCH: i64 = 4096;

/// `audit/YYYY/MM/DD/requests-{timestamp}-{first id}-{last id}.jsonl`: a batch of request
/// records, one JSON object per line, filed under the day of its first.
pub fn batch_key(at: DateTime<Utc>, first: i64, last: i64) -> String {
    format!(
        "audit/{}/requests-{}-{first:012}-{last:012}.jsonl",
        at.format("%Y/%m/%d"),
        at.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// What shipping the request queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Shipped {
    pub records: u64,
    pub objects: u64,
}

impl Auditor {
    /// Queues a request's audit record (a request refused before admission, which has no
    /// settlement to queue it); when the database refuses, writes it on its own instead.
    pub async fn queue(&self, at: DateTime<Utc>, key: &str, record: &Value) {
        let queued = async {
            sqlx::query("INSERT INTO llmlite_audit_queue (at, record) VALUES ($1, $2)")
                .bind(at)
                .bind(record.to_string())
                .persistent(false)
                .execute(self.db.pool().await?)
                .await?;
            Ok::<_, AuditError>(())
        };
        if let Err(e) = queued.await {
            tracing::warn!(key, error = %e, "audit record not queued; written on its own");
            self.write(key, record).await;
        }
    }

    /// Ships queued request records to the sink, oldest first, as JSON Lines objects of up to
    /// 4,096 records, one per day they arrived on. Ships nothing while the queue holds less
    /// than [`SHIP_MIN_BYTES`] and its oldest record is younger than [`SHIP_WITHIN`], unless
    /// `now` is set (a drain, a test). One shipper at a time: the others return at once. The
    /// records leave the queue only in the transaction that wrote their object, so a failed
    /// write keeps them; a crash between the write and the commit ships them again in another
    /// object (readers keep one record per `request_id`).
    pub async fn ship_requests(&self, now: bool) -> Result<Shipped, AuditError> {
        let pool = self.db.pool().await?;
        let mut shipped = Shipped::default();
        loop {
            let mut tx = pool.begin().await?;
            let ours: Option<i32> = sqlx::query_scalar(
                "SELECT id FROM llmlite_audit_shipper WHERE id = 1 FOR UPDATE SKIP LOCKED",
            )
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await?;
            if ours.is_none() {
                return Ok(shipped);
            }
            let rows: Vec<(i64, DateTime<Utc>, String)> = sqlx::query_as(
                "SELECT id, at, record FROM llmlite_audit_queue ORDER BY id LIMIT $1",
            )
            .bind(SHIP_BATCH)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
            let bytes: usize = rows.iter().map(|(_, _, r)| r.len() + 1).sum();
            let due = rows.first().is_some_and(|(_, at, _)| {
                now || bytes >= SHIP_MIN_BYTES
                    || (Utc::now() - *at)
                        .to_std()
                        .is_ok_and(|age| age >= SHIP_WITHIN)
            });
            if !due {
                return Ok(shipped);
            }
            let full = rows.len() as i64 == SHIP_BATCH;
            let mut written: Vec<i64> = Vec::with_capacity(rows.len());
            for day in rows.chunk_by(|a, b| a.1.date_naive() == b.1.date_naive()) {
                let (Some(first), Some(last)) = (day.first(), day.last()) else {
                    continue;
                };
                let mut body = Vec::with_capacity(day.iter().map(|r| r.2.len() + 1).sum());
                for (_, _, record) in day {
                    body.extend_from_slice(record.as_bytes());
                    body.push(b'\n');
                }
                let key = batch_key(first.1, first.0, last.0);
                match self.deliver_as(&key, &body, "application/x-ndjson").await {
                    Ok(()) => {
                        written.extend(day.iter().map(|r| r.0));
                        shipped.objects += 1;
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "audit batch not written; a later run will");
                    }
                }
            }
            sqlx::query("DELETE FROM llmlite_audit_queue WHERE id = ANY($1)")
                .bind(&written)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            shipped.records += written.len() as u64;
            if written.is_empty() || !full {
                return Ok(shipped);
            }
        }
    }
}

impl AdminAction {
    /// Its id, object key and record.
    fn object(self) -> (i64, String, Vec<u8>) {
        let AdminAction {
            id,
            at,
            request_id,
            actor,
            action,
            object_type,
            object_id,
            before,
            after,
            via,
        } = self;
        let record = serde_json::json!({
            "timestamp": at, "request_id": request_id, "actor": actor, "via": via,
            "action": action, "object_type": object_type, "object_id": object_id,
            "before": before, "after": after,
        });
        (
            id,
            admin_key(at, &action, id),
            serde_json::to_vec(&record).unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_follow_the_documented_layout() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T04:05:06.789Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            request_key(at, "9b2c"),
            "audit/2026/11/29/request-20261129T040506.789Z-9b2c.json"
        );
        assert_eq!(
            admin_key(at, "key.generate", 42),
            "audit/admin/2026/11/29/key-generate-20261129T040506.789Z-42.json"
        );
    }
}
