//! Applying events to the share, and reconciling the folder with the prefix.
//!
//! Per event: map the key (the rules of `Custom::WebContent`), claim it in the state store
//! (only a newer sequencer wins), copy the object's exact version (`If-Match` on the event's
//! ETag) to a temporary name, re-check the claim, rename over the final name, mark done.
//! Deletes re-check the claim and remove the file (gone already is fine).

use crate::config::Config;
use crate::events::{Change, ObjectEvent};
use crate::state::{Claim, StateError, StateStore};
use admin_credential::AdminCredentials;
use content_copy::{FileError, S3Source, SourceError, Target, Work, manifest::is_reserved};
use content_paths::{Mapped, fold};
use futures_util::StreamExt;
use serde::Serialize;
use smb_share::{Share, ShareError};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Bound on connecting and on each SMB request.
const SMB_TIMEOUT: Duration = Duration::from_secs(20);
/// How many names a report lists per category (the log has them all).
const LISTED: usize = 50;

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    Deleted,
    /// The same event was applied before.
    Duplicate,
    /// A newer event for the key was applied (or is in this batch).
    Older,
    /// The object changed or was deleted after this event: the newer event that S3 sends for
    /// that change applies it.
    Superseded,
    /// Another bucket, outside the prefix, a folder marker.
    Ignored(String),
    /// The key cannot be a file on the share; retrying would not help.
    Rejected {
        rule: &'static str,
        reason: String,
    },
    /// Retry: the claim stays `applying`, so a redelivery of this event claims it again.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Target(#[from] share_target::TargetError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("could not create the target folder {path}: {source}")]
    Folder { path: String, source: ShareError },
    #[error("could not list {path} on the share: {source}")]
    List { path: String, source: ShareError },
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Named {
    pub key: String,
    pub reason: String,
}

/// Counts for a batch of events, with the rejected and failed keys by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventReport {
    pub copied: usize,
    pub deleted: usize,
    pub duplicates: usize,
    pub older: usize,
    pub superseded: usize,
    pub ignored: usize,
    pub rejected: Vec<Named>,
    pub failed: Vec<Named>,
}

impl EventReport {
    pub fn add(&mut self, key: &str, outcome: &Outcome) {
        match outcome {
            Outcome::Copied => self.copied += 1,
            Outcome::Deleted => self.deleted += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Older => self.older += 1,
            Outcome::Superseded => self.superseded += 1,
            Outcome::Ignored(_) => self.ignored += 1,
            Outcome::Rejected { reason, .. } => {
                if self.rejected.len() < LISTED {
                    self.rejected.push(Named {
                        key: key.to_owned(),
                        reason: reason.clone(),
                    });
                }
            }
            Outcome::Failed(error) => {
                if self.failed.len() < LISTED {
                    self.failed.push(Named {
                        key: key.to_owned(),
                        reason: error.clone(),
                    });
                }
            }
        }
    }
}

/// What reconcile fixed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// Objects whose file was missing or different (first names).
    pub copied: Vec<String>,
    pub copied_count: usize,
    /// Files in the folder with no object under the prefix (first names).
    pub removed: Vec<String>,
    pub removed_count: usize,
    pub unchanged: usize,
    pub rejected: Vec<Named>,
    pub failed: Vec<Named>,
    pub folders_removed: usize,
}

/// The AWS clients, built once per container, and the configuration.
#[derive(Debug)]
pub struct Syncer {
    pub config: Config,
    s3: S3Source,
    admin: AdminCredentials,
    state: StateStore,
    /// The SMB session of the previous invocation: a Lambda container handles one invocation at
    /// a time and is reused, and a logon costs more than the rest of a small event's work.
    /// Probed with one request before reuse; a session the server dropped is replaced.
    session: tokio::sync::Mutex<Option<Share>>,
}

/// Where an accepted event goes.
struct Planned<'a> {
    event: &'a ObjectEvent,
    relative: String,
    path: String,
}

