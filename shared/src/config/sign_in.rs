//! How people sign in to the console: the company's OpenID Provider (`LLMLITE_OIDC_*`), the
//! master-key form that stays for bootstrap and break-glass, the session's idle timeout, and
//! what a developer may give themselves when the team says nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;

use crate::env::{ConfigError, EnvSource, non_empty, whole_units};
use crate::keys::{SecretKey, Tier};

/// The roles a group may map to, most privileged first: a person in several mapped groups gets
/// the first of these any of their groups gives.
pub const ROLES: [&str; 3] = ["proxy_admin", "proxy_admin_viewer", "internal_user"];

/// The scopes asked for when `LLMLITE_OIDC_SCOPES` is unset.
pub const DEFAULT_SCOPES: &str = "openid email profile groups";

/// A session ends after this long without a request (`LLMLITE_CONSOLE_IDLE_MINUTES`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);

/// What a developer may give themselves when their team sets nothing.
pub const DEFAULT_MAX_KEYS_PER_USER: i32 = 5;
pub const DEFAULT_SELF_SERVICE_TIER: Tier = Tier::Standard;

/// The company's OpenID Provider.
#[derive(Clone)]
pub struct Oidc {
    /// `LLMLITE_OIDC_ISSUER`: exactly as the provider's discovery document names itself.
    pub issuer: String,
    /// `LLMLITE_OIDC_CLIENT_ID`.
    pub client_id: String,
    /// `LLMLITE_OIDC_CLIENT_SECRET`, or the secret `LLMLITE_OIDC_CLIENT_SECRET_ARN` names.
    pub client_secret: SecretKey,
    /// `LLMLITE_OIDC_SCOPES`, space- or comma-separated; `openid` is always asked for.
    pub scopes: Vec<String>,
    /// `LLMLITE_OIDC_GROUPS_CLAIM` (default `groups`).
    pub groups_claim: String,
    /// `LLMLITE_OIDC_ROLE_MAP`: group to role.
    pub role_map: BTreeMap<String, String>,
    /// `LLMLITE_OIDC_TEAM_MAP`: group to team ID.
    pub team_map: BTreeMap<String, String>,
    /// `<LLMLITE_PUBLIC_URL>/ui/oidc/callback`.
    pub redirect_uri: String,
    /// `<LLMLITE_PUBLIC_URL>/ui/login`, where the provider sends the browser after sign-out.
    pub post_logout_uri: String,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("role_map", &self.role_map)
            .field("team_map", &self.team_map)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// The role `groups` give: the most privileged one mapped, else `internal_user`.
    pub fn role_for(&self, groups: &[String]) -> &'static str {
        ROLES
            .iter()
            .find(|role| {
                groups
                    .iter()
                    .any(|g| self.role_map.get(g).is_some_and(|r| r == *role))
            })
            .copied()
            .unwrap_or("internal_user")
    }

    /// The teams `groups` give, sorted, without repeats.
    pub fn teams_for(&self, groups: &[String]) -> Vec<String> {
        let mut teams: Vec<String> = groups
            .iter()
            .filter_map(|g| self.team_map.get(g).cloned())
            .collect();
        teams.sort();
        teams.dedup();
        teams
    }
}

/// Everything about signing in.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub oidc: Option<Oidc>,
    /// `LLMLITE_PUBLIC_URL` without a trailing slash: the base URL clients use (the set-up
    /// snippets name it). Without it, the snippets use the address the browser used.
    pub public_url: Option<String>,
    /// `LLMLITE_CONSOLE_KEY_SIGN_IN` (default `on`): whether the console's form takes the
    /// master key or an admin key. `off` leaves only the company's sign-in.
    pub key_sign_in: bool,
    /// `LLMLITE_CONSOLE_IDLE_MINUTES` (default 30).
    pub idle: Duration,
    /// `LLMLITE_SHORT_KEY_HOURS` (default 8): how long a key `llmlite key` gets lives.
    pub short_key_ttl: Duration,
}

impl Default for SignIn {
    fn default() -> Self {
        SignIn {
            oidc: None,
            public_url: None,
            key_sign_in: true,
            idle: DEFAULT_IDLE,
            short_key_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

/// A JSON object of strings to strings, from `variable`.
fn string_map(
    env: &impl EnvSource,
    variable: &'static str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    match non_empty(env, variable) {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            ConfigError::new(
                variable,
                format!("must be a JSON object of group names to strings: {e}"),
            )
        }),
    }
}

