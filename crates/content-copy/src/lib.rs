//! Copy an S3 prefix into a folder of an SMB share.
//!
//! - **Incremental:** a manifest ([`manifest`]) records, per object, the file written, the
//!   object's size and ETag, and the file's last-write time; an object whose size and ETag match
//!   is skipped (if its file is still as written). A different
//!   `content_version` than the manifest's copies everything again. The manifest lives at the
//!   share root in `.fargate-smb\content`, never in the (served) target folder.
//! - **Atomic per file:** each object is written to `.<name>.fargate-smb-tmp-<random>` beside its
//!   final name and renamed over it, so a web server never serves half a file; a failed write
//!   removes its temporary file.
//! - **Checkpoints that cost what changed:** the manifest is sharded by folder ([`store`]); a
//!   checkpoint rewrites only the shards whose records changed, and two writers at once (an
//!   event retried while the first invocation still runs) keep each other's records.
//! - **Leftovers swept:** temporary files older than [`Options::temp_max_age`] (left by a killed
//!   invocation) are removed when the walk below sees them.
//! - **Readers holding files:** a rename refused because a reader holds the final name open
//!   (access denied on Windows) or the temporary file (a sharing violation) is retried with pauses
//!   ([`Options::rename_retry`]), then reported per file ([`FileError::HeldOpen`]).
//! - **Several SMB sessions:** [`copy_prefix_on`] spreads the files over several sessions (a
//!   file server may serve one session from one core), within one memory bound.
//! - **Parallel, with bounded memory:** up to `parallelism` objects at a time, each streamed
//!   from S3 to the share (a window of a few MiB per file, whatever its size), and no more than
//!   `max_memory_bytes` of such windows at once.
//! - **Safe names:** keys that cannot be Windows paths are rejected by rule
//!   ([`content_paths`]), and so are keys that Windows would fold onto another key's file.
//! - **Only its own files are removed:** prune and [`remove_copied`] delete exactly what the
//!   manifest lists.
//! - **Checked against the folder:** the manifest outlives the folder (it is not in it), so before
//!   planning, one listing per folder it reaches into drops the records of files that are gone
//!   or changed in size or last-write time ([`forget_missing`]): those are copied again.
//! - **Private bookkeeping:** `.fargate-smb` is made private to administrators before a manifest
//!   is read or written ([`smb_share::Share::ensure_private_folder`]).
//! - **A health probe:** [`write_health_probe`] puts [`HEALTH_PROBE_NAME`] at the top of the
//!   folder for the load balancer's health check; the name is reserved, so no object takes it.
//!
//! The planning ([`plan`]) is pure; this module does the I/O. The S3-event sync reuses
//! [`copy_file`], [`remove_file`] and the manifest functions.

pub mod manifest;
pub mod plan;
mod probe;
mod source;
mod store;

pub use manifest::{
    BOOKKEEPING_FOLDER, FileRecord, HEALTH_PROBE_BODY, HEALTH_PROBE_NAME, LEGACY_MANIFEST_NAME,
    MANIFEST_FOLDER, Manifest, TEMP_MARKER,
};
pub use plan::{Object, Plan, Rejected, Work};
pub use probe::{Probe, ProbeError, remove_health_probe, write_health_probe};
pub use smb_share::Retry;
pub use source::{Folder, S3Source, SourceError, decode_key};

use futures_util::StreamExt;
use smb_share::{Meta, Share, ShareError};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};
use tokio::sync::Semaphore;

const MIB: u64 = 1024 * 1024;
/// What one file in flight holds: the share's write window (its pipeline of 1 MiB requests
/// plus the chunks being read, about 10 MiB) or the whole file if smaller, plus one read buffer.
fn file_memory(size: u64) -> u64 {
    size.min(10 * MIB) + MIB
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("could not create the target folder {path}: {source}")]
    Folder { path: String, source: ShareError },
    #[error(
        "could not make {path} private to administrators: {source} (it holds the manifests and ShareAcl's records; \
         give the admin account full control of it, or protect it by hand: no inheritance, full control for SYSTEM, \
         Administrators and the admin account)"
    )]
    Private { path: String, source: ShareError },
    #[error(
        "could not list {path} to check the manifest against the folder: {source} (run the update again; files are \
         never removed on a failed check)"
    )]
    List { path: String, source: ShareError },
    #[error("could not read the manifest {path}: {source}")]
    ReadManifest { path: String, source: ShareError },
    #[error("the manifest {path} cannot be used: {detail}")]
    BadManifest { path: String, detail: String },
    #[error("could not write the manifest {path}: {source}")]
    WriteManifest { path: String, source: ShareError },
    #[error(
        "another copy into this folder held the manifest's lock file {path} for {waited:?} (two updates of one \
         folder at once, or a copy whose connection hung: the file server keeps a hung session, and its lock, \
         until it notices the connection is gone, which can take minutes): run the update again later, once the \
         other one has finished"
    )]
    Locked { path: String, waited: Duration },
    #[error(
        "could not remove the manifest an earlier version kept in the content folder, {path}, after moving it to \
         {moved_to}: {source} (give the admin account the right to delete it, or delete it by hand, then run again)"
    )]
    RemoveLegacyManifest {
        path: String,
        moved_to: String,
        source: ShareError,
    },
}

/// The share and the folder in it that receives the content.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub share: &'a Share,
    /// Relative to the share root, `\`-separated (see [`content_paths::folder_path`]); empty
    /// for the root.
    pub folder: &'a str,
}

impl Target<'_> {
    /// A path relative to the target folder, as a path relative to the share root.
    pub fn path(&self, relative: &str) -> String {
        content_paths::join(self.folder, relative)
    }

    /// The manifest of this folder, relative to the share root (see [`manifest::manifest_path`]).
    pub fn manifest_path(&self) -> String {
        manifest::manifest_path(self.folder)
    }

    /// Where versions before kept the manifest: in the target folder itself.
    pub fn legacy_manifest_path(&self) -> String {
        self.path(LEGACY_MANIFEST_NAME)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub bucket: String,
    /// Normalized to a folder by [`content_paths::normalize_prefix`].
    pub prefix: String,
    /// A change from the manifest's forces a full copy.
    pub content_version: Option<String>,
    /// Remove the files of objects no longer in the source (only files the manifest lists).
    pub prune: bool,
    pub parallelism: usize,
    /// Bound on the object data in memory across all files in flight.
    pub max_memory_bytes: u64,
    /// Log progress every this many files...
    pub progress_every: usize,
    /// ...or this often, whichever comes first.
    pub progress_interval: Duration,
    /// Save the manifest this often during a long copy, so a copy cut short (a Lambda timeout)
    /// resumes where it was.
    pub checkpoint_interval: Duration,
    /// Record this physical id as the owner of the content in the manifest (taking it over
    /// from another id, which is then kept as the previous owner).
    pub owner_id: Option<String>,
    /// The id a replacement replaces, for content whose manifest records no owner yet.
    pub replacing: Option<String>,
    /// An in-place Update: a previous owner still on record is stale and forgotten
    /// ([`ownership::Ownership::settled`]).
    pub in_place: bool,
    /// The resource (`<stack ARN>/<logical id>`) whose content this is; a manifest another
    /// resource recorded is taken over afresh.
    pub owner: Option<String>,
    /// Temporary files older than this are leftovers of a killed invocation and are removed
    /// when seen. It must exceed the longest an invocation may run (the function's timeout) plus
    /// the clock skew between the function and the file server; see [`is_stale_temp`].
    pub temp_max_age: Duration,
    /// Retries of a rename refused because a reader holds a file open.
    pub rename_retry: Retry,
}