impl Syncer {
    pub fn new(sdk: &aws_config::SdkConfig, config: Config) -> Self {
        Self {
            s3: S3Source::new(sdk),
            admin: AdminCredentials::new(sdk),
            state: StateStore::new(sdk, config.state_table.clone()),
            config,
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached session if it still answers, else a new one.
    async fn session(&self) -> Result<Share, SyncError> {
        let cached = self.session.lock().await.take();
        if let Some(share) = cached {
            match share.stat(&self.config.target.folder).await {
                Ok(_) => return Ok(share),
                Err(ShareError::NotFound { .. }) if !self.config.target.folder.is_empty() => {
                    return Ok(share);
                }
                Err(e) => {
                    tracing::info!(error = %e, "the previous SMB session no longer answers; reconnecting");
                    share.close().await;
                }
            }
        }
        self.connect().await
    }

    pub async fn connect(&self) -> Result<Share, SyncError> {
        Ok(self.config.target.connect(&self.admin, SMB_TIMEOUT).await?)
    }

    fn target<'a>(&'a self, share: &'a Share) -> Target<'a> {
        Target {
            share,
            folder: &self.config.target.folder,
        }
    }

    /// Map the key; `Err` is the outcome when there is nothing to apply.
    fn plan<'a>(&self, event: &'a ObjectEvent) -> Result<Planned<'a>, Outcome> {
        if event.bucket != self.config.bucket {
            return Err(Outcome::Ignored(format!(
                "the bucket {} is not {}",
                event.bucket, self.config.bucket
            )));
        }
        let Some(relative) = content_paths::relative_key(&event.key, &self.config.prefix) else {
            return Err(Outcome::Ignored(format!(
                "outside the prefix {:?}",
                self.config.prefix
            )));
        };
        let path = match content_paths::share_path(relative) {
            Ok(Mapped::File(path)) => path,
            Ok(Mapped::FolderMarker) => return Err(Outcome::Ignored("a folder marker".into())),
            Err(rule) => {
                return Err(Outcome::Rejected {
                    rule: rule.name(),
                    reason: rule.to_string(),
                });
            }
        };
        if is_reserved(&path) {
            return Err(Outcome::Rejected {
                rule: "reserved-by-fargate-smb",
                reason: format!(
                    "{path:?} is reserved for fargate-smb's own files (the .fargate-smb folder, the \
                     old manifest name, temporary files)"
                ),
            });
        }
        Ok(Planned {
            event,
            relative: relative.to_owned(),
            path,
        })
    }

