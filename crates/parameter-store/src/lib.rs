//! SSM Parameter Store, reduced to what fargate-smb does with it: read, write (SecureString
//! with a chosen KMS key), tag, delete. Errors name the parameter and the IAM or KMS fix.

use aws_config::SdkConfig;
use aws_sdk_ssm::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{ParameterStringFilter, ParameterType, ResourceTypeForTagging, Tag},
};
use secrets::Secret;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("parameter {name} already exists")]
    AlreadyExists { name: String },
    #[error(
        "access denied calling ssm:{action} on {name}: grant the function's role ssm:{action} on this parameter \
         (and kms:Encrypt / kms:Decrypt on its key for a SecureString): {message}"
    )]
    AccessDenied {
        action: &'static str,
        name: String,
        message: String,
    },
    #[error(
        "the KMS key cannot be used for {name}: {message}: check KmsKeyId and that the key policy lets the function's role use it"
    )]
    Key { name: String, message: String },
    #[error("ssm:{action} on {name} failed: {message}")]
    Other {
        action: &'static str,
        name: String,
        message: String,
    },
}

impl StoreError {
    fn from_sdk<E, R>(action: &'static str, name: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let name = name.to_owned();
        let message = err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| aws_env::sdk_error_text(&err));
        match err.code() {
            Some("ParameterAlreadyExists") => Self::AlreadyExists { name },
            Some("AccessDeniedException") => Self::AccessDenied {
                action,
                name,
                message,
            },
            Some(
                "InvalidKeyId"
                | "KMSAccessDeniedException"
                | "KMSDisabledException"
                | "KMSNotFoundException",
            ) => Self::Key { name, message },
            Some(code) => Self::Other {
                action,
                name,
                message: format!("{code}: {message}"),
            },
            None => Self::Other {
                action,
                name,
                message,
            },
        }
    }
}

fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some("ParameterNotFound" | "InvalidResourceId" | "ParameterVersionNotFound")
    )
}

/// A parameter as read back.
#[derive(Debug)]
pub struct Stored {
    pub value: Secret,
    pub version: i64,
    pub secure: bool,
}

/// What to write.
#[derive(Debug)]
pub enum Value<'a> {
    Plain(&'a str),
    /// A SecureString, encrypted with `key_id` or, when `None`, the account's `alias/aws/ssm`.
    Secure {
        value: &'a Secret,
        key_id: Option<&'a str>,
    },
}

#[derive(Debug, Clone)]
pub struct ParameterStore {
    client: Client,
}

impl ParameterStore {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// Read a parameter; `None` if it does not exist.
    pub async fn get(&self, name: &str, decrypt: bool) -> Result<Option<Stored>, StoreError> {
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(decrypt)
            .send()
            .await
        {
            Ok(out) => {
                let p = out.parameter.ok_or_else(|| StoreError::Other {
                    action: "GetParameter",
                    name: name.to_owned(),
                    message: "the answer held no parameter".into(),
                })?;
                Ok(Some(Stored {
                    value: Secret::new(p.value.unwrap_or_default()),
                    version: p.version,
                    secure: p.r#type == Some(ParameterType::SecureString),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::from_sdk("GetParameter", name, e)),
        }
    }

    /// Write a parameter and return its new version. With `overwrite` false the parameter must
    /// not exist yet ([`StoreError::AlreadyExists`]) and `tags` are applied atomically with it;
    /// SSM refuses tags on an overwrite, so an overwrite ignores them (use [`Self::tag`]).
    pub async fn put(
        &self,
        name: &str,
        value: Value<'_>,
        description: &str,
        overwrite: bool,
        tags: &BTreeMap<String, String>,
    ) -> Result<i64, StoreError> {
        let mut request = self
            .client
            .put_parameter()
            .name(name)
            .description(description)
            .overwrite(overwrite);
        request = match value {
            Value::Plain(v) => request.value(v).r#type(ParameterType::String),
            Value::Secure { value, key_id } => request
                .value(value.expose())
                .r#type(ParameterType::SecureString)
                .set_key_id(key_id.map(str::to_owned)),
        };
        if !overwrite {
            request = request.set_tags(Some(to_tags(tags)));
        }
        match request.send().await {
            Ok(out) => Ok(out.version),
            Err(e) => Err(StoreError::from_sdk("PutParameter", name, e)),
        }
    }

    /// The parameter's tags; `None` if it does not exist.
    pub async fn tags(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        match self
            .client
            .list_tags_for_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.tag_list
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.key, t.value))
                    .collect(),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::from_sdk("ListTagsForResource", name, e)),
        }
    }

    /// Add or overwrite tags.
    pub async fn tag(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        self.client
            .add_tags_to_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .set_tags(Some(to_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_sdk("AddTagsToResource", name, e))
    }

    /// Remove tags by key.
    pub async fn untag(&self, name: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.client
            .remove_tags_from_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_sdk("RemoveTagsFromResource", name, e))
    }

    /// The KMS key a SecureString is encrypted with (`None` if the parameter does not exist or
    /// is not a SecureString). An overwrite must pass it again: without a key id SSM encrypts
    /// the new value with `alias/aws/ssm`, whatever the old one used.
    pub async fn key_id(&self, name: &str) -> Result<Option<String>, StoreError> {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(name)
            .build()
            .map_err(|e| StoreError::Other {
                action: "DescribeParameters",
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        match self
            .client
            .describe_parameters()
            .parameter_filters(filter)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .parameters
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| p.key_id)),
            Err(e) => Err(StoreError::from_sdk("DescribeParameters", name, e)),
        }
    }

    /// Delete a parameter; `false` if it was already gone.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(StoreError::from_sdk("DeleteParameter", name, e)),
        }
    }
}

fn to_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

/// The ARN of a parameter, as ECS `secrets[].valueFrom` wants it.
pub fn parameter_arn(partition: &str, region: &str, account: &str, name: &str) -> String {
    let name = name.strip_prefix('/').unwrap_or(name);
    format!("arn:{partition}:ssm:{region}:{account}:parameter/{name}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn arn_has_one_slash_whatever_the_name() {
        assert_eq!(
            super::parameter_arn("aws", "eu-west-1", "123456789012", "/app/web/password"),
            "arn:aws:ssm:eu-west-1:123456789012:parameter/app/web/password"
        );
        assert_eq!(
            super::parameter_arn("aws", "eu-west-1", "123456789012", "plain"),
            "arn:aws:ssm:eu-west-1:123456789012:parameter/plain"
        );
    }
}
