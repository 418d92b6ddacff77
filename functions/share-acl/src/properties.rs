//! Properties and their validation; every error names the property (and the grant) and the fix.

use custom_resource::{Invalid, cfn, invalid};
use serde::Deserialize;
use share_target::{Target, TargetProperties, target_id};
use smb_share::acl::{Ace, Grant, Inheritance, Rights, resolve_principal};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Properties {
    /// `\\server\share` (a folder part is allowed and goes before `Folder`).
    pub share_unc: String,
    /// The folder whose DACL is set, created if missing. Empty or absent: the share's root.
    #[serde(default)]
    pub folder: Option<String>,
    pub grants: Vec<GrantProperty>,
    /// `Merge` (default) or `Replace`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `DOMAIN\admin` or `admin@domain`: an account that may change the folder's DACL.
    #[serde(default)]
    pub admin_username: Option<String>,
    #[serde(default)]
    pub admin_password_parameter: Option<String>,
    #[serde(default)]
    pub admin_secret_id: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_number")]
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub require_encryption: Option<bool>,
}

/// One grant as written in the template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct GrantProperty {
    /// A SID (`!GetAtt ServiceAccount.Sid`) or a well-known name (`Authenticated Users`).
    pub principal: String,
    /// `Read`, `Modify`, `Full`, or an access mask in hex (`0x1200a9`).
    pub rights: String,
    /// `ThisFolderSubfoldersAndFiles` (default), `ThisFolderOnly`, …, or flags like `OI|CI`.
    #[serde(default)]
    pub inheritance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Merge,
    Replace,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Merge => "Merge",
            Mode::Replace => "Replace",
        }
    }
}

/// A DACL nobody can manage would be a mistake, and the response must stay small.
pub const MAX_GRANTS: usize = 64;

/// The validated view of the properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub target: Target,
    pub mode: Mode,
    /// The grants as ACEs, in the order given, without duplicates.
    pub aces: Vec<Ace>,
}

impl Properties {
    /// `\\server\share\folder`: the physical id, so a new folder replaces the resource.
    pub fn target_id(&self) -> String {
        target_id(&self.share_unc, self.folder.as_deref())
    }

    pub fn validate(&self) -> Result<Checked, Invalid> {
        self.validate_with(self.validate_target()?)
    }

    /// The share, folder and admin credential alone: all a Delete needs.
    pub fn validate_target(&self) -> Result<Target, Invalid> {
        Target::validate(
            &TargetProperties {
                share_unc: &self.share_unc,
                folder: self.folder.as_deref(),
                admin_username: self.admin_username.as_deref(),
                admin_password_parameter: self.admin_password_parameter.as_deref(),
                admin_secret_id: self.admin_secret_id.as_deref(),
                port: self.port,
                require_encryption: self.require_encryption,
            },
            "may change the folder's permissions",
        )
    }

    fn validate_with(&self, target: Target) -> Result<Checked, Invalid> {
        let mode = match self
            .mode
            .as_deref()
            .map(|m| m.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("merge") => Mode::Merge,
            Some("replace") => Mode::Replace,
            Some(other) => {
                return Err(invalid(
                    "Mode",
                    format!("{other:?} is not a mode"),
                    "use Merge (add the grants to the folder's permissions) or Replace (the grants become \
                     its only permissions)",
                ));
            }
        };
        if self.grants.is_empty() {
            return Err(invalid(
                "Grants",
                "is empty",
                "give at least one {Principal, Rights} grant",
            ));
        }
        if self.grants.len() > MAX_GRANTS {
            return Err(invalid(
                "Grants",
                format!("has {} grants", self.grants.len()),
                format!("give at most {MAX_GRANTS}; grant a group rather than each account"),
            ));
        }
        let mut aces: Vec<Ace> = Vec::with_capacity(self.grants.len());
        for (i, g) in self.grants.iter().enumerate() {
            let sid = resolve_principal(&g.principal).map_err(|problem| {
                invalid(
                    "Grants[].Principal",
                    format!("grant {i}: {problem}"),
                    "give the account's or group's SID, e.g. !GetAtt ServiceAccount.Sid, or a well-known \
                     name such as Authenticated Users",
                )
            })?;
            let rights = Rights::parse(&g.rights).map_err(|problem| {
                invalid(
                    "Grants[].Rights",
                    format!("grant {i}: {problem}"),
                    "use Read, Modify, Full, or an access mask in hex such as 0x1200a9",
                )
            })?;
            let inheritance = Inheritance::parse(g.inheritance.as_deref().unwrap_or_default())
                .map_err(|problem| {
                    invalid(
                        "Grants[].Inheritance",
                        format!("grant {i}: {problem}"),
                        "use ThisFolderSubfoldersAndFiles (default), ThisFolderOnly, ThisFolderAndSubfolders, \
                         ThisFolderAndFiles, SubfoldersAndFilesOnly, SubfoldersOnly, FilesOnly, or flags such as OI|CI",
                    )
                })?;
            let ace = Ace::from(&Grant {
                sid,
                rights,
                inheritance,
            });
            if !aces.contains(&ace) {
                aces.push(ace);
            }
        }
        Ok(Checked { target, mode, aces })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({
            "ShareUnc": r"\\fsx.corp.example.com\share", "Folder": "web",
            "Grants": [
                {"Principal": "S-1-5-21-1-2-3-1105", "Rights": "Modify"},
                {"Principal": "Authenticated Users", "Rights": "Read", "Inheritance": "ThisFolderOnly"}
            ],
            "AdminUsername": r"CORP\admin", "AdminPasswordParameter": "/fargate-smb/admin/password"
        })
    }

    fn with(key: &str, value: serde_json::Value) -> Properties {
        let mut v = good();
        v[key] = value;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn grants_become_aces() {
        let p: Properties = serde_json::from_value(good()).unwrap();
        let c = p.validate().unwrap();
        assert_eq!(c.mode, Mode::Merge);
        assert_eq!(c.aces.len(), 2);
        assert_eq!(
            c.aces[0].to_string(),
            "(A;0x03;0x001301bf;S-1-5-21-1-2-3-1105)"
        );
        assert_eq!(c.aces[1].to_string(), "(A;0x00;0x001200a9;S-1-5-11)");
        assert_eq!(p.target_id(), r"\\fsx.corp.example.com\share\web");
        assert_eq!(
            with("Mode", json!("replace")).validate().unwrap().mode,
            Mode::Replace
        );
    }

    #[test]
    fn each_problem_names_its_property() {
        let cases = [
            ("Mode", json!("Overwrite"), "Mode"),
            ("Grants", json!([]), "Grants"),
            (
                "Grants",
                json!([{"Principal": r"CORP\bob", "Rights": "Read"}]),
                "Grants[].Principal",
            ),
            (
                "Grants",
                json!([{"Principal": "S-1-5-11", "Rights": "Write"}]),
                "Grants[].Rights",
            ),
            (
                "Grants",
                json!([{"Principal": "S-1-5-11", "Rights": "Read", "Inheritance": "Everything"}]),
                "Grants[].Inheritance",
            ),
            ("ShareUnc", json!("fsx/share"), "ShareUnc"),
            ("Folder", json!("../up"), "Folder"),
        ];
        for (key, value, property) in cases {
            let e = with(key, value).validate().unwrap_err();
            assert_eq!(e.property, property, "{e}");
        }
        let unknown = serde_json::from_value::<Properties>(json!({
            "ShareUnc": r"\\fsx\share", "Grants": [{"Principal": "S-1-5-11", "Rights": "Read", "Right": "x"}]
        }));
        assert!(unknown.is_err());
    }
}
