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
    #[error(
        "appcmd could not hide {segment} in {site}'s request filtering (exit {code:?}): {detail}. The entrypoint stops rather than serve the share's bookkeeping folder"
    )]
    HiddenSegment {
        segment: String,
        site: String,
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
