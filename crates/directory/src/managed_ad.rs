//! The AWS Managed Microsoft AD backend: the Directory Service Data API for users and groups,
//! and `ds:ResetUserPassword` for passwords (the Data API has no password operation).
//!
//! No emulator exists for these APIs (moto has neither): the request and response handling
//! here is tested with `aws-smithy-mocks`, and the AD behaviour itself through the LDAPS
//! backend against a real Samba DC.

use crate::{Directory, DirectoryError, Group, NewUser, Result, User};
use aws_config::SdkConfig;
use aws_sdk_directory as ds;
use aws_sdk_directoryservicedata as data;
use data::error::{ProvideErrorMetadata, SdkError};
use data::types::{AccessDeniedReason, AttributeValue, GroupScope, GroupType, UpdateType};
use secrets::Secret;

#[derive(Debug, Clone)]
pub struct ManagedAdDirectory {
    data: data::Client,
    ds: ds::Client,
    directory_id: String,
}

/// Whether a Data API error is an AccessDeniedException, and why.
trait Denied {
    fn denied(&self) -> Option<Option<&AccessDeniedReason>>;
}

macro_rules! denied {
    ($($module:ident::$op:ident),*) => {$(
        impl Denied for data::operation::$module::$op {
            fn denied(&self) -> Option<Option<&AccessDeniedReason>> {
                match self {
                    Self::AccessDeniedException(e) => Some(e.reason()),
                    _ => None,
                }
            }
        }
    )*};
}

denied!(
    create_user::CreateUserError,
    describe_user::DescribeUserError,
    update_user::UpdateUserError,
    disable_user::DisableUserError,
    delete_user::DeleteUserError,
    delete_group::DeleteGroupError,
    update_group::UpdateGroupError,
    create_group::CreateGroupError,
    describe_group::DescribeGroupError,
    add_group_member::AddGroupMemberError,
    remove_group_member::RemoveGroupMemberError
);

impl ManagedAdDirectory {
    pub fn new(config: &SdkConfig, directory_id: impl Into<String>) -> Self {
        Self::from_clients(
            data::Client::new(config),
            ds::Client::new(config),
            directory_id,
        )
    }

    pub fn from_clients(
        data: data::Client,
        ds: ds::Client,
        directory_id: impl Into<String>,
    ) -> Self {
        Self {
            data,
            ds,
            directory_id: directory_id.into(),
        }
    }

    fn fail<E, R>(&self, operation: &str, err: SdkError<E, R>) -> DirectoryError
    where
        E: ProvideErrorMetadata + Denied + std::error::Error + std::fmt::Display + 'static,
        R: std::fmt::Debug,
    {
        let message = error_message(&err);
        if let Some(reason) = err.as_service_error().and_then(Denied::denied) {
            return match reason {
                Some(AccessDeniedReason::DataDisabled) => DirectoryError::DataAccessDisabled {
                    directory_id: self.directory_id.clone(),
                },
                other => DirectoryError::AccessDenied {
                    user: "the function's IAM role".into(),
                    operation: operation.to_owned(),
                    detail: format!(
                        "{message} (reason {}): grant ds-data:* for this directory and ds:AccessDSData, scoped to {}",
                        other.map(|r| r.as_str()).unwrap_or("unknown"),
                        self.directory_id
                    ),
                },
            };
        }
        match error_code(&err).as_deref() {
            Some("ResourceNotFoundException") => DirectoryError::NotFound {
                what: operation.to_owned(),
                detail: message,
            },
            Some("ConflictException") => DirectoryError::AlreadyExists {
                what: format!("{operation} ({message})"),
            },
            Some("DirectoryUnavailableException") => DirectoryError::Unreachable {
                server: self.directory_id.clone(),
                detail: message,
            },
            Some(code) => DirectoryError::Other {
                operation: operation.to_owned(),
                detail: format!("{code}: {message}"),
            },
            None => DirectoryError::Other {
                operation: operation.to_owned(),
                detail: data::error::DisplayErrorContext(&err).to_string(),
            },
        }
    }

    /// The outcome of an idempotent call, where the error `already` means the goal was reached
    /// before (deleting what is gone, adding a member twice).
    fn settled<T, E, R>(
        &self,
        result: std::result::Result<T, SdkError<E, R>>,
        already: &str,
        operation: impl FnOnce() -> String,
    ) -> Result<()>
    where
        E: ProvideErrorMetadata + Denied + std::error::Error + std::fmt::Display + 'static,
        R: std::fmt::Debug,
    {
        match result {
            Ok(_) => Ok(()),
            Err(e) if Self::is_code(&e, already) => Ok(()),
            Err(e) => Err(self.fail(&operation(), e)),
        }
    }

