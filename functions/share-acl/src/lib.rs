//! `Custom::ShareAcl`: grants NTFS rights on a folder of an SMB share (the folder is created if
//! missing), as the admin account, and proves them by reading the DACL back.
//!
//! `Mode: Merge` (default) adds the grants to whatever the folder has; `Mode: Replace` makes the
//! DACL exactly the grants, protected from inheritance. Before the first change the folder's
//! DACL is recorded on the share (`.fargate-smb\acl\<key>.json` at the share root, keyed by
//! stack, logical id and folder), so that Delete undoes precisely what this resource did —
//! removes the ACEs it added (Merge) or restores the recorded DACL (Replace) — even after other
//! changes to the folder, and never touches the folder's content.

mod properties;
mod record;
mod resource;

pub use properties::{GrantProperty, Mode, Properties};
pub use record::{Record, record_path};
pub use resource::{Error, InitError, ShareAcl};
