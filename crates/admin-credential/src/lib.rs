//! The credential of an administrator a custom resource acts as (an AD admin binding over LDAPS,
//! a share admin writing content), read at request time from where the template points:
//!
//! - an SSM SecureString holding the password, with the user name given as a property; or
//! - a Secrets Manager secret holding the password alone, or JSON `{"username", "password"}`
//!   (the shape Secrets Manager rotation functions write), whose `username` wins over the
//!   property.
//!
//! The password is a [`Secret`] from the moment it arrives and is never in an error message.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use parameter_store::{ParameterStore, StoreError};
use secrets::Secret;

/// Where the password is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// An SSM parameter name (`AdminPasswordParameter`).
    Parameter(&'a str),
    /// A Secrets Manager secret id or ARN (`AdminSecretId`).
    Secret(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "the SSM parameter {name} (AdminPasswordParameter) does not exist: create it as a SecureString holding the admin's password, or fix the name"
    )]
    MissingParameter { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the secret {id} (AdminSecretId) could not be read: {detail}")]
    Secret { id: String, detail: String },
}

/// A user name (possibly empty, when neither the property nor the secret gives one) and password.
#[derive(Debug, Clone)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
}

/// The SSM and Secrets Manager clients, built once per container.
#[derive(Debug, Clone)]
pub struct AdminCredentials {
    store: ParameterStore,
    secrets: aws_sdk_secretsmanager::Client,
}

impl AdminCredentials {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self::from_clients(
            ParameterStore::new(sdk),
            aws_sdk_secretsmanager::Client::new(sdk),
        )
    }

    pub fn from_clients(store: ParameterStore, secrets: aws_sdk_secretsmanager::Client) -> Self {
        Self { store, secrets }
    }

    /// Read the credential. `username` is the configured user name (`AdminUsername`), used
    /// unless a JSON secret names one.
    pub async fn read(
        &self,
        username: Option<&str>,
        source: Source<'_>,
    ) -> Result<Credential, CredentialError> {
        let configured = username.map(str::trim).unwrap_or_default().to_owned();
        match source {
            Source::Parameter(name) => {
                let stored = self.store.get(name, true).await?.ok_or_else(|| {
                    CredentialError::MissingParameter {
                        name: name.to_owned(),
                    }
                })?;
                Ok(Credential {
                    username: configured,
                    password: stored.value,
                })
            }
            Source::Secret(id) => {
                let value = self.secret_string(id).await?;
                parse_secret(id, configured, value)
            }
        }
    }

    async fn secret_string(&self, id: &str) -> Result<Secret, CredentialError> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| CredentialError::Secret {
                id: id.to_owned(),
                detail: match e.code() {
                    Some("ResourceNotFoundException") => {
                        "it does not exist: fix AdminSecretId".into()
                    }
                    Some("AccessDeniedException") => "access denied: grant the function's role \
                         secretsmanager:GetSecretValue on it (and kms:Decrypt on its key)"
                        .into(),
                    code => format!(
                        "{}: {}",
                        code.unwrap_or("error"),
                        e.message().unwrap_or_default()
                    ),
                },
            })?;
        Ok(Secret::new(out.secret_string.unwrap_or_default()))
    }
}

/// A JSON object with a `password` (and maybe `username`), or else the password itself.
fn parse_secret(
    id: &str,
    configured: String,
    value: Secret,
) -> Result<Credential, CredentialError> {
    let Ok(serde_json::Value::Object(map)) =
        serde_json::from_str::<serde_json::Value>(value.expose())
    else {
        return Ok(Credential {
            username: configured,
            password: value,
        });
    };
    let password = map
        .get("password")
        .and_then(|v| v.as_str())
        .map(Secret::new)
        .ok_or_else(|| CredentialError::Secret {
            id: id.to_owned(),
            detail: "it is JSON without a \"password\" key".into(),
        })?;
    let username = map
        .get("username")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or(configured);
    Ok(Credential { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_json_secrets() {
        let c = parse_secret("s", "admin@x".into(), Secret::new("Pa55-word")).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("admin@x", "Pa55-word")
        );
        let c = parse_secret(
            "s",
            "configured".into(),
            Secret::new(r#"{"username":"EXAMPLE\\admin","password":"Pw-1"}"#),
        )
        .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("EXAMPLE\\admin", "Pw-1")
        );
        let c = parse_secret(
            "s",
            "configured".into(),
            Secret::new(r#"{"password":"Pw-2"}"#),
        )
        .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("configured", "Pw-2")
        );
        // A password that happens to be valid JSON but not an object stays a password.
        let c = parse_secret("s", String::new(), Secret::new("12345")).unwrap();
        assert_eq!(c.password.expose(), "12345");
    }

    #[test]
    fn json_without_a_password_is_an_error_that_shows_no_value() {
        let e = parse_secret(
            "arn:s",
            String::new(),
            Secret::new(r#"{"pass":"Hidden-1"}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("without a \"password\" key") && e.contains("arn:s"),
            "{e}"
        );
        assert!(!e.contains("Hidden-1"), "{e}");
        let shown = format!(
            "{:?}",
            Credential {
                username: "u".into(),
                password: Secret::new("Hidden-2")
            }
        );
        assert!(!shown.contains("Hidden-2"), "{shown}");
    }
}
