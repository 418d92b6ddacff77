//! The rotation itself.

use crate::config::{AdminSource, Backend, Config, ConfigError};
use crate::record::{Record, State, now_utc};
use admin_credential::{AdminCredentials, CredentialError, Source};
use aws_config::SdkConfig;
use aws_sdk_ecs::error::ProvideErrorMetadata;
use directory::{
    Directory, DirectoryError, User,
    ldaps::{LdapsConfig, LdapsDirectory},
    managed_ad::ManagedAdDirectory,
};
use parameter_store::{ParameterStore, StoreError, Value};
use secrets::{PasswordRules, Secret};
use serde_json::{Value as Json, json};
use smb_share::{Share, ShareConfig, ShareError};
use std::collections::BTreeMap;

/// The ownership tag `Custom::SsmParameters` puts on the parameters it makes.
const OWNER_TAG: &str = "fargate-smb:owner";

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Aws(#[from] aws_env::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("the SSM parameter {0} does not exist: deploy the stack's Custom::SsmParameters first")]
    Missing(String),
    #[error(
        "{parameter} holds {value:?}, which is none of ACCOUNTS ({accounts}): set ACCOUNTS to the pair \
         Custom::AdServiceAccount made, or fix the parameter"
    )]
    UnknownActive {
        parameter: String,
        value: String,
        accounts: String,
    },
    #[error(
        "the account {0} does not exist in the directory: create it with Custom::AdServiceAccount"
    )]
    NoSuchAccount(String),
    #[error(
        "the new password of {account} did not log on to {share} after {attempts} attempt(s) ({detail}); \
         SSM still holds the previous, working credential"
    )]
    Proof {
        account: String,
        share: String,
        attempts: u32,
        detail: String,
    },
    #[error("writing {parameter} failed ({detail}); {rollback}")]
    Switch {
        parameter: String,
        detail: String,
        rollback: String,
    },
    #[error(
        "SSM now holds {active}, but forcing a new deployment failed: {detail}. Running tasks keep working \
         (the previous account is untouched); the next run retries the deployment before rotating again"
    )]
    Deploy { active: String, detail: String },
    #[error("the rotation record {parameter} is unreadable ({detail}): fix or delete it")]
    BadRecord { parameter: String, detail: String },
}

/// The directory backend, for the two operations a rotation needs.
enum Dir {
    Ldaps(Box<LdapsDirectory>),
    Managed(ManagedAdDirectory),
}

impl Dir {
    async fn find_user(&self, name: &str) -> Result<Option<User>, DirectoryError> {
        match self {
            Dir::Ldaps(d) => d.find_user(name).await,
            Dir::Managed(d) => d.find_user(name).await,
        }
    }

    async fn set_password(&self, user: &User, password: &Secret) -> Result<(), DirectoryError> {
        match self {
            Dir::Ldaps(d) => d.set_password(user, password).await,
            Dir::Managed(d) => d.set_password(user, password).await,
        }
    }
}

/// The function, its AWS clients built once per container.
#[derive(Debug)]
pub struct Rotator {
    config: Config,
    store: ParameterStore,
    admin: AdminCredentials,
    ecs: aws_sdk_ecs::Client,
    ds_data: aws_sdk_directoryservicedata::Client,
    ds: aws_sdk_directory::Client,
}

/// `DOMAIN\name` / `name@domain` / `name`: the account part.
fn account_of(username: &str) -> &str {
    if let Some((_, name)) = username.split_once('\\') {
        name
    } else if let Some((name, _)) = username.split_once('@') {
        name
    } else {
        username
    }
}

/// `name` written the way `like` is (same domain part and form).
fn qualify_like(like: &str, name: &str) -> String {
    if let Some((domain, _)) = like.split_once('\\') {
        format!("{domain}\\{name}")
    } else if let Some((_, domain)) = like.split_once('@') {
        format!("{name}@{domain}")
    } else {
        name.to_owned()
    }
}

impl Rotator {
    pub async fn from_env() -> Result<Self, RotationError> {
        let config = Config::from_lookup(|k| std::env::var(k).ok())?;
        let sdk = aws_env::load().await?;
        Ok(Self::new(config, &sdk))
    }

    pub fn new(config: Config, sdk: &SdkConfig) -> Self {
        Self {
            config,
            store: ParameterStore::new(sdk),
            admin: AdminCredentials::new(sdk),
            ecs: aws_sdk_ecs::Client::new(sdk),
            ds_data: aws_sdk_directoryservicedata::Client::new(sdk),
            ds: aws_sdk_directory::Client::new(sdk),
        }
    }

