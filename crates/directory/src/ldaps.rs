//! The LDAPS backend: any Active Directory reachable over LDAPS (636) or LDAP with StartTLS.
//!
//! The certificate is always verified: against `ca_bundle_pem` when given, else the system's
//! roots. There is no accept-any-certificate switch.

use crate::{Directory, DirectoryError, Group, NewUser, Result, User, sid_to_string};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use rustls::{ClientConfig, RootCertStore};
use secrets::Secret;
use std::{collections::HashSet, sync::Arc, time::Duration};

/// userAccountControl bits.
const UAC_ACCOUNTDISABLE: u32 = 0x0002;
const UAC_NORMAL_ACCOUNT: u32 = 0x0200;
const UAC_DONT_EXPIRE_PASSWORD: u32 = 0x1_0000;
/// msDS-User-Account-Control-Computed: the account is locked out now.
const UF_LOCKOUT: u32 = 0x0010;
/// A global security group.
const GROUP_TYPE_GLOBAL_SECURITY: i32 = 0x8000_0002_u32 as i32;

#[derive(Debug, Clone)]
pub struct LdapsConfig {
    /// `ldaps://dc1.example.com` (port 636) or, with `starttls`, `ldap://dc1.example.com`.
    pub url: String,
    pub starttls: bool,
    /// PEM of the CA(s) that issued the DC's certificate. `None`: the system's roots.
    pub ca_bundle_pem: Option<String>,
    /// `admin@example.com`, `EXAMPLE\admin` or a DN.
    pub bind_user: String,
    pub bind_password: Secret,
    /// DNS name of the domain, for userPrincipalName (`name@<domain>`).
    pub domain: String,
    /// Bound on connecting and on each operation.
    pub timeout: Duration,
}

/// A bound LDAP session. Connect per request: binds are cheap and a Lambda container may sit
/// idle past the DC's idle timeout.
#[derive(Debug)]
pub struct LdapsDirectory {
    config: LdapsConfig,
    ldap: ldap3::Ldap,
    base_dn: String,
}

