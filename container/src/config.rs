//! The entrypoint's configuration, read from the environment ECS gives the container.
//!
//! Every error names the variable and says what to write instead: a task that cannot start
//! should say why in its first log line.

use secrets::Secret;
use smb_share::Unc;
use std::time::Duration;

/// Environment variable names. `USERNAME` is a Windows built-in (the container's own user), so
/// the credential has namespaced names; the lower-case trio is what the original PowerShell
/// startup script read, accepted for compatibility.
pub mod vars {
    pub const SHARE: &str = "SMB_SHARE";
    pub const DRIVE: &str = "SMB_DRIVE";
    pub const MAPPINGS: &str = "SMB_MAPPINGS";
    pub const USERNAME: &str = "SMB_USERNAME";
    pub const PASSWORD: &str = "SMB_PASSWORD";
    pub const USERNAME_PARAMETER: &str = "SMB_USERNAME_PARAMETER";
    pub const PASSWORD_PARAMETER: &str = "SMB_PASSWORD_PARAMETER";
    /// A Secrets Manager secret (ARN or name) whose current value is JSON holding both the
    /// user name and the password, read with the task role.
    pub const CREDENTIAL_SECRET: &str = "SMB_CREDENTIAL_SECRET";
    pub const IIS_SITE: &str = "SMB_IIS_SITE";
    pub const IIS_VDIRS: &str = "SMB_IIS_VDIRS";
    pub const DEADLINE: &str = "SMB_DEADLINE_SECONDS";
    pub const CONNECT_TIMEOUT: &str = "SMB_CONNECT_TIMEOUT_SECONDS";
    pub const WRITE_TEST: &str = "SMB_WRITE_TEST";
    pub const PORT: &str = "SMB_PORT";
    pub const POWERSHELL: &str = "SMB_POWERSHELL";
    pub const APPCMD: &str = "SMB_APPCMD";
    /// `true`: with the credential read from SSM or Secrets Manager, the main process keeps the
    /// task role too.
    pub const APP_USES_TASK_ROLE: &str = "SMB_APP_USES_TASK_ROLE";
    /// The folder of IIS's W3C log files, followed onto stdout while the main process runs.
    pub const IIS_LOG_DIR: &str = "SMB_IIS_LOG_DIR";
    pub const IIS_NO_CACHE: &str = "SMB_IIS_NO_CACHE";
    pub const COMPAT_SHARE: &str = "fileshare";
    pub const COMPAT_USERNAME: &str = "username";
    pub const COMPAT_PASSWORD: &str = "password";
    /// Set only in the environment of the short-lived PowerShell that makes the mapping.
    pub const CHILD_USERNAME: &str = "FARGATE_SMB_USERNAME";
    pub const CHILD_PASSWORD: &str = "FARGATE_SMB_PASSWORD";
    /// How a process in an ECS task finds the task role's credentials: the SDKs fetch them from
    /// the ECS credential endpoint that these name (and authorize against). Then the other
    /// credential sources the SDK reads from the environment, ahead of the endpoint: whichever
    /// of them read the password's parameter could read it again, so they go too.
    pub const TASK_ROLE: [&str; 9] = [
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ];
}

