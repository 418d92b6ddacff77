//! Object keys to Windows share paths, safely.
//!
//! An S3 key is any UTF-8 string up to 1,024 bytes; a path on an SMB share is not. A key such as
//! `../web.config` would escape the target folder, `a:b` would write the alternate data stream
//! `b` of the file `a`, `CON.txt` names a device that the server refuses (or worse, a client
//! later misreads), and `index.html.` is silently stored as `index.html` by Windows, so two keys
//! would land on one file. [`share_path`] accepts a key only when it maps to exactly the file its
//! name says, and otherwise says which rule it breaks.
//!
//! The crate knows nothing of S3 or SMB: the copy engine and the event-driven sync both use it.

use std::fmt;

pub mod invariants;
mod upcase;

pub use upcase::{upcase_char, upcase_unit};

/// Windows limits one name (a path segment) to 255 UTF-16 code units.
pub const MAX_SEGMENT_UNITS: usize = 255;
/// SMB2 carries paths of up to 32,767 UTF-16 code units (the `\\?\` limit of Windows).
pub const MAX_PATH_UNITS: usize = 32_767;

/// Characters Windows does not allow in a name, besides `\`, `/`, `:` and control characters,
/// which have rules of their own.
const INVALID_CHARS: &[char] = &['<', '>', '"', '|', '?', '*'];

/// Device names Win32 (and the Windows SMB server) resolve in any folder, with any extension.
/// The superscript digits are in the list because Windows treats them as the digits 1-3.
const RESERVED_NAMES: &[&str] = &[
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "CONIN$",
    "CONOUT$",
    "COM1",
    "COM2",
    "COM3",
    "COM4",
    "COM5",
    "COM6",
    "COM7",
    "COM8",
    "COM9",
    "COM\u{b9}",
    "COM\u{b2}",
    "COM\u{b3}",
    "LPT1",
    "LPT2",
    "LPT3",
    "LPT4",
    "LPT5",
    "LPT6",
    "LPT7",
    "LPT8",
    "LPT9",
    "LPT\u{b9}",
    "LPT\u{b2}",
    "LPT\u{b3}",
];

/// What a key maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// A file at this path, relative to the target folder, segments joined with `\`.
    File(String),
    /// A key ending in `/`: the "folder" object the S3 console creates. Nothing to copy.
    FolderMarker,
}

/// Why a key (or folder) cannot be used as a path on the share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    #[error("absolute path (it starts with {0:?})")]
    Absolute(char),
    #[error("drive letter {0:?}")]
    DriveLetter(String),
    #[error("empty path segment (two / in a row)")]
    EmptySegment,
    #[error("{0:?} segment (a relative folder reference)")]
    DotSegment(String),
    #[error("backslash in {0:?} (Windows reads it as a folder separator)")]
    Backslash(String),
    #[error("colon in {0:?} (Windows reads it as an alternate data stream or a drive)")]
    Colon(String),
    #[error("control character {code} in {segment:?}")]
    ControlCharacter { segment: String, code: String },
    #[error("character {character:?} in {segment:?} is not allowed in Windows names")]
    InvalidCharacter { segment: String, character: char },
    #[error("trailing dot or space in {0:?} (Windows drops it, so the name would change)")]
    TrailingDotOrSpace(String),
    #[error("reserved Windows device name {name} in {segment:?}")]
    ReservedName { segment: String, name: String },
    #[error(
        "name {segment:?} is {units} UTF-16 units long, over Windows' {MAX_SEGMENT_UNITS}",
        segment = abbreviate(.segment)
    )]
    SegmentTooLong { segment: String, units: usize },
    #[error("path is {0} UTF-16 units long, over the {MAX_PATH_UNITS} SMB allows")]
    PathTooLong(usize),
}

impl Rule {
    /// A short, stable name for the rule, for logs and summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Absolute(_) => "absolute-path",
            Rule::DriveLetter(_) => "drive-letter",
            Rule::EmptySegment => "empty-segment",
            Rule::DotSegment(_) => "dot-segment",
            Rule::Backslash(_) => "backslash",
            Rule::Colon(_) => "colon",
            Rule::ControlCharacter { .. } => "control-character",
            Rule::InvalidCharacter { .. } => "invalid-character",
            Rule::TrailingDotOrSpace(_) => "trailing-dot-or-space",
            Rule::ReservedName { .. } => "reserved-name",
            Rule::SegmentTooLong { .. } => "segment-too-long",
            Rule::PathTooLong(_) => "path-too-long",
        }
    }
}

