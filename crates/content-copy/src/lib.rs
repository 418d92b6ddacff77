//! Copy an S3 prefix into a folder of an SMB share.
//!
//! - **Incremental:** a manifest ([`manifest`]) records, per object, the file written and the
//!   object's size and ETag; an object whose size and ETag match is skipped. A different
//!   `content_version` than the manifest's copies everything again. The manifest lives at the
//!   share root in `.fargate-smb\content`, never in the (served) target folder.
//! - **Atomic per file:** each object is written to `.<name>.fargate-smb-tmp-<random>` beside its
//!   final name and renamed over it, so a web server never serves half a file; a failed write
//!   removes its temporary file.
//! - **Parallel, with bounded memory:** up to `parallelism` objects at a time, each streamed
//!   from S3 to the share (a window of a few MiB per file, whatever its size), and no more than
//!   `max_memory_bytes` of such windows at once.
//! - **Safe names:** keys that cannot be Windows paths are rejected by rule
//!   ([`content_paths`]), and so are keys that Windows would fold onto another key's file.
//! - **Only its own files are removed:** prune and [`remove_copied`] delete exactly what the
//!   manifest lists.
//! - **Checked against the folder:** the manifest outlives the folder (it is not in it), so before
//!   planning, one listing per folder it reaches into drops the records of files that are gone
//!   or changed in size ([`forget_missing`]): those are copied again.
//! - **Private bookkeeping:** `.fargate-smb` is made private to administrators before a manifest
//!   is read or written ([`smb_share::Share::ensure_private_folder`]).
//!
//! The planning ([`plan`]) is pure; this module does the I/O. The S3-event sync reuses
//! [`copy_file`], [`remove_file`] and the manifest functions.

pub mod manifest;
pub mod plan;
mod source;

pub use manifest::{
    BOOKKEEPING_FOLDER, FileRecord, LEGACY_MANIFEST_NAME, MANIFEST_FOLDER, Manifest, TEMP_MARKER,
};
pub use plan::{Object, Plan, Rejected, Work};
pub use source::{S3Source, SourceError, decode_key};

use futures_util::StreamExt;
use smb_share::{Share, ShareError};
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
        }
    }
}

/// A file that could not be copied or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The object key (copy) or the manifest's key (removal).
    pub key: String,
    pub error: String,
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
}

/// Bring the target folder in line with the source. Per-file problems are collected in the
/// summary; errors are what stops the whole copy (the listing, the folder, the manifest).
pub async fn copy_prefix(
    source: &S3Source,
    target: Target<'_>,
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
    let loaded = match load_manifest(target).await? {
        Some(Loaded {
            manifest,
            legacy: true,
        }) => {
            // Moved before anything else: the checkpoints below go to the new place, and a copy
            // cut short must resume from them, not from the old file.
            write_manifest(target, &manifest).await?;
            tracing::info!(
                from = %target.legacy_manifest_path(),
                to = %target.manifest_path(),
                "the manifest was moved out of the content folder"
            );
            Some(manifest)
        }
        other => other.map(|l| l.manifest),
    };
    let mut manifest = loaded.clone().unwrap_or_default();
    let missing = forget_missing(target, &mut manifest).await?;
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
    let copies = copy_all(
        source,
        target,
        options,
        &plan.copy,
        &folder_errors,
        &mut manifest,
        &checkpoint_version,
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
        write_manifest(target, &manifest).await?;
    }
    tracing::info!(
        copied = summary.copied,
        skipped = summary.skipped,
        removed = summary.removed,
        rejected = summary.rejected.len(),
        failed = summary.failed.len(),
        bytes = summary.bytes,
        copies,
        seconds = started.elapsed().as_secs_f64(),
        "copy finished"
    );
    Ok(summary)
}

