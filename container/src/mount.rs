//! Make the mappings and the IIS virtual directories exist, idempotently.

use crate::actions::{self, MappingOutcome, VdirDecision};
use crate::config::Config;
use crate::supervise::{self, RunError};
use secrets::Secret;
use std::ffi::OsString;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(
        "mapping {local} to {remote} failed (PowerShell exit {code:?}): {detail}. The preflight passed, so look at SMB client policy in the image (RequirePrivacy needs SMB 3 encryption on the server) and at the message above"
    )]
    Mapping {
        local: String,
        remote: String,
        code: Option<i32>,
        detail: String,
    },
    #[error(
        "PowerShell mapped {local} but answered {answer:?} instead of kept, created or replaced"
    )]
    Unexpected { local: String, answer: String },
    #[error("appcmd could not {action} the virtual directory {id} (exit {code:?}): {detail}")]
    Vdir {
        action: &'static str,
        id: String,
        code: Option<i32>,
        detail: String,
    },
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
            return Err(MountError::Mapping {
                local: mapping.local(),
                remote: mapping.remote.clone(),
                code: out.code,
                detail: out.tail(),
            });
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
