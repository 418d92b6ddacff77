//! The function's configuration, from its environment (the template sets it). Every error names
//! the variable and the fix.

use std::time::Duration;

/// The configuration error: the variable, the problem, the fix.
pub use custom_resource::env::EnvError as ConfigError;
use custom_resource::env::env_error as err;

/// How the password is reset in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Ldaps {
        url: String,
        starttls: bool,
        ca_bundle_pem: Option<String>,
        /// DNS name of the domain.
        domain: String,
        admin_username: Option<String>,
        admin_source: AdminSource,
    },
    ManagedAd {
        directory_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSource {
    Parameter(String),
    Secret(String),
}

/// Where the credential lives, and so how a rotation is driven (`CREDENTIAL_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialStore {
    /// `<prefix>/username`, `<prefix>/password`, `<prefix>/share` (as Custom::SsmParameters
    /// makes them) and `<prefix>/rotation` (this function's record), rotated on a schedule.
    SsmParameters { prefix: String },
    /// One Secrets Manager secret (`SECRET_ID`: its ARN, or its name), rotated by Secrets
    /// Manager's four steps.
    SecretsManager { secret_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub store: CredentialStore,
    /// Two names: the alternating pair. One: single-account mode.
    pub accounts: Vec<String>,
    pub backend: Backend,
    pub ecs_cluster: Option<String>,
    pub ecs_services: Vec<String>,
    pub password_length: usize,
    pub smb_port: u16,
    pub smb_require_encryption: bool,
    /// The new password is proven by an SMB logon; a file server may ask another DC, which
    /// learns the password by replication, so the proof is retried this many times.
    pub proof_attempts: u32,
    pub proof_delay: Duration,
    pub timeout: Duration,
    pub dry_run: bool,
}

impl Config {
    /// The SSM prefix; empty in Secrets Manager mode, where no code that names a parameter runs
    /// (the handler dispatches on the store before any of it).
    pub fn prefix(&self) -> &str {
        match &self.store {
            CredentialStore::SsmParameters { prefix } => prefix,
            CredentialStore::SecretsManager { .. } => "",
        }
    }
    pub fn username_parameter(&self) -> String {
        format!("{}/username", self.prefix())
    }
    pub fn password_parameter(&self) -> String {
        format!("{}/password", self.prefix())
    }
    pub fn share_parameter(&self) -> String {
        format!("{}/share", self.prefix())
    }
    pub fn record_parameter(&self) -> String {
        format!("{}/rotation", self.prefix())
    }
    /// Held by the run in progress.
    pub fn lock_parameter(&self) -> String {
        format!("{}/rotation-lock", self.prefix())
    }
    /// The new password while a rotation runs (SecureString, the password's key).
    pub fn pending_parameter(&self) -> String {
        format!("{}/rotation-pending", self.prefix())
    }
    pub fn alternating(&self) -> bool {
        self.accounts.len() == 2
    }

    /// Read the configuration through `get` (the process environment in Lambda).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match text(name).map(|v| v.to_ascii_lowercase()).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(other) => Err(err(
                    name,
                    format!("{other:?} is not a boolean"),
                    "use true or false",
                )),
            }
        };
        let number =
            |name: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| match text(
                name,
            ) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        err(
                            name,
                            format!(
                                "{v:?} is not a number in {}..={}",
                                range.start(),
                                range.end()
                            ),
                            format!("leave it unset for {default}"),
                        )
                    }),
            };
        let store = match text("CREDENTIAL_STORE")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("ssm-parameters") => {
                let prefix = text("PARAMETER_PREFIX").ok_or_else(|| {
                    err(
                        "PARAMETER_PREFIX",
                        "is not set",
                        "set it to the ParameterPrefix of the Custom::SsmParameters resource, e.g. /fargate-smb/web",
                    )
                })?;
                if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
                    return Err(err(
                        "PARAMETER_PREFIX",
                        format!("{prefix:?} is not an SSM path prefix"),
                        "write it as /path/to/prefix (leading slash, no trailing slash)",
                    ));
                }
                CredentialStore::SsmParameters { prefix }
            }
            Some("secrets-manager") => {
                let secret_id = text("SECRET_ID").ok_or_else(|| {
                    err(
                        "SECRET_ID",
                        "is required with CREDENTIAL_STORE=secrets-manager",
                        "set it to the ARN of the secret this function rotates (the template's ServiceAccountSecret)",
                    )
                })?;
                if let Some(problem) = secret_id_problem(&secret_id) {
                    return Err(err(
                        "SECRET_ID",
                        format!("{secret_id:?} {problem}"),
                        "give the secret's ARN, arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>",
                    ));
                }
                CredentialStore::SecretsManager { secret_id }
            }
            Some(other) => {
                return Err(err(
                    "CREDENTIAL_STORE",
                    format!("{other:?} is not a credential store"),
                    "use ssm-parameters or secrets-manager",
                ));
            }
        };
        let accounts: Vec<String> = text("ACCOUNTS")
            .unwrap_or_default()
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if accounts.is_empty() || accounts.len() > 2 {
            return Err(err(
                "ACCOUNTS",
                format!("names {} account(s)", accounts.len()),
                "give the alternating pair (svc-web-a,svc-web-b, from Custom::AdServiceAccount's SamAccountNames) or one account",
            ));
        }
        for a in &accounts {
            if let Some(problem) = ad_names::account_name_problem(a, ad_names::MAX_USER_NAME) {
                return Err(err(
                    "ACCOUNTS",
                    format!("{a:?}: {problem}"),
                    "give sAMAccountNames, without DOMAIN\\",
                ));
            }
        }
        if accounts.len() == 2 && accounts[0].eq_ignore_ascii_case(&accounts[1]) {
            return Err(err(
                "ACCOUNTS",
                "names the same account twice",
                "give two different accounts, or one",
            ));
        }
        let backend = match text("DIRECTORY_BACKEND")
            .map(|b| b.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("ldaps") => {
                let url = text("LDAPS_URL").ok_or_else(|| {
                    err("LDAPS_URL", "is not set", "set it to ldaps://dc1.corp.example.com (or ldap:// with LDAPS_STARTTLS=true)")
                })?;
                let domain = text("AD_DOMAIN").ok_or_else(|| {
                    err(
                        "AD_DOMAIN",
                        "is not set",
                        "set it to the domain's DNS name, e.g. corp.example.com",
                    )
                })?;
                if let Some(problem) = ad_names::dns_domain_problem(&domain) {
                    return Err(err(
                        "AD_DOMAIN",
                        problem,
                        "use the domain's DNS name, e.g. corp.example.com",
                    ));
                }
                let admin_source = match (text("ADMIN_PASSWORD_PARAMETER"), text("ADMIN_SECRET_ID"))
                {
                    (Some(_), Some(_)) => {
                        return Err(err(
                            "ADMIN_PASSWORD_PARAMETER",
                            "and ADMIN_SECRET_ID are both set",
                            "set one",
                        ));
                    }
                    (None, None) => {
                        return Err(err(
                            "ADMIN_PASSWORD_PARAMETER",
                            "or ADMIN_SECRET_ID is required with the ldaps backend",
                            "name the SSM SecureString or Secrets Manager secret holding the password of an account that may reset passwords",
                        ));
                    }
                    (Some(p), None) => AdminSource::Parameter(p),
                    (None, Some(s)) => AdminSource::Secret(s),
                };
                let admin_username = text("ADMIN_USERNAME");
                if admin_username.is_none() && matches!(admin_source, AdminSource::Parameter(_)) {
                    return Err(err(
                        "ADMIN_USERNAME",
                        "is required with ADMIN_PASSWORD_PARAMETER",
                        "set it, e.g. CORP\\fargate-smb-admin",
                    ));
                }
                Backend::Ldaps {
                    url,
                    starttls: flag("LDAPS_STARTTLS", false)?,
                    ca_bundle_pem: text("LDAPS_CA_BUNDLE"),
                    domain,
                    admin_username,
                    admin_source,
                }
            }
            Some("managed-ad") => Backend::ManagedAd {
                directory_id: text("DIRECTORY_ID").ok_or_else(|| {
                    err(
                        "DIRECTORY_ID",
                        "is required with DIRECTORY_BACKEND=managed-ad",
                        "set it to the directory's id, d-…",
                    )
                })?,
            },
            Some(other) => {
                return Err(err(
                    "DIRECTORY_BACKEND",
                    format!("{other:?} is not a backend"),
                    "use ldaps or managed-ad",
                ));
            }
        };
        let ecs_services: Vec<String> = text("ECS_SERVICES")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let ecs_cluster = text("ECS_CLUSTER");
        if !ecs_services.is_empty() && ecs_cluster.is_none() {
            return Err(err(
                "ECS_CLUSTER",
                "is required with ECS_SERVICES",
                "set it to the cluster's name or ARN",
            ));
        }
        let dry_run = flag("DRY_RUN", false)?;
        if dry_run && matches!(store, CredentialStore::SecretsManager { .. }) {
            return Err(err(
                "DRY_RUN",
                "is true with CREDENTIAL_STORE=secrets-manager",
                "unset it: Secrets Manager drives the rotation step by step and has no dry run \
                 (see what a rotation would do with the ssm-parameters store's dry run, or in the README)",
            ));
        }
        Ok(Self {
            store,
            accounts,
            backend,
            ecs_cluster,
            ecs_services,
            password_length: number("PASSWORD_LENGTH", 32, 16..=127)? as usize,
            smb_port: number("SMB_PORT", 445, 1..=65535)? as u16,
            smb_require_encryption: flag("SMB_REQUIRE_ENCRYPTION", true)?,
            proof_attempts: number("PROOF_ATTEMPTS", 5, 1..=30)? as u32,
            proof_delay: Duration::from_millis(number("PROOF_DELAY_MS", 2000, 0..=60_000)?),
            timeout: Duration::from_secs(number("TIMEOUT_SECONDS", 15, 1..=120)?),
            dry_run,
        })
    }
}

