//! Admin request fields: parsing (a JSON `null` clears a field on update, a missing field leaves
//! it alone), validation against the documented limits, and rendering back in LiteLLM's shapes.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use sqlx::postgres::types::PgInterval;

use crate::durations::DurationSpec;
use crate::error::ApiError;

pub const MAX_TEXT: usize = 256;
pub const MAX_MODELS: usize = 100;
pub const MAX_MODEL_NAME: usize = 128;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_BUDGET: i64 = 1_000_000_000;
pub const MAX_RATE: i64 = 1_000_000_000_000;
pub const MAX_PARALLEL: i64 = 100_000;

/// For update bodies: `Some(None)` when the field is `null`, `None` when it is absent.
pub fn patch<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A dollar amount as JSON sends it: a number (`10.5`, read by its shortest decimal text, so
/// what the client wrote is what is stored) or a decimal string (`"10.50"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usd(pub Decimal);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let text = match &value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => return Err(serde::de::Error::custom("a budget must be a number")),
        };
        Decimal::from_str(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .map(Usd)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a dollar amount")))
    }
}

/// A duration string (`30d`), parsed when the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub DurationSpec);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Duration).map_err(serde::de::Error::custom)
    }
}

/// What keys, users and teams all carry, as a request changes it.
#[derive(Debug, Default, Deserialize)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "patch")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch")]
    max_budget: Option<Option<Usd>>,
    #[serde(default, deserialize_with = "patch")]
    soft_budget: Option<Option<Usd>>,
    #[serde(default, deserialize_with = "patch")]
    budget_duration: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "patch")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch")]
    rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch")]
    max_parallel_requests: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch")]
    metadata: Option<Option<Map<String, Value>>>,
}

impl LimitsPatch {
    /// The first limit this patch removes (names as JSON `null`): `tpm_limit`, `rpm_limit`,
    /// `max_budget` or `max_parallel_requests`. (`budget_duration: null` only makes a budget
    /// last for good; it removes no limit.)
    pub fn cleared_limit(&self) -> Option<&'static str> {
        [
            ("tpm_limit", matches!(self.tpm_limit, Some(None))),
            ("rpm_limit", matches!(self.rpm_limit, Some(None))),
            ("max_budget", matches!(self.max_budget, Some(None))),
            (
                "max_parallel_requests",
                matches!(self.max_parallel_requests, Some(None)),
            ),
        ]
        .into_iter()
        .find_map(|(name, cleared)| cleared.then_some(name))
    }
}

/// What keys, users and teams all carry, as stored: a model allow-list (empty: every model),
/// budgets, the budget period, rate limits and metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Limits {
    pub models: Vec<String>,
    pub max_budget: Option<Decimal>,
    pub soft_budget: Option<Decimal>,
    pub budget_duration: Option<PgInterval>,
    pub budget_reset_at: Option<DateTime<Utc>>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i32>,
    pub metadata: Value,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            models: Vec::new(),
            max_budget: None,
            soft_budget: None,
            budget_duration: None,
            budget_reset_at: None,
            tpm_limit: None,
            rpm_limit: None,
            max_parallel_requests: None,
            metadata: Value::Object(Map::new()),
        }
    }
}

/// The columns of [`Limits`], for SELECT lists.
pub const LIMIT_COLUMNS: &str = "models, max_budget, soft_budget, budget_duration, \
    budget_reset_at, tpm_limit, rpm_limit, max_parallel_requests, metadata";

impl Limits {
    /// A new budget period starts now.
    pub fn set_budget_period(&mut self, period: Option<DurationSpec>, now: DateTime<Utc>) {
        self.budget_duration = period.map(|d| d.interval());
        self.budget_reset_at = period.map(|d| d.after(now));
    }

    /// Applies what the request names, then checks the documented limits.
    pub fn apply(&mut self, patch: &LimitsPatch, now: DateTime<Utc>) -> Result<(), ApiError> {
        if let Some(v) = &patch.models {
            self.models = v.clone().unwrap_or_default();
        }
        if let Some(v) = patch.max_budget {
            self.max_budget = v.map(|u| u.0);
        }
        if let Some(v) = patch.soft_budget {
            self.soft_budget = v.map(|u| u.0);
        }
        if let Some(v) = patch.budget_duration {
            self.set_budget_period(v.map(|d| d.0), now);
        }
        if let Some(v) = patch.tpm_limit {
            self.tpm_limit = v;
        }
        if let Some(v) = patch.rpm_limit {
            self.rpm_limit = v;
        }
        if let Some(v) = patch.max_parallel_requests {
            limit("max_parallel_requests", v, MAX_PARALLEL)?;
            self.max_parallel_requests = v.and_then(|n| i32::try_from(n).ok());
        }
        if let Some(v) = &patch.metadata {
            self.metadata = Value::Object(v.clone().unwrap_or_default());
        }
        models(&self.models)?;
        budget("max_budget", self.max_budget)?;
        budget("soft_budget", self.soft_budget)?;
        limit("tpm_limit", self.tpm_limit, MAX_RATE)?;
        limit("rpm_limit", self.rpm_limit, MAX_RATE)?;
        metadata(self.metadata.as_object().unwrap_or(&Map::new()))
    }

