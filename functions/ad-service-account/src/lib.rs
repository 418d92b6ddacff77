//! `Custom::AdServiceAccount`: the domain account a fargate-smb container maps the share with —
//! or an alternating pair of them for zero-downtime rotation — and, optionally, a group that
//! holds them (the principal the share ACL grants).
//!
//! The password is never a property: the resource reads it from the SSM parameter that
//! `Custom::SsmParameters` seeded (`PasswordParameter`), or from the AWSCURRENT value of the
//! Secrets Manager secret the template made (`PasswordSecretId`), whose `username` also names
//! the active account of the pair. The admin credential comes from SSM or Secrets Manager.
//! Accounts carry an ownership marker in their description, so a repeated Create adopts what
//! this resource made before and never takes over someone else's account unless told to.

mod properties;
mod resource;

pub use properties::{Backend, OnDelete, PasswordSource, Properties};
pub use resource::{AdServiceAccount, Error, InitError, marker};