/// Why `id` cannot name a secret: an ARN must be a Secrets Manager secret's; a name must be one
/// Secrets Manager accepts (1–512 of ASCII letters, digits and `/_+=.@-`).
fn secret_id_problem(id: &str) -> Option<&'static str> {
    if let Some(rest) = id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return match parts.as_slice() {
            [partition, "secretsmanager", region, account, resource]
                if !partition.is_empty() && !region.is_empty() && !account.is_empty() =>
            {
                match resource.strip_prefix("secret:") {
                    Some(name) if !name.is_empty() => None,
                    _ => Some("is not the ARN of a secret (…:secret:<name>)"),
                }
            }
            _ => Some("is not a Secrets Manager ARN"),
        };
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
    if id.len() > 512 || !id.chars().all(allowed) {
        return Some("is neither an ARN nor a secret name");
    }
    None
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
        ("PARAMETER_PREFIX", "/fargate-smb/web"),
        ("ACCOUNTS", "svc-web-a, svc-web-b"),
        ("LDAPS_URL", "ldaps://dc1.corp.example.com"),
        ("AD_DOMAIN", "corp.example.com"),
        ("ADMIN_USERNAME", "CORP\\admin"),
        ("ADMIN_PASSWORD_PARAMETER", "/fargate-smb/admin/password"),
        ("ECS_CLUSTER", "web"),
        ("ECS_SERVICES", "site"),
    ];

    #[test]
    fn a_full_configuration() {
        let c = env(GOOD).unwrap();
        assert!(c.alternating());
        assert_eq!(c.accounts, ["svc-web-a", "svc-web-b"]);
        assert_eq!(c.password_parameter(), "/fargate-smb/web/password");
        assert_eq!(c.record_parameter(), "/fargate-smb/web/rotation");
        assert_eq!(
            (c.password_length, c.smb_port, c.proof_attempts, c.dry_run),
            (32, 445, 5, false)
        );
    }

    #[test]
    fn each_problem_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("PARAMETER_PREFIX", "fargate-smb/web", "PARAMETER_PREFIX"),
            ("ACCOUNTS", "a,b,c", "ACCOUNTS"),
            ("ACCOUNTS", "svc-a,SVC-A", "ACCOUNTS"),
            ("ACCOUNTS", "bad name?", "ACCOUNTS"),
            ("DIRECTORY_BACKEND", "kerberos", "DIRECTORY_BACKEND"),
            ("PASSWORD_LENGTH", "8", "PASSWORD_LENGTH"),
            ("DRY_RUN", "maybe", "DRY_RUN"),
            ("AD_DOMAIN", "not a domain", "AD_DOMAIN"),
        ];
        for (key, value, variable) in cases {
            let mut pairs: Vec<(&str, &str)> =
                GOOD.iter().filter(|(k, _)| k != key).copied().collect();
            pairs.push((key, value));
            let e = env(&pairs).unwrap_err();
            assert_eq!(e.variable, *variable, "{e}");
        }
        let no_cluster: Vec<(&str, &str)> = GOOD
            .iter()
            .filter(|(k, _)| *k != "ECS_CLUSTER")
            .copied()
            .collect();
        assert_eq!(env(&no_cluster).unwrap_err().variable, "ECS_CLUSTER");
    }

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fargate-smb-web-AbCdEf";

    fn secrets_manager(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut pairs: Vec<(&str, &str)> = GOOD
            .iter()
            .filter(|(k, _)| *k != "PARAMETER_PREFIX")
            .copied()
            .collect();
        pairs.push(("CREDENTIAL_STORE", "secrets-manager"));
        pairs.extend_from_slice(extra);
        env(&pairs)
    }

    #[test]
    fn the_secrets_manager_store_needs_the_secret_not_the_prefix() {
        let c = secrets_manager(&[("SECRET_ID", ARN)]).unwrap();
        assert_eq!(
            c.store,
            CredentialStore::SecretsManager {
                secret_id: ARN.into()
            }
        );
        assert_eq!(c.prefix(), "");
        // A name is taken too (compared with the secret's name).
        assert!(secrets_manager(&[("SECRET_ID", "fargate-smb/web")]).is_ok());
        assert_eq!(
            env(GOOD).unwrap().store,
            CredentialStore::SsmParameters {
                prefix: "/fargate-smb/web".into()
            },
            "the default is today's store"
        );
        for (key, value, variable) in [
            ("SECRET_ID", "", "SECRET_ID"),
            (
                "SECRET_ID",
                "arn:aws:ssm:us-east-1:123456789012:parameter/x",
                "SECRET_ID",
            ),
            (
                "SECRET_ID",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
                "SECRET_ID",
            ),
            ("SECRET_ID", "{\"password\": \"x\"}", "SECRET_ID"),
            ("DRY_RUN", "true", "DRY_RUN"),
        ] {
            let mut extra = vec![(key, value)];
            if key != "SECRET_ID" {
                extra.push(("SECRET_ID", ARN));
            }
            let e = secrets_manager(&extra).unwrap_err();
            assert_eq!(e.variable, variable, "{key}={value}: {e}");
        }
        let mut pairs = GOOD.to_vec();
        pairs.push(("CREDENTIAL_STORE", "vault"));
        assert_eq!(env(&pairs).unwrap_err().variable, "CREDENTIAL_STORE");
    }
}
