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
use aws_smithy_runtime_api::client::{
    http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector},
    runtime_components::RuntimeComponents,
};
use std::sync::OnceLock;

/// The HTTPS client, built on first use. Building it reads and parses the system's root
/// certificates (several milliseconds); a custom resource that fails validation, or a cold
/// start, should not pay that before it needs the network.
#[derive(Debug, Default)]
struct LazyHttpsClient {
    inner: OnceLock<SharedHttpClient>,
}

impl HttpClient for LazyHttpsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.inner
            .get_or_init(|| {
                Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https()
            })
            .http_connector(settings, components)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no AWS region is configured: set AWS_REGION (Lambda sets it for you; for local runs export AWS_REGION=us-east-1)"
    )]
    NoRegion,
}

/// Load the shared configuration. Call once at init and clone the clients built from it.
pub async fn load() -> Result<SdkConfig, ConfigError> {
    let http_client = SharedHttpClient::new(LazyHttpsClient::default());
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .load()
        .await;
    if config.region().is_none() {
        return Err(ConfigError::NoRegion);
    }
    Ok(config)
}