pub const DEFAULT_DRIVE: char = 'G';
pub const DEFAULT_SITE: &str = "Default Web Site";
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_POWERSHELL: &str = "powershell.exe";
pub const DEFAULT_APPCMD: &str = r"C:\Windows\System32\inetsrv\appcmd.exe";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "no share is configured: set SMB_SHARE to the share's UNC path (\\\\fs.example.com\\share), or SMB_MAPPINGS to G:=\\\\fs\\share;H:=\\\\fs\\other"
    )]
    NoShare,
    #[error("set SMB_SHARE or SMB_MAPPINGS, not both")]
    ShareAndMappings,
    #[error(
        "{var}: {value:?} is not a UNC path: write it as \\\\server\\share or \\\\server\\share\\folder"
    )]
    BadUnc { var: String, value: String },
    #[error("{var}: {value:?} is not a drive letter: write one letter D to Z, such as G:")]
    BadDrive { var: String, value: String },
    #[error("{var}: the drive {drive}: is mapped twice: give each share its own letter")]
    DuplicateDrive { var: String, drive: char },
    #[error("{var}: entry {entry:?} is not DRIVE=UNC: write it as G:=\\\\fs.example.com\\share")]
    BadMapping { var: String, entry: String },
    #[error(
        "no user name: set SMB_USERNAME (DOMAIN\\name or name@domain), or SMB_USERNAME_PARAMETER to an SSM parameter holding it, or SMB_CREDENTIAL_SECRET to a Secrets Manager secret holding the whole credential"
    )]
    NoUsername,
    #[error(
        "no password: set SMB_PASSWORD (from the task definition's secrets), or SMB_PASSWORD_PARAMETER to the SSM SecureString the task role may read, or SMB_CREDENTIAL_SECRET to the Secrets Manager secret the task role may read"
    )]
    NoPassword,
    #[error(
        "set SMB_CREDENTIAL_SECRET or {other}, not both: the secret holds the user name and the password; remove {other}, or remove SMB_CREDENTIAL_SECRET to take the credential from {other}"
    )]
    SecretAndOther { other: &'static str },
    /// The value is never repeated: what is not a secret id may be the secret itself (the
    /// variable set from the task definition's `secrets` instead of its `environment`).
    #[error(
        "SMB_CREDENTIAL_SECRET is not a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>) or name (letters, digits and /_+=.@-, at most 512): give the secret's ARN in the task definition's environment, not its secrets (which would put the secret's value here)"
    )]
    BadSecretId,
    #[error("{var} is empty: give it a value or remove it")]
    Empty { var: String },
    #[error("{var}: {value:?} is not a user name: write DOMAIN\\name or name@domain.example{hint}")]
    BadUsername {
        var: String,
        value: String,
        hint: &'static str,
    },
    #[error("{var}: {value:?} is not a whole number of seconds between {min} and {max}")]
    BadSeconds {
        var: String,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("{var}: {value:?} is not a TCP port")]
    BadPort { var: String, value: String },
    #[error("{var}: {value:?} is not true or false")]
    BadBool { var: String, value: String },
    #[error(
        "{var}: {value:?} is not an absolute folder path: write it as C:\\inetpub\\logs\\LogFiles (IIS's default), or leave it empty to not follow IIS's logs"
    )]
    BadFolder { var: String, value: String },
    #[error(
        "{var}: entry {entry:?} is not /path=DRIVE:\\folder: write it as /content=G:\\content (the path starts with /)"
    )]
    BadVirtualDirectory { var: String, entry: String },
    #[error(
        "{var}: entry {entry:?} is not a URL path of the site: write it as /content/fargate-smb-health.txt (it starts with /, no backslash or space)"
    )]
    BadUrlPath { var: String, entry: String },
    #[error(
        "{var}: {path} is on drive {drive}:, which no mapping makes: map that drive or point the directory at a mapped one"
    )]
    UnmappedDrive {
        var: String,
        path: String,
        drive: char,
    },
    #[error(
        "{var}: {value:?} contains a character this tool does not pass to Windows commands ({reason})"
    )]
    Unsafe {
        var: String,
        value: String,
        reason: &'static str,
    },
}

/// One drive letter mapped to one share (or a folder of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub drive: char,
    /// The UNC as given, with forward slashes turned and trailing separators dropped.
    pub remote: String,
    pub unc: Unc,
}

impl Mapping {
    pub fn local(&self) -> String {
        format!("{}:", self.drive)
    }
}

/// Where a value comes from: the environment (ECS `secrets`), or an SSM parameter or a key of a
/// Secrets Manager secret's JSON, read with the task role, which keeps the secret out of the
/// container's environment altogether.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<T> {
    Env {
        var: String,
        value: T,
    },
    Parameter(String),
    /// `id`: the secret's ARN or name (`SMB_CREDENTIAL_SECRET`); `key`: `username` or `password`.
    Secret {
        id: String,
        key: &'static str,
    },
}

impl<T> Source<T> {
    pub fn describe(&self) -> String {
        match self {
            Source::Env { var, .. } => format!("environment variable {var}"),
            Source::Parameter(name) => format!("SSM parameter {name}"),
            Source::Secret { id, key } => format!("Secrets Manager secret {id}, key {key:?}"),
        }
    }