/// `.fargate-smb` private to administrators (see [`Share::ensure_private_folder`]): one request
/// when it already is.
async fn ensure_private(share: &Share) -> Result<(), CopyError> {
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
/// The ETag is not checked (SMB has none); a same-size edit by hand is not detected.
async fn forget_missing(target: Target<'_>, manifest: &mut Manifest) -> Result<usize, CopyError> {
    if manifest.files.is_empty() {
        return Ok(0);
    }
    let mut presence = plan::Presence::of(manifest);
    let walked = target
        .share
        .walk(target.folder, |folder, entry| {
            presence.visit(folder, &entry.name, entry.is_dir, entry.size)
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
    if !gone.is_empty() {
        tracing::warn!(
            folder = %target.folder,
            missing = gone.len(),
            first = %gone[0],
            "files the manifest lists are not in the folder as recorded (removed, or changed by hand): they are copied again"
        );
    }
    Ok(gone.len())
}

/// Make every folder the copies need, parents first; a folder that cannot be made fails the
/// files below it with its own error rather than a "path not found" per file.
async fn create_folders(
    target: Target<'_>,
    plan: &Plan,
    parallelism: usize,
) -> HashMap<String, String> {
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
                errors.insert(content_paths::fold(&folder), e.to_string());
            }
        }
    }
    errors
}

fn folder_error<'a>(errors: &'a HashMap<String, String>, path: &str) -> Option<&'a String> {
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
    Copied(u64),
    Vanished,
    Failed(String),
}

