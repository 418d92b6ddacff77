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
use content_copy::{
    FileError, S3Source, SourceError, Target, Work,
    manifest::{RESERVED_RULE, reserved_reason},
};
use content_paths::Mapped;
use futures_util::StreamExt;
use serde::Serialize;
use smb_share::{Meta, Share, ShareError};
use std::collections::HashMap;
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
    /// Another key owns the file (its name differs only in case, as NTFS compares names): this
    /// key is recorded as a contender and is handed the file when the owner's object is deleted.
    Collision {
        owner: String,
    },
    /// A delete event, but the key still has a current version (versioned bucket): copied.
    Restored,
    /// The key was deleted and its file handed to a contender (copied from it).
    HandedOver {
        to: String,
    },
    /// A delete event, but the key's current version is the one already in place (an old
    /// version was deleted): nothing to do.
    Current,
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
    /// Delete events whose key still had a current version (versioned buckets).
    pub restored: usize,
    /// Deleted keys whose file went to a key mapping to the same file.
    pub handed_over: usize,
    /// Delete events of an old version: the current one is in place already.
    pub unchanged: usize,
    /// Keys refused because another key owns their file (first names).
    pub collisions: Vec<Named>,
    pub collision_count: usize,
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
            Outcome::Restored => self.restored += 1,
            Outcome::HandedOver { .. } => self.handed_over += 1,
            Outcome::Current => self.unchanged += 1,
            Outcome::Collision { owner } => {
                self.collision_count += 1;
                if self.collisions.len() < LISTED {
                    self.collisions.push(Named {
                        key: key.to_owned(),
                        reason: format!(
                            "{key:?} and {owner:?} are one file on the share (Windows names ignore case); \
                             {owner:?} keeps it, and {key:?} gets it if {owner:?} is deleted"
                        ),
                    });
                }
            }
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
    /// Files with no object in the listing that were kept: their key exists now, or an event
    /// was applying to them (newer than the listing).
    pub kept: usize,
    /// Keys refused because another key owns their file (first names).
    pub collisions: Vec<Named>,
    pub collision_count: usize,
    pub rejected: Vec<Named>,
    pub rejected_count: usize,
    /// First names; `failed_count` counts them all.
    pub failed: Vec<Named>,
    pub failed_count: usize,
    pub folders_removed: usize,
    /// Temporary files of killed copies, older than `TEMP_MAX_AGE_SECONDS`, removed.
    pub temporaries_removed: usize,
    /// Folders visited.
    pub folders: usize,
    /// Every folder was visited (`false`: stopped before the deadline; the next run continues).
    pub complete: bool,
    /// This run continued after this folder (folded), where an earlier run stopped.
    pub resumed_after: Option<String>,
    /// When not complete: the last folder finished (folded).
    pub stopped_after: Option<String>,
}

/// The AWS clients, built once per container, and the configuration.
#[derive(Debug)]
pub struct Syncer {
    pub config: Config,
    pub(crate) s3: S3Source,
    admin: AdminCredentials,
    pub(crate) state: StateStore,
    /// The SMB session of the previous invocation: a Lambda container handles one invocation at
    /// a time and is reused, and a logon costs more than the rest of a small event's work.
    /// Probed with one request before reuse; a session the server dropped is replaced.
    session: tokio::sync::Mutex<Option<Share>>,
}

/// The holder of a claim on a path: the item says this key, sequencer and ETag.
struct Owner<'a> {
    scope: &'a str,
    path: &'a str,
    key: &'a str,
    sequencer: &'a str,
    /// Unquoted; empty for a deletion.
    etag: &'a str,
}

/// Why a copy did not land.
enum Copy {
    /// The object changed or was deleted after the event: a newer event applies that.
    Superseded,
    Failed(String),
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

    /// The cached session if it still answers, else a new one; first removing the temporary
    /// files an earlier invocation's dropped connection left in the folder.
    async fn session(&self) -> Result<Share, SyncError> {
        let share = self.live_session().await?;
        content_copy::remove_left_behind(&share).await;
        Ok(share)
    }

