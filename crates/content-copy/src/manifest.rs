//! The manifest: which files in the target folder this engine wrote, from which object.
//!
//! It lives at the share root, in `.fargate-smb\content\<key>.json` ([`manifest_path`]), beside
//! ShareAcl's records in `.fargate-smb\acl`: never in the target folder, which a web server
//! serves (IIS would hand anyone the bucket, the prefix and every path and ETag). It is read and
//! written with the functions' admin credential; the web app's account needs no access to it.
//! Only paths it lists are ever removed (prune, RemoveOnDelete): a file someone put there by hand
//! is never touched.
//!
//! Versions before kept it in the target folder as [`LEGACY_MANIFEST_NAME`]. The engine still
//! reads it there and moves it on its next write (see `read_manifest` and `write_manifest`).
//!
//! **Sharded by folder.** One JSON file of every record cost ~20 MB at 100,000 files,
//! rewritten at each checkpoint, and two writers lost each other's records. Now the file at
//! [`manifest_path`] is a small [`Head`] (source, content version, owner), and the records live
//! in one [`Shard`] per folder of the content, at [`shard_path`]: a checkpoint rewrites only the
//! shards whose records changed, and applies its changes to each shard as it is on the share
//! at that moment, under a lock file (see `store.rs`), so concurrent writers keep each
//! other's records. A single-file manifest is read as before and converted on the next write.
//!
//! The head keeps `"format": 1` and says `"sharded": 1`, on purpose: a function of an earlier
//! version (a stack update rolled back) reads it as a valid manifest that lists no file, so its
//! Update copies everything again and writes a single file (which this version converts again,
//! exactly: the shards are made to match it), and its Delete removes nothing. Refusing the head
//! as a newer format would instead fail the rollback's requests and leave the stack stuck in
//! UPDATE_ROLLBACK_FAILED.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// fargate-smb's own folder at the share root: ShareAcl's records (`acl`) and the manifests
/// (`content`). No object may be copied into (or over) a folder of this name.
pub const BOOKKEEPING_FOLDER: &str = ".fargate-smb";
/// The manifests' folder, relative to the share root.
pub const MANIFEST_FOLDER: &str = r".fargate-smb\content";
/// The manifest's name in the target folder itself, where versions before kept it.
pub const LEGACY_MANIFEST_NAME: &str = ".fargate-smb-content.json";
/// Marks temporary files (`.<name>.fargate-smb-tmp-<random>`) while they are written.
pub const TEMP_MARKER: &str = ".fargate-smb-tmp-";
/// The health probe `Custom::WebContent` writes at the top of the content folder once the content
/// is in place ([`crate::write_health_probe`]): the load balancer's health check asks for it
/// through IIS's `/content` virtual directory, so a task answers 200 only when IIS runs, the
/// virtual directory is set, the share is mapped and the web app's account can read the folder.
/// A page baked into the image would pass without any of that, and users would get 404s.
pub const HEALTH_PROBE_NAME: &str = "fargate-smb-health.txt";
/// The probe's whole content. Small and stable: a health check reads it every few seconds, and
/// an unchanged probe is never rewritten (a rename over a file IIS holds open is refused).
pub const HEALTH_PROBE_BODY: &[u8] = b"ok\n";

const FORMAT: u32 = 1;
/// The layout of the records: [`Head::sharded`].
const SHARDED: u32 = 1;

