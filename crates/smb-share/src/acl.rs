//! NTFS access control, modelled independently of the wire types: grants as users write them,
//! ACEs as Windows stores them, and the canonical order Windows expects.

use std::fmt;

/// ACE flags (MS-DTYP 2.4.4.1).
pub mod flags {
    pub const OBJECT_INHERIT: u8 = 0x01;
    pub const CONTAINER_INHERIT: u8 = 0x02;
    pub const NO_PROPAGATE_INHERIT: u8 = 0x04;
    pub const INHERIT_ONLY: u8 = 0x08;
    pub const INHERITED: u8 = 0x10;
}

/// Access masks of the presets Windows' security dialog offers.
pub mod masks {
    /// Read & execute: FILE_GENERIC_READ | FILE_GENERIC_EXECUTE.
    pub const READ: u32 = 0x0012_00A9;
    /// Modify: read, write, execute, delete.
    pub const MODIFY: u32 = 0x0013_01BF;
    /// Full control.
    pub const FULL: u32 = 0x001F_01FF;
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rights {
    Read,
    Modify,
    Full,
    Mask(u32),
}

impl Rights {
    pub fn mask(self) -> u32 {
        match self {
            Rights::Read => masks::READ,
            Rights::Modify => masks::MODIFY,
            Rights::Full => masks::FULL,
            Rights::Mask(m) => m,
        }
    }

    /// `Read`, `Modify`, `Full` (any case) or a hex mask such as `0x1301bf`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        match t.to_ascii_lowercase().as_str() {
            "read" | "readandexecute" => Ok(Rights::Read),
            "modify" | "change" => Ok(Rights::Modify),
            "full" | "fullcontrol" => Ok(Rights::Full),
            lower => {
                let hex = lower.strip_prefix("0x").ok_or_else(|| {
                    format!("{t:?} is not Read, Modify, Full or a hex mask like 0x1301bf")
                })?;
                let mask = u32::from_str_radix(hex, 16)
                    .map_err(|_| format!("{t:?} is not a valid hex access mask"))?;
                if mask == 0 {
                    return Err("an access mask of 0 grants nothing".into());
                }
                Ok(Rights::Mask(mask))
            }
        }
    }
}

/// How a grant on a folder reaches what is below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inheritance {
    /// Files below inherit it (OI).
    pub files: bool,
    /// Folders below inherit it (CI).
    pub folders: bool,
    /// Only the immediate children inherit it (NP).
    pub one_level: bool,
    /// It applies to children only, not to this folder (IO).
    pub children_only: bool,
}

impl Default for Inheritance {
    /// "This folder, subfolders and files", as Windows' dialog defaults to.
    fn default() -> Self {
        Self {
            files: true,
            folders: true,
            one_level: false,
            children_only: false,
        }
    }
}

impl Inheritance {
    pub fn flags(self) -> u8 {
        let mut f = 0;
        if self.files {
            f |= flags::OBJECT_INHERIT;
        }
        if self.folders {
            f |= flags::CONTAINER_INHERIT;
        }
        if self.one_level {
            f |= flags::NO_PROPAGATE_INHERIT;
        }
        if self.children_only {
            f |= flags::INHERIT_ONLY;
        }
        f
    }

