//! The AWS side of the configuration: the region (`AWS_REGION`, default London) and the shared
//! SDK configuration, either from the SDK's own chain or, for local doubles, with fixed fake
//! credentials.

use std::sync::LazyLock;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_bedrockruntime::config::SharedHttpClient;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use base64::Engine;

use crate::env::{ConfigError, EnvSource, non_empty};

pub const DEFAULT_REGION: &str = "eu-west-2";

pub fn aws_region(env: &impl EnvSource) -> Result<String, ConfigError> {
    let region = non_empty(env, "AWS_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let valid = region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.contains('-');
    if valid {
        Ok(region)
    } else {
        Err(ConfigError::new(
            "AWS_REGION",
            format!("`{region}` is not an AWS region name such as eu-west-2"),
        ))
    }
}

/// AWS configuration with fixed, fake credentials, for talking to local doubles only (`llmlite
/// dev` and the tests): no credential chain is consulted, so nothing reaches for a metadata
/// service or a profile.
pub async fn local_aws_config(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(HTTPS.clone())
        .credentials_provider(aws_sdk_bedrockruntime::config::Credentials::new(
            "LLMLITELOCAL",
            "llmlite-local-secret",
            None,
            None,
            "llmlite-local",
        ))
        .load()
        .await
}

/// The shared AWS SDK configuration for `region`. It honours the SDK's standard environment
/// variables (credentials, `AWS_ENDPOINT_URL_<SERVICE>`, profiles).
pub async fn aws_sdk_config(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(HTTPS.clone())
        .load()
        .await
}

/// The HTTPS client every AWS SDK client of the process shares (Bedrock, S3, Secrets Manager,
/// the credential providers). It trusts Mozilla's root certificates, compiled in
/// (`webpki-root-certs`), not the system's: rustls-native-certs reads every file under
/// `/etc/ssl/certs` and the bundle beside it, and that was most of a cold start's CPU (issue
/// 27). Every AWS endpoint (public, FIPS or a VPC endpoint) presents an Amazon Trust Services
/// chain, whose roots are in the set.
static HTTPS: LazyLock<SharedHttpClient> = LazyLock::new(|| {
    let mut roots = TrustStore::empty();
    roots.add_pem_certificate(compiled_roots_pem());
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::rustls(
        tls::rustls_provider::CryptoMode::AwsLc,
    ));
    match TlsContext::builder().with_trust_store(roots).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(e) => {
            tracing::warn!(error = %e, "compiled-in trust roots refused; using the system's");
            builder.build_https()
        }
    }
});

/// The compiled-in root certificates as one PEM bundle (the form the SDK's trust store takes).
fn compiled_roots_pem() -> Vec<u8> {
    let mut pem = Vec::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2048);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map as env;

    #[test]
    fn region_defaults_to_london_and_is_validated() {
        assert_eq!(aws_region(&env(&[])).unwrap(), "eu-west-2");
        assert_eq!(
            aws_region(&env(&[("AWS_REGION", "us-east-1")])).unwrap(),
            "us-east-1"
        );
        assert_eq!(
            aws_region(&env(&[("AWS_REGION", "EU WEST")]))
                .unwrap_err()
                .variable,
            "AWS_REGION"
        );
    }
}