#[allow(clippy::too_many_arguments)]
async fn copy_all(
    source: &S3Source,
    target: Target<'_>,
    options: &Options,
    work: &[Work],
    folder_errors: &HashMap<String, String>,
    manifest: &mut Manifest,
    checkpoint_version: &Option<String>,
    summary: &mut Summary,
) -> usize {
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
                    Outcome::Failed(format!("its folder could not be created: {e}")),
                );
            }
            let want = file_memory(w.size)
                .div_ceil(1024)
                .clamp(1, u64::from(budget_kib)) as u32;
            let Ok(_permit) = memory.acquire_many(want).await else {
                return (w, Outcome::Failed("the copy was shut down".into()));
            };
            let outcome = match copy_file(source, &options.bucket, target, w).await {
                Ok(()) => Outcome::Copied(w.size),
                Err(FileError::Vanished { .. }) => Outcome::Vanished,
                Err(e) => Outcome::Failed(e.to_string()),
            };
            (w, outcome)
        }
    });
    let mut results =
        futures_util::stream::iter(tasks).buffer_unordered(options.parallelism.max(1));
    let (mut done, mut last_log, mut last_checkpoint) = (0usize, Instant::now(), Instant::now());
    while let Some((w, outcome)) = results.next().await {
        done += 1;
        match outcome {
            Outcome::Copied(bytes) => {
                summary.copied += 1;
                summary.bytes += bytes;
                manifest.files.insert(w.relative.clone(), w.record());
            }
            Outcome::Vanished => {
                tracing::info!(key = %w.key, "deleted from the source during the copy; skipped");
                summary.vanished.push(w.key.clone());
            }
            Outcome::Failed(error) => {
                tracing::warn!(key = %w.key, path = %w.path, error = %error, "copy failed");
                // The file may now be neither old nor new: make the next run copy it again.
                if let Some(record) = manifest.files.get_mut(&w.relative) {
                    record.etag.clear();
                }
                summary.failed.push(Failed {
                    key: w.key.clone(),
                    error,
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
        if done < total && last_checkpoint.elapsed() >= options.checkpoint_interval {
            let mut checkpoint = manifest.clone();
            checkpoint.content_version = checkpoint_version.clone();
            if let Err(e) = write_manifest(target, &checkpoint).await {
                tracing::warn!(error = %e, "could not save a checkpoint of the manifest");
            }
            last_checkpoint = Instant::now();
        }
    }
    done
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
        return Ok(false);
    }
    if let Err(source) = target.share.rename(&temp, &final_path, true).await {
        discard(target.share, &temp).await;
        return Err(FileError::Rename {
            path: final_path,
            source,
        });
    }
    Ok(true)
}

async fn discard(share: &Share, temp: &str) {
    if let Err(e) = share.remove(temp).await {
        tracing::warn!(path = %temp, error = %e, "could not remove a temporary file");
    }
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

/// A manifest as found, and whether it was found where versions before kept it.
struct Loaded {
    manifest: Manifest,
    legacy: bool,
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
    Ok(load_manifest(target).await?.map(|l| l.manifest))
}

/// The old place is read first and wins when both exist. Both exist only when a move was cut
/// short between writing the new file and removing the old one (then they are the same), or
/// when an earlier version of the function ran again after the move (a stack update rolled
/// back to it, which never saw the new file): then the old file is the newer record.
async fn load_manifest(target: Target<'_>) -> Result<Option<Loaded>, CopyError> {
    if let Some(manifest) = read_legacy(target).await? {
        return Ok(Some(Loaded {
            manifest,
            legacy: true,
        }));
    }
    let path = target.manifest_path();
    let Some(bytes) = read_bytes(target.share, &path).await? else {
        return Ok(None);
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
            _ => Ok(Some(Loaded {
                manifest: m,
                legacy: false,
            })),
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

async fn read_bytes(share: &Share, path: &str) -> Result<Option<Vec<u8>>, CopyError> {
    match share.read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(ShareError::NotFound { .. }) => Ok(None),
        Err(source) => Err(CopyError::ReadManifest {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Write the manifest atomically (temporary name, then rename) at the share root's
/// `.fargate-smb\content`, creating that folder if it is missing (ShareAcl creates
/// `.fargate-smb` too; either may come first), private to administrators
/// ([`Share::ensure_private_folder`]): the web app's account, granted the content folder only,
/// can neither read a manifest nor forge one (which would make pruning delete what it lists).
///
/// Then the manifest an earlier version kept in the target folder, if any and if it is this
/// folder's, is removed — only after the new file is in place, so a crash in between leaves two
/// copies, never none.
pub async fn write_manifest(target: Target<'_>, manifest: &Manifest) -> Result<(), CopyError> {
    let path = target.manifest_path();
    let temp = temp_name(&path);
    let stamped = Manifest {
        folder: Some(target.folder.to_owned()),
        ..manifest.clone()
    };
    let bytes = stamped.to_bytes();
    let result = async {
        match target.share.write(&temp, &bytes).await {
            Err(ShareError::NotFound { .. }) => {
                ensure_private(target.share).await?;
                target
                    .share
                    .create_dir_all(MANIFEST_FOLDER)
                    .await
                    .map_err(|source| write_error(&path, source))?;
                target
                    .share
                    .write(&temp, &bytes)
                    .await
                    .map_err(|source| write_error(&path, source))?;
            }
            other => {
                other.map_err(|source| write_error(&path, source))?;
            }
        }
        target
            .share
            .rename(&temp, &path, true)
            .await
            .map_err(|source| write_error(&path, source))
    }
    .await;
    if let Err(e) = result {
        discard(target.share, &temp).await;
        return Err(e);
    }
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

/// What [`remove_copied`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub removed: usize,
    pub failed: Vec<Failed>,
}

/// Remove every file the manifest lists, then the manifest (kept, listing what is left, if a
/// removal failed), wherever it was found. Nothing else in the folder is touched.
pub async fn remove_copied(target: Target<'_>, parallelism: usize) -> Result<Removal, CopyError> {
    let Some(mut manifest) = read_manifest(target).await? else {
        tracing::info!(folder = %target.folder, "no manifest: nothing of ours to remove");
        return Ok(Removal::default());
    };
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
                error: e.to_string(),
            }),
        }
    }
    remove_empty_folders(target, &removed_paths).await;
    if out.failed.is_empty() {
        // Both places: a manifest found in the old one may have a (stale) copy in the new one,
        // and neither may outlive the files (the old one only if it is this folder's). Either
        // order is safe to repeat after a crash.
        remove_legacy_manifest(target).await?;
        let path = target.manifest_path();
        target
            .share
            .remove(&path)
            .await
            .map_err(|source| write_error(&path, source))?;
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
    fn folder_errors_cover_the_files_below() {
        let mut errors = HashMap::new();
        errors.insert(content_paths::fold(r"a\b"), "denied".to_string());
        assert_eq!(
            folder_error(&errors, r"A\B\c\x.txt").map(String::as_str),
            Some("denied")
        );
        assert_eq!(folder_error(&errors, r"a\x.txt"), None);
        assert_eq!(folder_error(&errors, "x.txt"), None);
    }
}