    /// Adds these fields to a response object.
    pub fn write_json(&self, out: &mut Value) {
        out["models"] = json!(self.models);
        out["max_budget"] = optional_money(self.max_budget);
        out["soft_budget"] = optional_money(self.soft_budget);
        out["budget_duration"] = duration(self.budget_duration.as_ref());
        out["budget_reset_at"] = json!(self.budget_reset_at);
        out["tpm_limit"] = json!(self.tpm_limit);
        out["rpm_limit"] = json!(self.rpm_limit);
        out["max_parallel_requests"] = json!(self.max_parallel_requests);
        out["metadata"] = self.metadata.clone();
    }
}

/// The paid Bedrock features a key or a team may be refused, as a request changes them: 1-hour
/// prompt caching and the service tiers; the guardrail it runs under, and the geographies that
/// may serve it. `null` restores the default.
#[derive(Debug, Default, Deserialize)]
pub struct FeaturesPatch {
    #[serde(default, deserialize_with = "patch")]
    allow_cache_1h: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch")]
    allowed_service_tiers: Option<Option<Vec<String>>>,
    /// Any JSON here: [`Features::apply`] checks it and names the field.
    #[serde(default, deserialize_with = "patch")]
    guardrail: Option<Option<Value>>,
    #[serde(default, deserialize_with = "patch")]
    residency: Option<Option<Value>>,
}

/// The service tiers a key or team may name when it sets none.
pub const DEFAULT_SERVICE_TIERS: [&str; 2] = ["default", "flex"];
/// Every tier `allowed_service_tiers` may list.
pub const SERVICE_TIERS: [&str; 3] = ["default", "flex", "priority"];

/// The paid Bedrock features of a key or team, as stored (`None`: the default: 1-hour caching
/// allowed, tiers `default` and `flex`). Admission checks them (`llmlite_admit`); of a key and
/// its team the narrower wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Features {
    pub allow_cache_1h: Option<bool>,
    pub allowed_service_tiers: Option<Vec<String>>,
    /// The Bedrock guardrail (`{"id", "version"}`) every request runs under; a key's wins over
    /// its team's.
    pub guardrail: Option<Value>,
    /// The geographies whose inference profiles may serve it (`["eu"]`; `None`: any the catalog
    /// lists); of a key and its team both must allow a route.
    pub residency: Option<Vec<String>>,
}

impl Features {
    /// Applies what the request names, then checks it.
    pub fn apply(&mut self, patch: &FeaturesPatch) -> Result<(), ApiError> {
        if let Some(v) = patch.allow_cache_1h {
            self.allow_cache_1h = v;
        }
        if let Some(v) = &patch.allowed_service_tiers {
            let mut tiers = v.clone();
            if v.iter()
                .flatten()
                .any(|t| !SERVICE_TIERS.contains(&t.as_str()))
            {
                return Err(ApiError::invalid_param(
                    "allowed_service_tiers",
                    "`allowed_service_tiers` lists only `default`, `flex` and `priority`",
                ));
            }
            if let Some(tiers) = &mut tiers {
                tiers.sort_by_key(|t| SERVICE_TIERS.iter().position(|s| s == t));
                tiers.dedup();
            }
            self.allowed_service_tiers = tiers;
        }
        if let Some(v) = &patch.residency {
            let known = |g: &String| {
                crate::catalog::GEOGRAPHIES.contains(&g.as_str()) || g == crate::catalog::IN_REGION
            };
            let list: Option<Vec<String>> = v
                .as_ref()
                .map(|value| serde_json::from_value(value.clone()).unwrap_or_default());
            self.residency = match (v, list) {
                (None, _) => None,
                (Some(_), Some(mut list)) if !list.is_empty() && list.iter().all(known) => {
                    list.sort();
                    list.dedup();
                    Some(list)
                }
                (Some(_), _) => {
                    return Err(ApiError::invalid_param(
                        "residency",
                        "`residency` lists one or more of `eu`, `us`, `us-gov`, `apac`, `jp`, \
                         `au`, `ca`, `global` and `in_region` (null: any route the catalog lists)",
                    ));
                }
            };
        }
        if let Some(v) = &patch.guardrail {
            self.guardrail = match v {
                None => None,
                Some(value) => {
                    let guardrail = crate::clients::guardrail::GuardrailRef::parse(value)
                        .map_err(|e| ApiError::invalid_param("guardrail", e))?;
                    Some(json!({"id": guardrail.id, "version": guardrail.version}))
                }
            };
        }
        Ok(())
    }

