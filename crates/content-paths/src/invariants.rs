//! The promises this crate makes about every key, as checks that anyone can run.
//!
//! A bucket's keys are chosen by whoever can write to it, so the mapping from keys to share paths
//! is where a hostile bucket meets the share. The fuzz targets in `fuzz/` assert these checks for
//! every input they generate, and `tests/corpus.rs` asserts them again for every input saved in
//! `fuzz/corpus/`, so CI replays the corpus on stable Rust.
//!
//! The checks restate the rules on their own (their own walk over the segments, their own list of
//! device names, their own decoder) rather than calling the code under test, and they check both
//! ways: a key the rules allow must be accepted, and one they forbid must be refused.

use crate::{MAX_PATH_UNITS, MAX_SEGMENT_UNITS, upcase_char, upcase_unit};
use crate::{Mapped, fold, folder_path, join, normalize_prefix, relative_key, share_path};

/// A promise that did not hold for an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail} (input {input:?})")]
pub struct Violation {
    /// Which promise, in a few words.
    pub check: &'static str,
    /// The input it was broken for.
    pub input: String,
    /// What was seen instead.
    pub detail: String,
}

fn violation(check: &'static str, input: &str, detail: impl Into<String>) -> Violation {
    Violation {
        check,
        input: input.to_owned(),
        detail: detail.into(),
    }
}

/// The mappings a fuzz target feeds, each with its own corpus folder (`fuzz/corpus/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One key, as [`share_path`] sees it (relative to the source prefix).
    SharePath,
    /// One folder, as a person writes it in a template ([`folder_path`]).
    FolderPath,
    /// A prefix and a key, split at the first `0xFF` byte (never part of UTF-8), through
    /// [`normalize_prefix`], [`relative_key`] and then [`share_path`].
    RelativeKey,
}

impl Target {
    /// Every target that this crate alone can check (the key decoder lives in `content-copy`;
    /// see [`check_decode_key`]).
    pub const ALL: [Target; 3] = [Target::SharePath, Target::FolderPath, Target::RelativeKey];

    /// The fuzz target's name, which is also its corpus folder's.
    pub fn name(self) -> &'static str {
        match self {
            Target::SharePath => "share_path",
            Target::FolderPath => "folder_path",
            Target::RelativeKey => "relative_key",
        }
    }
}

/// Checks one raw fuzz input against the promises of `target`. Input that is not UTF-8 cannot
/// be a key (keys are strings by the time they reach this crate) and passes trivially.
pub fn check(target: Target, data: &[u8]) -> Result<(), Violation> {
    match target {
        Target::SharePath => match std::str::from_utf8(data) {
            Ok(key) => check_share_path(key),
            Err(_) => Ok(()),
        },
        Target::FolderPath => match std::str::from_utf8(data) {
            Ok(folder) => check_folder_path(folder),
            Err(_) => Ok(()),
        },
        Target::RelativeKey => {
            let (prefix, key) = split_pair(data);
            match (std::str::from_utf8(prefix), std::str::from_utf8(key)) {
                (Ok(prefix), Ok(key)) => check_relative_key(prefix, key),
                _ => Ok(()),
            }
        }
    }
}

/// An input of two strings: the bytes before the first `0xFF` and those after it.
pub fn split_pair(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// What [`share_path`] promises for `key`:
///
/// - it refuses exactly the keys whose segments break a rule (see [`segment_problem`]), that
///   start with a separator, or whose path is over [`MAX_PATH_UNITS`];
/// - a key it accepts becomes the path its name says (segments joined by `\`, nothing dropped or
///   added), and that path is safe: below the target folder, no drive, no stream, no device, no
///   name Windows would change ([`check_safe_path`]);
/// - a folder marker is exactly a key that is empty or ends in `/`;
/// - its reason for a refusal names a known rule and prints no control character (it goes to
///   logs and to CloudFormation);
/// - whether a key is accepted does not depend on its case ([`fold`]).
pub fn check_share_path(key: &str) -> Result<(), Violation> {
    check_fold(key)?;
    let expected = expected_mapping(key);
    let got = share_path(key);
    match (&got, &expected) {
        (Ok(Mapped::FolderMarker), Expected::FolderMarker) => {}
        (Ok(Mapped::File(path)), Expected::File) => {
            let said = key.replace('/', "\\");
            if *path != said {
                return Err(violation(
                    "a key maps to the path its name says",
                    key,
                    format!("mapped to {path:?}"),
                ));
            }
            check_safe_path(key, path)?;
            check_fold(path)?;
        }
        (Err(rule), Expected::Refused(_)) => check_reason(key, rule)?,
        (got, expected) => {
            return Err(violation(
                "share_path decides as the rules do",
                key,
                format!(
                    "the rules say {}, share_path said {got:?}",
                    expected.describe()
                ),
            ));
        }
    }
    let folded = fold(key);
    if share_path(&folded).is_ok() != got.is_ok() {
        return Err(violation(
            "acceptance does not depend on case",
            key,
            format!("its fold {folded:?} is decided the other way"),
        ));
    }
    Ok(())
}

/// What [`folder_path`] promises for `folder`: separators of either kind around it are ignored,
/// either kind separates segments, each segment obeys the same rules as a key's, and the result
/// is those segments joined by `\` (empty for the share root).
pub fn check_folder_path(folder: &str) -> Result<(), Violation> {
    check_fold(folder)?;
    let trimmed = folder.trim_matches(['/', '\\']);
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split(['/', '\\']).collect()
    };
    let problem = segments.iter().find_map(|s| segment_problem(s));
    match (folder_path(folder), problem) {
        (Ok(path), None) => {
            if path != segments.join("\\") {
                return Err(violation(
                    "a folder maps to its segments joined by \\",
                    folder,
                    format!("mapped to {path:?}"),
                ));
            }
            if !path.is_empty() {
                check_safe_path(folder, &path)?;
            }
            Ok(())
        }
        (Err(rule), Some(_)) => check_reason(folder, &rule),
        (got, problem) => Err(violation(
            "folder_path decides as the rules do",
            folder,
            format!("the rules found {problem:?}, folder_path said {got:?}"),
        )),
    }
}