    /// One invocation. The event may carry `{"dryRun": true}` (EventBridge Scheduler input, or
    /// by hand); anything else in it is ignored.
    /// `deadline_ms` is the invocation's deadline (ms since the epoch), 0 if unknown.
    pub async fn handle(&self, event: Json, deadline_ms: u64) -> Result<Json, RotationError> {
        let dry_run =
            self.config.dry_run || event.get("dryRun").and_then(Json::as_bool) == Some(true);
        let report = self.run(dry_run, deadline_ms).await?;
        tracing::info!(report = %report, "rotation run finished");
        Ok(report)
    }

    async fn parameter(&self, name: &str, decrypt: bool) -> Result<Secret, RotationError> {
        Ok(self
            .store
            .get(name, decrypt)
            .await?
            .ok_or_else(|| RotationError::Missing(name.to_owned()))?
            .value)
    }

    async fn read_record(&self) -> Result<Option<Record>, RotationError> {
        let name = self.config.record_parameter();
        match self.store.get(&name, false).await? {
            None => Ok(None),
            Some(stored) => serde_json::from_str(stored.value.expose())
                .map(Some)
                .map_err(|e| RotationError::BadRecord {
                    parameter: name,
                    detail: e.to_string(),
                }),
        }
    }

    async fn write_record(&self, record: &Record) -> Result<(), RotationError> {
        let text = serde_json::to_string(record).map_err(|e| RotationError::BadRecord {
            parameter: self.config.record_parameter(),
            detail: e.to_string(),
        })?;
        self.store
            .put(
                &self.config.record_parameter(),
                Value::Plain(&text),
                "fargate-smb: the last password rotation and, while one runs, its step",
                true,
                &BTreeMap::new(),
            )
            .await?;
        // Owned like the parameters it describes, so deleting Custom::SsmParameters removes it.
        let tags = self
            .store
            .tags(&self.config.username_parameter())
            .await?
            .unwrap_or_default();
        if let Some(owner) = tags.get(OWNER_TAG) {
            let owner: BTreeMap<String, String> = [(OWNER_TAG.to_owned(), owner.clone())].into();
            self.store
                .tag(&self.config.record_parameter(), &owner)
                .await?;
        }
        Ok(())
    }

    async fn directory(&self) -> Result<Dir, RotationError> {
        match &self.config.backend {
            Backend::Ldaps {
                url,
                starttls,
                ca_bundle_pem,
                domain,
                admin_username,
                admin_source,
            } => {
                let source = match admin_source {
                    AdminSource::Parameter(p) => Source::Parameter(p),
                    AdminSource::Secret(s) => Source::Secret(s),
                };
                let admin = self.admin.read(admin_username.as_deref(), source).await?;
                let config = LdapsConfig {
                    url: url.clone(),
                    starttls: *starttls,
                    ca_bundle_pem: ca_bundle_pem.clone(),
                    bind_user: admin.username,
                    bind_password: admin.password,
                    domain: domain.clone(),
                    timeout: self.config.timeout,
                };
                Ok(Dir::Ldaps(Box::new(LdapsDirectory::connect(config).await?)))
            }
            Backend::ManagedAd { directory_id } => {
                Ok(Dir::Managed(ManagedAdDirectory::from_clients(
                    self.ds_data.clone(),
                    self.ds.clone(),
                    directory_id.clone(),
                )))
            }
        }
    }