fn abbreviate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A key (relative to the source prefix) to its path on the share, relative to the target folder.
pub fn share_path(relative_key: &str) -> Result<Mapped, Rule> {
    // Checked before the folder-marker test: `/` alone or `\x/` are still not ours to create.
    if let Some(first) = relative_key
        .chars()
        .next()
        .filter(|c| matches!(c, '/' | '\\'))
    {
        return Err(Rule::Absolute(first));
    }
    if relative_key.is_empty() || relative_key.ends_with('/') {
        return Ok(Mapped::FolderMarker);
    }
    if let Some(drive) = drive_letter(relative_key) {
        return Err(Rule::DriveLetter(drive));
    }
    let mut path = String::with_capacity(relative_key.len());
    for segment in relative_key.split('/') {
        check_segment(segment)?;
        if !path.is_empty() {
            path.push('\\');
        }
        path.push_str(segment);
    }
    let units = path.encode_utf16().count();
    if units > MAX_PATH_UNITS {
        return Err(Rule::PathTooLong(units));
    }
    Ok(Mapped::File(path))
}

/// A folder given by a person (`web`, `sites/web`, `\sites\web\`) to its share path relative to
/// the share root, `\`-separated; the empty string is the root. Both separators are accepted and
/// surrounding separators ignored; every segment must pass the same rules as a key's.
pub fn folder_path(folder: &str) -> Result<String, Rule> {
    let trimmed = folder.trim_matches(|c| c == '/' || c == '\\');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if let Some(drive) = drive_letter(trimmed) {
        return Err(Rule::DriveLetter(drive));
    }
    let segments: Vec<&str> = trimmed.split(['/', '\\']).collect();
    for segment in &segments {
        check_segment(segment)?;
    }
    Ok(segments.join("\\"))
}

/// The source prefix as a folder: empty, or ending in exactly one `/`. A prefix `site` then
/// means the keys under `site/`, never `site-old/...` or `site.html`.
pub fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// The part of `key` below `prefix` (as [`normalize_prefix`] returns it), or `None` if the key is
/// not under it.
pub fn relative_key<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)
}

/// `folder\path`, or `path` when the folder is the share root.
pub fn join(folder: &str, path: &str) -> String {
    match (folder.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => folder.to_owned(),
        (false, false) => format!("{folder}\\{path}"),
    }
}

/// The comparison form of a path: two paths are one file on an NTFS share exactly when their
/// folds are equal. Each character is upcased on its own, as NTFS's `$UpCase` table does
/// ([`upcase_char`]): `A.txt` and `a.txt` are one file, `straße` and `STRASSE` are two, and so
/// are `ﬁle` and `FILE`, `ı` and `I`, `ς` and `Σ`. The fold has the length of the path in UTF-16
/// units, keeps every ASCII character ASCII and every other character non-ASCII (so `/`, `\`,
/// `.`, `:` and the device names are where they were), and folding twice changes nothing.
pub fn fold(path: &str) -> String {
    path.chars().map(upcase_char).collect()
}

/// The folder part of a `\`-separated path (empty at the top).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('\\').map(|(p, _)| p).unwrap_or("")
}

/// The last segment of a `\`-separated path.
pub fn file_name(path: &str) -> &str {
    path.rsplit_once('\\').map(|(_, n)| n).unwrap_or(path)
}

/// `C:`, `C:/...`, `C:\...`. (`a:b` is reported as a colon: joined below the target folder it
/// would name the stream `b` of the file `a`.)
fn drive_letter(path: &str) -> Option<String> {
    let mut chars = path.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (Some(letter), Some(':'), None | Some('/' | '\\')) if letter.is_ascii_alphabetic() => {
            Some(format!("{letter}:"))
        }
        _ => None,
    }
}