/// An `http://` or `https://` URL without a trailing slash, and without a query or fragment.
fn base_url(variable: &'static str, text: &str) -> Result<String, ConfigError> {
    let url = openidconnect::url::Url::parse(text)
        .map_err(|e| ConfigError::new(variable, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(ConfigError::new(
            variable,
            "must be an http:// or https:// URL with no user, query or fragment",
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

impl SignIn {
    pub async fn from_env(env: &impl EnvSource, aws: &SdkConfig) -> Result<Self, ConfigError> {
        let public_url = non_empty(env, "LLMLITE_PUBLIC_URL")
            .map(|u| base_url("LLMLITE_PUBLIC_URL", &u))
            .transpose()?;
        let key_sign_in = match non_empty(env, "LLMLITE_CONSOLE_KEY_SIGN_IN").as_deref() {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(_) => {
                return Err(ConfigError::new(
                    "LLMLITE_CONSOLE_KEY_SIGN_IN",
                    "must be on or off",
                ));
            }
        };
        let idle = whole_units(
            env,
            "LLMLITE_CONSOLE_IDLE_MINUTES",
            DEFAULT_IDLE,
            1..=480,
            ("minutes", 60),
        )?;
        let short_key_ttl = whole_units(
            env,
            "LLMLITE_SHORT_KEY_HOURS",
            Duration::from_secs(8 * 3600),
            1..=168,
            ("hours", 3600),
        )?;
        let oidc = match non_empty(env, "LLMLITE_OIDC_ISSUER") {
            None => None,
            Some(issuer) => Some(Self::oidc(env, aws, issuer, public_url.as_deref()).await?),
        };
        if oidc.is_none() && !key_sign_in {
            return Err(ConfigError::new(
                "LLMLITE_CONSOLE_KEY_SIGN_IN",
                "cannot be off without LLMLITE_OIDC_ISSUER: nobody could sign in",
            ));
        }
        Ok(SignIn {
            oidc,
            public_url,
            key_sign_in,
            idle,
            short_key_ttl,
        })
    }

    async fn oidc(
        env: &impl EnvSource,
        aws: &SdkConfig,
        issuer: String,
        public_url: Option<&str>,
    ) -> Result<Oidc, ConfigError> {
        base_url("LLMLITE_OIDC_ISSUER", &issuer)?;
        // Plain HTTP only on loopback (a provider a test starts); anywhere else it is TLS.
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| {
                issuer
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
            });
        if !issuer.starts_with("https://") && !loopback {
            return Err(ConfigError::new(
                "LLMLITE_OIDC_ISSUER",
                "must be an https:// URL (plain http only on loopback)",
            ));
        }
        let public_url = public_url.ok_or_else(|| {
            ConfigError::new(
                "LLMLITE_PUBLIC_URL",
                "is required with LLMLITE_OIDC_ISSUER: the redirect URI is made from it",
            )
        })?;
        let client_id = non_empty(env, "LLMLITE_OIDC_CLIENT_ID").ok_or_else(|| {
            ConfigError::new("LLMLITE_OIDC_CLIENT_ID", "is required with an issuer")
        })?;
        let client_secret = match (
            non_empty(env, "LLMLITE_OIDC_CLIENT_SECRET"),
            non_empty(env, "LLMLITE_OIDC_CLIENT_SECRET_ARN"),
        ) {
            (Some(secret), None) => SecretKey::new(secret),
            (None, Some(arn)) => read_secret(aws, &arn).await?,
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "LLMLITE_OIDC_CLIENT_SECRET",
                    "set it or LLMLITE_OIDC_CLIENT_SECRET_ARN, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "LLMLITE_OIDC_CLIENT_SECRET",
                    "is required with an issuer (or LLMLITE_OIDC_CLIENT_SECRET_ARN)",
                ));
            }
        };
        let mut scopes: Vec<String> = non_empty(env, "LLMLITE_OIDC_SCOPES")
            .unwrap_or_else(|| DEFAULT_SCOPES.to_owned())
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".to_owned());
        }
        let role_map = string_map(env, "LLMLITE_OIDC_ROLE_MAP")?;
        if let Some((group, role)) = role_map.iter().find(|(_, r)| !ROLES.contains(&r.as_str())) {
            return Err(ConfigError::new(
                "LLMLITE_OIDC_ROLE_MAP",
                format!(
                    "group `{group}` maps to `{role}`: roles are {}",
                    ROLES.join(", ")
                ),
            ));
        }
        Ok(Oidc {
            issuer,
            client_id,
            client_secret,
            scopes,
            groups_claim: non_empty(env, "LLMLITE_OIDC_GROUPS_CLAIM")
                .unwrap_or_else(|| "groups".to_owned()),
            role_map,
            team_map: string_map(env, "LLMLITE_OIDC_TEAM_MAP")?,
            redirect_uri: format!("{public_url}/ui/oidc/callback"),
            post_logout_uri: format!("{public_url}/ui/login"),
        })
    }
}

