//! `Custom::WebContent`: the content of an S3 prefix, copied into a folder of the SMB share the
//! containers map — incrementally (a manifest records size and ETag per object; it lives at the
//! share root in `.fargate-smb\content`, not in the folder the web server serves), in parallel,
//! atomically per file, with keys that are not safe Windows paths rejected by name.
//!
//! The physical id is the target (`\\server\share\folder`), so pointing the resource elsewhere
//! replaces it. Update copies what changed; a new `ContentVersion` copies everything. Delete
//! leaves the content unless `RemoveOnDelete` is set, and then removes exactly the files the
//! manifest lists. Once a Create or Update has copied everything, the health probe
//! `fargate-smb-health.txt` (`ok\n`) is at the top of the folder for the load balancer's health
//! check; it goes exactly when the content goes. The admin credential comes from SSM or Secrets
//! Manager, never a property.

mod properties;
mod resource;

pub use properties::Properties;
pub use resource::{Error, InitError, WebContent};
