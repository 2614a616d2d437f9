//! Erasure on request (the LLD's "key deletion removes all associated data"): `POST /user/delete`
//! and `POST /key/delete` with `"erase": true`.
//!
//! In one transaction, for each erased user:
//! - the user and every key they own are removed (rows deleted, with their rotation grace
//!   periods and rate buckets);
//! - in spend rows, `user_id` becomes the user's pseudonym, and `end_user` values the user's
//!   rows carry (or that name the user or their e-mail anywhere) become pseudonyms of their own;
//!   the user's rows also lose `key_alias`, the client address and their free-text `metadata`.
//!   Amounts, tokens, models and times stay, so totals by day and model still add up;
//! - in the daily rollups, `user_id` becomes the pseudonym;
//! - the admin-action rows that name the user or their e-mail get the pseudonym instead, and the
//!   user's and keys' rows lose their free text (`llmlite_erase_admin_actions`, the one path
//!   around the audit table's append-only grant);
//! - audit records still waiting in the outbox are rewritten the same way;
//! - one admin action, `user.erase`, records the pseudonym and the counts: never the erased data.
//!
//! A key erasure does the same for the keys' own rows (its user stays). An erasure is refused
//! (409) while one of the keys has a request in flight, or a lost lease the rollup has yet to
//! charge: settling it afterwards would write the erased data back.
//!
//! A pseudonym is `erased-<kind>-<24 hex>`: HMAC-SHA256 of the kind and the value under the
//! pseudonym key, so one ID always gets one pseudonym (in every table, and if erased twice) and
//! cannot be recomputed without the key. The key is `LLMLITE_PSEUDONYM_SECRET` when set, else a
//! random key the database keeps (`litellm_proxy_config`), made on first use.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};

use super::Action;
use crate::auth::Caller;
use crate::crypto::hmac_sha256;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::state::AppState;

/// Where the database keeps the pseudonym key when no secret is configured.
const KEY_PARAM: &str = "llmlite_pseudonym_key";

/// The pseudonym key: the configured secret's hash, or the database's own random key.
pub async fn pseudonym_key(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
) -> Result<[u8; 32], ApiError> {
    if let Some(secret) = &state.config.pseudonym_secret {
        return Ok(hmac_sha256(
            b"llmlite pseudonym key v1",
            secret.expose().as_bytes(),
        ));
    }
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    // Two first erasures at once: one insert wins, both read the winner.
    sqlx::query(
        "INSERT INTO litellm_proxy_config (param_name, param_value) VALUES ($1, to_jsonb($2::text))
         ON CONFLICT (param_name) DO NOTHING",
    )
    .bind(KEY_PARAM)
    .bind(hex::encode(fresh))
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    let stored: String = sqlx::query_scalar(
        "SELECT param_value #>> '{}' FROM litellm_proxy_config WHERE param_name = $1",
    )
    .bind(KEY_PARAM)
    .persistent(false)
    .fetch_one(&mut **tx)
    .await?;
    let bytes = hex::decode(stored.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ApiError::Internal("the stored pseudonym key is not 32 hex bytes".into()))?;
    Ok(bytes)
}

/// The pseudonym of `value` of `kind` (`user`, `email`, `end_user`).
pub fn pseudonym(key: &[u8; 32], kind: &str, value: &str) -> String {
    let mac = hmac_sha256(key, format!("{kind}\0{value}").as_bytes());
    format!("erased-{kind}-{}", &hex::encode(mac)[..24])
}

/// What one erasure changed, by table.
#[derive(Debug, Default)]
pub struct Counts(BTreeMap<&'static str, u64>);

impl Counts {
    fn add(&mut self, what: &'static str, n: u64) {
        *self.0.entry(what).or_default() += n;
    }

    pub fn to_json(&self) -> Value {
        json!(self.0)
    }
}

/// The keys being erased: their hashes and immutable ids.
struct Keys {
    tokens: Vec<String>,
    ids: Vec<String>,
}

async fn keys_where(
    tx: &mut Transaction<'_, Postgres>,
    condition: &str,
    value: &[String],
) -> Result<Keys, ApiError> {
    // In token order, locked: as every other writer of keys locks them.
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT token, key_id FROM litellm_verificationtoken WHERE {condition}
         ORDER BY token FOR UPDATE"
    )))
    .bind(value)
    .persistent(false)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Keys {
        tokens: rows.iter().map(|(t, _)| t.clone()).collect(),
        ids: rows.iter().map(|(_, id)| id.to_string()).collect(),
    })
}

/// Refuses while any of the keys or users has a request in flight or a lost lease uncharged.
async fn nothing_in_flight(
    tx: &mut Transaction<'_, Postgres>,
    keys: &Keys,
    users: &[String],
) -> Result<(), ApiError> {
    let busy: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM llmlite_inflight
          WHERE token = ANY($1) OR key_id::text = ANY($2) OR user_id = ANY($3)",
    )
    .bind(&keys.tokens)
    .bind(&keys.ids)
    .bind(users)
    .persistent(false)
    .fetch_one(&mut **tx)
    .await?;
    if busy > 0 {
        return Err(ApiError::Conflict(format!(
            "{busy} request(s) of these keys are in flight or await their lost-lease charge: \
             block the keys (/key/block), let them settle (the daily rollup charges lost \
             leases), then erase"
        )));
    }
    Ok(())
}

