//! The manifest on the share: a head file and one shard per folder of the content
//! (see [`crate::manifest`] for the layout and why).
//!
//! **Two writers.** CloudFormation retries an event asynchronously while the first invocation
//! may still run, so two copies into one folder can overlap. Each writer keeps what it last saved
//! (`Saved`) and, at a checkpoint, saves only its *changes* since then ([`changes`]): under the
//! folder's lock file it reads each changed shard as it is on the share now, applies its own
//! changes to it, and renames the new shard into place. A record the other writer saved meanwhile
//! is in what was read, so it is kept; a reader sees a shard either before or after a rename,
//! never half of one. The lock is a file created new with delete-on-close ([`Share::try_lock`]):
//! the server removes it when the holder ends, however it ends, so a killed invocation leaves no
//! stale lock.
//!
//! **Cost.** A checkpoint writes the shards whose records changed (a folder's records each) and
//! the head when it changed: with one file changed in a 20,000-file site, one shard. Reading the
//! whole manifest (planning a copy) reads every shard, as it read the one big file before.

use crate::{
    CopyError, Target, ensure_private, is_stale_temp,
    manifest::{
        FileRecord, Head, MANIFEST_FOLDER, ManifestError, Shard, lock_path, record_folder,
        shard_key, shard_path, shards_folder,
    },
    temp_name,
};
use futures_util::StreamExt;
use smb_share::{Lock, Retry, ShareError};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant, SystemTime},
};

/// Records by key relative to the prefix, as [`crate::Manifest::files`].
pub(crate) type Records = BTreeMap<String, FileRecord>;

/// How long a writer waits for another to finish its checkpoint before giving up. A checkpoint
/// holds the lock for the few shard writes it makes (milliseconds to a second or two). A holder
/// whose connection hangs (rather than closes) keeps its session, and so the lock file, until
/// the file server notices the connection is dead (TCP keepalive or its own session timeout:
/// minutes), longer than is worth waiting here; the error then says to run again later. The
/// handler is not given its request's deadline (the custom-resource runtime keeps it to
/// itself), so the wait is a fixed bound well inside any Lambda timeout that can copy a site.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Shards read or written at once.
const SHARD_PARALLELISM: usize = 16;

/// What one shard changes by, from a writer's last save to its records now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ShardChange {
    /// The folder (relative to the target folder) as spelled by a record in it.
    pub folder: String,
    pub set: BTreeMap<String, FileRecord>,
    pub removed: BTreeSet<String>,
}

/// The changes by shard key ([`shard_key`] of the folder).
pub(crate) type Changes = BTreeMap<String, ShardChange>;

/// What changed from `from` to `to`, by shard: records added or changed are set in the shard of
/// their folder, records gone (or moved to another folder) are removed from the shard they were
/// in. One pass over both maps in key order.
pub(crate) fn changes(from: &Records, to: &Records) -> Changes {
    let mut out = Changes::new();
    fn entry<'c>(out: &'c mut Changes, record: &FileRecord) -> &'c mut ShardChange {
        let folder = record_folder(record);
        out.entry(shard_key(folder)).or_insert_with(|| ShardChange {
            folder: folder.to_owned(),
            ..ShardChange::default()
        })
    }
    let (mut a, mut b) = (from.iter().peekable(), to.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, ra)), Some((kb, rb))) if ka == kb => {
                if ra != rb {
                    if shard_key(record_folder(ra)) != shard_key(record_folder(rb)) {
                        entry(&mut out, ra).removed.insert((*ka).clone());
                    }
                    entry(&mut out, rb).set.insert((*kb).clone(), (*rb).clone());
                }
                a.next();
                b.next();
            }
            (Some((ka, ra)), Some((kb, _))) if ka < kb => {
                entry(&mut out, ra).removed.insert((*ka).clone());
                a.next();
            }
            (Some((ka, ra)), None) => {
                entry(&mut out, ra).removed.insert((*ka).clone());
                a.next();
            }
            (_, Some((kb, rb))) => {
                entry(&mut out, rb).set.insert((*kb).clone(), (*rb).clone());
                b.next();
            }
        }
    }
    out
}

/// Apply a shard's changes to its records as read.
fn apply_to(files: &mut Records, change: &ShardChange) {
    for key in &change.removed {
        files.remove(key);
    }
    for (key, record) in &change.set {
        files.insert(key.clone(), record.clone());
    }
}

