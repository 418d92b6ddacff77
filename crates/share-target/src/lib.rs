//! The share a custom resource works on, as its properties name it: `ShareUnc`, `Folder`, the
//! admin credential (`AdminUsername` with `AdminPasswordParameter`, or `AdminSecretId`), and the
//! `Port` / `RequireEncryption` knobs. `Custom::ShareAcl` and `Custom::WebContent` take the same
//! properties; this crate validates them once (each error names the property and the fix) and
//! opens the admin's session.

use admin_credential::{AdminCredentials, CredentialError, Source};
use custom_resource::{Invalid, invalid};
use smb_share::{Share, ShareConfig, ShareError, Unc};
use std::time::Duration;

/// The properties as received (CloudFormation scalars already decoded).
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetProperties<'a> {
    pub share_unc: &'a str,
    pub folder: Option<&'a str>,
    pub admin_username: Option<&'a str>,
    pub admin_password_parameter: Option<&'a str>,
    pub admin_secret_id: Option<&'a str>,
    pub port: Option<u16>,
    pub require_encryption: Option<bool>,
}

/// Where the admin's password is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Parameter(String),
    Secret(String),
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `\\server\share`.
    pub share: String,
    /// Relative to the share root, `\`-separated; empty for the root.
    pub folder: String,
    pub admin_username: Option<String>,
    pub source: CredentialSource,
    pub port: u16,
    pub require_encryption: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid property {0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// `\\server\share\folder`, normalized (backslashes, no doubled or trailing separators) without
/// validating anything: a physical id must be computable even from bad properties.
pub fn target_id(share_unc: &str, folder: Option<&str>) -> String {
    let unc = share_unc.trim().replace('/', "\\");
    let base = unc.trim_end_matches('\\');
    let folder = folder.unwrap_or_default().replace('/', "\\");
    let folder = folder.trim_matches('\\');
    if folder.is_empty() {
        base.to_owned()
    } else {
        format!("{base}\\{folder}")
    }
}

/// For a Delete whose properties this version cannot read: add the `ShareUnc` and `Folder` a
/// target id (`\\server\share[\folder]`, see [`target_id`]) names, where they are missing.
pub fn recover_from_id(
    physical_id: &str,
    properties: &mut serde_json::Map<String, serde_json::Value>,
) {
    let Some(rest) = physical_id.strip_prefix(r"\\") else {
        return;
    };
    let mut parts = rest.splitn(3, '\\');
    let (Some(server), Some(share)) = (parts.next(), parts.next()) else {
        return;
    };
    let text = |v: String| serde_json::Value::String(v);
    properties
        .entry("ShareUnc")
        .or_insert_with(|| text(format!(r"\\{server}\{share}")));
    if let Some(folder) = parts.next() {
        properties
            .entry("Folder")
            .or_insert_with(|| text(folder.to_owned()));
    }
}

/// Whether two target ids (`\\server\share[\folder]`) name one folder as the file server
/// sees it: the share and folder compared case-insensitively, the server not at all (one server
/// has a short name, an FQDN and addresses).
pub fn same_target(a: &str, b: &str) -> bool {
    let rest = |id: &str| {
        id.strip_prefix(r"\\")
            .and_then(|r| r.split_once('\\'))
            .map(|(_, rest)| content_paths::fold(rest.trim_end_matches('\\')))
    };
    matches!((rest(a), rest(b)), (Some(x), Some(y)) if x == y)
}

fn nonempty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Target {
    /// Validate; `role` says what the admin account does, for the error messages
    /// (e.g. "writes the content").
    pub fn validate(p: &TargetProperties<'_>, role: &str) -> Result<Self, Invalid> {
        let (share, unc_folder) = validate_unc(p.share_unc)?;
        let folder = content_paths::folder_path(p.folder.unwrap_or_default()).map_err(|rule| {
            invalid(
                "Folder",
                format!("is not a usable folder name: {rule}"),
                r"give a folder within the share, e.g. web or sites\web",
            )
        })?;
        let folder = match (unc_folder.is_empty(), folder.is_empty()) {
            (true, _) => folder,
            (false, true) => unc_folder,
            (false, false) => format!("{unc_folder}\\{folder}"),
        };
        if p.port == Some(0) {
            return Err(invalid(
                "Port",
                "0 is not a port",
                "use 445, or leave it out",
            ));
        }
        let admin_username = nonempty(p.admin_username);
        if let Some(user) = &admin_username {
            ad_names::split_qualified(user).map_err(|problem| {
                invalid(
                    "AdminUsername",
                    problem,
                    r"write it as DOMAIN\name or name@domain.example",
                )
            })?;
        }
        let source = match (
            nonempty(p.admin_password_parameter),
            nonempty(p.admin_secret_id),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "AdminPasswordParameter",
                    "and AdminSecretId are both set",
                    "give one source for the admin password",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "AdminPasswordParameter",
                    "or AdminSecretId is required",
                    format!(
                        "name the SSM SecureString or Secrets Manager secret holding the password of the account \
                         that {role} (never the password itself)"
                    ),
                ));
            }
            (Some(name), None) => {
                if admin_username.is_none() {
                    return Err(invalid(
                        "AdminUsername",
                        "is required with AdminPasswordParameter",
                        format!(r"give the account that {role}, e.g. CORP\admin"),
                    ));
                }
                CredentialSource::Parameter(name)
            }
            (None, Some(id)) => CredentialSource::Secret(id),
        };
        Ok(Self {
            share,
            folder,
            admin_username,
            source,
            port: p.port.unwrap_or(445),
            require_encryption: p.require_encryption.unwrap_or(true),
        })
    }

    /// `\\server\share\folder`.
    pub fn display(&self) -> String {
        target_id(&self.share, Some(&self.folder))
    }

    /// Read the admin credential and open an SMB session to the share as that account.
    pub async fn connect(
        &self,
        admin: &AdminCredentials,
        timeout: Duration,
    ) -> Result<Share, TargetError> {
        let source = match &self.source {
            CredentialSource::Parameter(name) => Source::Parameter(name),
            CredentialSource::Secret(id) => Source::Secret(id),
        };
        let credential = admin.read(self.admin_username.as_deref(), source).await?;
        if credential.username.is_empty() {
            return Err(invalid(
                "AdminUsername",
                "is not set and the secret holds no username",
                r"set AdminUsername (DOMAIN\name), or store JSON {username, password} in the secret",
            )
            .into());
        }
        let mut config = ShareConfig::new(&self.share, credential.username, credential.password);
        config.port = self.port;
        config.require_encryption = self.require_encryption;
        config.timeout = timeout;
        Ok(Share::connect(&config).await?)
    }
}

