//! The service account's credential: from the environment (ECS `secrets`), or read from SSM or
//! Secrets Manager with the task role so that it never enters the container's environment at all.
//!
//! A Secrets Manager secret (`SMB_CREDENTIAL_SECRET`) holds the whole credential as JSON,
//! `{"username": "DOMAIN\\name", "password": "…", "share": "\\\\server\\share"}`: the shape
//! the template creates and its rotation writes. `username` and `password` are required strings;
//! `share`, when present, must be a string too, and is not used here: the share to map is always
//! `SMB_SHARE` / `SMB_MAPPINGS`, which the configuration already needs before any secret is read.

use crate::config::{Config, Source};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use parameter_store::ParameterStore;
use secrets::Secret;
use service_credential::{SHAPE as SECRET_SHAPE, ShapeError};

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("could not set up the AWS SDK to read {name}: {detail}")]
    Sdk { name: String, detail: String },
    #[error(
        "SSM parameter {name} does not exist: check SMB_*_PARAMETER against the stack's outputs"
    )]
    Missing { name: String },
    #[error(
        "reading SSM parameter {name} failed: {detail}: the task role needs ssm:GetParameter on it and kms:Decrypt on its key"
    )]
    Read { name: String, detail: String },
    #[error("SSM parameter {name} is empty")]
    Empty { name: String },
    #[error(
        "Secrets Manager secret {id} (SMB_CREDENTIAL_SECRET) does not exist or has no AWSCURRENT version: check SMB_CREDENTIAL_SECRET against the stack's outputs"
    )]
    SecretMissing { id: String },
    #[error(
        "reading Secrets Manager secret {id} (SMB_CREDENTIAL_SECRET) was denied: the task role needs secretsmanager:GetSecretValue on it and kms:Decrypt on its key"
    )]
    SecretDenied { id: String },
    #[error(
        "reading Secrets Manager secret {id} (SMB_CREDENTIAL_SECRET) failed: {detail}: the task role needs secretsmanager:GetSecretValue on it and kms:Decrypt on its key"
    )]
    SecretRead { id: String, detail: String },
    /// `what` says what the value is instead; never the value itself, nor serde's message, which
    /// quotes it (a secret holding the bare password as a JSON string would be printed).
    #[error(
        "Secrets Manager secret {id} (SMB_CREDENTIAL_SECRET) {what}: its value must be a JSON object such as {SECRET_SHAPE}"
    )]
    NotJson { id: String, what: &'static str },
    #[error(
        "Secrets Manager secret {id} (SMB_CREDENTIAL_SECRET): the key \"{key}\" {problem}: its value must be a JSON object such as {SECRET_SHAPE}"
    )]
    BadKey {
        id: String,
        key: &'static str,
        problem: &'static str,
    },
}

#[derive(Debug)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
}

pub async fn resolve(config: &Config) -> Result<Credential, CredentialError> {
    let mut store: Option<ParameterStore> = None;
    // The configuration takes both halves from the same secret: it is read once.
    let mut secret: Option<Credential> = None;
    let username = match &config.username {
        Source::Env { value, .. } => value.clone(),
        Source::Parameter(name) => read(&mut store, name, false)
            .await?
            .expose()
            .trim()
            .to_owned(),
        Source::Secret { id, .. } => read_secret(&mut secret, id).await?.username.clone(),
    };
    let password = match &config.password {
        Source::Env { value, .. } => value.clone(),
        Source::Parameter(name) => read(&mut store, name, true).await?,
        Source::Secret { id, .. } => read_secret(&mut secret, id).await?.password.clone(),
    };
    Ok(Credential { username, password })
}

