//! SMB3 operations on a share, on the pure-Rust `smb` crate: connect (SMB 3.1.1, encryption
//! required by default, as `New-SmbGlobalMapping -RequirePrivacy $true`) with a distinct,
//! actionable error per failure; folder trees; whole-file writes chunked to the negotiated size;
//! reads; listings bounded by a timeout; rename, delete, size and mtime; NTFS DACLs.

pub mod acl;
mod error;
mod share;
mod transport;

pub use error::{Held, ShareError};
pub use share::{
    Entry, Lock, Meta, Privacy, Retry, SecurityInfo, Share, ShareConfig, Unc, write_many_on,
};