    fn is_code<E: ProvideErrorMetadata + std::fmt::Display, R>(
        err: &SdkError<E, R>,
        code: &str,
    ) -> bool {
        error_code(err).as_deref() == Some(code)
    }

    async fn reset_password(&self, sam: &str, password: &Secret) -> Result<()> {
        match self
            .ds
            .reset_user_password()
            .directory_id(&self.directory_id)
            .user_name(sam)
            .new_password(password.expose())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let message = error_message(&err);
                Err(match error_code(&err).as_deref() {
                    Some("InvalidPasswordException") => DirectoryError::PasswordRejected {
                        account: sam.to_owned(),
                        detail: message,
                    },
                    Some("UserDoesNotExistException" | "EntityDoesNotExistException") => {
                        DirectoryError::NotFound {
                            what: format!("the user {sam}"),
                            detail: message,
                        }
                    }
                    Some("UnsupportedOperationException") => DirectoryError::Other {
                        operation: format!("reset the password of {sam}"),
                        detail: format!(
                            "{message}: ResetUserPassword works only for users in the OU named after the directory's NetBIOS name"
                        ),
                    },
                    Some("DirectoryUnavailableException") => DirectoryError::Unreachable {
                        server: self.directory_id.clone(),
                        detail: message,
                    },
                    Some("AccessDeniedException") => DirectoryError::AccessDenied {
                        user: "the function's IAM role".into(),
                        operation: "ds:ResetUserPassword".into(),
                        detail: message,
                    },
                    Some(code) => DirectoryError::Other {
                        operation: format!("reset the password of {sam}"),
                        detail: format!("{code}: {message}"),
                    },
                    None => DirectoryError::Other {
                        operation: format!("reset the password of {sam}"),
                        detail: ds::error::DisplayErrorContext(&err).to_string(),
                    },
                })
            }
        }
    }
}

/// The service's error code. From the wire it is in the metadata; a modeled error built in code
/// (as the SDK's own test utilities build them) carries it only as its type name, which the
/// generated `Display` prints first.
fn error_code<E: ProvideErrorMetadata + std::fmt::Display, R>(
    err: &SdkError<E, R>,
) -> Option<String> {
    if let Some(code) = err.code() {
        return Some(code.to_owned());
    }
    let shown = err.as_service_error()?.to_string();
    let name = shown.split([':', ' ']).next()?;
    name.ends_with("Exception").then(|| name.to_owned())
}

/// The service's error message, from the metadata or, for a modeled error built in code, from
/// its `Display` (`Name: message`).
fn error_message<E: ProvideErrorMetadata + std::fmt::Display, R>(err: &SdkError<E, R>) -> String {
    if let Some(m) = err.message() {
        return m.to_owned();
    }
    err.as_service_error()
        .map(|e| e.to_string())
        .map(|shown| {
            shown
                .split_once(": ")
                .map(|(_, m)| m.to_owned())
                .unwrap_or(shown)
        })
        .unwrap_or_default()
}

fn text(
    attrs: Option<&std::collections::HashMap<String, AttributeValue>>,
    key: &str,
) -> Option<String> {
    match attrs?.get(key)? {
        AttributeValue::S(s) => Some(s.clone()),
        AttributeValue::Ss(v) => v.first().cloned(),
        _ => None,
    }
}

