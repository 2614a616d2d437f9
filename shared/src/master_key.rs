//! The admin master key: fixed for a process (`LITELLM_MASTER_KEY`), or read from Secrets
//! Manager (`LITELLM_MASTER_KEY_SECRET_ARN`) and re-read at most every
//! `LLMLITE_MASTER_KEY_TTL_SECS` (default 5 minutes), so a rotated key takes effect on every
//! warm instance within that time.
//!
//! Rotation without downtime (RUNBOOK.md): put a new value in the secret. Secrets Manager labels
//! it `AWSCURRENT` and the old one `AWSPREVIOUS`. The old key stays accepted for
//! `LLMLITE_MASTER_KEY_GRACE_SECS` (default an hour) after the new version's creation date,
//! which gives the admins' tools time to switch; after that only the new key works.
//!
//! A refresh that fails (Secrets Manager unreachable) keeps the keys already known and tries
//! again after [`RETRY_AFTER_FAILURE`]: an outage of Secrets Manager must not lock the admins
//! out, and must not be a reason to accept a key that was never valid.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use crate::env::{ConfigError, EnvSource, non_empty};
use crate::keys::SecretKey;

/// The variables.
const PLAIN: &str = "LITELLM_MASTER_KEY";
const ARN: &str = "LITELLM_MASTER_KEY_SECRET_ARN";
const TTL: &str = "LLMLITE_MASTER_KEY_TTL_SECS";
const GRACE: &str = "LLMLITE_MASTER_KEY_GRACE_SECS";

/// Defaults of the two settings.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// After a failed refresh, the next attempt waits this long (or the TTL, if shorter).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The master key, cheap to clone (all clones share one cache).
#[derive(Clone)]
pub struct MasterKey {
    inner: Arc<Inner>,
}

struct Inner {
    source: Option<Source>,
    keys: RwLock<Keys>,
    /// Held by the one request that refreshes; the others go on with the keys already known.
    refreshing: tokio::sync::Mutex<()>,
}

struct Source {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    ttl: Duration,
    grace: Duration,
}

/// Why the secret gave no usable key. Its text is the reason start-up reports (under
/// `LITELLM_MASTER_KEY_SECRET_ARN`) and a failed refresh logs.
#[derive(Debug, thiserror::Error)]
enum SecretError {
    #[error("could not read the secret: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(.0))]
    Read(Box<SdkError<GetSecretValueError>>),
    #[error("the secret has no SecretString")]
    NoSecretString,
    /// The key it holds fails [`validate_master_key`]; the text is the validation's reason.
    #[error("{}", .0.reason)]
    Unusable(ConfigError),
}

#[derive(Clone)]
struct Keys {
    current: SecretKey,
    /// The previous version's key, and until when it is still accepted.
    previous: Option<(SecretKey, SystemTime)>,
    /// When to read the secret again.
    next_check: Instant,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys();
        f.debug_struct("MasterKey")
            .field("current", &keys.current)
            .field("previous", &keys.previous.as_ref().map(|(k, _)| k))
            .field("secret", &self.inner.source.as_ref().map(|s| &s.arn))
            .finish()
    }
}

impl MasterKey {
    /// A key that never changes (`LITELLM_MASTER_KEY`, `llmlite dev`, tests).
    pub fn fixed(key: SecretKey) -> Self {
        MasterKey {
            inner: Arc::new(Inner {
                source: None,
                keys: RwLock::new(Keys {
                    current: key,
                    previous: None,
                    next_check: Instant::now(),
                }),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// From the environment: the plain key, or the secret (read now; start-up fails if it
    /// cannot be read or holds no usable key).
    pub async fn from_env(env: &impl EnvSource, aws: &SdkConfig) -> Result<Self, ConfigError> {
        match (non_empty(env, PLAIN), non_empty(env, ARN)) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                ARN,
                "set either LITELLM_MASTER_KEY or LITELLM_MASTER_KEY_SECRET_ARN, not both",
            )),
            (None, None) => Err(ConfigError::new(
                PLAIN,
                "is not set (nor LITELLM_MASTER_KEY_SECRET_ARN)",
            )),
            (Some(raw), None) => Ok(Self::fixed(validate_master_key(&raw, PLAIN)?)),
            (None, Some(arn)) => {
                let source = Source {
                    client: aws_sdk_secretsmanager::Client::new(aws),
                    arn,
                    ttl: seconds(env, TTL, DEFAULT_TTL, 1..=86_400)?,
                    grace: seconds(env, GRACE, DEFAULT_GRACE, 0..=7 * 86_400)?,
                };
                let keys = source
                    .read()
                    .await
                    .map_err(|e| ConfigError::new(ARN, e.to_string()))?;
                Ok(MasterKey {
                    inner: Arc::new(Inner {
                        source: Some(source),
                        keys: RwLock::new(keys),
                        refreshing: tokio::sync::Mutex::new(()),
                    }),
                })
            }
        }
    }

    /// `f` of the keys as last read, under the read lock: nothing is copied on the request path.
    fn with_keys<R>(&self, f: impl FnOnce(&Keys) -> R) -> R {
        match self.inner.keys.read() {
            Ok(keys) => f(&keys),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn keys(&self) -> Keys {
        self.with_keys(Keys::clone)
    }

    fn due(&self) -> bool {
        self.with_keys(|k| Instant::now() >= k.next_check)
    }

    /// Re-reads the secret when the TTL has passed. Only one caller reads; the others go on with
    /// the keys already known rather than queue behind Secrets Manager.
    pub async fn refresh_if_stale(&self) {
        let Some(source) = &self.inner.source else {
            return;
        };
        if !self.due() {
            return;
        }
        let Ok(_guard) = self.inner.refreshing.try_lock() else {
            return;
        };
        // Another caller may have refreshed between the check and the lock.
        if !self.due() {
            return;
        }
        let refreshed = match source.read().await {
            Ok(keys) => keys,
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "could not re-read the master key secret; the keys already read stay in use"
                );
                Keys {
                    next_check: Instant::now() + RETRY_AFTER_FAILURE.min(source.ttl),
                    ..self.keys()
                }
            }
        };
        match self.inner.keys.write() {
            Ok(mut keys) => *keys = refreshed,
            Err(poisoned) => *poisoned.into_inner() = refreshed,
        }
    }

    /// Whether `candidate` is the master key: the current one, or the previous one within its
    /// grace window. Constant-time in the key.
    pub async fn matches(&self, candidate: &str) -> bool {
        self.refresh_if_stale().await;
        self.with_keys(|keys| {
            let previous = keys
                .previous
                .as_ref()
                .is_some_and(|(key, until)| SystemTime::now() < *until && key.matches(candidate));
            keys.current.matches(candidate) | previous
        })
    }

    /// The current key as last read (no refresh): what the console signs its sessions under.
    pub fn cached(&self) -> SecretKey {
        self.with_keys(|k| k.current.clone())
    }
}

impl Source {
    /// Reads `AWSCURRENT`, and `AWSPREVIOUS` while the current version is younger than the
    /// grace window.
    async fn read(&self) -> Result<Keys, SecretError> {
        let current = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| SecretError::Read(Box::new(e)))?;
        let key = key_of(current.secret_string())?;
        let created = current
            .created_date()
            .and_then(|d| SystemTime::try_from(*d).ok());
        let grace_ends = created.map(|c| c + self.grace);
        let previous = match grace_ends {
            Some(until) if SystemTime::now() < until => self.previous().await.map(|k| (k, until)),
            _ => None,
        };
        Ok(Keys {
            current: key,
            previous,
            next_check: Instant::now() + self.ttl,
        })
    }

