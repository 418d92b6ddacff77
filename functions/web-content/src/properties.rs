//! Properties and their validation; every error names the property and the fix.

use custom_resource::{Invalid, cfn, invalid};
use serde::Deserialize;
use share_target::{Target, TargetProperties};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Properties {
    /// `\\server\share` (a folder part is allowed and goes before `Folder`).
    pub share_unc: String,
    /// The folder within the share that receives the content; created if missing. Empty or
    /// absent: the share's root.
    #[serde(default)]
    pub folder: Option<String>,
    pub bucket: String,
    /// Only keys under this prefix (taken as a folder: `site` means `site/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `DOMAIN\admin` or `admin@domain`: an account that may write the folder.
    #[serde(default)]
    pub admin_username: Option<String>,
    /// SSM SecureString with the admin's password...
    #[serde(default)]
    pub admin_password_parameter: Option<String>,
    /// ...or a Secrets Manager secret: a plain password, or JSON `{"username", "password"}`.
    #[serde(default)]
    pub admin_secret_id: Option<String>,
    /// Change it (any value) to copy everything again on Update.
    #[serde(default, deserialize_with = "cfn::opt_text")]
    pub content_version: Option<String>,
    /// Remove files this resource copied whose object is gone from the source.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub delete_extraneous: Option<bool>,
    #[serde(default, deserialize_with = "cfn::opt_number")]
    pub parallelism: Option<usize>,
    /// SMB sessions the files are spread over (a file server may serve one session from one
    /// core). Default [`DEFAULT_SESSIONS`].
    #[serde(default, deserialize_with = "cfn::opt_number")]
    pub sessions: Option<usize>,
    /// Fail the request when any key was rejected (after copying the rest). Default true.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub fail_on_rejected_keys: Option<bool>,
    /// On Delete, remove the files this resource copied (and its manifest). Default false.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub remove_on_delete: Option<bool>,
    /// Write the load balancer's health probe (`fargate-smb-health.txt`) at the top of the
    /// folder once the copy succeeds. Default true. The template gives it explicitly: a stack
    /// upgraded from a version without the probe then sees a property change, so CloudFormation
    /// sends this resource the Update that writes it before the health checks ask for it.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub health_probe: Option<bool>,
    /// SMB port (445).
    #[serde(default, deserialize_with = "cfn::opt_number")]
    pub port: Option<u16>,
    /// Refuse an unencrypted SMB session. Default true.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub require_encryption: Option<bool>,
}

pub const DEFAULT_PARALLELISM: usize = 8;
pub const MAX_PARALLELISM: usize = 64;
/// Two: a second session costs one logon, and a file server that serves each session from one
/// core (Samba runs one process per connection) gets a second one. On the 2-core build machine
/// `scripts/bench-web-content` could not tell 1, 2 and 4 apart (the source, moto on the same
/// cores, is the limit there, and so is `scripts/bench-smb`'s server): re-measure against the
/// real file server before raising it.
pub const DEFAULT_SESSIONS: usize = 2;
pub const MAX_SESSIONS: usize = 8;

/// The validated view of the properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The share, folder and admin credential source.
    pub target: Target,
    pub bucket: String,
    pub prefix: String,
}

/// What the admin account does, for the messages of [`Target::validate`].
const ADMIN_ROLE: &str = "writes the content";

impl Properties {
    pub fn prune(&self) -> bool {
        self.delete_extraneous.unwrap_or(false)
    }

    pub fn fail_on_rejected(&self) -> bool {
        self.fail_on_rejected_keys.unwrap_or(true)
    }

    pub fn health_probe(&self) -> bool {
        self.health_probe.unwrap_or(true)
    }

    pub fn remove_on_delete(&self) -> bool {
        self.remove_on_delete.unwrap_or(false)
    }

    pub fn parallelism(&self) -> usize {
        self.parallelism.unwrap_or(DEFAULT_PARALLELISM)
    }

