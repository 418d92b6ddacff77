//! Deciding what to do, without doing it: which objects to copy, which are unchanged, which keys
//! cannot be files on a Windows share, and which files of an earlier copy are no longer in the
//! source. Pure, so every decision is unit-tested.

use crate::manifest::{
    FileRecord, Manifest, RESERVED_RULE, is_reserved, ntfs_fold, reserved_reason,
};
use content_paths::{Mapped, fold, share_path};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// One object to copy, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub key: String,
    /// The key below the prefix: the manifest's index.
    pub relative: String,
    /// Relative to the target folder, `\`-separated.
    pub path: String,
    pub size: u64,
    pub etag: String,
}

impl Work {
    /// The record of this object's file, without a last-write time.
    pub fn record(&self) -> FileRecord {
        FileRecord {
            path: self.path.clone(),
            size: self.size,
            etag: self.etag.clone(),
            modified: None,
        }
    }

    /// The record of this object's file as the copy left it (`modified` from the renamed file).
    pub fn record_written(&self, modified: u64) -> FileRecord {
        FileRecord {
            modified: Some(modified),
            ..self.record()
        }
    }
}

/// A key that cannot be copied, with the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub key: String,
    /// A short, stable name of the rule (`dot-segment`, `reserved-name`, `case-collision`...).
    pub rule: &'static str,
    pub reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub copy: Vec<Work>,
    pub unchanged: Vec<Work>,
    pub rejected: Vec<Rejected>,
    /// Keys ending in `/`: nothing to copy.
    pub folder_markers: usize,
    /// Files of an earlier copy whose object is gone from the source (removed only with prune).
    pub stale: Vec<(String, FileRecord)>,
    /// Manifest entries whose file now belongs to another key (a key renamed only in case), or
    /// to the engine (a name reserved since the object was copied): dropped, never removed.
    pub superseded: Vec<String>,
}

/// Compare the listing with the manifest. `prefix` is normalized ([`content_paths::normalize_prefix`]);
/// `force` copies every object whatever the manifest says.
pub fn plan(objects: &[Object], prefix: &str, manifest: &Manifest, force: bool) -> Plan {
    let mut out = Plan::default();
    let mut sorted: Vec<&Object> = objects.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));

    // Case-folded paths taken so far: files (to the key that owns them) and their folders.
    let mut files: HashMap<String, &str> = HashMap::new();
    let mut folders: HashMap<String, &str> = HashMap::new();
    let mut accepted: BTreeSet<&str> = BTreeSet::new();

    for object in sorted {
        let Some(relative) = content_paths::relative_key(&object.key, prefix) else {
            continue;
        };
        let path = match share_path(relative) {
            Ok(Mapped::FolderMarker) => {
                out.folder_markers += 1;
                continue;
            }
            Ok(Mapped::File(path)) => path,
            Err(rule) => {
                out.rejected.push(Rejected {
                    key: object.key.clone(),
                    rule: rule.name(),
                    reason: rule.to_string(),
                });
                continue;
            }
        };
        if let Some(conflict) = conflict(&path, &files, &folders) {
            out.rejected.push(Rejected {
                key: object.key.clone(),
                rule: conflict.0,
                reason: conflict.1,
            });
            continue;
        }
        let folded = fold(&path);
        let mut ancestor = folded.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('\\') {
            folders.entry(parent.to_owned()).or_insert(&object.key);
            ancestor = parent;
        }
        files.insert(folded, &object.key);
        accepted.insert(relative);

        let work = Work {
            key: object.key.clone(),
            relative: relative.to_owned(),
            path,
            size: object.size,
            etag: object.etag.clone(),
        };
        let same = manifest.files.get(relative).is_some_and(|r| {
            r.path == work.path && r.size == work.size && !r.etag.is_empty() && r.etag == work.etag
        });
        if same && !force {
            out.unchanged.push(work);
        } else {
            out.copy.push(work);
        }
    }

    for (relative, record) in &manifest.files {
        if accepted.contains(relative.as_str()) {
            continue;
        }
        // Another key now writes this very file (Windows names ignore case): it is not stale,
        // and removing it would delete the new content. The same holds for a file whose name
        // became one of the engine's own after an earlier version copied an object there (the
        // health probe's): the file is the engine's now, and pruning it would take the probe down.
        if files.contains_key(&fold(&record.path)) || is_reserved(&record.path) {
            out.superseded.push(relative.clone());
        } else {
            out.stale.push((relative.clone(), record.clone()));
        }
    }
    out
}