/// What a writer last saved of a manifest: the records and the head.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    pub records: Records,
    pub head: Option<Head>,
    /// The [`Head::generation`] its shards are written under, once known: `Some` from the head
    /// it read (holding `None` for a head written before generations were kept) or first wrote.
    /// `None` until then (a fresh start, or a head just written by [`replace`]): the first save
    /// decides it under the lock ([`generation_now`]).
    pub generation: Option<Option<String>>,
}

/// What one save wrote, for the log (and the benchmark's bytes-per-checkpoint figure).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    pub shards: usize,
    pub bytes: u64,
}

/// Save `head` and `records` as changes since `saved` (see the module's doc), under the lock;
/// `saved` then holds them. Nothing to do: nothing written, no lock taken.
pub(crate) async fn save(
    target: Target<'_>,
    head: &Head,
    records: &Records,
    saved: &mut Saved,
) -> Result<Written, CopyError> {
    let delta = changes(&saved.records, records);
    let mut head = head.clone();
    if let Some(generation) = &saved.generation {
        head.generation = generation.clone();
    }
    let head_changed = saved.head.as_ref() != Some(&head);
    if delta.is_empty() && !head_changed {
        return Ok(Written::default());
    }
    let lock = lock(target).await?;
    let result = async {
        let generation = match &saved.generation {
            Some(generation) => generation.clone(),
            None => generation_now(target).await?,
        };
        head.generation = generation.clone();
        let mut written = apply(target, &delta, generation.as_deref()).await?;
        if head_changed || saved.generation.is_none() {
            written.bytes += write_head(target, &head).await?;
        }
        Ok::<_, CopyError>((written, generation))
    }
    .await;
    lock.release().await;
    let (written, generation) = result?;
    for change in delta.values() {
        apply_to(&mut saved.records, change);
    }
    saved.head = Some(head);
    saved.generation = Some(generation);
    Ok(written)
}

/// Make the stored manifest exactly `head` and `records` (a migration, a Delete's leftovers, a
/// hand-back), whatever the shards held: read them all, under the lock, and write the difference.
pub(crate) async fn replace(
    target: Target<'_>,
    head: &Head,
    records: &Records,
) -> Result<Written, CopyError> {
    let lock = lock(target).await?;
    let result = async {
        let generation = generation_now(target).await?;
        let stored = read_all(target, generation.as_deref(), None).await?;
        let mut written = apply(target, &changes(&stored, records), generation.as_deref()).await?;
        let head = Head {
            generation,
            ..head.clone()
        };
        written.bytes += write_head(target, &head).await?;
        Ok(written)
    }
    .await;
    lock.release().await;
    result
}

/// Change only the head, under the lock: read as it is on the share now, changed by `change`,
/// written back; the shards (which another writer may be saving meanwhile) are left as they are.
/// `false`: there is no usable sharded head to change (none, unreadable, another folder's, or a
/// single-file manifest an earlier version wrote).
pub(crate) async fn update_head(
    target: Target<'_>,
    change: impl FnOnce(&mut Head),
) -> Result<bool, CopyError> {
    let lock = lock(target).await?;
    let result = async {
        let Some(mut head) = usable_head(target).await? else {
            return Ok(false);
        };
        change(&mut head);
        write_head(target, &head).await?;
        Ok(true)
    }
    .await;
    lock.release().await;
    result
}

/// The stored head, if it is a sharded one of this folder.
async fn usable_head(target: Target<'_>) -> Result<Option<Head>, CopyError> {
    let path = crate::manifest::manifest_path(target.folder);
    Ok(match crate::read_bytes(target.share, &path).await? {
        Some(bytes) => crate::Manifest::parse(&bytes)
            .ok()
            .filter(|m| {
                m.is_sharded()
                    && m.folder
                        .as_deref()
                        .is_none_or(|f| crate::manifest::same_folder(f, target.folder))
            })
            .map(|m| m.head()),
        None => None,
    })
}