    /// The `AWSPREVIOUS` version's key, if there is one and it is usable.
    async fn previous(&self) -> Option<SecretKey> {
        let answer = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .version_stage("AWSPREVIOUS")
            .send()
            .await;
        match answer {
            Ok(previous) => key_of(previous.secret_string()).ok(),
            Err(e) => {
                // The first version has no predecessor: not an error worth more than a note.
                tracing::info!(
                    error = %aws_sdk_secretsmanager::error::DisplayErrorContext(e),
                    "no previous master key version"
                );
                None
            }
        }
    }
}

/// The key a secret's text holds, validated.
fn key_of(text: Option<&str>) -> Result<SecretKey, SecretError> {
    let text = text.ok_or(SecretError::NoSecretString)?;
    validate_master_key(&master_key_from_secret(text), ARN).map_err(SecretError::Unusable)
}

/// A whole number of seconds in `range`, or `default`.
fn seconds(
    env: &impl EnvSource,
    variable: &'static str,
    default: Duration,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    crate::env::whole_units(env, variable, default, range, ("seconds", 1))
}

/// A master key must look like a key and be long enough not to be guessed.
pub fn validate_master_key(raw: &str, variable: &'static str) -> Result<SecretKey, ConfigError> {
    if !raw.starts_with("sk-") {
        return Err(ConfigError::new(variable, "must start with `sk-`"));
    }
    if raw.len() < 3 + 16 {
        return Err(ConfigError::new(
            variable,
            "is too short: use at least 16 characters after `sk-` (llmlite dev generates one)",
        ));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(variable, "must not contain whitespace"));
    }
    Ok(SecretKey::new(raw.to_owned()))
}

/// A secret holds the key as plain text, or as JSON `{"LITELLM_MASTER_KEY": "sk-..."}` (also
/// `master_key`). The secret `template.yaml` generates is `{"master_key_suffix": "<random>"}`:
/// Secrets Manager can generate a random string but cannot prefix it, so the key is `sk-`
/// followed by that string.
fn master_key_from_secret(text: &str) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) {
        for field in ["LITELLM_MASTER_KEY", "master_key"] {
            if let Some(serde_json::Value::String(key)) = map.get(field) {
                return key.trim().to_owned();
            }
        }
        if let Some(serde_json::Value::String(suffix)) = map.get("master_key_suffix") {
            return format!("sk-{}", suffix.trim());
        }
    }
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_are_validated() {
        assert!(validate_master_key("sk-1234", PLAIN).is_err());
        assert!(validate_master_key("pk-aaaaaaaaaaaaaaaaaaaa", PLAIN).is_err());
        assert!(validate_master_key("sk-aaaaaaaa aaaaaaaaaaa", PLAIN).is_err());
        assert!(validate_master_key("sk-abcdefghijklmnop", PLAIN).is_ok());
    }

    #[test]
    fn secrets_may_hold_plain_text_or_json() {
        assert_eq!(master_key_from_secret(" sk-plain \n"), "sk-plain");
        assert_eq!(
            master_key_from_secret(r#"{"LITELLM_MASTER_KEY":"sk-json"}"#),
            "sk-json"
        );
        assert_eq!(
            master_key_from_secret(r#"{"master_key":"sk-other"}"#),
            "sk-other"
        );
        assert_eq!(
            master_key_from_secret(r#"{"master_key_suffix":"Generated0123456789"}"#),
            "sk-Generated0123456789"
        );
    }

    #[tokio::test]
    async fn a_fixed_key_matches_itself_only() {
        let key = MasterKey::fixed(SecretKey::new("sk-abcdefghijklmnop".into()));
        assert!(key.matches("sk-abcdefghijklmnop").await);
        assert!(!key.matches("sk-abcdefghijklmnoq").await);
        assert!(!format!("{key:?}").contains("abcdefghijklmnop"));
    }
}