async fn read_secret<'a>(
    cache: &'a mut Option<Credential>,
    id: &str,
) -> Result<&'a Credential, CredentialError> {
    if cache.is_none() {
        let sdk = aws_env::load().await.map_err(|e| CredentialError::Sdk {
            name: id.into(),
            detail: e.to_string(),
        })?;
        let client = aws_sdk_secretsmanager::Client::new(&sdk);
        let out = client
            .get_secret_value()
            .secret_id(id)
            // AWSCURRENT is the default; named, so that no stand-in's default can differ (moto's
            // does after a rotation: ../shared/LOCAL-STACK.md).
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| match e.code() {
                // Also what a secret without an AWSCURRENT version answers.
                Some("ResourceNotFoundException") => {
                    CredentialError::SecretMissing { id: id.into() }
                }
                Some("AccessDeniedException") => CredentialError::SecretDenied { id: id.into() },
                code => CredentialError::SecretRead {
                    id: id.into(),
                    detail: match (code, e.message()) {
                        (Some(code), Some(message)) => format!("{code}: {message}"),
                        (Some(code), None) => code.to_owned(),
                        // No service error: a timeout, no connection, an unreadable answer
                        // (never the SDK's DisplayErrorContext: it would print the answer).
                        (None, _) => aws_env::sdk_error_text(&e),
                    },
                },
            })?;
        let value = match (out.secret_string, out.secret_binary) {
            (Some(text), _) => Secret::new(text),
            (None, Some(_)) => {
                return Err(CredentialError::NotJson {
                    id: id.into(),
                    what: "holds a binary value, not JSON text",
                });
            }
            (None, None) => {
                return Err(CredentialError::NotJson {
                    id: id.into(),
                    what: "has an empty value",
                });
            }
        };
        *cache = Some(parse_secret(id, &value)?);
    }
    cache.as_ref().ok_or_else(|| CredentialError::Sdk {
        name: id.into(),
        detail: "no secret value".into(),
    })
}

/// The credential in a secret's JSON (crates/service-credential has its shape and checks).
fn parse_secret(id: &str, value: &Secret) -> Result<Credential, CredentialError> {
    let c = service_credential::parse(value).map_err(|e| match e {
        ShapeError::NotAnObject(what) => CredentialError::NotJson {
            id: id.into(),
            what,
        },
        ShapeError::Key { key, problem } => CredentialError::BadKey {
            id: id.into(),
            key,
            problem,
        },
    })?;
    Ok(Credential {
        username: c.username,
        password: c.password,
    })
}

async fn read(
    store: &mut Option<ParameterStore>,
    name: &str,
    decrypt: bool,
) -> Result<Secret, CredentialError> {
    if store.is_none() {
        let sdk = aws_env::load().await.map_err(|e| CredentialError::Sdk {
            name: name.into(),
            detail: e.to_string(),
        })?;
        *store = Some(ParameterStore::new(&sdk));
    }
    let store = store.as_ref().ok_or_else(|| CredentialError::Sdk {
        name: name.into(),
        detail: "no SSM client".into(),
    })?;
    match store.get(name, decrypt).await {
        Ok(Some(p)) if p.value.is_empty() => Err(CredentialError::Empty { name: name.into() }),
        Ok(Some(p)) => Ok(p.value),
        Ok(None) => Err(CredentialError::Missing { name: name.into() }),
        Err(e) => Err(CredentialError::Read {
            name: name.into(),
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/smb-AbCdEf";

    fn parse(text: &str) -> Result<Credential, CredentialError> {
        parse_secret(ID, &Secret::new(text))
    }

    #[test]
    fn the_template_s_shape() {
        let c = parse(
            r#"{"username":" EXAMPLE\\svc-web ","password":" Pw-1 ","share":"\\\\fs\\share"}"#,
        )
        .unwrap();
        assert_eq!(c.username, r"EXAMPLE\svc-web");
        // A password is taken as given, spaces and all.
        assert_eq!(c.password.expose(), " Pw-1 ");
        // `share` is optional, and other keys (a rotation's bookkeeping) are let be.
        let c = parse(r#"{"username":"svc@example.test","password":"Pw-2","rotated":1}"#).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("svc@example.test", "Pw-2")
        );
    }

    #[test]
    fn each_error_names_the_secret_and_the_key_and_shows_no_value() {
        // One case of each kind: the checks themselves are crates/service-credential's.
        let cases: &[(&str, &str)] = &[
            (
                r#"{"username":"EXAMPLE\\svc"}"#,
                r#"the key "password" is missing"#,
            ),
            (
                r#"{"username":"svc","password":"Hidden-1"}"#,
                r#"the key "username" is not a user name"#,
            ),
            ("Hidden-1", "is not JSON"),
            (r#""Hidden-1""#, "is JSON but not an object"),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(e.contains(ID) && e.contains("SMB_CREDENTIAL_SECRET"), "{e}");
            assert!(e.contains(r#""password": "...""#), "says the shape: {e}");
            assert!(!e.contains("Hidden-1"), "{e}");
        }
    }
}
