//! Service accounts in Active Directory, behind one small trait ([`Directory`]) with two
//! adapters:
//! - [`ldaps::LdapsDirectory`]: any AD (self-managed, or AWS Managed Microsoft AD with LDAPS
//!   enabled) over LDAPS or StartTLS, certificate verified against a CA bundle;
//! - [`managed_ad::ManagedAdDirectory`]: AWS Managed Microsoft AD through the Directory Service
//!   Data API, with `ds:ResetUserPassword` for passwords.
//!
//! The domain logic (which account, adopt or refuse, group membership) lives with the callers
//! and sees only the trait.

pub mod ldaps;
pub mod managed_ad;
mod sid;

pub use sid::sid_to_string;

use secrets::Secret;
use std::future::Future;

/// A user account as the directory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub sam_account_name: String,
    /// Distinguished name (always known over LDAP; reported by the Data API too).
    pub dn: Option<String>,
    pub sid: String,
    pub description: Option<String>,
    pub enabled: bool,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub sam_account_name: String,
    pub dn: Option<String>,
    pub sid: String,
    pub description: Option<String>,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub sam_account_name: String,
    /// Distinguished name of the OU to create it in (LDAP). The Data API always creates users in
    /// the directory's own `OU=Users,OU=<NetBIOS name>` and ignores this.
    pub ou: String,
    pub description: String,
    pub password_never_expires: bool,
    /// An idempotency token (the CloudFormation request id), used where the API supports one.
    pub client_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "cannot reach the domain controller at {server}: {detail}: check the address, DNS, the security groups \
         (TCP 636 for LDAPS, 389 for StartTLS) and that LDAPS is enabled on the directory"
    )]
    Unreachable { server: String, detail: String },
    #[error(
        "the TLS connection to {server} failed: {detail}: set CaBundle to the PEM of the CA that issued the DC's certificate, and connect by a name the certificate holds"
    )]
    Tls { server: String, detail: String },
    #[error("the directory refused the credentials of {user}: {reason}")]
    Credentials { user: String, reason: String },
    #[error(
        "{user} may not {operation}: {detail}: grant it the right (e.g. delegate control of the OU) or use an account that has it"
    )]
    AccessDenied {
        user: String,
        operation: String,
        detail: String,
    },
    #[error(
        "the domain's password policy rejected the password for {account}: {detail}: raise PasswordLength on the SSM parameters, or relax the policy"
    )]
    PasswordRejected { account: String, detail: String },
    #[error("{what} does not exist: {detail}")]
    NotFound { what: String, detail: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error(
        "directory data access is not enabled on {directory_id}: run `aws ds enable-directory-data-access --directory-id {directory_id}` (or use the LDAPS backend)"
    )]
    DataAccessDisabled { directory_id: String },
    #[error("{operation} failed: {detail}")]
    Other { operation: String, detail: String },
}

pub type Result<T> = std::result::Result<T, DirectoryError>;

/// The operations fargate-smb needs from a directory. Every method is idempotent where the
/// directory allows it: adding a member twice, removing an absent one, deleting a missing user
/// all succeed.
pub trait Directory: Send + Sync {
    fn find_user(
        &self,
        sam_account_name: &str,
    ) -> impl Future<Output = Result<Option<User>>> + Send;
    /// Create the user, enabled, with `password`. Fails with [`DirectoryError::AlreadyExists`]
    /// if the name is taken, and leaves nothing behind if the password is rejected.
    fn create_user(
        &self,
        user: &NewUser,
        password: &Secret,
    ) -> impl Future<Output = Result<User>> + Send;
    /// Reset the password and enable the account (as `ds:ResetUserPassword` does; its Data API
    /// documents it as the way to enable a disabled user). Over LDAPS a lockout is cleared too;
    /// what `ds:ResetUserPassword` does to a lockout is not documented.
    fn set_password(
        &self,
        user: &User,
        password: &Secret,
    ) -> impl Future<Output = Result<()>> + Send;
    fn disable(&self, user: &User) -> impl Future<Output = Result<()>> + Send;
    fn set_description(
        &self,
        user: &User,
        description: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_user(&self, user: &User) -> impl Future<Output = Result<()>> + Send;
    fn find_group(
        &self,
        sam_account_name: &str,
    ) -> impl Future<Output = Result<Option<Group>>> + Send;
    fn create_group(
        &self,
        sam_account_name: &str,
        ou: &str,
        description: &str,
        client_token: &str,
    ) -> impl Future<Output = Result<Group>> + Send;
    fn set_group_description(
        &self,
        group: &Group,
        description: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_group(&self, group: &Group) -> impl Future<Output = Result<()>> + Send;
    fn add_member(&self, group: &Group, user: &User) -> impl Future<Output = Result<()>> + Send;
    fn remove_member(&self, group: &Group, user: &User) -> impl Future<Output = Result<()>> + Send;
    /// Whether `password` is the user's current password (an LDAP bind as the user). `None`
    /// where the backend cannot tell (the Data API has no bind).
    fn check_password(
        &self,
        user: &User,
        password: &Secret,
    ) -> impl Future<Output = Result<Option<bool>>> + Send;
}
