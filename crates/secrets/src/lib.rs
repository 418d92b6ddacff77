//! Secrets for fargate-smb.
//!
//! [`Secret`] wraps a value that must never reach a log line, a CloudFormation response or a
//! command line: its `Debug` and `Display` print `***`, and the memory is wiped on drop.
//! [`PasswordRules`] generates passwords from the operating system's CSPRNG using only
//! characters that survive PowerShell and `appcmd` (cmd.exe) quoting unchanged.

mod password;
mod secret;

pub use password::{PasswordError, PasswordRules, SAFE_SYMBOLS};
pub use secret::Secret;
