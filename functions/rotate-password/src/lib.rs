//! Scheduled password rotation for the service account the containers map the share with.
//!
//! With the alternating pair made by `Custom::AdServiceAccount` (`svc-a` / `svc-b`), a rotation
//! never touches the account running tasks use: it takes the inactive one, resets its password
//! in AD, proves the new password with an SMB logon to the share, and only then switches SSM to
//! it (password first, then username), then forces a new ECS deployment so tasks move over. The
//! previously active account keeps working until the next rotation, which is skipped while a
//! deployment is still rolling out (old tasks may still use that account).
//!
//! The new password is kept in `<prefix>/rotation-pending` before AD has it, and every step is
//! recorded in `<prefix>/rotation` before it is taken, with a fingerprint of that password: a run
//! that died mid-way is finished by the next one, which compares fingerprints instead of logging
//! on to find out what SSM holds. SSM writes are believed only from a read-back.
//!
//! With `CREDENTIAL_STORE=secrets-manager` the credential is one Secrets Manager secret instead,
//! and Secrets Manager drives the rotation through its four steps ([`secret_rotation`]).

mod config;
mod record;
mod rotation;
pub mod secret_rotation;

pub use config::{Backend, Config, ConfigError, CredentialStore};
pub use record::{Fingerprint, Record, State, format_utc, now_utc};
pub use rotation::{RotationError, Rotator};
