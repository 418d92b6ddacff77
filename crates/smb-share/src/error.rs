//! One error per thing that can go wrong, each saying what to check. The container's preflight
//! (`doctor`) and the custom resources show these messages as they are.

use crate::transport::Heard;
use smb::Status;
use smb::transport::TransportError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const STATUS_ACCOUNT_DISABLED: u32 = 0xC000_0072;
const STATUS_PASSWORD_EXPIRED: u32 = 0xC000_0071;
const STATUS_PASSWORD_MUST_CHANGE: u32 = 0xC000_0224;
const STATUS_ACCOUNT_EXPIRED: u32 = 0xC000_0193;
pub(crate) const STATUS_SHARING_VIOLATION: u32 = 0xC000_0043;
pub(crate) const STATUS_DELETE_PENDING: u32 = 0xC000_0056;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{0} is not a UNC path: write it as \\\\server\\share or \\\\server\\share\\folder")]
    BadUnc(String),
    #[error(
        "the file server name {server} does not resolve ({detail}): check DNS — in a VPC, the Route 53 Resolver rule that forwards the AD domain to its DNS servers"
    )]
    NameResolution { server: String, detail: String },
    #[error(
        "{server}:{port} does not answer ({detail}): check the security groups (TCP {port} from this task or function to the file server) and that the server is up"
    )]
    Unreachable {
        server: String,
        port: u16,
        detail: String,
    },
    #[error(
        "the server refused the logon of {user}: wrong user name or password (check the SSM parameters against AD)"
    )]
    LogonFailure { user: String },
    #[error(
        "the account {user} is disabled: enable it in AD, or check which account of the rotation pair is active"
    )]
    AccountDisabled { user: String },
    #[error(
        "the account {user} is locked out: wait for the lockout to expire or unlock it, then look for a client using an old password"
    )]
    LockedOut { user: String },
    #[error(
        "the password of {user} has expired or must be changed: reset it (rotation does) and set it not to expire"
    )]
    PasswordExpired { user: String },
    #[error(
        "{user} may not {operation}: grant it access on the share and in the folder's NTFS ACL"
    )]
    AccessDenied { user: String, operation: String },
    #[error(
        "the share {share} does not exist on {server}: check the share name (FSx for Windows: usually \"share\")"
    )]
    ShareNotFound { server: String, share: String },
    #[error("{path} does not exist on the share")]
    NotFound { path: String },
    #[error("{path} already exists on the share")]
    AlreadyExists { path: String },
    /// A file is held open by another program, in one of the two ways a replacing rename is
    /// refused ([`Held`]). Usually transient: callers retry it ([`crate::Retry`]).
    #[error("could not {operation} {path}: {held}")]
    SharingViolation {
        operation: String,
        path: String,
        held: Held,
    },
    #[error(
        "the server could not agree to an encrypted SMB 3 session ({detail}): the share must support SMB 3.1.1 with encryption"
    )]
    Negotiation { detail: String },
    /// The connection dropped after it was made (a reset, the server closing it, a network
    /// fault). Nothing half-written is left under a final name by the callers that write to a
    /// temporary name first; a new connection may well work.
    #[error(
        "the connection to {server}:{port} was lost {detail}: the network or the file server dropped it (a \
         failover, a reset, an idle or NAT timeout); run again, and if it recurs check the path to the file \
         server (security groups, network ACLs, the file server's health)"
    )]
    ConnectionLost {
        server: String,
        port: u16,
        /// "during <operation> <path> (<cause>)".
        detail: String,
    },
    #[error("the server did not answer {operation} within {timeout:?}")]
    Timeout {
        operation: String,
        timeout: Duration,
    },
    #[error("{operation} failed: {detail}")]
    Other { operation: String, detail: String },
}

impl ShareError {
    /// The session is gone or stuck (the connection dropped, or a request went unanswered):
    /// what failed may work over a new connection, so callers reconnect and try again (a
    /// bounded number of times) instead of reporting the file as failed.
    pub fn is_link_lost(&self) -> bool {
        matches!(
            self,
            ShareError::ConnectionLost { .. } | ShareError::Timeout { .. }
        )
    }
}

