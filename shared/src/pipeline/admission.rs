//! The pipeline's admission stage: one SQL round trip (`llmlite_admit` in `migrations/`); with
//! settlement's (`llmlite_settle`), a model request costs exactly two database round trips.
//!
//! Admission checks the key (active, not blocked, not expired, model allowed for key, user and
//! team), resets ended budget periods, takes a token from each RPM bucket and the prompt
//! estimate from each TPM bucket, takes a parallel-request lease and reserves the worst-case
//! cost against every budget, or refuses without taking anything. Settlement (`settlement`)
//! records the spend row (idempotent on the request ID) and swaps the reservation for the
//! actual cost.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sqlx::postgres::types::PgInterval;

use crate::catalog::{ServiceTier, TokenPrices};
use crate::clients::bedrock::Candidate;
use crate::clients::guardrail::GuardrailRef;
use crate::error::{ApiError, BudgetScope, Refusal, WorstCase};
use crate::http::RequestId;
use crate::keys::KeyHash;
use crate::money::Money;
use crate::record::Payer;
use crate::state::AppState;

/// How long an admitted request holds its parallel slot and reservation without settling:
/// longer than any Lambda can run, so only a crashed invocation's lease ever expires.
pub const LEASE: Duration = Duration::from_secs(15 * 60);

/// Admission's verdict, as `llmlite_admit` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
enum Verdict {
    Ok,
    NotFound,
    Inactive,
    Blocked,
    Expired,
    ModelNotAllowed,
    RateLimited,
    BudgetExceeded,
    FeatureNotAllowed,
}

/// What admission returns (`llmlite_admission`).
#[derive(Debug, Clone, sqlx::FromRow)]
struct Decision {
    decision: Option<Verdict>,
    scope: Option<String>,
    detail: Option<String>,
    key_id: Option<i64>,
    token: Option<String>,
    key_alias: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    key_spend: Option<Decimal>,
    spend: Option<Decimal>,
    max_budget: Option<Decimal>,
    reserve: Option<Decimal>,
    retry_after: Option<Decimal>,
    rpm_limit: Option<i64>,
    rpm_remaining: Option<Decimal>,
    rpm_reset: Option<Decimal>,
    tpm_limit: Option<i64>,
    tpm_remaining: Option<Decimal>,
    tpm_reset: Option<Decimal>,
    key_pii_policy: Option<serde_json::Value>,
    team_pii_policy: Option<serde_json::Value>,
    allowed: Option<Vec<String>>,
    key_guardrail: Option<serde_json::Value>,
    team_guardrail: Option<serde_json::Value>,
    key_residency: Option<Vec<String>>,
    team_residency: Option<Vec<String>>,
}

/// OpenAI's rate-limit headers, for one kind of limit.
#[derive(Debug, Clone, Copy, Default)]
struct Limit {
    limit: i64,
    remaining: i64,
    reset_secs: f64,
}

/// An admitted request: who it is charged to, what it may use, and the figures for its headers.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub payer: Payer,
    /// The key's spend when it was admitted.
    pub key_spend: Money,
    /// Master-key requests are not limited; they are still recorded.
    pub master: bool,
    /// The chain's models that key, user and team all allow, in order.
    pub allowed: Vec<String>,
    /// The key's and its team's PII policies, over the global one.
    pub key_pii_policy: Option<serde_json::Value>,
    pub team_pii_policy: Option<serde_json::Value>,
    /// The Bedrock guardrail the key names, else its team's (as stored).
    pub guardrail: Option<serde_json::Value>,
    /// The geographies the key's and the team's residency allow (`None`: any).
    pub key_residency: Option<Vec<String>>,
    pub team_residency: Option<Vec<String>>,
    requests: Option<Limit>,
    tokens: Option<Limit>,
}

fn seconds(value: Option<Decimal>) -> f64 {
    value.and_then(|d| d.to_f64()).unwrap_or(0.0).max(0.0)
}

