//! The AWS SDK configuration every fargate-smb function shares.
//!
//! The SDK crates are built without default features (which would bring aws-lc-sys and a second
//! rustls/hyper stack); this crate supplies the one HTTPS client they use: hyper 1 with rustls on
//! the `ring` provider. Credentials and region come from the standard chain (in Lambda: the
//! environment). `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` are honoured by the SDK itself,
//! which is how the tests point every function at moto.
//!
//! Every call is bounded in time: connect, attempt and operation timeouts from
//! `AWS_CONNECT_TIMEOUT_SECONDS`, `AWS_ATTEMPT_TIMEOUT_SECONDS` and
//! `AWS_OPERATION_TIMEOUT_SECONDS` (the SDK reads no such variables itself); see [`Timeouts`]
//! for the defaults, what each bounds and the worst case a call can take.

mod timeouts;

pub use timeouts::{ATTEMPT_VAR, CONNECT_VAR, EnvError, OPERATION_VAR, Timeouts};

use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
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
    /// A timeout variable is unusable.
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// Load the shared configuration, with the [`Timeouts`] the environment sets. Call once at init
/// and clone the clients built from it; [`Timeouts::of`] reads the timeouts back from it.
pub async fn load() -> Result<SdkConfig, ConfigError> {
    load_with(Timeouts::from_env()?).await
}

/// [`load`] with timeouts of the caller's choosing (already read with [`Timeouts::from_lookup`]).
pub async fn load_with(timeouts: Timeouts) -> Result<SdkConfig, ConfigError> {
    let config = loader(timeouts).load().await;
    if config.region().is_none() {
        return Err(ConfigError::NoRegion);
    }
    Ok(config)
}

fn loader(timeouts: Timeouts) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(SharedHttpClient::new(LazyHttpsClient::default()))
        .timeout_config(timeouts.to_timeout_config())
}

/// An SDK error as text for a message, without what the SDK's own `DisplayErrorContext` adds:
/// the error's `Debug`, which for an answer that could not be parsed holds the raw HTTP response,
/// body and all (a `GetSecretValue` or a decrypted `GetParameter` would print the secret). A
/// service error gives its code and message; an answer that could not be read says only that, or
/// the parser's own words; anything else (a timeout, no connection) its chain of causes.
pub fn sdk_error_text<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    match err {
        SdkError::ServiceError(_) => match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            (None, Some(message)) => message.to_owned(),
            // What the SDK makes of an answer it could not parse: the parser's words (a position,
            // what it expected), never the body.
            (None, None) => causes(err),
        },
        SdkError::ResponseError(_) => "the service's answer could not be read".into(),
        _ => causes(err),
    }
}

/// An error and its sources, by their `Display` alone.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test service error, for `SdkError`'s type parameter.
    #[derive(Debug)]
    struct Failed(aws_smithy_types::error::ErrorMetadata);
    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed")
        }
    }
    impl std::error::Error for Failed {}
    impl aws_smithy_types::error::metadata::ProvideErrorMetadata for Failed {
        fn meta(&self) -> &aws_smithy_types::error::ErrorMetadata {
            &self.0
        }
    }

    #[test]
    fn an_unreadable_answer_is_not_printed() {
        use aws_smithy_runtime_api::client::result::SdkError;
        let raw = r#"{"SecretString": "Hidden-1"}"#.to_owned();
        let e = SdkError::<Failed, String>::response_error("expected a number", raw);
        let text = sdk_error_text(&e);
        assert_eq!(text, "the service's answer could not be read");
        // What the SDK's own helper would have printed.
        let theirs = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
        assert!(theirs.contains("Hidden-1"), "{theirs}");
    }

    #[test]
    fn a_service_error_gives_its_code_and_message() {
        use aws_smithy_runtime_api::client::result::SdkError;
        let meta = aws_smithy_types::error::ErrorMetadata::builder()
            .code("AccessDeniedException")
            .message("not allowed")
            .build();
        let e = SdkError::<Failed, String>::service_error(Failed(meta), String::new());
        assert_eq!(sdk_error_text(&e), "AccessDeniedException: not allowed");
    }
    use aws_config::Region;
    use std::time::Duration;

    #[tokio::test]
    async fn the_loaded_config_carries_the_timeouts() {
        let timeouts = Timeouts {
            connect: Duration::from_millis(700),
            attempt: Duration::from_secs(2),
            operation: Duration::from_secs(5),
        };
        let config = loader(timeouts)
            .region(Region::from_static("us-east-1"))
            .load()
            .await;
        assert_eq!(Timeouts::of(&config), Some(timeouts));
        let sdk = config.timeout_config().map(|t| t.read_timeout());
        assert_eq!(sdk, Some(None), "no read timeout");
    }
}
