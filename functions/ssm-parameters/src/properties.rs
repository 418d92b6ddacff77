//! The resource's properties and their validation. Every error names the property and the fix.

use custom_resource::{Invalid, cfn, invalid};
use secrets::PasswordRules;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Properties {
    /// SSM path under which the three parameters live, e.g. `/fargate-smb/web`.
    pub parameter_prefix: String,
    /// The account the container logs on with: `DOMAIN\name` or `name@domain.fqdn`.
    pub username: String,
    /// The share to map: `\\server\share` or `\\server\share\folder` (`//server/share` accepted).
    pub share_path: String,
    /// KMS key for the password: key id, key ARN, alias name or alias ARN. Default `alias/aws/ssm`.
    #[serde(default, deserialize_with = "cfn::opt_text")]
    pub kms_key_id: Option<String>,
    /// Change this (any value) to generate a new password on Update.
    #[serde(default, deserialize_with = "cfn::opt_text")]
    pub password_version: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_number")]
    pub password_length: Option<usize>,
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub password_symbols: Option<bool>,
    #[serde(default)]
    pub password_exclude_characters: Option<String>,
    /// Keep the parameters when the resource is deleted.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub retain_on_delete: Option<bool>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    #[serde(deserialize_with = "tag_value")]
    pub value: String,
}

fn tag_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    cfn::opt_text(d).map(Option::unwrap_or_default)
}

/// SSM's longest parameter name, including the path.
const MAX_NAME: usize = 1011;
/// SSM allows 15 levels of hierarchy; the prefix leaves one for the leaf name.
const MAX_PREFIX_LEVELS: usize = 14;
/// Prefix for tags this resource manages itself.
pub(crate) const RESERVED_TAG_PREFIX: &str = "fargate-smb:";

impl Properties {
    /// The prefix without a trailing slash.
    pub fn prefix(&self) -> &str {
        let p = self.parameter_prefix.trim();
        p.strip_suffix('/').unwrap_or(p)
    }

    pub fn username_name(&self) -> String {
        format!("{}/username", self.prefix())
    }

    pub fn password_name(&self) -> String {
        format!("{}/password", self.prefix())
    }

    pub fn share_name(&self) -> String {
        format!("{}/share", self.prefix())
    }

    pub fn password_rules(&self) -> PasswordRules {
        let default = PasswordRules::default();
        PasswordRules {
            length: self.password_length.unwrap_or(default.length),
            symbols: self.password_symbols.unwrap_or(default.symbols),
            exclude: self.password_exclude_characters.clone().unwrap_or_default(),
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        self.kms_key_id
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
    }

    pub fn retain(&self) -> bool {
        self.retain_on_delete.unwrap_or(false)
    }

    /// The share path with backslashes, as Windows and `New-SmbGlobalMapping` want it.
    pub fn unc(&self) -> String {
        self.share_path.trim().replace('/', "\\")
    }

    /// Check everything up front, before any write. `allowed_path` is the function's own
    /// guard (its `ALLOWED_PARAMETER_PATH`), matching the IAM policy's scope.
    pub fn validate(&self, allowed_path: &str) -> Result<(), Invalid> {
        validate_prefix(self.prefix(), allowed_path)?;
        validate_username(self.username.trim())?;
        validate_unc(&self.unc())?;
        if let Some(key) = self.key_id() {
            validate_key(key)?;
        }
        self.password_rules().validate().map_err(|e| {
            let property = match e {
                secrets::PasswordError::Length(_) => "PasswordLength",
                _ => "PasswordExcludeCharacters",
            };
            invalid(property, "is not usable", e.to_string())
        })?;
        validate_tags(&self.tags)
    }
}

fn validate_prefix(prefix: &str, allowed_path: &str) -> Result<(), Invalid> {
    const P: &str = "ParameterPrefix";
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(invalid(
            P,
            format!("{prefix:?} is not an SSM path"),
            "start it with / and name at least one level, e.g. /fargate-smb/web",
        ));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
    {
        return Err(invalid(
            P,
            format!("contains {bad:?}"),
            "use only letters, digits, and _ . - /",
        ));
    }
    if prefix.contains("//") {
        return Err(invalid(
            P,
            format!("{prefix:?} has an empty level"),
            "remove the doubled /",
        ));
    }
    let first = prefix[1..]
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err(invalid(
            P,
            format!("{prefix:?} starts with a reserved name"),
            "SSM reserves paths beginning with aws or ssm; choose another first level",
        ));
    }
    if prefix.matches('/').count() > MAX_PREFIX_LEVELS {
        return Err(invalid(
            P,
            "is too deep",
            format!("use at most {MAX_PREFIX_LEVELS} levels"),
        ));
    }
    if prefix.len() + "/username".len() > MAX_NAME {
        return Err(invalid(
            P,
            "is too long",
            format!("keep it under {} characters", MAX_NAME - "/username".len()),
        ));
    }
    let allowed = allowed_path.trim_end_matches('/');
    let inside =
        allowed.is_empty() || prefix == allowed || prefix.starts_with(&format!("{allowed}/"));
    if !inside {
        return Err(invalid(
            P,
            format!("{prefix} is outside {allowed}, the only path this function may write"),
            format!(
                "use a prefix under {allowed}/, or widen the function's ALLOWED_PARAMETER_PATH and its IAM policy together"
            ),
        ));
    }
    Ok(())
}

