//! What a `/key/generate` or `/key/update` body asks for, and how it resolves into the values a
//! key stores: the tier's limits first, then every field the request names. Also the rule that
//! only the master key may take limits off a key, and the checks on a key the caller chooses.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::admin::fields::{self, Duration, Features, FeaturesPatch, Limits, LimitsPatch, patch};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::keys::{self, KeyHash, Tier};

/// Refuses a request that would take limits off a key (`tier: "none"`, or a limit given as
/// `null`) unless it comes with the master key: an admin key cannot make an unlimited key.
/// `param` is the name of the tier field (`tier`, or `/user/new`'s `key_tier`).
pub fn unlimited_needs_master(
    caller: &Caller,
    param: &str,
    tier: Option<Tier>,
    limits: Option<&LimitsPatch>,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Master) {
        return Ok(());
    }
    let field = if tier == Some(Tier::Unlimited) {
        Some(param)
    } else {
        limits.and_then(LimitsPatch::cleared_limit)
    };
    match field {
        None => Ok(()),
        Some(field) => Err(ApiError::PermissionDenied(format!(
            "`{field}`: a key without that limit needs the master key (an admin key may set \
             limits, not remove them)"
        ))),
    }
}

/// The body of `/key/generate` and `/key/update`.
#[derive(Debug, Default, Deserialize)]
pub struct KeyRequest {
    /// generate: a caller-chosen raw key; update: the key to change (raw or hash).
    pub(super) key: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    key_alias: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    duration: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "patch")]
    user_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    team_id: Option<Option<String>>,
    blocked: Option<bool>,
    pub(super) tier: Option<Tier>,
    #[serde(default, deserialize_with = "patch")]
    pii_policy: Option<Option<Value>>,
    #[serde(flatten)]
    pub(super) limits: LimitsPatch,
    #[serde(flatten)]
    features: FeaturesPatch,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// The settable fields of a key, resolved and validated.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyValues {
    pub(super) key_alias: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) team_id: Option<String>,
    pub(super) tier: Option<Tier>,
    pub(super) limits: Limits,
    pub(super) expires: Option<DateTime<Utc>>,
    pub(super) blocked: bool,
    pub(super) pii_policy: Option<Value>,
    pub(super) features: Features,
}

/// Sets `tier`'s TPM, RPM, budget and budget period on `limits`, the budget period starting
/// `now`; `none` clears all four.
fn apply_tier(tier: Tier, limits: &mut Limits, now: DateTime<Utc>) {
    let tier = tier.limits();
    limits.tpm_limit = tier.map(|t| t.tpm);
    limits.rpm_limit = tier.map(|t| t.rpm);
    limits.max_budget = tier.map(|t| t.max_budget);
    limits.set_budget_period(tier.map(|t| t.budget_period), now);
}

impl KeyValues {
    /// A new key's values (`/key/generate`): the request's tier, or `default_tier` when it names
    /// none, then the request's fields.
    pub(super) fn new_key(
        request: &KeyRequest,
        default_tier: Tier,
        now: DateTime<Utc>,
        pii_entities: &[String],
    ) -> Result<Self, ApiError> {
        let mut values = KeyValues::default();
        let tier = request.tier.unwrap_or(default_tier);
        values.apply(request, Some(tier), now, pii_entities)?;
        Ok(values)
    }

    /// A new key of `user_id` with `tier`'s limits and nothing else (`/user/new`).
    pub(super) fn for_user(user_id: &str, tier: Tier, now: DateTime<Utc>) -> Self {
        let mut values = KeyValues {
            user_id: Some(user_id.to_owned()),
            tier: Some(tier),
            ..KeyValues::default()
        };
        apply_tier(tier, &mut values.limits, now);
        values
    }