/// The client secret from Secrets Manager, once at start-up.
async fn read_secret(aws: &SdkConfig, arn: &str) -> Result<SecretKey, ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(aws);
    let value = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            ConfigError::new(
                "LLMLITE_OIDC_CLIENT_SECRET_ARN",
                format!(
                    "the secret could not be read: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                ),
            )
        })?;
    value
        .secret_string()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| SecretKey::new(s.to_owned()))
        .ok_or_else(|| {
            ConfigError::new(
                "LLMLITE_OIDC_CLIENT_SECRET_ARN",
                "the secret has no string value",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map;

    fn oidc(role_map: &str, team_map: &str) -> Oidc {
        Oidc {
            issuer: "https://idp.example.com".into(),
            client_id: "llmlite".into(),
            client_secret: SecretKey::new("s".into()),
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            role_map: serde_json::from_str(role_map).unwrap_or_default(),
            team_map: serde_json::from_str(team_map).unwrap_or_default(),
            redirect_uri: String::new(),
            post_logout_uri: String::new(),
        }
    }

    #[test]
    fn the_most_privileged_mapped_role_wins_and_unmapped_people_are_internal_users() {
        let o = oidc(
            r#"{"admins": "proxy_admin", "auditors": "proxy_admin_viewer", "devs": "internal_user"}"#,
            r#"{"devs": "t-dev", "data": "t-data", "admins": "t-dev"}"#,
        );
        let groups = |g: &[&str]| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            o.role_for(&groups(&["devs", "auditors"])),
            "proxy_admin_viewer"
        );
        assert_eq!(o.role_for(&groups(&["devs", "admins"])), "proxy_admin");
        assert_eq!(o.role_for(&groups(&["sales"])), "internal_user");
        assert_eq!(o.role_for(&[]), "internal_user");
        assert_eq!(
            o.teams_for(&groups(&["data", "admins", "devs"])),
            vec!["t-data".to_owned(), "t-dev".to_owned()]
        );
    }

    #[tokio::test]
    async fn an_issuer_needs_a_public_url_a_client_and_roles_that_exist() {
        let aws = crate::config::local_aws_config("eu-west-2").await;
        let full = [
            ("LLMLITE_OIDC_ISSUER", "https://idp.example.com"),
            ("LLMLITE_PUBLIC_URL", "https://llm.example.com/"),
            ("LLMLITE_OIDC_CLIENT_ID", "llmlite"),
            ("LLMLITE_OIDC_CLIENT_SECRET", "s3cret"),
        ];
        let signed = SignIn::from_env(&map(&full), &aws).await;
        let Ok(signed) = signed else {
            panic!("a full configuration loads")
        };
        let Some(o) = signed.oidc else {
            panic!("an issuer was set")
        };
        assert_eq!(o.redirect_uri, "https://llm.example.com/ui/oidc/callback");
        assert_eq!(o.scopes, ["openid", "email", "profile", "groups"]);
        for (drop, variable) in [
            (1, "LLMLITE_PUBLIC_URL"),
            (2, "LLMLITE_OIDC_CLIENT_ID"),
            (3, "LLMLITE_OIDC_CLIENT_SECRET"),
        ] {
            let mut pairs = full.to_vec();
            pairs.remove(drop);
            match SignIn::from_env(&map(&pairs), &aws).await {
                Err(e) => assert_eq!(e.variable, variable),
                Ok(_) => panic!("{variable} is required"),
            }
        }
        let mut bad_role = full.to_vec();
        bad_role.push(("LLMLITE_OIDC_ROLE_MAP", r#"{"devs": "root"}"#));
        assert!(SignIn::from_env(&map(&bad_role), &aws).await.is_err());
        // The secret is never in the configuration's debug text.
        let shown = format!("{:?}", SignIn::from_env(&map(&full), &aws).await.ok());
        assert!(!shown.contains("s3cret"), "{shown}");
        // No way in at all is refused.
        let none = SignIn::from_env(&map(&[("LLMLITE_CONSOLE_KEY_SIGN_IN", "off")]), &aws).await;
        assert!(none.is_err());
    }
}