impl Options {
    pub fn new(bucket: impl Into<String>, prefix: &str) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: content_paths::normalize_prefix(prefix),
            content_version: None,
            prune: false,
            parallelism: 8,
            max_memory_bytes: 128 * MIB,
            progress_every: 100,
            progress_interval: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(20),
            owner_id: None,
            replacing: None,
            in_place: false,
            owner: None,
            temp_max_age: DEFAULT_TEMP_MAX_AGE,
            rename_retry: Retry::default(),
        }
    }
}

/// Lambda's longest timeout (15 minutes) plus 5 minutes of clock skew: no invocation of any
/// configuration still writes a temporary file this old.
pub const DEFAULT_TEMP_MAX_AGE: Duration = Duration::from_secs(20 * 60);

/// The least [`Options::temp_max_age`] that is safe whatever the function's timeout: a smaller
/// one would remove the live temporary file of another invocation still copying it.
pub const MIN_TEMP_MAX_AGE: Duration = DEFAULT_TEMP_MAX_AGE;

/// The longest the rename retries of one file may pause in all ([`Retry::total_pause`]): well
/// inside a Lambda timeout, so a held file fails with its own message rather than the whole
/// invocation timing out.
pub const MAX_RENAME_WAIT: Duration = Duration::from_secs(60);

/// `retry` with its attempts cut so that its pauses add up to no more than [`MAX_RENAME_WAIT`]
/// (at least one attempt).
pub fn bounded_retry(mut retry: Retry) -> Retry {
    retry.attempts = retry.attempts.max(1);
    while retry.attempts > 1 && retry.total_pause() > MAX_RENAME_WAIT {
        retry.attempts -= 1;
    }
    retry
}

/// A file that could not be copied or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The object key (copy) or the manifest's key (removal).
    pub key: String,
    pub error: String,
    /// It failed because the SMB connection was lost ([`ShareError::is_link_lost`]): a copy
    /// over a new connection may well succeed.
    pub link_lost: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub copied: usize,
    pub skipped: usize,
    pub removed: usize,
    pub bytes: u64,
    pub rejected: Vec<Rejected>,
    pub failed: Vec<Failed>,
    /// Objects deleted between the listing and their copy (the next run sees them gone).
    pub vanished: Vec<String>,
    pub folder_markers: usize,
    /// Everything was copied because the content version changed.
    pub forced: bool,
    /// Files the manifest listed that were not in the folder as recorded (gone, or another
    /// size): their records were dropped, so they were copied again (or, gone from the source
    /// too, left alone).
    pub missing: usize,
    /// Relative to the share root.
    pub manifest_path: String,
    /// Temporary files left by killed invocations, removed.
    pub swept: usize,
}

/// Bring the target folder in line with the source. Per-file problems are collected in the
/// summary; errors are what stops the whole copy (the listing, the folder, the manifest).
pub async fn copy_prefix(
    source: &S3Source,
    target: Target<'_>,
    options: &Options,
) -> Result<Summary, CopyError> {
    copy_prefix_on(source, target, &[], options).await
}

/// [`copy_prefix`], the files spread over `target.share` and the `more` sessions to the same
/// share (each file's write and rename on one session), with one memory bound for all.
pub async fn copy_prefix_on(
    source: &S3Source,
    target: Target<'_>,
    more: &[&Share],
    options: &Options,
) -> Result<Summary, CopyError> {
    let started = Instant::now();
    ensure_private(target.share).await?;
    if !target.folder.is_empty() {
        target
            .share
            .create_dir_all(target.folder)
            .await
            .map_err(|source| CopyError::Folder {
                path: target.folder.to_owned(),
                source,
            })?;
    }
    let now = std::time::SystemTime::now();
    let mut saved = store::Saved::default();
    let loaded = match load_manifest(target, Some((now, options.temp_max_age))).await? {
        Some(Loaded { manifest, place }) if place != Place::Sharded => {
            // Moved (and sharded) before anything else: the checkpoints below go to the new
            // place, and a copy cut short must resume from them, not from the old file.
            write_manifest(target, &manifest).await?;
            if place == Place::Former {
                remove_former(target).await?;
            }
            match place {
                Place::Legacy => tracing::info!(
                    from = %target.legacy_manifest_path(),
                    to = %target.manifest_path(),
                    "the manifest was moved out of the content folder"
                ),
                _ => tracing::info!(
                    path = %target.manifest_path(),
                    files = manifest.files.len(),
                    "the manifest was converted to one shard per folder"
                ),
            }
            saved.records = manifest.files.clone();
            saved.head = Some(manifest.head());
            Some(manifest)
        }
        Some(Loaded { manifest, .. }) => {
            saved.records = manifest.files.clone();
            saved.head = Some(manifest.head());
            saved.generation = Some(manifest.generation.clone());
            Some(manifest)
        }
        None => None,
    };
    let mut manifest = loaded.clone().unwrap_or_default();
    let checked = forget_missing(target, &mut manifest, now, options.temp_max_age).await?;
    let missing = checked.missing;
    // The claim is recorded with the final manifest only: checkpoints of a copy that fails or
    // is cut short keep the owner the content had.
    let claimed = options.owner_id.as_deref().map(|id| {
        let foreign = matches!((&loaded, &options.owner), (Some(m), Some(owner)) if m.owner.as_ref().is_some_and(|o| o != owner));
        let before = match &loaded {
            Some(m) if !foreign => ownership::Before::of(true, m.ownership.as_ref()),
            _ => ownership::Before::Absent,
        };
        if options.in_place {
            ownership::Ownership::settled(id)
        } else {
            ownership::Ownership::claim(before, id, options.replacing.as_deref(), |_| true)
        }
    });
    let forced = loaded.is_some() && manifest.content_version != options.content_version;
    let objects = source.list(&options.bucket, &options.prefix).await?;
    let plan = plan::plan(&objects, &options.prefix, &manifest, forced);
    tracing::info!(
        source = %format!("s3://{}/{}", options.bucket, options.prefix),
        folder = %target.folder,
        objects = objects.len(),
        to_copy = plan.copy.len(),
        unchanged = plan.unchanged.len(),
        rejected = plan.rejected.len(),
        stale = plan.stale.len(),
        missing,
        forced,
        "copy planned"
    );
    for r in &plan.rejected {
        tracing::warn!(key = %r.key, rule = r.rule, reason = %r.reason, "key rejected");
    }
    let mut summary = Summary {
        skipped: plan.unchanged.len(),
        rejected: plan.rejected.clone(),
        folder_markers: plan.folder_markers,
        forced,
        missing,
        swept: checked.swept,
        manifest_path: target.manifest_path(),
        ..Summary::default()
    };
    for key in &plan.superseded {
        manifest.files.remove(key);
    }

    let folder_errors = create_folders(target, &plan, options.parallelism).await;
    // A checkpoint claims the old content version until every object has been copied under
    // the new one, so a copy cut short is forced again.
    let checkpoint_version = manifest.content_version.clone();
    let sessions: Vec<&Share> = std::iter::once(target.share)
        .chain(more.iter().copied())
        .collect();
    let copies = copy_all(
        source,
        Copying {
            target,
            sessions: &sessions,
            options,
            work: &plan.copy,
            folder_errors: &folder_errors,
            checkpoint_version: &checkpoint_version,
        },
        &mut manifest,
        &mut saved,
        &mut summary,
    )
    .await;
    if options.prune {
        prune(
            target,
            &plan,
            options.parallelism,
            &mut manifest,
            &mut summary,
        )
        .await;
    }
    manifest.content_version = options.content_version.clone();
    manifest.bucket = options.bucket.clone();
    manifest.prefix = options.prefix.clone();
    if let Some(claimed) = claimed {
        manifest.ownership = Some(claimed);
        manifest.owner = options.owner.clone();
    }
    if loaded.as_ref() != Some(&manifest) {
        let written = store::save(target, &manifest.head(), &manifest.files, &mut saved).await?;
        tracing::info!(
            shards = written.shards,
            bytes = written.bytes,
            "manifest saved"
        );
        remove_legacy_manifest(target).await?;
    }
    tracing::info!(
        copied = summary.copied,
        skipped = summary.skipped,
        removed = summary.removed,
        rejected = summary.rejected.len(),
        failed = summary.failed.len(),
        bytes = summary.bytes,
        copies,
        swept = summary.swept,
        sessions = sessions.len(),
        seconds = started.elapsed().as_secs_f64(),
        "copy finished"
    );
    Ok(summary)
}