fn conflict(
    path: &str,
    files: &HashMap<String, &str>,
    folders: &HashMap<String, &str>,
) -> Option<(&'static str, String)> {
    if let Some(reason) = reserved_reason(path) {
        return Some((RESERVED_RULE, reason));
    }
    let folded = fold(path);
    if let Some(other) = files.get(&folded) {
        return Some((
            "case-collision",
            format!("same file as key {other:?} on Windows, where names are not case-sensitive"),
        ));
    }
    if let Some(other) = folders.get(&folded) {
        return Some((
            "file-folder-collision",
            format!("{path:?} is also a folder, of key {other:?}"),
        ));
    }
    let mut ancestor = folded.as_str();
    while let Some((parent, _)) = ancestor.rsplit_once('\\') {
        if let Some(other) = files.get(parent) {
            return Some((
                "file-folder-collision",
                format!("its folder is the file of key {other:?}"),
            ));
        }
        ancestor = parent;
    }
    None
}

/// Which files a manifest lists are in the target folder as recorded, from a walk of it
/// (`Share::walk`): the records whose file is missing, a folder, of another size, or (when the
/// record has one) of another last-write time are [`Presence::missing`]. Paths compare as NTFS
/// compares names.
#[derive(Debug)]
pub struct Presence {
    /// By the recorded path, folded.
    records: HashMap<String, Recorded>,
    /// Every folder (folded) that holds a recorded file: the only ones worth listing.
    folders: BTreeSet<String>,
}

#[derive(Debug)]
struct Recorded {
    key: String,
    size: u64,
    modified: Option<u64>,
    present: bool,
}

impl Presence {
    pub fn of(manifest: &Manifest) -> Self {
        let mut records = HashMap::new();
        let mut folders = BTreeSet::new();
        for (key, r) in &manifest.files {
            let path = ntfs_fold(&r.path);
            let mut parent = content_paths::parent(&path);
            while !parent.is_empty() {
                folders.insert(parent.to_owned());
                parent = content_paths::parent(parent);
            }
            let recorded = Recorded {
                key: key.clone(),
                size: r.size,
                modified: r.modified,
                present: false,
            };
            records.insert(path, recorded);
        }
        Self { records, folders }
    }

    /// One entry of the listing of `folder` (relative to the target folder); whether to list it
    /// too (a folder that holds recorded files). `modified` is the entry's last-write time: a
    /// record that has one must match it, or the file was changed since the copy.
    pub fn visit(
        &mut self,
        folder: &str,
        name: &str,
        is_dir: bool,
        size: u64,
        modified: u64,
    ) -> bool {
        let path = ntfs_fold(&content_paths::join(folder, name));
        if is_dir {
            return self.folders.contains(&path);
        }
        if let Some(r) = self.records.get_mut(&path) {
            r.present = r.size == size && r.modified.is_none_or(|m| m == modified);
        }
        false
    }

    /// The keys whose file was not seen as recorded, sorted.
    pub fn missing(self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .records
            .into_values()
            .filter(|r| !r.present)
            .map(|r| r.key)
            .collect();
        keys.sort();
        keys
    }
}