/// How a file held open by another program refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// STATUS_SHARING_VIOLATION: another open of the file did not share the access asked for
    /// (here: the open for DELETE that a rename or delete needs). IIS, antivirus and backup
    /// agents open files without FILE_SHARE_DELETE.
    ShareMode,
    /// STATUS_ACCESS_DENIED from a rename with ReplaceIfExists, after the file to move was
    /// opened for DELETE (so the account may delete that one). MS-FSCC 2.4.42
    /// (FileRenameInformation) lists it for "the target file was open and ReplaceIfExists is
    /// nonzero": NTFS refuses to replace a file while any handle to it is open, whatever that
    /// handle shares, and answers this status rather than a sharing violation. The same status
    /// also means the account may not delete the target, which no answer tells apart.
    TargetOpen,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Held::ShareMode => {
                "another program holds it open without allowing it to be replaced or deleted (a sharing \
                 violation; a web server, antivirus or backup agent reading it). Usually it is let go within \
                 seconds: run again, and if it persists find the program holding it (Computer Management > \
                 Shared Folders > Open Files on the file server) and close it"
            }
            Held::TargetOpen => {
                "the server refused to replace it (access denied): either a reader holds it open — NTFS \
                 refuses to replace a file while anything has it open (a web server, antivirus or backup \
                 agent reading it) — or the account may not delete it. Usually a reader lets go within \
                 seconds: run again; if it persists, find and close the program holding it (Computer \
                 Management > Shared Folders > Open Files on the file server), and check that the account \
                 may delete files in that folder (its NTFS ACL)"
            }
        })
    }
}

/// "write web\\index.html": the operation and, when there is one, its path.
fn what(operation: &str, path: &str) -> String {
    if path.is_empty() {
        operation.to_owned()
    } else {
        format!("{operation} {path}")
    }
}

/// How the `smb` crate words a request made on a connection whose worker has stopped.
const WORKER_GONE: [&str; 2] = [
    "Failed to send message to worker",
    "Failed to receive message",
];

/// An I/O error that means the connection is gone (not a refusal, not bad data).
fn is_link_io(io: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        io.kind(),
        K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected
    )
}

/// Who and what, to put names into errors.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    pub server: &'a str,
    pub port: u16,
    pub share: &'a str,
    pub user: &'a str,
    pub timeout: Duration,
    /// Set once a request on this connection found it lost (see [`Context::classify`]).
    pub lost: Option<&'a AtomicBool>,
    /// Set when a request timed out while the connection still answered others.
    pub timed_out: Option<&'a AtomicBool>,
    /// When the connection last received anything.
    pub heard: Option<&'a Heard>,
}