/// `.fargate-smb` private to administrators (see [`Share::ensure_private_folder`]): one request
/// when it already is.
pub(crate) async fn ensure_private(share: &Share) -> Result<(), CopyError> {
    share
        .ensure_private_folder(BOOKKEEPING_FOLDER)
        .await
        .map(|_| ())
        .map_err(|source| CopyError::Private {
            path: BOOKKEEPING_FOLDER.to_owned(),
            source,
        })
}

/// Drop from `manifest` the records of files that are not in the target folder as recorded —
/// missing, a folder now, or of another size — and return how many. The manifest is not in the
/// folder and outlives it: an operator's `deltree`, a stack deleted without RemoveOnDelete and
/// deployed again, a rollback's Delete by a version that removed the files. "Unchanged" must not
/// be believed from the manifest alone, or the copy skips files that are not there. A dropped
/// record is copied again if its object is still in the source; if not, it is left alone
/// (pruning never removes a file of another size: it may be someone else's by now).
///
/// Cost: one listing (QUERY_DIRECTORY, a folder's entries many to a response) of each folder
/// that holds a recorded file, never of any other (at the share root that spares every other
/// folder), and nothing per file: for 100,000 files in 2,000 folders, 2,000 listings rather
/// than 100,000 opens. Memory: one folder's entries at a time, besides a map of the records.
/// The ETag is not checked (SMB has none), but a record's last-write time is: a same-size edit
/// by hand changes it (records written before it was kept are checked by size only).
///
/// The same walk sweeps: a temporary file it sees that is older than `older_than` (as of
/// `now`) was left by an invocation killed between its write and its rename, and is removed.
/// Folders the walk does not list (none of their files recorded yet) are swept by a later run,
/// once one of their files is.
async fn forget_missing(
    target: Target<'_>,
    manifest: &mut Manifest,
    now: std::time::SystemTime,
    older_than: Duration,
) -> Result<Checked, CopyError> {
    if manifest.files.is_empty() {
        return Ok(Checked::default());
    }
    let mut presence = plan::Presence::of(manifest);
    let mut stale = Vec::new();
    let walked = target
        .share
        .walk(target.folder, |folder, entry| {
            if !entry.is_dir && is_stale_temp(&entry.name, entry.modified, now, older_than) {
                stale.push(content_paths::join(folder, &entry.name));
                return false;
            }
            presence.visit(
                folder,
                &entry.name,
                entry.is_dir,
                entry.size,
                entry.modified,
            )
        })
        .await;
    match walked {
        Ok(()) => {}
        // A folder gone while it was walked: what was not seen yet counts as missing, and is
        // copied again (the conservative side).
        Err(ShareError::NotFound { .. }) => {}
        Err(source) => {
            return Err(CopyError::List {
                path: target.folder.to_owned(),
                source,
            });
        }
    }
    let gone = presence.missing();
    for key in &gone {
        manifest.files.remove(key);
    }
    let mut swept = 0;
    for temp in &stale {
        match target.share.remove(&target.path(temp)).await {
            Ok(()) => {
                swept += 1;
                tracing::info!(path = %temp, "removed a temporary file a killed invocation left");
            }
            Err(e) => {
                tracing::warn!(path = %temp, error = %e, "could not remove a stale temporary file")
            }
        }
    }
    if !gone.is_empty() {
        tracing::warn!(
            folder = %target.folder,
            missing = gone.len(),
            first = %gone[0],
            "files the manifest lists are not in the folder as recorded (removed, or changed by hand): they are copied again"
        );
    }
    Ok(Checked {
        missing: gone.len(),
        swept,
    })
}

/// What [`forget_missing`] found.
#[derive(Debug, Default)]
struct Checked {
    missing: usize,
    swept: usize,
}

/// Make every folder the copies need, parents first; a folder that cannot be made fails the
/// files below it with its own error rather than a "path not found" per file.
async fn create_folders(
    target: Target<'_>,
    plan: &Plan,
    parallelism: usize,
) -> HashMap<String, FolderError> {
    let mut errors = HashMap::new();
    let folders = plan::folders_needed(&plan.copy);
    // Folders of one depth do not depend on each other: make them in parallel, depth by depth.
    let mut by_depth: Vec<Vec<String>> = Vec::new();
    for f in folders {
        let depth = f.matches('\\').count();
        if by_depth.len() <= depth {
            by_depth.resize_with(depth + 1, Vec::new);
        }
        by_depth[depth].push(f);
    }
    for level in by_depth {
        let results: Vec<(String, Result<(), ShareError>)> =
            futures_util::stream::iter(level.into_iter().map(|f| async move {
                let r = target.share.create_dir_all(&target.path(&f)).await;
                (f, r)
            }))
            .buffer_unordered(parallelism.max(1))
            .collect()
            .await;
        for (folder, r) in results {
            if let Err(e) = r {
                tracing::warn!(folder = %folder, error = %e, "could not create a folder");
                errors.insert(
                    content_paths::fold(&folder),
                    FolderError {
                        text: e.to_string(),
                        link_lost: e.is_link_lost(),
                    },
                );
            }
        }
    }
    errors
}