/// One file written from one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the target folder, `\`-separated.
    pub path: String,
    pub size: u64,
    /// The object's ETag when it was copied; empty when the file may be stale (a failed
    /// re-copy), which forces the next run to copy it again.
    pub etag: String,
    /// The file's last-write time (FILETIME) right after the copy renamed it into place; absent
    /// in records written before it was kept. A listing showing another time means the file was
    /// changed on the share (by hand, even to the same size): it is copied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The `ContentVersion` the content was last fully copied under.
    #[serde(default)]
    pub content_version: Option<String>,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    /// By object key relative to the prefix.
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// The physical id of the resource whose content this is (absent: written before it was
    /// kept, or by a copy that does not belong to a custom resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<ownership::Ownership>,
    /// The resource (`<stack ARN>/<logical id>`) that owns the content, with `ownership`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The target folder (relative to the share root) as last written, for people reading
    /// `.fargate-smb\content`: the file's name is derived from it ([`manifest_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Set (to the layout's version) when this is a [`Head`]: the records are in the shards and
    /// `files` is empty. Absent: a single-file manifest, whose `files` are all the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharded: Option<u32>,
    /// A head's [`Head::generation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: FORMAT,
            content_version: None,
            bucket: String::new(),
            prefix: String::new(),
            files: BTreeMap::new(),
            ownership: None,
            owner: None,
            folder: None,
            sharded: None,
            generation: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("it is not a manifest this version understands ({0})")]
    Unreadable(String),
    #[error("it has format {0}, newer than this function's {FORMAT}: update the function")]
    Newer(u32),
    /// Never written as an empty or partial file: an empty manifest would make the next run
    /// forget every file it owns.
    #[error("it could not be serialized ({0}); nothing was written")]
    Serialize(String),
}

