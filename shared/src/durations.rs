//! LiteLLM's duration strings: `30s`, `30m`, `30h`, `30d`, `2w`, `1mo`. Used for key lifetimes
//! (`duration`), budget periods (`budget_duration`) and rotation grace periods.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Months, Utc};
use sqlx::postgres::types::PgInterval;

/// The longest duration accepted: about 100 years.
const MAX_DAYS: u64 = 36_600;

/// Why a text is not a duration; each message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration: use a number and s, m, h, d, w or mo (`30d`)")]
    Unit(String),
    #[error("`{0}` is not a duration: the number must be positive")]
    Amount(String),
    #[error("`{0}` is longer than 100 years")]
    TooLong(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec {
    pub amount: u32,
    pub unit: Unit,
}

impl FromStr for DurationSpec {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let unit = match unit {
            "s" => Unit::Seconds,
            "m" => Unit::Minutes,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            "w" => Unit::Weeks,
            "mo" => Unit::Months,
            _ => return Err(DurationError::Unit(text.to_owned())),
        };
        let amount: u32 = number
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| DurationError::Amount(text.to_owned()))?;
        let spec = DurationSpec { amount, unit };
        if spec.approximate_seconds() > MAX_DAYS * 86_400 {
            return Err(DurationError::TooLong(text.to_owned()));
        }
        Ok(spec)
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            Unit::Seconds => "s",
            Unit::Minutes => "m",
            Unit::Hours => "h",
            Unit::Days => "d",
            Unit::Weeks => "w",
            Unit::Months => "mo",
        };
        write!(f, "{}{unit}", self.amount)
    }
}

impl DurationSpec {
    fn approximate_seconds(&self) -> u64 {
        let n = u64::from(self.amount);
        match self.unit {
            Unit::Seconds => n,
            Unit::Minutes => n * 60,
            Unit::Hours => n * 3_600,
            Unit::Days => n * 86_400,
            Unit::Weeks => n * 604_800,
            Unit::Months => n * 2_592_000,
        }
    }

    /// `start` plus this duration (calendar months for `mo`).
    pub fn after(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self.unit {
            Unit::Months => start
                .checked_add_months(Months::new(self.amount))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            _ => {
                let seconds = i64::try_from(self.approximate_seconds()).unwrap_or(i64::MAX);
                start
                    .checked_add_signed(chrono::Duration::seconds(seconds))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }

    /// As a PostgreSQL interval, for `budget_duration` columns.
    pub fn interval(&self) -> PgInterval {
        let n = i64::from(self.amount);
        let amount = i32::try_from(self.amount).unwrap_or(i32::MAX);
        match self.unit {
            Unit::Months => PgInterval {
                months: amount,
                days: 0,
                microseconds: 0,
            },
            Unit::Weeks => PgInterval {
                months: 0,
                days: amount.saturating_mul(7),
                microseconds: 0,
            },
            Unit::Days => PgInterval {
                months: 0,
                days: amount,
                microseconds: 0,
            },
            Unit::Hours => PgInterval {
                months: 0,
                days: 0,
                microseconds: n * 3_600_000_000,
            },
            Unit::Minutes => PgInterval {
                months: 0,
                days: 0,
                microseconds: n * 60_000_000,
            },
            Unit::Seconds => PgInterval {
                months: 0,
                days: 0,
                microseconds: n * 1_000_000,
            },
        }
    }

    /// Back from a stored interval (as `interval` wrote it).
    pub fn from_interval(interval: &PgInterval) -> Option<Self> {
        let spec = |amount: i64, unit| {
            u32::try_from(amount)
                .ok()
                .filter(|a| *a > 0)
                .map(|amount| DurationSpec { amount, unit })
        };
        match (interval.months, interval.days, interval.microseconds) {
            (m, 0, 0) if m > 0 => spec(i64::from(m), Unit::Months),
            (0, d, 0) if d > 0 => spec(i64::from(d), Unit::Days),
            (0, 0, us) if us % 3_600_000_000 == 0 => spec(us / 3_600_000_000, Unit::Hours),
            (0, 0, us) if us % 60_000_000 == 0 => spec(us / 60_000_000, Unit::Minutes),
            (0, 0, us) => spec(us / 1_000_000, Unit::Seconds),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litellm_durations_parse_and_print() {
        for text in ["30s", "30m", "30h", "30d", "2w", "1mo"] {
            assert_eq!(text.parse::<DurationSpec>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "30",
            "d",
            "-1d",
            "0d",
            "1.5h",
            "30 days",
            "1y",
            "99999999d",
            "١٢d",
        ] {
            assert!(bad.parse::<DurationSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn intervals_round_trip() {
        for text in ["45s", "30m", "24h", "30d", "1mo"] {
            let spec: DurationSpec = text.parse().unwrap();
            assert_eq!(
                DurationSpec::from_interval(&spec.interval()),
                Some(spec),
                "{text}"
            );
        }
        let week: DurationSpec = "2w".parse().unwrap();
        assert_eq!(
            DurationSpec::from_interval(&week.interval())
                .unwrap()
                .to_string(),
            "14d"
        );
    }

    #[test]
    fn after_adds_calendar_months() {
        let start = DateTime::parse_from_rfc3339("2026-01-31T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            "1mo"
                .parse::<DurationSpec>()
                .unwrap()
                .after(start)
                .to_rfc3339(),
            "2026-02-28T00:00:00+00:00"
        );
        assert_eq!(
            "36h"
                .parse::<DurationSpec>()
                .unwrap()
                .after(start)
                .to_rfc3339(),
            "2026-02-01T12:00:00+00:00"
        );
    }
}
