//! Preflight: prove the share is usable before Windows is asked to map it.
//!
//! `New-SmbGlobalMapping` fails with one generic message for a dozen causes, and a task that
//! starts without its share serves errors. So each layer is checked on its own — the name
//! resolves, TCP answers, the SMB session sets up with this credential, the share and folder
//! exist, optionally a file can be written — and the first failing layer names the fix.

use crate::config::{Config, Mapping};
use secrets::Secret;
use serde::Serialize;
use smb_share::{Share, ShareConfig, ShareError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Resolve,
    Connect,
    Session,
    Folder,
    Write,
}

impl Check {
    pub fn label(self) -> &'static str {
        match self {
            Check::Resolve => "name resolves",
            Check::Connect => "TCP port answers",
            Check::Session => "SMB session and share",
            Check::Folder => "folder exists",
            Check::Write => "write test",
        }
    }
}

/// A short stable name for each failure, for logs, alarms and the README's troubleshooting table.
pub fn code(error: &ShareError) -> &'static str {
    match error {
        ShareError::BadUnc(_) => "bad_unc",
        ShareError::NameResolution { .. } => "name_not_resolved",
        ShareError::Unreachable { .. } => "port_unreachable",
        ShareError::ConnectionLost { .. } => "connection_lost",
        ShareError::LogonFailure { .. } => "logon_failure",
        ShareError::AccountDisabled { .. } => "account_disabled",
        ShareError::LockedOut { .. } => "account_locked_out",
        ShareError::PasswordExpired { .. } => "password_expired",
        ShareError::AccessDenied { .. } => "access_denied",
        ShareError::ShareNotFound { .. } => "share_not_found",
        ShareError::NotFound { .. } => "folder_not_found",
        ShareError::AlreadyExists { .. } => "already_exists",
        ShareError::Negotiation { .. } => "negotiation_failed",
        ShareError::Timeout { .. } => "timeout",
        ShareError::SharingViolation { .. } => "sharing_violation",
        ShareError::Other { .. } => "smb_error",
    }
}

/// A failure Windows reported while mapping a share, in the same vocabulary as [`code`]: the
/// preflight proves the share usable with the project's own SMB client, and Windows' client can
/// still refuse what it accepted (its own rules on user names and on connections per server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowsFailure {
    pub code: &'static str,
    /// What to do, for the log line and the README's table.
    pub fix: &'static str,
}

/// Windows' 1312 for a user name without its domain (see `MappingFailure::for_username`).
pub const USERNAME_NOT_QUALIFIED: &str = "username_not_qualified";

/// The code for a mapping failure that none of [`windows_failure`]'s errors explains.
pub const MAPPING_FAILED: &str = "mapping_failed";

/// The fix for a Windows error of no known meaning here; the message is Windows' own.
pub const MAPPING_FAILED_FIX: &str = "the preflight passed, so the cause is on the Windows side: Windows' own message above names it; look at the SMB client policy in the image (RequirePrivacy needs SMB 3 encryption on the server)";