    /// `ThisFolderSubfoldersAndFiles` (default), `ThisFolderOnly`, `ThisFolderAndSubfolders`,
    /// `ThisFolderAndFiles`, `SubfoldersAndFilesOnly`, `SubfoldersOnly`, `FilesOnly`, or SDDL-style
    /// flags such as `OI|CI` / `OICI` (`OI`, `CI`, `NP`, `IO`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let none = Self {
            files: false,
            folders: false,
            one_level: false,
            children_only: false,
        };
        let t = text.trim();
        let named = match t.to_ascii_lowercase().replace([' ', '_', '-'], "").as_str() {
            "" | "thisfoldersubfoldersandfiles" => Some(Self::default()),
            "thisfolderonly" => Some(none),
            "thisfolderandsubfolders" => Some(Self {
                folders: true,
                ..none
            }),
            "thisfolderandfiles" => Some(Self {
                files: true,
                ..none
            }),
            "subfoldersandfilesonly" => Some(Self {
                files: true,
                folders: true,
                children_only: true,
                ..none
            }),
            "subfoldersonly" => Some(Self {
                folders: true,
                children_only: true,
                ..none
            }),
            "filesonly" => Some(Self {
                files: true,
                children_only: true,
                ..none
            }),
            _ => None,
        };
        if let Some(n) = named {
            return Ok(n);
        }
        let compact = t.to_ascii_uppercase().replace(['|', ',', ' '], "");
        if !compact.len().is_multiple_of(2) {
            return Err(format!(
                "{t:?} is not an inheritance name or OI/CI/NP/IO flags"
            ));
        }
        let mut out = none;
        for pair in compact.as_bytes().chunks(2) {
            match pair {
                b"OI" => out.files = true,
                b"CI" => out.folders = true,
                b"NP" => out.one_level = true,
                b"IO" => out.children_only = true,
                _ => {
                    return Err(format!(
                        "{t:?} is not an inheritance name or OI/CI/NP/IO flags"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A grant: allow `rights` to the principal `sid` (`S-1-5-21-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub sid: String,
    pub rights: Rights,
    pub inheritance: Inheritance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AceKind {
    Allow,
    Deny,
}

/// An access control entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    pub kind: AceKind,
    pub flags: u8,
    pub mask: u32,
    pub sid: String,
}

impl Ace {
    pub fn inherited(&self) -> bool {
        self.flags & flags::INHERITED != 0
    }
}

impl From<&Grant> for Ace {
    fn from(g: &Grant) -> Self {
        Ace {
            kind: AceKind::Allow,
            flags: g.inheritance.flags(),
            mask: g.rights.mask(),
            sid: g.sid.clone(),
        }
    }
}

impl fmt::Display for Ace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.kind == AceKind::Allow {
            "A"
        } else {
            "D"
        };
        write!(
            f,
            "({kind};0x{:02x};0x{:08x};{})",
            self.flags, self.mask, self.sid
        )
    }
}

/// Whether the new DACL replaces what is there (protected: no inheritance from the parent) or
/// adds to it (the inherited ACEs stay and keep flowing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Replace,
    Merge,
}

/// Windows' canonical order: explicit deny, explicit allow, then inherited ACEs in the order
/// they came (their order encodes the ancestry). Stable within each group.
pub fn canonical(aces: &[Ace]) -> Vec<Ace> {
    let explicit = |k: AceKind| {
        aces.iter()
            .filter(move |a| !a.inherited() && a.kind == k)
            .cloned()
    };
    explicit(AceKind::Deny)
        .chain(explicit(AceKind::Allow))
        .chain(aces.iter().filter(|a| a.inherited()).cloned())
        .collect()
}

/// The DACL to write: `Replace` → exactly the grants (explicit, canonical; the caller marks the
/// descriptor protected); `Merge` → the existing explicit ACEs, minus any earlier explicit allow
/// for the same principal with the same inheritance (a grant replaces it rather than piling up),
/// plus the grants, plus the inherited ACEs.
pub fn build(grants: &[Grant], existing: &[Ace], mode: Mode) -> Vec<Ace> {
    let wanted: Vec<Ace> = grants.iter().map(Ace::from).collect();
    match mode {
        Mode::Replace => canonical(&wanted),
        Mode::Merge => {
            let kept = existing.iter().filter(|a| {
                a.inherited()
                    || a.kind == AceKind::Deny
                    || !wanted
                        .iter()
                        .any(|w| w.sid.eq_ignore_ascii_case(&a.sid) && w.flags == a.flags)
            });
            let mut all: Vec<Ace> = kept.cloned().collect();
            all.extend(wanted);
            canonical(&all)
        }
    }
}

/// Whether `actual` (read back from the share) carries every ACE in `wanted`: same kind, SID,
/// flags, and at least the mask (servers may normalise generic bits into specific ones).
pub fn satisfies(actual: &[Ace], wanted: &[Ace]) -> bool {
    wanted.iter().all(|w| {
        actual.iter().any(|a| {
            a.kind == w.kind
                && a.sid.eq_ignore_ascii_case(&w.sid)
                && a.flags & !flags::INHERITED == w.flags
                && a.mask & w.mask == w.mask
        })
    })
}

/// Well-known principals by name (as Windows' security dialog shows them), for grants that do
/// not name a domain account. Domain accounts are given by SID: resolving names needs the
/// directory, and the template has the SID already (`!GetAtt ServiceAccount.Sid`).
const WELL_KNOWN: &[(&str, &str)] = &[
    ("everyone", "S-1-1-0"),
    ("creator owner", "S-1-3-0"),
    ("system", "S-1-5-18"),
    ("local system", "S-1-5-18"),
    ("local service", "S-1-5-19"),
    ("network service", "S-1-5-20"),
    ("authenticated users", "S-1-5-11"),
    ("administrators", "S-1-5-32-544"),
    ("users", "S-1-5-32-545"),
    ("guests", "S-1-5-32-546"),
    ("iis_iusrs", "S-1-5-32-568"),
];

/// A principal as a SID string: a SID (`S-1-5-21-…`) as given, or a well-known name
/// (optionally prefixed `BUILTIN\` or `NT AUTHORITY\`).
pub fn resolve_principal(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.len() > 2 && t[..2].eq_ignore_ascii_case("S-") {
        let parts: Vec<&str> = t[2..].split('-').collect();
        let numeric = parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()));
        if parts.len() >= 3 && parts.len() <= 17 && parts[0] == "1" && numeric {
            return Ok(format!("S-{}", parts.join("-")));
        }
        return Err(format!("{t:?} is not a well-formed SID (S-1-5-21-…)"));
    }
    let lower = t.to_ascii_lowercase();
    let name = lower
        .strip_prefix("builtin\\")
        .or_else(|| lower.strip_prefix("nt authority\\"))
        .unwrap_or(&lower);
    WELL_KNOWN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sid)| (*sid).to_owned())
        .ok_or_else(|| {
            format!(
                "{t:?} is neither a SID nor a well-known name (Everyone, Authenticated Users, SYSTEM, \
                 Administrators, Users, IIS_IUSRS, …)"
            )
        })
}

fn same(a: &Ace, b: &Ace) -> bool {
    a.kind == b.kind && a.flags == b.flags && a.mask == b.mask && a.sid.eq_ignore_ascii_case(&b.sid)
}

/// `current` plus each of `wanted` not already there as an explicit ACE, in canonical order.
/// Nothing is taken away: a principal's existing ACEs stay, so removing ours later gives back
/// exactly what was there.
pub fn add_exact(current: &[Ace], wanted: &[Ace]) -> Vec<Ace> {
    let mut all = current.to_vec();
    for w in wanted {
        if !all.iter().any(|a| !a.inherited() && same(a, w)) {
            all.push(w.clone());
        }
    }
    canonical(&all)
}

/// `current` without the explicit ACEs equal to one of `ours` (one each), in canonical order.
pub fn remove_exact(current: &[Ace], ours: &[Ace]) -> Vec<Ace> {
    let mut pending: Vec<&Ace> = ours.iter().collect();
    let kept: Vec<Ace> = current
        .iter()
        .filter(|a| {
            if a.inherited() {
                return true;
            }
            match pending.iter().position(|o| same(a, o)) {
                Some(i) => {
                    pending.swap_remove(i);
                    false
                }
                None => true,
            }
        })
        .cloned()
        .collect();
    canonical(&kept)
}

/// Whether `ace` appears in `aces` as an explicit ACE.
pub fn contains_explicit(aces: &[Ace], ace: &Ace) -> bool {
    aces.iter().any(|a| !a.inherited() && same(a, ace))
}

/// Well-known SIDs the private folder grants: LocalSystem and BUILTIN\Administrators.
pub const SYSTEM: &str = "S-1-5-18";
pub const ADMINISTRATORS: &str = "S-1-5-32-544";

/// The DACL of a folder only administrators may use (see [`crate::Share::ensure_private_folder`]):
/// full control, to this folder, subfolders and files, for SYSTEM, BUILTIN\Administrators and
/// `account` (the principal that writes it), once each, in canonical order.
pub fn private_folder_aces(account: &str) -> Vec<Ace> {
    let mut sids = vec![SYSTEM.to_owned(), ADMINISTRATORS.to_owned()];
    if !sids.iter().any(|s| s.eq_ignore_ascii_case(account)) {
        sids.push(account.to_owned());
    }
    let aces: Vec<Ace> = sids
        .into_iter()
        .map(|sid| Ace {
            kind: AceKind::Allow,
            flags: flags::OBJECT_INHERIT | flags::CONTAINER_INHERIT,
            mask: masks::FULL,
            sid,
        })
        .collect();
    canonical(&aces)
}

/// The ACEs a new child of a folder whose DACL is `parent` inherits (MS-DTYP 2.5.3.4, for the
/// flags this crate models): a folder gets those marked CI (and, as inherit-only, those marked
/// OI only, for the files below it); a file gets those marked OI; NP stops them there. Each is
/// marked inherited. Windows and Samba compute this when a file is created; a DACL set over
/// SMB is stored as sent, so whoever changes a folder's DACL passes it on to what is already
/// below (as Explorer and icacls do).
pub fn inherited_by(parent: &[Ace], is_dir: bool) -> Vec<Ace> {
    use flags::{CONTAINER_INHERIT, INHERIT_ONLY, INHERITED, NO_PROPAGATE_INHERIT, OBJECT_INHERIT};
    let mut out: Vec<Ace> = Vec::new();
    for a in parent {
        let (oi, ci, np) = (
            a.flags & OBJECT_INHERIT != 0,
            a.flags & CONTAINER_INHERIT != 0,
            a.flags & NO_PROPAGATE_INHERIT != 0,
        );
        let flags = if !is_dir {
            oi.then_some(INHERITED)
        } else if ci {
            Some(if np {
                INHERITED
            } else {
                INHERITED | (a.flags & (OBJECT_INHERIT | CONTAINER_INHERIT))
            })
        } else if oi && !np {
            Some(INHERITED | OBJECT_INHERIT | INHERIT_ONLY)
        } else {
            None
        };
        if let Some(flags) = flags {
            out.push(Ace { flags, ..a.clone() });
        }
    }
    // Inherited ACEs keep their order; Windows lists inherited denies before allows of one level.
    let (deny, allow): (Vec<Ace>, Vec<Ace>) =
        out.into_iter().partition(|a| a.kind == AceKind::Deny);
    deny.into_iter().chain(allow).collect()
}

/// Whether `aces` is a private folder's DACL: nothing inherited, and at least full control for
/// SYSTEM and Administrators to this folder and all below.
pub fn is_private(protected: bool, aces: &[Ace]) -> bool {
    let full = |sid: &str| Ace {
        kind: AceKind::Allow,
        flags: flags::OBJECT_INHERIT | flags::CONTAINER_INHERIT,
        mask: masks::FULL,
        sid: sid.to_owned(),
    };
    protected
        && !aces.iter().any(Ace::inherited)
        && satisfies(aces, &[full(SYSTEM), full(ADMINISTRATORS)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ace(kind: AceKind, flags: u8, mask: u32, sid: &str) -> Ace {
        Ace {
            kind,
            flags,
            mask,
            sid: sid.into(),
        }
    }

    #[test]
    fn rights_and_inheritance_parse() {
        assert_eq!(Rights::parse("Modify").unwrap().mask(), 0x1301bf);
        assert_eq!(Rights::parse("full").unwrap().mask(), 0x1f01ff);
        assert_eq!(Rights::parse("0x1200A9").unwrap(), Rights::Mask(0x1200a9));
        assert!(Rights::parse("write").unwrap_err().contains("hex mask"));
        assert!(Rights::parse("0x0").is_err());
        assert_eq!(Inheritance::parse("").unwrap().flags(), 0x03);
        assert_eq!(Inheritance::parse("This folder only").unwrap().flags(), 0);
        assert_eq!(
            Inheritance::parse("SubfoldersAndFilesOnly")
                .unwrap()
                .flags(),
            0x0b
        );
        assert_eq!(Inheritance::parse("OI|CI|NP").unwrap().flags(), 0x07);
        assert_eq!(Inheritance::parse("cioi").unwrap().flags(), 0x03);
        assert!(Inheritance::parse("XX").is_err());
    }

    #[test]
    fn canonical_order_puts_explicit_deny_then_allow_then_inherited() {
        let aces = vec![
            ace(
                AceKind::Allow,
                flags::INHERITED | 3,
                masks::FULL,
                "S-1-5-32-544",
            ),
            ace(AceKind::Allow, 3, masks::READ, "S-1-5-11"),
            ace(AceKind::Deny, 0, masks::MODIFY, "S-1-5-21-1-2-3-1104"),
            ace(AceKind::Deny, flags::INHERITED, masks::READ, "S-1-1-0"),
        ];
        let c = canonical(&aces);
        assert_eq!(
            c.iter().map(|a| a.sid.as_str()).collect::<Vec<_>>(),
            ["S-1-5-21-1-2-3-1104", "S-1-5-11", "S-1-5-32-544", "S-1-1-0"]
        );
    }

    #[test]
    fn merge_keeps_what_is_there_and_replaces_a_same_principal_allow() {
        let existing = vec![
            ace(AceKind::Allow, 3, masks::READ, "S-1-5-21-1-2-3-1104"),
            ace(AceKind::Allow, 3, masks::FULL, "S-1-5-32-544"),
            ace(
                AceKind::Allow,
                flags::INHERITED | 3,
                masks::FULL,
                "S-1-5-18",
            ),
        ];
        let grants = vec![Grant {
            sid: "S-1-5-21-1-2-3-1104".into(),
            rights: Rights::Modify,
            inheritance: Inheritance::default(),
        }];
        let merged = build(&grants, &existing, Mode::Merge);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].sid, "S-1-5-32-544");
        assert_eq!(
            (merged[1].sid.as_str(), merged[1].mask),
            ("S-1-5-21-1-2-3-1104", masks::MODIFY)
        );
        assert!(merged[2].inherited());
        let replaced = build(&grants, &existing, Mode::Replace);
        assert_eq!(
            replaced,
            vec![ace(AceKind::Allow, 3, masks::MODIFY, "S-1-5-21-1-2-3-1104")]
        );
    }

    #[test]
    fn satisfies_compares_kind_sid_flags_and_mask() {
        let wanted = vec![ace(AceKind::Allow, 3, masks::MODIFY, "S-1-5-11")];
        assert!(satisfies(
            &[ace(AceKind::Allow, 3, masks::MODIFY, "s-1-5-11")],
            &wanted
        ));
        assert!(satisfies(
            &[ace(AceKind::Allow, 3, masks::FULL, "S-1-5-11")],
            &wanted
        ));
        assert!(!satisfies(
            &[ace(AceKind::Allow, 0, masks::MODIFY, "S-1-5-11")],
            &wanted
        ));
        assert!(!satisfies(
            &[ace(AceKind::Allow, 3, masks::READ, "S-1-5-11")],
            &wanted
        ));
        assert!(!satisfies(
            &[ace(AceKind::Deny, 3, masks::MODIFY, "S-1-5-11")],
            &wanted
        ));
    }

    #[test]
    fn principals() {
        assert_eq!(
            resolve_principal(" S-1-5-21-1-2-3-1105 ").unwrap(),
            "S-1-5-21-1-2-3-1105"
        );
        assert_eq!(
            resolve_principal(r"BUILTIN\Administrators").unwrap(),
            "S-1-5-32-544"
        );
        assert_eq!(
            resolve_principal("authenticated users").unwrap(),
            "S-1-5-11"
        );
        assert_eq!(resolve_principal("IIS_IUSRS").unwrap(), "S-1-5-32-568");
        for bad in ["S-1-5-x", "S-2-5-21", "S-1", r"CORP\bob", ""] {
            assert!(resolve_principal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_then_remove_gives_back_the_original() {
        let bob_read = ace(AceKind::Allow, 0x03, masks::READ, "S-1-5-21-1-2-3-1105");
        let inherited = ace(AceKind::Allow, 0x13, masks::FULL, "S-1-5-32-544");
        let deny = ace(AceKind::Deny, 0x03, masks::FULL, "S-1-5-21-1-2-3-1200");
        let original = vec![bob_read.clone(), deny.clone(), inherited.clone()];
        let bob_modify = ace(AceKind::Allow, 0x03, masks::MODIFY, "S-1-5-21-1-2-3-1105");
        let added = add_exact(&original, &[bob_modify.clone(), bob_read.clone()]);
        // Deny first, explicit allows (bob's Read kept, Modify added once), inherited last.
        assert_eq!(
            added,
            vec![
                deny.clone(),
                bob_read.clone(),
                bob_modify.clone(),
                inherited.clone()
            ]
        );
        assert_eq!(remove_exact(&added, &[bob_modify]), canonical(&original));
        // An inherited twin is never removed.
        let twin = ace(AceKind::Allow, 0x03, masks::FULL, "S-1-5-32-544");
        assert_eq!(remove_exact(&original, &[twin]), canonical(&original));
        assert!(contains_explicit(&original, &bob_read));
        assert!(!contains_explicit(
            &original,
            &ace(AceKind::Allow, 0x03, masks::FULL, "S-1-5-32-544")
        ));
    }

    #[test]
    fn a_private_folder_grants_system_administrators_and_the_writer_once_each() {
        let aces = private_folder_aces("S-1-5-21-1-2-3-1105");
        let sids: Vec<&str> = aces.iter().map(|a| a.sid.as_str()).collect();
        assert_eq!(sids, [SYSTEM, ADMINISTRATORS, "S-1-5-21-1-2-3-1105"]);
        assert!(
            aces.iter()
                .all(|a| a.kind == AceKind::Allow && a.flags == 0x03 && a.mask == masks::FULL)
        );
        // An administrator's files are owned by BUILTIN\Administrators: no duplicate.
        assert_eq!(private_folder_aces("s-1-5-32-544").len(), 2);
        assert!(is_private(true, &aces));
        assert!(!is_private(false, &aces), "not protected");
        let mut leaky = aces.clone();
        leaky.push(ace(AceKind::Allow, 0x13, masks::READ, "S-1-5-32-545"));
        assert!(
            !is_private(true, &leaky),
            "an inherited ACE in a protected DACL"
        );
        assert!(
            !is_private(true, &aces[2..]),
            "SYSTEM and Administrators missing"
        );
    }

    #[test]
    fn children_inherit_by_kind_and_flags() {
        let parent = vec![
            ace(AceKind::Allow, 0x03, masks::FULL, "S-1-5-18"),
            ace(AceKind::Allow, 0x01, masks::READ, "S-1-5-11"),
            ace(AceKind::Allow, 0x02, masks::MODIFY, "S-1-5-32-545"),
            ace(AceKind::Allow, 0x07, masks::READ, "S-1-5-32-568"),
            ace(AceKind::Allow, 0x00, masks::FULL, "S-1-5-32-546"),
            ace(AceKind::Deny, 0x0b, masks::MODIFY, "S-1-1-0"),
        ];
        assert_eq!(
            inherited_by(&parent, true),
            vec![
                ace(AceKind::Deny, 0x13, masks::MODIFY, "S-1-1-0"),
                ace(AceKind::Allow, 0x13, masks::FULL, "S-1-5-18"),
                ace(AceKind::Allow, 0x19, masks::READ, "S-1-5-11"),
                ace(AceKind::Allow, 0x12, masks::MODIFY, "S-1-5-32-545"),
                ace(AceKind::Allow, 0x10, masks::READ, "S-1-5-32-568"),
            ]
        );
        assert_eq!(
            inherited_by(&parent, false),
            vec![
                ace(AceKind::Deny, 0x10, masks::MODIFY, "S-1-1-0"),
                ace(AceKind::Allow, 0x10, masks::FULL, "S-1-5-18"),
                ace(AceKind::Allow, 0x10, masks::READ, "S-1-5-11"),
                ace(AceKind::Allow, 0x10, masks::READ, "S-1-5-32-568"),
            ]
        );
        // Two levels down, through a folder.
        let sub = inherited_by(&parent, true);
        assert_eq!(
            inherited_by(&sub, false).len(),
            3,
            "{:?}",
            inherited_by(&sub, false)
        );
    }
}
