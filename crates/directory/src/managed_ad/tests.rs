//! The Data API adapter against `aws-smithy-mocks` (no emulator exists for ds-data or
//! ResetUserPassword): requests are checked field by field, responses and errors are shaped as
//! the service returns them.

use super::*;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use data::operation::{
    add_group_member::{AddGroupMemberError, AddGroupMemberOutput},
    create_user::{CreateUserError, CreateUserOutput},
    delete_user::DeleteUserOutput,
    describe_user::{DescribeUserError, DescribeUserOutput},
    remove_group_member::{RemoveGroupMemberError, RemoveGroupMemberOutput},
};
use data::types::error::{AccessDeniedException, ConflictException, ResourceNotFoundException};
use ds::operation::reset_user_password::{ResetUserPasswordError, ResetUserPasswordOutput};
use ds::types::error::InvalidPasswordException;

const DIR: &str = "d-1234567890";
const SID: &str = "S-1-5-21-1-2-3-1105";

fn new_user() -> NewUser {
    NewUser {
        sam_account_name: "svc-web-a".into(),
        ou: String::new(),
        description: "fargate-smb:owner=stack/Account".into(),
        password_never_expires: true,
        client_token: "req-1-svc-web-a".into(),
    }
}

fn described() -> DescribeUserOutput {
    DescribeUserOutput::builder()
        .directory_id(DIR)
        .sam_account_name("svc-web-a")
        .sid(SID)
        .distinguished_name("CN=svc-web-a,OU=Users,OU=corp,DC=corp,DC=example,DC=com")
        .enabled(true)
        .other_attributes(
            "description",
            AttributeValue::S("fargate-smb:owner=stack/Account".into()),
        )
        .build()
}