impl Manifest {
    /// A single-file manifest, or a [`Head`] (then `sharded` is set and `files` is empty: the
    /// records are in the shards).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Unreadable(e.to_string()))?;
        if m.format > FORMAT {
            return Err(ManifestError::Newer(m.format));
        }
        if let Some(layout) = m.sharded.filter(|l| *l > SHARDED) {
            return Err(ManifestError::Newer(layout));
        }
        Ok(m)
    }

    /// Whether this is a head whose records are in shards.
    pub fn is_sharded(&self) -> bool {
        self.sharded.is_some()
    }

    /// The single-file form, for tests and tools; the engine writes a [`Head`] and [`Shard`]s.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        to_json(self)
    }

    /// What the head records (everything but the files).
    pub fn head(&self) -> Head {
        Head {
            format: FORMAT,
            content_version: self.content_version.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            ownership: self.ownership.clone(),
            owner: self.owner.clone(),
            folder: self.folder.clone(),
            sharded: SHARDED,
            generation: self.generation.clone(),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ManifestError> {
    serde_json::to_vec_pretty(value).map_err(|e| ManifestError::Serialize(e.to_string()))
}

/// The manifest's file at [`manifest_path`]: everything but the records (see the module's doc
/// for why it reads as a manifest of no file to earlier versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub format: u32,
    #[serde(default)]
    pub content_version: Option<String>,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<ownership::Ownership>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    pub sharded: u32,
    /// Which shards are this head's: a random id given when a head is written afresh (no usable
    /// head before it), stamped on every shard written under it ([`Shard::generation`]). A shard
    /// of another generation is a leftover of an earlier manifest of the folder (its head removed
    /// by a Delete that kept files, or unreadable, or another folder's) and is read as absent:
    /// without this a fresh manifest would take over the old records, and a later prune would
    /// remove files this resource never wrote. Absent in heads written before it was kept; their
    /// shards have none either, and match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

impl Head {
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        to_json(self)
    }
}

/// The records of the files directly in one folder of the content, at [`shard_path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub format: u32,
    /// The folder, relative to the target folder (`\`-separated, empty for the target folder
    /// itself), for people reading it: the file's name is derived from it.
    #[serde(default)]
    pub folder: String,
    /// By object key relative to the prefix, as [`Manifest::files`].
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// The [`Head::generation`] it was written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

impl Shard {
    pub fn new(folder: &str, generation: Option<&str>) -> Self {
        Self {
            format: FORMAT,
            folder: folder.to_owned(),
            files: BTreeMap::new(),
            generation: generation.map(str::to_owned),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let s: Shard =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Unreadable(e.to_string()))?;
        if s.format > FORMAT {
            return Err(ManifestError::Newer(s.format));
        }
        Ok(s)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        to_json(self)
    }
}

/// The folder of the shards of the content in `folder` (relative to the share root):
/// `.fargate-smb\content\<key>`, beside the head `<key>.json`.
pub fn shards_folder(folder: &str) -> String {
    format!(r"{MANIFEST_FOLDER}\{}", folder_key(folder))
}

/// The shard holding the records of the files directly in `within` (relative to the target
/// folder `folder`, empty for the target folder itself), relative to the share root. Named by
/// the same hash as the head, of the folder as NTFS compares names: every spelling of one
/// folder finds one shard.
pub fn shard_path(folder: &str, within: &str) -> String {
    format!(r"{}\{}.json", shards_folder(folder), folder_key(within))
}

/// The lock file writers of `folder`'s manifest hold while they change it (see `store.rs`).
pub fn lock_path(folder: &str) -> String {
    format!(r"{MANIFEST_FOLDER}\{}.lock", folder_key(folder))
}

/// The folder (relative to the target folder) whose shard holds a record: its file's parent.
pub fn record_folder(record: &FileRecord) -> &str {
    content_paths::parent(&record.path)
}

/// The shard key of a folder within the target folder, as [`shard_path`] names it.
pub(crate) fn shard_key(within: &str) -> String {
    folder_key(within)
}

/// The manifest of the content in `folder` (relative to the share root, `\`-separated; empty
/// for the root), relative to the share root: `.fargate-smb\content\<key>.json`.
///
/// The key is a hash of the folder's path as NTFS compares it, so every spelling of one folder
/// (`web`, `WEB`, `web\`) finds one manifest — a replacement that only respells the folder keeps
/// the content — and two folders never share one, whatever their depth or length (a name stays
/// within Windows' 255-unit limit).
pub fn manifest_path(folder: &str) -> String {
    format!(r"{MANIFEST_FOLDER}\{}.json", folder_key(folder))
}

/// Whether two folders (relative to the share root, `\\`-separated) are one, as NTFS compares
/// names: they have one manifest.
pub fn same_folder(a: &str, b: &str) -> bool {
    folder_key(a) == folder_key(b)
}

/// A path as NTFS compares it ([`content_paths::fold`]: each UTF-16 unit upcased through the
/// table NTFS uses, one to one), to match a listing's names with the manifest's paths.
pub(crate) fn ntfs_fold(path: &str) -> String {
    content_paths::fold(path)
}

/// The manifest an earlier version of this resource left in `folder` itself (at
/// [`LEGACY_MANIFEST_NAME`]), if `bytes` (the file found there) is one; otherwise why it is not.
///
/// A file of that name below the top of another resource's folder is that resource's content
/// (the name is reserved at the top only): with WebContent at `F` and another at `F\sub`, the
/// file `F\sub\.fargate-smb-content.json` may be `F`'s. It is this folder's manifest only if it
/// parses as one and what it records names this folder: its `folder` stamp, if any, and the
/// physical id that owns it (a WebContent's id is `\\server\share\folder`), or the id it was
/// taken over from. One that records no owning id predates ownership: it is taken, as
/// [`ownership::Before::Unrecorded`] content always was. Another stack's resource on this very
/// folder is not refused here: as in the new place, its manifest is taken over afresh.
pub fn legacy_manifest(bytes: &[u8], folder: &str) -> Result<Manifest, String> {
    let m = Manifest::parse(bytes).map_err(|e| e.to_string())?;
    if let Some(stamped) = m.folder.as_deref().filter(|f| !same_folder(f, folder)) {
        return Err(format!("it records the folder {stamped:?}"));
    }
    if let Some(o) = &m.ownership {
        let names =
            |id: &str| smb_share::Unc::parse(id).is_ok_and(|unc| same_folder(&unc.path, folder));
        if !names(&o.id) && !o.previous.as_deref().is_some_and(names) {
            return Err(format!(
                "it belongs to {}, which names another folder",
                o.id
            ));
        }
    }
    Ok(m)
}

/// 32 hex digits: FNV-1a (128 bits) of the folded, `\`-joined folder path. Not a cryptographic
/// hash, and it need not be: the folders are named by whoever deploys the stack, and an
/// accidental collision among a share's folders at 128 bits does not happen. It must only stay
/// the same across versions, which a hash of our own guarantees (std's `DefaultHasher` does not).
///
/// The fold is NTFS's ([`content_paths::fold`]): a fold that joined two folders NTFS keeps
/// apart would make them share a manifest, and prune or Delete would then remove one folder's
/// files by the other's list.
fn folder_key(folder: &str) -> String {
    key_of(&content_paths::fold(&normalized(folder)))
}

fn normalized(folder: &str) -> String {
    folder
        .split(['\\', '/'])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\\")
}

fn key_of(folded: &str) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = folded
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    format!("{hash:032x}")
}