    pub fn sessions(&self) -> usize {
        self.sessions.unwrap_or(DEFAULT_SESSIONS)
    }

    /// `\\server\share\folder` as given, normalized; used as the physical id, so it never fails.
    pub fn target(&self) -> String {
        share_target::target_id(&self.share_unc, self.folder.as_deref())
    }

    fn target_properties(&self) -> TargetProperties<'_> {
        TargetProperties {
            share_unc: &self.share_unc,
            folder: self.folder.as_deref(),
            admin_username: self.admin_username.as_deref(),
            admin_password_parameter: self.admin_password_parameter.as_deref(),
            admin_secret_id: self.admin_secret_id.as_deref(),
            port: self.port,
            require_encryption: self.require_encryption,
        }
    }

    /// The share, folder and admin credential alone: all a Delete needs.
    pub fn validate_target(&self) -> Result<Target, Invalid> {
        Target::validate(&self.target_properties(), ADMIN_ROLE)
    }

    pub fn validate(&self) -> Result<Checked, Invalid> {
        let target = self.validate_target()?;
        let bucket = self.bucket.trim();
        validate_bucket(bucket)?;
        let prefix = self.prefix.as_deref().unwrap_or_default();
        if prefix.len() > 1024 {
            return Err(invalid(
                "Prefix",
                format!("is {} bytes long", prefix.len()),
                "S3 keys are at most 1,024 bytes; give a shorter prefix",
            ));
        }
        if let Some(n) = self.parallelism
            && !(1..=MAX_PARALLELISM).contains(&n)
        {
            return Err(invalid(
                "Parallelism",
                format!("{n} is out of range"),
                format!("use 1 to {MAX_PARALLELISM} (default {DEFAULT_PARALLELISM})"),
            ));
        }
        if let Some(n) = self.sessions
            && !(1..=MAX_SESSIONS).contains(&n)
        {
            return Err(invalid(
                "Sessions",
                format!("{n} is out of range"),
                format!("use 1 to {MAX_SESSIONS} (default {DEFAULT_SESSIONS})"),
            ));
        }
        Ok(Checked {
            target,
            bucket: bucket.to_owned(),
            prefix: content_paths::normalize_prefix(prefix),
        })
    }
}

