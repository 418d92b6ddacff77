//! The rotation record, `<prefix>/rotation` (a String parameter): what the last rotation did and,
//! while one runs, which step it reached — so a run that died mid-way is completed or rolled
//! back by the next, and a person can see when the password last changed.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Nothing in progress.
    Idle,
    /// The target's new password is proven; SSM is being switched to it.
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
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""state":"switching""#), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }
}
