//! Make the mappings and the IIS virtual directories exist, idempotently.

use crate::actions::{self, MappingOutcome, ScriptError, VdirDecision};
use crate::config::Config;
use crate::preflight;
use crate::supervise::{self, Output, RunError};
use secrets::Secret;
use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("mapping {local} to {remote} failed: {failure}")]
    Mapping {
        local: String,
        remote: String,
        failure: MappingFailure,
    },
    #[error(
        "PowerShell mapped {local} but answered {answer:?} instead of kept, created or replaced"
    )]
    Unexpected { local: String, answer: String },
    #[error(
        "appcmd could not hide {segment} in {site}'s request filtering (exit {code:?}): {detail}. The entrypoint stops rather than serve the share's bookkeeping folder"
    )]
    HiddenSegment {
        segment: String,
        site: String,
        code: Option<i32>,
        detail: String,
    },
    #[error(
        "appcmd could not turn caching off for {path} (exit {code:?}): {detail}. The entrypoint stops rather than let IIS answer the health check from a cache"
    )]
    NoCache {
        path: String,
        code: Option<i32>,
        detail: String,
    },
    #[error("appcmd could not {action} the virtual directory {id} (exit {code:?}): {detail}")]
    Vdir {
        action: &'static str,
        id: String,
        code: Option<i32>,
        detail: String,
    },
}

impl MountError {
    /// The failure's code in the doctor's vocabulary, when the error is one Windows explained.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Mapping { failure, .. } => Some(failure.code),
            _ => None,
        }
    }
}

/// Why New-SmbGlobalMapping (or the script around it) failed, as far as PowerShell said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingFailure {
    /// [`preflight::windows_failure`]'s code, or [`preflight::MAPPING_FAILED`].
    pub code: &'static str,
    pub fix: &'static str,
    /// PowerShell's exit code.
    pub exit: Option<i32>,
    pub win32: Option<u32>,
    pub hresult: Option<u32>,
    pub category: Option<String>,
    /// Which part of the script failed.
    pub step: Option<String>,
    /// Windows' message, or what PowerShell printed when it said nothing the entrypoint reads.
    pub detail: String,
}

impl MappingFailure {
    /// Read a failed PowerShell's output: the script's plain-text report first; else the error
    /// records of the CLIXML the host writes for an error the script could not catch; else the
    /// last lines it printed. Everything is redacted once more after decoding: CLIXML escapes
    /// `<`, `&` and control characters, so a password holding one is not in the raw stream as
    /// itself, and the redaction `supervise::run` applied to the raw text cannot have found it.
    /// Windows' 1312 ("a specified logon session does not exist") means a user name without its
    /// domain only when the name has none; a user name from SSM is not checked at start (one from
    /// the environment is), so the code depends on the name actually used. With a qualified
    /// name 1312 has other causes (csi-driver-smb#161): the generic code, with what to look at.
    pub fn for_username(mut self, username: &str) -> Self {
        if self.code == preflight::USERNAME_NOT_QUALIFIED && username.contains(['\\', '@']) {
            self.code = preflight::MAPPING_FAILED;
            self.fix = "Windows found no logon session for the credential although the user name names its domain: compare the password in SSM with AD, and check that the file server and the domain accept an NTLM logon from a computer outside the domain";
        }
        self
    }

    pub fn from_output(out: &Output, password: &Secret) -> Self {
        let parsed =
            ScriptError::parse(&out.stderr).or_else(|| ScriptError::from_clixml(&out.stderr));
        let known = parsed
            .as_ref()
            .and_then(|e| e.win32)
            .and_then(preflight::windows_failure);
        let (code, fix) = known.map_or(
            (preflight::MAPPING_FAILED, preflight::MAPPING_FAILED_FIX),
            |k| (k.code, k.fix),
        );
        let redact = |text: &str| supervise::redact(text, password);
        match parsed {
            Some(e) => Self {
                code,
                fix,
                exit: out.code,
                win32: e.win32,
                hresult: e.hresult,
                category: e.category.as_deref().map(redact),
                step: e.step.as_deref().map(redact),
                detail: redact(if e.message.is_empty() {
                    "PowerShell gave no message"
                } else {
                    &e.message
                }),
            },
            None => Self {
                code,
                fix,
                exit: out.code,
                win32: None,
                hresult: None,
                category: None,
                step: None,
                detail: redact(&out.tail()),
            },
        }
    }
}