    /// Applies a request: the tier's limits first (`tier`: the request's, or for a new key the
    /// default), then every field it names; then checks them.
    pub(super) fn apply(
        &mut self,
        request: &KeyRequest,
        tier: Option<Tier>,
        now: DateTime<Utc>,
        pii_entities: &[String],
    ) -> Result<(), ApiError> {
        fields::no_unknown_fields(&request.unknown)?;
        if let Some(v) = &request.pii_policy {
            self.pii_policy = fields::pii_policy(v.as_ref(), pii_entities)?;
        }
        self.features.apply(&request.features)?;
        if let Some(tier) = tier {
            self.tier = Some(tier);
            apply_tier(tier, &mut self.limits, now);
        }
        if let Some(v) = &request.key_alias {
            self.key_alias = v.clone();
        }
        if let Some(v) = &request.user_id {
            self.user_id = v.clone();
        }
        if let Some(v) = &request.team_id {
            self.team_id = v.clone();
        }
        if let Some(v) = request.duration {
            // A new duration restarts the lifetime from now; null means never expires.
            self.expires = v.map(|d| d.0.after(now));
        }
        if let Some(v) = request.blocked {
            self.blocked = v;
        }
        self.limits.apply(&request.limits, now)?;
        fields::optional_text("key_alias", self.key_alias.as_deref())?;
        fields::optional_text("user_id", self.user_id.as_deref())?;
        fields::optional_text("team_id", self.team_id.as_deref())
    }
}

/// `key` (raw or hash) as its hash.
pub(super) fn hash_of(key: &str) -> Result<KeyHash, ApiError> {
    KeyHash::from_key_or_hash(key)
        .ok_or_else(|| ApiError::invalid_param("key", "`key` must be a key (`sk-...`) or its hash"))
}

/// How many characters a chosen key has after `sk-`: enough not to be a guessable password,
/// and short enough for any header.
const CHOSEN_KEY_CHARS: std::ops::RangeInclusive<usize> = 16..=200;

