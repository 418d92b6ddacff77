//! Properties and their validation; every error names the property and the fix.

use custom_resource::{Invalid, cfn, invalid};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Backend {
    /// Any AD over LDAPS (or LDAP + StartTLS).
    #[default]
    #[serde(rename = "ldaps", alias = "LDAPS", alias = "Ldaps")]
    Ldaps,
    /// AWS Managed Microsoft AD through the Directory Service Data API.
    #[serde(
        rename = "managed-ad",
        alias = "ManagedAD",
        alias = "ManagedAd",
        alias = "MANAGED_AD"
    )]
    ManagedAd,
}

/// The longest Description: AD keeps 1,024 characters, and the resource's markers (the stack
/// ARN, the logical id, the owning ids) need the rest.
pub const MAX_DESCRIPTION: usize = 256;

/// A text property's trimmed value, `None` when absent or blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Where the active account's password comes from ([`Properties::password_source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource<'a> {
    /// An SSM SecureString; the active account from the UsernameParameter, if any.
    Parameter {
        name: &'a str,
        username_parameter: Option<&'a str>,
    },
    /// A Secrets Manager secret holding `{"username", "password", ...}`.
    Secret { id: &'a str },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OnDelete {
    #[default]
    #[serde(rename = "delete", alias = "Delete")]
    Delete,
    #[serde(rename = "disable", alias = "Disable")]
    Disable,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Properties {
    #[serde(default)]
    pub backend: Backend,
    /// DNS name of the domain, e.g. `corp.example.com`.
    pub domain: String,
    /// NetBIOS name (for the `DOMAIN\name` form); default: the domain's first label, upper-cased.
    #[serde(default)]
    pub netbios_name: Option<String>,
    /// The account, e.g. `svc-web`; with `Alternating`, the pair `svc-web-a` / `svc-web-b`.
    pub account_name: String,
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub alternating: Option<bool>,
    /// DN of the OU for the accounts (LDAPS). Managed AD always uses its own Users OU.
    #[serde(default)]
    pub organizational_unit: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A security group the account(s) join: the principal the share ACL grants.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub create_group: Option<bool>,
    #[serde(default)]
    pub group_organizational_unit: Option<String>,
    /// SSM SecureString holding the active account's password (from Custom::SsmParameters)...
    #[serde(default)]
    pub password_parameter: Option<String>,
    /// SSM String holding the active `DOMAIN\name` (set by rotation); default: the first account.
    #[serde(default)]
    pub username_parameter: Option<String>,
    /// Pass Custom::SsmParameters' PasswordParameterVersion: a change resets the password.
    #[serde(default, deserialize_with = "cfn::opt_text")]
    pub password_parameter_version: Option<String>,
    /// ...or a Secrets Manager secret (ARN or name) whose AWSCURRENT value is the JSON of
    /// `service_credential`: its `password`, and its `username` naming the active account.
    #[serde(default)]
    pub password_secret_id: Option<String>,
    /// Opaque; a change between an Update's old and new properties resets the password (the
    /// template passes what makes CloudFormation write a new value into the secret).
    #[serde(default, deserialize_with = "cfn::opt_text")]
    pub password_secret_version: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub password_never_expires: Option<bool>,
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Take over an account of the same name that this resource did not create.
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub adopt_existing: Option<bool>,

    // LDAPS backend.
    /// `ldaps://dc1.corp.example.com` (or `ldap://...` with StartTls).
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_bool")]
    pub start_tls: Option<bool>,
    /// PEM of the CA that issued the DC's certificate; default: the system's roots.
    #[serde(default)]
    pub ca_bundle: Option<String>,
    /// The admin that binds: `admin@corp.example.com`, `CORP\admin` or a DN.
    #[serde(default)]
    pub admin_username: Option<String>,
    /// SSM SecureString with the admin's password...
    #[serde(default)]
    pub admin_password_parameter: Option<String>,
    /// ...or a Secrets Manager secret: a plain password, or JSON `{"username", "password"}`.
    #[serde(default)]
    pub admin_secret_id: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_number")]
    pub timeout_seconds: Option<u64>,

    // Managed AD backend.
    #[serde(default)]
    pub directory_id: Option<String>,
}

impl Properties {
    /// The account names, active-capable order: `[name]` or `[name-a, name-b]`.
    pub fn account_names(&self) -> Vec<String> {
        let base = self.account_name.trim();
        if self.alternating.unwrap_or(false) {
            vec![format!("{base}-a"), format!("{base}-b")]
        } else {
            vec![base.to_owned()]
        }
    }

    pub fn domain(&self) -> String {
        self.domain.trim().to_ascii_lowercase()
    }

    pub fn netbios(&self) -> String {
        self.netbios_name
            .clone()
            .unwrap_or_else(|| ad_names::default_netbios(&self.domain()))
    }

    pub fn group_name(&self) -> Option<&str> {
        self.group
            .as_deref()
            .map(str::trim)
            .filter(|g| !g.is_empty())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(10))
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(p) = ad_names::dns_domain_problem(&self.domain()) {
            return Err(invalid(
                "Domain",
                p,
                "give the directory's DNS name, e.g. corp.example.com",
            ));
        }
        if let Some(n) = &self.netbios_name
            && let Some(p) = ad_names::netbios_problem(n)
        {
            return Err(invalid(
                "NetbiosName",
                p,
                "give the directory's short name, e.g. CORP",
            ));
        }
        let name = self.account_name.trim();
        if let Some(p) = ad_names::account_name_problem(name, ad_names::MAX_USER_NAME) {
            return Err(invalid("AccountName", p, "choose a valid account name"));
        }
        if self.alternating.unwrap_or(false) && name.chars().count() > ad_names::MAX_USER_NAME - 2 {
            return Err(invalid(
                "AccountName",
                format!("{name:?} leaves no room for the -a/-b suffix of Alternating"),
                "use at most 18 characters",
            ));
        }
        if let Some(group) = self.group_name() {
            if let Some(p) = ad_names::account_name_problem(group, 64) {
                return Err(invalid("Group", p, "choose a valid group name"));
            }
        } else if self.create_group.unwrap_or(false) {
            return Err(invalid(
                "CreateGroup",
                "is true but no Group is named",
                "set Group, or drop CreateGroup",
            ));
        }
        if let Some(d) = &self.description {
            // The description also carries the ownership markers, within AD's 1,024 characters.
            if d.chars().count() > MAX_DESCRIPTION || ownership::has_marker_text(d) {
                return Err(invalid(
                    "Description",
                    format!(
                        "is {} characters{}",
                        d.chars().count(),
                        if ownership::has_marker_text(d) {
                            " and contains \"[fargate-smb\", the start of this resource's own markers"
                        } else {
                            ""
                        }
                    ),
                    format!("use at most {MAX_DESCRIPTION} characters, without \"[fargate-smb\""),
                ));
            }
        }
        self.password_source()?;
        if let Some(t) = self.timeout_seconds
            && !(1..=120).contains(&t)
        {
            return Err(invalid(
                "TimeoutSeconds",
                format!("{t} is out of range"),
                "use 1 to 120",
            ));
        }
        self.validate_connection()
    }

    /// Where the active account's password (and which account is active) comes from: exactly
    /// one of PasswordParameter and PasswordSecretId, each with only its own companions. A
    /// blank value counts as not given (a template's `!If` may pass "").
    pub fn password_source(&self) -> Result<PasswordSource<'_>, Invalid> {
        match (
            given(&self.password_parameter),
            given(&self.password_secret_id),
        ) {
            (Some(_), Some(_)) => Err(invalid(
                "PasswordParameter",
                "and PasswordSecretId are both set",
                "give one: PasswordSecretId (a Secrets Manager secret) or PasswordParameter (an SSM parameter)",
            )),
            (None, None) => Err(invalid(
                "PasswordParameter",
                "or PasswordSecretId is required",
                "pass !Ref <the Secrets Manager secret> as PasswordSecretId, or \
                 !GetAtt <SsmParameters>.PasswordParameterName as PasswordParameter",
            )),
            (Some(name), None) => {
                if name.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        "PasswordParameter",
                        format!("{name:?} is not an SSM parameter name"),
                        "pass !GetAtt <SsmParameters>.PasswordParameterName",
                    ));
                }
                if given(&self.password_secret_version).is_some() {
                    return Err(invalid(
                        "PasswordSecretVersion",
                        "is set with PasswordParameter",
                        "remove it (it belongs with PasswordSecretId), or pass PasswordParameterVersion",
                    ));
                }
                Ok(PasswordSource::Parameter {
                    name,
                    username_parameter: given(&self.username_parameter),
                })
            }
            (None, Some(id)) => {
                if id.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        "PasswordSecretId",
                        format!("{id:?} is not a secret ARN or name"),
                        "pass !Ref <the AWS::SecretsManager::Secret> (its ARN)",
                    ));
                }
                // The secret names the active account itself; a second source for it (or a
                // version that would never be compared) would be silently ignored.
                if given(&self.username_parameter).is_some() {
                    return Err(invalid(
                        "UsernameParameter",
                        "is set with PasswordSecretId",
                        "remove UsernameParameter: with PasswordSecretId the secret's \"username\" names the active account",
                    ));
                }
                if given(&self.password_parameter_version).is_some() {
                    return Err(invalid(
                        "PasswordParameterVersion",
                        "is set with PasswordSecretId",
                        "remove PasswordParameterVersion: with PasswordSecretId pass PasswordSecretVersion",
                    ));
                }
                Ok(PasswordSource::Secret { id })
            }
        }
    }

    /// Whether an Update from `old` must reset the active password even where the backend
    /// cannot check it: a new version, or another secret (from SSM to Secrets Manager too).
    pub fn password_changed_from(&self, old: &Properties) -> bool {
        let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).map(str::to_owned);
        self.password_parameter_version != old.password_parameter_version
            || self.password_secret_version != old.password_secret_version
            || trimmed(&self.password_secret_id) != trimmed(&old.password_secret_id)
    }

    /// The domain and the backend's connection (server, TLS, admin credential, directory):
    /// all a Delete needs.
    pub fn validate_connection(&self) -> Result<(), Invalid> {
        if let Some(p) = ad_names::dns_domain_problem(&self.domain()) {
            return Err(invalid(
                "Domain",
                p,
                "give the directory's DNS name, e.g. corp.example.com",
            ));
        }
        match self.backend {
            Backend::Ldaps => self.validate_ldaps(),
            Backend::ManagedAd => self.validate_managed_ad(),
        }
    }

    fn validate_ldaps(&self) -> Result<(), Invalid> {
        let Some(server) = self.server.as_deref().map(str::trim) else {
            return Err(invalid(
                "Server",
                "is required with Backend ldaps",
                "set it to ldaps://<a domain controller>",
            ));
        };
        let starttls = self.start_tls.unwrap_or(false);
        match (server.split("://").next(), starttls) {
            (Some("ldaps"), false) => {}
            (Some("ldaps"), true) => {
                return Err(invalid(
                    "StartTls",
                    "is true with an ldaps:// Server",
                    "use ldap:// with StartTls, or ldaps:// without it",
                ));
            }
            (Some("ldap"), true) => {}
            (Some("ldap"), false) => {
                return Err(invalid(
                    "Server",
                    format!("{server} is plain LDAP"),
                    "passwords must not cross the network in clear: use ldaps://, or ldap:// with StartTls: true",
                ));
            }
            _ => {
                return Err(invalid(
                    "Server",
                    format!("{server:?} is not an LDAP URL"),
                    "write it as ldaps://dc1.corp.example.com",
                ));
            }
        }
        let Some(ou) = self.organizational_unit.as_deref() else {
            return Err(invalid(
                "OrganizationalUnit",
                "is required with Backend ldaps",
                format!(
                    "give the DN of the OU for service accounts, e.g. OU=ServiceAccounts,{}",
                    ad_names::domain_to_dn(&self.domain())
                ),
            ));
        };
        for (property, dn) in [
            ("OrganizationalUnit", Some(ou)),
            (
                "GroupOrganizationalUnit",
                self.group_organizational_unit.as_deref(),
            ),
        ] {
            if let Some(dn) = dn
                && !ad_names::dn_in_domain(dn, &self.domain())
            {
                return Err(invalid(
                    property,
                    format!(
                        "{dn:?} is not inside {}",
                        ad_names::domain_to_dn(&self.domain())
                    ),
                    "give a DN within the Domain, e.g. OU=ServiceAccounts,DC=corp,DC=example,DC=com",
                ));
            }
        }
        if let Some(pem) = &self.ca_bundle
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(invalid(
                "CaBundle",
                "holds no PEM certificate",
                "paste the CA certificate(s) in PEM form, -----BEGIN CERTIFICATE----- included",
            ));
        }
        match (&self.admin_password_parameter, &self.admin_secret_id) {
            (Some(_), Some(_)) => Err(invalid(
                "AdminPasswordParameter",
                "and AdminSecretId are both set",
                "give one source for the admin password",
            )),
            (None, None) => Err(invalid(
                "AdminPasswordParameter",
                "or AdminSecretId is required with Backend ldaps",
                "name the SSM SecureString or Secrets Manager secret holding the admin password (never the password itself)",
            )),
            (Some(_), None) if self.admin_username.is_none() => Err(invalid(
                "AdminUsername",
                "is required with AdminPasswordParameter",
                "give the admin's UPN, e.g. admin@corp.example.com",
            )),
            _ => Ok(()),
        }
    }

    fn validate_managed_ad(&self) -> Result<(), Invalid> {
        let id = self.directory_id.as_deref().unwrap_or_default();
        let ok = id.len() == 12
            && id.starts_with("d-")
            && id[2..].chars().all(|c| c.is_ascii_hexdigit());
        if !ok {
            return Err(invalid(
                "DirectoryId",
                format!("{id:?} is not a directory id"),
                "give the Managed AD's id, e.g. d-1234567890 (!Ref of the directory)",
            ));
        }
        for (property, set) in [
            ("Server", self.server.is_some()),
            (
                "AdminPasswordParameter",
                self.admin_password_parameter.is_some(),
            ),
            ("AdminSecretId", self.admin_secret_id.is_some()),
        ] {
            if set {
                return Err(invalid(
                    property,
                    "applies only to Backend ldaps",
                    "remove it: the managed-ad backend authenticates with the function's IAM role",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ldaps() -> serde_json::Value {
        json!({
            "Domain": "example.test", "AccountName": "svc-web", "PasswordParameter": "/fargate-smb/web/password",
            "Server": "ldaps://127.0.0.1", "OrganizationalUnit": "OU=fargate-smb,DC=example,DC=test",
            "AdminUsername": "Administrator@example.test", "AdminPasswordParameter": "/fargate-smb/admin"
        })
    }

    fn with(mut v: serde_json::Value, k: &str, x: serde_json::Value) -> Properties {
        v[k] = x;
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn names_and_defaults() {
        let p: Properties = serde_json::from_value(ldaps()).unwrap();
        p.validate().unwrap();
        assert_eq!(p.account_names(), ["svc-web"]);
        assert_eq!(p.netbios(), "EXAMPLE");
        assert_eq!((p.backend, p.on_delete), (Backend::Ldaps, OnDelete::Delete));
        let p = with(ldaps(), "Alternating", json!("true"));
        assert_eq!(p.account_names(), ["svc-web-a", "svc-web-b"]);
        let p = with(ldaps(), "OnDelete", json!("disable"));
        assert_eq!(p.on_delete, OnDelete::Disable);
    }

    #[test]
    fn each_problem_names_its_property() {
        let cases = [
            (with(ldaps(), "Domain", json!("example")), "Domain"),
            (
                with(ldaps(), "AccountName", json!("svc*web")),
                "AccountName",
            ),
            (
                with(
                    with(ldaps(), "Alternating", json!(true)).to_value(),
                    "AccountName",
                    json!("a-nineteen-chars-xy"),
                ),
                "AccountName",
            ),
            (with(ldaps(), "Server", json!("ldap://127.0.0.1")), "Server"),
            (with(ldaps(), "Server", json!("http://dc")), "Server"),
            (
                with(
                    ldaps(),
                    "OrganizationalUnit",
                    json!("OU=x,DC=other,DC=test"),
                ),
                "OrganizationalUnit",
            ),
            (with(ldaps(), "CaBundle", json!("nope")), "CaBundle"),
            (
                with(ldaps(), "AdminSecretId", json!("arn:x")),
                "AdminPasswordParameter",
            ),
            (with(ldaps(), "CreateGroup", json!(true)), "CreateGroup"),
            (
                with(ldaps(), "TimeoutSeconds", json!("0")),
                "TimeoutSeconds",
            ),
            (with(ldaps(), "Backend", json!("managed-ad")), "DirectoryId"),
        ];
        for (p, property) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.property, property, "{e}");
        }
        let e = serde_json::from_value::<Properties>({
            let mut v = ldaps();
            v["Backend"] = json!("samba");
            v
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("ldaps") && e.to_string().contains("managed-ad"),
            "{e}"
        );
    }

    #[test]
    fn managed_ad_rejects_ldap_only_settings() {
        let v = json!({"Backend": "managed-ad", "DirectoryId": "d-1234567890", "Domain": "corp.example.com",
                       "AccountName": "svc-web", "PasswordParameter": "/p"});
        let p: Properties = serde_json::from_value(v.clone()).unwrap();
        p.validate().unwrap();
        let e = with(v, "Server", json!("ldaps://x"))
            .validate()
            .unwrap_err();
        assert_eq!(e.property, "Server");
    }

    fn without(mut v: serde_json::Value, key: &str) -> serde_json::Value {
        if let Some(m) = v.as_object_mut() {
            m.remove(key);
        }
        v
    }

    /// The Secrets Manager form: PasswordSecretId instead of PasswordParameter.
    fn secret_mode() -> serde_json::Value {
        let mut v = without(ldaps(), "PasswordParameter");
        v["PasswordSecretId"] =
            json!("arn:aws:secretsmanager:us-east-1:123456789012:secret:web-AbCdEf");
        v["PasswordSecretVersion"] = json!(1);
        v
    }

    #[test]
    fn the_password_comes_from_a_parameter_or_a_secret() {
        let p: Properties = serde_json::from_value(secret_mode()).unwrap();
        p.validate().unwrap();
        assert_eq!(
            p.password_source().unwrap(),
            PasswordSource::Secret {
                id: "arn:aws:secretsmanager:us-east-1:123456789012:secret:web-AbCdEf"
            }
        );
        assert_eq!(p.password_secret_version.as_deref(), Some("1"));
        // A blank PasswordParameter (a template's !If) is no second source.
        with(secret_mode(), "PasswordParameter", json!(" "))
            .validate()
            .unwrap();
        let p = with(
            ldaps(),
            "UsernameParameter",
            json!("/fargate-smb/web/username"),
        );
        assert_eq!(
            p.password_source().unwrap(),
            PasswordSource::Parameter {
                name: "/fargate-smb/web/password",
                username_parameter: Some("/fargate-smb/web/username")
            }
        );
    }

    #[test]
    fn exactly_one_password_source_with_its_own_companions() {
        let neither: Properties =
            serde_json::from_value(without(ldaps(), "PasswordParameter")).unwrap();
        let cases = [
            (
                with(secret_mode(), "PasswordParameter", json!("/p")),
                "PasswordParameter",
                "PasswordSecretId",
            ),
            (neither, "PasswordParameter", "PasswordSecretId"),
            (
                with(secret_mode(), "UsernameParameter", json!("/u")),
                "UsernameParameter",
                "PasswordSecretId",
            ),
            (
                with(secret_mode(), "PasswordParameterVersion", json!("2")),
                "PasswordParameterVersion",
                "PasswordSecretId",
            ),
            (
                with(ldaps(), "PasswordSecretVersion", json!("2")),
                "PasswordSecretVersion",
                "PasswordParameter",
            ),
            (
                with(secret_mode(), "PasswordSecretId", json!("my secret")),
                "PasswordSecretId",
                "ARN",
            ),
            (
                with(ldaps(), "PasswordParameter", json!("/a b")),
                "PasswordParameter",
                "SSM parameter name",
            ),
        ];
        for (p, property, also) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.property, property, "{e}");
            assert!(e.to_string().contains(also), "{e}");
        }
    }

    #[test]
    fn a_delete_needs_no_password_source() {
        let p: Properties = serde_json::from_value(without(ldaps(), "PasswordParameter")).unwrap();
        p.validate_connection().unwrap();
    }

    #[test]
    fn what_resets_the_password_on_update() {
        let ssm = |version: &str| with(ldaps(), "PasswordParameterVersion", json!(version));
        let sm = |version: &str| with(secret_mode(), "PasswordSecretVersion", json!(version));
        assert!(!ssm("1").password_changed_from(&ssm("1")));
        assert!(ssm("2").password_changed_from(&ssm("1")));
        assert!(!sm("1").password_changed_from(&sm("1")));
        assert!(sm("2").password_changed_from(&sm("1")));
        // From SSM to Secrets Manager, and from one secret to another.
        assert!(sm("1").password_changed_from(&ssm("1")));
        let other = with(
            sm("1").to_secret_value(),
            "PasswordSecretId",
            json!("other"),
        );
        assert!(other.password_changed_from(&sm("1")));
        // Only the parameter's name changing keeps today's behaviour (checked, not forced).
        assert!(
            !with(ldaps(), "PasswordParameter", json!("/other")).password_changed_from(&with(
                ldaps(),
                "PasswordParameter",
                json!("/p")
            ))
        );
    }

    trait ToValue {
        fn to_value(&self) -> serde_json::Value;
    }

    impl ToValue for Properties {
        fn to_value(&self) -> serde_json::Value {
            let mut v = ldaps();
            v["Alternating"] = json!(self.alternating);
            v
        }
    }

    impl Properties {
        fn to_secret_value(&self) -> serde_json::Value {
            let mut v = secret_mode();
            v["PasswordSecretVersion"] = json!(self.password_secret_version);
            v
        }
    }
}