/// Why a folder the copy needs could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FolderError {
    text: String,
    link_lost: bool,
}

fn folder_error<'a>(
    errors: &'a HashMap<String, FolderError>,
    path: &str,
) -> Option<&'a FolderError> {
    let mut parent = content_paths::parent(path);
    while !parent.is_empty() {
        if let Some(e) = errors.get(&content_paths::fold(parent)) {
            return Some(e);
        }
        parent = content_paths::parent(parent);
    }
    None
}

enum Outcome {
    Copied { bytes: u64, modified: u64 },
    Vanished,
    Failed { error: String, link_lost: bool },
}

/// What [`copy_all`] copies, where, and how.
struct Copying<'a> {
    target: Target<'a>,
    /// `target.share` first; file `i` goes over session `i % len`.
    sessions: &'a [&'a Share],
    options: &'a Options,
    work: &'a [Work],
    folder_errors: &'a HashMap<String, FolderError>,
    /// The content version checkpoints claim (the old one, until every object is copied).
    checkpoint_version: &'a Option<String>,
}

async fn copy_all(
    source: &S3Source,
    copying: Copying<'_>,
    manifest: &mut Manifest,
    saved: &mut store::Saved,
    summary: &mut Summary,
) -> usize {
    let Copying {
        target,
        sessions,
        options,
        work,
        folder_errors,
        checkpoint_version,
    } = copying;
    if work.is_empty() {
        return 0;
    }
    // Permits are KiB of object data held in memory at once.
    let budget_kib = (options.max_memory_bytes / 1024).clamp(1, u64::from(u32::MAX)) as u32;
    let memory = Semaphore::new(budget_kib as usize);
    let total = work.len();
    // Mapping indexes rather than `&Work` keeps the closure free of higher-ranked lifetimes,
    // which would otherwise make the whole future fail the `Send` check of the runtime.
    let memory = &memory;
    let tasks = (0..work.len()).map(|i| {
        let w = &work[i];
        async move {
            if let Some(e) = folder_error(folder_errors, &w.path) {
                return (
                    w,
                    Outcome::Failed {
                        error: format!("its folder could not be created: {}", e.text),
                        link_lost: e.link_lost,
                    },
                );
            }
            let want = file_memory(w.size)
                .div_ceil(1024)
                .clamp(1, u64::from(budget_kib)) as u32;
            let Ok(_permit) = memory.acquire_many(want).await else {
                return (
                    w,
                    Outcome::Failed {
                        error: "the copy was shut down".into(),
                        link_lost: false,
                    },
                );
            };
            let on = Target {
                share: sessions[i % sessions.len()],
                folder: target.folder,
            };
            let copied = copy_file_retrying(
                source,
                &options.bucket,
                on,
                w,
                || async { true },
                &options.rename_retry,
            )
            .await;
            let outcome = match copied {
                Ok(Some(meta)) => Outcome::Copied {
                    bytes: w.size,
                    modified: meta.modified,
                },
                Ok(None) => Outcome::Failed {
                    error: "the copy was refused".into(),
                    link_lost: false,
                },
                Err(FileError::Vanished { .. }) => Outcome::Vanished,
                Err(e) => Outcome::Failed {
                    error: e.to_string(),
                    link_lost: e.is_link_lost(),
                },
            };
            (w, outcome)
        }
    });
    let mut results =
        futures_util::stream::iter(tasks).buffer_unordered(options.parallelism.max(1));
    let (mut done, mut last_log, mut last_checkpoint) = (0usize, Instant::now(), Instant::now());
    // The owner as it was: a claim is recorded with the final save only.
    let owner_before = saved
        .head
        .as_ref()
        .map(|h| (h.ownership.clone(), h.owner.clone()));
    // A checkpoint runs beside the copies, never instead of them: a copy whose future is not
    // polled keeps the SMB credits its answered requests granted, and with the copies stalled a
    // checkpoint's own requests waited for credits for good (seen: a 20,000-file copy hung at its
    // third checkpoint).
    let mut saving = None;
    loop {
        let next = match saving.as_mut() {
            None => results.next().await,
            Some(pending) => match futures_util::future::select(results.next(), pending).await {
                futures_util::future::Either::Left((next, _)) => next,
                futures_util::future::Either::Right(((at, result, back), _)) => {
                    log_checkpoint(at, result);
                    *saved = back;
                    saving = None;
                    continue;
                }
            },
        };
        let Some((w, outcome)) = next else { break };
        done += 1;
        match outcome {
            Outcome::Copied { bytes, modified } => {
                summary.copied += 1;
                summary.bytes += bytes;
                manifest
                    .files
                    .insert(w.relative.clone(), w.record_written(modified));
            }
            Outcome::Vanished => {
                tracing::info!(key = %w.key, "deleted from the source during the copy; skipped");
                summary.vanished.push(w.key.clone());
            }
            Outcome::Failed { error, link_lost } => {
                tracing::warn!(key = %w.key, path = %w.path, error = %error, "copy failed");
                // The file may now be neither old nor new: make the next run copy it again.
                if let Some(record) = manifest.files.get_mut(&w.relative) {
                    record.etag.clear();
                }
                summary.failed.push(Failed {
                    key: w.key.clone(),
                    error,
                    link_lost,
                });
            }
        }
        if done.is_multiple_of(options.progress_every.max(1))
            || last_log.elapsed() >= options.progress_interval
        {
            tracing::info!(
                done,
                total,
                copied = summary.copied,
                failed = summary.failed.len(),
                bytes = summary.bytes,
                "copy progress"
            );
            last_log = Instant::now();
        }
        if saving.is_none()
            && done < total
            && last_checkpoint.elapsed() >= options.checkpoint_interval
        {
            let mut head = manifest.head();
            head.content_version = checkpoint_version.clone();
            if let Some((ownership, owner)) = &owner_before {
                head.ownership = ownership.clone();
                head.owner = owner.clone();
            }
            let records = manifest.files.clone();
            // Moved into the save and handed back when it ends (nothing else reads it meanwhile).
            let mut taken = std::mem::take(saved);
            saving = Some(Box::pin(async move {
                let r = store::save(target, &head, &records, &mut taken).await;
                (done, r, taken)
            }));
            last_checkpoint = Instant::now();
        }
    }
    if let Some(pending) = saving {
        let (at, r, back) = pending.await;
        log_checkpoint(at, r);
        *saved = back;
    }
    done
}

fn log_checkpoint(done: usize, result: Result<store::Written, CopyError>) {
    match result {
        Ok(written) => tracing::info!(
            done,
            shards = written.shards,
            bytes = written.bytes,
            "manifest checkpoint"
        ),
        Err(e) => tracing::warn!(error = %e, "could not save a checkpoint of the manifest"),
    }
}

