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
