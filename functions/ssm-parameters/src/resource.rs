//! Create, update and delete of the parameter set.

use crate::properties::Properties;
use custom_resource::{CustomResource, Invalid, Outcome, Request, Secret};
use parameter_store::{ParameterStore, StoreError, Value, parameter_arn};
use std::collections::BTreeMap;

/// Tag naming the stack and logical id that made a parameter.
pub const OWNER_TAG: &str = "fargate-smb:owner";
/// SSM tag values hold at most 256 characters.
const MAX_TAG_VALUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid property {0}")]
    Invalid(#[from] Invalid),
    #[error(
        "parameter {name} already exists and was not created by this resource ({OWNER_TAG} is {found:?}): \
         choose another ParameterPrefix, or delete that parameter if it is stale"
    )]
    Foreign { name: String, found: String },
    #[error("the StackId {0:?} is not a CloudFormation stack ARN")]
    StackId(String),
    #[error("could not generate a password: {0}")]
    Password(#[from] secrets::PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Aws(#[from] aws_env::ConfigError),
    #[error(
        "ALLOWED_PARAMETER_PATH={0:?} is not an SSM path: set it to the path this function may write, e.g. /fargate-smb, or / for any"
    )]
    AllowedPath(String),
}

/// The resource, with its SSM client built once per container.
#[derive(Debug)]
pub struct SsmParameters {
    store: ParameterStore,
    allowed_path: String,
}

impl SsmParameters {
    pub fn new(store: ParameterStore, allowed_path: impl Into<String>) -> Self {
        Self {
            store,
            allowed_path: allowed_path.into(),
        }
    }

    /// Read `ALLOWED_PARAMETER_PATH` (default `/`) and the AWS configuration.
    pub async fn from_env() -> Result<Self, InitError> {
        let allowed = std::env::var("ALLOWED_PARAMETER_PATH").unwrap_or_else(|_| "/".into());
        if !allowed.starts_with('/')
            || allowed.contains("//")
            || allowed.chars().any(char::is_whitespace)
        {
            return Err(InitError::AllowedPath(allowed));
        }
        let config = aws_env::load().await?;
        Ok(Self::new(ParameterStore::new(&config), allowed))
    }
}

/// The owner tag's value: stack ARN and logical id, cut from the front if too long (the stack's
/// unique id and the logical id are at the end).
fn owner(request: &Request<Properties>) -> String {
    let full = request.owner();
    let skip = full.len().saturating_sub(MAX_TAG_VALUE);
    full[full
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= skip)
        .unwrap_or(0)..]
        .to_owned()
}

fn desired_tags(request: &Request<Properties>, props: &Properties) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = props
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    tags.insert(OWNER_TAG.into(), owner(request));
    tags
}

/// Which of the three parameters, with what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Share,
    Username,
    Password,
}

impl Slot {
    const ALL: [Slot; 3] = [Slot::Share, Slot::Username, Slot::Password];

    fn name(self, p: &Properties) -> String {
        match self {
            Slot::Share => p.share_name(),
            Slot::Username => p.username_name(),
            Slot::Password => p.password_name(),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Slot::Share => "fargate-smb: UNC path of the SMB share the container maps",
            Slot::Username => "fargate-smb: service account the container maps the share with",
            Slot::Password => {
                "fargate-smb: password of the service account (generated; never returned)"
            }
        }
    }

    fn plain(self, p: &Properties) -> Option<String> {
        match self {
            Slot::Share => Some(p.unc()),
            Slot::Username => Some(p.username.trim().to_owned()),
            Slot::Password => None,
        }
    }
}

impl SsmParameters {
    fn validate(&self, p: &Properties) -> Result<(), Error> {
        p.validate(&self.allowed_path).map_err(Error::from)
    }

    async fn put_new(
        &self,
        slot: Slot,
        p: &Properties,
        tags: &BTreeMap<String, String>,
    ) -> Result<i64, Error> {
        let name = slot.name(p);
        let version = match slot.plain(p) {
            Some(v) => {
                self.store
                    .put(&name, Value::Plain(&v), slot.description(), false, tags)
                    .await?
            }
            None => {
                let password = p.password_rules().generate()?;
                self.put_password(&name, &password, p, false, tags).await?
            }
        };
        tracing::info!(parameter = %name, version, "created");
        Ok(version)
    }

    async fn put_password(
        &self,
        name: &str,
        password: &Secret,
        p: &Properties,
        overwrite: bool,
        tags: &BTreeMap<String, String>,
    ) -> Result<i64, Error> {
        let value = Value::Secure {
            value: password,
            key_id: p.key_id(),
        };
        Ok(self
            .store
            .put(name, value, Slot::Password.description(), overwrite, tags)
            .await?)
    }

