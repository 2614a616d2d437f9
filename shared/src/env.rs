//! Reading environment variables: where settings come from ([`EnvSource`]: the process
//! environment, an overlay, or a map in tests), and [`ConfigError`], which names the variable a
//! bad value came from (and never echoes a secret). The lowest layer of configuration: the
//! modules that read their own variables ([`crate::config`], [`crate::master_key`],
//! [`crate::clients::store`]) build on it.

use std::collections::HashMap;

/// Where configuration comes from: the process environment, or a map in tests.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Variables set here win over the ones underneath (`llmlite dev` injects its own database).
pub struct Overlay<'a, E: EnvSource> {
    pub overrides: HashMap<String, String>,
    pub base: &'a E,
}

impl<E: EnvSource> EnvSource for Overlay<'_, E> {
    fn var(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| self.base.var(name))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            variable,
            reason: reason.into(),
        }
    }
}

/// A non-empty value, or `None` for unset or blank.
pub(crate) fn non_empty(env: &impl EnvSource, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A whole number of `unit`s (`("seconds", 1)`, `("minutes", 60)`, ...) in `range` from
/// `variable`, as a duration; `default` when unset.
pub(crate) fn whole_units(
    env: &impl EnvSource,
    variable: &'static str,
    default: std::time::Duration,
    range: std::ops::RangeInclusive<u64>,
    (unit, unit_secs): (&str, u64),
) -> Result<std::time::Duration, ConfigError> {
    match non_empty(env, variable) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .map(|n| std::time::Duration::from_secs(n * unit_secs))
            .ok_or_else(|| {
                ConfigError::new(
                    variable,
                    format!(
                        "must be a whole number of {unit} from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// An environment of `(name, value)` pairs, for tests.
#[cfg(test)]
pub(crate) fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