    /// Read from a store (SSM, Secrets Manager) with the task role, not given in the environment.
    pub fn is_stored(&self) -> bool {
        !matches!(self, Source::Env { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDirectory {
    /// `/content`
    pub path: String,
    /// `G:\content`
    pub physical_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub powershell: String,
    pub appcmd: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mappings: Vec<Mapping>,
    pub username: Source<String>,
    pub password: Source<Secret>,
    pub site: String,
    pub vdirs: Vec<VirtualDirectory>,
    pub deadline: Duration,
    pub connect_timeout: Duration,
    pub write_test: bool,
    pub port: u16,
    pub tools: Tools,
    /// `SMB_APP_USES_TASK_ROLE`: the operator's choice to let the main process keep the task
    /// role even though the entrypoint reads the credential with it.
    pub app_uses_task_role: bool,
    /// Variables no child may see: the credential's, whichever names were used, and the task
    /// role's when the entrypoint reads the credential with it (see [`Config::withholds_task_role`]).
    pub credential_vars: Vec<String>,
    /// `SMB_IIS_LOG_DIR`: where IIS writes its W3C logs, followed onto stdout; `None` (unset or
    /// empty): not followed.
    pub iis_log_dir: Option<std::path::PathBuf>,
    /// `SMB_IIS_NO_CACHE`: URL paths of the site IIS must read from disk on every request, never
    /// from its output or kernel cache: the load balancer's health probe, which must fail when
    /// the share does, however often it is asked for.
    pub no_cache: Vec<String>,
}

impl Config {
    /// Read the configuration through `get` (the process environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let nonempty = |var: &str| -> Result<Option<String>, ConfigError> {
            match get(var) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Err(ConfigError::Empty { var: var.into() }),
                Some(v) => Ok(Some(v.trim().to_owned())),
            }
        };

        let mappings = read_mappings(&nonempty)?;

        let (username, password) = if let Some(id) = nonempty(vars::CREDENTIAL_SECRET)? {
            if !is_secret_id(&id) {
                // Wiped: it may be the credential itself.
                drop(Secret::new(id));
                return Err(ConfigError::BadSecretId);
            }
            // One place for the credential: a second source beside the secret would leave it
            // to precedence rules which one a task uses, and a stale copy would go unnoticed.
            // A value is looked at only to see that it is there, inside a `Secret` that wipes it.
            // `password` (the old script's name) too; `username` alone is Windows' built-in.
            for other in [
                vars::USERNAME,
                vars::PASSWORD,
                vars::USERNAME_PARAMETER,
                vars::PASSWORD_PARAMETER,
                vars::COMPAT_PASSWORD,
            ] {
                if get(other).map(Secret::new).is_some() {
                    return Err(ConfigError::SecretAndOther { other });
                }
            }
            (
                Source::Secret {
                    id: id.clone(),
                    key: "username",
                },
                Source::Secret {
                    id,
                    key: "password",
                },
            )
        } else {
            // The password decides whether the compatibility names are in use: `username` alone
            // is the Windows built-in and means nothing here. Each password value is read once and
            // goes straight into a `Secret`, so no copy of it is freed without being wiped.
            let smb_password = get(vars::PASSWORD).map(Secret::new);
            let compat_password =
                if smb_password.is_none() && get(vars::PASSWORD_PARAMETER).is_none() {
                    get(vars::COMPAT_PASSWORD).map(Secret::new)
                } else {
                    None
                };
            let compat = compat_password.is_some();
            let password = if let Some(value) = smb_password {
                // A password may have leading or trailing spaces; take it as given.
                if value.is_empty() {
                    return Err(ConfigError::Empty {
                        var: vars::PASSWORD.into(),
                    });
                }
                Source::Env {
                    var: vars::PASSWORD.into(),
                    value,
                }
            } else if let Some(name) = nonempty(vars::PASSWORD_PARAMETER)? {
                Source::Parameter(name)
            } else if let Some(value) = compat_password {
                if value.is_empty() {
                    return Err(ConfigError::Empty {
                        var: vars::COMPAT_PASSWORD.into(),
                    });
                }
                Source::Env {
                    var: vars::COMPAT_PASSWORD.into(),
                    value,
                }
            } else {
                return Err(ConfigError::NoPassword);
            };

            let username = if let Some(v) = nonempty(vars::USERNAME)? {
                Source::Env {
                    var: vars::USERNAME.into(),
                    value: check_username(vars::USERNAME, v)?,
                }
            } else if let Some(name) = nonempty(vars::USERNAME_PARAMETER)? {
                Source::Parameter(name)
            } else if compat && let Some(v) = nonempty(vars::COMPAT_USERNAME)? {
                Source::Env {
                    var: vars::COMPAT_USERNAME.into(),
                    value: check_username(vars::COMPAT_USERNAME, v)?,
                }
            } else {
                return Err(ConfigError::NoUsername);
            };
            (username, password)
        };

        let site = nonempty(vars::IIS_SITE)?.unwrap_or_else(|| DEFAULT_SITE.to_owned());
        plain_text(vars::IIS_SITE, &site)?;
        let vdirs = match nonempty(vars::IIS_VDIRS)? {
            None => Vec::new(),
            Some(v) => parse_vdirs(vars::IIS_VDIRS, &v, &mappings)?,
        };

        let deadline = seconds(&nonempty, vars::DEADLINE, DEFAULT_DEADLINE, 1, 3600)?;
        let connect_timeout = seconds(
            &nonempty,
            vars::CONNECT_TIMEOUT,
            DEFAULT_CONNECT_TIMEOUT,
            1,
            120,
        )?;
        let write_test = match nonempty(vars::WRITE_TEST)? {
            None => false,
            Some(v) => parse_bool(vars::WRITE_TEST, &v)?,
        };
        let port = match nonempty(vars::PORT)? {
            None => 445,
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(ConfigError::BadPort {
                    var: vars::PORT.into(),
                    value: v,
                })?,
        };
        let tools = Tools {
            powershell: nonempty(vars::POWERSHELL)?
                .unwrap_or_else(|| DEFAULT_POWERSHELL.to_owned()),
            appcmd: nonempty(vars::APPCMD)?.unwrap_or_else(|| DEFAULT_APPCMD.to_owned()),
        };

        let app_uses_task_role = match nonempty(vars::APP_USES_TASK_ROLE)? {
            None => false,
            Some(v) => parse_bool(vars::APP_USES_TASK_ROLE, &v)?,
        };

        // Empty means off, as unset does: a template can pass the variable through unchanged.
        let iis_log_dir = match get(vars::IIS_LOG_DIR) {
            Some(v) if !v.trim().is_empty() => Some(parse_folder(vars::IIS_LOG_DIR, v.trim())?),
            _ => None,
        };

        let no_cache = match nonempty(vars::IIS_NO_CACHE)? {
            None => Vec::new(),
            Some(v) => parse_url_paths(vars::IIS_NO_CACHE, &v)?,
        };

        let mut credential_vars = vec![
            vars::PASSWORD.to_owned(),
            vars::USERNAME.to_owned(),
            vars::COMPAT_PASSWORD.to_owned(),
            vars::CHILD_PASSWORD.to_owned(),
            vars::CHILD_USERNAME.to_owned(),
            // An id, not the secret; but no child has a use for it.
            vars::CREDENTIAL_SECRET.to_owned(),
        ];
        // Removing `username` otherwise would remove the Windows built-in USERNAME.
        if matches!(&username, Source::Env { var, .. } if var == vars::COMPAT_USERNAME) {
            credential_vars.push(vars::COMPAT_USERNAME.to_owned());
        }
        // The same decision as `withholds_task_role`, which explains it.
        if reads_with_task_role(&username, &password) && !app_uses_task_role {
            credential_vars.extend(vars::TASK_ROLE.map(str::to_owned));
        }

        Ok(Self {
            mappings,
            username,
            password,
            site,
            vdirs,
            deadline,
            connect_timeout,
            write_test,
            port,
            tools,
            app_uses_task_role,
            credential_vars,
            iis_log_dir,
            no_cache,
        })
    }

    /// The process environment, with the variables [`crate::own_env::take`] already took out
    /// of it looked up in `taken` instead.
    pub fn from_env(taken: &crate::own_env::Taken) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| match taken.get(name) {
            Some(secret) => Some(secret.expose().to_owned()),
            None => std::env::var(name).ok(),
        })
    }

    /// Whether the entrypoint reads the credential itself, with the task role, from SSM or from
    /// Secrets Manager (`CredentialDelivery=task-role`). The name predates Secrets Manager.
    pub fn reads_ssm(&self) -> bool {
        reads_with_task_role(&self.username, &self.password)
    }

    /// Whether the task role's variables ([`vars::TASK_ROLE`]) are kept from every child.
    ///
    /// In task-role mode the task role may read the SSM parameters or the secret, the password
    /// included.
    /// IIS's ServiceMonitor copies its environment into the application pools, so a main
    /// process that kept `AWS_CONTAINER_CREDENTIALS_*` would let any code in w3wp fetch the
    /// role's credentials from the ECS endpoint and read the password with them: two HTTP
    /// calls. There the role is the entrypoint's alone, unless `SMB_APP_USES_TASK_ROLE=true`
    /// says the application needs it (and accepts that it can then read the password). With
    /// ECS `secrets` the entrypoint calls no AWS API: the task role, if any, is the
    /// application's, and it is left alone.
    pub fn withholds_task_role(&self) -> bool {
        self.reads_ssm() && !self.app_uses_task_role
    }
}

