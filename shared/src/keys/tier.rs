//! Key tiers: the named sets of limits a new key starts from (`standard`, `admin`, `none`).
//!
//! They live here, below both users of them: configuration names the default tier
//! (`LLMLITE_DEFAULT_TIER`) and the admin API applies a tier to a key ([`crate::admin::keys`]).

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::durations::{DurationSpec, Unit};

/// The LLD's key tiers. A new key starts from its request's `tier`, or from
/// `LLMLITE_DEFAULT_TIER` when it names none; fields the request names override the tier's.
/// `none` sets no limits: a deliberate choice that needs the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Tier {
    Standard,
    Admin,
    /// `none`: no rate limits and no budget.
    Unlimited,
}

/// A tier name that is not one of the tiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a tier: use standard, admin or none")]
pub struct UnknownTier(pub String);

impl TryFrom<String> for Tier {
    type Error = UnknownTier;

    fn try_from(text: String) -> Result<Self, UnknownTier> {
        Tier::parse(&text).ok_or(UnknownTier(text))
    }
}

/// What a tier sets on a key: its rate limits, and a budget per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    pub tpm: i64,
    pub rpm: i64,
    /// In dollars, per [`TierLimits::budget_period`].
    pub max_budget: Decimal,
    pub budget_period: DurationSpec,
}

/// A tier's budget period: the LLD's "per month".
pub const TIER_BUDGET_PERIOD: DurationSpec = DurationSpec {
    amount: 30,
    unit: Unit::Days,
};

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Admin => "admin",
            Tier::Unlimited => "none",
        }
    }

    /// A tier by name, ignoring case and surrounding spaces.
    pub fn parse(text: &str) -> Option<Tier> {
        match text.trim().to_ascii_lowercase().as_str() {
            "standard" => Some(Tier::Standard),
            "admin" => Some(Tier::Admin),
            "none" => Some(Tier::Unlimited),
            _ => None,
        }
    }

    /// The tier's TPM, RPM and budget per [`TIER_BUDGET_PERIOD`]; none for `none`, whose keys
    /// have no rate limit, no budget and no budget period at all.
    pub fn limits(self) -> Option<TierLimits> {
        let (tpm, rpm, max_budget) = match self {
            Tier::Standard => (10_000, 100, 50),
            Tier::Admin => (100_000, 1_000, 500),
            Tier::Unlimited => return None,
        };
        Some(TierLimits {
            tpm,
            rpm,
            max_budget: Decimal::from(max_budget),
            budget_period: TIER_BUDGET_PERIOD,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tier_is_named_by_what_it_parses_from() {
        for tier in [Tier::Standard, Tier::Admin, Tier::Unlimited] {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        assert_eq!(Tier::Unlimited.as_str(), "none");
        assert_eq!(Tier::parse("  ADMIN "), Some(Tier::Admin));
        assert_eq!(Tier::parse("unlimited"), None);
        assert_eq!(Tier::parse(""), None);
    }

    #[test]
    fn a_request_naming_an_unknown_tier_is_refused_with_the_tiers_listed() {
        let tier: Tier = serde_json::from_str("\"Standard\"").unwrap();
        assert_eq!(tier, Tier::Standard);
        let error = serde_json::from_str::<Tier>("\"gold\"").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`gold` is not a tier: use standard, admin or none"),
            "{error}"
        );
    }

    #[test]
    fn standard_and_admin_tiers_set_rate_limits_and_a_monthly_budget() {
        let standard = Tier::Standard.limits().unwrap();
        assert_eq!((standard.tpm, standard.rpm), (10_000, 100));
        assert_eq!(standard.max_budget, Decimal::from(50));
        let admin = Tier::Admin.limits().unwrap();
        assert_eq!((admin.tpm, admin.rpm), (100_000, 1_000));
        assert_eq!(admin.max_budget, Decimal::from(500));
        for limits in [standard, admin] {
            assert_eq!(limits.budget_period.to_string(), "30d");
        }
    }

    #[test]
    fn the_none_tier_sets_no_limits_at_all() {
        assert_eq!(Tier::Unlimited.limits(), None);
    }
}