/// The Win32 errors New-SmbGlobalMapping reports for causes with a known fix (numbers and
/// meanings from Microsoft's System Error Codes and Network Management Error Codes).
pub fn windows_failure(win32: u32) -> Option<WindowsFailure> {
    let (code, fix) = match win32 {
        // ERROR_ACCESS_DENIED
        5 => (
            "access_denied",
            "Windows' SMB client was refused although the preflight's logon and tree connect passed: the share's permissions and the folder's NTFS ACL (Custom::ShareAcl), then what differs on the Windows side - SMB encryption (RequirePrivacy) and policies that restrict NTLM",
        ),
        // ERROR_BAD_NETPATH: the preflight reached the server, Windows' client did not.
        53 => (
            "network_path_not_found",
            "Windows could not reach the server by this name although the preflight could: check the name in SMB_SHARE / SMB_MAPPINGS as the container's DNS resolves it, and TCP 445 from the task to the file server",
        ),
        // ERROR_BAD_NET_NAME
        67 => (
            "share_not_found",
            "the share name in SMB_SHARE / SMB_MAPPINGS does not exist on the server (FSx: `share`, or the name you created)",
        ),
        // ERROR_ALREADY_ASSIGNED
        85 => (
            "drive_in_use",
            "the drive letter is already in use in the container (a volume, or a mapping the image makes): choose another letter in SMB_DRIVE / SMB_MAPPINGS",
        ),
        // ERROR_INVALID_PASSWORD, ERROR_LOGON_FAILURE
        86 | 1326 => (
            "logon_failure",
            "wrong user name or password: compare the SSM parameters with AD; right after a rotation, wait for replication",
        ),
        // ERROR_SESSION_CREDENTIAL_CONFLICT
        1219 => (
            "credential_conflict",
            "Windows allows one user name per server, and a mapping or connection to this server with another user name already exists: list them (Get-SmbGlobalMapping, Get-SmbConnection), remove the stale one (Remove-SmbGlobalMapping -RemotePath <path> -Force), and give every mapping to one server the same credential",
        ),
        // ERROR_NO_LOGON_SERVERS
        1311 => (
            "no_logon_servers",
            "no domain controller was available to check the logon: the file server's (FSx's) connection to the directory",
        ),
        // ERROR_NO_SUCH_LOGON_SESSION: what Windows says for a user name without a domain.
        1312 => (
            USERNAME_NOT_QUALIFIED,
            "the user name must name its domain: DOMAIN\\user or user@domain.fqdn, not a bare name (SMB_USERNAME or its SSM parameter)",
        ),
        // ERROR_ACCOUNT_RESTRICTION, ERROR_INVALID_LOGON_HOURS, ERROR_INVALID_WORKSTATION
        1327..=1329 => (
            "account_restricted",
            "the account's restrictions forbid this logon (logon hours, logon workstations, or an empty password): lift them for the service account in AD",
        ),
        // ERROR_PASSWORD_EXPIRED, NERR_PasswordExpired
        1330 | 2242 => (
            "password_expired",
            "reset it (a rotation does) and set it not to expire",
        ),
        // ERROR_PASSWORD_MUST_CHANGE
        1907 => (
            "password_expired",
            "the account must change its password at next logon: clear \"User must change password at next logon\" for the service account (a rotation's reset does not)",
        ),
        // ERROR_ACCOUNT_DISABLED
        1331 => (
            "account_disabled",
            "the account is disabled: with rotation, check which account of the pair SSM names",
        ),
        // ERROR_ACCOUNT_EXPIRED
        1793 => (
            "account_expired",
            "the account's expiry date has passed: clear or move it in AD (accountExpires)",
        ),
        // ERROR_ACCOUNT_LOCKED_OUT
        1909 => (
            "account_locked_out",
            "lockout from old passwords: find the client using one, or unlock it",
        ),
        _ => return None,
    };
    Some(WindowsFailure { code, fix })
}

#[derive(Debug)]
pub struct Step {
    pub check: Check,
    pub elapsed: Duration,
    pub result: Result<String, ShareError>,
}

/// One pass over every check of one mapping; stops at the first failure.
#[derive(Debug)]
pub struct Attempt {
    pub steps: Vec<Step>,
}

impl Attempt {
    pub fn failure(&self) -> Option<(Check, &ShareError)> {
        self.steps
            .iter()
            .find_map(|s| s.result.as_ref().err().map(|e| (s.check, e)))
    }

    pub fn elapsed(&self) -> Duration {
        self.steps.iter().map(|s| s.elapsed).sum()
    }
}

/// Milliseconds, for the log lines.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub struct Credential<'a> {
    pub username: &'a str,
    pub password: &'a Secret,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

