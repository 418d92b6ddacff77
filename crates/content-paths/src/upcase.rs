//! Upper-casing as NTFS does it when it compares names.
//!
//! NTFS does not compare names with Unicode's full case mapping. Every volume carries a table,
//! `$UpCase`, written when the volume is formatted: one UTF-16 code unit in, one code unit out,
//! for each of the 65,536 units. Two names are the same file when they have the same length in
//! UTF-16 units and each unit upcases to the same unit. Hence `ß` is not `SS` and `ﬁ` is not
//! `FI` (an expansion is impossible), and a character outside the Basic Multilingual Plane (two
//! surrogate units, each of which the table leaves alone) is never folded.
//!
//! We do not carry the table; we derive it from the Unicode data in `std`, following what the
//! tables Windows writes are observed to be:
//!
//! 1. **Simple, one-to-one mappings only**, and only between a pair of letters that map onto
//!    each other both ways: `c` upcases to `U` when `U` lowercases to exactly `c`, and `U` is
//!    `c`'s uppercase (or, where Unicode's uppercase of `c` is an expansion, `U` is the titlecase
//!    letter that expands the same way: the Greek letters with ypogegrammeni, `ᾳ` → `ᾼ`). So the
//!    letters that only *fold into* another letter's pair stay as they are: dotless `ı`, long
//!    `ſ`, the micro sign `µ`, final sigma `ς` (`σ` and `Σ` are one name, `ς` another), the
//!    Greek symbol variants (`ϐ`, `ϑ`, `ϕ`, ...), and the titlecase digraphs (`ǅ`). Dotted `İ`
//!    lowercases to two characters in Unicode, so `i` and `I` are one name and `İ` another.
//! 2. **Unicode as of version 5.1.** The table predates the case pairs that Unicode added later
//!    (Georgian Mtavruli, the Cherokee lowercase letters, most of Latin Extended-D and -E, ...):
//!    [`NEWER_THAN_TABLE`] lists them, and they stay as they are.
//!
//! The result is checked, byte for byte, against the `$UpCase` that Windows 8 and later write
//! (its MD5 is published by the ntfs-3g project, whose `mkntfs` reproduces it): see the test
//! `the_table_is_windows_upcase`. A Rust release that brings a newer Unicode version with new case
//! pairs makes that test fail until the pairs are added to [`NEWER_THAN_TABLE`].

use std::sync::LazyLock;

/// Lowercase letters whose uppercase partner Unicode added after version 5.1, which the NTFS
/// table predates: NTFS leaves them as they are. Inclusive ranges of code points.
const NEWER_THAN_TABLE: &[(u16, u16)] = &[
    (0x019B, 0x019B), // ƛ: its capital came in Unicode 16
    (0x023F, 0x0240), // ȿ ɀ
    (0x0252, 0x0252), // ɒ
    (0x025C, 0x025C), // ɜ
    (0x0261, 0x0261), // ɡ
    (0x0264, 0x0266), // ɤ ɥ ɦ
    (0x026A, 0x026A), // ɪ
    (0x026C, 0x026C), // ɬ
    (0x0282, 0x0282), // ʂ
    (0x0287, 0x0287), // ʇ
    (0x029D, 0x029E), // ʝ ʞ
    (0x03F3, 0x03F3), // ϳ
    (0x0525, 0x052F), // Cyrillic supplement after ԣ
    (0x10D0, 0x10FF), // Georgian Mkhedruli (its Mtavruli capitals came in Unicode 11)
    (0x13F8, 0x13FD), // Cherokee small letters
    (0x1C80, 0x1C8F), // Cyrillic Extended-C
    (0x1D8E, 0x1D8E), // ᶎ
    (0x2C5F, 0x2C5F), // Glagolitic ⱟ
    (0x2CEC, 0x2CF3), // Coptic after ⳬ
    (0x2D27, 0x2D2D), // Georgian Nuskhuri ⴧ ⴭ
    (0xA661, 0xA661), // Cyrillic Extended-B ꙡ
    (0xA699, 0xA69B), // Cyrillic Extended-B ꚙ ꚛ
    (0xA78D, 0xA7FF), // Latin Extended-D after ꞌ
    (0xAB30, 0xABBF), // Latin Extended-E and the Cherokee Supplement
];

