//! The rotation record, `<prefix>/rotation` (a String parameter): what the last rotation did and,
//! while one runs, which step it reached — so a run that died mid-way is completed by the next,
//! and a person can see when the password last changed.
//!
//! While a rotation runs, its new password is kept in `<prefix>/rotation-pending` (a SecureString
//! under the password's key) and the record carries a salted SHA-256 [`Fingerprint`] of it. A
//! later run compares what SSM holds with the fingerprint instead of logging on with it: a logon
//! with a password the account does not have counts towards its lockout threshold.

use secrets::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Nothing in progress.
    Idle,
    /// The new password is in the pending parameter; AD may or may not hold it yet. The next run
    /// resets the target to it again (an administrative reset of the same value is accepted) and
    /// goes on.
    Pending,
    /// The target's new password is in AD and proven; SSM is being switched to it. The next run
    /// finishes the switch (it never goes back: the pending parameter still holds the password).
    Switching,
    /// SSM holds the new credential; the ECS deployment is (re)requested.
    Deploying,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub state: State,
    /// The account in SSM (as the username parameter holds it) once this record was written.
    pub active: String,
    /// The account being switched to (Switching, Deploying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The account that was active before the last completed rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// UTC, RFC 3339.
    pub time: String,
    /// `rotated`, `rolled-back`, `deployment-failed`, … and why.
    pub outcome: String,
    /// The fingerprint of the pending password (Pending, Switching). Records written by earlier
    /// versions have none; they are resumed without one (see `Rotator::resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// The EventBridge Scheduler time of the invocation that started the rotation, so a
    /// duplicate delivery of it is recognised once the rotation is done.
    #[serde(
        default,
        rename = "scheduledTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub execution: Option<String>,
}

/// `sha256:<salt>:<digest>`, hex: SHA-256 over a random 16-byte salt and the password. Tells
/// whether a value read from SSM is the pending password without keeping a second copy of it
/// in a plain String parameter; the password's entropy (≥ 16 random characters) makes the
/// digest useless for guessing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(password: &Secret) -> Result<Self, getrandom::Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)?;
        Ok(Self::with_salt(&salt, password))
    }

    fn with_salt(salt: &[u8], password: &Secret) -> Self {
        let digest = Sha256::new()
            .chain_update(salt)
            .chain_update(password.expose().as_bytes())
            .finalize();
        Self(format!("sha256:{}:{}", hex(salt), hex(&digest)))
    }

    /// Whether `password` is the value this fingerprint was taken of. A malformed fingerprint
    /// matches nothing.
    pub fn matches(&self, password: &Secret) -> bool {
        let mut parts = self.0.split(':');
        let (Some("sha256"), Some(salt), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some(salt) = unhex(salt) else {
            return false;
        };
        Self::with_salt(&salt, password) == *self
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Now, as `2026-11-25T16:40:00Z`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Seconds since the epoch as RFC 3339 UTC (the civil-from-days conversion).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_624_496), "2026-11-25T16:34:56Z");
    }

    #[test]
    fn record_round_trip() {
        let r = Record {
            state: State::Switching,
            active: r"EXAMPLE\svc-a".into(),
            target: Some(r"EXAMPLE\svc-b".into()),
            previous: None,
            time: now_utc(),
            outcome: "switching".into(),
            fingerprint: Some(Fingerprint::of(&Secret::new("pw-1")).unwrap()),
            execution: Some("c0ffee".into()),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""state":"switching""#), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        // A record of the previous version (no fingerprint, no pending state) still reads.
        let old = r#"{"state":"switching","active":"A","target":"B","time":"t","outcome":"o"}"#;
        let old: Record = serde_json::from_str(old).unwrap();
        assert_eq!(old.fingerprint, None);
    }

    #[test]
    fn fingerprints_tell_values_apart_without_holding_them() {
        let pw = Secret::new("Correct-Horse-Battery-Staple-42");
        let a = Fingerprint::of(&pw).unwrap();
        let b = Fingerprint::of(&pw).unwrap();
        assert!(a.matches(&pw) && b.matches(&pw));
        assert_ne!(a, b, "salted: two fingerprints of one value differ");
        assert!(!a.matches(&Secret::new("Correct-Horse-Battery-Staple-43")));
        assert!(!a.0.contains("Horse"));
        for bad in [
            "",
            "sha256:zz:00",
            "md5:00:00",
            "sha256:0:00",
            "sha256:00:00:00",
        ] {
            assert!(!Fingerprint(bad.into()).matches(&pw), "{bad}");
        }
    }
}