async fn prune(
    target: Target<'_>,
    plan: &Plan,
    parallelism: usize,
    manifest: &mut Manifest,
    summary: &mut Summary,
) {
    let removals = (0..plan.stale.len()).map(|i| {
        let (key, record) = &plan.stale[i];
        async move { (key, remove_file(target, &record.path).await) }
    });
    let results: Vec<_> = futures_util::stream::iter(removals)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut removed_paths = Vec::new();
    for (key, r) in results {
        match r {
            Ok(()) => {
                summary.removed += 1;
                if let Some(record) = manifest.files.remove(key.as_str()) {
                    tracing::info!(key = %key, path = %record.path, "removed: no longer in the source");
                    removed_paths.push(record.path);
                }
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "could not remove a file no longer in the source");
                summary.failed.push(Failed {
                    key: key.clone(),
                    error: format!("could not remove its file: {e}"),
                    link_lost: e.is_link_lost(),
                });
            }
        }
    }
    remove_empty_folders(target, &removed_paths).await;
}

/// An error copying one object.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("s3://{bucket}/{key} {source}")]
    Fetch {
        bucket: String,
        key: String,
        source: SourceError,
    },
    #[error("s3://{bucket}/{key} was deleted after it was listed")]
    Vanished { bucket: String, key: String },
    #[error("writing {path} on the share failed: {source}")]
    Write { path: String, source: ShareError },
    #[error("moving the new {path} into place failed: {source}")]
    Rename { path: String, source: ShareError },
    /// The rename stayed refused because another program held a file open: the final name
    /// (NTFS answers access denied to a replace while anything has the target open, MS-FSCC
    /// 2.4.42), or the temporary file (a sharing violation on opening it for DELETE).
    #[error(
        "could not replace {path} ({attempts} attempts with pauses): either a reader holds it open (a web server, \
         antivirus or backup agent; the server answers access denied or a sharing violation), or the function's \
         account may not delete it; the old content is still served and the new one was discarded. A reader \
         usually lets go within seconds: run the update again; if it persists, find and close what holds the file \
         (Computer Management > Shared Folders > Open Files on the file server) and check that the account may \
         delete files in that folder (its NTFS ACL)"
    )]
    HeldOpen { path: String, attempts: u32 },
}

impl FileError {
    /// The file failed because the SMB connection was lost (see [`Failed::link_lost`]).
    pub fn is_link_lost(&self) -> bool {
        match self {
            FileError::Write { source, .. } | FileError::Rename { source, .. } => {
                source.is_link_lost()
            }
            _ => false,
        }
    }
}

impl CopyError {
    /// The copy stopped because the SMB connection was lost: a new connection may finish it.
    pub fn is_link_lost(&self) -> bool {
        match self {
            CopyError::Folder { source, .. }
            | CopyError::Private { source, .. }
            | CopyError::List { source, .. }
            | CopyError::ReadManifest { source, .. }
            | CopyError::WriteManifest { source, .. }
            | CopyError::RemoveLegacyManifest { source, .. } => source.is_link_lost(),
            _ => false,
        }
    }
}

impl Summary {
    /// Some file failed because the SMB connection was lost.
    pub fn link_lost(&self) -> bool {
        self.failed.iter().any(|f| f.link_lost)
    }
}

/// Copy one object to `target` at `work.path`: stream it into a temporary name in the same
/// folder, then rename that over the final name. On failure the temporary file is removed and
/// the final name keeps its previous content.
pub async fn copy_file(
    source: &S3Source,
    bucket: &str,
    target: Target<'_>,
    work: &Work,
) -> Result<(), FileError> {
    copy_file_if(source, bucket, target, work, || async { true })
        .await
        .map(|_| ())
}

/// [`copy_file`], asking `commit` just before the rename whether the new content may still
/// replace the final name (the S3-event sync re-checks that no newer event took the key over).
/// `Ok(false)`: it may not; the temporary file was removed and the final name is untouched.
pub async fn copy_file_if<C, F>(
    source: &S3Source,
    bucket: &str,
    target: Target<'_>,
    work: &Work,
    commit: C,
) -> Result<bool, FileError>
where
    C: FnOnce() -> F,
    F: std::future::Future<Output = bool>,
{
    copy_file_if_meta(source, bucket, target, work, commit)
        .await
        .map(|meta| meta.is_some())
}

/// [`copy_file_if`], answering what it wrote: the final file's size and last-write time after
/// the rename (`None`: `commit` refused, nothing changed). Record the last-write time beside
/// the ETag: a different one in a later listing means the file was changed by hand, even to
/// the same size ([`FileRecord::modified`]).
pub async fn copy_file_if_meta<C, F>(
    source: &S3Source,
    bucket: &str,
    target: Target<'_>,
    work: &Work,
    commit: C,
) -> Result<Option<Meta>, FileError>
where
    C: FnOnce() -> F,
    F: std::future::Future<Output = bool>,
{
    copy_file_retrying(source, bucket, target, work, commit, &Retry::default()).await
}

/// [`copy_file_if_meta`] with the rename's retries, while a reader holds a file open, set by
/// `retry`.
pub async fn copy_file_retrying<C, F>(
    source: &S3Source,
    bucket: &str,
    target: Target<'_>,
    work: &Work,
    commit: C,
    retry: &Retry,
) -> Result<Option<Meta>, FileError>
where
    C: FnOnce() -> F,
    F: std::future::Future<Output = bool>,
{
    let object = Object {
        key: work.key.clone(),
        size: work.size,
        etag: work.etag.clone(),
    };
    let fetch_error = |source| FileError::Fetch {
        bucket: bucket.to_owned(),
        key: work.key.clone(),
        source,
    };
    let download = match source.open(bucket, &object).await {
        Ok(d) => d,
        Err(SourceError::Vanished) => {
            return Err(FileError::Vanished {
                bucket: bucket.to_owned(),
                key: work.key.clone(),
            });
        }
        Err(e) => return Err(fetch_error(e)),
    };
    let final_path = target.path(&work.path);
    let temp = target.path(&temp_name(&work.path));
    let size = download.size;
    match target.share.write_from(&temp, download.reader).await {
        Ok(written) if written == size => {}
        Ok(written) => {
            discard(target.share, &temp).await;
            return Err(fetch_error(SourceError::Truncated { got: written, size }));
        }
        Err(source) => {
            discard(target.share, &temp).await;
            return Err(FileError::Write {
                path: final_path,
                source,
            });
        }
    }
    if !commit().await {
        discard(target.share, &temp).await;
        return Ok(None);
    }
    match target
        .share
        .rename_retrying(&temp, &final_path, retry)
        .await
    {
        Ok(meta) => Ok(Some(meta)),
        Err(source) => {
            discard(target.share, &temp).await;
            Err(match source {
                ShareError::SharingViolation { .. } => FileError::HeldOpen {
                    path: final_path,
                    attempts: retry.attempts,
                },
                source => FileError::Rename {
                    path: final_path,
                    source,
                },
            })
        }
    }
}