    /// Apply a batch of events; the outcomes are in the order of `events`. Within the batch only
    /// the newest event per key is applied (the others are older or duplicates of it); keys are
    /// applied `parallelism` at a time over one SMB session, opened only if something is to be
    /// applied.
    pub async fn apply_all(&self, events: &[ObjectEvent]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut planned: HashMap<usize, Planned<'_>> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            match self.plan(event) {
                Err(outcome) => outcomes[i] = Some(outcome),
                Ok(p) => {
                    planned.insert(i, p);
                }
            }
        }
        let mut candidates: Vec<usize> = planned.keys().copied().collect();
        candidates.sort_unstable();
        for (i, outcome) in newest_per_key(events, &candidates) {
            outcomes[i] = Some(outcome);
            planned.remove(&i);
        }
        if !planned.is_empty() {
            match self.session().await {
                Ok(share) => {
                    let work: Vec<(usize, Planned<'_>)> = planned.into_iter().collect();
                    let share_ref = &share;
                    let results: Vec<(usize, Outcome)> = futures_util::stream::iter(
                        work.iter()
                            .map(|(i, p)| async move { (*i, self.apply(share_ref, p).await) }),
                    )
                    .buffer_unordered(self.config.parallelism)
                    .collect()
                    .await;
                    for (i, outcome) in results {
                        outcomes[i] = Some(outcome);
                    }
                    *self.session.lock().await = Some(share);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not open the share");
                    for (i, _) in planned {
                        outcomes[i] = Some(Outcome::Failed(e.to_string()));
                    }
                }
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed("not processed".into())))
            .collect();
        for (event, outcome) in events.iter().zip(&outcomes) {
            log(event, outcome);
        }
        outcomes
    }

    async fn apply(&self, share: &Share, p: &Planned<'_>) -> Outcome {
        let scope = self.config.scope();
        let event = p.event;
        match self.state.claim(&scope, event).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Duplicate) => return Outcome::Duplicate,
            Ok(Claim::Older { .. }) => return Outcome::Older,
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        let target = self.target(share);
        let applied = match &event.change {
            Change::Put { etag, size } => {
                let work = Work {
                    key: event.key.clone(),
                    relative: p.relative.clone(),
                    path: p.path.clone(),
                    size: *size,
                    etag: quoted(etag),
                };
                let gate = || async {
                    match self
                        .state
                        .still_claimed(&scope, &event.key, &event.sequencer)
                        .await
                    {
                        Ok(mine) => mine,
                        Err(e) => {
                            tracing::warn!(key = %event.key, error = %e, "could not re-check the claim; not replacing the file");
                            false
                        }
                    }
                };
                match copy_into_folders(&self.s3, &self.config.bucket, target, &work, gate).await {
                    Ok(true) => Outcome::Copied,
                    Ok(false) => return Outcome::Older,
                    Err(FileError::Vanished { .. })
                    | Err(FileError::Fetch {
                        source: SourceError::Changed { .. } | SourceError::Vanished,
                        ..
                    }) => Outcome::Superseded,
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
            }
            Change::Delete => {
                match self
                    .state
                    .still_claimed(&scope, &event.key, &event.sequencer)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Older,
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
                match content_copy::remove_file(target, &p.path).await {
                    Ok(()) => Outcome::Deleted,
                    Err(e) => return Outcome::Failed(format!("removing {} failed: {e}", p.path)),
                }
            }
        };
        match self.state.done(&scope, &event.key, &event.sequencer).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                key = %event.key,
                sequencer = %event.sequencer,
                "a newer event took the key over while this one was applied; reconcile repairs the file if this one landed last"
            ),
            Err(e) => {
                tracing::warn!(key = %event.key, error = %e, "could not mark the event done; a redelivery repeats it")
            }
        }
        applied
    }

    /// Make the folder equal to the prefix: copy what is missing or different, remove files with
    /// no object (never fargate-smb's own: see [`is_reserved`]), and report what was fixed.
    pub async fn reconcile(&self) -> Result<ReconcileReport, SyncError> {
        let share = self.connect().await?;
        let result = self.reconcile_on(&share).await;
        share.close().await;
        result
    }

    async fn reconcile_on(&self, share: &Share) -> Result<ReconcileReport, SyncError> {
        let c = &self.config;
        let target = self.target(share);
        if !c.target.folder.is_empty() {
            share
                .create_dir_all(&c.target.folder)
                .await
                .map_err(|source| SyncError::Folder {
                    path: c.target.folder.clone(),
                    source,
                })?;
        }
        let objects = self.s3.list(&c.bucket, &c.prefix).await?;
        let plan = content_copy::plan::plan(
            &objects,
            &c.prefix,
            &content_copy::Manifest::default(),
            false,
        );
        let (files, folders) = walk(target).await?;
        let states = self.state.all(&c.scope()).await?;
        let mut report = ReconcileReport {
            rejected: plan
                .rejected
                .iter()
                .map(|r| Named {
                    key: r.key.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            ..ReconcileReport::default()
        };
        for r in &plan.rejected {
            tracing::warn!(key = %r.key, rule = r.rule, reason = %r.reason, "key rejected");
        }
        let wanted: BTreeSet<String> = plan.copy.iter().map(|w| fold(&w.path)).collect();
        let mut to_copy = Vec::new();
        for w in &plan.copy {
            let state = states.get(&w.key);
            let same = files
                .get(&fold(&w.path))
                .is_some_and(|&size| size == w.size)
                && state.is_some_and(|s| {
                    s.done && s.change == "put" && unquoted(&s.etag) == unquoted(&w.etag)
                });
            if same {
                report.unchanged += 1;
            } else {
                to_copy.push((w, state.and_then(|s| s.sequencer.clone())));
            }
        }
        // Removals first: a stray file may stand where a wanted file needs a folder.
        let extra: Vec<&String> = files
            .keys()
            .filter(|folded| !wanted.contains(*folded))
            .collect();
        let names: HashMap<&String, &String> = folders.1.iter().map(|(f, n)| (f, n)).collect();
        let removals: Vec<(String, Result<(), ShareError>)> =
            futures_util::stream::iter(extra.into_iter().map(|folded| {
                let name = names
                    .get(folded)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| folded.clone());
                async move {
                    let r = content_copy::remove_file(target, &name).await;
                    (name, r)
                }
            }))
            .buffer_unordered(c.parallelism)
            .collect()
            .await;
        for (path, r) in removals {
            match r {
                Ok(()) => {
                    tracing::info!(path = %path, "reconcile removed a file with no object");
                    report.removed_count += 1;
                    if report.removed.len() < LISTED {
                        report.removed.push(path.replace('\\', "/"));
                    }
                }
                Err(e) => report.failed.push(Named {
                    key: path,
                    reason: format!("could not remove it: {e}"),
                }),
            }
        }
        let scope = c.scope();
        let results: Vec<(&Work, Result<bool, String>)> =
            futures_util::stream::iter(to_copy.iter().map(|(w, seen)| {
                let scope = &scope;
                async move {
                    let gate = || async {
                        // An event applied meanwhile owns the file now.
                        matches!(self.state.get(scope, &w.key).await,
                                 Ok(s) if s.as_ref().and_then(|s| s.sequencer.as_deref()) == seen.as_deref())
                    };
                    let r = match copy_into_folders(&self.s3, &c.bucket, target, w, gate).await {
                        Ok(true) => match self.state.reconciled(scope, &w.key, &w.etag, seen.as_deref()).await {
                            Ok(_) => Ok(true),
                            Err(e) => Err(e.to_string()),
                        },
                        Ok(false) => Ok(false),
                        Err(FileError::Vanished { .. })
                        | Err(FileError::Fetch {
                            source: SourceError::Changed { .. } | SourceError::Vanished,
                            ..
                        }) => Ok(false),
                        Err(e) => Err(e.to_string()),
                    };
                    (*w, r)
                }
            }))
            .buffer_unordered(c.parallelism)
            .collect()
            .await;
        for (w, r) in results {
            match r {
                Ok(true) => {
                    tracing::info!(key = %w.key, path = %w.path, "reconcile copied");
                    report.copied_count += 1;
                    if report.copied.len() < LISTED {
                        report.copied.push(w.key.clone());
                    }
                }
                Ok(false) => report.unchanged += 1,
                Err(error) => {
                    tracing::warn!(key = %w.key, error = %error, "reconcile could not copy");
                    report.failed.push(Named {
                        key: w.key.clone(),
                        reason: error,
                    });
                }
            }
        }
        // Folders no wanted file needs, deepest first; a folder still holding anything (a
        // temporary file of a copy in flight) refuses, and stays.
        let needed: BTreeSet<String> = plan
            .copy
            .iter()
            .flat_map(|w| ancestors(&fold(&w.path)))
            .collect();
        let mut stale: Vec<&String> = folders
            .0
            .iter()
            .filter(|f| !needed.contains(&fold(f)))
            .collect();
        stale.sort_by_key(|f| std::cmp::Reverse(f.matches('\\').count()));
        for folder in stale {
            if share.remove(&target.path(folder)).await.is_ok() {
                report.folders_removed += 1;
            }
        }
        tracing::info!(
            copied = report.copied_count,
            removed = report.removed_count,
            unchanged = report.unchanged,
            rejected = report.rejected.len(),
            failed = report.failed.len(),
            "reconcile finished"
        );
        Ok(report)
    }
}

