//! API keys: generation, hashing and display. A raw key exists only in the request that carries
//! it and in the one response that mints it; everywhere else (database, logs, audit) a key is its
//! SHA-256 [`KeyHash`] or its short name `sk-...abcd`. A key's [`Tier`] (the limits it starts
//! from) is in [`tier`].

mod tier;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use tier::{TIER_BUDGET_PERIOD, Tier, TierLimits, UnknownTier};

/// The unsalted SHA-256 hex of a raw key, as LiteLLM stores it (`hash_token`).
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(raw_key: &str) -> Self {
        KeyHash(hex::encode(Sha256::digest(raw_key.as_bytes())))
    }

    /// LiteLLM's rule: something that starts with `sk-` is a raw key and is hashed; anything else
    /// is taken to be a hash already, and must look like one.
    pub fn from_key_or_hash(value: &str) -> Option<Self> {
        if value.starts_with("sk-") {
            Some(Self::of(value))
        } else if value.len() == 64
            && value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Some(KeyHash(value.to_owned()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", &self.0)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `sk-...abcd`: enough to recognise a key, useless to an attacker.
pub fn short_name(raw_key: &str) -> String {
    let tail: String = raw_key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// A new key: `sk-` and 32 URL-safe base64 characters of CSPRNG output (192 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("sk-{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A secret key whose value never reaches a log line through `Debug` or `Display`.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(raw: String) -> Self {
        SecretKey(raw)
    }

    /// The raw value, for the one place that must show it (`llmlite dev` prints its master key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing tells nothing about the key.
    pub fn matches(&self, candidate: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let given = Sha256::digest(candidate.as_bytes());
        expected.ct_eq(&given).into()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", short_name(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_litellms_sha256_hex() {
        // printf 'sk-1234' | sha256sum
        assert_eq!(
            KeyHash::of("sk-1234").as_str(),
            "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
        );
        assert_eq!(
            KeyHash::from_key_or_hash("sk-1234"),
            Some(KeyHash::of("sk-1234"))
        );
        assert_eq!(
            KeyHash::from_key_or_hash(
                "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
            ),
            Some(KeyHash::of("sk-1234"))
        );
        assert_eq!(KeyHash::from_key_or_hash("not-a-key"), None);
    }

    #[test]
    fn generated_keys_are_unique_url_safe_and_long() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with("sk-") && a.len() == 35, "{a}");
        assert!(
            a[3..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let key = SecretKey::new("sk-supersecretvalue9876".into());
        assert_eq!(format!("{key:?}"), "SecretKey(sk-...9876)");
        assert!(key.matches("sk-supersecretvalue9876"));
        assert!(!key.matches("sk-supersecretvalue9877"));
        assert_eq!(short_name("sk-abcdef"), "sk-...cdef");
    }
}