fn validate_username(username: &str) -> Result<(), Invalid> {
    ad_names::split_qualified(username)
        .map(|_| ())
        .map_err(|problem| invalid("Username", problem, r"write it as DOMAIN\name or name@domain.example (New-SmbGlobalMapping needs the domain)"))
}

/// Characters Windows forbids in share and folder names.
const PATH_FORBIDDEN: &str = "\\/:*?\"<>|";

fn validate_unc(unc: &str) -> Result<(), Invalid> {
    const P: &str = "SharePath";
    let fix = r"write it as \\server\share or \\server\share\folder, e.g. \\amznfsxabc123.corp.example.com\share";
    let Some(rest) = unc.strip_prefix("\\\\") else {
        return Err(invalid(P, format!("{unc:?} is not a UNC path"), fix));
    };
    let mut parts = rest.split('\\');
    let server = parts.next().unwrap_or_default();
    let share = parts.next().unwrap_or_default();
    if server.is_empty()
        || server
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "-._".contains(c)))
    {
        return Err(invalid(
            P,
            format!("the server {server:?} is not a host name or IPv4 address"),
            fix,
        ));
    }
    if share.is_empty() {
        return Err(invalid(P, format!("{unc:?} names no share"), fix));
    }
    for part in std::iter::once(share).chain(parts) {
        if part.is_empty() {
            return Err(invalid(
                P,
                format!("{unc:?} has an empty path component"),
                "remove the doubled or trailing backslash",
            ));
        }
        if let Some(bad) = part
            .chars()
            .find(|c| PATH_FORBIDDEN.contains(*c) || c.is_control())
        {
            return Err(invalid(
                P,
                format!("{part:?} contains {bad:?}"),
                format!("Windows forbids {PATH_FORBIDDEN} in share and folder names"),
            ));
        }
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), Invalid> {
    let is_id = |s: &str| {
        let s = s.strip_prefix("mrk-").unwrap_or(s);
        !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    };
    let ok = if let Some(alias) = key.strip_prefix("alias/") {
        !alias.is_empty()
            && alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
    } else if key.starts_with("arn:") {
        let parts: Vec<&str> = key.splitn(6, ':').collect();
        parts.len() == 6
            && parts[2] == "kms"
            && (parts[5].starts_with("key/") || parts[5].starts_with("alias/"))
    } else {
        is_id(key)
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "KmsKeyId",
            format!("{key:?} is not a KMS key reference"),
            "give a key id, key ARN, alias/name or alias ARN (e.g. !Ref the key, or !GetAtt Key.Arn)",
        ))
    }
}