fn check_segment(segment: &str) -> Result<(), Rule> {
    if segment.is_empty() {
        return Err(Rule::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(Rule::DotSegment(segment.to_owned()));
    }
    if segment.contains('\\') {
        return Err(Rule::Backslash(segment.to_owned()));
    }
    if segment.contains(':') {
        return Err(Rule::Colon(segment.to_owned()));
    }
    if let Some(c) = segment.chars().find(|c| c.is_ascii_control()) {
        return Err(Rule::ControlCharacter {
            segment: segment.escape_default().to_string(),
            code: format!("U+{:04X}", u32::from(c)),
        });
    }
    if let Some(c) = segment.chars().find(|c| INVALID_CHARS.contains(c)) {
        return Err(Rule::InvalidCharacter {
            segment: segment.to_owned(),
            character: c,
        });
    }
    if segment.ends_with(['.', ' ']) {
        return Err(Rule::TrailingDotOrSpace(segment.to_owned()));
    }
    if let Some(name) = reserved_name(segment) {
        return Err(Rule::ReservedName {
            segment: segment.to_owned(),
            name: name.to_owned(),
        });
    }
    let units = segment.encode_utf16().count();
    if units > MAX_SEGMENT_UNITS {
        return Err(Rule::SegmentTooLong {
            segment: segment.to_owned(),
            units,
        });
    }
    Ok(())
}

/// Win32 compares the part before the first dot, with trailing spaces dropped (`nul .txt` is
/// the device too), case-insensitively.
fn reserved_name(segment: &str) -> Option<&'static str> {
    let stem = segment
        .split('.')
        .next()
        .unwrap_or(segment)
        .trim_end_matches(' ');
    let upper = stem.to_uppercase();
    RESERVED_NAMES.iter().copied().find(|r| *r == upper)
}