/// Whether `name` (a file name, or a path whose last segment is one) is one of the engine's
/// temporary files (`.<name>.fargate-smb-tmp-<random>`, see [`TEMP_MARKER`]) last written
/// more than `older_than` before `now`: one left by an invocation that was killed between
/// writing and renaming it. `modified` is the entry's last-write time (a FILETIME, as
/// [`smb_share::Entry::modified`]). A time in the future (clock skew) is never stale.
///
/// Choose `older_than` above the longest time an invocation can hold a temporary file: the
/// function's timeout (a live invocation's file is never older), plus the clock skew between
/// the function and the file server.
pub fn is_stale_temp(
    name: &str,
    modified: u64,
    now: std::time::SystemTime,
    older_than: Duration,
) -> bool {
    let name = content_paths::file_name(name);
    if !is_temp_name(name) {
        return false;
    }
    let Some(written) = filetime_to_system(modified) else {
        return false;
    };
    now.duration_since(written)
        .is_ok_and(|age| age > older_than)
}

/// `.<anything>.fargate-smb-tmp-<hex or guid>`: [`temp_name`]'s form (and the owner probe's).
fn is_temp_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let Some(at) = lower.rfind(TEMP_MARKER) else {
        return false;
    };
    let suffix = &lower[at + TEMP_MARKER.len()..];
    lower.starts_with('.')
        && !suffix.is_empty()
        && suffix.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// 100 ns intervals since 1601-01-01 to a time; `None` for 0 (the server knows no time).
fn filetime_to_system(filetime: u64) -> Option<std::time::SystemTime> {
    const UNIX_EPOCH_AS_FILETIME: u64 = 116_444_736_000_000_000;
    if filetime == 0 {
        return None;
    }
    let since_1601 = Duration::from_nanos(filetime.saturating_mul(100));
    let epoch_offset = Duration::from_nanos(UNIX_EPOCH_AS_FILETIME * 100);
    match since_1601.checked_sub(epoch_offset) {
        Some(after) => std::time::UNIX_EPOCH.checked_add(after),
        None => std::time::UNIX_EPOCH.checked_sub(epoch_offset - since_1601),
    }
}

pub(crate) async fn discard(share: &Share, temp: &str) {
    if let Err(e) = share.remove(temp).await {
        tracing::warn!(path = %temp, error = %e, "could not remove a temporary file");
        if e.is_link_lost() {
            left_behind().push((share.unc().to_lowercase(), temp.to_owned()));
        }
    }
}

/// Temporary files whose removal failed because the connection was lost, by share: the next
/// connection of this process to that share removes them ([`remove_left_behind`]), rather
/// than leaving them in the served folder until the age-based sweep (20 minutes) takes them.
fn left_behind() -> std::sync::MutexGuard<'static, Vec<(String, String)>> {
    static LEFT: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    LEFT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remove the temporary files this process left on `share` when a connection dropped (see
/// [`discard`]); those that still fail to go are kept for the next time. The count removed.
pub async fn remove_left_behind(share: &Share) -> usize {
    let unc = share.unc().to_lowercase();
    let mine: Vec<String> = {
        let mut all = left_behind();
        let (mine, rest) = all.drain(..).partition(|(u, _)| *u == unc);
        *all = rest;
        mine.into_iter().map(|(_, path)| path).collect()
    };
    let mut removed = 0;
    for temp in mine {
        match share.remove(&temp).await {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %temp, "removed a temporary file a dropped connection left");
            }
            Err(e) => {
                tracing::warn!(path = %temp, error = %e, "could not remove a temporary file a dropped connection left");
                if e.is_link_lost() {
                    left_behind().push((unc.clone(), temp));
                }
            }
        }
    }
    removed
}

/// `dir\.name.fargate-smb-tmp-0123abcd`, kept within Windows' 255-unit name limit.
pub fn temp_name(path: &str) -> String {
    let mut random = [0u8; 4];
    if getrandom::fill(&mut random).is_err() {
        // No OS randomness: the time still separates concurrent writers of one name.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        random = nanos.to_le_bytes();
    }
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = content_paths::file_name(path);
    let room = content_paths::MAX_SEGMENT_UNITS - 1 - TEMP_MARKER.len() - suffix.len();
    let mut units = 0;
    let kept: String = name
        .chars()
        .take_while(|c| {
            units += c.len_utf16();
            units <= room
        })
        .collect();
    let temp = format!(".{kept}{TEMP_MARKER}{suffix}");
    content_paths::join(content_paths::parent(path), &temp)
}

/// Remove one file the manifest lists (relative to the target folder). Gone already is fine.
pub async fn remove_file(target: Target<'_>, path: &str) -> Result<(), ShareError> {
    target.share.remove(&target.path(path)).await
}

/// Remove folders that held removed files and are now empty, deepest first, never the target
/// folder itself. A folder that still holds anything refuses deletion; that refusal is the test.
async fn remove_empty_folders(target: Target<'_>, removed: &[String]) {
    let mut folders: Vec<String> = Vec::new();
    for path in removed {
        let mut parent = content_paths::parent(path);
        while !parent.is_empty() {
            folders.push(parent.to_owned());
            parent = content_paths::parent(parent);
        }
    }
    folders.sort_by(|a, b| {
        b.matches('\\')
            .count()
            .cmp(&a.matches('\\').count())
            .then(a.cmp(b))
    });
    folders.dedup();
    for folder in folders {
        match target.share.remove(&target.path(&folder)).await {
            Ok(()) => tracing::debug!(folder = %folder, "removed an empty folder"),
            Err(e) => tracing::debug!(folder = %folder, error = %e, "folder kept"),
        }
    }
}

/// A manifest as found, and where.
struct Loaded {
    manifest: Manifest,
    place: Place,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the target folder, where versions before kept it (one file).
    Legacy,
    /// At the share root as one file (every record in it).
    Single,
    /// At the share root, a head and shards.
    Sharded,
    /// At the share root as one file, under the name an earlier fold gave the folder
    /// ([`manifest::former_manifest_path`]).
    Former,
}

/// The manifest of the target folder; `None` if there is none. An unreadable manifest is
/// treated as none (with a warning): the next copy writes everything and a fresh manifest, and
/// files only the lost manifest knew are left in place, never deleted. So is one that records
/// another folder than this one (a file copied or restored under this folder's name): pruning
/// or Delete by its list would remove files this folder's resource never wrote.
///
/// A manifest an earlier version left in the target folder is read too (a folder deployed by
/// it and not updated since, whose Delete must still find what it may remove), if it is this
/// folder's ([`manifest::legacy_manifest`]).
pub async fn read_manifest(target: Target<'_>) -> Result<Option<Manifest>, CopyError> {
    Ok(load_manifest(target, None).await?.map(|l| l.manifest))
}