fn reads_with_task_role(username: &Source<String>, password: &Source<Secret>) -> bool {
    username.is_stored() || password.is_stored()
}

fn read_mappings(
    nonempty: &impl Fn(&str) -> Result<Option<String>, ConfigError>,
) -> Result<Vec<Mapping>, ConfigError> {
    let share = match nonempty(vars::SHARE)? {
        Some(v) => Some((vars::SHARE, v)),
        None => nonempty(vars::COMPAT_SHARE)?.map(|v| (vars::COMPAT_SHARE, v)),
    };
    let list = nonempty(vars::MAPPINGS)?;
    match (share, list) {
        (Some(_), Some(_)) => Err(ConfigError::ShareAndMappings),
        (None, None) => Err(ConfigError::NoShare),
        (Some((var, unc)), None) => {
            let drive = match nonempty(vars::DRIVE)? {
                None => DEFAULT_DRIVE,
                Some(d) => parse_drive(vars::DRIVE, &d)?,
            };
            Ok(vec![mapping(var, drive, &unc)?])
        }
        (None, Some(list)) => {
            let mut out: Vec<Mapping> = Vec::new();
            for entry in list.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                let (drive, unc) = entry.split_once('=').ok_or(ConfigError::BadMapping {
                    var: vars::MAPPINGS.into(),
                    entry: entry.into(),
                })?;
                let drive = parse_drive(vars::MAPPINGS, drive.trim())?;
                if out.iter().any(|m| m.drive == drive) {
                    return Err(ConfigError::DuplicateDrive {
                        var: vars::MAPPINGS.into(),
                        drive,
                    });
                }
                out.push(mapping(vars::MAPPINGS, drive, unc.trim())?);
            }
            if out.is_empty() {
                return Err(ConfigError::Empty {
                    var: vars::MAPPINGS.into(),
                });
            }
            Ok(out)
        }
    }
}

fn mapping(var: &str, drive: char, unc: &str) -> Result<Mapping, ConfigError> {
    let bad = || ConfigError::BadUnc {
        var: var.into(),
        value: unc.into(),
    };
    let parsed = Unc::parse(unc).map_err(|_| bad())?;
    plain_text(var, unc)?;
    let mut remote = format!(r"\\{}\{}", parsed.server, parsed.share);
    if !parsed.path.is_empty() {
        remote.push('\\');
        remote.push_str(&parsed.path);
    }
    Ok(Mapping {
        drive,
        remote,
        unc: parsed,
    })
}

