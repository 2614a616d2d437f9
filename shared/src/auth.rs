//! Who is calling: the API key from `Authorization: Bearer sk-...` or `x-api-key`.
//!
//! Until virtual keys are checked at admission (issue #5), the chat routes accept the master
//! key only.

use axum::extract::FromRequestParts;
use http::HeaderMap;
use http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// The key a request carries, if any.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// A request that carries the master key.
pub struct MasterKey;

impl FromRequestParts<AppState> for MasterKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = api_key(&parts.headers).ok_or(ApiError::MissingApiKey)?;
        if state.config.master_key.matches(key) {
            Ok(MasterKey)
        } else {
            Err(ApiError::InvalidApiKey)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        assert_eq!(
            api_key(&headers(&[("authorization", "Bearer sk-1")])),
            Some("sk-1")
        );
        assert_eq!(
            api_key(&headers(&[("authorization", "bearer  sk-2 ")])),
            Some("sk-2")
        );
        assert_eq!(api_key(&headers(&[("x-api-key", "sk-3")])), Some("sk-3"));
        assert_eq!(api_key(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(api_key(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(api_key(&headers(&[])), None);
    }
}