/// Within one batch only the newest event per key is applied. Returns the events (indexes among
/// `candidates`) that are not: `Duplicate` of the kept one (same sequencer) or `Older`.
fn newest_per_key(events: &[ObjectEvent], candidates: &[usize]) -> Vec<(usize, Outcome)> {
    let mut newest: HashMap<&str, usize> = HashMap::new();
    let mut skipped = Vec::new();
    for &i in candidates {
        let event = &events[i];
        match newest.get(event.key.as_str()).copied() {
            Some(j) if events[j].sequencer >= event.sequencer => {
                let outcome = if events[j].sequencer == event.sequencer {
                    Outcome::Duplicate
                } else {
                    Outcome::Older
                };
                skipped.push((i, outcome));
            }
            Some(j) => {
                skipped.push((j, Outcome::Older));
                newest.insert(&event.key, i);
            }
            None => {
                newest.insert(&event.key, i);
            }
        }
    }
    skipped
}

/// Copy, creating the file's folders when the share says they are missing (the first file of a
/// new folder pays for it; every other file goes straight to its write).
async fn copy_into_folders<C, F>(
    s3: &S3Source,
    bucket: &str,
    target: Target<'_>,
    work: &Work,
    commit: C,
) -> Result<bool, FileError>
where
    C: Fn() -> F,
    F: std::future::Future<Output = bool>,
{
    match content_copy::copy_file_if(s3, bucket, target, work, &commit).await {
        Err(FileError::Write {
            source: ShareError::NotFound { .. },
            path,
        }) => {
            let parent = content_paths::parent(&work.path);
            if parent.is_empty() && target.folder.is_empty() {
                return Err(FileError::Write {
                    path,
                    source: ShareError::NotFound {
                        path: String::new(),
                    },
                });
            }
            target
                .share
                .create_dir_all(&target.path(parent))
                .await
                .map_err(|source| FileError::Write {
                    path: path.clone(),
                    source,
                })?;
            content_copy::copy_file_if(s3, bucket, target, work, &commit).await
        }
        other => other,
    }
}