fn validate_bucket(bucket: &str) -> Result<(), Invalid> {
    const P: &str = "Bucket";
    if bucket.starts_with("arn:") || bucket.starts_with("s3://") {
        return Err(invalid(
            P,
            format!("{bucket:?} is not a bucket name"),
            "give the bucket's name (!Ref the bucket), not its ARN or URL",
        ));
    }
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(invalid(
            P,
            format!("{bucket:?} is not a bucket name"),
            "use the bucket's name: 3 to 63 lowercase letters, digits, dots and hyphens",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use share_target::CredentialSource;

    fn good() -> serde_json::Value {
        json!({
            "ShareUnc": r"\\fsx.corp.example.com\share", "Folder": "web", "Bucket": "site-content",
            "Prefix": "releases/current", "AdminUsername": r"CORP\admin",
            "AdminPasswordParameter": "/fargate-smb/admin/password"
        })
    }

    fn with(key: &str, value: serde_json::Value) -> Properties {
        let mut v = good();
        v[key] = value;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_normalized_values() {
        let p: Properties = serde_json::from_value(good()).unwrap();
        let c = p.validate().unwrap();
        assert_eq!(c.target.share, r"\\fsx.corp.example.com\share");
        assert_eq!(c.target.folder, "web");
        assert_eq!(c.prefix, "releases/current/");
        assert_eq!(
            c.target.source,
            CredentialSource::Parameter("/fargate-smb/admin/password".into())
        );
        assert_eq!(p.target(), r"\\fsx.corp.example.com\share\web");
        assert_eq!(
            (
                p.prune(),
                p.fail_on_rejected(),
                p.remove_on_delete(),
                p.parallelism()
            ),
            (false, true, false, 8)
        );
        assert_eq!((c.target.port, c.target.require_encryption), (445, true));
    }

    #[test]
    fn cloudformation_strings_are_accepted() {
        let mut v = good();
        v["Parallelism"] = json!("4");
        v["DeleteExtraneous"] = json!("true");
        v["FailOnRejectedKeys"] = json!("false");
        v["RemoveOnDelete"] = json!("True");
        v["Port"] = json!("1445");
        v["RequireEncryption"] = json!("false");
        v["ContentVersion"] = json!(7);
        let p: Properties = serde_json::from_value(v).unwrap();
        let c = p.validate().unwrap();
        assert_eq!(
            (
                p.prune(),
                p.fail_on_rejected(),
                p.remove_on_delete(),
                p.parallelism()
            ),
            (true, false, true, 4)
        );
        assert_eq!((c.target.port, c.target.require_encryption), (1445, false));
        assert_eq!(p.content_version.as_deref(), Some("7"));
    }

    #[test]
    fn folders_in_the_unc_and_in_folder_combine() {
        let mut v = good();
        v["ShareUnc"] = json!("//fsx/share/sites/");
        v["Folder"] = json!("/web/");
        let p: Properties = serde_json::from_value(v).unwrap();
        assert_eq!(p.validate().unwrap().target.folder, r"sites\web");
        assert_eq!(p.target(), r"\\fsx\share\sites\web");
        let root = with("Folder", json!(""));
        assert_eq!(root.validate().unwrap().target.folder, "");
        assert_eq!(root.target(), r"\\fsx.corp.example.com\share");
    }

    #[test]
    fn secrets_manager_needs_no_username() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("AdminPasswordParameter");
        v.as_object_mut().unwrap().remove("AdminUsername");
        v["AdminSecretId"] = json!("arn:aws:secretsmanager:us-east-1:1:secret:x");
        let p: Properties = serde_json::from_value(v).unwrap();
        assert!(matches!(
            p.validate().unwrap().target.source,
            CredentialSource::Secret(_)
        ));
    }

    #[test]
    fn each_bad_property_is_named_with_a_fix() {
        let cases = [
            (
                with("ShareUnc", json!("fsx/share")),
                "ShareUnc",
                "not a UNC path",
            ),
            (
                with("ShareUnc", json!(r"\\fs x\share")),
                "ShareUnc",
                "host name",
            ),
            (
                with("Folder", json!("web/../../etc")),
                "Folder",
                "relative folder reference",
            ),
            (with("Folder", json!("web/CON")), "Folder", "device name"),
            (
                with("Bucket", json!("Site_Content")),
                "Bucket",
                "not a bucket name",
            ),
            (
                with("Bucket", json!("arn:aws:s3:::site")),
                "Bucket",
                "not its ARN",
            ),
            (
                with("Parallelism", json!("0")),
                "Parallelism",
                "out of range",
            ),
            (
                with("Parallelism", json!(65)),
                "Parallelism",
                "out of range",
            ),
            (with("Sessions", json!(0)), "Sessions", "out of range"),
            (with("Sessions", json!("9")), "Sessions", "out of range"),
            (with("Port", json!(0)), "Port", "not a port"),
            (
                with("AdminUsername", json!("admin")),
                "AdminUsername",
                r"DOMAIN\name",
            ),
            (
                with("AdminSecretId", json!("s")),
                "AdminPasswordParameter",
                "both set",
            ),
            (
                with("AdminPasswordParameter", json!("")),
                "AdminPasswordParameter",
                "is required",
            ),
            (
                with("AdminUsername", json!(null)),
                "AdminUsername",
                "is required",
            ),
            (with("Prefix", json!("p".repeat(1025))), "Prefix", "1,024"),
        ];
        for (p, property, text) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.property, property, "{e}");
            assert!(e.to_string().contains(text), "{property}: {e}");
        }
    }

    #[test]
    fn unknown_properties_are_refused() {
        let mut v = good();
        v["Paralelism"] = json!(2);
        assert!(serde_json::from_value::<Properties>(v).is_err());
    }
}