/// The generation to write under now (the caller holds the lock): the stored head's, if it is a
/// usable head of this folder — a writer that started afresh finds there the head another fresh
/// writer wrote meanwhile, and merges with its shards as with any other writer's — or else a
/// new one, so that shards an earlier manifest left are not taken over ([`Head::generation`]).
async fn generation_now(target: Target<'_>) -> Result<Option<String>, CopyError> {
    Ok(match usable_head(target).await? {
        Some(head) => head.generation,
        None => Some(new_generation()),
    })
}

/// 16 random hex digits (the time's, should the OS have no randomness: still distinct per
/// fresh start, which is all a generation needs).
fn new_generation() -> String {
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        random = nanos.to_le_bytes();
    }
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// Take the folder's lock file, waiting (with pauses) while another writer holds it.
async fn lock(target: Target<'_>) -> Result<Lock, CopyError> {
    let path = lock_path(target.folder);
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let mut made_folder = false;
    loop {
        match target.share.try_lock(&path).await {
            Ok(Some(lock)) => return Ok(lock),
            Ok(None) if started.elapsed() < LOCK_WAIT => {
                tracing::debug!(path = %path, "another writer holds the manifest; waiting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Ok(None) => {
                return Err(CopyError::Locked {
                    path,
                    waited: LOCK_WAIT,
                });
            }
            Err(ShareError::NotFound { .. }) if !made_folder => {
                made_folder = true;
                ensure_private(target.share).await?;
                target
                    .share
                    .create_dir_all(MANIFEST_FOLDER)
                    .await
                    .map_err(|source| write_error(&path, source))?;
            }
            Err(source) => return Err(write_error(&path, source)),
        }
    }
}

/// Every shard's records, of the shards of `generation` ([`Head::generation`]; others are
/// leftovers of an earlier manifest, ignored). `sweep`: also remove temporary files there older than this (left by a
/// writer killed between writing a shard and renaming it), as of `now`.
pub(crate) async fn read_all(
    target: Target<'_>,
    generation: Option<&str>,
    sweep: Option<(SystemTime, Duration)>,
) -> Result<Records, CopyError> {
    let folder = shards_folder(target.folder);
    let entries = match target.share.list(&folder).await {
        Ok(entries) => entries,
        Err(ShareError::NotFound { .. }) => return Ok(Records::new()),
        Err(source) => {
            return Err(CopyError::ReadManifest {
                path: folder,
                source,
            });
        }
    };
    let mut names = Vec::new();
    for e in entries.iter().filter(|e| !e.is_dir) {
        if let Some((now, older_than)) = sweep
            && is_stale_temp(&e.name, e.modified, now, older_than)
        {
            crate::discard(target.share, &content_paths::join(&folder, &e.name)).await;
            continue;
        }
        if e.name.to_ascii_lowercase().ends_with(".json") {
            names.push(content_paths::join(&folder, &e.name));
        }
    }
    let reads = futures_util::stream::iter(names.into_iter().map(|path| async move {
        let r = crate::read_bytes(target.share, &path).await;
        (path, r)
    }))
    .buffer_unordered(SHARD_PARALLELISM);
    let mut reads = std::pin::pin!(reads);
    let mut records = Records::new();
    while let Some((path, r)) = reads.next().await {
        let Some(bytes) = r? else { continue };
        match Shard::parse(&bytes) {
            Ok(shard) if shard.generation.as_deref() == generation => records.extend(shard.files),
            Ok(_) => {
                tracing::debug!(path = %path, "a shard of an earlier manifest of the folder; ignored")
            }
            Err(e @ ManifestError::Newer(_)) => {
                return Err(CopyError::BadManifest {
                    path,
                    detail: e.to_string(),
                });
            }
            // Its files are then unknown: copied again, never removed by a list we cannot read.
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "a shard of the manifest is unreadable; ignored")
            }
        }
    }
    Ok(records)
}

/// The shard of one folder (relative to the target folder), if there is one of `generation`.
pub(crate) async fn read_shard(
    target: Target<'_>,
    within: &str,
    generation: Option<&str>,
) -> Result<Option<Shard>, CopyError> {
    let path = shard_path(target.folder, within);
    let Some(bytes) = crate::read_bytes(target.share, &path).await? else {
        return Ok(None);
    };
    Shard::parse(&bytes)
        .map(|shard| Some(shard).filter(|s| s.generation.as_deref() == generation))
        .map_err(|e| CopyError::BadManifest {
            path,
            detail: e.to_string(),
        })
}

