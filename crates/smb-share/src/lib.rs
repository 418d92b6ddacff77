//! SMB3 operations on a share, on the pure-Rust `smb` crate: connect (encryption required by
//! default) with a distinct, actionable error per failure, file trees, and NTFS security
//! descriptors.

pub mod acl;
