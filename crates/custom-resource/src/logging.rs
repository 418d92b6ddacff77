//! JSON log lines for CloudWatch, one object per line.

use tracing::Level;
use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};

/// The level from `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls) or `LOG_LEVEL`,
/// default INFO. The AWS SDK's own chatter, and the transport and authentication libraries', is held
/// at WARN so request details never reach logs.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("LOG_LEVEL"))
        .ok()
        .and_then(|v| parse_level(&v))
        .unwrap_or(Level::INFO);
    let filter = Targets::new()
        .with_default(level)
        .with_target("aws_smithy_runtime", Level::WARN)
        .with_target("aws_smithy_http_client", Level::WARN)
        .with_target("aws_config", Level::WARN)
        .with_target("aws_runtime", Level::WARN)
        .with_target("hyper", Level::WARN)
        .with_target("hyper_util", Level::WARN)
        .with_target("rustls", Level::WARN)
        // NTLM's library logs each security-context step at INFO on every SMB logon.
        .with_target("sspi", Level::WARN)
        .with_target("lambda_runtime", Level::WARN)
        .with_target("lambda_runtime_api_client", Level::WARN);
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stdout);
    // A second init (tests, or a binary that already set one up) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .try_init();
    install_panic_hook();
}

fn parse_level(v: &str) -> Option<Level> {
    match v.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(Level::TRACE),
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" | "WARNING" => Some(Level::WARN),
        "ERROR" | "FATAL" => Some(Level::ERROR),
        _ => None,
    }
}

/// Panics become one JSON error line instead of free text on stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %crate::runtime::panic_message(info.payload()), %location, "handler panicked");
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels() {
        assert_eq!(super::parse_level("debug"), Some(tracing::Level::DEBUG));
        assert_eq!(super::parse_level("WARNING"), Some(tracing::Level::WARN));
        assert_eq!(super::parse_level("loud"), None);
    }
}
