//! How long one AWS SDK call may take, from the environment.
//!
//! The AWS SDK for Rust reads no environment variable or profile key for timeouts (aws-config
//! 1.13's `default_provider::timeout_config` only sets its 3.1 s connect timeout; smithy-rs issue
//! 1732 tracks the rest, and `AWS_DEFAULTS_MODE` is not implemented), and without an operation or
//! attempt timeout an endpoint that accepts the connection and never answers holds a call until
//! the Lambda is killed. So these variables are this project's own:
//!
//! | variable | default | bounds |
//! | --- | --- | --- |
//! | `AWS_CONNECT_TIMEOUT_SECONDS` | 3.1 (the SDK's own default) | opening the TCP (and TLS) connection |
//! | `AWS_ATTEMPT_TIMEOUT_SECONDS` | 10 | one HTTP attempt: connect, send, the whole response of a buffered call, the headers of a streamed one |
//! | `AWS_OPERATION_TIMEOUT_SECONDS` | 25 | one call: every attempt, the back-off sleeps between them |
//!
//! Values are seconds, fractions allowed (`2.5`). They must keep connect ≤ attempt ≤ operation;
//! a variable left unset follows the ones that are set (setting only the operation timeout to 5
//! makes the attempt timeout 5 too).
//!
//! ## What a call can cost, worst case
//! The operation timeout caps the whole call, retries included: no SDK call built from
//! [`crate::load`]'s configuration returns later than `operation` after it started (plus the
//! microseconds its interceptors take to finish). Without that cap the standard retry mode
//! (`AWS_MAX_ATTEMPTS`, default 3) would multiply the attempt timeout: 3 × 10 s plus jittered
//! back-off of up to 1 s and 2 s ≈ 33 s (throttled calls back off longer, up to 20 s a retry). With the defaults a hanging endpoint therefore costs
//! 25 s: two full attempts and most of a third.
//!
//! ## Streamed downloads (S3 GetObject)
//! For an operation with a streaming response the SDK returns the output as soon as the headers
//! arrive, and the operation and attempt timeouts end there: reading the body afterwards is not
//! timed, so a legitimate large download is never cut. A body that *stalls* is cut by the SDK's
//! stalled-stream protection instead, on by default for our behavior version: an error once the
//! server sends nothing for 5 s (a slow consumer, like a busy share, does not count). The HTTP
//! "read timeout" of the SDK would not help here: it bounds only the wait for the response
//! headers, which the attempt timeout already does, so it is left unset.
//!
//! Credential providers (the ECS container endpoint of a task role, IMDS) keep their own
//! connect/read timeouts; in Lambda the credentials come from the environment.

use aws_config::{SdkConfig, timeout::TimeoutConfig};
use std::time::Duration;

/// The timeout variables, as the template and the README name them.
pub const CONNECT_VAR: &str = "AWS_CONNECT_TIMEOUT_SECONDS";
pub const ATTEMPT_VAR: &str = "AWS_ATTEMPT_TIMEOUT_SECONDS";
pub const OPERATION_VAR: &str = "AWS_OPERATION_TIMEOUT_SECONDS";

/// Longer than any of these is surely a value in milliseconds.
const MAX: Duration = Duration::from_secs(3600);

/// A variable's value is unusable; names the variable, what is wrong and how to fix it, like
/// `custom_resource::env::EnvError` (same fields, same message shape, so a function can convert
/// one into the other field by field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}; {fix}")]
pub struct EnvError {
    pub variable: &'static str,
    pub problem: String,
    pub fix: String,
}

/// The timeouts every SDK client of a function applies. See the module documentation for what
/// each bounds and the worst case a call can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (TCP and TLS).
    pub connect: Duration,
    /// One HTTP attempt of a call; retried attempts get a fresh one.
    pub attempt: Duration,
    /// One call, all attempts and back-off included: the longest any SDK call can take before it
    /// returns an error (for a streaming response: until its headers arrived).
    pub operation: Duration,
}

impl Timeouts {
    pub const DEFAULT: Self = Self {
        connect: Duration::from_millis(3100),
        attempt: Duration::from_secs(10),
        operation: Duration::from_secs(25),
    };

    /// Read the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the variables through `get` (the process environment in Lambda); blank is unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let connect = seconds(CONNECT_VAR, get(CONNECT_VAR))?;
        let attempt = seconds(ATTEMPT_VAR, get(ATTEMPT_VAR))?;
        let operation = seconds(OPERATION_VAR, get(OPERATION_VAR))?;