fn parse_drive(var: &str, value: &str) -> Result<char, ConfigError> {
    let bad = || ConfigError::BadDrive {
        var: var.into(),
        value: value.into(),
    };
    let letter = value.strip_suffix(':').unwrap_or(value);
    let mut chars = letter.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return Err(bad());
    };
    let c = c.to_ascii_uppercase();
    // A, B and C are the floppy and system drives of every Windows container.
    if !('D'..='Z').contains(&c) {
        return Err(bad());
    }
    Ok(c)
}

fn check_username(var: &str, value: String) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadUsername {
        var: var.into(),
        value: value.clone(),
        // `username` is also Windows' own USERNAME, which can win over the task's value.
        hint: if var == vars::COMPAT_USERNAME {
            " (on Windows, `username` is also the built-in USERNAME: set SMB_USERNAME instead)"
        } else {
            ""
        },
    };
    if !user_name_shape(&value) {
        return Err(bad());
    }
    plain_text(var, &value)?;
    Ok(value)
}

/// `DOMAIN\name` or `name@domain`, each part non-empty.
fn user_name_shape(value: &str) -> bool {
    match (value.split_once('\\'), value.split_once('@')) {
        (Some((domain, name)), None) => !domain.is_empty() && !name.is_empty(),
        (None, Some((name, domain))) => !domain.is_empty() && !name.is_empty(),
        _ => false,
    }
}

fn parse_vdirs(
    var: &str,
    text: &str,
    mappings: &[Mapping],
) -> Result<Vec<VirtualDirectory>, ConfigError> {
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || ConfigError::BadVirtualDirectory {
            var: var.into(),
            entry: entry.into(),
        };
        let (path, physical) = entry.split_once('=').ok_or_else(bad)?;
        let path = path.trim().trim_end_matches('/');
        let physical = physical.trim();
        if !path.starts_with('/') || path.len() < 2 || path.contains(['\\', ' ']) {
            return Err(bad());
        }
        let mut chars = physical.chars();
        let (Some(letter), Some(':')) = (chars.next(), chars.next()) else {
            return Err(bad());
        };
        let drive = parse_drive(var, &letter.to_string()).map_err(|_| bad())?;
        if !mappings.iter().any(|m| m.drive == drive) {
            return Err(ConfigError::UnmappedDrive {
                var: var.into(),
                path: physical.into(),
                drive,
            });
        }
        plain_text(var, physical)?;
        // appcmd wants the drive root with its backslash.
        let rest = &physical[2..];
        let physical_path = if rest.is_empty() {
            format!("{drive}:\\")
        } else {
            format!("{drive}:{}", rest.replace('/', "\\"))
        };
        out.push(VirtualDirectory {
            path: path.to_owned(),
            physical_path,
        });
    }
    Ok(out)
}

/// Values end up inside single-quoted PowerShell strings and appcmd arguments. Quotes are
/// escaped there, but control characters and double quotes have no business in a path or a
/// name, and refusing them keeps the generated commands readable and safe.
/// A Secrets Manager secret's ARN (`arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`)
/// or name (1–512 of letters, digits and `/_+=.@-`), as GetSecretValue's `SecretId` takes it.
fn is_secret_id(id: &str) -> bool {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 512
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    };
    if let Some(rest) = id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        return matches!(parts.as_slice(), [partition, "secretsmanager", region, account, "secret", name]
            if partition.starts_with("aws")
                && !region.is_empty()
                && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && name_ok(name));
    }
    name_ok(id)
}

/// `;`-separated URL paths of the site (`/content/fargate-smb-health.txt`).
fn parse_url_paths(var: &str, text: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let path = entry.trim_end_matches('/');
        if !path.starts_with('/') || path.len() < 2 || path.contains(['\\', ' ']) {
            return Err(ConfigError::BadUrlPath {
                var: var.into(),
                entry: entry.into(),
            });
        }
        plain_text(var, path)?;
        out.push(path.to_owned());
    }
    Ok(out)
}