#[tokio::test]
async fn create_user_sends_the_token_and_attributes_then_resets_the_password() {
    let create = mock!(data::Client::create_user)
        .match_requests(|r| {
            r.directory_id() == Some(DIR)
                && r.sam_account_name() == Some("svc-web-a")
                && r.client_token() == Some("req-1-svc-web-a")
                && r.other_attributes().and_then(|a| a.get("description"))
                    == Some(&AttributeValue::S("fargate-smb:owner=stack/Account".into()))
                && r.other_attributes()
                    .and_then(|a| a.get("userAccountControl"))
                    == Some(&AttributeValue::N(0x1_0200))
        })
        .then_output(|| {
            CreateUserOutput::builder()
                .directory_id(DIR)
                .sid(SID)
                .sam_account_name("svc-web-a")
                .build()
        });
    let describe = mock!(data::Client::describe_user)
        .match_requests(|r| r.other_attributes().iter().any(|x| x == "description"))
        .then_output(described);
    let reset = mock!(ds::Client::reset_user_password)
        .match_requests(|r| {
            r.directory_id() == Some(DIR)
                && r.user_name() == Some("svc-web-a")
                && r.new_password() == Some("Pw-0123456789abcdef")
        })
        .then_output(|| ResetUserPasswordOutput::builder().build());
    let dir = ManagedAdDirectory::from_clients(
        mock_client!(
            aws_sdk_directoryservicedata,
            RuleMode::MatchAny,
            [&create, &describe]
        ),
        mock_client!(aws_sdk_directory, RuleMode::MatchAny, [&reset]),
        DIR,
    );
    let user = dir
        .create_user(&new_user(), &Secret::new("Pw-0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(user.sid, SID);
    assert!(user.enabled);
    assert_eq!(
        user.description.as_deref(),
        Some("fargate-smb:owner=stack/Account")
    );
    assert_eq!(
        (create.num_calls(), reset.num_calls(), describe.num_calls()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_rejected_password_deletes_the_new_user() {
    let create = mock!(data::Client::create_user)
        .then_output(|| CreateUserOutput::builder().sid(SID).build());
    let delete = mock!(data::Client::delete_user)
        .match_requests(|r| r.sam_account_name() == Some("svc-web-a"))
        .then_output(|| DeleteUserOutput::builder().build());
    let reset = mock!(ds::Client::reset_user_password).then_error(|| {
        ResetUserPasswordError::InvalidPasswordException(
            InvalidPasswordException::builder()
                .message("The new password does not meet the complexity requirements")
                .build(),
        )
    });
    let dir = ManagedAdDirectory::from_clients(
        mock_client!(
            aws_sdk_directoryservicedata,
            RuleMode::MatchAny,
            [&create, &delete]
        ),
        mock_client!(aws_sdk_directory, RuleMode::MatchAny, [&reset]),
        DIR,
    );
    let err = dir
        .create_user(&new_user(), &Secret::new("short"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DirectoryError::PasswordRejected { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("complexity"), "{err}");
    assert_eq!(delete.num_calls(), 1, "the half-made user must be deleted");
}

#[tokio::test]
async fn data_access_disabled_says_how_to_enable_it() {
    let create = mock!(data::Client::create_user).then_error(|| {
        CreateUserError::AccessDeniedException(
            AccessDeniedException::builder()
                .message("Directory data access is disabled")
                .reason(AccessDeniedReason::DataDisabled)
                .build(),
        )
    });
    let dir = ManagedAdDirectory::from_clients(
        mock_client!(aws_sdk_directoryservicedata, RuleMode::MatchAny, [&create]),
        mock_client!(aws_sdk_directory, RuleMode::MatchAny, []),
        DIR,
    );
    let err = dir
        .create_user(&new_user(), &Secret::new("Pw-0123456789abcdef"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DirectoryError::DataAccessDisabled { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("aws ds enable-directory-data-access --directory-id d-1234567890"),
        "{err}"
    );
}

#[tokio::test]
async fn iam_denial_is_not_mistaken_for_disabled_data_access() {
    let describe = mock!(data::Client::describe_user).then_error(|| {
        DescribeUserError::AccessDeniedException(
            AccessDeniedException::builder()
                .message("not authorized")
                .reason(AccessDeniedReason::IamAuth)
                .build(),
        )
    });
    let dir = ManagedAdDirectory::from_clients(
        mock_client!(
            aws_sdk_directoryservicedata,
            RuleMode::MatchAny,
            [&describe]
        ),
        mock_client!(aws_sdk_directory, RuleMode::MatchAny, []),
        DIR,
    );
    let err = dir.find_user("svc").await.unwrap_err();
    assert!(matches!(err, DirectoryError::AccessDenied { .. }), "{err}");
    assert!(err.to_string().contains("IAM_AUTH"), "{err}");
}

#[tokio::test]
async fn lookups_and_membership_are_idempotent() {
    let missing = mock!(data::Client::describe_user).then_error(|| {
        DescribeUserError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("no such user")
                .build(),
        )
    });
    let add = mock!(data::Client::add_group_member)
        .match_requests(|r| {
            r.group_name() == Some("web-share") && r.member_name() == Some("svc-web-a")
        })
        .then_error(|| {
            AddGroupMemberError::ConflictException(
                ConflictException::builder()
                    .message("already a member")
                    .build(),
            )
        });
    let add_ok = mock!(data::Client::add_group_member)
        .then_output(|| AddGroupMemberOutput::builder().build());
    let remove = mock!(data::Client::remove_group_member).then_error(|| {
        RemoveGroupMemberError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("not a member")
                .build(),
        )
    });
    let _ = RemoveGroupMemberOutput::builder().build();
    let dir = ManagedAdDirectory::from_clients(
        mock_client!(
            aws_sdk_directoryservicedata,
            RuleMode::MatchAny,
            [&missing, &add, &add_ok, &remove]
        ),
        mock_client!(aws_sdk_directory, RuleMode::MatchAny, []),
        DIR,
    );
    assert_eq!(dir.find_user("svc-web-a").await.unwrap(), None);
    let group = Group {
        sam_account_name: "web-share".into(),
        dn: None,
        sid: "S-1-5-21-1-2-3-2000".into(),
        description: None,
    };
    let user = User {
        sam_account_name: "svc-web-a".into(),
        dn: None,
        sid: SID.into(),
        description: None,
        enabled: true,
    };
    dir.add_member(&group, &user).await.unwrap();
    dir.remove_member(&group, &user).await.unwrap();
    assert_eq!((add.num_calls(), remove.num_calls()), (1, 1));
    assert_eq!(
        dir.check_password(&user, &Secret::new("x")).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_taken_name_is_already_exists() {
    let create = mock!(data::Client::create_user).then_error(|| {
        CreateUserError::ConflictException(
            ConflictException::builder().message("user exists").build(),
        )
    });
    let dir = ManagedAdDirectory::from_clients(
        mock_client!(aws_sdk_directoryservicedata, RuleMode::MatchAny, [&create]),
        mock_client!(aws_sdk_directory, RuleMode::MatchAny, []),
        DIR,
    );
    let err = dir
        .create_user(&new_user(), &Secret::new("Pw-0123456789abcdef"))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::AlreadyExists { .. }), "{err}");
}