/// Every file below the target folder (folded path → size), and the folders (as named) with a
/// folded → real name map for the files. fargate-smb's own files are left out, and so is the
/// `.fargate-smb` folder with all below it: with the folder at the share root, that holds
/// ShareAcl's records and WebContent's manifests, which reconcile must neither remove nor copy
/// over.
type Walk = (HashMap<String, u64>, (Vec<String>, Vec<(String, String)>));

async fn walk(target: Target<'_>) -> Result<Walk, SyncError> {
    let mut files = HashMap::new();
    let mut names = Vec::new();
    let mut folders = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let listing = target
            .share
            .list(&target.path(&dir))
            .await
            .map_err(|source| SyncError::List {
                path: target.path(&dir),
                source,
            })?;
        for entry in listing {
            let path = content_paths::join(&dir, &entry.name);
            if is_reserved(&path) {
                continue;
            }
            if entry.is_dir {
                folders.push(path.clone());
                pending.push(path);
            } else {
                files.insert(fold(&path), entry.size);
                names.push((fold(&path), path));
            }
        }
    }
    Ok((files, (folders, names)))
}

fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = content_paths::parent(path);
    while !p.is_empty() {
        out.push(p.to_owned());
        p = content_paths::parent(p);
    }
    out
}

fn quoted(etag: &str) -> String {
    if etag.is_empty() || etag.starts_with('"') {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn log(event: &ObjectEvent, outcome: &Outcome) {
    let (key, seq, change) = (&event.key, &event.sequencer, event.change.kind());
    match outcome {
        Outcome::Rejected { rule, reason } => {
            tracing::warn!(key = %key, rule = *rule, reason = %reason, "key rejected")
        }
        Outcome::Failed(error) => {
            tracing::warn!(key = %key, sequencer = %seq, change, error = %error, "event failed; it will be retried")
        }
        Outcome::Ignored(why) => tracing::info!(key = %key, reason = %why, "event ignored"),
        other => {
            tracing::debug!(key = %key, sequencer = %seq, change, outcome = ?other, "event")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, seq: &str) -> ObjectEvent {
        ObjectEvent {
            bucket: "b".into(),
            key: key.into(),
            sequencer: crate::events::Sequencer::parse(seq).unwrap(),
            change: Change::Delete,
        }
    }

    #[test]
    fn a_batch_applies_only_the_newest_event_per_key() {
        let events = vec![
            ev("a", "05"),
            ev("b", "01"),
            ev("a", "0A"),
            ev("a", "0A"),
            ev("a", "07"),
            ev("c", "FF"),
            ev("b", "01"),
        ];
        let mut skipped = newest_per_key(&events, &[0, 1, 2, 3, 4, 6]);
        skipped.sort_by_key(|(i, _)| *i);
        assert_eq!(
            skipped,
            vec![
                (0, Outcome::Older),
                (3, Outcome::Duplicate),
                (4, Outcome::Older),
                (6, Outcome::Duplicate),
            ]
        );
        // Index 5 was not a candidate (rejected or ignored earlier): never touched.
        assert!(newest_per_key(&events, &[5]).is_empty());
    }

    #[test]
    fn etags_compare_without_quotes() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
        assert_eq!(unquoted("\"abc\""), unquoted("abc"));
        assert_eq!(
            ancestors(r"A\B\c.txt"),
            vec![r"A\B".to_string(), "A".to_string()]
        );
    }
}
