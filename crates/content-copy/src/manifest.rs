//! The manifest: which files in the target folder this engine wrote, from which object.
//!
//! It lives in the target folder itself, so it moves with the content and is read with the same
//! credential. Only paths it lists are ever removed (prune, RemoveOnDelete): a file someone put
//! there by hand is never touched.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest's file name in the target folder.
pub const MANIFEST_NAME: &str = ".fargate-smb-content.json";
/// Marks temporary files (`.<name>.fargate-smb-tmp-<random>`) while they are written.
pub const TEMP_MARKER: &str = ".fargate-smb-tmp-";

const FORMAT: u32 = 1;

/// One file written from one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the target folder, `\`-separated.
    pub path: String,
    pub size: u64,
    /// The object's ETag when it was copied; empty when the file may be stale (a failed
    /// re-copy), which forces the next run to copy it again.
    pub etag: String,
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("it is not a manifest this version understands ({0})")]
    Unreadable(String),
    #[error("it has format {0}, newer than this function's {FORMAT}: update the function")]
    Newer(u32),
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Unreadable(e.to_string()))?;
        if m.format > FORMAT {
            return Err(ManifestError::Newer(m.format));
        }
        Ok(m)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain structs of strings and numbers always serialize.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Whether a path (relative to the target folder) is one of the engine's own files, which no
/// object may overwrite.
pub fn is_reserved(path: &str) -> bool {
    let name = content_paths::file_name(path);
    content_paths::fold(path) == content_paths::fold(MANIFEST_NAME)
        || (name.starts_with('.')
            && content_paths::fold(name).contains(&content_paths::fold(TEMP_MARKER)))
}

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
            },
        );
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
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
    fn the_engines_own_names_are_reserved() {
        assert!(is_reserved(MANIFEST_NAME));
        assert!(is_reserved(".FARGATE-SMB-CONTENT.JSON"));
        assert!(is_reserved(r"css\.a.css.fargate-smb-tmp-0011aabb"));
        assert!(!is_reserved(r"sub\.fargate-smb-content.json"));
        assert!(!is_reserved("index.html"));
        assert!(!is_reserved("fargate-smb-tmp-notes.txt"));
    }
}