/// Pseudonymises the `end_user` values of the spend rows matched by `scope` (a condition on
/// `$1` = key hashes, `$2` = user IDs, `$3` = the erased values themselves).
async fn pseudonymise_end_users(
    tx: &mut Transaction<'_, Postgres>,
    key: &[u8; 32],
    keys: &Keys,
    users: &[String],
    erased_values: &[String],
    counts: &mut Counts,
) -> Result<(), ApiError> {
    let scope = "api_key = ANY($1) OR user_id = ANY($2) OR end_user = ANY($3)";
    let values: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT end_user FROM litellm_spend
          WHERE end_user IS NOT NULL AND end_user NOT LIKE 'erased-%' AND ({scope})"
    )))
    .bind(&keys.tokens)
    .bind(users)
    .bind(erased_values)
    .persistent(false)
    .fetch_all(&mut **tx)
    .await?;
    let pseudonyms: Vec<String> = values
        .iter()
        .map(|v| pseudonym(key, "end_user", v))
        .collect();
    let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE litellm_spend s SET end_user = m.p
           FROM unnest($4::text[], $5::text[]) AS m(v, p)
          WHERE s.end_user = m.v AND ({scope})"
    )))
    .bind(&keys.tokens)
    .bind(users)
    .bind(erased_values)
    .bind(&values)
    .bind(&pseudonyms)
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    counts.add("spend_end_users", updated.rows_affected());
    Ok(())
}

/// Removes the keys' rows and everything hanging off them.
async fn remove_keys(
    tx: &mut Transaction<'_, Postgres>,
    keys: &Keys,
    counts: &mut Counts,
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM llmlite_deprecated_token WHERE active_token = ANY($1)")
        .bind(&keys.tokens)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM llmlite_rate_bucket WHERE scope = 'key' AND (scope_id = ANY($1) OR scope_id = ANY($2))",
    )
    .bind(&keys.tokens)
    .bind(&keys.ids)
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    let removed = sqlx::query("DELETE FROM litellm_verificationtoken WHERE token = ANY($1)")
        .bind(&keys.tokens)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    counts.add("keys", removed.rows_affected());
    Ok(())
}