fn validate_tags(tags: &[Tag]) -> Result<(), Invalid> {
    if tags.len() > 48 {
        return Err(invalid(
            "Tags",
            format!("has {} tags", tags.len()),
            "SSM allows 50 tags per parameter and this resource uses 2; keep at most 48",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 {
            return Err(invalid(
                "Tags",
                format!("key {:?} is empty or longer than 128 characters", t.key),
                "use a key of 1 to 128 characters",
            ));
        }
        if t.value.chars().count() > 256 {
            return Err(invalid(
                "Tags",
                format!("the value of {:?} is longer than 256 characters", t.key),
                "shorten it",
            ));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") || t.key.starts_with(RESERVED_TAG_PREFIX)
        {
            return Err(invalid(
                "Tags",
                format!("key {:?} is reserved", t.key),
                format!(
                    "aws: and {RESERVED_TAG_PREFIX} keys are set by AWS and by this resource; rename it"
                ),
            ));
        }
        if !seen.insert(t.key.as_str()) {
            return Err(invalid(
                "Tags",
                format!("key {:?} appears twice", t.key),
                "give each key once",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: serde_json::Value) -> Properties {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"ParameterPrefix": "/fargate-smb/web/", "Username": "EXAMPLE\\svc-web", "SharePath": "//fsx.example.test/share/web"})
    }

    fn with(key: &str, value: serde_json::Value) -> Properties {
        let mut v = good();
        v[key] = value;
        props(v)
    }

    #[test]
    fn defaults_and_names() {
        let p = props(good());
        p.validate("/").unwrap();
        assert_eq!(p.prefix(), "/fargate-smb/web");
        assert_eq!(p.password_name(), "/fargate-smb/web/password");
        assert_eq!(p.username_name(), "/fargate-smb/web/username");
        assert_eq!(p.share_name(), "/fargate-smb/web/share");
        assert_eq!(p.unc(), r"\\fsx.example.test\share\web");
        assert_eq!(p.password_rules(), PasswordRules::default());
        assert!(!p.retain());
    }

    #[test]
    fn cloudformation_strings_are_accepted() {
        let mut v = good();
        v["PasswordLength"] = json!("24");
        v["PasswordSymbols"] = json!("false");
        v["RetainOnDelete"] = json!("true");
        v["PasswordVersion"] = json!(2);
        v["Tags"] = json!([{"Key": "team", "Value": 7}]);
        let p = props(v);
        p.validate("/").unwrap();
        assert_eq!(
            (
                p.password_rules().length,
                p.password_rules().symbols,
                p.retain()
            ),
            (24, false, true)
        );
        assert_eq!(p.password_version.as_deref(), Some("2"));
        assert_eq!(p.tags[0].value, "7");
    }

    fn problem(p: Properties) -> Invalid {
        p.validate("/fargate-smb").unwrap_err()
    }

    #[test]
    fn each_bad_property_is_named_with_a_fix() {
        let cases = [
            (
                with("ParameterPrefix", json!("fargate-smb/web")),
                "ParameterPrefix",
                "start it with /",
            ),
            (
                with("ParameterPrefix", json!("/fargate-smb/w eb")),
                "ParameterPrefix",
                "letters, digits",
            ),
            (
                with("ParameterPrefix", json!("/fargate-smb//web")),
                "ParameterPrefix",
                "doubled",
            ),
            (
                with("ParameterPrefix", json!("/aws/web")),
                "ParameterPrefix",
                "reserves",
            ),
            (
                with("ParameterPrefix", json!("/other/web")),
                "ParameterPrefix",
                "ALLOWED_PARAMETER_PATH",
            ),
            (
                with("ParameterPrefix", json!("/fargate-smbx/web")),
                "ParameterPrefix",
                "outside",
            ),
            (
                with("Username", json!("svc-web")),
                "Username",
                "DOMAIN\\name",
            ),
            (
                with("Username", json!("EXAMPLE\\a-very-long-account-name")),
                "Username",
                "20 characters",
            ),
            (
                with("Username", json!("EXAMPLE\\svc*web")),
                "Username",
                "forbids",
            ),
            (
                with("Username", json!("@example.test")),
                "Username",
                "empty",
            ),
            (
                with("SharePath", json!("fsx.example.test\\share")),
                "SharePath",
                "\\\\server\\share",
            ),
            (
                with("SharePath", json!("\\\\fsx.example.test")),
                "SharePath",
                "names no share",
            ),
            (
                with("SharePath", json!("\\\\fsx\\sh:are")),
                "SharePath",
                "forbids",
            ),
            (
                with("SharePath", json!("\\\\fsx\\share\\")),
                "SharePath",
                "trailing",
            ),
            (with("KmsKeyId", json!("my key")), "KmsKeyId", "key ARN"),
            (
                with("PasswordLength", json!("8")),
                "PasswordLength",
                "16 to 127",
            ),
            (
                with("PasswordExcludeCharacters", json!("0123456789")),
                "PasswordExcludeCharacters",
                "digit",
            ),
            (
                with("Tags", json!([{"Key": "aws:x", "Value": "y"}])),
                "Tags",
                "reserved",
            ),
            (
                with("Tags", json!([{"Key": "fargate-smb:owner", "Value": "y"}])),
                "Tags",
                "reserved",
            ),
            (
                with(
                    "Tags",
                    json!([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]),
                ),
                "Tags",
                "twice",
            ),
        ];
        for (p, property, fix) in cases {
            let e = problem(p);
            assert_eq!(e.property, property, "{e}");
            assert!(e.to_string().contains(fix), "{property}: {e}");
        }
    }

    #[test]
    fn accepted_forms() {
        let ok = |k: &str, v: serde_json::Value| with(k, v).validate("/fargate-smb").unwrap();
        ok("Username", json!("svc-web@example.test"));
        ok("SharePath", json!("\\\\10.0.0.12\\share"));
        ok("KmsKeyId", json!("alias/fargate-smb"));
        ok("KmsKeyId", json!("1234abcd-12ab-34cd-56ef-1234567890ab"));
        ok("KmsKeyId", json!("mrk-1234abcd12ab34cd56ef1234567890ab"));
        ok(
            "KmsKeyId",
            json!("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
        );
        ok("ParameterPrefix", json!("/fargate-smb"));
    }
}