/// The table, built once from the rules above (about a millisecond). ASCII never needs it.
static TABLE: LazyLock<Box<[u16]>> = LazyLock::new(build);

/// One UTF-16 code unit as NTFS upcases it. Surrogates (the halves of a character outside the
/// Basic Multilingual Plane) come back unchanged, as everything the table does not map.
pub fn upcase_unit(unit: u16) -> u16 {
    if let Ok(byte) = u8::try_from(unit)
        && byte.is_ascii()
    {
        return u16::from(byte.to_ascii_uppercase());
    }
    TABLE[usize::from(unit)]
}

/// One character as NTFS upcases it: the [`upcase_unit`] of a character of the Basic
/// Multilingual Plane, and a character outside it unchanged. The result is always one
/// character of the same UTF-16 length, so folding a name keeps its length.
pub fn upcase_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    match u16::try_from(u32::from(c)) {
        // A BMP character is never a surrogate, and the table maps it to one that is not either.
        Ok(unit) => char::from_u32(u32::from(upcase_unit(unit))).unwrap_or(c),
        Err(_) => c,
    }
}

fn build() -> Box<[u16]> {
    let mut table: Box<[u16]> = (0..=u16::MAX).collect();
    // Walk the uppercase side: each upper (or titlecase) letter `upper` whose lowercase is one
    // character `lower` is the upcase of `lower` if `lower` uppercases back to it.
    for unit in 0..=u16::MAX {
        let Some(upper) = char::from_u32(u32::from(unit)) else {
            continue;
        };
        let Some(lower) = single(upper.to_lowercase()) else {
            continue;
        };
        let Ok(lower_unit) = u16::try_from(u32::from(lower)) else {
            continue;
        };
        if lower == upper || newer_than_table(lower_unit) {
            continue;
        }
        let pairs = match single(lower.to_uppercase()) {
            Some(u) => u == upper,
            // `lower`'s uppercase expands (`ᾳ` → `ΑΙ`): its simple mapping is the titlecase
            // letter that lowercases to it and expands the same way (`ᾼ`), never a capital of
            // its own such as `ẞ` for `ß` (which lowercases to `ß`, but `ß` does not upcase to it).
            None => lower.to_uppercase().eq(upper.to_uppercase()),
        };
        if pairs {
            table[usize::from(lower_unit)] = unit;
        }
    }
    table
}

fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn newer_than_table(unit: u16) -> bool {
    NEWER_THAN_TABLE
        .iter()
        .any(|&(first, last)| (first..=last).contains(&unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    /// The MD5 of the `$UpCase` file of a volume formatted by Windows 8 or later, as the ntfs-3g
    /// project records it (libntfs-3g/unistr.c), and of the one its `mkntfs` writes (checked
    /// here with Debian's ntfs-3g 2022.10.3: `mkntfs -F -f vol.img; ntfscat vol.img '$UpCase'`).
    const WINDOWS_8_UPCASE_MD5: &str = "7ff498a44e45e77374cc7c962b1b92f2";

    #[test]
    fn the_table_is_windows_upcase() {
        let bytes: Vec<u8> = (0..=u16::MAX)
            .flat_map(|u| upcase_unit(u).to_le_bytes())
            .collect();
        let digest: String = Md5::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest, WINDOWS_8_UPCASE_MD5,
            "the derived table is not Windows' $UpCase: compare it with `ntfscat vol.img '$UpCase'` \
             of a volume made by mkntfs to see which units differ"
        );
    }

    #[test]
    fn ascii_and_the_table_agree() {
        for u in 0..0x80u16 {
            assert_eq!(TABLE[usize::from(u)], upcase_unit(u), "U+{u:04X}");
        }
    }

    #[test]
    fn surrogates_and_non_bmp_are_unchanged() {
        for u in 0xD800..=0xDFFFu16 {
            assert_eq!(upcase_unit(u), u);
        }
        // DESERET SMALL LETTER LONG I has a capital in Unicode, but NTFS sees two surrogates.
        assert_eq!('\u{10428}'.to_uppercase().next(), Some('\u{10400}'));
        assert_eq!(upcase_char('\u{10428}'), '\u{10428}');
    }
}