impl fmt::Display for MappingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} (PowerShell exit {:?}",
            self.code, self.detail, self.exit
        )?;
        if let Some(win32) = self.win32 {
            write!(f, ", Win32 error {win32}")?;
        }
        if let Some(hresult) = self.hresult {
            write!(f, ", HRESULT 0x{hresult:08X}")?;
        }
        if let Some(step) = &self.step {
            write!(f, ", step {step}")?;
        }
        write!(f, "). Fix: {}", self.fix)
    }
}

/// How long one PowerShell or appcmd may take. New-SmbGlobalMapping has its own SMB timeouts;
/// this only stops a wedged child from holding the task forever.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn map_all(
    config: &Config,
    username: &str,
    password: &Secret,
    env: &[(OsString, OsString)],
) -> Result<Vec<MappingOutcome>, MountError> {
    let mut outcomes = Vec::new();
    for mapping in &config.mappings {
        let invocation = actions::map_share(config, mapping, username);
        let out = supervise::run(&invocation, env, password, COMMAND_TIMEOUT).await?;
        if !out.success() {
            let failure = MappingFailure::from_output(&out, password).for_username(username);
            let (code, fix, win32, step) = (
                failure.code,
                failure.fix,
                failure.win32,
                failure.step.clone(),
            );
            let hresult = failure.hresult.map(|h| format!("0x{h:08X}"));
            let error = MountError::Mapping {
                local: mapping.local(),
                remote: mapping.remote.clone(),
                failure,
            };
            // The line an alarm or a person reads: the code is the README's, like the
            // preflight's lines.
            tracing::error!(
                drive = %mapping.local(),
                remote = %mapping.remote,
                code,
                win32,
                hresult,
                step,
                fix,
                error = %error,
                "share mapping failed"
            );
            return Err(error);
        }
        let outcome = MappingOutcome::parse(&out.stdout).ok_or_else(|| MountError::Unexpected {
            local: mapping.local(),
            answer: out.tail(),
        })?;
        tracing::info!(drive = %mapping.local(), remote = %mapping.remote, outcome = ?outcome, "share mapped");
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

pub async fn virtual_directories(
    config: &Config,
    password: &Secret,
    env: &[(OsString, OsString)],
) -> Result<Vec<VdirDecision>, MountError> {
    let mut decisions = Vec::new();
    if config.vdirs.is_empty() {
        return Ok(decisions);
    }
    // Before any directory points at the share: from the first request on, the bookkeeping
    // folder is not served, whichever folder of the share a directory serves.
    hide_bookkeeping(config, password, env).await?;
    for vdir in &config.vdirs {
        let id = actions::vdir_id(&config.site, vdir);
        let query = supervise::run(
            &actions::vdir_query(config, vdir),
            env,
            password,
            COMMAND_TIMEOUT,
        )
        .await?;
        let decision = actions::vdir_decide(query.code, &query.stdout, &vdir.physical_path);
        let (action, invocation) = match decision {
            VdirDecision::Keep => ("keep", None),
            VdirDecision::Add => ("add", Some(actions::vdir_add(config, vdir))),
            VdirDecision::Set => ("set", Some(actions::vdir_set(config, vdir))),
        };
        if let Some(invocation) = invocation {
            let out = supervise::run(&invocation, env, password, COMMAND_TIMEOUT).await?;
            if !out.success() {
                return Err(MountError::Vdir {
                    action,
                    id,
                    code: out.code,
                    detail: out.tail(),
                });
            }
        }
        tracing::info!(id = %id, physical_path = %vdir.physical_path, decision = ?decision, "virtual directory");
        decisions.push(decision);
    }
    Ok(decisions)
}

/// Turn caching off for each of `SMB_IIS_NO_CACHE`'s URL paths ([`actions::no_cache_set`]).
/// After [`virtual_directories`]: the paths are under them (the health probe under /content).
pub async fn uncached(
    config: &Config,
    password: &Secret,
    env: &[(OsString, OsString)],
) -> Result<(), MountError> {
    for path in &config.no_cache {
        let out = supervise::run(
            &actions::no_cache_set(config, path),
            env,
            password,
            COMMAND_TIMEOUT,
        )
        .await?;
        if !out.success() {
            return Err(MountError::NoCache {
                path: format!("{}{path}", config.site),
                code: out.code,
                detail: out.tail(),
            });
        }
        tracing::info!(path = %path, "no cache");
    }
    Ok(())
}

/// Make the site's request filtering hide [`actions::HIDDEN_SEGMENTS`], idempotently.
async fn hide_bookkeeping(
    config: &Config,
    password: &Secret,
    env: &[(OsString, OsString)],
) -> Result<(), MountError> {
    let query = supervise::run(
        &actions::hidden_segment_query(config),
        env,
        password,
        COMMAND_TIMEOUT,
    )
    .await?;
    let missing = actions::hidden_segments_missing(query.code, &query.stdout);
    if !missing.is_empty() {
        let out = supervise::run(
            &actions::hidden_segment_add(config, &missing),
            env,
            password,
            COMMAND_TIMEOUT,
        )
        .await?;
        if !out.success() {
            return Err(MountError::HiddenSegment {
                segment: missing.join(", "),
                site: config.site.clone(),
                code: out.code,
                detail: out.tail(),
            });
        }
    }
    tracing::info!(
        site = %config.site,
        segments = %actions::HIDDEN_SEGMENTS.join(", "),
        added = %missing.join(", "),
        decision = if missing.is_empty() { "keep" } else { "add" },
        "hidden segment"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stderr: &str) -> Output {
        Output {
            code: Some(1),
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    fn secret(s: &str) -> Secret {
        Secret::from(s.to_owned())
    }

    #[test]
    fn error_1312_means_a_bare_user_name_only_for_a_bare_user_name() {
        let out = failed(
            "fargate-smb-error: step=map win32=1312 hresult=0x80070520 category=NotSpecified\r\nA specified logon session does not exist. It may already have been terminated.\r\n",
        );
        let bare = MappingFailure::from_output(&out, &secret("Pw-1")).for_username("svc-web");
        assert_eq!(bare.code, "username_not_qualified");
        assert!(bare.fix.contains(r"DOMAIN\user"), "{}", bare.fix);
        for name in [r"EXAMPLE\svc-web", "svc-web@example.com"] {
            let f = MappingFailure::from_output(&out, &secret("Pw-1")).for_username(name);
            assert_eq!(f.code, "mapping_failed", "{name}");
            assert!(f.fix.contains("names its domain"), "{}", f.fix);
        }
        // Other codes do not depend on the name.
        let other = failed("fargate-smb-error: step=map win32=1326 hresult=- category=-\r\nx\r\n");
        let f = MappingFailure::from_output(&other, &secret("Pw-1")).for_username("svc-web");
        assert_eq!(f.code, "logon_failure");
    }

    #[test]
    fn the_script_s_report_names_the_code_and_the_fix() {
        let out = failed(
            "fargate-smb-error: step=map win32=1219 hresult=0x80131500 category=NotSpecified\r\nMultiple connections to a server or shared resource by the same user, using more than one user name, are not allowed. Disconnect all previous connections to the server or shared resource and try again.\r\n",
        );
        let f = MappingFailure::from_output(&out, &secret("Pw-1"));
        assert_eq!(f.code, "credential_conflict");
        assert_eq!(f.win32, Some(1219));
        assert_eq!(f.step.as_deref(), Some("map"));
        let e = MountError::Mapping {
            local: "G:".into(),
            remote: r"\\fs\share".into(),
            failure: f,
        };
        assert_eq!(e.code(), Some("credential_conflict"));
        let text = e.to_string();
        assert!(
            text.starts_with(
                r"mapping G: to \\fs\share failed: [credential_conflict] Multiple connections"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "(PowerShell exit Some(1), Win32 error 1219, HRESULT 0x80131500, step map)"
            ),
            "{text}"
        );
        assert!(
            text.contains("Fix: Windows allows one user name per server"),
            "{text}"
        );
    }

    #[test]
    fn an_error_the_script_could_not_catch_is_read_from_clixml() {
        let out = failed(concat!(
            "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">",
            "<S S=\"Error\">New-SmbGlobalMapping : The user name or password is incorrect. _x000D__x000A_</S>",
            "<S S=\"Error\">At line:1 char:1_x000D__x000A_</S>",
            "<S S=\"Error\">    + CategoryInfo          : AuthenticationError: (MSFT_SmbGlobalMapping:ROOT/Microsoft/...mbGlobalMapping) [New-SmbGlobalMapping], CimException_x000D__x000A_</S>",
            "<S S=\"Error\">    + FullyQualifiedErrorId : Windows System Error 1326,New-SmbGlobalMapping_x000D__x000A_</S>",
            "</Objs>"
        ));
        let f = MappingFailure::from_output(&out, &secret("Pw-1"));
        assert_eq!(f.code, "logon_failure");
        assert_eq!(f.win32, Some(1326));
        assert_eq!(f.category.as_deref(), Some("AuthenticationError"));
        assert_eq!(
            f.detail,
            "New-SmbGlobalMapping : The user name or password is incorrect."
        );
        assert!(!f.to_string().contains("CLIXML"));
    }

    #[test]
    fn an_unknown_error_keeps_windows_message_under_the_generic_code() {
        let out = failed(
            "fargate-smb-error: step=map win32=1236 hresult=0x80131500 category=NotSpecified\nThe network connection was aborted by the local system.\n",
        );
        let f = MappingFailure::from_output(&out, &secret("Pw-1"));
        assert_eq!(f.code, preflight::MAPPING_FAILED);
        assert_eq!(f.fix, preflight::MAPPING_FAILED_FIX);
        assert_eq!(f.win32, Some(1236));
        assert_eq!(
            f.detail,
            "The network connection was aborted by the local system."
        );
        // Output PowerShell did not format at all: its last lines, as before.
        let f = MappingFailure::from_output(
            &failed(
                "ConvertTo-SecureString : Cannot bind argument to parameter 'String' because it is null.\n",
            ),
            &secret("Pw-1"),
        );
        assert_eq!(f.code, preflight::MAPPING_FAILED);
        assert_eq!(f.win32, None);
        assert!(f.detail.starts_with("ConvertTo-SecureString : Cannot bind"));
    }

    #[test]
    fn the_password_stays_out_of_a_decoded_message() {
        // As `supervise::run` hands it over: redacted where the password appears as itself.
        let password = "S3cret<&>_x0041_-Pw";
        let raw = concat!(
            "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">",
            "<S S=\"Error\">New-SmbGlobalMapping : bad password S3cret&lt;&amp;&gt;_x005F_x0041_-Pw _x000D__x000A_</S>",
            "<S S=\"Error\">    + FullyQualifiedErrorId : Windows System Error 86,New-SmbGlobalMapping_x000D__x000A_</S>",
            "</Objs>"
        );
        let secret = secret(password);
        let out = failed(&supervise::redact(raw, &secret));
        assert!(
            out.stderr.contains("S3cret&lt;"),
            "the raw redaction cannot see it"
        );
        let f = MappingFailure::from_output(&out, &secret);
        assert_eq!(f.code, "logon_failure");
        assert_eq!(f.detail, "New-SmbGlobalMapping : bad password ***");
        assert!(!f.to_string().contains("S3cret"));

        // The plain-text report is redacted too, message and fields.
        let out = failed(&format!(
            "fargate-smb-error: step={password} win32=1326 hresult=- category=-\nlogon of x with {password} failed\n"
        ));
        let f = MappingFailure::from_output(&out, &secret);
        let text = f.to_string();
        assert!(!text.contains("S3cret"), "{text}");
    }
}
