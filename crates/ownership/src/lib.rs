//! Which physical id owns an object, written on the object itself.
//!
//! CloudFormation compares physical ids byte for byte, but the names they are built from are
//! compared case-insensitively by AD and NTFS, and one server has two names (short and FQDN). So
//! an Update that only respells a name is a replacement for CloudFormation and the same object
//! for the file server or the directory: CloudFormation creates the "new" resource (which finds
//! and adopts the object) and later deletes the "old" one, whose Delete would destroy what the
//! new one now uses. The fix is to record the owning id on the object:
//!
//! - Create and Update [`Ownership::claim`] the object for their id. A claim from another id
//!   keeps that id as `previous`: CloudFormation will delete exactly one of the two — the old
//!   id when the update completes, the new id when it rolls back.
//! - Delete asks [`Ownership::release`] what to do: remove the object only when its id owns it
//!   and no replacement is in flight; otherwise hand it to the survivor, or leave it alone.
//!
//! Objects written before ownership was recorded carry none: their Delete removes them, as it
//! always did, and their next Create or Update records an owner.

use serde::{Deserialize, Serialize};

/// The owner of an object and, during a replacement, the id it took the object over from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    /// The physical id of the resource that owns the object.
    pub id: String,
    /// The id the owner replaced, until CloudFormation deletes one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// What a Delete for some id must do with an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The id owns the object, or nothing is recorded: remove it.
    Remove,
    /// The id owns it, but it took the object over from `to.id` in a replacement that is now
    /// being rolled back: the object stays and goes back to that id. Record `to`.
    HandBack { to: Ownership },
    /// The id is the one a replacement took the object over from: the object stays with its
    /// new owner. Record `to` (the owner, without the finished replacement).
    Superseded { to: Ownership },
    /// Another id owns the object and this one has no part in it: leave it.
    NotOwned { owner: String },
}

/// What an object carries when a Create or Update reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before<'a> {
    /// The request makes the object (or finds none).
    Absent,
    /// The object exists and is this resource's, but records no owning id (written before
    /// ownership was kept).
    Unrecorded,
    /// The object records its owner.
    Owned(&'a Ownership),
}

impl<'a> Before<'a> {
    /// From whether the object existed and what it records.
    pub fn of(existed: bool, recorded: Option<&'a Ownership>) -> Self {
        match (existed, recorded) {
            (_, Some(r)) => Before::Owned(r),
            (true, None) => Before::Unrecorded,
            (false, None) => Before::Absent,
        }
    }

    pub fn recorded(&self) -> Option<&'a Ownership> {
        match self {
            Before::Owned(r) => Some(r),
            _ => None,
        }
    }
}

impl Ownership {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            previous: None,
        }
    }

    /// The ownership after a Create for `id` (a replacement's, when `replacing` is the id it
    /// replaces) reached an object. Only an object both ids address gets a previous owner —
    /// one that records `replacing` as its owner, or (recording none) that the caller has found
    /// `replacing` to name (`same_object`). Anything else is this id's alone: an object the
    /// Create makes, or one whose recorded owner is some earlier, stale id (an id CloudFormation
    /// will never delete again must not be handed anything back).
    pub fn claim(
        before: Before<'_>,
        id: &str,
        replacing: Option<&str>,
        same_object: impl Fn(&str) -> bool,
    ) -> Ownership {
        let replacing = replacing.filter(|old| *old != id);
        match before {
            Before::Absent => Ownership::new(id),
            Before::Unrecorded => Ownership {
                id: id.to_owned(),
                previous: replacing.filter(|old| same_object(old)).map(str::to_owned),
            },
            // A repeat of the same request: keep a pending replacement.
            Before::Owned(r) if r.id == id => r.clone(),
            // Taken over from the id being replaced (a replacement that respelled a name).
            Before::Owned(r) => Ownership {
                id: id.to_owned(),
                previous: replacing.filter(|old| *old == r.id).map(str::to_owned),
            },
        }
    }

    /// The ownership after an in-place Update for `id`. CloudFormation updates a resource in
    /// place only when it is the logical resource's current id, after any earlier replacement
    /// was cleaned up (or rolled back): whatever else the object records is stale, and keeping
    /// it would make the stack's own Delete of `id` look like a rollback and orphan the object.
    pub fn settled(id: &str) -> Ownership {
        Ownership::new(id)
    }

    /// What a Delete for `id` must do with an object that carries `recorded`. `computed` is the
    /// id the Delete's properties compute: a Delete whose id differs from it carries an id the
    /// resource never answered (CloudFormation makes one up when a Create's answer never
    /// reached it), and then acts for `computed`.
    pub fn release(recorded: Option<&Ownership>, id: &str, computed: &str) -> Release {
        let Some(r) = recorded else {
            return Release::Remove;
        };
        if r.id == id || (r.id == computed && id != computed && r.previous.as_deref() != Some(id)) {
            return match &r.previous {
                None => Release::Remove,
                Some(previous) => Release::HandBack {
                    to: Ownership::new(previous.clone()),
                },
            };
        }
        if r.previous.as_deref() == Some(id) {
            return Release::Superseded {
                to: Ownership::new(r.id.clone()),
            };
        }
        Release::NotOwned {
            owner: r.id.clone(),
        }
    }

    /// The ownership as a marker inside a free-text field (an AD description):
    /// `[fargate-smb-id:<id>]` or `[fargate-smb-id:<id><<previous>]`, with `%`, `[`, `]` and `<`
    /// percent-encoded in the ids.
    pub fn to_marker(&self) -> String {
        match &self.previous {
            None => format!("{MARKER_START}{}]", encode(&self.id)),
            Some(p) => format!("{MARKER_START}{}<{}]", encode(&self.id), encode(p)),
        }
    }

    /// The ownership a text carries in [`Ownership::to_marker`]'s form: `Ok(None)` when it has
    /// no marker, `Err` when it has one that cannot be read (cut short, edited by hand) — never
    /// to be taken for "no owner recorded", which would let any Delete remove the object.
    pub fn from_marker(text: &str) -> Result<Option<Ownership>, DamagedMarker> {
        let Some(at) = text.find(MARKER_START) else {
            return Ok(None);
        };
        let rest = &text[at + MARKER_START.len()..];
        let inner = &rest[..rest.find(']').ok_or(DamagedMarker)?];
        let (id, previous) = match inner.split_once('<') {
            Some((id, p)) => (id, Some(decode(p).ok_or(DamagedMarker)?)),
            None => (inner, None),
        };
        let id = decode(id).ok_or(DamagedMarker)?;
        if id.is_empty() || text[at + MARKER_START.len()..].contains(MARKER_START) {
            return Err(DamagedMarker);
        }
        Ok(Some(Ownership { id, previous }))
    }

    /// `text` with its ownership marker (if any) replaced by this one, at the end.
    pub fn mark(&self, text: &str) -> String {
        let base = strip_marker(text);
        if base.is_empty() {
            self.to_marker()
        } else {
            format!("{base} {}", self.to_marker())
        }
    }
}

