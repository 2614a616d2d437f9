//! How to reach PostgreSQL: `DATABASE_URL`, `LLMLITE_DB_POOL_SIZE` and `LLMLITE_DB_IAM_AUTH`,
//! checked without ever echoing the URL's password.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::env::{ConfigError, EnvSource, non_empty};

/// A Lambda environment serves one request at a time; `llmlite serve` sizes its own pool
/// ([`super::ServeConfig`]).
pub const DEFAULT_POOL_SIZE: u32 = 2;

/// How to reach PostgreSQL. `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub options: PgConnectOptions,
    pub pool_size: u32,
    /// Authenticate with short-lived RDS IAM tokens instead of a password.
    pub iam_auth: bool,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .field("pool_size", &self.pool_size)
            .field("iam_auth", &self.iam_auth)
            .finish()
    }
}

impl DatabaseConfig {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let url = non_empty(env, "DATABASE_URL")
            .ok_or_else(|| ConfigError::new("DATABASE_URL", "is not set"))?;
        // sqlx's message can quote the URL, password included: give our own.
        let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let options = PgConnectOptions::from_str(&url)
            .ok()
            .filter(|_| scheme_ok)
            .ok_or_else(|| {
                ConfigError::new(
                    "DATABASE_URL",
                    "is not a valid PostgreSQL URL (postgres://user:password@host:port/database)",
                )
            })?;
        let pool_size = pool_size_setting(env)?.unwrap_or(DEFAULT_POOL_SIZE);
        let iam_auth = match non_empty(env, "LLMLITE_DB_IAM_AUTH").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => {
                return Err(ConfigError::new(
                    "LLMLITE_DB_IAM_AUTH",
                    "must be true or false",
                ));
            }
        };
        let options = if iam_auth {
            if url_has_password(&url) {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "must not carry a password when LLMLITE_DB_IAM_AUTH is true",
                ));
            }
            // IAM tokens travel as passwords: only over TLS, to a verified server. RDS Proxy's
            // certificates chain to the Amazon roots, which are in the bundled root store.
            options.ssl_mode(PgSslMode::VerifyFull)
        } else {
            options
        };
        Ok(DatabaseConfig {
            options,
            pool_size,
            iam_auth,
        })
    }
}

impl DatabaseConfig {
    /// The same server and settings, logged in as `user` with one connection (the migrations
    /// handler's admin and owner sessions). With IAM authentication the token is `user`'s.
    pub fn as_user(&self, user: &str) -> DatabaseConfig {
        DatabaseConfig {
            options: self.options.clone().username(user),
            pool_size: 1,
            iam_auth: self.iam_auth,
        }
    }
}

/// `LLMLITE_DB_POOL_SIZE`, checked; `None` when it is not set (each caller has its default).
pub(crate) fn pool_size_setting(env: &impl EnvSource) -> Result<Option<u32>, ConfigError> {
    non_empty(env, "LLMLITE_DB_POOL_SIZE")
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "LLMLITE_DB_POOL_SIZE",
                        "must be a whole number from 1 to 100",
                    )
                })
        })
        .transpose()
}

/// True when the URL's authority has `user:password@`.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map as env;

    #[test]
    fn database_url_is_required_and_checked_without_echoing_it() {
        let err = DatabaseConfig::from_env(&env(&[])).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let err = DatabaseConfig::from_env(&env(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]))
            .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"));
        let ok = DatabaseConfig::from_env(&env(&[(
            "DATABASE_URL",
            "postgres://u:hunter2@db.example:5433/llm",
        )]))
        .unwrap();
        assert_eq!(ok.pool_size, DEFAULT_POOL_SIZE);
        assert!(!format!("{ok:?}").contains("hunter2"));
    }

    #[test]
    fn iam_auth_forces_verified_tls_and_refuses_a_password() {
        let ok = DatabaseConfig::from_env(&env(&[
            (
                "DATABASE_URL",
                "postgres://llmlite@proxy.example:5432/llmlite",
            ),
            ("LLMLITE_DB_IAM_AUTH", "true"),
        ]))
        .unwrap();
        assert!(ok.iam_auth);
        assert!(matches!(ok.options.get_ssl_mode(), PgSslMode::VerifyFull));
        let err = DatabaseConfig::from_env(&env(&[
            (
                "DATABASE_URL",
                "postgres://llmlite:pw@proxy.example/llmlite",
            ),
            ("LLMLITE_DB_IAM_AUTH", "1"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        let err = DatabaseConfig::from_env(&env(&[
            ("DATABASE_URL", "postgres://llmlite@proxy.example/llmlite"),
            ("LLMLITE_DB_IAM_AUTH", "yes please"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "LLMLITE_DB_IAM_AUTH");
        assert!(url_has_password("postgres://u:p@h/db"));
        assert!(!url_has_password("postgres://u@h/db?x=a:b@c"));
        assert!(!url_has_password("postgres://h/db"));
    }

    #[test]
    fn pool_size_must_be_sane() {
        for bad in ["0", "abc", "1000", "-1"] {
            let err = DatabaseConfig::from_env(&env(&[
                ("DATABASE_URL", "postgres://localhost/db"),
                ("LLMLITE_DB_POOL_SIZE", bad),
            ]))
            .unwrap_err();
            assert_eq!(err.variable, "LLMLITE_DB_POOL_SIZE", "{bad}");
        }
    }
}
