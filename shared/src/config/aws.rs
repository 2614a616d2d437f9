//! The AWS side of the configuration: the region (`AWS_REGION`, default London) and the shared
//! SDK configuration, either from the SDK's own chain or, for local doubles, with fixed fake
//! credentials.

use aws_config::{BehaviorVersion, Region, SdkConfig};

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
        .load()
        .await
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