    /// Adds these fields to a response object, defaults filled in.
    pub fn write_json(&self, out: &mut Value) {
        out["allow_cache_1h"] = json!(self.allow_cache_1h.unwrap_or(true));
        out["allowed_service_tiers"] = match &self.allowed_service_tiers {
            Some(tiers) => json!(tiers),
            None => json!(DEFAULT_SERVICE_TIERS),
        };
        out["guardrail"] = self.guardrail.clone().unwrap_or(Value::Null);
        out["residency"] = json!(self.residency);
    }
}

/// A `pii_policy` field: a valid policy object (stored as sent), or null to clear it.
pub fn pii_policy(value: Option<&Value>, known: &[String]) -> Result<Option<Value>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::pii::Policy::parse(v, known)
            .map(|_| Some(v.clone()))
            .map_err(|e| ApiError::invalid_param("pii_policy", e)),
    }
}

/// Request fields nobody asked for are refused, not ignored: an admin who sends LiteLLM's
/// `model_max_budget` must learn that llmlite did not apply it.
pub fn no_unknown_fields(unknown: &Map<String, Value>) -> Result<(), ApiError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(field) => Err(ApiError::invalid_param(
            field,
            format!("unknown field `{field}`: llmlite does not support it"),
        )),
    }
}

pub fn text(param: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be 1 to {MAX_TEXT} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid_param(
            param,
            format!("`{param}` must not contain control characters"),
        ));
    }
    Ok(())
}

pub fn optional_text(param: &str, value: Option<&str>) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| text(param, v))
}

pub fn models(list: &[String]) -> Result<(), ApiError> {
    if list.len() > MAX_MODELS {
        return Err(ApiError::invalid_param(
            "models",
            format!("at most {MAX_MODELS} models"),
        ));
    }
    if list.iter().any(|m| {
        m.is_empty() || m.chars().count() > MAX_MODEL_NAME || m.chars().any(char::is_control)
    }) {
        return Err(ApiError::invalid_param(
            "models",
            format!("each model name must be 1 to {MAX_MODEL_NAME} characters"),
        ));
    }
    Ok(())
}

pub fn metadata(map: &Map<String, Value>) -> Result<(), ApiError> {
    let size = serde_json::to_string(map).map_or(usize::MAX, |s| s.len());
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::invalid_param(
            "metadata",
            format!("`metadata` is {size} bytes; the limit is {MAX_METADATA_BYTES}"),
        ));
    }
    if !map.values().all(crate::http::numbers_read_back) {
        return Err(ApiError::invalid_param(
            "metadata",
            "`metadata` numbers must be within ±1e300",
        ));
    }
    Ok(())
}

pub fn budget(param: &str, value: Option<Decimal>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_sign_negative() && !v.is_zero() => Err(ApiError::invalid_param(
            param,
            format!("`{param}` must not be negative"),
        )),
        Some(v) if v > Decimal::from(MAX_BUDGET) => Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be at most {MAX_BUDGET}"),
        )),
        _ => Ok(()),
    }
}

pub fn limit(param: &str, value: Option<i64>, max: i64) -> Result<(), ApiError> {
    match value {
        Some(v) if !(0..=max).contains(&v) => Err(ApiError::invalid_param(
            param,
            format!("`{param}` must be from 0 to {max}"),
        )),
        _ => Ok(()),
    }
}

/// Money in responses: a JSON number, as LiteLLM sends it. Its shortest text is the stored
/// decimal for every amount of up to 15 significant digits.
pub fn money(value: Decimal) -> Value {
    value
        .normalize()
        .to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

pub fn optional_money(value: Option<Decimal>) -> Value {
    value.map_or(Value::Null, money)
}

pub fn duration(value: Option<&PgInterval>) -> Value {
    value
        .and_then(DurationSpec::from_interval)
        .map_or(Value::Null, |d| Value::String(d.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_amounts_keep_what_the_client_wrote() {
        let read = |json: &str| serde_json::from_str::<Usd>(json).map(|u| u.0);
        let dec = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(read("10.0").unwrap(), dec("10"));
        // Exactly one tenth, not the float nearest to it.
        assert_eq!(read("0.1").unwrap(), dec("0.1"));
        assert_eq!(read("\"50.10\"").unwrap(), dec("50.10"));
        assert_eq!(read("1e2").unwrap(), dec("100"));
        assert!(read("true").is_err());
        assert!(read("\"ten\"").is_err());
        assert_eq!(
            money(Decimal::from_str("0.000022").unwrap()).to_string(),
            "0.000022"
        );
        assert_eq!(
            money(Decimal::from_str("50.10").unwrap()).to_string(),
            "50.1"
        );
    }
}
