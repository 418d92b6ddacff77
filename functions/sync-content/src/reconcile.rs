//! Reconcile: make the folder equal to the prefix, one folder at a time, in bounded memory, and
//! resumable.
//!
//! The folders are visited depth first, each folder's subfolders in the order of their folded
//! names, so the visit order is the order of the folded paths compared segment by segment. For
//! each folder it lists three things, each bounded by the folder rather than the site: the S3
//! "folder" (ListObjectsV2 with the `/` delimiter), the share folder, and the folder's state
//! items (one DynamoDB Query, [`crate::state::folder_key`]). It then copies what is missing or
//! different, removes files no object maps to, and sweeps temporary files left by killed copies.
//! The last folder finished is kept as a cursor in the state table; a run stopped by the
//! invocation's deadline continues after it on the next invocation, and a pass that finishes
//! clears it.
//!
//! **Removals are gated like copies.** A file with no object in the listing may be newer than
//! the listing (an object put while it ran, already applied by its event). Before removing, the
//! key is asked for (HEAD) and the file's state re-read; after removing, the state is read once
//! more, and if an event claimed the file meanwhile, its object is copied again.
//!
//! **Keys that map to one file** (names differing only in case): the key the state names as the
//! owner keeps it while its object lives; otherwise the first key in S3's order. The others are
//! recorded as contenders, so the owner's deletion hands the file to one of them.

use crate::state::{Cursor, PathState};
use crate::sync::{Named, ReconcileReport, SyncError, Syncer, quoted, unquoted};
use content_copy::{
    Object, Target, Work, is_stale_temp,
    manifest::{RESERVED_RULE, is_reserved, reserved_reason},
};
use content_paths::{Mapped, fold};
use futures_util::StreamExt;
use smb_share::{Entry, Share, ShareError};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// How many names a report lists per category (the log has them all).
const LISTED: usize = 50;
/// How often the cursor is saved while folders complete (and always when the run stops early).
const CURSOR_EVERY: Duration = Duration::from_secs(2);

/// When to stop starting work: a quarter of the invocation's time is kept for what is in
/// flight and the answer, between 1 s and 60 s.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    stop_at: Option<Instant>,
}

impl Budget {
    pub fn until(deadline: Option<SystemTime>) -> Self {
        let stop_at = deadline.map(|d| {
            let left = d
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let margin = (left / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
            let now = Instant::now();
            now.checked_add(left.saturating_sub(margin)).unwrap_or(now)
        });
        Self { stop_at }
    }

    fn exhausted(&self) -> bool {
        self.stop_at.is_some_and(|t| Instant::now() >= t)
    }
}

/// A folder to visit.
#[derive(Debug, Clone)]
struct Node {
    /// Relative to the target folder, folded, `\`-separated; empty for the target folder.
    folded: String,
    /// The same path as the share spells it (or, not on the share yet, as the first key does).
    spelled: String,
    /// The S3 prefixes whose objects are files of this folder (several when folder names differ
    /// only in case).
    prefixes: Vec<String>,
    on_share: bool,
}

/// Segment-by-segment order of folded paths: the visit order.
fn visit_order(a: &str, b: &str) -> Ordering {
    let split = |p: &str| -> Vec<String> {
        if p.is_empty() {
            Vec::new()
        } else {
            p.split('\\').map(str::to_owned).collect()
        }
    };
    split(a).cmp(&split(b))
}

/// `ancestor` is `path` or a folder above it.
fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('\\'))
}

/// What the cursor says about a folder.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// After the cursor: visit it.
    Visit,
    /// The cursor's folder or above it: its files were done, its subfolders may not be.
    ChildrenOnly,
    /// Before the cursor and not above it: all of it was done.
    Skip,
}

fn resume(folder: &str, cursor: Option<&str>) -> Resume {
    let Some(cursor) = cursor else {
        return Resume::Visit;
    };
    if is_within(cursor, folder) {
        Resume::ChildrenOnly
    } else if visit_order(folder, cursor) == Ordering::Less {
        Resume::Skip
    } else {
        Resume::Visit
    }
}

/// One folder's outcome.
enum Done {
    Complete(Vec<Node>),
    /// The budget ran out part-way: the folder is visited again next time.
    Stopped,
}