/// `\\server\share[\folder]` to (`\\server\share`, folder).
fn validate_unc(text: &str) -> Result<(String, String), Invalid> {
    const P: &str = "ShareUnc";
    let fix = r"write it as \\server\share, e.g. \\amznfsxabc123.corp.example.com\share";
    let unc =
        Unc::parse(text).map_err(|_| invalid(P, format!("{text:?} is not a UNC path"), fix))?;
    if unc
        .server
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || "-._".contains(c)))
    {
        return Err(invalid(
            P,
            format!(
                "the server {:?} is not a host name or IPv4 address",
                unc.server
            ),
            fix,
        ));
    }
    if unc
        .share
        .chars()
        .any(|c| "\\/:*?\"<>|".contains(c) || c.is_control())
    {
        return Err(invalid(
            P,
            format!("the share name {:?} is not valid", unc.share),
            fix,
        ));
    }
    let folder = content_paths::folder_path(&unc.path).map_err(|rule| {
        invalid(
            P,
            format!("its folder part is not usable: {rule}"),
            "give the folder in Folder instead",
        )
    })?;
    Ok((format!("\\\\{}\\{}", unc.server, unc.share), folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> TargetProperties<'static> {
        TargetProperties {
            share_unc: r"\\fsx.corp.example.com\share",
            folder: Some("web/img"),
            admin_username: Some(r"CORP\admin"),
            admin_password_parameter: Some("/fargate-smb/admin/password"),
            ..Default::default()
        }
    }

    #[test]
    fn valid_target_is_normalized() {
        let t = Target::validate(&props(), "sets the ACL").unwrap();
        assert_eq!(t.share, r"\\fsx.corp.example.com\share");
        assert_eq!(t.folder, r"web\img");
        assert_eq!((t.port, t.require_encryption), (445, true));
        assert_eq!(t.display(), r"\\fsx.corp.example.com\share\web\img");
        let in_unc = TargetProperties {
            share_unc: r"\\fsx\share\sites",
            folder: Some("web"),
            ..props()
        };
        assert_eq!(Target::validate(&in_unc, "x").unwrap().folder, r"sites\web");
    }

    #[test]
    fn each_problem_names_its_property() {
        let cases: [(TargetProperties<'static>, &str); 6] = [
            (
                TargetProperties {
                    share_unc: "fsx/share",
                    ..props()
                },
                "ShareUnc",
            ),
            (
                TargetProperties {
                    share_unc: r"\\fs x\share",
                    ..props()
                },
                "ShareUnc",
            ),
            (
                TargetProperties {
                    folder: Some("a/../b"),
                    ..props()
                },
                "Folder",
            ),
            (
                TargetProperties {
                    port: Some(0),
                    ..props()
                },
                "Port",
            ),
            (
                TargetProperties {
                    admin_username: None,
                    ..props()
                },
                "AdminUsername",
            ),
            (
                TargetProperties {
                    admin_secret_id: Some("arn:aws:secretsmanager:x"),
                    ..props()
                },
                "AdminPasswordParameter",
            ),
        ];
        for (p, property) in cases {
            let e = Target::validate(&p, "x").unwrap_err();
            assert_eq!(e.property, property, "{e}");
        }
        let none = TargetProperties {
            admin_password_parameter: None,
            ..props()
        };
        assert_eq!(
            Target::validate(&none, "x").unwrap_err().property,
            "AdminPasswordParameter"
        );
    }

    #[test]
    fn a_target_id_gives_back_share_and_folder() {
        let mut p = serde_json::Map::new();
        recover_from_id(r"\\fs\share\web\img", &mut p);
        assert_eq!(p["ShareUnc"], r"\\fs\share");
        assert_eq!(p["Folder"], r"web\img");
        let mut kept = serde_json::Map::new();
        kept.insert("ShareUnc".into(), r"\\given\x".into());
        recover_from_id(r"\\fs\share", &mut kept);
        assert_eq!(kept["ShareUnc"], r"\\given\x");
        assert!(!kept.contains_key("Folder"));
        let mut none = serde_json::Map::new();
        recover_from_id("stack-Logical-ABC", &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn same_target_ignores_the_server_name_and_case() {
        assert!(same_target(
            r"\\fs\share\web",
            r"\\fs.example.com\Share\WEB"
        ));
        assert!(!same_target(r"\\fs\share\web", r"\\fs\share\web2"));
        assert!(!same_target(r"\\fs\share\web", "stack-Logical-ABC"));
    }

    #[test]
    fn target_id_never_fails() {
        assert_eq!(
            target_id(r"//fsx/share/", Some(r"\web\")),
            r"\\fsx\share\web"
        );
        assert_eq!(target_id("", None), "");
    }
}