        // An unset one follows the set ones, so that connect <= attempt <= operation holds.
        let operation_or_default = operation.unwrap_or_else(|| {
            Self::DEFAULT
                .operation
                .max(attempt.unwrap_or_default())
                .max(connect.unwrap_or_default())
        });
        let attempt_or_default = attempt.unwrap_or_else(|| {
            Self::DEFAULT
                .attempt
                .min(operation_or_default)
                .max(connect.unwrap_or_default())
        });
        let connect_or_default =
            connect.unwrap_or_else(|| Self::DEFAULT.connect.min(attempt_or_default));
        let timeouts = Self {
            connect: connect_or_default,
            attempt: attempt_or_default,
            operation: operation_or_default,
        };

        // A connect timeout that contradicts an explicit operation timeout is named as such,
        // not as the attempt timeout the user never set (which only followed CONNECT up).
        if attempt.is_none()
            && let (Some(c), Some(o)) = (connect, operation)
            && c > o
        {
            return Err(EnvError {
                variable: CONNECT_VAR,
                problem: format!(
                    "{} s is longer than {OPERATION_VAR} ({} s), which includes connecting",
                    secs(c),
                    secs(o)
                ),
                fix: format!("make it at most {OPERATION_VAR}"),
            });
        }
        if timeouts.attempt > timeouts.operation {
            return Err(EnvError {
                variable: ATTEMPT_VAR,
                problem: format!(
                    "{} s is longer than {OPERATION_VAR} ({} s), so no attempt could ever time out",
                    secs(timeouts.attempt),
                    secs(timeouts.operation)
                ),
                fix: format!(
                    "make it at most {OPERATION_VAR}, e.g. a third of it so that the standard retry mode's 3 attempts fit"
                ),
            });
        }
        if timeouts.connect > timeouts.attempt {
            return Err(EnvError {
                variable: CONNECT_VAR,
                problem: format!(
                    "{} s is longer than {ATTEMPT_VAR} ({} s), which includes connecting",
                    secs(timeouts.connect),
                    secs(timeouts.attempt)
                ),
                fix: format!("make it at most {ATTEMPT_VAR}, or leave it unset"),
            });
        }
        Ok(timeouts)
    }

    /// The timeouts a configuration built by [`crate::load`] applies; `None` for a configuration
    /// built elsewhere that lacks one of them.
    pub fn of(config: &SdkConfig) -> Option<Self> {
        let t = config.timeout_config()?;
        Some(Self {
            connect: t.connect_timeout()?,
            attempt: t.operation_attempt_timeout()?,
            operation: t.operation_timeout()?,
        })
    }

    /// As the SDK takes them. No read timeout: see the module documentation.
    pub fn to_timeout_config(self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

fn seconds(variable: &'static str, value: Option<String>) -> Result<Option<Duration>, EnvError> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = |problem: String| {
        EnvError {
        variable,
        problem,
        fix: "give a number of seconds greater than 0 and at most 3600, e.g. 10 or 2.5, or leave it unset for the default"
            .into(),
    }
    };
    let number: f64 = value
        .parse()
        .map_err(|_| bad(format!("{value:?} is not a number of seconds")))?;
    if !number.is_finite() || number <= 0.0 {
        return Err(bad(format!(
            "{value:?} is not a positive number of seconds (a timeout cannot be disabled)"
        )));
    }
    let duration = Duration::try_from_secs_f64(number)
        .map_err(|_| bad(format!("{value:?} is not a usable number of seconds")))?;
    if duration > MAX {
        return Err(bad(format!(
            "{value:?} is more than an hour: the value is in seconds, not milliseconds"
        )));
    }
    if duration < Duration::from_millis(1) {
        return Err(bad(format!("{value:?} is shorter than a millisecond")));
    }
    Ok(Some(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(pairs: &[(&str, &str)]) -> Result<Timeouts, EnvError> {
        Timeouts::from_lookup(|k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn unset_gives_the_defaults() {
        assert_eq!(timeouts(&[]), Ok(Timeouts::DEFAULT));
        assert_eq!(
            timeouts(&[(ATTEMPT_VAR, ""), (OPERATION_VAR, "  ")]),
            Ok(Timeouts::DEFAULT)
        );
        assert_eq!(Timeouts::DEFAULT.connect, s(3.1));
        assert_eq!(Timeouts::default(), Timeouts::DEFAULT);
    }

    #[test]
    fn all_three_set_whole_or_fractional() {
        let t = timeouts(&[
            (CONNECT_VAR, "0.25"),
            (ATTEMPT_VAR, " 2.5 "),
            (OPERATION_VAR, "7"),
        ]);
        assert_eq!(
            t,
            Ok(Timeouts {
                connect: s(0.25),
                attempt: s(2.5),
                operation: s(7.0),
            })
        );
    }

    #[test]
    fn unset_ones_follow_the_set_ones() {
        // Only a short operation timeout: the attempt and connect timeouts shrink to it.
        let t = timeouts(&[(OPERATION_VAR, "2")]).unwrap();
        assert_eq!(
            (t.connect, t.attempt, t.operation),
            (s(2.0), s(2.0), s(2.0))
        );
        // Only a long attempt timeout: the operation timeout grows to it.
        let t = timeouts(&[(ATTEMPT_VAR, "40")]).unwrap();
        assert_eq!(
            (t.connect, t.attempt, t.operation),
            (s(3.1), s(40.0), s(40.0))
        );
        // Only a short attempt timeout: connect shrinks, operation keeps its default.
        let t = timeouts(&[(ATTEMPT_VAR, "1")]).unwrap();
        assert_eq!(
            (t.connect, t.attempt, t.operation),
            (s(1.0), s(1.0), s(25.0))
        );
        // Only a long connect timeout: both others grow to it.
        let t = timeouts(&[(CONNECT_VAR, "30")]).unwrap();
        assert_eq!(
            (t.connect, t.attempt, t.operation),
            (s(30.0), s(30.0), s(30.0))
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        for bad in [
            "ten",
            "-1",
            "0",
            "0.0",
            "NaN",
            "inf",
            "1e400",
            "5000",
            "0.0000001",
        ] {
            let e = timeouts(&[(ATTEMPT_VAR, bad)]).unwrap_err();
            assert_eq!(e.variable, ATTEMPT_VAR, "{bad}");
            let text = e.to_string();
            assert!(text.starts_with("AWS_ATTEMPT_TIMEOUT_SECONDS: "), "{text}");
            assert!(text.contains("number of seconds greater than 0"), "{text}");
        }
        let e = timeouts(&[(OPERATION_VAR, "5000")]).unwrap_err();
        assert_eq!(e.variable, OPERATION_VAR);
        assert!(e.problem.contains("not milliseconds"), "{e}");
        let e = timeouts(&[(CONNECT_VAR, "3s")]).unwrap_err();
        assert_eq!(e.variable, CONNECT_VAR);
        assert_eq!(e.problem, "\"3s\" is not a number of seconds");
    }

    #[test]
    fn contradicting_values_are_refused() {
        let e = timeouts(&[(ATTEMPT_VAR, "30"), (OPERATION_VAR, "10")]).unwrap_err();
        assert_eq!(e.variable, ATTEMPT_VAR);
        assert_eq!(
            e.to_string(),
            "AWS_ATTEMPT_TIMEOUT_SECONDS: 30 s is longer than AWS_OPERATION_TIMEOUT_SECONDS (10 s), \
             so no attempt could ever time out; make it at most AWS_OPERATION_TIMEOUT_SECONDS, \
             e.g. a third of it so that the standard retry mode's 3 attempts fit"
        );
        let e = timeouts(&[(CONNECT_VAR, "5"), (ATTEMPT_VAR, "2")]).unwrap_err();
        assert_eq!(e.variable, CONNECT_VAR);
        assert!(e.problem.contains("(2 s)"), "{e}");
        // With the attempt timeout unset, the contradiction is between the two that were set.
        let e = timeouts(&[(CONNECT_VAR, "5"), (OPERATION_VAR, "2")]).unwrap_err();
        assert_eq!(e.variable, CONNECT_VAR, "{e}");
        assert!(e.problem.contains(OPERATION_VAR), "{e}");
        // Equal is fine.
        assert!(timeouts(&[(CONNECT_VAR, "2"), (ATTEMPT_VAR, "2"), (OPERATION_VAR, "2")]).is_ok());
    }

    #[test]
    fn read_back_from_the_sdk_config() {
        let t = Timeouts {
            connect: s(0.5),
            attempt: s(1.5),
            operation: s(4.0),
        };
        let config = SdkConfig::builder()
            .timeout_config(t.to_timeout_config())
            .build();
        assert_eq!(Timeouts::of(&config), Some(t));
        assert_eq!(Timeouts::of(&SdkConfig::builder().build()), None);
        // No read timeout: it would only repeat the attempt timeout (see the module docs).
        assert_eq!(t.to_timeout_config().read_timeout(), None);
    }
}