/// A file reconcile wants in place.
struct Wanted {
    work: Work,
    seen: Option<PathState>,
}

/// Up to how many files a folder may hold for WebContent's manifest of it to be read (its
/// records are held whole: about 200 bytes each).
const WITNESS_MAX: usize = 100_000;

pub(crate) async fn run(
    syncer: &Syncer,
    share: &Share,
    budget: Budget,
) -> Result<ReconcileReport, SyncError> {
    let c = &syncer.config;
    let target = Target {
        share,
        folder: &c.target.folder,
    };
    if !c.target.folder.is_empty() {
        share
            .create_dir_all(&c.target.folder)
            .await
            .map_err(|source| SyncError::Folder {
                path: c.target.folder.clone(),
                source,
            })?;
    }
    let scope = c.scope();
    let cursor = syncer.state.cursor(&scope).await?;
    let started = cursor.as_ref().map(|c| c.started).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    });
    let mut report = ReconcileReport {
        resumed_after: cursor.as_ref().and_then(|c| c.folder.clone()),
        ..ReconcileReport::default()
    };
    if let Some(cursor) = &cursor {
        tracing::info!(after = ?cursor.folder, "reconcile resumes a pass an earlier run stopped");
    }
    let cursor = cursor.and_then(|c| c.folder);
    let mut stack = vec![Node {
        folded: String::new(),
        spelled: String::new(),
        prefixes: vec![c.prefix.clone()],
        on_share: true,
    }];
    let mut stale_folders: Vec<String> = Vec::new();
    // Where the cursor stays if this run finishes no folder: where it was.
    let mut last_done: Option<String> = cursor.clone();
    let mut saved = Instant::now();
    let mut stopped = false;
    // Every run makes progress, however little time it has: it finishes at least one folder
    // before it looks at the budget, and starts at least `parallelism` copies.
    let launched = AtomicUsize::new(0);
    let hashers = (
        std::collections::hash_map::RandomState::new(),
        std::collections::hash_map::RandomState::new(),
    );
    let mut progressed = false;
    while let Some(node) = stack.pop() {
        let mode = resume(&node.folded, cursor.as_deref());
        if mode == Resume::Skip {
            continue;
        }
        if progressed && budget.exhausted() {
            stopped = true;
            break;
        }
        let visit = Visit {
            syncer,
            target,
            scope: &scope,
            budget,
            files: mode == Resume::Visit,
            launched: &launched,
            hashers: &hashers,
        };
        let done = match visit.folder(&node, &mut report).await {
            Ok(done) => done,
            // One folder that cannot be read must not stop every run at the same place: it is
            // reported (the invocation fails at the end) and the pass goes on past it.
            Err(e) => {
                tracing::warn!(folder = %node.spelled, error = %e, "reconcile could not read the folder; going on past it");
                failed(
                    &mut report,
                    format!("{}/", node.spelled.replace('\\', "/")),
                    e.to_string(),
                );
                Done::Complete(Vec::new())
            }
        };
        match done {
            Done::Stopped => {
                stopped = true;
                break;
            }
            Done::Complete(mut children) => {
                report.folders += 1;
                if node.prefixes.is_empty() && node.on_share && !node.folded.is_empty() {
                    stale_folders.push(node.spelled.clone());
                }
                children.sort_by(|a, b| visit_order(&a.folded, &b.folded));
                stack.extend(children.into_iter().rev());
                if mode == Resume::Visit {
                    progressed = true;
                    last_done = Some(node.folded.clone());
                    if saved.elapsed() >= CURSOR_EVERY {
                        save(syncer, &scope, &last_done, started).await?;
                        saved = Instant::now();
                    }
                }
            }
        }
    }
    // Share folders no key needs, deepest first; one still holding anything (a temporary file
    // of a copy in flight) refuses, and stays.
    stale_folders.sort_by_key(|f| std::cmp::Reverse(f.matches('\\').count()));
    for folder in stale_folders {
        if share.remove(&target.path(&folder)).await.is_ok() {
            report.folders_removed += 1;
        }
    }
    if stopped {
        save(syncer, &scope, &last_done, started).await?;
        report.complete = false;
        report.stopped_after = last_done;
        tracing::info!(
            after = ?report.stopped_after,
            "reconcile stopped before the invocation's deadline; the next run continues after this folder"
        );
    } else {
        syncer.state.clear_cursor(&scope).await?;
        report.complete = true;
    }
    Ok(report)
}