pub async fn check_once(
    config: &Config,
    mapping: &Mapping,
    credential: &Credential<'_>,
) -> Attempt {
    let mut steps = Vec::new();
    let server = mapping.unc.server.as_str();
    let timeout = config.connect_timeout;

    let started = Instant::now();
    let addresses =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((server, config.port))).await {
            Ok(Ok(found)) => found.collect::<Vec<SocketAddr>>(),
            Ok(Err(e)) => {
                return fail(
                    steps,
                    Check::Resolve,
                    started,
                    ShareError::NameResolution {
                        server: server.into(),
                        detail: e.to_string(),
                    },
                );
            }
            Err(_) => {
                return fail(
                    steps,
                    Check::Resolve,
                    started,
                    ShareError::NameResolution {
                        server: server.into(),
                        detail: format!("no answer within {timeout:?}"),
                    },
                );
            }
        };
    if addresses.is_empty() {
        return fail(
            steps,
            Check::Resolve,
            started,
            ShareError::NameResolution {
                server: server.into(),
                detail: "no address".into(),
            },
        );
    }
    let shown: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
    steps.push(Step {
        check: Check::Resolve,
        elapsed: started.elapsed(),
        result: Ok(shown.join(", ")),
    });

    let started = Instant::now();
    let mut last = String::new();
    let mut answered = None;
    for address in &addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(_stream)) => {
                answered = Some(*address);
                break;
            }
            Ok(Err(e)) => last = format!("{address}: {e}"),
            Err(_) => last = format!("{address}: no answer within {timeout:?}"),
        }
    }
    let Some(address) = answered else {
        return fail(
            steps,
            Check::Connect,
            started,
            ShareError::Unreachable {
                server: server.into(),
                port: config.port,
                detail: last,
            },
        );
    };
    steps.push(Step {
        check: Check::Connect,
        elapsed: started.elapsed(),
        result: Ok(address.to_string()),
    });

    let started = Instant::now();
    let mut share_config = ShareConfig::new(
        mapping.remote.clone(),
        credential.username,
        credential.password.clone(),
    );
    share_config.port = config.port;
    share_config.timeout = timeout;
    let share = match Share::connect(&share_config).await {
        Ok(share) => share,
        Err(e) => return fail(steps, Check::Session, started, e),
    };
    steps.push(Step {
        check: Check::Session,
        elapsed: started.elapsed(),
        result: Ok(format!(
            r"\\{}\{} as {}",
            mapping.unc.server, mapping.unc.share, credential.username
        )),
    });

    let folder = mapping.unc.path.clone();
    if !folder.is_empty() {
        let started = Instant::now();
        match share.stat(&folder).await {
            Ok(_) => steps.push(Step {
                check: Check::Folder,
                elapsed: started.elapsed(),
                result: Ok(folder.clone()),
            }),
            Err(e) => {
                share.close().await;
                return fail(steps, Check::Folder, started, e);
            }
        }
    }

    if config.write_test {
        let started = Instant::now();
        let name = format!(
            ".fargate-smb-preflight-{}-{}.tmp",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let path = if folder.is_empty() {
            name
        } else {
            format!(r"{folder}\{name}")
        };
        let result = match share.write(&path, b"fargate-smb preflight\r\n").await {
            Ok(_) => share.remove(&path).await.map(|()| path),
            Err(e) => Err(e),
        };
        steps.push(Step {
            check: Check::Write,
            elapsed: started.elapsed(),
            result,
        });
    }
    share.close().await;
    Attempt { steps }
}

fn fail(mut steps: Vec<Step>, check: Check, started: Instant, error: ShareError) -> Attempt {
    steps.push(Step {
        check,
        elapsed: started.elapsed(),
        result: Err(error),
    });
    Attempt { steps }
}

/// Check until every layer passes or the deadline passes: at task start the ENI, DNS and the
/// domain controllers may still be coming up, and a new account may not have replicated.
pub async fn until_ready(
    config: &Config,
    mapping: &Mapping,
    credential: &Credential<'_>,
    deadline: Instant,
) -> Result<Attempt, Attempt> {
    let mut backoff = Duration::from_millis(500);
    let mut number = 1u32;
    loop {
        let attempt = check_once(config, mapping, credential).await;
        let Some((check, error)) = attempt.failure() else {
            return Ok(attempt);
        };
        let now = Instant::now();
        if now + backoff >= deadline {
            return Err(attempt);
        }
        tracing::warn!(
            drive = %mapping.local(),
            remote = %mapping.remote,
            attempt = number,
            check = ?check,
            code = code(error),
            error = %error,
            retry_in_ms = backoff.as_millis() as u64,
            "preflight failed; retrying"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_errors_share_the_preflight_s_codes() {
        let user = || "EXAMPLE\\svc".to_string();
        // A cause both clients can see has one code, whichever saw it.
        for (win32, error) in [
            (1326, ShareError::LogonFailure { user: user() }),
            (86, ShareError::LogonFailure { user: user() }),
            (1331, ShareError::AccountDisabled { user: user() }),
            (1909, ShareError::LockedOut { user: user() }),
            (1330, ShareError::PasswordExpired { user: user() }),
            (1907, ShareError::PasswordExpired { user: user() }),
            (2242, ShareError::PasswordExpired { user: user() }),
            (
                5,
                ShareError::AccessDenied {
                    user: user(),
                    operation: "open".into(),
                },
            ),
            (
                67,
                ShareError::ShareNotFound {
                    server: "fs".into(),
                    share: "x".into(),
                },
            ),
        ] {
            assert_eq!(
                windows_failure(win32).map(|f| f.code),
                Some(code(&error)),
                "{win32}"
            );
        }
        // Windows' own rules, which the preflight's client does not have.
        assert_eq!(
            windows_failure(1219).map(|f| f.code),
            Some("credential_conflict")
        );
        assert!(
            windows_failure(1219)
                .unwrap()
                .fix
                .contains("Remove-SmbGlobalMapping")
        );
        assert_eq!(
            windows_failure(1312).map(|f| f.code),
            Some("username_not_qualified")
        );
        assert!(windows_failure(1312).unwrap().fix.contains("DOMAIN\\user"));
        assert_eq!(
            windows_failure(53).map(|f| f.code),
            Some("network_path_not_found")
        );
        assert_eq!(windows_failure(1236), None);
        assert_eq!(windows_failure(0), None);
    }
}