/// Where versions before this one kept the manifest of `folder`, when that differs from
/// [`manifest_path`]: they folded with Unicode's simple uppercase (any character whose
/// uppercase is one character), which differs from NTFS's table for a few letters (dotless `ı`,
/// long `ſ`, final `ς`, `µ`, the Greek symbol variants, letters newer than Unicode 5.1, ...).
/// A folder named with one of them finds its manifest there once, and it is moved.
pub fn former_manifest_path(folder: &str) -> Option<String> {
    let former: String = normalized(folder)
        .chars()
        .map(|c| {
            let mut upper = c.to_uppercase();
            match (upper.next(), upper.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect();
    let path = format!(r"{MANIFEST_FOLDER}\{}.json", key_of(&former));
    (path != manifest_path(folder)).then_some(path)
}

/// Why a path is one of the engine's own ([`reserved`]): which of its names it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Under (or at) a top-level [`BOOKKEEPING_FOLDER`].
    Bookkeeping,
    /// [`LEGACY_MANIFEST_NAME`] at the top.
    LegacyManifest,
    /// [`HEALTH_PROBE_NAME`] at the top.
    HealthProbe,
    /// A temporary file ([`TEMP_MARKER`]), anywhere.
    Temporary,
}

impl std::fmt::Display for Reserved {
    /// The reason given when an object is refused that name: what the name is, and the fix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reserved::Bookkeeping => write!(
                f,
                "the top-level {BOOKKEEPING_FOLDER} folder is fargate-smb's own (ShareAcl's records \
                 and the manifests, when the content folder is the share root): move the object below \
                 another folder"
            ),
            Reserved::LegacyManifest => write!(
                f,
                "{LEGACY_MANIFEST_NAME} at the top of the content folder is where earlier versions \
                 kept the manifest, which a Delete may still read: rename the object"
            ),
            Reserved::HealthProbe => write!(
                f,
                "{HEALTH_PROBE_NAME} at the top of the content folder is the health probe \
                 Custom::WebContent writes for the load balancer's health check (any case: NTFS \
                 compares names without it); an object of that name would replace it: rename the \
                 object or move it below a folder"
            ),
            Reserved::Temporary => write!(
                f,
                "names holding {TEMP_MARKER} after a leading dot are fargate-smb's temporary files, \
                 which are swept: rename the object"
            ),
        }
    }
}