async fn save(
    syncer: &Syncer,
    scope: &str,
    last_done: &Option<String>,
    started: u64,
) -> Result<(), SyncError> {
    // Saved even when no folder was finished yet (a pass stopped inside its first folder), so
    // the continue schedule sees a pass pending.
    syncer
        .state
        .save_cursor(
            scope,
            &Cursor {
                folder: last_done.clone(),
                started,
            },
        )
        .await?;
    Ok(())
}

struct Visit<'a> {
    syncer: &'a Syncer,
    target: Target<'a>,
    scope: &'a str,
    budget: Budget,
    /// Reconcile the folder's files (false: only find its subfolders).
    files: bool,
    /// Copies started in this run.
    launched: &'a AtomicUsize,
    hashers: &'a (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
}

impl Visit<'_> {
    /// A 128-bit keyed hash of a folded name: what a folder's bookkeeping holds per entry, so
    /// memory per entry is a few dozen bytes however long the names are. The key is random per
    /// run, so a hostile bucket cannot make names collide on purpose; by chance, at a million
    /// names, the odds are about 1 in 10^26.
    fn hash(&self, folded: &str) -> u128 {
        use std::hash::BuildHasher;
        (u128::from(self.hashers.0.hash_one(folded)) << 64)
            | u128::from(self.hashers.1.hash_one(folded))
    }

    /// The share folder's listing (temporary files swept on the way): files by name hash,
    /// subfolders into `children`. A folder not there yet is empty.
    async fn share_side(
        &self,
        node: &Node,
        children: &mut HashMap<String, Node>,
        report: &mut ReconcileReport,
    ) -> Result<HashMap<u128, (u64, u64)>, SyncError> {
        let c = &self.syncer.config;
        let mut present = HashMap::new();
        let now = SystemTime::now();
        for entry in self.listing(node).await? {
            let path = content_paths::join(&node.spelled, &entry.name);
            if !entry.is_dir
                && self.files
                && is_stale_temp(&entry.name, entry.modified, now, c.temp_age)
            {
                match self.target.share.remove(&self.target.path(&path)).await {
                    Ok(()) => {
                        tracing::info!(path = %path, "removed a temporary file a killed copy left");
                        report.temporaries_removed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path = %path, error = %e, "could not remove a stale temporary file")
                    }
                }
                continue;
            }
            if is_reserved(&path) {
                continue;
            }
            let folded = fold(&entry.name);
            if entry.is_dir {
                let full = content_paths::join(&node.folded, &folded);
                children
                    .entry(full.clone())
                    .and_modify(|n| {
                        n.on_share = true;
                        n.spelled = path.clone();
                    })
                    .or_insert_with(|| Node {
                        folded: full,
                        spelled: path,
                        prefixes: Vec::new(),
                        on_share: true,
                    });
            } else {
                present.insert(self.hash(&folded), (entry.size, entry.modified));
            }
        }
        Ok(present)
    }

    async fn listing(&self, node: &Node) -> Result<Vec<Entry>, SyncError> {
        if !node.on_share && node.prefixes.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .target
            .share
            .list(&self.target.path(&node.spelled))
            .await
        {
            Ok(entries) => Ok(entries),
            Err(ShareError::NotFound { .. }) => Ok(Vec::new()),
            Err(source) => Err(SyncError::List {
                path: self.target.path(&node.spelled),
                source,
            }),
        }
    }

    /// One folder: the share's side first (a map of name hashes), then the bucket's, a page
    /// of 1,000 keys at a time, each page's state read in one BatchGetItem per 100 keys and
    /// its copies made before the next page is listed; then the files no key took are removed.
    /// What is held at once: the two maps of hashes (about 80 bytes a file), one page, and the
    /// share listing while it is read.
    async fn folder(&self, node: &Node, report: &mut ReconcileReport) -> Result<Done, SyncError> {
        let c = &self.syncer.config;
        let mut children: HashMap<String, Node> = HashMap::new();
        let present = self.share_side(node, &mut children, report).await?;
        // Which key took each name of this folder (hash of the name -> hash of the key).
        let mut taken: HashMap<u128, u128> = HashMap::new();
        let mut subfolders: std::collections::HashSet<u128> = std::collections::HashSet::new();
        let mut witness: Option<Option<content_copy::FolderRecords>> = None;
        let mut stopped = false;
        for prefix in &node.prefixes {
            let mut token = None;
            loop {
                let (page, next) = self
                    .syncer
                    .s3
                    .list_folder_page(&c.bucket, prefix, token.take())
                    .await?;
                for sub in page.folders {
                    let Some(relative) = content_paths::relative_key(&sub, &c.prefix) else {
                        continue;
                    };
                    let path = match content_paths::folder_path(relative) {
                        Ok(path) if is_reserved(&path) => {
                            if self.files {
                                self.reject_below(&sub, &path, report).await?;
                            }
                            continue;
                        }
                        Ok(path) if !path.is_empty() => path,
                        Ok(_) => continue,
                        Err(rule) => {
                            if self.files {
                                reject(report, &sub, rule.name(), rule.to_string());
                            }
                            continue;
                        }
                    };
                    let folded = fold(&path);
                    subfolders.insert(self.hash(content_paths::file_name(&folded)));
                    children
                        .entry(folded.clone())
                        .or_insert_with(|| Node {
                            folded,
                            spelled: path,
                            prefixes: Vec::new(),
                            on_share: false,
                        })
                        .prefixes
                        .push(sub);
                }
                if self.files && !stopped {
                    let page_stopped = self
                        .page(
                            node,
                            page.objects,
                            &present,
                            &mut taken,
                            &subfolders,
                            &mut witness,
                            report,
                        )
                        .await?;
                    stopped |= page_stopped;
                }
                match next {
                    // The folder is visited again next run: the rest of its listing is not needed.
                    Some(_) if stopped => break,
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            if stopped {
                break;
            }
        }
        let children: Vec<Node> = children.into_values().collect();
        if !self.files {
            return Ok(Done::Complete(children));
        }
        if stopped {
            return Ok(Done::Stopped);
        }
        // Files no key took: removed, each through the gate. The listing is read again (the
        // names were not kept); only when some file was not taken.
        if present.keys().any(|h| !taken.contains_key(h)) {
            let strays: Vec<String> = self
                .listing(node)
                .await?
                .into_iter()
                .filter(|e| !e.is_dir)
                .map(|e| content_paths::join(&node.spelled, &e.name))
                // Only files of the first listing: one that appeared since was put after the
                // bucket's listing began (S3 is strongly consistent), so it is not stray.
                .filter(|path| {
                    let name = self.hash(&fold(content_paths::file_name(path)));
                    !is_reserved(path) && present.contains_key(&name) && !taken.contains_key(&name)
                })
                .collect();
            let removals: Vec<(String, Result<bool, String>)> =
                futures_util::stream::iter(strays.into_iter().map(|path| async move {
                    let r = self.remove_gated(&path).await;
                    (path, r)
                }))
                .buffer_unordered(c.parallelism)
                .collect()
                .await;
            for (path, r) in removals {
                match r {
                    Ok(true) => {
                        tracing::info!(path = %path, "reconcile removed a file with no object");
                        report.removed_count += 1;
                        if report.removed.len() < LISTED {
                            report.removed.push(path.replace('\\', "/"));
                        }
                    }
                    Ok(false) => report.kept += 1,
                    Err(reason) => failed(report, path, reason),
                }
            }
        }
        Ok(Done::Complete(children))
    }

    /// One page of a folder's keys: decide each name's owner, copy what is not in place.
    /// `Ok(true)`: the budget ran out before every copy was started.
    #[allow(clippy::too_many_arguments)]
    async fn page(
        &self,
        node: &Node,
        objects: Vec<Object>,
        present: &HashMap<u128, (u64, u64)>,
        taken: &mut HashMap<u128, u128>,
        subfolders: &std::collections::HashSet<u128>,
        witness: &mut Option<Option<content_copy::FolderRecords>>,
        report: &mut ReconcileReport,
    ) -> Result<bool, SyncError> {
        let c = &self.syncer.config;
        let mut mapped: Vec<(Object, String)> = Vec::with_capacity(objects.len());
        for object in objects {
            let Some(relative) = content_paths::relative_key(&object.key, &c.prefix) else {
                continue;
            };
            match content_paths::share_path(relative) {
                Ok(Mapped::File(path)) if is_reserved(&path) => reject(
                    report,
                    &object.key,
                    RESERVED_RULE,
                    reserved_reason(&path).unwrap_or_default(),
                ),
                Ok(Mapped::File(path)) => mapped.push((object, path)),
                Ok(Mapped::FolderMarker) => {}
                Err(rule) => reject(report, &object.key, rule.name(), rule.to_string()),
            }
        }
        let paths: Vec<&str> = mapped.iter().map(|(_, p)| p.as_str()).collect();
        let states = self.syncer.state.get_many(self.scope, &paths).await?;
        let mut wanted: Vec<Wanted> = Vec::new();
        for (object, path) in mapped {
            let name = self.hash(&fold(content_paths::file_name(&path)));
            let key = self.hash(&object.key);
            if subfolders.contains(&name) {
                reject(
                    report,
                    &object.key,
                    "file-folder-collision",
                    "the same name is also a folder of other keys".into(),
                );
                continue;
            }
            let seen = states.get(&crate::state::path_key(&path)).cloned();
            // The owner: the key on record while its object lives (asked for, if this listing
            // has not shown it yet), else the first key of the listing.
            let recorded = seen
                .as_ref()
                .filter(|st| st.is_put() && !st.key.is_empty() && st.key != object.key);
            let owner = match taken.get(&name) {
                Some(&k) => (k == key).then_some(()),
                None => match recorded {
                    Some(st) if self.syncer.s3.head(&c.bucket, &st.key).await?.is_some() => {
                        taken.insert(name, self.hash(&st.key));
                        None
                    }
                    _ => {
                        taken.insert(name, key);
                        Some(())
                    }
                },
            };
            if owner.is_none() {
                let holder = recorded
                    .map(|st| st.key.clone())
                    .unwrap_or_else(|| "another key of this folder".into());
                collision(report, &object.key, &holder);
                if !seen
                    .as_ref()
                    .is_some_and(|st| st.contenders.contains(&object.key))
                    && !self
                        .syncer
                        .state
                        .contend(self.scope, &path, &object.key)
                        .await?
                {
                    // No live owner on record (its deletion finished meanwhile, or the owner is
                    // a key of this listing not recorded yet): the next pass settles it.
                    tracing::info!(key = %object.key, "the file's owner has no live claim yet; the next reconcile settles this key");
                }
                continue;
            }
            let relative = content_paths::relative_key(&object.key, &c.prefix)
                .unwrap_or(&object.key)
                .to_owned();
            let file = present.get(&name).filter(|(size, _)| *size == object.size);
            let by_state = file.is_some_and(|&(_, modified)| {
                seen.as_ref().is_some_and(|st| {
                    st.key == object.key
                        && st.is_put()
                        && st.done
                        && unquoted(&st.etag) == unquoted(&object.etag)
                        && st.modified.is_none_or(|m| m == modified)
                })
            });
            // WebContent's manifest speaks only for files the sync has no state of (the first
            // reconcile after a deployment); read once per folder, and only for folders of up
            // to WITNESS_MAX files (its records are held whole).
            let by_witness = !by_state
                && seen
                    .as_ref()
                    .is_none_or(|st| st.key.is_empty() && st.sequencer.is_empty())
                && present.len() <= WITNESS_MAX
                && match file {
                    Some(&(_, modified)) => {
                        if witness.is_none() {
                            *witness = Some(self.witness(&node.spelled).await);
                        }
                        witness.as_ref().and_then(Option::as_ref).is_some_and(|w| {
                            w.files.get(&relative).is_some_and(|r| {
                                !r.etag.is_empty()
                                    && unquoted(&r.etag) == unquoted(&object.etag)
                                    && r.size == object.size
                                    && r.modified.is_none_or(|m| m == modified)
                            })
                        })
                    }
                    None => false,
                };
            if by_state || by_witness {
                report.unchanged += 1;
                continue;
            }
            wanted.push(Wanted {
                work: Work {
                    key: object.key.clone(),
                    relative,
                    path,
                    size: object.size,
                    etag: quoted(&object.etag),
                },
                seen,
            });
        }
        let budget = self.budget;
        let results: Vec<(String, Option<Result<bool, String>>)> =
            futures_util::stream::iter(wanted.iter().map(|w| async move {
                if budget.exhausted() && self.launched.load(Relaxed) >= c.parallelism {
                    return (w.work.key.clone(), None);
                }
                self.launched.fetch_add(1, Relaxed);
                (w.work.key.clone(), Some(self.copy_gated(w).await))
            }))
            .buffer_unordered(c.parallelism)
            .collect()
            .await;
        let mut stopped = false;
        for (key, r) in results {
            match r {
                None => stopped = true,
                Some(Ok(true)) => {
                    tracing::info!(key = %key, "reconcile copied");
                    report.copied_count += 1;
                    if report.copied.len() < LISTED {
                        report.copied.push(key);
                    }
                }
                Some(Ok(false)) => report.unchanged += 1,
                Some(Err(reason)) => {
                    tracing::warn!(key = %key, error = %reason, "reconcile could not copy");
                    failed(report, key, reason);
                }
            }
        }
        Ok(stopped)
    }

    /// WebContent's records of the files directly in `folder`, if its manifest is of this
    /// bucket and prefix: a witness of what is in place. Unreadable is no witness (copy again).
    async fn witness(&self, folder: &str) -> Option<content_copy::FolderRecords> {
        let c = &self.syncer.config;
        match content_copy::folder_records(self.target, folder).await {
            Ok(Some(w)) if w.bucket == c.bucket && w.prefix == c.prefix => Some(w),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(folder = %folder, error = %e, "could not read WebContent's manifest of the folder; its files are compared without it");
                None
            }
        }
    }

    /// Every key below a prefix that maps to fargate-smb's own folder is rejected by name (one
    /// S3 folder at a time).
    async fn reject_below(
        &self,
        prefix: &str,
        path: &str,
        report: &mut ReconcileReport,
    ) -> Result<(), SyncError> {
        let c = &self.syncer.config;
        let mut pending = vec![prefix.to_owned()];
        while let Some(prefix) = pending.pop() {
            let listing = self.syncer.s3.list_folder(&c.bucket, &prefix).await?;
            for object in listing.objects {
                reject(
                    report,
                    &object.key,
                    RESERVED_RULE,
                    reserved_reason(path).unwrap_or_default(),
                );
            }
            pending.extend(listing.folders);
        }
        Ok(())
    }

    /// Copy a wanted file, if no event changed its state since the page's state was read.
    async fn copy_gated(&self, w: &Wanted) -> Result<bool, String> {
        let c = &self.syncer.config;
        let state = &self.syncer.state;
        let error = std::sync::Mutex::new(None::<String>);
        let gate = || async {
            // An event applied meanwhile owns the file now.
            match state.get(self.scope, &w.work.path).await {
                Ok(now) => same_claim(now.as_ref(), w.seen.as_ref()),
                Err(e) => {
                    if let Ok(mut slot) = error.lock() {
                        *slot = Some(format!("could not re-check the file's state: {e}"));
                    }
                    false
                }
            }
        };
        let result =
            crate::sync::copy_into_folders(&self.syncer.s3, &c.bucket, self.target, &w.work, gate)
                .await;
        if let Some(e) = error.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(e);
        }
        match result {
            Ok(Some(meta)) => {
                let recorded = state
                    .reconciled(
                        self.scope,
                        &w.work.path,
                        w.seen.as_ref(),
                        &w.work.key,
                        unquoted(&w.work.etag),
                        Some(meta.modified),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if !recorded {
                    // An event took the file over between the re-check and the record; this
                    // copy may sit on top of its file: apply the event's state again.
                    self.syncer
                        .reapply_winner(self.target.share, self.scope, &w.work.path, &w.work.key)
                        .await;
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) if crate::sync::superseded(&e) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Remove a file no listed object maps to, unless it is newer than the listing. `Ok(false)`:
    /// kept (its key exists now, or an event is at work on it).
    async fn remove_gated(&self, path: &str) -> Result<bool, String> {
        let c = &self.syncer.config;
        let state = &self.syncer.state;
        let seen = state
            .get(self.scope, path)
            .await
            .map_err(|e| e.to_string())?;
        // The key the file would come from: the owner on record, else its name as spelled.
        let key = match &seen {
            Some(st) if !st.key.is_empty() => st.key.clone(),
            _ => format!("{}{}", c.prefix, path.replace('\\', "/")),
        };
        if self
            .syncer
            .s3
            .head(&c.bucket, &key)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(false);
        }
        let before = state
            .get(self.scope, path)
            .await
            .map_err(|e| e.to_string())?;
        if !same_claim(before.as_ref(), seen.as_ref()) {
            return Ok(false);
        }
        match self.target.share.remove(&self.target.path(path)).await {
            Ok(()) | Err(ShareError::NotFound { .. }) => {}
            Err(e) => return Err(format!("could not remove it: {e}")),
        }
        let after = state
            .get(self.scope, path)
            .await
            .map_err(|e| e.to_string())?;
        if !same_claim(after.as_ref(), before.as_ref()) {
            // An event claimed the file while it was removed, and may have renamed its copy
            // into place just before: apply its state again.
            tracing::info!(path = %path, "an event claimed the file while reconcile removed it: applying its state again");
            self.syncer
                .reapply_winner(self.target.share, self.scope, path, &key)
                .await;
            return Ok(false);
        }
        if let Some(before) = &before {
            state
                .freed(self.scope, path, Some(before))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(true)
    }
}

/// The same owner and event as when it was read (both absent counts; an item holding only
/// contenders is absent).
fn same_claim(now: Option<&PathState>, seen: Option<&PathState>) -> bool {
    fn claimed(st: Option<&PathState>) -> Option<&PathState> {
        st.filter(|st| !st.key.is_empty() || !st.sequencer.is_empty())
    }
    match (claimed(now), claimed(seen)) {
        (None, None) => true,
        (Some(a), Some(b)) => a.key == b.key && a.sequencer == b.sequencer,
        _ => false,
    }
}

fn failed(report: &mut ReconcileReport, key: String, reason: String) {
    report.failed_count += 1;
    if report.failed.len() < LISTED {
        report.failed.push(Named { key, reason });
    }
}

fn reject(report: &mut ReconcileReport, key: &str, rule: &'static str, reason: String) {
    tracing::warn!(key = %key, rule, reason = %reason, "key rejected");
    if report.rejected.len() < LISTED {
        report.rejected.push(Named {
            key: key.to_owned(),
            reason,
        });
    }
    report.rejected_count += 1;
}

fn collision(report: &mut ReconcileReport, key: &str, owner: &str) {
    tracing::warn!(key = %key, owner = %owner, "the key maps to the same file as another key (names that differ only in case): the other keeps it");
    report.collision_count += 1;
    if report.collisions.len() < LISTED {
        report.collisions.push(Named {
            key: key.to_owned(),
            reason: format!("{owner:?} owns the same file (Windows names ignore case)"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visit_order_is_depth_first_by_segments() {
        let mut folders = vec!["B", "A\\Z", "", "A", "A\\B\\C", "AB", "A\\B"];
        folders.sort_by(|a, b| visit_order(a, b));
        assert_eq!(folders, vec!["", "A", "A\\B", "A\\B\\C", "A\\Z", "AB", "B"]);
    }

    #[test]
    fn a_resumed_pass_skips_what_the_cursor_covers() {
        let cursor = Some("A\\B");
        assert_eq!(resume("", cursor), Resume::ChildrenOnly);
        assert_eq!(resume("A", cursor), Resume::ChildrenOnly);
        assert_eq!(resume("A\\B", cursor), Resume::ChildrenOnly);
        assert_eq!(resume("A\\A", cursor), Resume::Skip);
        assert_eq!(resume("A\\A\\Z", cursor), Resume::Skip);
        assert_eq!(resume("A\\B\\C", cursor), Resume::Visit);
        assert_eq!(resume("A\\C", cursor), Resume::Visit);
        assert_eq!(resume("AB", cursor), Resume::Visit);
        assert_eq!(resume("B", cursor), Resume::Visit);
        assert_eq!(resume("A", None), Resume::Visit);
        // "AB" is not inside "A".
        assert_eq!(resume("A", Some("AB")), Resume::Skip);
    }
}
