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

impl Ownership {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            previous: None,
        }
    }

    /// The ownership after a Create or Update for `id` touched the object. `recorded` is what
    /// the object carries (`None`: nothing, or written before ownership was recorded);
    /// `replacing` is the id an Update is replacing, when the runtime knows it.
    pub fn claim(recorded: Option<&Ownership>, id: &str, replacing: Option<&str>) -> Ownership {
        match recorded {
            // A repeat of the same request, or an in-place Update: keep a pending replacement.
            Some(r) if r.id == id => r.clone(),
            // Taken over from whoever owned it (a replacement, or a rollback to the old id).
            Some(r) => Ownership {
                id: id.to_owned(),
                previous: Some(r.id.clone()),
            },
            None => Ownership {
                id: id.to_owned(),
                previous: replacing.filter(|old| *old != id).map(str::to_owned),
            },
        }
    }

    /// The ownership after an in-place Update for `id`. CloudFormation updates a resource in
    /// place only once an earlier replacement has been cleaned up, so a previous id still on
    /// record belongs to a cleanup Delete that failed or never came: forget it, or the stack's
    /// own Delete of `id` would take it for a rollback and leave the object behind.
    pub fn settled(recorded: Option<&Ownership>, id: &str) -> Ownership {
        match recorded {
            Some(r) if r.id == id => Ownership::new(id),
            other => Ownership::claim(other, id, None),
        }
    }

    /// What a Delete for `id` must do with an object that carries `recorded`.
    pub fn release(recorded: Option<&Ownership>, id: &str) -> Release {
        let Some(r) = recorded else {
            return Release::Remove;
        };
        if r.id == id {
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

    /// The ownership a text carries in [`Ownership::to_marker`]'s form, if any.
    pub fn from_marker(text: &str) -> Option<Ownership> {
        let start = text.find(MARKER_START)? + MARKER_START.len();
        let rest = &text[start..];
        let inner = &rest[..rest.find(']')?];
        let (id, previous) = match inner.split_once('<') {
            Some((id, p)) => (id, Some(decode(p)?)),
            None => (inner, None),
        };
        let id = decode(id)?;
        if id.is_empty() {
            return None;
        }
        Some(Ownership { id, previous })
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

    /// CloudFormation's replacement that completes: Update answers NEW (a Create for NEW),
    /// then the cleanup deletes OLD.
    #[test]
    fn a_completed_replacement_keeps_the_object_with_the_new_id() {
        let before = Ownership::new(OLD);
        let after_create = Ownership::claim(Some(&before), NEW, Some(OLD));
        assert_eq!(after_create.id, NEW);
        assert_eq!(after_create.previous.as_deref(), Some(OLD));
        let Release::Superseded { to } = Ownership::release(Some(&after_create), OLD) else {
            panic!("the old id must not remove the object");
        };
        assert_eq!(to, Ownership::new(NEW));
        // The stack's own delete later removes it.
        assert_eq!(Ownership::release(Some(&to), NEW), Release::Remove);
    }

    /// The same replacement rolled back: CloudFormation deletes NEW and keeps OLD.
    #[test]
    fn a_rolled_back_replacement_hands_the_object_back() {
        let after_create = Ownership::claim(Some(&Ownership::new(OLD)), NEW, Some(OLD));
        let Release::HandBack { to } = Ownership::release(Some(&after_create), NEW) else {
            panic!("the rolled-back id must hand the object back");
        };
        assert_eq!(to, Ownership::new(OLD));
        assert_eq!(Ownership::release(Some(&to), OLD), Release::Remove);
        // A rollback that also re-runs the old id's Update first: the roles swap, same outcome.
        let back = Ownership::claim(Some(&after_create), OLD, None);
        assert_eq!(back.previous.as_deref(), Some(NEW));
        assert!(matches!(
            Ownership::release(Some(&back), NEW),
            Release::Superseded { .. }
        ));
    }

    #[test]
    fn an_in_place_update_forgets_a_replacement_whose_cleanup_never_came() {
        let stale = Ownership::claim(Some(&Ownership::new(OLD)), NEW, Some(OLD));
        let settled = Ownership::settled(Some(&stale), NEW);
        assert_eq!(settled, Ownership::new(NEW));
        assert_eq!(Ownership::release(Some(&settled), NEW), Release::Remove);
        assert_eq!(Ownership::settled(None, NEW), Ownership::new(NEW));
        assert_eq!(
            Ownership::settled(Some(&Ownership::new(OLD)), NEW)
                .previous
                .as_deref(),
            Some(OLD)
        );
    }

    #[test]
    fn repeats_and_strangers() {
        let o = Ownership::claim(None, NEW, Some(OLD));
        assert_eq!(o.previous.as_deref(), Some(OLD), "a legacy object replaced");
        assert_eq!(Ownership::claim(Some(&o), NEW, None), o, "a retried Create");
        assert_eq!(Ownership::claim(None, NEW, Some(NEW)).previous, None);
        assert_eq!(
            Ownership::release(Some(&Ownership::new(NEW)), "someone-else"),
            Release::NotOwned {
                owner: NEW.to_owned()
            }
        );
        assert_eq!(Ownership::release(None, NEW), Release::Remove);
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
        assert_eq!(Ownership::from_marker(&text), Some(o.clone()));
        let again = Ownership::new(NEW).mark(&text);
        assert_eq!(Ownership::from_marker(&again), Some(Ownership::new(NEW)));
        assert_eq!(again.matches("[fargate-smb-id:").count(), 1, "{again}");
        assert_eq!(Ownership::from_marker("no marker [fargate-smb:x]"), None);
        assert_eq!(Ownership::from_marker("[fargate-smb-id:]"), None);
        assert_eq!(
            strip_marker(&again),
            "fargate-smb service account [fargate-smb:arn:stack/s/g/Account]"
        );
    }

    #[test]
    fn serialized_form_is_small_and_tolerant() {
        let o: Ownership = serde_json::from_str(r#"{"id":"a"}"#).unwrap();
        assert_eq!(o, Ownership::new("a"));
        assert_eq!(serde_json::to_string(&o).unwrap(), r#"{"id":"a"}"#);
    }
}
