//! The company's OpenID Provider, as the console's sign-in uses it: discovery (cached for
//! [`DISCOVERY_TTL`]), the authorization URL with PKCE (S256), a state and a nonce, the code
//! exchange, and the ID token's checks (signature against the issuer's JWKS, issuer, audience,
//! expiry with [`CLOCK_SKEW`], nonce). All of it is the `openidconnect` crate's; this module
//! only gives it an HTTP client (ours: hyper with rustls, no redirects followed, a timeout and a
//! size limit) and reads the claims llmlite needs. Tokens never reach a log line: errors name
//! what failed, never a token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata,
    RedirectUrl, RefreshToken, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::oauth_http::{OAuthHttp, error_chain};
use crate::config::sign_in::Oidc as Settings;

/// How long a discovery document (and the JWKS with it) is used before it is fetched again, so
/// that the issuer's key rotation is picked up.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// How far the issuer's clock and ours may disagree when an ID token's times are checked.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The claims beyond the standard ones (`groups` is not standard): all of them, read by name.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

/// Discovery's `end_session_endpoint` (RP-Initiated Logout), which the core metadata lacks.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LogoutMetadata {
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for LogoutMetadata {}

type Metadata = ProviderMetadata<
    LogoutMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Fields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type Tokens = StandardTokenResponse<Fields, CoreTokenType>;

type Client = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in failed. The text names the check, never a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider could not be reached or discovered: {0}")]
    Discovery(String),
    #[error("the identity provider refused the code: {0}")]
    Exchange(String),
    #[error("the identity provider sent no ID token")]
    NoIdToken,
    #[error("the ID token was refused: {0}")]
    IdToken(String),
}

/// What a sign-in starts with: where to send the browser, and what the callback must match.
pub struct Begun {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// Who signed in, from a checked ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The ID token itself, kept only as the end-session endpoint's `id_token_hint`.
    pub id_token: String,
    /// The provider's refresh token, when it gave one (the device flow keeps it to learn at
    /// each refresh whether the person is still enabled).
    pub refresh_token: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.subject)
    }
}

/// The provider's discovered endpoints, and when they were fetched.
struct Discovered {
    client: Client,
    end_session: Option<String>,
    at: Instant,
}

/// The company's OpenID Provider.
pub struct Provider {
    settings: Settings,
    http: OAuthHttp,
    discovered: Mutex<Option<Arc<Discovered>>>,
}

impl Provider {
    pub fn new(settings: Settings) -> Result<Self, String> {
        Ok(Provider {
            settings,
            http: OAuthHttp::new()?,
            discovered: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The discovered client, fetched again after [`DISCOVERY_TTL`].
    async fn discovered(&self) -> Result<Arc<Discovered>, OidcError> {
        let mut cached = self.discovered.lock().await;
        if let Some(found) = cached.as_ref()
            && found.at.elapsed() < DISCOVERY_TTL
        {
            return Ok(Arc::clone(found));
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(self.settings.redirect_uri.clone())
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let client = Client::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(redirect);
        let found = Arc::new(Discovered {
            client,
            end_session,
            at: Instant::now(),
        });
        *cached = Some(Arc::clone(&found));
        Ok(found)
    }

    /// Starts a sign-in: the authorization URL (code flow, PKCE S256), with its state, nonce
    /// and verifier for the callback to check.
    pub async fn begin(&self) -> Result<Begun, OidcError> {
        let discovered = self.discovered().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Begun {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE verifier) and checks the ID token: signature, issuer,
    /// audience, times against `now` with [`CLOCK_SKEW`], and `nonce`.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        now: DateTime<Utc>,
    ) -> Result<Identity, OidcError> {
        let discovered = self.discovered().await?;
        let tokens = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(token_error(&e)))?;
        let id_token = tokens.id_token().ok_or(OidcError::NoIdToken)?;
        let verifier = discovered
            .client
            .id_token_verifier()
            // The crate checks `now < exp`; our clock may run up to the skew ahead of theirs.
            .set_time_fn(move || now - skew())
            .set_issue_time_verifier_fn(move |issued| {
                if issued > now + skew() {
                    Err(format!("it was issued in the future ({issued})"))
                } else {
                    Ok(())
                }
            });
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| OidcError::IdToken(error_chain(&e)))?;
        let groups = match claims
            .additional_claims()
            .claims
            .get(&self.settings.groups_claim)
        {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
            groups,
            id_token: id_token.to_string(),
            refresh_token: tokens.refresh_token().map(|t| t.secret().clone()),
        })
    }

    /// Uses the provider's refresh token: `Ok` while the person is still enabled there, with the
    /// provider's next refresh token if it rotated it.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Option<String>, OidcError> {
        let discovered = self.discovered().await?;
        let tokens = discovered
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(token_error(&e)))?;
        Ok(tokens.refresh_token().map(|t| t.secret().clone()))
    }

    /// Where to send the browser to end the session at the provider too, if it says (its
    /// `end_session_endpoint`), naming the session by its ID token and asking to come back to
    /// the sign-in page.
    pub async fn end_session_url(&self, id_token: Option<&str>) -> Option<String> {
        let discovered = self.discovered().await.ok()?;
        let endpoint = discovered.end_session.as_deref()?;
        let mut url = openidconnect::url::Url::parse(endpoint).ok()?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(token) = id_token {
                query.append_pair("id_token_hint", token);
            }
            query
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("post_logout_redirect_uri", &self.settings.post_logout_uri);
        }
        Some(url.to_string())
    }
}

fn skew() -> chrono::Duration {
    chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_else(|_| chrono::Duration::seconds(60))
}

/// A token endpoint's refusal: its OAuth error code (`invalid_grant`, ...), else the chain.
fn token_error<RE: std::error::Error + 'static>(
    error: &openidconnect::RequestTokenError<RE, StandardErrorResponse<CoreErrorResponseType>>,
) -> String {
    match error {
        openidconnect::RequestTokenError::ServerResponse(response) => {
            response.error().as_ref().to_owned()
        }
        other => error_chain(other),
    }
}