impl fmt::Display for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mapped::File(p) => f.write_str(p),
            Mapped::FolderMarker => f.write_str("(folder marker)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(key: &str) -> String {
        match share_path(key) {
            Ok(Mapped::File(p)) => p,
            other => panic!("{key:?}: {other:?}"),
        }
    }

    fn rule(key: &str) -> Rule {
        match share_path(key) {
            Err(r) => r,
            ok => panic!("{key:?} was accepted: {ok:?}"),
        }
    }

    #[test]
    fn ordinary_keys_map_to_backslashed_paths() {
        assert_eq!(file("index.html"), "index.html");
        assert_eq!(file("css/site.min.css"), r"css\site.min.css");
        assert_eq!(file("a/b/c/d.txt"), r"a\b\c\d.txt");
        assert_eq!(file("Ünïcødé/日本語.txt"), r"Ünïcødé\日本語.txt");
        assert_eq!(
            file(".well-known/security.txt"),
            r".well-known\security.txt"
        );
        assert_eq!(
            file("with space/file name.txt"),
            r"with space\file name.txt"
        );
        assert_eq!(file(" leading-space-is-fine"), " leading-space-is-fine");
        assert_eq!(file("...hidden"), "...hidden");
        assert_eq!(file("a.b.c"), "a.b.c");
    }

    #[test]
    fn folder_markers_are_skipped_not_rejected() {
        assert_eq!(share_path("img/"), Ok(Mapped::FolderMarker));
        assert_eq!(share_path("a/b/"), Ok(Mapped::FolderMarker));
        assert_eq!(share_path(""), Ok(Mapped::FolderMarker));
    }

    #[test]
    fn dot_and_empty_segments() {
        assert_eq!(rule("../x"), Rule::DotSegment("..".into()));
        assert_eq!(rule("a/../../x"), Rule::DotSegment("..".into()));
        assert_eq!(rule("./x"), Rule::DotSegment(".".into()));
        assert_eq!(rule("a/.."), Rule::DotSegment("..".into()));
        assert_eq!(rule("a//b"), Rule::EmptySegment);
        assert_eq!(rule("../x").name(), "dot-segment");
    }

    #[test]
    fn absolute_paths_and_drive_letters() {
        assert_eq!(rule("/etc/passwd"), Rule::Absolute('/'));
        assert_eq!(rule("\\windows\\win.ini"), Rule::Absolute('\\'));
        assert_eq!(rule("/"), Rule::Absolute('/'));
        assert_eq!(rule("C:/x.txt"), Rule::DriveLetter("C:".into()));
        assert_eq!(rule("c:\\x"), Rule::DriveLetter("c:".into()));
        assert_eq!(rule("C:").name(), "drive-letter");
    }

    #[test]
    fn colons_anywhere_are_alternate_data_streams() {
        assert_eq!(rule("a:b"), Rule::Colon("a:b".into()));
        assert_eq!(
            rule("dir/file.txt:secret"),
            Rule::Colon("file.txt:secret".into())
        );
        assert_eq!(rule("x/C:"), Rule::Colon("C:".into()));
        assert_eq!(rule("file::$DATA").name(), "colon");
    }

    #[test]
    fn reserved_device_names_with_or_without_extension() {
        for key in [
            "CON",
            "con",
            "a/CON.txt",
            "nul.txt",
            "Nul.tar.gz",
            "aux",
            "PRN.html",
            "com1",
            "COM9.log",
            "lpt1",
            "LPT9.x",
            "nul .txt",
            "COM\u{b9}",
            "lpt\u{b3}.txt",
            "CONIN$",
            "conout$.x",
        ] {
            let r = rule(key);
            assert_eq!(r.name(), "reserved-name", "{key}: {r}");
        }
        assert_eq!(
            rule("a/CON.txt"),
            Rule::ReservedName {
                segment: "CON.txt".into(),
                name: "CON".into()
            }
        );
        // Similar names are fine.
        for key in [
            "console.txt",
            "com10",
            "lpt0",
            "com0.c",
            "nul-device",
            "aux_file",
            "xcon",
        ] {
            file(key);
        }
    }

    #[test]
    fn trailing_dots_and_spaces() {
        assert_eq!(
            rule("dir/trail."),
            Rule::TrailingDotOrSpace("trail.".into())
        );
        assert_eq!(rule("trail "), Rule::TrailingDotOrSpace("trail ".into()));
        assert_eq!(
            rule("folder./x"),
            Rule::TrailingDotOrSpace("folder.".into())
        );
        assert_eq!(rule("folder /x").name(), "trailing-dot-or-space");
        assert_eq!(rule("a/...").name(), "trailing-dot-or-space");
    }

    #[test]
    fn control_characters() {
        let r = rule("a\u{7}b");
        assert_eq!(
            r,
            Rule::ControlCharacter {
                segment: "a\\u{7}b".into(),
                code: "U+0007".into()
            }
        );
        assert!(r.to_string().contains("U+0007"), "{r}");
        for key in [
            "x\u{0}",
            "tab\there",
            "new\nline",
            "del\u{7f}",
            "dir\u{1f}/f",
        ] {
            assert_eq!(rule(key).name(), "control-character", "{key:?}");
        }
    }

    #[test]
    fn characters_windows_forbids() {
        for c in ['<', '>', '"', '|', '?', '*'] {
            let key = format!("dir/a{c}b.txt");
            assert_eq!(
                rule(&key),
                Rule::InvalidCharacter {
                    segment: format!("a{c}b.txt"),
                    character: c
                }
            );
        }
        assert_eq!(rule("a\\b"), Rule::Backslash("a\\b".into()));
        assert_eq!(rule("x/..\\evil").name(), "backslash");
    }

    #[test]
    fn over_long_names() {
        file(&"a".repeat(255));
        // An astral character is two UTF-16 units: 127 of them are 254 units, 128 are 256.
        file(&"😀".repeat(127));
        let r = rule(&format!("d/{}", "😀".repeat(128)));
        assert!(matches!(r, Rule::SegmentTooLong { units: 256, .. }), "{r}");
        let r = rule(&"b".repeat(256));
        assert!(r.to_string().contains("256 UTF-16 units"), "{r}");
        assert!(r.to_string().len() < 200, "the reason is abbreviated: {r}");
        let deep = vec!["x".repeat(200); 170].join("/");
        assert!(matches!(rule(&deep), Rule::PathTooLong(_)));
    }

    #[test]
    fn reasons_name_the_rule_and_the_segment() {
        assert_eq!(
            rule("../x").to_string(),
            "\"..\" segment (a relative folder reference)"
        );
        assert!(rule("a:b").to_string().contains("alternate data stream"));
        assert!(rule("a/CON.txt").to_string().contains("device name CON"));
        assert!(rule("dir/trail.").to_string().contains("\"trail.\""));
    }

    #[test]
    fn folders() {
        assert_eq!(folder_path("web"), Ok("web".into()));
        assert_eq!(folder_path("/sites/web/"), Ok(r"sites\web".into()));
        assert_eq!(folder_path(r"\sites\web"), Ok(r"sites\web".into()));
        assert_eq!(folder_path(""), Ok(String::new()));
        assert_eq!(folder_path("/"), Ok(String::new()));
        assert_eq!(folder_path("a/../b"), Err(Rule::DotSegment("..".into())));
        assert_eq!(folder_path("C:/web"), Err(Rule::DriveLetter("C:".into())));
        assert_eq!(
            folder_path("web/nul").map_err(|r| r.name()),
            Err("reserved-name")
        );
        assert_eq!(folder_path("a//b"), Err(Rule::EmptySegment));
    }

    #[test]
    fn prefixes_are_folders() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("site"), "site/");
        assert_eq!(normalize_prefix("site/v1//"), "site/v1/");
        let p = normalize_prefix("site");
        assert_eq!(relative_key("site/index.html", &p), Some("index.html"));
        assert_eq!(relative_key("site-old/index.html", &p), None);
        assert_eq!(relative_key("site.html", &p), None);
        assert_eq!(relative_key("anything", ""), Some("anything"));
    }

    #[test]
    fn path_helpers() {
        assert_eq!(join("web", r"css\a.css"), r"web\css\a.css");
        assert_eq!(join("", "a.css"), "a.css");
        assert_eq!(join("web", ""), "web");
        assert_eq!(parent(r"web\css\a.css"), r"web\css");
        assert_eq!(parent("a.css"), "");
        assert_eq!(file_name(r"web\css\a.css"), "a.css");
        assert_eq!(file_name("a.css"), "a.css");
        assert_eq!(fold("Index.HTML"), fold("index.html"));
        assert_eq!(Mapped::File("x".into()).to_string(), "x");
    }

    /// Two names are one file on NTFS exactly when their folds are equal.
    fn same_file(a: &str, b: &str) -> bool {
        fold(a) == fold(b)
    }

    #[test]
    fn fold_keeps_sharp_s_and_ligatures() {
        // NTFS maps one unit to one unit: ß has no one-character capital there, and ﬁ does not
        // expand to FI, so these are distinct names (Unicode's full mapping would join them).
        assert_eq!(fold("straße.html"), "STRAßE.HTML");
        assert!(!same_file("straße", "STRASSE"));
        assert!(!same_file("straße", "strasse"));
        assert!(same_file("Straße", "STRAßE"));
        // The capital ẞ lowercases to ß, but ß does not upcase to it: two names.
        assert!(!same_file("ß", "\u{1E9E}"));
        assert_eq!(fold("\u{FB01}le"), "\u{FB01}LE");
        assert!(!same_file("\u{FB01}le", "FILE"));
        assert!(!same_file("e\u{FB00}ect", "EFFECT"));
    }

    #[test]
    fn fold_and_the_turkish_i() {
        // NTFS's table has no locale: i and I are one name; dotless ı and dotted İ are each a
        // name of their own, distinct from i/I and from each other.
        assert!(same_file("i", "I"));
        assert_eq!(fold("\u{131}"), "\u{131}");
        assert_eq!(fold("\u{130}"), "\u{130}");
        assert!(!same_file("\u{131}", "I"));
        assert!(!same_file("\u{131}", "i"));
        assert!(!same_file("\u{130}", "I"));
        assert!(!same_file("\u{130}", "i"));
        assert!(!same_file("\u{130}", "\u{131}"));
        assert!(same_file("d\u{131}z.txt", "D\u{131}Z.TXT"));
    }

    #[test]
    fn fold_and_the_greek_sigma() {
        // σ and Σ are one name. Final ς is another on volumes formatted by Windows 7 and later
        // (the XP and Vista tables upcased it to Σ too).
        assert!(same_file("\u{3C3}", "\u{3A3}"));
        assert_eq!(fold("\u{3C2}"), "\u{3C2}");
        assert!(!same_file("\u{3C2}", "\u{3A3}"));
        assert!(!same_file("\u{3C2}", "\u{3C3}"));
        assert_eq!(
            fold("\u{3BF}\u{3B4}\u{3CC}\u{3C2}"),
            "\u{39F}\u{394}\u{38C}\u{3C2}"
        );
    }

    #[test]
    fn fold_leaves_characters_outside_the_bmp() {
        // DESERET SMALL LETTER LONG I has a capital (U+10400), but NTFS sees two surrogate
        // units, which its table leaves alone.
        assert_eq!(fold("\u{10428}.txt"), "\u{10428}.TXT");
        assert!(!same_file("\u{10428}", "\u{10400}"));
        assert_eq!(fold("😀a"), "😀A");
    }

    #[test]
    fn fold_is_idempotent_and_keeps_the_length_for_every_bmp_character() {
        for c in (0..=0xFFFF).filter_map(char::from_u32) {
            let once = upcase_char(c);
            assert_eq!(upcase_char(once), once, "{c:?} → {once:?}");
            assert_eq!(once.len_utf16(), c.len_utf16(), "{c:?}");
            assert_eq!(once.is_ascii(), c.is_ascii(), "{c:?} → {once:?}");
            assert_eq!(u32::from(upcase_unit(c as u16)), u32::from(once), "{c:?}");
        }
        let mixed = "Ünïcødé/straße/ǅ/ᾳ/😀/ﬁ/ı";
        assert_eq!(fold(&fold(mixed)), fold(mixed));
        assert_eq!(
            fold(mixed).encode_utf16().count(),
            mixed.encode_utf16().count()
        );
    }
}