    /// Make sure `name` is ours: `Ok(true)` if it exists with our owner tag, `Ok(false)` if it
    /// does not exist, `Err(Foreign)` otherwise.
    async fn owned(&self, name: &str, owner: &str) -> Result<bool, Error> {
        match self.store.tags(name).await? {
            None => Ok(false),
            Some(tags) => match tags.get(OWNER_TAG) {
                Some(found) if found == owner => Ok(true),
                found => Err(Error::Foreign {
                    name: name.into(),
                    found: found.cloned().unwrap_or_default(),
                }),
            },
        }
    }

    /// Bring an existing parameter of ours to the desired state, keeping the password.
    async fn converge(
        &self,
        slot: Slot,
        p: &Properties,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let name = slot.name(p);
        if let Some(want) = slot.plain(p) {
            let current = self.store.get(&name, false).await?;
            if current.as_ref().map(|c| c.value.expose()) != Some(want.as_str()) {
                let version = self
                    .store
                    .put(&name, Value::Plain(&want), slot.description(), true, tags)
                    .await?;
                tracing::info!(parameter = %name, version, "updated");
            }
        }
        self.sync_tags(&name, tags).await
    }

    async fn sync_tags(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<(), Error> {
        let current = self.store.tags(name).await?.unwrap_or_default();
        let stale: Vec<String> = current
            .keys()
            .filter(|k| !tags.contains_key(*k) && !k.starts_with("aws:"))
            .cloned()
            .collect();
        let changed: BTreeMap<String, String> = tags
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.store.untag(name, &stale).await?;
        self.store.tag(name, &changed).await?;
        Ok(())
    }

    async fn outcome(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        let p = &request.properties;
        let stack = request
            .stack()
            .ok_or_else(|| Error::StackId(request.stack_id.clone()))?;
        let arn = |name: &str| parameter_arn(stack.partition, stack.region, stack.account, name);
        let version = self
            .store
            .get(&p.password_name(), false)
            .await?
            .map(|s| s.version)
            .unwrap_or_default();
        let (user, password, share) = (p.username_name(), p.password_name(), p.share_name());
        Ok(Outcome::new()
            .with("ParameterPrefix", p.prefix())
            .with("UsernameParameterName", user.as_str())
            .with("UsernameParameterArn", arn(&user))
            .with("PasswordParameterName", password.as_str())
            .with("PasswordParameterArn", arn(&password))
            .with("PasswordParameterVersion", version.to_string())
            .with("SharePathParameterName", share.as_str())
            .with("SharePathParameterArn", arn(&share)))
    }

    /// Remove what this Create made before failing, so a failed Create leaves nothing behind.
    async fn roll_back(&self, created: &[String]) {
        for name in created {
            match self.store.delete(name).await {
                Ok(_) => tracing::info!(parameter = %name, "rolled back"),
                Err(e) => tracing::error!(parameter = %name, error = %e, "could not roll back"),
            }
        }
    }
}

impl CustomResource for SsmParameters {
    type Properties = Properties;
    type Error = Error;

    fn physical_id(&self, request: &Request<Properties>) -> String {
        request.properties.prefix().to_owned()
    }

    /// A RetainOnDelete this version cannot read keeps the parameters.
    fn on_unreadable(&self, property: &str) -> custom_resource::Unreadable {
        match property {
            "RetainOnDelete" => custom_resource::Unreadable::Use(serde_json::Value::Bool(true)),
            _ => custom_resource::Unreadable::LeaveOut,
        }
    }

    /// The id is the prefix, which names all three parameters; Delete reads nothing else but
    /// RetainOnDelete. (SSM names are case-sensitive, so two ids never name one parameter.)
    fn recover_properties(
        &self,
        physical_id: &str,
        properties: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        let text = |v: &str| serde_json::Value::String(v.to_owned());
        properties
            .entry("ParameterPrefix")
            .or_insert_with(|| text(physical_id));
        properties.entry("Username").or_insert_with(|| text(""));
        properties.entry("SharePath").or_insert_with(|| text(""));
    }