/// A raw key the caller chose (in the field `param`), or a fresh one. A chosen key is `sk-` and
/// `[A-Za-z0-9_-]` only: the alphabet the log redactor recognises as a key, so it is redacted
/// wherever it appears. The message never repeats the key.
pub(super) fn new_raw_key(param: &str, chosen: Option<&str>) -> Result<String, ApiError> {
    let Some(raw) = chosen else {
        return Ok(keys::generate());
    };
    let valid = raw.strip_prefix("sk-").is_some_and(|rest| {
        CHOSEN_KEY_CHARS.contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !valid {
        return Err(ApiError::invalid_param(
            param,
            format!(
                "a chosen `{param}` must be `sk-` followed by {} to {} of A-Z, a-z, 0-9, `_` and `-`",
                CHOSEN_KEY_CHARS.start(),
                CHOSEN_KEY_CHARS.end()
            ),
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;
    use crate::durations::DurationSpec;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn request(body: Value) -> KeyRequest {
        serde_json::from_value(body).unwrap()
    }

    /// The values `/key/generate` stores for `body` when the configured default tier is
    /// `default_tier`.
    fn generated(body: Value, default_tier: Tier) -> KeyValues {
        KeyValues::new_key(&request(body), default_tier, now(), &[]).unwrap()
    }

    /// (tpm, rpm, max budget, budget period) of `values`; a budget period starts now.
    fn limits(values: &KeyValues) -> (Option<i64>, Option<i64>, Option<Decimal>, Option<String>) {
        let l = &values.limits;
        let period = l
            .budget_duration
            .map(|d| DurationSpec::from_interval(&d).unwrap());
        assert_eq!(l.budget_reset_at, period.map(|p| p.after(now())));
        (
            l.tpm_limit,
            l.rpm_limit,
            l.max_budget,
            period.map(|p| p.to_string()),
        )
    }

    #[test]
    fn a_key_generated_without_a_tier_gets_the_configured_default_tiers_limits() {
        let standard = generated(json!({}), Tier::Standard);
        assert_eq!(standard.tier, Some(Tier::Standard));
        assert_eq!(
            limits(&standard),
            (
                Some(10_000),
                Some(100),
                Some(Decimal::from(50)),
                Some("30d".into())
            )
        );
        let admin = generated(json!({}), Tier::Admin);
        assert_eq!(admin.tier, Some(Tier::Admin));
        assert_eq!(
            limits(&admin),
            (
                Some(100_000),
                Some(1_000),
                Some(Decimal::from(500)),
                Some("30d".into())
            )
        );
    }

    #[test]
    fn a_tier_the_request_names_wins_over_the_default() {
        let values = generated(json!({"tier": "admin"}), Tier::Standard);
        assert_eq!(values.tier, Some(Tier::Admin));
        assert_eq!(limits(&values).0, Some(100_000));
    }

    #[test]
    fn fields_the_request_names_override_its_tiers_and_the_rest_stay_the_tiers() {
        let values = generated(
            json!({"tier": "admin", "tpm_limit": 5, "max_budget": 7.5, "budget_duration": "1d"}),
            Tier::Standard,
        );
        assert_eq!(values.tier, Some(Tier::Admin));
        assert_eq!(
            limits(&values),
            (
                Some(5),
                Some(1_000),
                Some(Decimal::new(75, 1)),
                Some("1d".into())
            )
        );
    }

    #[test]
    fn a_limit_given_as_null_removes_the_tiers_limit() {
        let values = generated(json!({"tpm_limit": null}), Tier::Standard);
        assert_eq!(
            limits(&values),
            (None, Some(100), Some(Decimal::from(50)), Some("30d".into()))
        );
    }

    #[test]
    fn a_none_tier_key_has_no_rate_limit_no_budget_and_no_budget_period() {
        let values = generated(json!({"tier": "none"}), Tier::Standard);
        assert_eq!(values.tier, Some(Tier::Unlimited));
        assert_eq!(limits(&values), (None, None, None, None));
        assert_eq!(values.limits.budget_reset_at, None);
        // A limit the request names still applies on top of `none`.
        let values = generated(json!({"tier": "none", "rpm_limit": 10}), Tier::Admin);
        assert_eq!(limits(&values), (None, Some(10), None, None));
    }

    #[test]
    fn an_update_without_a_tier_keeps_the_keys_own_limits() {
        let mut values = generated(json!({"tpm_limit": 42}), Tier::Standard);
        values
            .apply(&request(json!({"rpm_limit": 7})), None, now(), &[])
            .unwrap();
        assert_eq!(values.tier, Some(Tier::Standard));
        assert_eq!(
            limits(&values),
            (
                Some(42),
                Some(7),
                Some(Decimal::from(50)),
                Some("30d".into())
            )
        );
    }

    #[test]
    fn an_update_naming_a_tier_resets_the_limits_to_it_before_its_fields() {
        let mut values = generated(json!({"tpm_limit": 42}), Tier::Standard);
        let update = request(json!({"tier": "admin", "rpm_limit": 7}));
        values.apply(&update, update.tier, now(), &[]).unwrap();
        assert_eq!(values.tier, Some(Tier::Admin));
        assert_eq!(
            limits(&values),
            (
                Some(100_000),
                Some(7),
                Some(Decimal::from(500)),
                Some("30d".into())
            )
        );
    }

    #[test]
    fn a_key_made_for_a_new_user_has_its_tiers_limits_and_nothing_else() {
        let values = KeyValues::for_user("alice", Tier::Admin, now());
        assert_eq!(values.user_id.as_deref(), Some("alice"));
        assert_eq!(values.tier, Some(Tier::Admin));
        assert_eq!(
            limits(&values),
            (
                Some(100_000),
                Some(1_000),
                Some(Decimal::from(500)),
                Some("30d".into())
            )
        );
        let unlimited = KeyValues::for_user("bob", Tier::Unlimited, now());
        assert_eq!(limits(&unlimited), (None, None, None, None));
    }

    #[test]
    fn only_the_master_key_may_take_limits_off_a_key() {
        let admin_key = Caller::Key {
            hash: KeyHash::of("sk-admin-key-for-the-test"),
            user_id: Some("root".into()),
            admin: true,
            model_lists: Vec::new(),
        };
        let refused = |param: &str, body: Value| {
            let request = request(body);
            match unlimited_needs_master(&admin_key, param, request.tier, Some(&request.limits)) {
                Err(ApiError::PermissionDenied(message)) => message,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert!(refused("tier", json!({"tier": "none"})).starts_with("`tier`:"));
        assert!(refused("key_tier", json!({"tier": "none"})).starts_with("`key_tier`:"));
        assert!(refused("tier", json!({"tpm_limit": null})).starts_with("`tpm_limit`:"));
        assert!(refused("tier", json!({"max_budget": null})).starts_with("`max_budget`:"));
        let allowed = |caller: &Caller, body: Value| {
            let request = request(body);
            unlimited_needs_master(caller, "tier", request.tier, Some(&request.limits)).is_ok()
        };
        // An admin key may set limits, or make a budget last for good.
        assert!(allowed(
            &admin_key,
            json!({"tier": "admin", "tpm_limit": 1})
        ));
        assert!(allowed(&admin_key, json!({"budget_duration": null})));
        assert!(allowed(
            &Caller::Master,
            json!({"tier": "none", "tpm_limit": null})
        ));
    }
}
