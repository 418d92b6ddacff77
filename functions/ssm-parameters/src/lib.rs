//! `Custom::SsmParameters`: the three parameters a fargate-smb container needs, under one
//! prefix: `<prefix>/username` (String), `<prefix>/password` (SecureString, generated here and
//! never returned) and `<prefix>/share` (String, a UNC path).
//!
//! The physical id is the prefix, so changing `ParameterPrefix` replaces the resource. The
//! password is generated once; an Update regenerates it only when `PasswordVersion` changes.
//! Every parameter carries an owner tag naming the stack and logical id, so a repeated Create
//! adopts what this resource made before, and neither Create nor Delete ever touches a parameter
//! someone else made.

mod properties;
mod resource;

pub use properties::{Properties, Tag};
pub use resource::{Error, InitError, OWNER_TAG, SsmParameters};