fn tls_config(pem: Option<&str>, server: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let tls = |detail: String| DirectoryError::Tls {
        server: server.to_owned(),
        detail,
    };
    match pem {
        Some(pem) => {
            let mut reader = std::io::BufReader::new(pem.as_bytes());
            let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| tls(format!("CaBundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(tls("CaBundle holds no CERTIFICATE block".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| tls(format!("CaBundle holds an unusable certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs_or_empty();
            if found.is_empty() {
                return Err(tls(
                    "no CaBundle was given and the system has no root certificates".into(),
                ));
            }
            for cert in found {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The system trust store, read the way rustls-native-certs would, without the extra crate:
/// the PEM bundles Debian/Amazon Linux ship.
fn rustls_native_certs_or_empty() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(pem) = std::fs::read(path) {
            let mut reader = std::io::BufReader::new(pem.as_slice());
            let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
                .filter_map(|c| c.ok())
                .collect();
            if !certs.is_empty() {
                return certs;
            }
        }
    }
    Vec::new()
}

/// What AD's `data XXX` code in a bind failure means.
fn bind_reason(text: &str) -> String {
    let code = text
        .split("data ")
        .nth(1)
        .map(|s| s.split([',', ' ']).next().unwrap_or_default())
        .unwrap_or_default();
    match code.to_ascii_lowercase().as_str() {
        "525" => "no such user".into(),
        "52e" => "wrong password".into(),
        "530" => "logon not permitted at this time".into(),
        "531" => "logon not permitted from this workstation".into(),
        "532" => "the password has expired".into(),
        "533" => "the account is disabled".into(),
        "701" => "the account has expired".into(),
        "773" => "the password must be changed at next logon".into(),
        "775" => "the account is locked out".into(),
        _ if text.is_empty() => "invalid credentials".into(),
        _ => format!("invalid credentials ({text})"),
    }
}

/// Map an ldap3 error on `operation` (by `user`) to a [`DirectoryError`].
fn classify(
    operation: &str,
    user: &str,
    server: &str,
    password_for: Option<&str>,
    err: LdapError,
) -> DirectoryError {
    match err {
        LdapError::LdapResult { result } => {
            let text = result.text.trim().to_owned();
            let password_policy =
                text.contains("0000052D") || text.to_ascii_lowercase().contains("password");
            match (result.rc, password_for) {
                (49, _) => DirectoryError::Credentials {
                    user: user.to_owned(),
                    reason: bind_reason(&text),
                },
                (50, _) => DirectoryError::AccessDenied {
                    user: user.to_owned(),
                    operation: operation.to_owned(),
                    detail: text,
                },
                (19 | 53, Some(account)) if password_policy || result.rc == 19 => {
                    DirectoryError::PasswordRejected {
                        account: account.to_owned(),
                        detail: text,
                    }
                }
                (32, _) => DirectoryError::NotFound {
                    what: result.matched.clone().if_empty(operation),
                    detail: text,
                },
                (68, _) => DirectoryError::AlreadyExists {
                    what: operation.to_owned(),
                },
                (rc, _) => DirectoryError::Other {
                    operation: operation.to_owned(),
                    detail: format!("LDAP result {rc}: {text}"),
                },
            }
        }
        LdapError::Io { source } => {
            let is_tls = source
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
                || source.kind() == std::io::ErrorKind::InvalidData;
            if is_tls {
                DirectoryError::Tls {
                    server: server.to_owned(),
                    detail: source.to_string(),
                }
            } else {
                DirectoryError::Unreachable {
                    server: server.to_owned(),
                    detail: source.to_string(),
                }
            }
        }
        LdapError::Timeout { .. } => DirectoryError::Unreachable {
            server: server.to_owned(),
            detail: format!("no answer to {operation} in time"),
        },
        LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => DirectoryError::Other {
            operation: operation.to_owned(),
            detail: format!("{server} is not an ldaps:// or ldap:// URL"),
        },
        LdapError::EndOfStream => DirectoryError::Unreachable {
            server: server.to_owned(),
            detail: "the connection was closed".into(),
        },
        other => DirectoryError::Other {
            operation: operation.to_owned(),
            detail: other.to_string(),
        },
    }
}

trait IfEmpty {
    fn if_empty(self, fallback: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, fallback: &str) -> String {
        if self.is_empty() {
            fallback.to_owned()
        } else {
            self
        }
    }
}

/// Escape a value for an LDAP filter (RFC 4515).
fn filter_escape(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '*' => "\\2a".into(),
            '(' => "\\28".into(),
            ')' => "\\29".into(),
            '\\' => "\\5c".into(),
            '\0' => "\\00".into(),
            c => c.to_string(),
        })
        .collect()
}

/// Escape a value for a DN's RDN (RFC 4514).
fn dn_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let edge = i == 0 || i == value.chars().count() - 1;
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if edge => out.push_str("\\ "),
            c => out.push(c),
        }
    }
    out
}

/// AD's unicodePwd: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &Secret) -> Vec<u8> {
    format!("\"{}\"", password.expose())
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn set(values: &[&str]) -> HashSet<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

impl LdapsDirectory {
    /// Connect, verify the certificate, bind as the admin, find the naming context.
    pub async fn connect(config: LdapsConfig) -> Result<Self> {
        let ldap = Self::bind(
            &config,
            &config.bind_user,
            &config.bind_password,
            "bind as the admin",
        )
        .await?;
        let mut dir = Self {
            config,
            ldap,
            base_dn: String::new(),
        };
        dir.base_dn = dir.naming_context().await?;
        Ok(dir)
    }

