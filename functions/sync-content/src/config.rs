//! The function's configuration, from its environment (the template sets it). Every error names
//! the variable and the fix.

use crate::events::Decoding;
use share_target::{Target, TargetProperties};

/// The configuration error: the variable, the problem, the fix.
pub use custom_resource::env::EnvError as ConfigError;
use custom_resource::env::env_error as err;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bucket: String,
    /// Normalized: empty or ending in `/`.
    pub prefix: String,
    /// The share, folder and admin credential (validated as `Custom::WebContent` validates them).
    pub target: Target,
    /// The DynamoDB table holding each key's last applied sequencer.
    pub state_table: String,
    /// Records (or reconcile copies) applied at once.
    pub parallelism: usize,
    pub decoding: Decoding,
    /// Reconcile removes the engine's temporary files older than this (`TEMP_MAX_AGE_SECONDS`).
    /// A temporary file is written without pause until renamed, so its last write time is at
    /// most a few seconds old while a copy is alive; the default (20 min) is the longest
    /// Lambda timeout plus 5 minutes of clock skew, as `Custom::WebContent` uses, so no live
    /// copy of any function writing the folder is swept.
    pub temp_age: std::time::Duration,
}

impl Config {
    /// The state items' partition: one per target folder and source, so two functions syncing
    /// different folders (or prefixes) can share a table.
    ///
    /// `|paths`: the items are keyed by the file's folded path; items of versions that keyed
    /// them by the S3 key (without the suffix) are ignored, and the next reconcile rebuilds the
    /// state it needs.
    pub fn scope(&self) -> String {
        format!(
            "{}|s3://{}/{}|paths",
            self.target.display(),
            self.bucket,
            self.prefix
        )
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let bucket = value("BUCKET").ok_or_else(|| {
            err(
                "BUCKET",
                "is not set",
                "set it to the bucket whose events this function applies",
            )
        })?;
        let prefix = content_paths::normalize_prefix(&value("PREFIX").unwrap_or_default());
        let share_unc = value("SHARE_UNC").ok_or_else(|| {
            err(
                "SHARE_UNC",
                "is not set",
                r"set it to \\server\share (a folder part is allowed)",
            )
        })?;
        let port = match value("SMB_PORT") {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                err(
                    "SMB_PORT",
                    format!("{p:?} is not a port"),
                    "use 445, or leave it unset",
                )
            })?),
        };
        let require_encryption = match value("SMB_REQUIRE_ENCRYPTION") {
            None => None,
            Some(v) => Some(boolean("SMB_REQUIRE_ENCRYPTION", &v)?),
        };
        let folder = value("FOLDER");
        let admin_username = value("ADMIN_USERNAME");
        let admin_password_parameter = value("ADMIN_PASSWORD_PARAMETER");
        let admin_secret_id = value("ADMIN_SECRET_ID");
        let properties = TargetProperties {
            share_unc: &share_unc,
            folder: folder.as_deref(),
            admin_username: admin_username.as_deref(),
            admin_password_parameter: admin_password_parameter.as_deref(),
            admin_secret_id: admin_secret_id.as_deref(),
            port,
            require_encryption,
        };
        let target =
            Target::validate(&properties, "writes the content").map_err(|i| ConfigError {
                variable: variable_of(i.property),
                problem: i.problem,
                fix: i.fix,
            })?;
        let state_table = value("STATE_TABLE").ok_or_else(|| {
            err(
                "STATE_TABLE",
                "is not set",
                "set it to the DynamoDB table the template creates for the sync's per-key state",
            )
        })?;
        let parallelism = match value("PARALLELISM") {
            None => 8,
            Some(p) => match p.parse::<usize>() {
                Ok(n @ 1..=64) => n,
                _ => {
                    return Err(err(
                        "PARALLELISM",
                        format!("{p:?} is not 1 to 64"),
                        "use e.g. 8",
                    ));
                }
            },
        };
        let decode_eventbridge = match value("EVENTBRIDGE_KEYS_URL_ENCODED") {
            None => true,
            Some(v) => boolean("EVENTBRIDGE_KEYS_URL_ENCODED", &v)?,
        };
        let temp_age = match value("TEMP_MAX_AGE_SECONDS") {
            None => std::time::Duration::from_secs(1200),
            Some(v) => match v.parse::<u64>() {
                Ok(n @ 1..) => std::time::Duration::from_secs(n),
                _ => {
                    return Err(err(
                        "TEMP_MAX_AGE_SECONDS",
                        format!("{v:?} is not a positive number of seconds"),
                        "use e.g. 1200 (more than the longest timeout of the functions writing the folder), or leave it unset",
                    ));
                }
            },
        };
        Ok(Self {
            bucket,
            prefix,
            target,
            state_table,
            parallelism,
            decoding: Decoding { decode_eventbridge },
            temp_age,
        })
    }
}