/// Which of the engine's own names a path (relative to the target folder) takes, if any: no
/// object may overwrite them and reconciling the folder must leave them alone.
///
/// - anything under a top-level `.fargate-smb` (or a file of that name, which would stop the
///   folder from being made): when the target folder is the share root, that is where ShareAcl's
///   records and the manifests live. The rule holds in every target folder, so a key means the
///   same wherever the content is deployed (content that works in a subfolder works at the
///   root);
/// - [`LEGACY_MANIFEST_NAME`] at the top: a folder deployed by an earlier version keeps its
///   manifest there until its next Create or Update (CloudFormation sends an Update only when
///   the properties change), and its Delete still reads it. An object of that name would
///   overwrite the list of what that Delete may remove, so the name stays reserved for as long
///   as the old location is read: drop both together, never the reservation alone;
/// - [`HEALTH_PROBE_NAME`] at the top: an object there would replace the probe (and a delete
///   event, or a reconcile that finds no object for it, would remove it), turning the health
///   check into a check of the bucket's content. Below the top it is an ordinary name: the
///   probe is only ever at the top of a WebContent's folder;
/// - temporary files (`.<name>.fargate-smb-tmp-<random>`) anywhere.
///
/// Names compare as NTFS compares them: `Fargate-SMB-Health.TXT` is the probe's file.
pub fn reserved(path: &str) -> Option<Reserved> {
    let folded = content_paths::fold(path);
    let first = folded.split('\\').next().unwrap_or_default();
    let name = content_paths::file_name(path);
    if first == content_paths::fold(BOOKKEEPING_FOLDER) {
        Some(Reserved::Bookkeeping)
    } else if folded == content_paths::fold(LEGACY_MANIFEST_NAME) {
        Some(Reserved::LegacyManifest)
    } else if folded == content_paths::fold(HEALTH_PROBE_NAME) {
        Some(Reserved::HealthProbe)
    } else if name.starts_with('.')
        && content_paths::fold(name).contains(&content_paths::fold(TEMP_MARKER))
    {
        Some(Reserved::Temporary)
    } else {
        None
    }
}

/// Whether a path (relative to the target folder) is one of the engine's own ([`reserved`]).
pub fn is_reserved(path: &str) -> bool {
    reserved(path).is_some()
}

/// The reason an object whose file would be `path` is refused, naming the path; `None` if the
/// path is not reserved. The rule's name is always `reserved-by-fargate-smb`.
pub fn reserved_reason(path: &str) -> Option<String> {
    reserved(path).map(|why| format!("{path:?} is reserved: {why}"))
}

