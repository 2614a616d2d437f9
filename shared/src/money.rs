//! Exact money. Every price, spend and budget is a [`Money`]: a decimal in US dollars, stored as
//! `NUMERIC` in PostgreSQL and written as a decimal string in configuration, never a float.

use std::fmt;
use std::ops::{Add, Mul};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

///
/// It serialises as a decimal string (`"50.10"`) so JSON clients never round it through a float.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(#[serde(with = "rust_decimal::serde::str")] pub Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    pub fn new(amount: Decimal) -> Self {
        Money(amount)
    }

    pub fn amount(self) -> Decimal {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.normalize().fmt(f)
    }
}

/// A price in dollars per million tokens of one kind. In configuration it must be written as a
/// string (`"3.30"`): a TOML float would already have been rounded by the parser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PerMillionTokens(pub Money);

/// A price written as a decimal string in configuration.
fn decimal_price<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
    let text = String::deserialize(deserializer)?;
    Decimal::from_str_exact(text.trim())
        .map(Money)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a decimal price: {e}")))
}

impl<'de> Deserialize<'de> for PerMillionTokens {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        decimal_price(deserializer).map(PerMillionTokens)
    }
}

/// A price in dollars per 1,000 units of one kind (Bedrock Guardrails' text units), written as
/// a string in configuration, as [`PerMillionTokens`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PerThousandUnits(pub Money);

impl<'de> Deserialize<'de> for PerThousandUnits {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        decimal_price(deserializer).map(PerThousandUnits)
    }
}

impl Mul<u64> for PerThousandUnits {
    type Output = Money;
    /// The exact cost of `units` units at this price.
    fn mul(self, units: u64) -> Money {
        Money(self.0.0 * Decimal::from(units) / Decimal::from(1_000u32))
    }
}

impl Mul<u64> for PerMillionTokens {
    type Output = Money;
    /// The exact cost of `tokens` tokens at this price.
    fn mul(self, tokens: u64) -> Money {
        Money(self.0.0 * Decimal::from(tokens) / Decimal::from(1_000_000u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn price(s: &str) -> PerMillionTokens {
        PerMillionTokens(Money(Decimal::from_str(s).unwrap_or_default()))
    }

    #[test]
    fn token_cost_is_exact() {
        // 1 token at $3.30 per million is $0.0000033, not a float approximation.
        assert_eq!(
            price("3.30") * 1,
            Money(Decimal::from_str("0.0000033").unwrap_or_default())
        );
        let total = price("3") * 1_234_567 + price("15") * 7;
        assert_eq!(total.to_string(), "3.703806");
    }

    #[test]
    fn money_round_trips_as_a_string() {
        let m = Money(Decimal::from_str("50.10").unwrap_or_default());
        let json = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(json, "\"50.10\"");
        let back: Money = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, m);
    }
}
