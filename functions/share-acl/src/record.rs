//! What this resource changed, kept on the share so Delete can undo exactly that.
//!
//! Why on the share: CloudFormation hands Delete only the properties and the physical id, and
//! the folder's DACL before our change (needed to restore a Replace, or to tell our ACEs from
//! identical ones that were already there) can be larger than a physical id may be. The record
//! sits beside the data it describes, in `.fargate-smb\acl` at the share root, which is made
//! private to administrators before a record is read or written (a protected DACL: whatever the
//! share root grants, the web app's account can neither read a record nor forge one, which would
//! choose the DACL Delete restores); it is written before the DACL changes, so a crash in
//! between still leaves the original recorded.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use smb_share::acl::{Ace, AceKind};

/// fargate-smb's own folder at the share root (WebContent keeps its manifests there too).
pub const BOOKKEEPING_FOLDER: &str = ".fargate-smb";
/// Folder of the records, at the share root.
pub const RECORD_FOLDER: &str = r".fargate-smb\acl";

/// An ACE in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAce {
    pub allow: bool,
    pub flags: u8,
    pub mask: u32,
    pub sid: String,
}

impl From<&Ace> for RecordedAce {
    fn from(a: &Ace) -> Self {
        Self {
            allow: a.kind == AceKind::Allow,
            flags: a.flags,
            mask: a.mask,
            sid: a.sid.clone(),
        }
    }
}

impl From<&RecordedAce> for Ace {
    fn from(r: &RecordedAce) -> Self {
        Ace {
            kind: if r.allow {
                AceKind::Allow
            } else {
                AceKind::Deny
            },
            flags: r.flags,
            mask: r.mask,
            sid: r.sid.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// Who made it: `<stack ARN>/<logical id>`.
    pub owner: String,
    /// The folder, relative to the share root.
    pub folder: String,
    /// `Merge` or `Replace`: how the DACL now differs from `original`.
    pub mode: String,
    /// The folder's DACL before this resource first changed it.
    pub original_protected: bool,
    pub original: Vec<RecordedAce>,
    /// Merge: the ACEs this resource added (grants that were not there already).
    pub added: Vec<RecordedAce>,
    /// The physical id that owns the change (absent in records written before it was kept:
    /// then the record's owner, the logical resource, decides alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<ownership::Ownership>,
}

impl Record {
    pub fn original_aces(&self) -> Vec<Ace> {
        self.original.iter().map(Ace::from).collect()
    }

    pub fn added_aces(&self) -> Vec<Ace> {
        self.added.iter().map(Ace::from).collect()
    }
}

/// `.fargate-smb\acl\<key>.json`, the key a hash of the owner and the folder (case-insensitive,
/// as the share is), so two resources on one folder, or one resource replaced onto another
/// folder, never share a record.
pub fn record_path(owner: &str, folder: &str) -> String {
    let mut h = Sha256::new();
    h.update(owner.as_bytes());
    h.update([0]);
    h.update(folder.to_lowercase().as_bytes());
    let digest = h.finalize();
    let key: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!(r"{RECORD_FOLDER}\{key}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_differ_by_owner_and_folder_not_case() {
        let a = record_path("arn:stack/x/Acl", r"web\img");
        assert!(
            a.starts_with(r".fargate-smb\acl\") && a.ends_with(".json"),
            "{a}"
        );
        assert_eq!(a, record_path("arn:stack/x/Acl", r"WEB\Img"));
        assert_ne!(a, record_path("arn:stack/x/Acl2", r"web\img"));
        assert_ne!(a, record_path("arn:stack/x/Acl", r"web"));
    }

    #[test]
    fn aces_round_trip() {
        let ace = Ace {
            kind: AceKind::Deny,
            flags: 0x13,
            mask: 0x1f01ff,
            sid: "S-1-5-32-544".into(),
        };
        assert_eq!(Ace::from(&RecordedAce::from(&ace)), ace);
    }
}