    /// An SMB logon to the share as `username`, retried (the file server may authenticate
    /// against a DC the new password has not replicated to yet).
    async fn prove(
        &self,
        share: &str,
        username: &str,
        password: &Secret,
    ) -> Result<(), RotationError> {
        let mut last = String::new();
        for attempt in 1..=self.config.proof_attempts {
            let mut config = ShareConfig::new(share, username, password.clone());
            config.port = self.config.smb_port;
            config.require_encryption = self.config.smb_require_encryption;
            config.timeout = self.config.timeout;
            match Share::connect(&config).await {
                Ok(s) => {
                    s.close().await;
                    tracing::info!(
                        account = username,
                        share,
                        attempt,
                        "the password logs on to the share"
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(account = username, share, attempt, error = %e, "logon with the new password failed");
                    last = e.to_string();
                    // A missing share or a malformed UNC will not get better by waiting.
                    if matches!(e, ShareError::BadUnc(_) | ShareError::ShareNotFound { .. }) {
                        return Err(RotationError::Proof {
                            account: username.to_owned(),
                            share: share.to_owned(),
                            attempts: attempt,
                            detail: last,
                        });
                    }
                }
            }
            if attempt < self.config.proof_attempts {
                tokio::time::sleep(self.config.proof_delay).await;
            }
        }
        Err(RotationError::Proof {
            account: username.to_owned(),
            share: share.to_owned(),
            attempts: self.config.proof_attempts,
            detail: last,
        })
    }

    /// A deployment of any configured service that is still rolling out.
    async fn deployment_in_progress(&self) -> Result<Option<String>, RotationError> {
        let Some(cluster) = &self.config.ecs_cluster else {
            return Ok(None);
        };
        if self.config.ecs_services.is_empty() {
            return Ok(None);
        }
        let out = self
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(self.config.ecs_services.clone()))
            .send()
            .await
            .map_err(|e| RotationError::Deploy {
                active: "(unchanged)".into(),
                detail: format!(
                    "ecs:DescribeServices failed: {}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or_default()
                ),
            })?;
        for service in out.services.unwrap_or_default() {
            let name = service.service_name.unwrap_or_default();
            let deployments = service.deployments.unwrap_or_default();
            let rolling = deployments.iter().find(|d| {
                d.rollout_state == Some(aws_sdk_ecs::types::DeploymentRolloutState::InProgress)
            });
            if deployments.len() > 1 || rolling.is_some() {
                return Ok(Some(format!(
                    "service {name} has {} deployment(s), {} rolling out",
                    deployments.len(),
                    if rolling.is_some() {
                        "one"
                    } else {
                        "an older one still"
                    }
                )));
            }
        }
        Ok(None)
    }