    async fn create(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        let p = &request.properties;
        self.validate(p)?;
        request
            .stack()
            .ok_or_else(|| Error::StackId(request.stack_id.clone()))?;
        let tags = desired_tags(request, p);
        let owner = owner(request);
        let mut created = Vec::new();
        for slot in Slot::ALL {
            let name = slot.name(p);
            let step = async {
                match self.put_new(slot, p, &tags).await {
                    Ok(_) => {
                        created.push(name.clone());
                        Ok(())
                    }
                    // A repeated Create (or a rollback to this prefix) finds its own parameters:
                    // adopt them and keep the password.
                    Err(Error::Store(StoreError::AlreadyExists { .. })) => {
                        if self.owned(&name, &owner).await? {
                            tracing::info!(parameter = %name, "already exists and is ours; adopting it");
                            self.converge(slot, p, &tags).await
                        } else {
                            // Deleted between the put and the tag read: try once more.
                            self.put_new(slot, p, &tags)
                                .await
                                .map(|_| created.push(name.clone()))
                        }
                    }
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = step.await {
                self.roll_back(&created).await;
                return Err(e);
            }
        }
        self.outcome(request).await
    }

    async fn update(
        &self,
        request: &Request<Properties>,
        old: &Properties,
    ) -> Result<Outcome, Error> {
        let p = &request.properties;
        self.validate(p)?;
        let tags = desired_tags(request, p);
        let owner = owner(request);
        for slot in [Slot::Share, Slot::Username] {
            // After the first rotation the rotation function owns the username (it switches
            // between the alternating pair): an Update writes it only when the Username property
            // itself changed, never just because the stored value differs.
            let hands_off = slot == Slot::Username && p.username.trim() == old.username.trim();
            if self.owned(&slot.name(p), &owner).await? {
                if hands_off {
                    self.sync_tags(&slot.name(p), &tags).await?;
                } else {
                    self.converge(slot, p, &tags).await?;
                }
            } else {
                tracing::warn!(parameter = %slot.name(p), "missing; creating it again");
                self.put_new(slot, p, &tags).await?;
            }
        }
        let name = p.password_name();
        if !self.owned(&name, &owner).await? {
            tracing::warn!(parameter = %name, "missing; generating a new password");
            self.put_new(Slot::Password, p, &tags).await?;
        } else if p.password_version != old.password_version {
            let password = p.password_rules().generate()?;
            let version = self.put_password(&name, &password, p, true, &tags).await?;
            tracing::info!(parameter = %name, version, "PasswordVersion changed: new password generated");
            self.sync_tags(&name, &tags).await?;
        } else if p.key_id() != old.key_id() {
            // Re-encrypt the same password under the new key.
            let current = self
                .store
                .get(&name, true)
                .await?
                .ok_or_else(|| StoreError::Other {
                    action: "GetParameter",
                    name: name.clone(),
                    message: "vanished during the update".into(),
                })?;
            let version = self
                .put_password(&name, &current.value, p, true, &tags)
                .await?;
            tracing::info!(parameter = %name, version, "KmsKeyId changed: password re-encrypted, unchanged");
            self.sync_tags(&name, &tags).await?;
        } else {
            self.sync_tags(&name, &tags).await?;
        }
        self.outcome(request).await
    }

    async fn delete(&self, request: &Request<Properties>) -> Result<(), Error> {
        let p = &request.properties;
        if p.retain() {
            tracing::info!(prefix = %p.prefix(), "RetainOnDelete is set: parameters kept");
            return Ok(());
        }
        let owner = owner(request);
        for slot in Slot::ALL {
            let name = slot.name(p);
            match self.owned(&name, &owner).await {
                Ok(true) => {
                    self.store.delete(&name).await?;
                    tracing::info!(parameter = %name, "deleted");
                }
                Ok(false) => tracing::info!(parameter = %name, "already gone"),
                // Never delete what someone else made.
                Err(Error::Foreign { found, .. }) => {
                    tracing::warn!(parameter = %name, owner = %found, "not created by this resource; left in place")
                }
                Err(e) => return Err(e),
            }
        }
        // The rotation function's record, lock and the password of a rotation in progress live
        // under the same prefix and carry our owner tag (copied from the username parameter); they go
        // with the parameters they describe.
        for own in ["rotation", "rotation-pending", "rotation-lock"] {
            let name = format!("{}/{own}", p.prefix());
            if let Ok(true) = self.owned(&name, &owner).await {
                self.store.delete(&name).await?;
                tracing::info!(parameter = %name, "deleted the rotation's own parameter");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::RESERVED_TAG_PREFIX;
    use custom_resource::RequestType;

    fn request(stack: &str, logical: &str) -> Request<Properties> {
        Request {
            request_type: RequestType::Create,
            stack_id: stack.into(),
            request_id: "r".into(),
            logical_resource_id: logical.into(),
            resource_type: "Custom::SsmParameters".into(),
            physical_resource_id: None,
            replacing: None,
            properties: serde_json::from_value(serde_json::json!({
                "ParameterPrefix": "/a", "Username": "D\\u", "SharePath": "\\\\s\\x",
                "Tags": [{"Key": "team", "Value": "web"}]
            }))
            .unwrap(),
        }
    }

    #[test]
    fn owner_tag_fits_and_keeps_the_unique_end() {
        let short = request("arn:aws:cloudformation:us-east-1:1:stack/s/guid", "Params");
        assert_eq!(
            owner(&short),
            "arn:aws:cloudformation:us-east-1:1:stack/s/guid/Params"
        );
        let long = request(
            &format!(
                "arn:aws:cloudformation:us-east-1:1:stack/{}/guid-1",
                "n".repeat(200)
            ),
            &"L".repeat(100),
        );
        let o = owner(&long);
        assert_eq!(o.len(), MAX_TAG_VALUE);
        assert!(o.ends_with(&format!("guid-1/{}", "L".repeat(100))));
        let tags = desired_tags(&short, &short.properties);
        assert_eq!(tags.get("team").map(String::as_str), Some("web"));
        assert!(tags.contains_key(OWNER_TAG));
        assert!(OWNER_TAG.starts_with(RESERVED_TAG_PREFIX));
    }
}