/// [`read_shard`] for a writer about to replace it (holding the lock). An unreadable shard is
/// treated as [`read_all`] treats it — its records are unknown already — rather than failing
/// every save of the folder: moved aside as `<name>.corrupt-<unix seconds>` (kept for whoever
/// wants to look; not a `.json`, so never read again) and the shard starts empty.
async fn read_shard_to_update(
    target: Target<'_>,
    within: &str,
    generation: Option<&str>,
) -> Result<Option<Shard>, CopyError> {
    let path = shard_path(target.folder, within);
    let Some(bytes) = crate::read_bytes(target.share, &path).await? else {
        return Ok(None);
    };
    match Shard::parse(&bytes) {
        Ok(shard) => Ok(Some(shard).filter(|s| s.generation.as_deref() == generation)),
        Err(e @ ManifestError::Newer(_)) => Err(CopyError::BadManifest {
            path,
            detail: e.to_string(),
        }),
        Err(e) => {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let aside = format!("{path}.corrupt-{secs}");
            tracing::warn!(
                path = %path,
                moved_to = %aside,
                error = %e,
                "a shard of the manifest is unreadable: moved aside, and started afresh (its files are copied again, never removed by it)"
            );
            target
                .share
                .rename(&path, &aside, true)
                .await
                .map_err(|source| write_error(&path, source))?;
            Ok(None)
        }
    }
}

/// Apply the changes to each shard of `generation` as it is on the share now (the caller holds
/// the lock); a shard of another generation there is overwritten.
async fn apply(
    target: Target<'_>,
    delta: &Changes,
    generation: Option<&str>,
) -> Result<Written, CopyError> {
    // Indexes rather than `&ShardChange` in the closure: a borrowed argument makes it
    // higher-ranked, and the whole future then fails the runtime's `Send` check.
    let list: Vec<&ShardChange> = delta.values().collect();
    let list = &list;
    let writes = futures_util::stream::iter((0..list.len()).map(|i| async move {
        let change = list[i];
        let mut shard = read_shard_to_update(target, &change.folder, generation)
            .await?
            .unwrap_or_else(|| Shard::new(&change.folder, generation));
        apply_to(&mut shard.files, change);
        write_shard(target, &change.folder, &shard).await
    }))
    .buffer_unordered(SHARD_PARALLELISM);
    let mut writes = std::pin::pin!(writes);
    let mut written = Written::default();
    while let Some(r) = writes.next().await {
        written.bytes += r?;
        written.shards += 1;
    }
    Ok(written)
}