/// What [`normalize_prefix`] and [`relative_key`] promise: the normal form of a prefix is empty
/// or its text between the outer `/`s followed by exactly one `/`, and normalizing it again
/// changes nothing; a key is below the prefix exactly when it starts with that form, and then it
/// is the prefix followed by the relative key, which [`check_share_path`] checks in turn and
/// which, joined below a target folder, stays in that folder.
pub fn check_relative_key(prefix: &str, key: &str) -> Result<(), Violation> {
    let input = format!("{prefix}\u{FFFD}{key}");
    let normal = normalize_prefix(prefix);
    let inner = prefix.trim_start_matches('/').trim_end_matches('/');
    let expected_normal = if inner.is_empty() {
        String::new()
    } else {
        format!("{inner}/")
    };
    if normal != expected_normal || normalize_prefix(&normal) != normal {
        return Err(violation(
            "a prefix normalizes to one folder",
            &input,
            format!("normalized to {normal:?}"),
        ));
    }
    let relative = relative_key(key, &normal);
    match relative {
        Some(rel) if format!("{normal}{rel}") == key => {}
        None if !key.starts_with(&normal) => {}
        other => {
            return Err(violation(
                "a key is below the prefix exactly when it starts with it",
                &input,
                format!("relative key {other:?}"),
            ));
        }
    }
    let Some(rel) = relative else { return Ok(()) };
    check_share_path(rel)?;
    if let Ok(Mapped::File(path)) = share_path(rel) {
        const TARGET: &str = r"sites\web";
        let joined = join(TARGET, &path);
        if !joined.starts_with(r"sites\web\") || resolve(&joined) != joined {
            return Err(violation(
                "a key's file stays in the target folder",
                &input,
                format!(
                    "joined to {joined:?}, which Windows resolves to {:?}",
                    resolve(&joined)
                ),
            ));
        }
    }
    Ok(())
}

/// What [`fold`] promises: each character is upcased on its own ([`upcase_char`], which is
/// [`upcase_unit`] on a character of the Basic Multilingual Plane and nothing outside it); ASCII
/// stays ASCII and nothing else becomes ASCII; the length in UTF-16 units is kept; folding twice
/// is folding once; and ASCII case never matters.
pub fn check_fold(s: &str) -> Result<(), Violation> {
    let folded = fold(s);
    if fold(&folded) != folded {
        return Err(violation(
            "fold is idempotent",
            s,
            format!("{folded:?} folds again"),
        ));
    }
    if folded.encode_utf16().count() != s.encode_utf16().count() {
        return Err(violation(
            "fold keeps the length in UTF-16 units",
            s,
            format!("{folded:?}"),
        ));
    }
    if folded.chars().count() != s.chars().count() {
        return Err(violation(
            "fold maps one character to one",
            s,
            format!("{folded:?}"),
        ));
    }
    for (c, up) in s.chars().zip(folded.chars()) {
        let mut units = [0u16; 2];
        let per_unit = match c.encode_utf16(&mut units) {
            [one] => u32::from(upcase_unit(*one)) == u32::from(up),
            _ => up == c,
        };
        if up != upcase_char(c) || !per_unit || c.is_ascii() != up.is_ascii() {
            return Err(violation(
                "fold upcases each character as NTFS does",
                s,
                format!("{c:?} became {up:?}"),
            ));
        }
        if c.is_ascii() && up != c.to_ascii_uppercase() {
            return Err(violation(
                "fold upcases ASCII",
                s,
                format!("{c:?} became {up:?}"),
            ));
        }
    }
    if fold(&s.to_ascii_lowercase()) != folded || fold(&s.to_ascii_uppercase()) != folded {
        return Err(violation(
            "ASCII case never matters",
            s,
            "the lower- or upper-case form folds differently",
        ));
    }
    Ok(())
}