/// The stable name of the rule [`reserved`] paths break, as rejections report it.
pub const RESERVED_RULE: &str = "reserved-by-fargate-smb";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tolerant_reading() {
        let mut m = Manifest {
            content_version: Some("3".into()),
            bucket: "b".into(),
            prefix: "site/".into(),
            ..Manifest::default()
        };
        m.files.insert(
            "css/a.css".into(),
            FileRecord {
                path: r"css\a.css".into(),
                size: 12,
                etag: "\"abc\"".into(),
                modified: Some(133_000_000_000_000_000),
            },
        );
        assert_eq!(Manifest::parse(&m.to_bytes().unwrap()).unwrap(), m);
        let minimal = Manifest::parse(br#"{"format": 1}"#).unwrap();
        assert!(minimal.files.is_empty() && minimal.content_version.is_none());
        assert!(matches!(
            Manifest::parse(b"not json"),
            Err(ManifestError::Unreadable(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"format": 9}"#),
            Err(ManifestError::Newer(9))
        ));
    }

    #[test]
    fn a_head_reads_as_a_manifest_of_no_file_to_earlier_versions() {
        let m = Manifest {
            bucket: "b".into(),
            ownership: Some(ownership::Ownership::settled("id")),
            ..Manifest::default()
        };
        let bytes = m.head().to_bytes().unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        // What an earlier version checks: format 1, and `files` (absent) then defaults to none.
        assert_eq!(raw["format"], 1);
        assert!(raw.get("files").is_none());
        let back = Manifest::parse(&bytes).unwrap();
        assert!(back.is_sharded() && back.files.is_empty());
        assert_eq!(back.ownership, m.ownership);
        assert!(
            !Manifest::parse(br#"{"format": 1, "files": {}}"#)
                .unwrap()
                .is_sharded()
        );
        assert!(matches!(
            Manifest::parse(br#"{"format": 1, "sharded": 7}"#),
            Err(ManifestError::Newer(7))
        ));
    }

    #[test]
    fn an_old_place_manifest_is_taken_only_when_it_names_this_folder() {
        let with = |ownership: &str, extra: &str| {
            format!(r#"{{"format": 1, "files": {{}}{ownership}{extra}}}"#).into_bytes()
        };
        let mine = with(r#", "ownership": {"id": "\\\\fs\\share\\web\\sub"}"#, "");
        assert!(legacy_manifest(&mine, r"web\sub").is_ok());
        assert!(
            legacy_manifest(&mine, r"WEB\Sub").is_ok(),
            "NTFS compares names by case"
        );
        // The outer resource's file of that name: its manifest names the outer folder.
        let outer = with(r#", "ownership": {"id": "\\\\fs\\share\\web"}"#, "");
        let why = legacy_manifest(&outer, r"web\sub").unwrap_err();
        assert!(
            why.contains(r"\\fs\share\web") && why.contains("another folder"),
            "{why}"
        );
        // Taken over by this folder's id during a replacement.
        let taken = with(
            r#", "ownership": {"id": "\\\\fs\\share\\other", "previous": "\\\\fs\\share\\web\\sub"}"#,
            "",
        );
        assert!(legacy_manifest(&taken, r"web\sub").is_ok());
        let stamped = with("", r#", "folder": "elsewhere""#);
        assert!(
            legacy_manifest(&stamped, r"web\sub")
                .unwrap_err()
                .contains("elsewhere")
        );
        // Written before ownership was recorded: this folder's, as such content always was.
        assert!(legacy_manifest(&with("", ""), r"web\sub").is_ok());
        // Not a manifest at all.
        assert!(legacy_manifest(br#"{"settings": 1}"#, "web").is_err());
        assert!(legacy_manifest(b"<html>", "web").is_err());
        assert!(legacy_manifest(br#"{"format": 9}"#, "web").is_err());
        assert!(
            legacy_manifest(&with(r#", "ownership": {"id": "not a unc"}"#, ""), "web").is_err()
        );
    }

    #[test]
    fn folders_compare_as_ntfs_names() {
        assert!(same_folder(r"web\Img", r"\WEB\img\"));
        assert!(!same_folder("straße", "STRASSE"));
        assert!(!same_folder(r"web\sub", "web"));
        assert_eq!(ntfs_fold(r"Css\Straße.css"), r"CSS\STRAßE.CSS");
    }

    #[test]
    fn the_engines_own_names_are_reserved() {
        assert!(is_reserved(LEGACY_MANIFEST_NAME));
        assert!(is_reserved(".FARGATE-SMB-CONTENT.JSON"));
        assert!(is_reserved(r"css\.a.css.fargate-smb-tmp-0011aabb"));
        assert!(!is_reserved(r"sub\.fargate-smb-content.json"));
        assert!(!is_reserved("index.html"));
        assert!(!is_reserved("fargate-smb-tmp-notes.txt"));
    }

    #[test]
    fn the_health_probe_is_reserved_at_the_top_only_in_any_case() {
        for top in [
            HEALTH_PROBE_NAME,
            "FARGATE-SMB-HEALTH.TXT",
            "Fargate-SMB-Health.TXT",
        ] {
            assert_eq!(reserved(top), Some(Reserved::HealthProbe), "{top}");
        }
        // Its temporary file, while it is written, is the engine's too.
        assert_eq!(
            reserved(".fargate-smb-health.txt.fargate-smb-tmp-0011aabb"),
            Some(Reserved::Temporary)
        );
        for other in [
            r"subargate-smb-health.txt",
            r"a\FARGATE-SMB-HEALTH.TXT",
            "fargate-smb-health.txt.bak",
            "fargate-smb-health.htm",
            "xfargate-smb-health.txt",
        ] {
            assert!(!is_reserved(other), "{other}");
        }
        let why = reserved_reason("FARGATE-SMB-HEALTH.TXT").unwrap();
        assert!(
            why.starts_with(r#""FARGATE-SMB-HEALTH.TXT" is reserved: "#)
                && why.contains("health probe")
                && why.contains("health check")
                && why.contains("rename the object"),
            "{why}"
        );
        assert_eq!(reserved_reason("index.html"), None);
        assert_eq!(HEALTH_PROBE_BODY, b"ok\n");
    }

    #[test]
    fn each_reserved_name_says_why() {
        let cases = [
            (
                r".fargate-smb\acl\x.json",
                Reserved::Bookkeeping,
                ".fargate-smb folder",
            ),
            (
                LEGACY_MANIFEST_NAME,
                Reserved::LegacyManifest,
                "kept the manifest",
            ),
            (
                r"css\.a.css.fargate-smb-tmp-00ff00ff",
                Reserved::Temporary,
                "temporary files",
            ),
        ];
        for (path, kind, says) in cases {
            assert_eq!(reserved(path), Some(kind), "{path}");
            let why = reserved_reason(path).unwrap();
            assert!(why.contains(says), "{path}: {why}");
        }
    }

    #[test]
    fn the_bookkeeping_folder_is_reserved_at_the_top_only() {
        assert!(is_reserved(r".fargate-smb\content\0123.json"));
        assert!(is_reserved(r".Fargate-SMB\acl\x.json"));
        assert!(
            is_reserved(".fargate-smb"),
            "a file there would stop the folder being made"
        );
        assert!(!is_reserved(r"sub\.fargate-smb\x.json"));
        assert!(!is_reserved(".fargate-smb-notes.txt"));
        assert!(!is_reserved(r".fargate-smbx\a"));
    }

    #[test]
    fn manifests_live_under_the_bookkeeping_folder_one_per_folder() {
        let web = manifest_path("web");
        assert!(web.starts_with(r".fargate-smb\content\"), "{web}");
        assert!(web.ends_with(".json"));
        let key = &web[MANIFEST_FOLDER.len() + 1..web.len() - ".json".len()];
        assert_eq!(key.len(), 32);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Any spelling of one folder, as NTFS compares names.
        assert_eq!(web, manifest_path("WEB"));
        assert_eq!(web, manifest_path(r"\web\"));
        assert_eq!(manifest_path(r"sites\Web"), manifest_path("SITES/web"));
        assert_eq!(manifest_path("café"), manifest_path("CAFÉ"));
        // Other folders, never.
        let others = [
            "",
            "web2",
            r"sites\web",
            r"web\sites",
            "straße",
            "STRASSE",
            "webs",
        ];
        for other in others {
            assert_ne!(web, manifest_path(other), "{other:?}");
        }
        assert_ne!(manifest_path("straße"), manifest_path("STRASSE"));
        // NTFS keeps dotless ı apart from I, and final ς from Σ: so do the manifests. The
        // earlier fold joined them; its name is still looked up, once, for such folders.
        assert_ne!(manifest_path("fıle"), manifest_path("FILE"));
        assert_ne!(manifest_path("λόγος"), manifest_path("ΛΌΓΟΣ"));
        assert_eq!(manifest_path("λόγοσ"), manifest_path("ΛΌΓΟΣ"));
        assert_eq!(former_manifest_path("web"), None);
        assert_eq!(
            former_manifest_path("fıle").as_deref(),
            Some(manifest_path("FILE").as_str())
        );
        assert_ne!(manifest_path(r"a\bc"), manifest_path(r"ab\c"));
        // Deep and long folders still make one short name.
        let deep = vec!["é".repeat(200); 40].join("\\");
        assert_eq!(manifest_path(&deep).len(), web.len());
        // The name is part of the on-share format: it must never change between versions
        // (tests/test_web_content.py derives it independently).
        assert_eq!(
            manifest_path("web"),
            r".fargate-smb\content\a68d11e83b8b5822836dbc795711a939.json"
        );
        assert_eq!(
            manifest_path(""),
            r".fargate-smb\content\6c62272e07bb014262b821756295c58d.json"
        );
    }
}