    async fn bind(
        config: &LdapsConfig,
        user: &str,
        password: &Secret,
        operation: &str,
    ) -> Result<ldap3::Ldap> {
        let server = config.url.as_str();
        let settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.starttls)
            .set_config(tls_config(config.ca_bundle_pem.as_deref(), server)?);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, server)
            .await
            .map_err(|e| classify("connect", user, server, None, e))?;
        ldap3::drive!(conn);
        ldap.with_timeout(config.timeout)
            .simple_bind(user, password.expose())
            .await
            .and_then(|r| r.success())
            .map_err(|e| classify(operation, user, server, None, e))?;
        Ok(ldap)
    }

    fn handle(&self) -> ldap3::Ldap {
        let mut ldap = self.ldap.clone();
        ldap.with_timeout(self.config.timeout);
        ldap
    }

    fn fail(&self, operation: &str, password_for: Option<&str>, err: LdapError) -> DirectoryError {
        classify(
            operation,
            &self.config.bind_user,
            &self.config.url,
            password_for,
            err,
        )
    }

    async fn naming_context(&self) -> Result<String> {
        let (entries, _) = self
            .handle()
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                vec!["defaultNamingContext"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.fail("read the rootDSE", None, e))?;
        entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .and_then(|e| e.attrs.get("defaultNamingContext").and_then(|v| v.first().cloned()))
            .ok_or_else(|| DirectoryError::Other {
                operation: "read the rootDSE".into(),
                detail: "the server did not report a defaultNamingContext: is it an AD domain controller?".into(),
            })
    }

    /// The domain's naming context, e.g. `DC=example,DC=com`.
    pub fn base_dn(&self) -> &str {
        &self.base_dn
    }

    async fn find(&self, class: &str, sam: &str) -> Result<Option<SearchEntry>> {
        let filter = format!(
            "(&(objectClass={class})(sAMAccountName={}))",
            filter_escape(sam)
        );
        let attrs = vec![
            "sAMAccountName",
            "objectSid",
            "description",
            "userAccountControl",
            "distinguishedName",
        ];
        let (entries, _) = self
            .handle()
            .search(&self.base_dn, Scope::Subtree, &filter, attrs)
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.fail(&format!("search for {sam}"), None, e))?;
        Ok(entries.into_iter().map(SearchEntry::construct).next())
    }

    fn sid(entry: &SearchEntry) -> Result<String> {
        entry
            .bin_attrs
            .get("objectSid")
            .and_then(|v| v.first())
            .and_then(|b| sid_to_string(b))
            .ok_or_else(|| DirectoryError::Other {
                operation: format!("read the SID of {}", entry.dn),
                detail: "no objectSid".into(),
            })
    }

    fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
        entry.attrs.get(attr).and_then(|v| v.first().cloned())
    }

    fn user_from(entry: &SearchEntry) -> Result<User> {
        let uac: u32 = Self::first(entry, "userAccountControl")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(User {
            sam_account_name: Self::first(entry, "sAMAccountName").unwrap_or_default(),
            dn: Some(entry.dn.clone()),
            sid: Self::sid(entry)?,
            description: Self::first(entry, "description"),
            enabled: uac & UAC_ACCOUNTDISABLE == 0,
        })
    }

    /// Replace the description of the object at `dn`.
    async fn describe(&self, dn: &str, description: &str) -> Result<()> {
        let mods = vec![Mod::Replace(b"description".to_vec(), set(&[description]))];
        self.handle()
            .modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.fail(&format!("describe {dn}"), None, e))?;
        Ok(())
    }

    fn dn_of<'a>(&self, user: &'a User) -> Result<&'a str> {
        user.dn.as_deref().ok_or_else(|| DirectoryError::Other {
            operation: format!("modify {}", user.sam_account_name),
            detail: "the user's DN is unknown".into(),
        })
    }

    async fn set_disabled(&self, dn: &str, disabled: bool) -> Result<()> {
        let uac = self.user_account_control(dn).await?;
        let want = if disabled {
            uac | UAC_ACCOUNTDISABLE
        } else {
            uac & !UAC_ACCOUNTDISABLE
        };
        if want == uac {
            return Ok(());
        }
        let mods = vec![Mod::Replace(
            b"userAccountControl".to_vec(),
            set(&[&want.to_string()]),
        )];
        self.handle()
            .modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .map_err(|e| {
                self.fail(
                    &format!("{} {dn}", if disabled { "disable" } else { "enable" }),
                    None,
                    e,
                )
            })?;
        Ok(())
    }

    /// Clear a lockout, before the reset: a password reset does not (in AD or Samba), and an
    /// account locked by logons with its old password would refuse the new one until the lockout
    /// expires. Whether the account is locked comes from the constructed
    /// `msDS-User-Account-Control-Computed` (`UF_LOCKOUT`), not from `lockoutTime`, which stays
    /// set after a lockout has expired until the next successful logon (an inactive account of
    /// the pair may never have one). So an account that is not locked needs no right to
    /// `lockoutTime`, and one whose unlock is refused fails here, before its password changes.
    async fn unlock(&self, dn: &str) -> Result<()> {
        let locked = self
            .attribute(dn, "msDS-User-Account-Control-Computed")
            .await?
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|v| v & UF_LOCKOUT != 0);
        if !locked {
            return Ok(());
        }
        let mods = vec![Mod::Replace(b"lockoutTime".to_vec(), set(&["0"]))];
        self.handle()
            .modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.fail(&format!("unlock {dn} (write lockoutTime)"), None, e))?;
        tracing::info!(%dn, "lockout cleared");
        Ok(())
    }

    async fn user_account_control(&self, dn: &str) -> Result<u32> {
        Ok(self
            .attribute(dn, "userAccountControl")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(UAC_NORMAL_ACCOUNT))
    }

    /// One attribute of the entry `dn` (its first value), `None` if it has none.
    async fn attribute(&self, dn: &str, name: &str) -> Result<Option<String>> {
        let (entries, _) = self
            .handle()
            .search(dn, Scope::Base, "(objectClass=*)", vec![name])
            .await
            .and_then(|r| r.success())
            .map_err(|e| self.fail(&format!("read {dn}"), None, e))?;
        Ok(entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .and_then(|e| Self::first(&e, name)))
    }
}