/// OpenAI's duration format for reset headers: `1s`, `6m0s`, `1h2m3s`, `250ms`.
fn reset_text(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).ceil() as u64);
    }
    let total = seconds.ceil() as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn limit_of(
    limit: Option<i64>,
    remaining: Option<Decimal>,
    reset: Option<Decimal>,
) -> Option<Limit> {
    limit.map(|limit| Limit {
        limit,
        remaining: remaining
            .and_then(|r| r.floor().to_i64())
            .unwrap_or(0)
            .max(0),
        reset_secs: seconds(reset),
    })
}

fn write_limit(headers: &mut HeaderMap, kind: &str, limit: Option<Limit>) {
    let Some(limit) = limit else { return };
    let pairs = [
        (format!("x-ratelimit-limit-{kind}"), limit.limit.to_string()),
        (
            format!("x-ratelimit-remaining-{kind}"),
            limit.remaining.to_string(),
        ),
        (
            format!("x-ratelimit-reset-{kind}"),
            reset_text(limit.reset_secs),
        ),
    ];
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}

impl Admitted {
    /// The PII policy for this request: global, then the team's, then the key's. A stored
    /// policy that no longer parses (a custom entity since removed) is skipped, and logged.
    pub fn pii_policy(&self, global: &crate::pii::Policy, known: &[String]) -> crate::pii::Policy {
        [&self.team_pii_policy, &self.key_pii_policy]
            .into_iter()
            .flatten()
            .fold(
                global.clone(),
                |policy, stored| match crate::pii::Policy::parse(stored, known) {
                    Ok(overrides) => policy.overlay(&overrides),
                    Err(e) => {
                        tracing::warn!(key_alias = ?self.payer.key_alias, error = %e, "stored PII policy ignored");
                        policy
                    }
                },
            )
    }

    /// The guardrail this request runs under, if its key or team names one. A stored setting
    /// that no longer reads (only a hand-edited row could hold one) fails closed.
    pub fn guardrail(&self) -> Result<Option<GuardrailRef>, ApiError> {
        self.guardrail
            .as_ref()
            .map(|stored| {
                GuardrailRef::parse(stored).map_err(|e| {
                    tracing::error!(key_alias = ?self.payer.key_alias, error = %e, "stored guardrail unreadable");
                    ApiError::Internal("the key's or team's `guardrail` setting is not valid".into())
                })
            })
            .transpose()
    }

    /// Whether key and team both let a route in `geography` serve this request.
    pub fn residency_allows(&self, geography: &str) -> bool {
        [&self.key_residency, &self.team_residency]
            .into_iter()
            .flatten()
            .all(|allowed| allowed.iter().any(|g| g == geography))
    }

    /// The rate-limit headers for this request.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        write_limit(headers, "requests", self.requests);
        write_limit(headers, "tokens", self.tokens);
    }
}

/// The most a request can cost on one model: the estimate at the dearest price a prompt token
/// can have (the input price, or a cache write's: the 1-hour one when the request asks for it)
/// plus every output token it may produce at the output price.
pub fn worst_case_cost(
    estimate: u64,
    prices: &TokenPrices,
    max_tokens: u32,
    cache_1h: bool,
) -> Money {
    prices.dearest_input(cache_1h) * estimate + prices.output * u64::from(max_tokens)
}

