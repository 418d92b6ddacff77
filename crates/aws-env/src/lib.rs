//! The AWS SDK configuration every fargate-smb function shares.
//!
//! The SDK crates are built without default features (which would bring aws-lc-sys and a second
//! rustls/hyper stack); this crate supplies the one HTTPS client they use: hyper 1 with rustls on
//! the `ring` provider. Credentials and region come from the standard chain (in Lambda: the
//! environment). `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` are honoured by the SDK itself,
//! which is how the tests point every function at moto.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::{
    Builder,
    tls::{Provider, rustls_provider::CryptoMode},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no AWS region is configured: set AWS_REGION (Lambda sets it for you; for local runs export AWS_REGION=us-east-1)"
    )]
    NoRegion,
}

/// Load the shared configuration. Call once at init and clone the clients built from it.
pub async fn load() -> Result<SdkConfig, ConfigError> {
    let http_client = Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .load()
        .await;
    if config.region().is_none() {
        return Err(ConfigError::NoRegion);
    }
    Ok(config)
}