/// What a key decoder (`content_copy::decode_key`, passed in because it lives in that crate)
/// promises for one raw input: it decodes exactly as [`reference_decode`] does (`%` and two hex
/// digits is a byte, `+` is a space, and the bytes must be UTF-8), a decoded key passes
/// [`check_share_path`], and decoding what [`encode_key`] makes of a key gives the key back,
/// both for the decoded key and for the input read as a key.
pub fn check_decode_key(
    data: &[u8],
    decode: impl Fn(&str) -> Option<String>,
) -> Result<(), Violation> {
    let Ok(encoded) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let decoded = decode(encoded);
    let reference = reference_decode(encoded);
    if decoded != reference {
        return Err(violation(
            "decode_key decodes exactly %XX and +",
            encoded,
            format!("decoded {decoded:?}, expected {reference:?}"),
        ));
    }
    for key in decoded.as_deref().into_iter().chain([encoded]) {
        let again = encode_key(key);
        if decode(&again).as_deref() != Some(key) {
            return Err(violation(
                "decoding an encoded key gives it back",
                key,
                format!("encoded as {again:?}, decoded to {:?}", decode(&again)),
            ));
        }
    }
    match decoded {
        Some(key) => check_share_path(&key),
        None => Ok(()),
    }
}

/// A key encoded as S3 encodes keys in event notifications and `encoding-type=url` listings:
/// unreserved characters and `/` as they are, a space as `+`, every other byte as `%XX`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The decoder the checks compare against: `%` must be followed by two ASCII hex digits, `+` is
/// a space, and the result must be UTF-8.
pub fn reference_decode(encoded: &str) -> Option<String> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        rest = tail;
        match first {
            b'%' => {
                let (digits, tail) = rest.split_at_checked(2)?;
                if !digits.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let text = std::str::from_utf8(digits).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                rest = tail;
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// Why one segment (of a key or a folder) may not be a name on the share, or `None`.
pub fn segment_problem(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return Some("empty segment");
    }
    if segment.chars().all(|c| c == '.') && segment.len() <= 2 {
        return Some("relative folder reference");
    }
    for c in segment.chars() {
        match c {
            '\\' | '/' => return Some("separator inside a name"),
            ':' => return Some("stream or drive"),
            '<' | '>' | '"' | '|' | '?' | '*' => return Some("character Windows forbids"),
            c if c.is_ascii_control() => return Some("control character"),
            _ => {}
        }
    }
    if segment.ends_with('.') || segment.ends_with(' ') {
        return Some("trailing dot or space");
    }
    if is_device(segment) {
        return Some("device name");
    }
    if segment.encode_utf16().count() > MAX_SEGMENT_UNITS {
        return Some("name too long");
    }
    None
}

/// Whether Win32 would open a device for this name: the part before the first dot, less its
/// trailing spaces, is a device name in any case (`nul`, `Com1`, `LPT²`, `CONIN$`).
fn is_device(segment: &str) -> bool {
    let stem = segment.split('.').next().unwrap_or_default();
    let stem = stem.trim_end_matches(' ').to_uppercase();
    if matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let (Some(port), Some(number)) = (stem.get(..3), stem.get(3..)) else {
        return false;
    };
    let mut digits = number.chars();
    let one_digit = matches!(
        (digits.next(), digits.next()),
        (Some('1'..='9' | '\u{b9}' | '\u{b2}' | '\u{b3}'), None)
    );
    (port == "COM" || port == "LPT") && one_digit
}

/// What the rules say of a key.
enum Expected {
    FolderMarker,
    File,
    Refused(&'static str),
}

impl Expected {
    fn describe(&self) -> String {
        match self {
            Expected::FolderMarker => "a folder marker".to_owned(),
            Expected::File => "a file".to_owned(),
            Expected::Refused(why) => format!("refused ({why})"),
        }
    }
}

fn expected_mapping(key: &str) -> Expected {
    if key.starts_with(['/', '\\']) {
        return Expected::Refused("starts with a separator");
    }
    if key.is_empty() || key.ends_with('/') {
        return Expected::FolderMarker;
    }
    if let Some(problem) = key.split('/').find_map(segment_problem) {
        return Expected::Refused(problem);
    }
    if key.encode_utf16().count() > MAX_PATH_UNITS {
        return Expected::Refused("path too long");
    }
    Expected::File
}

/// A path relative to a target folder (`\`-separated) is safe: not absolute, no drive, every
/// segment a valid name, and Windows' own path resolution leaves it as it is.
pub fn check_safe_path(input: &str, path: &str) -> Result<(), Violation> {
    let fail = |detail: String| Err(violation("a mapped path is safe", input, detail));
    if path.is_empty() || path.starts_with('\\') || path.contains('/') {
        return fail(format!("{path:?} is empty, absolute or has a /"));
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return fail(format!("{path:?} names a drive"));
    }
    if let Some((segment, problem)) = path
        .split('\\')
        .find_map(|s| segment_problem(s).map(|p| (s, p)))
    {
        return fail(format!("segment {segment:?} of {path:?}: {problem}"));
    }
    if resolve(path) != path {
        return fail(format!("Windows resolves {path:?} to {:?}", resolve(path)));
    }
    Ok(())
}

/// A `\`-separated relative path as Win32 resolves it: trailing dots and spaces of each name
/// dropped, `.` removed, `..` taking away the name before it (or, at the top, marked as an escape).
fn resolve(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('\\') {
        match segment.trim_end_matches(['.', ' ']) {
            "" if segment.is_empty() || segment == "." => {}
            "" if segment == ".." => {
                if out.pop().is_none() {
                    out.push("<above the target folder>");
                }
            }
            name => out.push(name),
        }
    }
    out.join("\\")
}

fn check_reason(input: &str, rule: &crate::Rule) -> Result<(), Violation> {
    const NAMES: &[&str] = &[
        "absolute-path",
        "drive-letter",
        "empty-segment",
        "dot-segment",
        "backslash",
        "colon",
        "control-character",
        "invalid-character",
        "trailing-dot-or-space",
        "reserved-name",
        "segment-too-long",
        "path-too-long",
    ];
    let reason = rule.to_string();
    if !NAMES.contains(&rule.name()) || reason.is_empty() || reason.chars().any(char::is_control) {
        return Err(violation(
            "a refusal names its rule in printable text",
            input,
            format!("{}: {reason:?}", rule.name()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_pass_for_ordinary_and_hostile_keys() {
        for key in [
            "index.html",
            "css/site.css",
            "../web.config",
            "a/../../b",
            "C:/x",
            "a:b",
            "con.txt",
            "x/NUL .txt",
            "lpt\u{b9}",
            "trail.",
            "trail ",
            "ctl\u{1}",
            "dir/",
            "",
            "/abs",
            "\\abs",
            "straße/ǅ/😀/ﬁ",
        ] {
            check(Target::SharePath, key.as_bytes()).unwrap_or_else(|v| panic!("{v}"));
            check(Target::FolderPath, key.as_bytes()).unwrap_or_else(|v| panic!("{v}"));
        }
        check(Target::RelativeKey, b"site\xffsite/index.html").unwrap_or_else(|v| panic!("{v}"));
        check(Target::RelativeKey, b"/site//\xffsite-old/x").unwrap_or_else(|v| panic!("{v}"));
    }

    #[test]
    fn the_checks_catch_a_wrong_decoder() {
        // The decoder before the fix read `%+A` as 0x0A through `from_str_radix`.
        let lenient = |s: &str| {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'%' => {
                        let hex = s.get(i + 1..i + 3)?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    b'+' => out.push(b' '),
                    c => out.push(c),
                }
                i += 1;
            }
            String::from_utf8(out).ok()
        };
        let v = check_decode_key(b"%+A", lenient).err();
        assert_eq!(
            v.map(|v| v.check),
            Some("decode_key decodes exactly %XX and +")
        );
        check_decode_key(b"%+A", reference_decode).unwrap_or_else(|v| panic!("{v}"));
        check_decode_key(b"a%20b+c%2B", reference_decode).unwrap_or_else(|v| panic!("{v}"));
    }

    #[test]
    fn the_checks_catch_an_unsafe_path() {
        for path in [
            r"..\x",
            r"a\..\..\x",
            r"C:\x",
            r"a:b",
            r"x\con",
            "a.",
            r"\x",
            "a/b",
        ] {
            assert!(check_safe_path(path, path).is_err(), "{path}");
        }
        assert_eq!(resolve(r"a\..\..\x"), r"<above the target folder>\x");
        assert_eq!(resolve(r"a.\b \c"), r"a\b\c");
        check_safe_path("x", r"a\b.c\ d").unwrap_or_else(|v| panic!("{v}"));
    }

    #[test]
    fn round_trip_of_the_encoder() {
        for key in ["a b+c%", "日本/😀", "ctl\u{1}\u{7f}", "~-_./"] {
            assert_eq!(reference_decode(&encode_key(key)).as_deref(), Some(key));
        }
        assert_eq!(encode_key("a b+c"), "a+b%2Bc");
    }
}