/// Write (or, empty, remove) one shard; the bytes written.
async fn write_shard(target: Target<'_>, within: &str, shard: &Shard) -> Result<u64, CopyError> {
    let path = shard_path(target.folder, within);
    if shard.files.is_empty() {
        target
            .share
            .remove(&path)
            .await
            .map_err(|source| write_error(&path, source))?;
        return Ok(0);
    }
    let bytes = shard.to_bytes().map_err(|e| CopyError::BadManifest {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomically(target, &path, &bytes, &shards_folder(target.folder)).await?;
    Ok(bytes.len() as u64)
}

async fn write_head(target: Target<'_>, head: &Head) -> Result<u64, CopyError> {
    let path = crate::manifest::manifest_path(target.folder);
    let stamped = Head {
        folder: Some(target.folder.to_owned()),
        ..head.clone()
    };
    let bytes = stamped.to_bytes().map_err(|e| CopyError::BadManifest {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomically(target, &path, &bytes, MANIFEST_FOLDER).await?;
    Ok(bytes.len() as u64)
}

/// Temporary name, then renamed over `path`, making `folder` (and `.fargate-smb` private) when
/// it is missing.
async fn write_atomically(
    target: Target<'_>,
    path: &str,
    bytes: &[u8],
    folder: &str,
) -> Result<(), CopyError> {
    let temp = temp_name(path);
    let result = async {
        match target.share.write(&temp, bytes).await {
            Err(ShareError::NotFound { .. }) => {
                ensure_private(target.share).await?;
                target
                    .share
                    .create_dir_all(folder)
                    .await
                    .map_err(|source| write_error(path, source))?;
                target
                    .share
                    .write(&temp, bytes)
                    .await
                    .map_err(|source| write_error(path, source))?;
            }
            other => {
                other.map_err(|source| write_error(path, source))?;
            }
        }
        target
            .share
            .rename_retrying(&temp, path, &Retry::default())
            .await
            .map(|_| ())
            .map_err(|source| write_error(path, source))
    }
    .await;
    if result.is_err() {
        crate::discard(target.share, &temp).await;
    }
    result
}

/// Remove every shard and the shards' folder (a Delete that removed all the files).
pub(crate) async fn remove_all(target: Target<'_>) -> Result<(), CopyError> {
    let folder = shards_folder(target.folder);
    let entries = match target.share.list(&folder).await {
        Ok(entries) => entries,
        Err(ShareError::NotFound { .. }) => return Ok(()),
        Err(source) => return Err(write_error(&folder, source)),
    };
    for e in entries.iter().filter(|e| !e.is_dir) {
        let path = content_paths::join(&folder, &e.name);
        target
            .share
            .remove(&path)
            .await
            .map_err(|source| write_error(&path, source))?;
    }
    target
        .share
        .remove(&folder)
        .await
        .map_err(|source| write_error(&folder, source))
}

fn write_error(path: &str, source: ShareError) -> CopyError {
    CopyError::WriteManifest {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, etag: &str) -> FileRecord {
        FileRecord {
            path: path.into(),
            size: 1,
            etag: etag.into(),
            modified: None,
        }
    }

    fn records(entries: &[(&str, &str, &str)]) -> Records {
        entries
            .iter()
            .map(|(k, p, e)| ((*k).to_owned(), rec(p, e)))
            .collect()
    }

    #[test]
    fn changes_touch_only_the_shards_of_changed_records() {
        let mut from = records(&[("index.html", "index.html", "e1")]);
        for i in 0..1000 {
            from.insert(
                format!("d{}/f{i}", i % 10),
                rec(&format!(r"d{}\f{i}", i % 10), "e"),
            );
        }
        let mut to = from.clone();
        to.insert("d3/f3".into(), rec(r"d3\f3", "changed"));
        to.remove("d5/f5");
        to.insert("new/x".into(), rec(r"new\x", "e"));
        let delta = changes(&from, &to);
        let folders: Vec<&str> = delta.values().map(|c| c.folder.as_str()).collect();
        let mut sorted = folders.clone();
        sorted.sort();
        assert_eq!(sorted, ["d3", "d5", "new"]);
        let d3 = &delta[&shard_key("d3")];
        assert_eq!(d3.set.keys().collect::<Vec<_>>(), ["d3/f3"]);
        assert!(d3.removed.is_empty());
        assert_eq!(
            delta[&shard_key("d5")].removed.iter().collect::<Vec<_>>(),
            ["d5/f5"]
        );
        assert!(changes(&to, &to).is_empty());
    }

    #[test]
    fn folders_that_differ_only_in_case_are_one_shard() {
        let from = records(&[("CSS/a.css", r"CSS\a.css", "e")]);
        let to = records(&[
            ("CSS/a.css", r"CSS\a.css", "e"),
            ("css/b.css", r"css\b.css", "e"),
        ]);
        let delta = changes(&from, &to);
        assert_eq!(delta.len(), 1);
        assert_eq!(shard_key("css"), shard_key("CSS"));
    }

    #[test]
    fn a_record_that_moves_folder_leaves_its_old_shard() {
        let from = records(&[("k", r"a\k", "e")]);
        let to = records(&[("k", r"b\k", "e")]);
        let delta = changes(&from, &to);
        assert!(delta[&shard_key("a")].removed.contains("k"));
        assert!(delta[&shard_key("b")].set.contains_key("k"));
    }

    #[test]
    fn two_writers_changes_applied_in_turn_keep_both() {
        let base = records(&[("a", "a", "e")]);
        let mine = records(&[("a", "a", "e"), ("m", "m", "e")]);
        let theirs = records(&[("a", "a", "e2"), ("t", "t", "e")]);
        // On the share: theirs saved first, then mine applied to what is there.
        let mut stored = theirs.clone();
        for c in changes(&base, &mine).values() {
            apply_to(&mut stored, c);
        }
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["a", "m", "t"]);
        assert_eq!(
            stored["a"].etag, "e2",
            "a record mine did not change stays theirs"
        );
    }
}