impl Context<'_> {
    /// The error `err` means for `operation` on `path`. A lost link also marks the connection
    /// lost, so that what would be sent next fails at once instead of each waiting out its own
    /// timeout: a reset or a closed connection always, a request that timed out when the
    /// connection has been silent for half the timeout too (a stalled connection answers
    /// nothing; one slow request among answered ones is only slow).
    pub(crate) fn classify(&self, operation: &str, path: &str, err: smb::Error) -> ShareError {
        let e = self.classify_error(operation, path, err);
        let lost = match &e {
            ShareError::ConnectionLost { .. } => true,
            ShareError::Timeout { .. } => self
                .heard
                .is_none_or(|h| h.silent_for() >= self.timeout / 2),
            _ => false,
        };
        if lost && let Some(flag) = self.lost {
            flag.store(true, Ordering::Relaxed);
        }
        if !lost
            && matches!(e, ShareError::Timeout { .. })
            && let Some(flag) = self.timed_out
        {
            flag.store(true, Ordering::Relaxed);
        }
        e
    }

    /// The error a request not sent on a connection already found lost returns.
    pub(crate) fn already_lost(&self, operation: &str, path: &str) -> ShareError {
        self.lost(
            operation,
            path,
            "an earlier request found the connection lost; reconnect".into(),
        )
    }

    fn classify_error(&self, operation: &str, path: &str, err: smb::Error) -> ShareError {
        use smb::Error as E;
        let user = self.user.to_owned();
        match err {
            E::UnexpectedMessageStatus(code) | E::ReceivedErrorMessage(code, _) => match code {
                Status::U32_LOGON_FAILURE => ShareError::LogonFailure { user },
                STATUS_ACCOUNT_DISABLED | STATUS_ACCOUNT_EXPIRED => {
                    ShareError::AccountDisabled { user }
                }
                Status::U32_USER_ACCOUNT_LOCKED_OUT => ShareError::LockedOut { user },
                STATUS_PASSWORD_EXPIRED | STATUS_PASSWORD_MUST_CHANGE => {
                    ShareError::PasswordExpired { user }
                }
                Status::U32_ACCESS_DENIED => ShareError::AccessDenied {
                    user,
                    operation: operation.to_owned(),
                },
                Status::U32_BAD_NETWORK_NAME => ShareError::ShareNotFound {
                    server: self.server.to_owned(),
                    share: self.share.to_owned(),
                },
                Status::U32_OBJECT_NAME_NOT_FOUND | Status::U32_OBJECT_PATH_NOT_FOUND => {
                    ShareError::NotFound {
                        path: path.to_owned(),
                    }
                }
                Status::U32_OBJECT_NAME_COLLISION => ShareError::AlreadyExists {
                    path: path.to_owned(),
                },
                STATUS_SHARING_VIOLATION => ShareError::SharingViolation {
                    operation: operation.to_owned(),
                    path: path.to_owned(),
                    held: Held::ShareMode,
                },
                other => ShareError::Other {
                    operation: what(operation, path),
                    detail: format!(
                        "NT status {other:#010x} ({})",
                        Status::try_display_as_status(other)
                    ),
                },
            },
            E::TransportError(TransportError::Timeout(_)) | E::OperationTimeout(..) => {
                ShareError::Timeout {
                    operation: operation.to_owned(),
                    timeout: self.timeout,
                }
            }
            // The file calls (read, write, flush) wrap the client's error in an io::Error
            // (keeping it, with our patch to the vendored crate): classify what is inside.
            E::IoError(io) if io.get_ref().is_some_and(|inner| inner.is::<smb::Error>()) => {
                match io.into_inner().map(|inner| inner.downcast::<smb::Error>()) {
                    Some(Ok(inner)) => self.classify(operation, path, *inner),
                    _ => ShareError::Other {
                        operation: what(operation, path),
                        detail: "an SMB error that could not be read".into(),
                    },
                }
            }
            E::TransportError(TransportError::IoError(io)) => {
                self.lost(operation, path, io.to_string())
            }
            E::IoError(io) if is_link_io(&io) => self.lost(operation, path, io.to_string()),
            // The connection's worker task has ended (its transport failed): the crate says so
            // only in these words, when a request cannot reach the worker or its answer never
            // comes back (smb 0.12.1, connection/worker/parallel).
            E::MessageProcessingError(m) if WORKER_GONE.iter().any(|w| m.starts_with(w)) => self
                .lost(
                    operation,
                    path,
                    format!("the SMB client's connection ended: {m}"),
                ),
            E::TransportError(TransportError::NotConnected) | E::ConnectionStopped => {
                self.lost(operation, path, "the connection was closed".into())
            }
            E::NegotiationError(detail) => ShareError::Negotiation { detail },
            other => ShareError::Other {
                operation: what(operation, path),
                detail: other.to_string(),
            },
        }
    }

    /// [`Context::classify`] for the set_info of a rename with ReplaceIfExists whose source is
    /// already open for DELETE: access denied there is the target held open ([`Held::TargetOpen`]).
    pub(crate) fn classify_replace(&self, path: &str, err: smb::Error) -> ShareError {
        use smb::Error as E;
        match err {
            E::UnexpectedMessageStatus(Status::U32_ACCESS_DENIED)
            | E::ReceivedErrorMessage(Status::U32_ACCESS_DENIED, _) => {
                ShareError::SharingViolation {
                    operation: "replace".to_owned(),
                    path: path.to_owned(),
                    held: Held::TargetOpen,
                }
            }
            other => self.classify("replace", path, other),
        }
    }

    fn lost(&self, operation: &str, path: &str, detail: String) -> ShareError {
        ShareError::ConnectionLost {
            server: self.server.to_owned(),
            port: self.port,
            detail: format!("during {} ({detail})", what(operation, path)),
        }
    }

    pub(crate) fn unreachable(&self, detail: String) -> ShareError {
        ShareError::Unreachable {
            server: self.server.to_owned(),
            port: self.port,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            server: "fsx.example.test",
            port: 445,
            share: "share",
            user: "svc",
            timeout: Duration::from_secs(5),
            lost: None,
            timed_out: None,
            heard: None,
        }
    }

    #[test]
    fn a_lost_link_marks_the_connection_and_a_refusal_does_not() {
        let flag = AtomicBool::new(false);
        let c = Context {
            lost: Some(&flag),
            ..ctx()
        };
        let refused = c.classify(
            "write",
            "a.txt",
            smb::Error::UnexpectedMessageStatus(Status::U32_ACCESS_DENIED),
        );
        assert!(!refused.is_link_lost() && !flag.load(Ordering::Relaxed));
        let lost = c.classify("write", "a.txt", smb::Error::ConnectionStopped);
        assert!(lost.is_link_lost() && flag.load(Ordering::Relaxed));
        // A timeout marks it only when the connection has been silent for half the timeout:
        // answers that kept coming mean one slow request, not a lost link.
        let timed_out = || {
            smb::Error::OperationTimeout(
                smb::error::TimedOutTask::ReceiveNextMessage,
                Duration::from_secs(5),
            )
        };
        for (ago, marks) in [(Duration::ZERO, false), (Duration::from_secs(3), true)] {
            let (flag, slow) = (AtomicBool::new(false), AtomicBool::new(false));
            let heard = Heard::heard_ago(ago);
            let c = Context {
                lost: Some(&flag),
                timed_out: Some(&slow),
                heard: Some(&heard),
                ..ctx()
            };
            let e = c.classify("write", "a.txt", timed_out());
            assert!(e.is_link_lost(), "{e}");
            assert_eq!(flag.load(Ordering::Relaxed), marks, "heard {ago:?} ago");
            // Not lost, but its credits are gone: noted, so that it is not kept.
            assert_eq!(slow.load(Ordering::Relaxed), !marks, "heard {ago:?} ago");
        }
        let next = c.already_lost("read", "b.txt");
        assert!(next.is_link_lost());
        assert!(next.to_string().contains("read b.txt"), "{next}");
    }

    #[test]
    fn a_connection_that_ended_is_lost_and_a_refusal_is_not() {
        let lost = [
            smb::Error::MessageProcessingError("Failed to send message to worker!".into()),
            smb::Error::MessageProcessingError("Failed to receive message.".into()),
            smb::Error::ConnectionStopped,
            smb::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            // A file call's error wraps the client's (our patch to the vendored crate).
            smb::Error::IoError(std::io::Error::other(smb::Error::ConnectionStopped)),
        ];
        for e in lost {
            let said = e.to_string();
            let classified = ctx().classify("write", "web\\a.html", e);
            assert!(classified.is_link_lost(), "{said}: {classified:?}");
            let text = classified.to_string();
            assert!(
                text.contains("fsx.example.test:445 was lost during write web\\a.html"),
                "{text}"
            );
        }
        let not_lost = [
            smb::Error::MessageProcessingError(
                "Empty message cannot be sent to the server.".into(),
            ),
            smb::Error::IoError(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            smb::Error::UnexpectedMessageStatus(Status::U32_ACCESS_DENIED),
        ];
        for e in not_lost {
            let classified = ctx().classify("write", "a.html", e);
            assert!(!classified.is_link_lost(), "{classified:?}");
        }
    }

    #[test]
    fn access_denied_on_a_replace_is_the_target_held_open() {
        let e = ctx().classify_replace(
            "web\\page.html",
            smb::Error::UnexpectedMessageStatus(Status::U32_ACCESS_DENIED),
        );
        assert!(
            matches!(&e, ShareError::SharingViolation { held: Held::TargetOpen, path, .. } if path == "web\\page.html"),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("holds it open") && text.contains("may not delete it"),
            "{text}"
        );
        assert!(text.contains("Open Files"), "{text}");
    }

    #[test]
    fn a_sharing_violation_on_a_replace_stays_one() {
        let e = ctx().classify_replace(
            "page.html",
            smb::Error::UnexpectedMessageStatus(STATUS_SHARING_VIOLATION),
        );
        assert!(
            matches!(
                e,
                ShareError::SharingViolation {
                    held: Held::ShareMode,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn access_denied_elsewhere_is_a_permission() {
        let e = ctx().classify(
            "rename",
            "page.html",
            smb::Error::UnexpectedMessageStatus(Status::U32_ACCESS_DENIED),
        );
        assert!(matches!(e, ShareError::AccessDenied { .. }), "{e:?}");
        let e = ctx().classify_replace(
            "page.html",
            smb::Error::UnexpectedMessageStatus(Status::U32_OBJECT_PATH_NOT_FOUND),
        );
        assert!(matches!(e, ShareError::NotFound { .. }), "{e:?}");
    }
}