/// Rewrites pending outbox records and admin actions: `tokens` become `pseudonyms`; the free
/// text of `objects`' admin actions goes.
async fn rewrite_records(
    tx: &mut Transaction<'_, Postgres>,
    tokens: &[String],
    pseudonyms: &[String],
    objects: &[String],
    counts: &mut Counts,
) -> Result<(), ApiError> {
    for (token, pseudonym) in tokens.iter().zip(pseudonyms) {
        // Request audit records not shipped yet are rows like any other: they change with the
        // spend rows (records already in the bucket are write-once and keep IDs).
        let queued = sqlx::query(
            "UPDATE llmlite_audit_queue
                SET record = replace(record, to_jsonb($1::text)::text, to_jsonb($2::text)::text)
              WHERE strpos(record, to_jsonb($1::text)::text) > 0",
        )
        .bind(token)
        .bind(pseudonym)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        counts.add("queued_records", queued.rows_affected());
        let outbox = sqlx::query(
            "UPDATE llmlite_audit_outbox
                SET record = replace(record::text, to_jsonb($1::text)::text,
                                     to_jsonb($2::text)::text)::jsonb
              WHERE strpos(record::text, to_jsonb($1::text)::text) > 0",
        )
        .bind(token)
        .bind(pseudonym)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        counts.add("outbox_records", outbox.rows_affected());
    }
    // The free text a queued request record holds of an erased key, as its spend rows lose it:
    // the alias, the client's address and user agent.
    let scrubbed = sqlx::query(
        "UPDATE llmlite_audit_queue
            SET record = (record::jsonb || '{\"key_alias\": null, \"client_ip\": null,
                                            \"user_agent\": null}'::jsonb)::text
          WHERE record::jsonb ->> 'key_hash' = ANY($1)
             OR record::jsonb ->> 'presented_key_hash' = ANY($1)",
    )
    .bind(objects)
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    counts.add("queued_records", scrubbed.rows_affected());
    let actions: i64 = sqlx::query_scalar("SELECT llmlite_erase_admin_actions($1, $2, $3)")
        .bind(tokens)
        .bind(pseudonyms)
        .bind(objects)
        .persistent(false)
        .fetch_one(&mut **tx)
        .await?;
    counts.add("admin_actions", u64::try_from(actions).unwrap_or_default());
    Ok(())
}

/// Erases `user_ids` (which the caller has checked exist) and their keys. Returns each user's
/// pseudonym.
pub async fn erase_users(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    caller: &Caller,
    request_id: RequestId,
    now: DateTime<Utc>,
    user_ids: &[String],
) -> Result<Vec<String>, ApiError> {
    let key = pseudonym_key(state, tx).await?;
    let keys = keys_where(tx, "user_id = ANY($1)", user_ids).await?;
    let emails: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT user_id, user_email FROM litellm_usertable WHERE user_id = ANY($1)
          ORDER BY user_id FOR UPDATE",
    )
    .bind(user_ids)
    .persistent(false)
    .fetch_all(&mut **tx)
    .await?;
    nothing_in_flight(tx, &keys, user_ids).await?;

    let mut pseudonyms_out = Vec::new();
    for user_id in user_ids {
        let email = emails
            .iter()
            .find(|(id, _)| id == user_id)
            .and_then(|(_, e)| e.clone());
        let mut counts = Counts::default();
        let p = pseudonym(&key, "user", user_id);
        let user_keys = keys_where(tx, "user_id = ANY($1)", std::slice::from_ref(user_id)).await?;
        let mut erased_values = vec![user_id.clone()];
        let mut replacements = vec![p.clone()];
        if let Some(email) = &email {
            erased_values.push(email.clone());
            replacements.push(pseudonym(&key, "email", &email.to_lowercase()));
        }
        pseudonymise_end_users(
            tx,
            &key,
            &user_keys,
            std::slice::from_ref(user_id),
            &erased_values,
            &mut counts,
        )
        .await?;
        let spend = sqlx::query(
            "UPDATE litellm_spend
                SET user_id = CASE WHEN user_id = $1 THEN $2 ELSE user_id END,
                    key_alias = NULL, requester_ip_address = NULL,
                    metadata = jsonb_build_object('erased', $2::text)
              WHERE user_id = $1 OR api_key = ANY($3)",
        )
        .bind(user_id)
        .bind(&p)
        .bind(&user_keys.tokens)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        counts.add("spend_rows", spend.rows_affected());
        let rollups =
            sqlx::query("UPDATE litellm_dailyuserspend SET user_id = $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(&p)
                .persistent(false)
                .execute(&mut **tx)
                .await?;
        counts.add("rollup_rows", rollups.rows_affected());
        sqlx::query("DELETE FROM llmlite_rate_bucket WHERE scope = 'user' AND scope_id = $1")
            .bind(user_id)
            .persistent(false)
            .execute(&mut **tx)
            .await?;
        remove_keys(tx, &user_keys, &mut counts).await?;
        let removed = sqlx::query("DELETE FROM litellm_usertable WHERE user_id = $1")
            .bind(user_id)
            .persistent(false)
            .execute(&mut **tx)
            .await?;
        counts.add("users", removed.rows_affected());
        let mut objects = vec![user_id.clone()];
        objects.extend(user_keys.tokens.iter().cloned());
        rewrite_records(tx, &erased_values, &replacements, &objects, &mut counts).await?;
        Action {
            at: now,
            request_id,
            caller,
            action: "user.erase",
            object_type: "user",
            object_id: &p,
            before: None,
            after: Some(json!({ "pseudonym": p, "erased": counts.to_json() })),
        }
        .record(tx)
        .await?;
        pseudonyms_out.push(p);
    }
    Ok(pseudonyms_out)
}

/// Erases the keys `tokens` (which the caller has locked and checked exist): their rows go, and
/// their spend rows lose the alias, the client address, `end_user` and free-text metadata.
pub async fn erase_keys(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    caller: &Caller,
    request_id: RequestId,
    now: DateTime<Utc>,
    tokens: &[String],
) -> Result<(), ApiError> {
    let key = pseudonym_key(state, tx).await?;
    let keys = keys_where(tx, "token = ANY($1)", tokens).await?;
    nothing_in_flight(tx, &keys, &[]).await?;
    for token in &keys.tokens {
        let mut counts = Counts::default();
        let one = keys_where(tx, "token = ANY($1)", std::slice::from_ref(token)).await?;
        pseudonymise_end_users(tx, &key, &one, &[], &[], &mut counts).await?;
        let spend = sqlx::query(
            "UPDATE litellm_spend
                SET key_alias = NULL, requester_ip_address = NULL,
                    metadata = jsonb_build_object('erased', 'key')
              WHERE api_key = $1",
        )
        .bind(token)
        .persistent(false)
        .execute(&mut **tx)
        .await?;
        counts.add("spend_rows", spend.rows_affected());
        remove_keys(tx, &one, &mut counts).await?;
        rewrite_records(tx, &[], &[], std::slice::from_ref(token), &mut counts).await?;
        Action {
            at: now,
            request_id,
            caller,
            action: "key.erase",
            object_type: "key",
            object_id: token,
            before: None,
            after: Some(json!({ "erased": counts.to_json() })),
        }
        .record(tx)
        .await?;
    }
    Ok(())
}