/// The old place is read first and wins when both exist. Both exist only when a move was cut
/// short between writing the new file and removing the old one (then they are the same), or
/// when an earlier version of the function ran again after the move (a stack update rolled
/// back to it, which never saw the new file): then the old file is the newer record.
///
/// `sweep`: remove stale temporary files among the shards too (see [`store::read_all`]).
async fn load_manifest(
    target: Target<'_>,
    sweep: Option<(std::time::SystemTime, Duration)>,
) -> Result<Option<Loaded>, CopyError> {
    if let Some(manifest) = read_legacy(target).await? {
        return Ok(Some(Loaded {
            manifest,
            place: Place::Legacy,
        }));
    }
    let path = target.manifest_path();
    let Some(bytes) = read_bytes(target.share, &path).await? else {
        return Ok(read_former(target).await?.map(|manifest| Loaded {
            manifest,
            place: Place::Former,
        }));
    };
    match Manifest::parse(&bytes) {
        Ok(m) => match m.folder.as_deref() {
            Some(other) if !manifest::same_folder(other, target.folder) => {
                tracing::warn!(
                    path = %path,
                    recorded = %other,
                    folder = %target.folder,
                    "the manifest records another folder than the one it is named for (copied or restored by hand?): \
                     not used, and replaced by a fresh one; no file is removed by its list"
                );
                Ok(None)
            }
            _ if !m.is_sharded() => Ok(Some(Loaded {
                manifest: m,
                place: Place::Single,
            })),
            _ => {
                let files = store::read_all(target, m.generation.as_deref(), sweep).await?;
                Ok(Some(Loaded {
                    manifest: Manifest { files, ..m },
                    place: Place::Sharded,
                }))
            }
        },
        Err(e @ manifest::ManifestError::Newer(_)) => Err(CopyError::BadManifest {
            path,
            detail: e.to_string(),
        }),
        Err(e) => {
            tracing::warn!(path = %path, error = %e, "the manifest is unreadable; starting a new one");
            Ok(None)
        }
    }
}

/// The manifest at [`manifest::former_manifest_path`], if the folder has one there and it is
/// this folder's: one file (not a head) that records this very folder. That name may be another
/// folder's manifest now (the former fold joined folders NTFS keeps apart), so a file there
/// without this folder's stamp is never taken.
async fn read_former(target: Target<'_>) -> Result<Option<Manifest>, CopyError> {
    let Some(path) = manifest::former_manifest_path(target.folder) else {
        return Ok(None);
    };
    let Some(bytes) = read_bytes(target.share, &path).await? else {
        return Ok(None);
    };
    Ok(Manifest::parse(&bytes).ok().filter(|m| {
        !m.is_sharded()
            && m.folder
                .as_deref()
                .is_some_and(|f| manifest::same_folder(f, target.folder))
    }))
}

/// Remove the manifest at the former name if it is this folder's (read again: the decision is
/// on the file itself).
async fn remove_former(target: Target<'_>) -> Result<(), CopyError> {
    let Some(path) = manifest::former_manifest_path(target.folder) else {
        return Ok(());
    };
    if read_former(target).await?.is_none() {
        return Ok(());
    }
    target
        .share
        .remove(&path)
        .await
        .map_err(|source| write_error(&path, source))
}

/// The manifest at the old place, in the target folder, if it is this folder's. A file of that
/// name that is not (another resource's content: see [`manifest::legacy_manifest`]) is left
/// alone, never read as ours nor removed.
async fn read_legacy(target: Target<'_>) -> Result<Option<Manifest>, CopyError> {
    let path = target.legacy_manifest_path();
    let Some(bytes) = read_bytes(target.share, &path).await? else {
        return Ok(None);
    };
    match manifest::legacy_manifest(&bytes, target.folder) {
        Ok(m) => Ok(Some(m)),
        Err(why) => {
            tracing::info!(
                path = %path,
                why = %why,
                "the file of the manifest's old name in the folder is not this resource's manifest: left alone"
            );
            Ok(None)
        }
    }
}

