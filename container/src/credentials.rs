//! The service account's credential: from the environment (ECS `secrets`), or read from SSM
//! with the task role so that it never enters the container's environment at all.

use crate::config::{Config, Source};
use parameter_store::ParameterStore;
use secrets::Secret;

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
}

#[derive(Debug)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
}

pub async fn resolve(config: &Config) -> Result<Credential, CredentialError> {
    let mut store: Option<ParameterStore> = None;
    let username = match &config.username {
        Source::Env { value, .. } => value.clone(),
        Source::Parameter(name) => read(&mut store, name, false)
            .await?
            .expose()
            .trim()
            .to_owned(),
    };
    let password = match &config.password {
        Source::Env { value, .. } => value.clone(),
        Source::Parameter(name) => read(&mut store, name, true).await?,
    };
    Ok(Credential { username, password })
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