    async fn live_session(&self) -> Result<Share, SyncError> {
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
        // Created and removed alike: an object may neither replace one of these files nor, by
        // its delete event, remove it (the health probe, the manifests, ShareAcl's records).
        if let Some(reason) = reserved_reason(&path) {
            return Err(Outcome::Rejected {
                rule: RESERVED_RULE,
                reason,
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
                    // A session found lost refuses everything, and one with a request left
                    // unanswered has lost that request's credits for good: the next batch
                    // connects anew.
                    if share.is_lost() || share.had_timeout() {
                        share.close().await;
                    } else {
                        *self.session.lock().await = Some(share);
                    }
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
        let (key, seq) = (event.key.as_str(), event.sequencer.as_str());
        let etag = match &event.change {
            Change::Put { etag, .. } => etag.as_str(),
            Change::Delete => "",
        };
        let previous = match self
            .state
            .claim(&scope, &p.path, key, seq, event.change.kind(), etag)
            .await
        {
            Ok(Claim::Claimed { previous }) => previous,
            Ok(Claim::Duplicate) => return Outcome::Duplicate,
            Ok(Claim::Older { .. }) => return Outcome::Older,
            Ok(Claim::Collision { owner, stored }) => {
                // A hand-over that did not finish (the heir has no sequencer and is still
                // applying): this delete event's retry is what finishes it.
                if matches!(event.change, Change::Delete)
                    && stored.sequencer.is_empty()
                    && !stored.done
                    && stored.is_put()
                {
                    let heir = Owner {
                        scope: &scope,
                        path: &p.path,
                        key: &stored.key,
                        sequencer: "",
                        etag: &stored.etag,
                    };
                    tracing::info!(key = %key, heir = %stored.key, "finishing the hand-over an earlier try of this deletion began");
                    return self
                        .settle(
                            share,
                            &heir,
                            None,
                            Outcome::HandedOver {
                                to: stored.key.clone(),
                            },
                            Outcome::Deleted,
                        )
                        .await;
                }
                return Outcome::Collision { owner };
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let claim = Owner {
            scope: &scope,
            path: &p.path,
            key,
            sequencer: seq,
            etag,
        };
        match &event.change {
            Change::Put { size, .. } => {
                let work = Work {
                    key: key.to_owned(),
                    relative: p.relative.clone(),
                    path: p.path.clone(),
                    size: *size,
                    etag: quoted(etag),
                };
                match self.copy_as(share, &claim, &work).await {
                    Ok(Some(meta)) => {
                        self.finish(share, &claim, Some(meta.modified), None, Outcome::Copied)
                            .await
                    }
                    Ok(None) => Outcome::Older,
                    // Changed or deleted since the event: the newer change's event applies it,
                    // but the file is settled now from what S3 holds (HEAD), so the state never
                    // claims a put whose object is gone.
                    Err(Copy::Superseded) => {
                        self.settle(
                            share,
                            &claim,
                            None,
                            Outcome::Superseded,
                            Outcome::Superseded,
                        )
                        .await
                    }
                    Err(Copy::Failed(e)) => Outcome::Failed(e),
                }
            }
            Change::Delete => {
                // The version the state says is in place (a delete of an old version, in a
                // versioned bucket, leaves the current one): not copied again.
                let in_place = previous
                    .filter(|st| st.key == key && st.is_put() && st.done)
                    .map(|st| (st.etag, st.modified));
                self.settle(share, &claim, in_place, Outcome::Restored, Outcome::Deleted)
                    .await
            }
        }
    }

    /// Copy `work` to its file if `owner` still holds the path when the file is renamed into
    /// place. `Ok(None)`: another event took the path over first. A failed re-check is a
    /// failure (retried), never taken for "taken over".
    async fn copy_as(
        &self,
        share: &Share,
        owner: &Owner<'_>,
        work: &Work,
    ) -> Result<Option<Meta>, Copy> {
        let error = std::sync::Mutex::new(None::<String>);
        let gate = || async {
            match self
                .state
                .still_claimed(
                    owner.scope,
                    owner.path,
                    owner.key,
                    owner.sequencer,
                    owner.etag,
                )
                .await
            {
                Ok(mine) => mine,
                Err(e) => {
                    if let Ok(mut slot) = error.lock() {
                        *slot = Some(format!(
                            "could not re-check the claim, so the file was not replaced: {e}"
                        ));
                    }
                    false
                }
            }
        };
        let result = copy_into_folders(
            &self.s3,
            &self.config.bucket,
            self.target(share),
            work,
            gate,
        )
        .await;
        if let Some(e) = error.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(Copy::Failed(e));
        }
        match result {
            Ok(written) => Ok(written),
            Err(e) if superseded(&e) => Err(Copy::Superseded),
            Err(e) => Err(Copy::Failed(e.to_string())),
        }
    }

    /// Mark `owner`'s claim done and answer `outcome`. When that loses (a newer event, or
    /// another key, took the path over while this one was applied), this copy may have been
    /// renamed over the winner's file: apply the winner's state again, so the share ends as the
    /// state says. When the write fails, the event fails: its redelivery claims the same
    /// sequencer, still `applying`, and applies it again.
    async fn finish(
        &self,
        share: &Share,
        owner: &Owner<'_>,
        modified: Option<u64>,
        now_put: Option<&str>,
        outcome: Outcome,
    ) -> Outcome {
        match self
            .state
            .done(
                owner.scope,
                owner.path,
                owner.key,
                owner.sequencer,
                owner.etag,
                modified,
                false,
                now_put,
            )
            .await
        {
            Ok(true) => outcome,
            Ok(false) => {
                self.reapply_winner(share, owner.scope, owner.path, owner.key)
                    .await;
                outcome
            }
            Err(e) => Outcome::Failed(format!(
                "the file is in place, but marking it done failed: {e}"
            )),
        }
    }

    /// Apply the state that won `path` again (after `loser`'s copy may have landed over it).
    pub(crate) async fn reapply_winner(&self, share: &Share, scope: &str, path: &str, loser: &str) {
        // A winning deletion still running removes the file itself once done; wait for it a
        // little, so a loser's file renamed after that removal does not stay.
        let mut winner = None;
        for attempt in 0..16 {
            match self.state.get(scope, path).await {
                Ok(Some(w)) if w.is_put() || w.done || attempt == 15 => {
                    winner = Some(w);
                    break;
                }
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "could not read the state that won the file; reconcile repairs it if needed");
                    return;
                }
            }
        }
        let Some(winner) = winner else { return };
        tracing::info!(
            loser = %loser,
            winner = %winner.key,
            winner_sequencer = %winner.sequencer,
            "a newer event took the file over while this one was applied: applying the winner's state again"
        );
        let owner = Owner {
            scope,
            path,
            key: &winner.key,
            sequencer: &winner.sequencer,
            etag: &winner.etag,
        };
        if winner.is_put() {
            let work = Work {
                key: winner.key.clone(),
                relative: self.relative(&winner.key),
                path: path.to_owned(),
                size: 0,
                etag: quoted(&winner.etag),
            };
            // Its own invocation marks it done; a changed or deleted object has a newer event.
            if let Err(Copy::Failed(e)) = self.copy_as(share, &owner, &work).await {
                tracing::warn!(key = %winner.key, error = %e, "could not apply the winner's state again; reconcile repairs it");
            }
        } else if winner.done {
            match self
                .state
                .still_claimed(scope, path, &winner.key, &winner.sequencer, &winner.etag)
                .await
            {
                Ok(true) => {
                    if let Err(e) = content_copy::remove_file(self.target(share), path).await
                        && !matches!(e, ShareError::NotFound { .. })
                    {
                        tracing::warn!(path = %path, error = %e, "could not remove the file again; reconcile repairs it");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "could not re-check the winner; reconcile repairs it")
                }
            }
        }
    }

    fn relative(&self, key: &str) -> String {
        key.strip_prefix(self.config.prefix.as_str())
            .unwrap_or(key)
            .to_owned()
    }

    /// Make the file what S3 holds for `owner`'s key now, under its claim: a delete event, or
    /// a key handed the file. In a versioned bucket a delete event does not mean the key is
    /// gone: removing a delete marker (an undelete) or the current version makes an older
    /// version current, with no "created" event. So S3 is asked (HEAD) what the key holds, and
    /// that is copied (`present`). If it holds nothing, a key that maps to the same file and
    /// was refused while this one owned it (a contender) is handed the file; only if there is
    /// none is the file removed (`absent`).
    async fn settle(
        &self,
        share: &Share,
        owner: &Owner<'_>,
        in_place: Option<(String, Option<u64>)>,
        present: Outcome,
        absent: Outcome,
    ) -> Outcome {
        let mut removed = false;
        // Each round either ends or saw the item or the object change under it; the bound only
        // guards against a livelock.
        for _ in 0..16 {
            match self
                .state
                .still_claimed(
                    owner.scope,
                    owner.path,
                    owner.key,
                    owner.sequencer,
                    owner.etag,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => return Outcome::Older,
                Err(e) => return Outcome::Failed(e.to_string()),
            }
            match self.s3.head(&self.config.bucket, owner.key).await {
                Ok(Some(current))
                    if in_place
                        .as_ref()
                        .is_some_and(|(etag, _)| unquoted(etag) == unquoted(&current.etag)) =>
                {
                    let modified = in_place.as_ref().and_then(|(_, m)| *m);
                    return self
                        .finish(
                            share,
                            owner,
                            modified,
                            Some(unquoted(&current.etag)),
                            Outcome::Current,
                        )
                        .await;
                }
                Ok(Some(current)) => {
                    let work = Work {
                        key: owner.key.to_owned(),
                        relative: self.relative(owner.key),
                        path: owner.path.to_owned(),
                        size: current.size,
                        etag: quoted(&current.etag),
                    };
                    tracing::info!(key = %owner.key, etag = %current.etag, "the key has a current version: copying it");
                    match self.copy_as(share, owner, &work).await {
                        Ok(Some(meta)) => {
                            return self
                                .finish(
                                    share,
                                    owner,
                                    Some(meta.modified),
                                    Some(current.etag.trim_matches('"')),
                                    present,
                                )
                                .await;
                        }
                        Ok(None) => return Outcome::Older,
                        // Changed again since the HEAD: look again.
                        Err(Copy::Superseded) => continue,
                        Err(Copy::Failed(e)) => return Outcome::Failed(e),
                    }
                }
                Ok(None) => {}
                Err(e) => return Outcome::Failed(e.to_string()),
            }
            let state = match self.state.get(owner.scope, owner.path).await {
                Ok(Some(st))
                    if st.key == owner.key
                        && st.sequencer == owner.sequencer
                        && st.etag == owner.etag =>
                {
                    st
                }
                Ok(_) => return Outcome::Older,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            if let Some(next) = state.contenders.first() {
                match self.hand_over(share, owner, &state, next).await {
                    Ok(Some(outcome)) => return outcome,
                    Ok(None) => continue,
                    Err(e) => return Outcome::Failed(e),
                }
            }
            if !removed {
                match content_copy::remove_file(self.target(share), owner.path).await {
                    Ok(()) | Err(ShareError::NotFound { .. }) => removed = true,
                    Err(e) => {
                        return Outcome::Failed(format!("removing {} failed: {e}", owner.path));
                    }
                }
            }
            match self
                .state
                .done(
                    owner.scope,
                    owner.path,
                    owner.key,
                    owner.sequencer,
                    owner.etag,
                    None,
                    true,
                    None,
                )
                .await
            {
                Ok(true) => return absent,
                // A contender was recorded (or the item changed): look again.
                Ok(false) => continue,
                Err(e) => {
                    return Outcome::Failed(format!(
                        "the file was removed, but marking it done failed: {e}"
                    ));
                }
            }
        }
        Outcome::Failed(
            "the file's state kept changing while the change was applied; retried".into(),
        )
    }

    /// Give the file to `next`, a contender, if its object still exists, and settle it as the
    /// new owner. `Ok(None)`: look again (the contender is gone, or the state changed).
    async fn hand_over(
        &self,
        share: &Share,
        owner: &Owner<'_>,
        seen: &crate::state::PathState,
        next: &str,
    ) -> Result<Option<Outcome>, String> {
        let current = self
            .s3
            .head(&self.config.bucket, next)
            .await
            .map_err(|e| e.to_string())?;
        let Some(current) = current else {
            self.state
                .remove_contender(owner.scope, owner.path, next)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(None);
        };
        let etag = current.etag.trim_matches('"');
        if !self
            .state
            .hand_over(owner.scope, owner.path, Some(seen), next, etag)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        self.state
            .remove_contender(owner.scope, owner.path, next)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(deleted = %owner.key, heir = %next, path = %owner.path, "the deleted key's file goes to the key that maps to the same file");
        let heir = Owner {
            scope: owner.scope,
            path: owner.path,
            key: next,
            sequencer: "",
            etag,
        };
        // The heir is settled like a delete event of it: copied if it still exists (HEAD again),
        // else handed on or removed.
        let outcome = Box::pin(self.settle(
            share,
            &heir,
            None,
            Outcome::HandedOver {
                to: next.to_owned(),
            },
            Outcome::Deleted,
        ))
        .await;
        Ok(Some(outcome))
    }

    /// Make the folder equal to the prefix: copy what is missing or different, remove files with
    /// no object (never fargate-smb's own: see [`content_copy::manifest::is_reserved`]), sweep
    /// stale temporary files, and report what was fixed; folder by folder, stopping before
    /// `deadline` with a cursor that the next run continues from ([`crate::reconcile`]).
    /// With `only_continue`, only a pass an earlier run stopped is continued: `Ok(None)` when
    /// there is none (one GetItem, no SMB logon). A frequent schedule of that finishes a large
    /// first pass in hours rather than one run per daily reconcile.
    pub async fn reconcile(
        &self,
        deadline: Option<std::time::SystemTime>,
        only_continue: bool,
    ) -> Result<Option<ReconcileReport>, SyncError> {
        if only_continue && self.state.cursor(&self.config.scope()).await?.is_none() {
            tracing::info!("no reconcile pass to continue");
            return Ok(None);
        }
        let share = self.connect().await?;
        let result =
            crate::reconcile::run(self, &share, crate::reconcile::Budget::until(deadline)).await;
        share.close().await;
        let report = result?;
        tracing::info!(
            copied = report.copied_count,
            removed = report.removed_count,
            unchanged = report.unchanged,
            kept = report.kept,
            collisions = report.collision_count,
            rejected = report.rejected_count,
            temporaries_removed = report.temporaries_removed,
            folders = report.folders,
            failed = report.failed.len(),
            complete = report.complete,
            "reconcile finished"
        );
        Ok(Some(report))
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
pub(crate) async fn copy_into_folders<C, F>(
    s3: &S3Source,
    bucket: &str,
    target: Target<'_>,
    work: &Work,
    commit: C,
) -> Result<Option<Meta>, FileError>
where
    C: Fn() -> F,
    F: std::future::Future<Output = bool>,
{
    match content_copy::copy_file_if_meta(s3, bucket, target, work, &commit).await {
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
            content_copy::copy_file_if_meta(s3, bucket, target, work, &commit).await
        }
        other => other,
    }
}

/// A copy that did not land because the object changed or was deleted since it was listed:
/// the change's own event applies it.
pub(crate) fn superseded(e: &FileError) -> bool {
    matches!(
        e,
        FileError::Vanished { .. }
            | FileError::Fetch {
                source: SourceError::Changed { .. } | SourceError::Vanished,
                ..
            }
    )
}

pub(crate) fn quoted(etag: &str) -> String {
    if etag.is_empty() || etag.starts_with('"') {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

pub(crate) fn unquoted(etag: &str) -> &str {
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
        Outcome::Collision { owner } => tracing::warn!(
            key = %key,
            owner = %owner,
            change,
            "the key maps to the same file as another key (names that differ only in case): the other keeps it"
        ),
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
    }
}