pub(crate) async fn read_bytes(share: &Share, path: &str) -> Result<Option<Vec<u8>>, CopyError> {
    match share.read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(ShareError::NotFound { .. }) => Ok(None),
        Err(source) => Err(CopyError::ReadManifest {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Make the manifest of the target folder exactly `manifest`: its head at the share root's
/// `.fargate-smb\content` and its records in one shard per folder (see [`store`]), each written
/// atomically (temporary name, then rename), under the folder's lock, only the shards that
/// differ. The folders are made if missing (ShareAcl creates `.fargate-smb` too; either may come
/// first), private to administrators ([`Share::ensure_private_folder`]): the web app's account,
/// granted the content folder only, can neither read a manifest nor forge one (which would make
/// pruning delete what it lists).
///
/// Then the manifest an earlier version kept in the target folder, if any and if it is this
/// folder's, is removed — only after the new files are in place, so a crash in between leaves
/// two copies, never none.
pub async fn write_manifest(target: Target<'_>, manifest: &Manifest) -> Result<(), CopyError> {
    store::replace(target, &manifest.head(), &manifest.files).await?;
    remove_legacy_manifest(target).await
}

fn write_error(path: &str, source: ShareError) -> CopyError {
    CopyError::WriteManifest {
        path: path.to_owned(),
        source,
    }
}

/// Remove the manifest at the old place if it is this folder's (read again: the decision is on
/// the file itself). Gone already (the usual case) is fine.
async fn remove_legacy_manifest(target: Target<'_>) -> Result<(), CopyError> {
    if read_legacy(target).await?.is_none() {
        return Ok(());
    }
    let legacy = target.legacy_manifest_path();
    target
        .share
        .remove(&legacy)
        .await
        .map_err(|source| CopyError::RemoveLegacyManifest {
            path: legacy,
            moved_to: target.manifest_path(),
            source,
        })
}

/// Give the content to `ownership` and `owner`, changing only the manifest's head: under the
/// folder's lock, the head as it is now is rewritten with them, and every record is left as it
/// is on the share (another writer's records saved since the caller read the manifest are kept,
/// which rewriting the whole manifest with [`write_manifest`] would drop). `Ok(false)`: no
/// sharded manifest to change (none, or a single file an earlier version wrote: rewrite that one
/// whole, which converts it).
pub async fn set_owner(
    target: Target<'_>,
    ownership: Option<ownership::Ownership>,
    owner: Option<String>,
) -> Result<bool, CopyError> {
    store::update_head(target, |head| {
        head.ownership = ownership;
        head.owner = owner;
    })
    .await
}

/// What [`remove_copied`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub removed: usize,
    pub failed: Vec<Failed>,
}

/// Remove every file the manifest lists, then the manifest (kept, listing what is left, if a
/// removal failed), wherever it was found. Nothing else in the folder is touched.
pub async fn remove_copied(target: Target<'_>, parallelism: usize) -> Result<Removal, CopyError> {
    let Some(Loaded {
        mut manifest,
        place,
    }) = load_manifest(target, None).await?
    else {
        tracing::info!(folder = %target.folder, "no manifest: nothing of ours to remove");
        return Ok(Removal::default());
    };
    let listed_records = manifest.files.clone();
    let listed: Vec<(String, String)> = manifest
        .files
        .iter()
        .map(|(key, record)| (key.clone(), record.path.clone()))
        .collect();
    let removals = listed.into_iter().map(|(key, path)| async move {
        let r = remove_file(target, &path).await;
        (key, path, r)
    });
    let results: Vec<_> = futures_util::stream::iter(removals)
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    let mut out = Removal::default();
    let mut removed_paths = Vec::new();
    for (key, path, r) in results {
        match r {
            Ok(()) => {
                out.removed += 1;
                manifest.files.remove(&key);
                removed_paths.push(path);
            }
            Err(e) => out.failed.push(Failed {
                key,
                link_lost: e.is_link_lost(),
                error: e.to_string(),
            }),
        }
    }
    remove_empty_folders(target, &removed_paths).await;
    if out.failed.is_empty() {
        // Both places: a manifest found in the old one may have a (stale) copy in the new one,
        // and neither may outlive the files (the old one only if it is this folder's). Either
        // order is safe to repeat after a crash; the head goes last, so a Delete cut short
        // still finds what is left.
        remove_legacy_manifest(target).await?;
        remove_former(target).await?;
        store::remove_all(target).await?;
        let path = target.manifest_path();
        target
            .share
            .remove(&path)
            .await
            .map_err(|source| write_error(&path, source))?;
    } else if place == Place::Sharded {
        // Only the removals, as changes onto the shards as they are now (under the lock): a
        // record another writer saved since the read above stays.
        let mut saved = store::Saved {
            records: listed_records,
            head: Some(manifest.head()),
            generation: Some(manifest.generation.clone()),
        };
        store::save(target, &manifest.head(), &manifest.files, &mut saved).await?;
    } else {
        write_manifest(target, &manifest).await?;
    }
    tracing::info!(
        removed = out.removed,
        failed = out.failed.len(),
        "copied content removed"
    );
    Ok(out)
}

/// The manifest's records of the files directly in one folder of the target, and what the
/// manifest says they were copied from: a witness of what is already in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRecords {
    pub bucket: String,
    /// Normalized ([`content_paths::normalize_prefix`]); the records' keys are relative to it.
    pub prefix: String,
    /// The `ContentVersion` the content was last fully copied under.
    pub content_version: Option<String>,
    /// The resource (`<stack ARN>/<logical id>`) that owns the content, if recorded.
    pub owner: Option<String>,
    /// By object key relative to `prefix`; each record's `path` is relative to the target
    /// folder and lies directly in the folder asked for.
    pub files: std::collections::BTreeMap<String, FileRecord>,
}

/// The records of the files directly in `folder` (relative to the target folder,
/// `\`-separated, empty for the target folder itself), or `None` when the target has no sharded
/// manifest. Cost: the head and that folder's shard (two reads), whatever the size of the site.
/// A manifest not converted yet to shards (one file, written by an earlier version, in the
/// target folder or at the share root) gives no witness (`None`) rather than being read whole
/// at every call — a reconcile asks once per folder; the next full copy (a WebContent Create or
/// Update) converts it.
pub async fn folder_records(
    target: Target<'_>,
    folder: &str,
) -> Result<Option<FolderRecords>, CopyError> {
    let folder = folder.replace('/', "\\").trim_matches('\\').to_owned();
    let head_path = target.manifest_path();
    let head = match read_bytes(target.share, &head_path).await? {
        Some(bytes) => match Manifest::parse(&bytes) {
            Ok(m)
                if m.folder
                    .as_deref()
                    .is_none_or(|f| manifest::same_folder(f, target.folder)) =>
            {
                Some(m)
            }
            Ok(_) => None,
            Err(e @ manifest::ManifestError::Newer(_)) => {
                return Err(CopyError::BadManifest {
                    path: head_path,
                    detail: e.to_string(),
                });
            }
            Err(_) => None,
        },
        None => None,
    };
    let (head, files) = match head {
        Some(m) if m.is_sharded() => {
            let files = store::read_shard(target, &folder, m.generation.as_deref())
                .await?
                .map(|s| s.files)
                .unwrap_or_default();
            (m, files)
        }
        // One file (not converted yet, or at the old place): no witness, see above.
        _ => return Ok(None),
    };
    let wanted = manifest::ntfs_fold(&folder);
    let files = files
        .into_iter()
        .filter(|(_, r)| manifest::ntfs_fold(manifest::record_folder(r)) == wanted)
        .collect();
    Ok(Some(FolderRecords {
        bucket: head.bucket,
        prefix: head.prefix,
        content_version: head.content_version,
        owner: head.owner,
        files,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_sit_beside_the_file_and_fit_windows_limits() {
        let t = temp_name(r"css\site.css");
        assert!(t.starts_with(r"css\.site.css.fargate-smb-tmp-"), "{t}");
        assert_eq!(t.len(), r"css\.site.css.fargate-smb-tmp-".len() + 8);
        assert_ne!(temp_name("a"), temp_name("a"));
        assert!(manifest::is_reserved(&t));
        let long = "é".repeat(255);
        let t = temp_name(&format!("dir\\{long}"));
        let name = content_paths::file_name(&t);
        assert!(name.encode_utf16().count() <= 255, "{}", name.len());
        assert!(content_paths::share_path(&t.replace('\\', "/")).is_ok());
    }

    #[test]
    fn stale_temporaries_are_the_engines_own_and_old_enough() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // 100 ns units since 1601 of `now` minus `ago`.
        let filetime = |ago: u64| (1_800_000_000 - ago) * 10_000_000 + 116_444_736_000_000_000;
        let hour = Duration::from_secs(3600);
        let temp = temp_name(r"css\site.css");
        assert!(is_stale_temp(&temp, filetime(7200), now, hour));
        assert!(
            !is_stale_temp(&temp, filetime(60), now, hour),
            "a running copy's"
        );
        assert!(
            !is_stale_temp(&temp, filetime(0) + 10_000_000, now, hour),
            "in the future (clock skew)"
        );
        assert!(!is_stale_temp(&temp, 0, now, hour), "no time known");
        assert!(is_stale_temp(
            ".owner-probe.fargate-smb-tmp-0a1b2c3d-0000-4000-8000-00000000abcd",
            filetime(7200),
            now,
            hour
        ));
        assert!(is_stale_temp(
            r".fargate-smb\content\.0123.json.FARGATE-SMB-TMP-00ff00ff",
            filetime(7200),
            now,
            hour
        ));
        for other in [
            "notes.fargate-smb-tmp-0011aabb",
            ".notes.fargate-smb-tmp-",
            ".notes.fargate-smb-tmp-draft",
            "index.html",
        ] {
            assert!(!is_stale_temp(other, filetime(7200), now, hour), "{other}");
        }
    }

    #[test]
    fn folder_errors_cover_the_files_below() {
        let mut errors = HashMap::new();
        let denied = FolderError {
            text: "denied".into(),
            link_lost: false,
        };
        errors.insert(content_paths::fold(r"a\b"), denied.clone());
        assert_eq!(folder_error(&errors, r"A\B\c\x.txt"), Some(&denied));
        assert_eq!(folder_error(&errors, r"a\x.txt"), None);
        assert_eq!(folder_error(&errors, "x.txt"), None);
    }
}