/// An ownership marker that is there but cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedMarker;

impl std::fmt::Display for DamagedMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ownership marker [fargate-smb-id:...] is damaged (cut short or edited)")
    }
}

impl std::error::Error for DamagedMarker {}

/// Whether a text holds (part of) an ownership marker: free text given by a user must not.
pub fn has_marker_text(text: &str) -> bool {
    text.contains("[fargate-smb")
}

const MARKER_START: &str = "[fargate-smb-id:";

/// `text` without its ownership marker, trimmed.
pub fn strip_marker(text: &str) -> String {
    let Some(start) = text.find(MARKER_START) else {
        return text.trim().to_owned();
    };
    let end = text[start..]
        .find(']')
        .map(|e| start + e + 1)
        .unwrap_or(text.len());
    format!("{} {}", text[..start].trim_end(), text[end..].trim_start())
        .trim()
        .to_owned()
}

fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '%' | '[' | ']' | '<' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            let byte = u8::from_str_radix(&hex, 16).ok()?;
            out.push(char::from(byte));
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "example.test/svc-web-a+svc-web-b";
    const NEW: &str = "example.test/Svc-Web-a+Svc-Web-b";

    /// CloudFormation's replacement that completes: Update answers NEW (a Create for NEW over
    /// the object OLD owns), then the cleanup deletes OLD.
    #[test]
    fn a_completed_replacement_keeps_the_object_with_the_new_id() {
        let before = Ownership::new(OLD);
        let after_create = Ownership::claim(Before::Owned(&before), NEW, Some(OLD), |_| true);
        assert_eq!(after_create.id, NEW);
        assert_eq!(after_create.previous.as_deref(), Some(OLD));
        let Release::Superseded { to } = Ownership::release(Some(&after_create), OLD, OLD) else {
            panic!("the old id must not remove the object");
        };
        assert_eq!(to, Ownership::new(NEW));
        // The stack's own delete later removes it.
        assert_eq!(Ownership::release(Some(&to), NEW, NEW), Release::Remove);
    }

    /// The same replacement rolled back: CloudFormation deletes NEW and keeps OLD.
    #[test]
    fn a_rolled_back_replacement_hands_the_object_back() {
        let after_create =
            Ownership::claim(Before::Owned(&Ownership::new(OLD)), NEW, Some(OLD), |_| {
                true
            });
        let Release::HandBack { to } = Ownership::release(Some(&after_create), NEW, NEW) else {
            panic!("the rolled-back id must hand the object back");
        };
        assert_eq!(to, Ownership::new(OLD));
        assert_eq!(Ownership::release(Some(&to), OLD, OLD), Release::Remove);
    }

    /// A replacement onto another object (svc-web -> svc-api): what the Create makes is its
    /// alone, so the stack's delete later removes it.
    #[test]
    fn an_object_the_replacement_makes_has_no_previous_owner() {
        let made = Ownership::claim(Before::Absent, NEW, Some(OLD), |_| true);
        assert_eq!(made, Ownership::new(NEW));
        assert_eq!(Ownership::release(Some(&made), NEW, NEW), Release::Remove);
        // A legacy object (this resource's, no id recorded) that a replacement reaches is shared.
        let legacy = Ownership::claim(Before::Unrecorded, NEW, Some(OLD), |old| old == OLD);
        assert_eq!(legacy.previous.as_deref(), Some(OLD));
        assert_eq!(
            Ownership::claim(Before::Unrecorded, NEW, None, |_| true),
            Ownership::new(NEW)
        );
        // A legacy object the replaced id does not name is the new id's alone.
        assert_eq!(
            Ownership::claim(Before::Unrecorded, NEW, Some(OLD), |_| false),
            Ownership::new(NEW)
        );
    }

    /// svc-web (X) replaced by svc-api (Y), cleaned up (svc-web disabled, still marked X), then
    /// Y replaced by Svc-Web (Z): Z's Create finds svc-web owned by the stale X. X will never be
    /// deleted again, so Z must own it alone, or the stack's delete would hand it back to X.
    #[test]
    fn a_stale_owner_is_never_kept_as_previous() {
        let x = Ownership::new(OLD);
        let z = Ownership::claim(Before::Owned(&x), NEW, Some("example.test/svc-api"), |_| {
            true
        });
        assert_eq!(z, Ownership::new(NEW));
        assert_eq!(Ownership::release(Some(&z), NEW, NEW), Release::Remove);
        // A Create that is not a replacement (a new logical resource) takes over alone too.
        assert_eq!(
            Ownership::claim(Before::Owned(&x), NEW, None, |_| true),
            Ownership::new(NEW)
        );
    }

    #[test]
    fn an_in_place_update_settles_ownership() {
        assert_eq!(Ownership::settled(NEW), Ownership::new(NEW));
    }

    /// CloudFormation makes up an id for a Create whose answer never reached it, and deletes
    /// that id on rollback: the Delete acts for the id its properties compute.
    #[test]
    fn a_delete_with_an_id_never_answered_acts_for_the_computed_id() {
        let made = Ownership::new(NEW);
        assert_eq!(
            Ownership::release(Some(&made), "stack-Account-1X2Y3Z", NEW),
            Release::Remove
        );
        // ...but never for an id whose object belongs to another id.
        assert!(matches!(
            Ownership::release(Some(&Ownership::new(OLD)), "stack-Account-1X2Y3Z", NEW),
            Release::NotOwned { .. }
        ));
    }

    #[test]
    fn repeats_and_strangers() {
        let o = Ownership::claim(Before::Owned(&Ownership::new(OLD)), NEW, Some(OLD), |_| {
            true
        });
        assert_eq!(o.previous.as_deref(), Some(OLD));
        assert_eq!(
            Ownership::claim(Before::Owned(&o), NEW, Some(OLD), |_| true),
            o,
            "a retried Create"
        );
        assert_eq!(
            Ownership::release(Some(&Ownership::new(NEW)), "someone-else", "someone-else"),
            Release::NotOwned {
                owner: NEW.to_owned()
            }
        );
        assert_eq!(Ownership::release(None, NEW, NEW), Release::Remove);
    }

    #[test]
    fn markers_round_trip_inside_free_text() {
        let o = Ownership {
            id: r"\\fs\share\web[1]<%>".into(),
            previous: Some(OLD.into()),
        };
        let text = o.mark("fargate-smb service account [fargate-smb:arn:stack/s/g/Account]");
        assert!(
            text.starts_with("fargate-smb service account [fargate-smb:arn:stack/s/g/Account] ")
        );
        assert_eq!(Ownership::from_marker(&text), Ok(Some(o.clone())));
        let again = Ownership::new(NEW).mark(&text);
        assert_eq!(
            Ownership::from_marker(&again),
            Ok(Some(Ownership::new(NEW)))
        );
        assert_eq!(again.matches("[fargate-smb-id:").count(), 1, "{again}");
        assert_eq!(
            Ownership::from_marker("no marker [fargate-smb:x]"),
            Ok(None)
        );
        assert_eq!(
            strip_marker(&again),
            "fargate-smb service account [fargate-smb:arn:stack/s/g/Account]"
        );
    }

    #[test]
    fn a_damaged_marker_is_never_read_as_no_marker() {
        for damaged in [
            "text [fargate-smb-id:",
            "text [fargate-smb-id:abc",
            "[fargate-smb-id:]",
            "[fargate-smb-id:a%zz]",
            "[fargate-smb-id:x] [fargate-smb-id:y]",
        ] {
            assert_eq!(
                Ownership::from_marker(damaged),
                Err(DamagedMarker),
                "{damaged}"
            );
        }
        assert!(has_marker_text("my [fargate-smb-id:x]"));
        assert!(!has_marker_text("web tier"));
    }

    #[test]
    fn serialized_form_is_small_and_tolerant() {
        let o: Ownership = serde_json::from_str(r#"{"id":"a"}"#).unwrap();
        assert_eq!(o, Ownership::new("a"));
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"id":"a"}"#);
    }
}