    /// Force a new deployment of every configured service.
    async fn deploy(&self) -> Result<Vec<String>, String> {
        let Some(cluster) = &self.config.ecs_cluster else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for service in &self.config.ecs_services {
            self.ecs
                .update_service()
                .cluster(cluster)
                .service(service)
                .force_new_deployment(true)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "ecs:UpdateService {service}: {}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    )
                })?;
            tracing::info!(cluster, service, "new deployment forced");
            done.push(service.clone());
        }
        Ok(done)
    }

    /// Deploy, then record the rotation as complete.
    async fn finish(
        &self,
        active: &str,
        previous: Option<String>,
        how: &str,
    ) -> Result<Json, RotationError> {
        let services = self
            .deploy()
            .await
            .map_err(|detail| RotationError::Deploy {
                active: active.to_owned(),
                detail,
            })?;
        self.write_record(&Record {
            state: State::Idle,
            active: active.to_owned(),
            target: None,
            previous: previous.clone(),
            time: now_utc(),
            outcome: how.to_owned(),
        })
        .await?;
        Ok(json!({"outcome": how, "active": active, "previous": previous, "deployed": services}))
    }

    /// Refuse to start the SSM switch without time to finish it: a run killed between the two
    /// writes would leave a mismatched pair until the next run.
    fn time_to_switch(&self, deadline_ms: u64) -> Result<(), RotationError> {
        if deadline_ms == 0 {
            return Ok(());
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let needed = self.config.timeout.as_millis() as u64 * 2;
        if deadline_ms.saturating_sub(now_ms) < needed {
            return Err(RotationError::Switch {
                parameter: self.config.password_parameter(),
                detail: format!(
                    "less than {needed} ms of the invocation are left, too little to switch SSM safely"
                ),
                rollback:
                    "nothing was changed in SSM; raise the function's timeout (60 s is ample)"
                        .into(),
            });
        }
        Ok(())
    }

    async fn run(&self, dry_run: bool, deadline_ms: u64) -> Result<Json, RotationError> {
        let c = &self.config;
        let username_parameter = c.username_parameter();
        let username = self
            .parameter(&username_parameter, false)
            .await?
            .expose()
            .trim()
            .to_owned();
        let active = account_of(&username).to_owned();
        if !c.accounts.iter().any(|a| a.eq_ignore_ascii_case(&active)) {
            return Err(RotationError::UnknownActive {
                parameter: username_parameter,
                value: username,
                accounts: c.accounts.join(", "),
            });
        }
        let record = self.read_record().await?;
        let share = self
            .parameter(&c.share_parameter(), false)
            .await?
            .expose()
            .trim()
            .to_owned();

        if let Some(r) = &record
            && r.state != State::Idle
        {
            if dry_run {
                return Ok(json!({"outcome": "dry-run", "plan": [format!(
                    "resume the interrupted rotation ({:?}) to {}", r.state, r.target.as_deref().unwrap_or("?")
                )]}));
            }
            if let Some(done) = self.resume(r, &username, &share).await? {
                return Ok(done);
            }
        }

        let target_name = if c.alternating() {
            c.accounts
                .iter()
                .find(|a| !a.eq_ignore_ascii_case(&active))
                .cloned()
                .unwrap_or_default()
        } else {
            active.clone()
        };
        let target = qualify_like(&username, &target_name);
        if dry_run {
            let mut plan = vec![
                format!(
                    "reset the password of {target} ({}) in AD ({})",
                    if c.alternating() {
                        format!("inactive; active is {username}")
                    } else {
                        "single-account mode: the active account".into()
                    },
                    match &c.backend {
                        Backend::Ldaps { url, .. } => url.clone(),
                        Backend::ManagedAd { directory_id } => directory_id.clone(),
                    }
                ),
                format!("prove it with an SMB logon to {share}"),
                format!(
                    "write {} (SecureString, same KMS key), then {} = {target}",
                    c.password_parameter(),
                    username_parameter
                ),
            ];
            if let Some(cluster) = &c.ecs_cluster {
                plan.push(format!(
                    "force a new deployment of {} in {cluster}",
                    c.ecs_services.join(", ")
                ));
            }
            plan.push(format!("record the rotation in {}", c.record_parameter()));
            if c.alternating()
                && let Some(why) = self.deployment_in_progress().await?
            {
                plan.insert(0, format!("(a real run would skip now: {why})"));
            }
            for step in &plan {
                tracing::info!(step = %step, "dry run: would");
            }
            return Ok(
                json!({"outcome": "dry-run", "active": username, "target": target, "plan": plan}),
            );
        }
        if c.alternating()
            && let Some(why) = self.deployment_in_progress().await?
        {
            tracing::info!(reason = %why, "skipped: the previous rotation's deployment is still rolling out, and old tasks may still use {target}");
            return Ok(json!({"outcome": "skipped", "active": username, "reason": why}));
        }

        // 1. The new password, in AD, on the account no running task uses (alternating mode).
        let password = PasswordRules {
            length: c.password_length,
            ..PasswordRules::default()
        }
        .generate()
        .map_err(|e| RotationError::Proof {
            account: target.clone(),
            share: share.clone(),
            attempts: 0,
            detail: format!("could not generate a password: {e}"),
        })?;
        let dir = self.directory().await?;
        let user = dir
            .find_user(&target_name)
            .await?
            .ok_or_else(|| RotationError::NoSuchAccount(target_name.clone()))?;
        dir.set_password(&user, &password).await?;
        tracing::info!(account = %target, "password reset in AD");

        // 2. Proven before SSM changes: SSM never points at a credential that does not log on.
        self.prove(&share, &target, &password).await?;

        // 3. SSM: password, then username.
        self.time_to_switch(deadline_ms)?;
        self.switch(&username, &target, &password).await?;

        // 4. Deploy and record.
        let previous = (!target.eq_ignore_ascii_case(&username)).then(|| username.clone());
        self.finish(&target, previous, "rotated").await
    }

    /// Switch SSM from `active` to `target` (whose password is proven). Recorded first, so a
    /// run that dies here is finished or undone by the next.
    ///
    /// Order: the password first, then the username. A task starting between the two writes
    /// (tens of milliseconds) reads the old username with the new password and its logon fails;
    /// the entrypoint exits and ECS starts a replacement, which reads the consistent pair — the
    /// bounded retry. The other order has the same window; this one puts first the write that can
    /// fail for reasons of its own (KMS key policy, SecureString limits), so the common failure
    /// changes nothing. If the username write fails, the password is written back at once.
    async fn switch(
        &self,
        active: &str,
        target: &str,
        password: &Secret,
    ) -> Result<(), RotationError> {
        let c = &self.config;
        let password_parameter = c.password_parameter();
        let old = self.parameter(&password_parameter, true).await?;
        let key_id = self.store.key_id(&password_parameter).await?;
        self.write_record(&Record {
            state: State::Switching,
            active: active.to_owned(),
            target: Some(target.to_owned()),
            previous: None,
            time: now_utc(),
            outcome: "switching SSM to the new credential".into(),
        })
        .await?;
        let put_password = |value: &Secret| {
            let key_id = key_id.clone();
            let name = password_parameter.clone();
            let value = value.clone();
            async move {
                self.store
                    .put(
                        &name,
                        Value::Secure {
                            value: &value,
                            key_id: key_id.as_deref(),
                        },
                        "fargate-smb: the service account's password (rotated)",
                        true,
                        &BTreeMap::new(),
                    )
                    .await
            }
        };
        if let Err(e) = put_password(password).await {
            self.write_record(&Record {
                state: State::Idle,
                active: active.to_owned(),
                target: None,
                previous: None,
                time: now_utc(),
                outcome: format!("rolled back: writing the password failed: {e}"),
            })
            .await?;
            return Err(RotationError::Switch {
                parameter: password_parameter,
                detail: e.to_string(),
                rollback: "nothing was changed in SSM; the active credential still works".into(),
            });
        }
        let username_parameter = c.username_parameter();
        if let Err(e) = self
            .store
            .put(
                &username_parameter,
                Value::Plain(target),
                "fargate-smb: the service account the container maps the share with (rotated)",
                true,
                &BTreeMap::new(),
            )
            .await
        {
            let rollback = match put_password(&old).await {
                Ok(_) => {
                    let _ = self
                        .write_record(&Record {
                            state: State::Idle,
                            active: active.to_owned(),
                            target: None,
                            previous: None,
                            time: now_utc(),
                            outcome: format!("rolled back: writing the username failed: {e}"),
                        })
                        .await;
                    "the password parameter was written back: SSM holds the previous, working credential".to_owned()
                }
                Err(r) => format!(
                    "writing the previous password back failed too ({r}); the record says Switching, and the next run \
                     completes the switch (the new password is proven) or rolls it back"
                ),
            };
            return Err(RotationError::Switch {
                parameter: username_parameter,
                detail: e.to_string(),
                rollback,
            });
        }
        self.write_record(&Record {
            state: State::Deploying,
            active: target.to_owned(),
            target: None,
            previous: Some(active.to_owned()),
            time: now_utc(),
            outcome: "SSM switched; deploying".into(),
        })
        .await?;
        tracing::info!(
            from = active,
            to = target,
            "SSM switched to the new credential"
        );
        Ok(())
    }

    /// Finish what an earlier run left: `Some(report)` when this run is done, `None` to go on
    /// with a normal rotation.
    async fn resume(
        &self,
        r: &Record,
        username: &str,
        share: &str,
    ) -> Result<Option<Json>, RotationError> {
        match r.state {
            State::Idle => Ok(None),
            State::Deploying => {
                tracing::info!(active = %r.active, "the last rotation switched SSM but did not deploy: deploying now");
                self.finish(
                    &r.active,
                    r.previous.clone(),
                    "rotated (deployment completed by a later run)",
                )
                .await
                .map(Some)
            }
            State::Switching => {
                let target = r.target.clone().unwrap_or_default();
                let password = self
                    .parameter(&self.config.password_parameter(), true)
                    .await?;
                // Which account does the password parameter belong to now?
                if !target.is_empty() && self.prove(share, &target, &password).await.is_ok() {
                    tracing::info!(target = %target, "the interrupted switch had written the new password: completing it");
                    if !username.eq_ignore_ascii_case(&target) {
                        self.store
                            .put(
                                &self.config.username_parameter(),
                                Value::Plain(&target),
                                "fargate-smb: the service account the container maps the share with (rotated)",
                                true,
                                &BTreeMap::new(),
                            )
                            .await?;
                    }
                    return self
                        .finish(
                            &target,
                            Some(r.active.clone()),
                            "rotated (switch completed by a later run)",
                        )
                        .await
                        .map(Some);
                }
                tracing::info!(target = %target, "the interrupted switch had not written the new password: nothing to undo");
                self.write_record(&Record {
                    state: State::Idle,
                    active: username.to_owned(),
                    target: None,
                    previous: None,
                    time: now_utc(),
                    outcome: "an interrupted rotation was rolled back".into(),
                })
                .await?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_form() {
        assert_eq!(account_of(r"EXAMPLE\svc-a"), "svc-a");
        assert_eq!(account_of("svc-a@example.test"), "svc-a");
        assert_eq!(account_of("svc-a"), "svc-a");
        assert_eq!(qualify_like(r"EXAMPLE\svc-a", "svc-b"), r"EXAMPLE\svc-b");
        assert_eq!(
            qualify_like("svc-a@example.test", "svc-b"),
            "svc-b@example.test"
        );
        assert_eq!(qualify_like("svc-a", "svc-b"), "svc-b");
    }
}
