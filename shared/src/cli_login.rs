//! The client half of short-lived keys ([`crate::device`] is the gateway's half): `llmlite
//! login` signs this machine in by OAuth 2.0 Device Authorization (RFC 8628, the `oauth2`
//! crate's client) and keeps the refresh token in a file only its owner may read (0600, in a
//! 0700 folder); `llmlite key` prints a current key: the one in that file while it has at least
//! [`RENEW_BEFORE`] left and the gateway still takes it, else a fresh one from the gateway (the
//! refresh token rotates; a sign-in that has ended says so). Claude Code runs `llmlite key` as
//! its `apiKeyHelper`.
//!
//! The file: `$LLMLITE_CREDENTIALS`, else `$XDG_CONFIG_HOME/llmlite/credentials.json`, else
//! `~/.config/llmlite/credentials.json`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, DeviceAuthorizationUrl, RefreshToken, RequestTokenError,
    StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::clients::oauth_http::{OAuthHttp, error_chain};
use crate::device::CLIENT_ID;

/// A key with less than this left is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);

/// What `llmlite login` keeps.
#[derive(Serialize, Deserialize)]
struct Saved {
    gateway: String,
    refresh_token: String,
    key: Option<String>,
    /// Seconds since the Unix epoch.
    key_expires_at: Option<i64>,
}

/// Where the credentials are kept.
pub fn credentials_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LLMLITE_CREDENTIALS") {
        return Ok(PathBuf::from(path));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(
            std::env::var_os("HOME").ok_or("neither LLMLITE_CREDENTIALS nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("llmlite").join("credentials.json"))
}

fn save(path: &Path, saved: &Saved) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_vec_pretty(saved).map_err(|e| e.to_string())?;
    // Written beside, then renamed: a reader never sees half a file.
    let partial = path.with_extension("json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn load(path: &Path) -> Result<Saved, String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "{}: {e}: sign this machine in first with `llmlite login --gateway URL`",
            path.display()
        )
    })?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

type Client = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn client(gateway: &str) -> Result<Client, String> {
    let gateway = gateway.trim_end_matches('/');
    Ok(BasicClient::new(ClientId::new(CLIENT_ID.to_owned()))
        .set_auth_type(AuthType::RequestBody)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{gateway}/oauth/device/code"))
                .map_err(|e| format!("{gateway}: {e}"))?,
        )
        .set_token_uri(
            TokenUrl::new(format!("{gateway}/oauth/token"))
                .map_err(|e| format!("{gateway}: {e}"))?,
        ))
}

/// What a refusal of the gateway's token endpoint says, or the transport's error.
fn refusal<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    error: &RequestTokenError<RE, T>,
) -> String {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let text = serde_json::to_value(response).unwrap_or_default();
            let code = text["error"].as_str().unwrap_or("error");
            match text["error_description"].as_str() {
                Some(description) => format!("{code}: {description}"),
                None => code.to_owned(),
            }
        }
        other => error_chain(other),
    }
}

/// Signs this machine in at `gateway`: `show` is told where to approve it (the URL and the
/// code), then this waits for the approval and keeps the credential at `path`.
pub async fn login(gateway: &str, path: &Path, show: impl Fn(&str, &str)) -> Result<(), String> {
    let http = OAuthHttp::new()?;
    let client = client(gateway)?;
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .request_async(&http)
        .await
        .map_err(|e| refusal(&e))?;
    let url = details.verification_uri_complete().map_or_else(
        || details.verification_uri().to_string(),
        |u| u.secret().clone(),
    );
    show(&url, details.user_code().secret());
    let tokens = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, None)
        .await
        .map_err(|e| refusal(&e))?;
    let refresh_token = tokens
        .refresh_token()
        .ok_or("the gateway sent no refresh token")?
        .secret()
        .clone();
    save(
        path,
        &Saved {
            gateway: gateway.trim_end_matches('/').to_owned(),
            refresh_token,
            key: Some(tokens.access_token().secret().clone()),
            key_expires_at: tokens
                .expires_in()
                .map(|d| now() + i64::try_from(d.as_secs()).unwrap_or(0)),
        },
    )
}

/// Whether the gateway still takes `key` (`GET /key/info` with it): a key ended early (its
/// person disabled, say) is renewed, which fails if the sign-in has ended. Unreachable counts
/// as valid: the client will find out itself.
async fn still_valid(http: &OAuthHttp, gateway: &str, key: &str) -> bool {
    let Ok(request) = oauth2::http::Request::get(format!("{gateway}/key/info"))
        .header(oauth2::http::header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Vec::new())
    else {
        return true;
    };
    match oauth2::AsyncHttpClient::call(http, request).await {
        Ok(response) => response.status() != oauth2::http::StatusCode::UNAUTHORIZED,
        Err(_) => true,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A current key: the one kept at `path` while it has [`RENEW_BEFORE`] left, else a new one
/// from the gateway (`gateway`, or the one `llmlite login` used).
pub async fn key(gateway: Option<&str>, path: &Path) -> Result<String, String> {
    let mut saved = load(path)?;
    if let Some(gateway) = gateway
        && gateway.trim_end_matches('/') != saved.gateway
    {
        return Err(format!(
            "{} is signed in to {}, not {gateway}: run llmlite login --gateway {gateway}",
            path.display(),
            saved.gateway
        ));
    }
    let margin = i64::try_from(RENEW_BEFORE.as_secs()).unwrap_or(900);
    let http = OAuthHttp::new()?;
    if let (Some(key), Some(expires)) = (&saved.key, saved.key_expires_at)
        && expires - now() > margin
        && still_valid(&http, &saved.gateway, key).await
    {
        return Ok(key.clone());
    }
    let tokens = client(&saved.gateway)?
        .exchange_refresh_token(&RefreshToken::new(saved.refresh_token.clone()))
        .request_async(&http)
        .await
        .map_err(|e| {
            format!(
                "{}; run llmlite login --gateway {}",
                refusal(&e),
                saved.gateway
            )
        })?;
    let key = tokens.access_token().secret().clone();
    if let Some(rotated) = tokens.refresh_token() {
        saved.refresh_token = rotated.secret().clone();
    }
    saved.key = Some(key.clone());
    saved.key_expires_at = tokens
        .expires_in()
        .map(|d| now() + i64::try_from(d.as_secs()).unwrap_or(0));
    save(path, &saved)?;
    Ok(key)
}