/// The folders (relative to the target folder) the files to copy need, parents before children.
pub fn folders_needed(work: &[Work]) -> Vec<String> {
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    for w in work {
        let mut parent = content_paths::parent(&w.path);
        while !parent.is_empty() {
            // One spelling per folder, whatever the case of the keys.
            set.entry(fold(parent)).or_insert_with(|| parent.to_owned());
            parent = content_paths::parent(parent);
        }
    }
    let mut out: Vec<String> = set.into_values().collect();
    out.sort_by_key(|p| p.matches('\\').count());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64, etag: &str) -> Object {
        Object {
            key: key.into(),
            size,
            etag: etag.into(),
        }
    }

    fn manifest(entries: &[(&str, &str, u64, &str)]) -> Manifest {
        let mut m = Manifest::default();
        for (key, path, size, etag) in entries {
            m.files.insert(
                (*key).into(),
                FileRecord {
                    path: (*path).into(),
                    size: *size,
                    etag: (*etag).into(),
                    modified: None,
                },
            );
        }
        m
    }

    fn keys(w: &[Work]) -> Vec<&str> {
        w.iter().map(|w| w.relative.as_str()).collect()
    }

    #[test]
    fn first_copy_takes_everything_under_the_prefix() {
        let objects = [
            obj("site/index.html", 10, "e1"),
            obj("site/css/a.css", 5, "e2"),
            obj("site/img/", 0, "e0"),
            obj("site-old/x.html", 1, "e3"),
        ];
        let p = plan(&objects, "site/", &Manifest::default(), false);
        assert_eq!(keys(&p.copy), ["css/a.css", "index.html"]);
        assert_eq!(p.copy[0].path, r"css\a.css");
        assert_eq!(p.folder_markers, 1);
        assert!(p.unchanged.is_empty() && p.rejected.is_empty() && p.stale.is_empty());
    }

    #[test]
    fn unchanged_means_same_size_etag_and_path() {
        let m = manifest(&[
            ("a.txt", "a.txt", 1, "e1"),
            ("b.txt", "b.txt", 2, "e2"),
            ("c.txt", "c.txt", 3, "e3"),
            ("d.txt", "d.txt", 4, ""),
        ]);
        let objects = [
            obj("a.txt", 1, "e1"),
            obj("b.txt", 2, "CHANGED"),
            obj("c.txt", 30, "e3"),
            obj("d.txt", 4, ""),
        ];
        let p = plan(&objects, "", &m, false);
        assert_eq!(keys(&p.unchanged), ["a.txt"]);
        // A record with no ETag is a file a failed re-copy may have left stale.
        assert_eq!(keys(&p.copy), ["b.txt", "c.txt", "d.txt"]);
        let forced = plan(&objects, "", &m, true);
        assert_eq!(forced.copy.len(), 4);
        assert!(forced.unchanged.is_empty());
    }

    #[test]
    fn objects_gone_from_the_source_are_stale() {
        let m = manifest(&[
            ("a.txt", "a.txt", 1, "e1"),
            ("gone.txt", "gone.txt", 1, "e9"),
        ]);
        let p = plan(&[obj("a.txt", 1, "e1")], "", &m, false);
        assert_eq!(p.stale.len(), 1);
        assert_eq!(p.stale[0].0, "gone.txt");
        assert!(p.superseded.is_empty());
    }

    #[test]
    fn a_key_renamed_only_in_case_supersedes_rather_than_goes_stale() {
        let m = manifest(&[("Index.html", "Index.html", 1, "e1")]);
        let p = plan(&[obj("index.html", 1, "e1")], "", &m, false);
        assert_eq!(keys(&p.copy), ["index.html"]);
        assert!(
            p.stale.is_empty(),
            "pruning Index.html would delete index.html"
        );
        assert_eq!(p.superseded, ["Index.html"]);
    }

    #[test]
    fn bad_keys_are_rejected_with_their_rule() {
        let objects = [
            obj("../x", 1, "e"),
            obj("a/CON.txt", 1, "e"),
            obj("a:b", 1, "e"),
            obj("dir/trail.", 1, "e"),
            obj("ctl\u{1}", 1, "e"),
            obj("ok.txt", 1, "e"),
        ];
        let p = plan(&objects, "", &Manifest::default(), false);
        assert_eq!(keys(&p.copy), ["ok.txt"]);
        let rules: Vec<(&str, &str)> = p
            .rejected
            .iter()
            .map(|r| (r.key.as_str(), r.rule))
            .collect();
        assert_eq!(
            rules,
            [
                ("../x", "dot-segment"),
                ("a/CON.txt", "reserved-name"),
                ("a:b", "colon"),
                ("ctl\u{1}", "control-character"),
                ("dir/trail.", "trailing-dot-or-space"),
            ]
        );
    }

    #[test]
    fn collisions_windows_would_make() {
        let objects = [
            obj("A.txt", 1, "e"),
            obj("a.txt", 1, "e"),
            obj("f", 1, "e"),
            obj("f/inside.txt", 1, "e"),
            obj("dir/x.txt", 1, "e"),
            obj("DIR", 1, "e"),
            obj(".fargate-smb-content.json", 1, "e"),
            obj("css/.a.css.fargate-smb-tmp-1234abcd", 1, "e"),
            obj("sub/.fargate-smb-content.json", 1, "e"),
            obj(".fargate-smb/content/0123.json", 1, "e"),
            obj(".FARGATE-SMB/acl/x.json", 1, "e"),
            obj("sub/.fargate-smb/x.json", 1, "e"),
        ];
        let p = plan(&objects, "", &Manifest::default(), false);
        let rules: BTreeMap<&str, &str> = p
            .rejected
            .iter()
            .map(|r| (r.key.as_str(), r.rule))
            .collect();
        assert_eq!(rules.get("a.txt"), Some(&"case-collision"));
        assert_eq!(rules.get("f/inside.txt"), Some(&"file-folder-collision"));
        assert_eq!(rules.get("dir/x.txt"), Some(&"file-folder-collision"));
        assert_eq!(
            rules.get(".fargate-smb-content.json"),
            Some(&"reserved-by-fargate-smb")
        );
        assert_eq!(
            rules.get("css/.a.css.fargate-smb-tmp-1234abcd"),
            Some(&"reserved-by-fargate-smb")
        );
        for key in [".fargate-smb/content/0123.json", ".FARGATE-SMB/acl/x.json"] {
            assert_eq!(rules.get(key), Some(&"reserved-by-fargate-smb"), "{key}");
        }
        assert_eq!(
            keys(&p.copy),
            [
                "A.txt",
                "DIR",
                "f",
                "sub/.fargate-smb-content.json",
                "sub/.fargate-smb/x.json"
            ]
        );
    }

    #[test]
    fn the_health_probe_name_is_rejected_at_the_top_and_ordinary_below() {
        let objects = [
            obj("site/fargate-smb-health.txt", 3, "e1"),
            obj("site/FARGATE-SMB-HEALTH.TXT", 3, "e2"),
            obj("site/sub/fargate-smb-health.txt", 8, "e3"),
            obj("site/index.html", 1, "e4"),
        ];
        let p = plan(&objects, "site/", &Manifest::default(), false);
        assert_eq!(keys(&p.copy), ["index.html", "sub/fargate-smb-health.txt"]);
        let rejected: Vec<(&str, &str)> = p
            .rejected
            .iter()
            .map(|r| (r.key.as_str(), r.rule))
            .collect();
        assert_eq!(
            rejected,
            [
                ("site/FARGATE-SMB-HEALTH.TXT", "reserved-by-fargate-smb"),
                ("site/fargate-smb-health.txt", "reserved-by-fargate-smb"),
            ]
        );
        assert!(
            p.rejected.iter().all(|r| r.reason.contains("health probe")),
            "{:?}",
            p.rejected
        );
    }

    #[test]
    fn a_record_of_a_name_reserved_since_is_dropped_never_pruned() {
        // An earlier version copied an object to the probe's name; the probe is there now.
        let m = manifest(&[
            ("fargate-smb-health.txt", "fargate-smb-health.txt", 3, "e1"),
            ("gone.txt", "gone.txt", 1, "e2"),
        ]);
        let p = plan(&[obj("fargate-smb-health.txt", 3, "e1")], "", &m, false);
        assert!(p.copy.is_empty() && p.unchanged.is_empty());
        assert_eq!(p.superseded, ["fargate-smb-health.txt"]);
        let stale: Vec<&str> = p.stale.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(stale, ["gone.txt"], "pruning it would take the probe down");
    }

    #[test]
    fn presence_descends_only_where_records_are_and_checks_sizes() {
        let m = manifest(&[
            ("index.html", "index.html", 10, "e1"),
            ("css/a.css", r"css\a.css", 5, "e2"),
            ("img/deep/logo.png", r"img\deep\logo.png", 7, "e3"),
            ("gone.txt", "gone.txt", 1, "e4"),
            ("Edited.txt", "Edited.txt", 3, "e5"),
        ]);
        let mut p = Presence::of(&m);
        // The listing of the target folder: names as the server has them, any case.
        assert!(!p.visit("", "INDEX.HTML", false, 10, 0));
        assert!(p.visit("", "CSS", true, 0, 0), "holds a recorded file");
        assert!(p.visit("", "img", true, 0, 0));
        assert!(
            !p.visit("", "other-site", true, 0, 0),
            "nothing recorded below: not listed"
        );
        assert!(!p.visit("", "edited.txt", false, 30, 0));
        assert!(!p.visit("", "foreign.txt", false, 1, 0));
        assert!(!p.visit("CSS", "a.css", false, 5, 0));
        assert!(p.visit("img", "deep", true, 0, 0));
        // img\deep\logo.png is a folder now: not the recorded file.
        assert!(!p.visit(r"img\deep", "logo.png", true, 0, 0));
        assert_eq!(p.missing(), ["Edited.txt", "gone.txt", "img/deep/logo.png"]);
        // A record that knows its file's last-write time: the same size at another time is a
        // change made on the share (by hand), so the file is copied again.
        let mut timed = manifest(&[("a.txt", "a.txt", 4, "e1"), ("b.txt", "b.txt", 4, "e2")]);
        for r in timed.files.values_mut() {
            r.modified = Some(1000);
        }
        let mut t = Presence::of(&timed);
        t.visit("", "a.txt", false, 4, 1000);
        t.visit("", "b.txt", false, 4, 2000);
        assert_eq!(t.missing(), ["b.txt"]);
        // An empty (or recreated) folder: everything is missing.
        assert_eq!(Presence::of(&m).missing().len(), 5);
    }

    #[test]
    fn folders_come_parents_first_once_each() {
        let p = plan(
            &[
                obj("a/b/c/x", 1, "e"),
                obj("a/b/y", 1, "e"),
                obj("A/z", 1, "e"),
                obj("top", 1, "e"),
            ],
            "",
            &Manifest::default(),
            false,
        );
        let folders = folders_needed(&p.copy);
        assert_eq!(folders.len(), 3, "{folders:?}");
        assert_eq!(folders[0].to_uppercase(), "A");
        assert_eq!(folders[1], r"a\b");
        assert_eq!(folders[2], r"a\b\c");
    }
}