fn plain_text(var: &str, value: &str) -> Result<(), ConfigError> {
    let reason = if value.chars().any(char::is_control) {
        Some("a control character")
    } else if value.contains('"') {
        Some("a double quote")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::Unsafe {
            var: var.into(),
            value: value.into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// An absolute path, in Windows' forms (`C:\x`, `\\server\share\x`) or a Unix one (the
/// Linux build's tests): a relative one would depend on the directory the entrypoint starts in.
fn parse_folder(var: &str, value: &str) -> Result<std::path::PathBuf, ConfigError> {
    plain_text(var, value)?;
    let bytes = value.as_bytes();
    let drive = bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && matches!(bytes[2], b'\\' | b'/');
    let unc = value.starts_with(r"\\") && value.len() > 2;
    if drive || unc || value.starts_with('/') {
        Ok(std::path::PathBuf::from(value))
    } else {
        Err(ConfigError::BadFolder {
            var: var.into(),
            value: value.into(),
        })
    }
}

fn seconds(
    nonempty: &impl Fn(&str) -> Result<Option<String>, ConfigError>,
    var: &str,
    default: Duration,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    match nonempty(var)? {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| (min..=max).contains(s))
            .map(Duration::from_secs)
            .ok_or(ConfigError::BadSeconds {
                var: var.into(),
                value: v,
                min,
                max,
            }),
    }
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::BadBool {
            var: var.into(),
            value: value.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("SMB_SHARE", r"\\fs.example.com\share"),
        ("SMB_USERNAME", r"EXAMPLE\svc-web"),
        ("SMB_PASSWORD", "Correct-Horse-9"),
    ];

    #[test]
    fn the_usual_task_definition() {
        let mut env = BASE.to_vec();
        env.push(("SMB_IIS_VDIRS", r"/content=G:\web"));
        let c = config(&env).unwrap();
        assert_eq!(c.mappings.len(), 1);
        assert_eq!(c.mappings[0].drive, 'G');
        assert_eq!(c.mappings[0].remote, r"\\fs.example.com\share");
        assert_eq!(c.mappings[0].unc.server, "fs.example.com");
        assert!(matches!(&c.username, Source::Env { value, .. } if value == r"EXAMPLE\svc-web"));
        assert!(
            matches!(&c.password, Source::Env { var, value } if var == "SMB_PASSWORD" && value.expose() == "Correct-Horse-9")
        );
        assert_eq!(
            c.vdirs,
            vec![VirtualDirectory {
                path: "/content".into(),
                physical_path: r"G:\web".into()
            }]
        );
        assert_eq!(c.site, "Default Web Site");
        assert_eq!(c.deadline, DEFAULT_DEADLINE);
        assert!(!c.write_test);
        assert_eq!(c.port, 445);
        assert!(!c.credential_vars.iter().any(|v| v == "username"));
        // The Debug form is what a panic or a stray log would print.
        assert!(!format!("{c:?}").contains("Correct-Horse-9"));
    }

    #[test]
    fn compatibility_names() {
        let c = config(&[
            ("fileshare", r"\\fs\share"),
            ("username", r"EXAMPLE\svc"),
            ("password", "pw-1"),
        ])
        .unwrap();
        assert!(matches!(&c.password, Source::Env { var, .. } if var == "password"));
        assert!(matches!(&c.username, Source::Env { var, .. } if var == "username"));
        assert!(c.credential_vars.iter().any(|v| v == "username"));
    }

    #[test]
    fn the_windows_builtin_username_is_not_a_credential() {
        // SMB_PASSWORD with no SMB_USERNAME: `username` is the container's own user.
        let e = config(&[
            ("SMB_SHARE", r"\\fs\share"),
            ("username", "ContainerAdministrator"),
            ("SMB_PASSWORD", "x"),
        ])
        .unwrap_err();
        assert_eq!(e, ConfigError::NoUsername);
    }

    #[test]
    fn parameters_keep_the_secret_out_of_the_environment() {
        let c = config(&[
            ("SMB_SHARE", r"\\fs\share"),
            ("SMB_USERNAME_PARAMETER", "/app/username"),
            ("SMB_PASSWORD_PARAMETER", "/app/password"),
        ])
        .unwrap();
        assert_eq!(c.username, Source::Parameter("/app/username".into()));
        assert_eq!(c.password, Source::Parameter("/app/password".into()));
    }

    const TASK_ROLE_VARS: [&str; 4] = [
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    ];

    fn withholds(c: &Config) -> [bool; 4] {
        TASK_ROLE_VARS.map(|v| c.credential_vars.iter().any(|r| r == v))
    }

    #[test]
    fn task_role_mode_keeps_the_task_role_from_the_children() {
        let ssm = [
            ("SMB_SHARE", r"\\fs\share"),
            ("SMB_USERNAME_PARAMETER", "/app/username"),
            ("SMB_PASSWORD_PARAMETER", "/app/password"),
        ];
        let c = config(&ssm).unwrap();
        assert!(c.reads_ssm() && c.withholds_task_role() && !c.app_uses_task_role);
        assert_eq!(withholds(&c), [true; 4]);
        // A user name from SSM is read with the task role as well.
        let c = config(&[
            ("SMB_SHARE", r"\\fs\share"),
            ("SMB_USERNAME_PARAMETER", "/app/username"),
            ("SMB_PASSWORD", "x"),
        ])
        .unwrap();
        assert_eq!(withholds(&c), [true; 4]);
    }

    #[test]
    fn the_application_may_keep_the_task_role_when_it_says_so() {
        for yes in ["true", "TRUE", "1", "yes", "on"] {
            let c = config(&[
                ("SMB_SHARE", r"\\fs\share"),
                ("SMB_USERNAME_PARAMETER", "/app/username"),
                ("SMB_PASSWORD_PARAMETER", "/app/password"),
                ("SMB_APP_USES_TASK_ROLE", yes),
            ])
            .unwrap();
            assert!(c.app_uses_task_role && !c.withholds_task_role(), "{yes}");
            assert_eq!(withholds(&c), [false; 4], "{yes}");
        }
        let c = config(&[
            ("SMB_SHARE", r"\\fs\share"),
            ("SMB_USERNAME_PARAMETER", "/app/username"),
            ("SMB_PASSWORD_PARAMETER", "/app/password"),
            ("SMB_APP_USES_TASK_ROLE", "false"),
        ])
        .unwrap();
        assert_eq!(withholds(&c), [true; 4]);
        let mut bad = BASE.to_vec();
        bad.push(("SMB_APP_USES_TASK_ROLE", "sometimes"));
        assert_eq!(
            config(&bad).unwrap_err(),
            ConfigError::BadBool {
                var: "SMB_APP_USES_TASK_ROLE".into(),
                value: "sometimes".into()
            }
        );
    }

    #[test]
    fn a_secrets_manager_secret_holds_the_whole_credential() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/smb-AbCdEf";
        let env = [("SMB_SHARE", r"\\fs\share"), ("SMB_CREDENTIAL_SECRET", arn)];
        let c = config(&env).unwrap();
        assert_eq!(
            c.username,
            Source::Secret {
                id: arn.into(),
                key: "username"
            }
        );
        assert_eq!(
            c.password,
            Source::Secret {
                id: arn.into(),
                key: "password"
            }
        );
        assert_eq!(
            c.password.describe(),
            format!("Secrets Manager secret {arn}, key \"password\"")
        );
        // Read with the task role, like the SSM parameters: the role is the entrypoint's alone.
        assert!(c.reads_ssm() && c.withholds_task_role());
        assert_eq!(withholds(&c), [true; 4]);
        let mut shared = env.to_vec();
        shared.push(("SMB_APP_USES_TASK_ROLE", "true"));
        assert_eq!(withholds(&config(&shared).unwrap()), [false; 4]);
        // The compatibility names do not compete with it: `username` is Windows' own.
        let mut compat = env.to_vec();
        compat.push(("username", "ContainerAdministrator"));
        assert!(matches!(
            config(&compat).unwrap().username,
            Source::Secret { .. }
        ));
        let mut empty = env.to_vec();
        empty[1].1 = " ";
        assert_eq!(
            config(&empty).unwrap_err(),
            ConfigError::Empty {
                var: "SMB_CREDENTIAL_SECRET".into()
            }
        );
    }

    #[test]
    fn the_secret_and_another_credential_source_are_an_error_naming_both() {
        for other in [
            "SMB_USERNAME",
            "SMB_PASSWORD",
            "SMB_USERNAME_PARAMETER",
            "SMB_PASSWORD_PARAMETER",
        ] {
            // Even empty: a task definition that sets it meant something by it.
            for value in ["x", ""] {
                let e = config(&[
                    ("SMB_SHARE", r"\\fs\share"),
                    ("SMB_CREDENTIAL_SECRET", "app/smb"),
                    (other, value),
                ])
                .unwrap_err();
                assert_eq!(
                    e,
                    ConfigError::SecretAndOther { other },
                    "{other}={value:?}"
                );
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("set SMB_CREDENTIAL_SECRET or {other}, not both")),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn with_ecs_secrets_the_task_role_is_the_application_s() {
        let c = config(BASE).unwrap();
        assert!(!c.reads_ssm() && !c.withholds_task_role());
        assert_eq!(withholds(&c), [false; 4]);
    }

    #[test]
    fn several_mappings() {
        let c = config(&[
            ("SMB_MAPPINGS", r"g:=\\fs1\share\web ; H=//fs2/data/"),
            ("SMB_USERNAME", "svc@example.test"),
            ("SMB_PASSWORD", "x"),
            ("SMB_IIS_VDIRS", r"/content/=G:\;/data=h:\reports"),
        ])
        .unwrap();
        let m: Vec<_> = c
            .mappings
            .iter()
            .map(|m| (m.local(), m.remote.clone()))
            .collect();
        assert_eq!(
            m,
            vec![
                ("G:".to_string(), r"\\fs1\share\web".to_string()),
                ("H:".to_string(), r"\\fs2\data".to_string())
            ]
        );
        assert_eq!(c.vdirs[0].path, "/content");
        assert_eq!(c.vdirs[0].physical_path, r"G:\");
        assert_eq!(c.vdirs[1].physical_path, r"H:\reports");
    }

    #[test]
    fn the_iis_log_folder_is_optional_and_absolute() {
        assert_eq!(config(BASE).unwrap().iis_log_dir, None);
        let with = |v: &'static str| {
            let mut env = BASE.to_vec();
            env.push(("SMB_IIS_LOG_DIR", v));
            config(&env)
        };
        // Empty is off, as unset is: a template may pass an empty parameter through.
        assert_eq!(with("").unwrap().iis_log_dir, None);
        assert_eq!(with("  ").unwrap().iis_log_dir, None);
        for ok in [
            r"C:\inetpub\logs\LogFiles",
            "c:/logs",
            r"\\fs\logs\iis",
            "/var/log/iis",
        ] {
            assert_eq!(
                with(ok).unwrap().iis_log_dir,
                Some(std::path::PathBuf::from(ok)),
                "{ok}"
            );
        }
        assert_eq!(
            with(r" C:\inetpub\logs\LogFiles ").unwrap().iis_log_dir,
            Some(std::path::PathBuf::from(r"C:\inetpub\logs\LogFiles"))
        );
        for bad in [r"inetpub\logs", "C:", r"C:logs", r"\\", "logs"] {
            let e = with(bad).unwrap_err();
            assert_eq!(
                e,
                ConfigError::BadFolder {
                    var: "SMB_IIS_LOG_DIR".into(),
                    value: bad.into()
                },
                "{bad}"
            );
            assert!(e.to_string().starts_with("SMB_IIS_LOG_DIR: "));
        }
        assert!(matches!(
            with("C:\\logs\"x").unwrap_err(),
            ConfigError::Unsafe { .. }
        ));
    }

    #[test]
    fn each_error_names_the_variable() {
        let with = |k: &'static str, v: &'static str| {
            let mut env: Vec<_> = BASE.iter().copied().filter(|(n, _)| *n != k).collect();
            env.push((k, v));
            config(&env).unwrap_err().to_string()
        };
        assert!(with("SMB_SHARE", "fs/share").starts_with("SMB_SHARE: "));
        assert!(with("SMB_DRIVE", "C:").contains("SMB_DRIVE"));
        assert!(with("SMB_DRIVE", "GH").contains("drive letter"));
        assert!(with("SMB_USERNAME", "svc").contains("DOMAIN\\name"));
        assert!(with("SMB_DEADLINE_SECONDS", "0").contains("SMB_DEADLINE_SECONDS"));
        assert!(with("SMB_PORT", "70000").contains("SMB_PORT"));
        assert!(with("SMB_WRITE_TEST", "maybe").contains("SMB_WRITE_TEST"));
        assert!(with("SMB_IIS_VDIRS", r"content=G:\x").contains("/content=G:\\content"));
        assert!(with("SMB_IIS_VDIRS", r"/x=K:\x").contains("drive K:"));
        assert!(with("SMB_SHARE", "\\\\fs\\sh\"are").contains("double quote"));
        assert!(with("SMB_PASSWORD", "").contains("SMB_PASSWORD is empty"));
        assert_eq!(
            config(&BASE[1..]).unwrap_err(),
            ConfigError::NoShare,
            "no share"
        );
        assert_eq!(config(&BASE[..2]).unwrap_err(), ConfigError::NoPassword);
        let mut both = BASE.to_vec();
        both.push(("SMB_MAPPINGS", r"H:=\\fs\x"));
        assert_eq!(config(&both).unwrap_err(), ConfigError::ShareAndMappings);
        let dup = config(&[
            ("SMB_MAPPINGS", r"G:=\\a\b;g:=\\c\d"),
            ("SMB_USERNAME", r"E\x"),
            ("SMB_PASSWORD", "x"),
        ])
        .unwrap_err();
        assert!(matches!(
            dup,
            ConfigError::DuplicateDrive { drive: 'G', .. }
        ));
    }
    #[test]
    fn no_cache_paths_are_url_paths_of_the_site() {
        let with = |v: &'static str| {
            let mut env: Vec<(&str, &str)> = BASE.to_vec();
            env.push(("SMB_IIS_NO_CACHE", v));
            config(&env)
        };
        assert_eq!(config(BASE).unwrap().no_cache, Vec::<String>::new());
        assert_eq!(
            with(" /content/fargate-smb-health.txt ; /x/ ")
                .unwrap()
                .no_cache,
            ["/content/fargate-smb-health.txt", "/x"]
        );
        for bad in ["content/x.txt", "/", r"/a\b", "/a b", "/a\"b"] {
            let e = with(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("SMB_IIS_NO_CACHE: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_secret_is_named_by_an_id_and_its_value_is_never_repeated() {
        for ok in [
            "app/smb-credential",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/smb-AbCdEf",
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x",
        ] {
            assert!(is_secret_id(ok), "{ok}");
        }
        for bad in [
            r#"{"username":"EXAMPLE\\svc","password":"Hidden-1"}"#,
            "arn:aws:ssm:eu-west-1:123456789012:parameter/x",
            "arn:aws:secretsmanager:eu-west-1:1234:secret:x",
            "a b",
        ] {
            assert!(!is_secret_id(bad), "{bad}");
            let mut env: Vec<(&str, &str)> = BASE
                .iter()
                .copied()
                .filter(|(k, _)| !k.contains("USERNAME") && !k.contains("PASSWORD"))
                .collect();
            env.push(("SMB_CREDENTIAL_SECRET", bad));
            let e = config(&env).unwrap_err();
            assert!(matches!(e, ConfigError::BadSecretId), "{bad}: {e}");
            assert!(!e.to_string().contains("Hidden-1"));
        }
    }
}