impl Directory for ManagedAdDirectory {
    async fn find_user(&self, sam: &str) -> Result<Option<User>> {
        match self
            .data
            .describe_user()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .other_attributes("description")
            .send()
            .await
        {
            Ok(out) => Ok(Some(User {
                sam_account_name: out
                    .sam_account_name
                    .clone()
                    .unwrap_or_else(|| sam.to_owned()),
                dn: out.distinguished_name.clone(),
                sid: out.sid.clone().unwrap_or_default(),
                description: text(out.other_attributes.as_ref(), "description"),
                enabled: out.enabled.unwrap_or(false),
            })),
            Err(e) if Self::is_code(&e, "ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.fail(&format!("describe the user {sam}"), e)),
        }
    }

    async fn create_user(&self, user: &NewUser, password: &Secret) -> Result<User> {
        let sam = user.sam_account_name.as_str();
        let mut request = self
            .data
            .create_user()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .other_attributes("description", AttributeValue::S(user.description.clone()))
            .client_token(&user.client_token);
        if user.password_never_expires {
            // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD, as the Data API accepts it at creation.
            request = request.other_attributes("userAccountControl", AttributeValue::N(0x1_0200));
        }
        request.send().await.map_err(|e| {
            match self.fail(&format!("create the user {sam}"), e) {
                DirectoryError::AlreadyExists { .. } => DirectoryError::AlreadyExists {
                    what: format!("the user {sam}"),
                },
                other => other,
            }
        })?;
        // The Data API creates users disabled; ResetUserPassword sets the password and enables
        // the account. If the password is refused, delete the user: nothing half-made.
        if let Err(e) = self.reset_password(sam, password).await {
            let _ = self
                .data
                .delete_user()
                .directory_id(&self.directory_id)
                .sam_account_name(sam)
                .send()
                .await;
            return Err(e);
        }
        self.find_user(sam)
            .await?
            .ok_or_else(|| DirectoryError::Other {
                operation: format!("create the user {sam}"),
                detail: "the new user cannot be described".into(),
            })
    }

    async fn set_password(&self, user: &User, password: &Secret) -> Result<()> {
        self.reset_password(&user.sam_account_name, password).await
    }

    async fn disable(&self, user: &User) -> Result<()> {
        let sam = &user.sam_account_name;
        let result = self
            .data
            .disable_user()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .send()
            .await;
        self.settled(result, "ResourceNotFoundException", || {
            format!("disable {sam}")
        })
    }

    async fn set_description(&self, user: &User, description: &str) -> Result<()> {
        let sam = &user.sam_account_name;
        self.data
            .update_user()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .update_type(UpdateType::Replace)
            .other_attributes("description", AttributeValue::S(description.to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&format!("describe {sam}"), e))
    }

    async fn delete_user(&self, user: &User) -> Result<()> {
        let sam = &user.sam_account_name;
        let result = self
            .data
            .delete_user()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .send()
            .await;
        self.settled(result, "ResourceNotFoundException", || {
            format!("delete {sam}")
        })
    }

    async fn find_group(&self, sam: &str) -> Result<Option<Group>> {
        match self
            .data
            .describe_group()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .other_attributes("description")
            .send()
            .await
        {
            Ok(out) => Ok(Some(Group {
                sam_account_name: out
                    .sam_account_name
                    .clone()
                    .unwrap_or_else(|| sam.to_owned()),
                dn: out.distinguished_name.clone(),
                sid: out.sid.clone().unwrap_or_default(),
                description: text(out.other_attributes.as_ref(), "description"),
            })),
            Err(e) if Self::is_code(&e, "ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.fail(&format!("describe the group {sam}"), e)),
        }
    }

    async fn create_group(
        &self,
        sam: &str,
        _ou: &str,
        description: &str,
        client_token: &str,
    ) -> Result<Group> {
        match self
            .data
            .create_group()
            .directory_id(&self.directory_id)
            .sam_account_name(sam)
            .group_type(GroupType::Security)
            .group_scope(GroupScope::Global)
            .other_attributes("description", AttributeValue::S(description.to_owned()))
            .client_token(client_token)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if Self::is_code(&e, "ConflictException") => {}
            Err(e) => return Err(self.fail(&format!("create the group {sam}"), e)),
        }
        self.find_group(sam)
            .await?
            .ok_or_else(|| DirectoryError::Other {
                operation: format!("create the group {sam}"),
                detail: "the new group cannot be described".into(),
            })
    }

    async fn set_group_description(&self, group: &Group, description: &str) -> Result<()> {
        let g = &group.sam_account_name;
        self.data
            .update_group()
            .directory_id(&self.directory_id)
            .sam_account_name(g)
            .update_type(UpdateType::Replace)
            .other_attributes("description", AttributeValue::S(description.to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&format!("describe the group {g}"), e))
    }

    async fn delete_group(&self, group: &Group) -> Result<()> {
        let g = &group.sam_account_name;
        let result = self
            .data
            .delete_group()
            .directory_id(&self.directory_id)
            .sam_account_name(g)
            .send()
            .await;
        self.settled(result, "ResourceNotFoundException", || {
            format!("delete the group {g}")
        })
    }

    async fn add_member(&self, group: &Group, user: &User) -> Result<()> {
        let (g, u) = (&group.sam_account_name, &user.sam_account_name);
        let result = self
            .data
            .add_group_member()
            .directory_id(&self.directory_id)
            .group_name(g)
            .member_name(u)
            .send()
            .await;
        self.settled(result, "ConflictException", || format!("add {u} to {g}"))
    }

    async fn remove_member(&self, group: &Group, user: &User) -> Result<()> {
        let (g, u) = (&group.sam_account_name, &user.sam_account_name);
        let result = self
            .data
            .remove_group_member()
            .directory_id(&self.directory_id)
            .group_name(g)
            .member_name(u)
            .send()
            .await;
        self.settled(result, "ResourceNotFoundException", || {
            format!("remove {u} from {g}")
        })
    }

    async fn check_password(&self, _user: &User, _password: &Secret) -> Result<Option<bool>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