/// The refusal of a paid feature `llmlite_admit` found forbidden: by `scope`'s `setting`.
fn feature_refused(scope: Option<&str>, setting: Option<&str>, asked: &impl Candidate) -> ApiError {
    let scope = match scope {
        Some("team") => "team",
        _ => "key",
    };
    match setting {
        Some("allowed_service_tiers") => ApiError::FeatureNotAllowed {
            what: format!(
                "service tier `{}`",
                asked.service_tier().map_or("default", ServiceTier::as_str)
            ),
            scope,
            setting: "allowed_service_tiers",
            param: "service_tier",
        },
        Some("residency") => ApiError::FeatureNotAllowed {
            what: format!(
                "model `{}` on any route its residency allows (the model is served from {})",
                asked.model().alias,
                served_from(asked)
            ),
            scope,
            setting: "residency",
            param: "model",
        },
        _ => ApiError::FeatureNotAllowed {
            what: "1-hour prompt caching (`cache_control.ttl: \"1h\"`)".to_owned(),
            scope,
            setting: "allow_cache_1h",
            param: "cache_control.ttl",
        },
    }
}

/// The geographies that serve `asked`'s model: `eu`, `global`.
fn served_from(asked: &impl Candidate) -> String {
    let mut geographies: Vec<&str> = asked.model().routes().map(|m| m.geography()).collect();
    geographies.dedup();
    geographies
        .iter()
        .map(|g| format!("`{g}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn interval(duration: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Admits a request by the key `raw_key` (or the master key) for the model it names, served by
/// `plan` (that model, then its fallbacks), in one round trip. `alias` is the name the client
/// used.
pub async fn admit(
    state: &AppState,
    raw_key: &str,
    alias: &str,
    plan: &[impl Candidate],
    request_id: RequestId,
    estimate: u64,
) -> Result<Admitted, Refusal> {
    let chain: Vec<String> = std::iter::once(alias.to_owned())
        .chain(plan.iter().skip(1).map(|p| p.model().alias.to_string()))
        .collect();
    if state.config.master_key.matches(raw_key).await {
        return Ok(Admitted {
            payer: Payer {
                key_id: None,
                key_hash: Some(KeyHash::of(raw_key)),
                presented_key_hash: Some(KeyHash::of(raw_key)),
                key_alias: Some("master_key".to_owned()),
                user_id: None,
                team_id: None,
            },
            key_spend: Money::ZERO,
            master: true,
            allowed: chain,
            key_pii_policy: None,
            team_pii_policy: None,
            guardrail: None,
            key_residency: None,
            team_residency: None,
            requests: None,
            tokens: None,
        });
    }
    if !raw_key.starts_with("sk-") {
        return Err(ApiError::InvalidApiKey.into());
    }
    let reserves: Vec<Decimal> = plan
        .iter()
        .map(|p| worst_case_cost(estimate, p.prices(), p.max_tokens(), p.cache_1h()).amount())
        .collect();
    let asked = plan
        .first()
        .ok_or_else(|| ApiError::Internal("admission without a model".into()))?;
    let estimate_cost = asked.prices().input * estimate;
    let geographies: Vec<&str> = plan.iter().map(|p| p.model().geography()).collect();
    let decision: Decision = sqlx::query_as(
        "SELECT * FROM llmlite_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(KeyHash::of(raw_key).as_str())
    .bind(&chain)
    .bind(&reserves)
    .bind(&asked.model().bedrock_model_id)
    .bind(request_id.to_string())
    .bind(state.clock.now())
    .bind(i64::try_from(estimate).unwrap_or(i64::MAX))
    .bind(estimate_cost.amount())
    .bind(interval(LEASE))
    .bind(Decimal::from(state.rate_period.as_secs().max(1)))
    .bind(asked.cache_1h())
    .bind(asked.service_tier().map(ServiceTier::as_str))
    .bind(&geographies)
    .persistent(false)
    .fetch_one(state.db.pool().await?)
    .await
    .map_err(ApiError::from)?;
    let requests = limit_of(
        decision.rpm_limit,
        decision.rpm_remaining,
        decision.rpm_reset,
    );
    let tokens = limit_of(
        decision.tpm_limit,
        decision.tpm_remaining,
        decision.tpm_reset,
    );
    let scope = match decision.scope.as_deref() {
        Some("user") => BudgetScope::User,
        Some("team") => BudgetScope::Team,
        _ => BudgetScope::Key,
    };
    let Some(verdict) = decision.decision else {
        return Err(ApiError::Internal("admission returned no decision".into()).into());
    };
    match verdict {
        Verdict::Ok => Ok(Admitted {
            payer: Payer {
                key_id: decision.key_id,
                key_hash: decision
                    .token
                    .as_deref()
                    .and_then(KeyHash::from_key_or_hash),
                // During a rotation grace period the old key is presented and the row (its
                // current hash) is charged.
                presented_key_hash: Some(KeyHash::of(raw_key)),
                key_alias: decision.key_alias,
                user_id: decision.user_id,
                team_id: decision.team_id,
            },
            key_spend: Money::new(decision.key_spend.unwrap_or_default()),
            master: false,
            allowed: decision.allowed.unwrap_or_default(),
            key_pii_policy: decision.key_pii_policy,
            team_pii_policy: decision.team_pii_policy,
            guardrail: decision.key_guardrail.or(decision.team_guardrail),
            key_residency: decision.key_residency,
            team_residency: decision.team_residency,
            requests,
            tokens,
        }),
        Verdict::NotFound => Err(ApiError::InvalidApiKey.into()),
        Verdict::Inactive => Err(ApiError::InactiveKey.into()),
        Verdict::Blocked => Err(ApiError::BlockedKey.into()),
        Verdict::Expired => Err(ApiError::ExpiredKey.into()),
        Verdict::ModelNotAllowed => Err(ApiError::ModelNotAllowed {
            model: alias.to_owned(),
        }
        .into()),
        Verdict::FeatureNotAllowed => {
            Err(
                feature_refused(decision.scope.as_deref(), decision.detail.as_deref(), asked)
                    .into(),
            )
        }
        Verdict::BudgetExceeded => {
            let spend = decision.spend.unwrap_or_default();
            let max_budget = decision.max_budget.unwrap_or_default();
            // The prompt and one output token on the model asked for: the least that could run.
            let least = worst_case_cost(estimate, asked.prices(), 1, asked.cache_1h()).amount();
            Err(ApiError::BudgetExceeded {
                scope,
                spend,
                max_budget,
                worst_case: decision.reserve.map(|cost| WorstCase {
                    cost,
                    max_tokens: asked.max_tokens(),
                    lower_max_tokens_fits: least <= max_budget - spend,
                }),
            }
            .into())
        }
        Verdict::RateLimited => {
            let retry_after = seconds(decision.retry_after);
            let what = match decision.detail.as_deref() {
                Some("tpm") => format!(
                    "tokens per minute: limit {}, {} remaining",
                    decision.tpm_limit.unwrap_or(0),
                    decision
                        .tpm_remaining
                        .and_then(|r| r.floor().to_i64())
                        .unwrap_or(0)
                        .max(0)
                ),
                Some("parallel") => "parallel requests: the limit is in use".to_owned(),
                _ => format!(
                    "requests per minute: limit {}, 0 remaining",
                    decision.rpm_limit.unwrap_or(0)
                ),
            };
            let retry_after_secs = retry_after.ceil().max(1.0) as u64;
            let mut headers = HeaderMap::new();
            write_limit(&mut headers, "requests", requests);
            write_limit(&mut headers, "tokens", tokens);
            Err(Refusal {
                headers: Some(Box::new(headers)),
                ..Refusal::from(ApiError::RateLimited {
                    message: format!(
                        "{} rate limit reached ({what}); retry in {retry_after_secs} s",
                        scope.as_str()
                    ),
                    retry_after_secs,
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_headers_use_openais_duration_format() {
        assert_eq!(reset_text(0.25), "250ms");
        assert_eq!(reset_text(1.0), "1s");
        assert_eq!(reset_text(59.2), "1m0s");
        assert_eq!(reset_text(360.0), "6m0s");
        assert_eq!(reset_text(3723.0), "1h2m3s");
    }
}