impl Directory for LdapsDirectory {
    async fn find_user(&self, sam: &str) -> Result<Option<User>> {
        self.find("user", sam)
            .await?
            .map(|e| Self::user_from(&e))
            .transpose()
    }

    async fn create_user(&self, user: &NewUser, password: &Secret) -> Result<User> {
        let name = user.sam_account_name.as_str();
        let dn = format!("CN={},{}", dn_escape(name), user.ou);
        let upn = format!("{name}@{}", self.config.domain);
        let mut uac = UAC_NORMAL_ACCOUNT;
        if user.password_never_expires {
            uac |= UAC_DONT_EXPIRE_PASSWORD;
        }
        let uac = uac.to_string();
        // One add carrying the password: if the policy rejects it, nothing is created.
        let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (
                b"objectClass".to_vec(),
                set(&["top", "person", "organizationalPerson", "user"]),
            ),
            (b"cn".to_vec(), set(&[name])),
            (b"sAMAccountName".to_vec(), set(&[name])),
            (b"userPrincipalName".to_vec(), set(&[&upn])),
            (b"description".to_vec(), set(&[&user.description])),
            (b"userAccountControl".to_vec(), set(&[&uac])),
            (
                b"unicodePwd".to_vec(),
                HashSet::from([unicode_pwd(password)]),
            ),
        ];
        let operation = format!("create {dn}");
        self.handle()
            .add(&dn, attrs)
            .await
            .and_then(|r| r.success())
            .map_err(|e| match self.fail(&operation, Some(name), e) {
                DirectoryError::AlreadyExists { .. } => {
                    DirectoryError::AlreadyExists { what: dn.clone() }
                }
                DirectoryError::NotFound { detail, .. } => DirectoryError::NotFound {
                    what: format!("the OU {}", user.ou),
                    detail: format!("{detail}: create it, or fix OrganizationalUnit"),
                },
                other => other,
            })?;
        tracing::info!(%dn, "user created");
        self.find_user(name)
            .await?
            .ok_or_else(|| DirectoryError::Other {
                operation,
                detail: "the new user cannot be found".into(),
            })
    }

    async fn set_password(&self, user: &User, password: &Secret) -> Result<()> {
        let dn = self.dn_of(user)?;
        self.unlock(dn).await?;
        let mods = vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            HashSet::from([unicode_pwd(password)]),
        )];
        self.handle()
            .modify(dn, mods)
            .await
            .and_then(|r| r.success())
            .map_err(|e| {
                self.fail(
                    &format!("set the password of {dn}"),
                    Some(&user.sam_account_name),
                    e,
                )
            })?;
        self.set_disabled(dn, false).await
    }

    async fn disable(&self, user: &User) -> Result<()> {
        let dn = self.dn_of(user)?;
        self.set_disabled(dn, true).await
    }

    async fn set_description(&self, user: &User, description: &str) -> Result<()> {
        self.describe(self.dn_of(user)?, description).await
    }

    async fn delete_user(&self, user: &User) -> Result<()> {
        let dn = self.dn_of(user)?;
        match self.handle().delete(dn).await.and_then(|r| r.success()) {
            Ok(_) => Ok(()),
            Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(()),
            Err(e) => Err(self.fail(&format!("delete {dn}"), None, e)),
        }
    }

    async fn find_group(&self, sam: &str) -> Result<Option<Group>> {
        match self.find("group", sam).await? {
            None => Ok(None),
            Some(e) => Ok(Some(Group {
                sam_account_name: Self::first(&e, "sAMAccountName").unwrap_or_default(),
                dn: Some(e.dn.clone()),
                sid: Self::sid(&e)?,
                description: Self::first(&e, "description"),
            })),
        }
    }

    async fn create_group(
        &self,
        sam: &str,
        ou: &str,
        description: &str,
        _client_token: &str,
    ) -> Result<Group> {
        let dn = format!("CN={},{ou}", dn_escape(sam));
        let group_type = GROUP_TYPE_GLOBAL_SECURITY.to_string();
        let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), set(&["top", "group"])),
            (b"cn".to_vec(), set(&[sam])),
            (b"sAMAccountName".to_vec(), set(&[sam])),
            (b"groupType".to_vec(), set(&[&group_type])),
            (b"description".to_vec(), set(&[description])),
        ];
        let operation = format!("create the group {dn}");
        match self
            .handle()
            .add(&dn, attrs)
            .await
            .and_then(|r| r.success())
        {
            Ok(_) => tracing::info!(%dn, "group created"),
            // Made by a concurrent or earlier request: use it.
            Err(LdapError::LdapResult { result }) if result.rc == 68 => {}
            Err(e) => return Err(self.fail(&operation, None, e)),
        }
        self.find_group(sam)
            .await?
            .ok_or_else(|| DirectoryError::Other {
                operation,
                detail: "the new group cannot be found".into(),
            })
    }

    async fn set_group_description(&self, group: &Group, description: &str) -> Result<()> {
        self.describe(group.dn.as_deref().unwrap_or_default(), description)
            .await
    }

    async fn delete_group(&self, group: &Group) -> Result<()> {
        let dn = group.dn.as_deref().unwrap_or_default();
        match self.handle().delete(dn).await.and_then(|r| r.success()) {
            Ok(_) => Ok(()),
            Err(LdapError::LdapResult { result }) if result.rc == 32 => Ok(()),
            Err(e) => Err(self.fail(&format!("delete {dn}"), None, e)),
        }
    }

    async fn add_member(&self, group: &Group, user: &User) -> Result<()> {
        let (gdn, udn) = (group.dn.as_deref().unwrap_or_default(), self.dn_of(user)?);
        match self
            .handle()
            .modify(gdn, vec![Mod::Add(b"member".to_vec(), set(&[udn]))])
            .await
            .and_then(|r| r.success())
        {
            Ok(_) => Ok(()),
            // 20: attributeOrValueExists — already a member.
            Err(LdapError::LdapResult { result }) if result.rc == 20 || result.rc == 68 => Ok(()),
            Err(e) => Err(self.fail(&format!("add {udn} to {gdn}"), None, e)),
        }
    }

    async fn remove_member(&self, group: &Group, user: &User) -> Result<()> {
        let (gdn, udn) = (group.dn.as_deref().unwrap_or_default(), self.dn_of(user)?);
        match self
            .handle()
            .modify(gdn, vec![Mod::Delete(b"member".to_vec(), set(&[udn]))])
            .await
            .and_then(|r| r.success())
        {
            Ok(_) => Ok(()),
            // 16: noSuchAttribute — not a member; 53: AD's way of saying the same for member.
            Err(LdapError::LdapResult { result }) if matches!(result.rc, 16 | 32 | 53) => Ok(()),
            Err(e) => Err(self.fail(&format!("remove {udn} from {gdn}"), None, e)),
        }
    }

    async fn check_password(&self, user: &User, password: &Secret) -> Result<Option<bool>> {
        let upn = format!("{}@{}", user.sam_account_name, self.config.domain);
        match Self::bind(&self.config, &upn, password, "bind as the service account").await {
            Ok(mut ldap) => {
                let _ = ldap.unbind().await;
                Ok(Some(true))
            }
            Err(DirectoryError::Credentials { .. }) => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failures_are_explained() {
        assert_eq!(
            bind_reason(
                "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563"
            ),
            "wrong password"
        );
        assert_eq!(bind_reason("... data 533, v893"), "the account is disabled");
        assert!(bind_reason("weird").contains("weird"));
    }

    #[test]
    fn escaping() {
        assert_eq!(filter_escape("a*b(c)\\"), "a\\2ab\\28c\\29\\5c");
        assert_eq!(dn_escape("#a,b "), "\\#a\\,b\\ ");
        assert_eq!(dn_escape("svc-web"), "svc-web");
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(
            unicode_pwd(&Secret::new("ab")),
            vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]
        );
    }

    #[test]
    fn a_bad_ca_bundle_is_named() {
        let e = tls_config(Some("not pem"), "ldaps://dc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CaBundle holds no CERTIFICATE"), "{e}");
    }
}