fn boolean(variable: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(err(
            variable,
            format!("{v:?} is not a boolean"),
            "use true or false",
        )),
    }
}

/// share-target names its errors after the custom resources' properties; here they are variables.
fn variable_of(property: &str) -> &'static str {
    match property {
        "ShareUnc" => "SHARE_UNC",
        "Folder" => "FOLDER",
        "AdminUsername" => "ADMIN_USERNAME",
        "AdminPasswordParameter" => "ADMIN_PASSWORD_PARAMETER",
        "AdminSecretId" => "ADMIN_SECRET_ID",
        "Port" => "SMB_PORT",
        "RequireEncryption" => "SMB_REQUIRE_ENCRYPTION",
        _ => "the share configuration",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const GOOD: &[(&str, &str)] = &[
        ("BUCKET", "content"),
        ("PREFIX", "/site/current"),
        ("SHARE_UNC", r"\\fsx.corp.example.com\share"),
        ("FOLDER", "web"),
        ("ADMIN_USERNAME", r"CORP\admin"),
        ("ADMIN_PASSWORD_PARAMETER", "/fargate-smb/admin/password"),
        ("STATE_TABLE", "sync-state"),
    ];

    #[test]
    fn a_good_environment() {
        let c = env(GOOD).unwrap();
        assert_eq!(c.prefix, "site/current/");
        assert_eq!(c.target.folder, "web");
        assert_eq!(c.parallelism, 8);
        assert!(c.decoding.decode_eventbridge);
        assert_eq!(
            c.scope(),
            r"\\fsx.corp.example.com\share\web|s3://content/site/current/|paths"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            GOOD.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        for name in [
            "BUCKET",
            "SHARE_UNC",
            "STATE_TABLE",
            "ADMIN_PASSWORD_PARAMETER",
        ] {
            let e = env(&without(name)).unwrap_err();
            assert_eq!(e.variable, name, "{e}");
        }
        let with = |k: &'static str, v: &'static str| -> Vec<(&str, &str)> {
            let mut p = without(k);
            p.push((k, v));
            p
        };
        assert_eq!(
            env(&with("SHARE_UNC", "fsx/share")).unwrap_err().variable,
            "SHARE_UNC"
        );
        assert_eq!(
            env(&with("FOLDER", "a/CON")).unwrap_err().variable,
            "FOLDER"
        );
        assert_eq!(
            env(&with("PARALLELISM", "0")).unwrap_err().variable,
            "PARALLELISM"
        );
        assert_eq!(
            env(&with("SMB_PORT", "x")).unwrap_err().variable,
            "SMB_PORT"
        );
        assert_eq!(
            env(&with("EVENTBRIDGE_KEYS_URL_ENCODED", "maybe"))
                .unwrap_err()
                .variable,
            "EVENTBRIDGE_KEYS_URL_ENCODED"
        );
        assert!(
            !env(&with("EVENTBRIDGE_KEYS_URL_ENCODED", "false"))
                .unwrap()
                .decoding
                .decode_eventbridge
        );
    }
}
