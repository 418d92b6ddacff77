//! The rotation itself.

use crate::config::{AdminSource, Backend, Config, ConfigError};
use crate::record::{Fingerprint, Record, State, now_utc};
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
        "the account {0} is disabled in the directory, and resetting its password would enable it: the rotation \
         does not undo that (OnDelete: disable, or an administrator). Enable it deliberately to resume rotations, \
         or remove it from ACCOUNTS"
    )]
    Disabled(String),
    #[error("could not generate a password: {0}")]
    Generate(String),
    #[error(
        "too little time is left to {step} safely ({left_ms} ms left, {needed_ms} ms needed); nothing was \
         changed by this step: raise the function's timeout (60 s is ample with the default timeouts)"
    )]
    NoTime {
        step: String,
        needed_ms: u64,
        left_ms: u64,
    },
    #[error(
        "the new password of {account} did not log on to {share} after {attempts} attempt(s) ({detail}); \
         SSM still holds the previous, working credential, and the next run retries with the same new password"
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

/// The directory backend, for what a rotation needs.
enum Dir {
    Ldaps(Box<LdapsDirectory>),
    Managed(ManagedAdDirectory),
}

impl Dir {
    async fn set_password(&self, user: &User, password: &Secret) -> Result<(), DirectoryError> {
        match self {
            Dir::Ldaps(d) => d.set_password(user, password).await,
            Dir::Managed(d) => d.set_password(user, password).await,
        }
    }

    async fn usable(&self, name: &str) -> Result<User, RotationError> {
        match self {
            Dir::Ldaps(d) => usable_target(d.as_ref(), name).await,
            Dir::Managed(d) => usable_target(d, name).await,
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
    /// The bound on one SDK call, for the time a switch may take.
    operation_timeout: std::time::Duration,
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
        let operation_timeout = sdk
            .timeout_config()
            .and_then(|t| t.operation_timeout())
            .unwrap_or(config.timeout);
        Self {
            config,
            store: ParameterStore::new(sdk),
            admin: AdminCredentials::new(sdk),
            ecs: aws_sdk_ecs::Client::new(sdk),
            ds_data: aws_sdk_directoryservicedata::Client::new(sdk),
            ds: aws_sdk_directory::Client::new(sdk),
            operation_timeout,
        }
    }

    /// One invocation. The event may carry `{"dryRun": true}` (EventBridge Scheduler input, or
    /// by hand); anything else in it is ignored.
    /// `deadline_ms` is the invocation's deadline (ms since the epoch), 0 if unknown.
    pub async fn handle(&self, event: Json, deadline_ms: u64) -> Result<Json, RotationError> {
        let dry_run =
            self.config.dry_run || event.get("dryRun").and_then(Json::as_bool) == Some(true);
        let report = if dry_run {
            self.run(true, deadline_ms).await?
        } else {
            let Some(lock) = self.acquire(deadline_ms).await? else {
                let why = format!(
                    "another run holds {} (a duplicate delivery, or a run by hand): this one changes nothing",
                    self.config.lock_parameter()
                );
                tracing::info!(reason = %why, "skipped");
                return Ok(json!({"outcome": "skipped", "reason": why}));
            };
            let result = self.run(false, deadline_ms).await;
            self.release(&lock).await;
            result?
        };
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
        self.put_owned(
            &self.config.record_parameter(),
            Value::Plain(&text),
            "fargate-smb: the last password rotation and, while one runs, its step",
        )
        .await?;
        Ok(())
    }

    /// Write one of this function's own parameters (the record, the pending password), owned
    /// like the parameters it describes, so deleting Custom::SsmParameters removes it too.
    async fn put_owned(
        &self,
        name: &str,
        value: Value<'_>,
        description: &str,
    ) -> Result<(), StoreError> {
        self.store
            .put(name, value, description, true, &BTreeMap::new())
            .await?;
        let owner = self.owner_tags().await?;
        if !owner.is_empty() {
            self.store.tag(name, &owner).await?;
        }
        Ok(())
    }

    /// Take `<prefix>/rotation-lock`: one run at a time. Two runs started from the same idle
    /// record would each keep a password of their own and reset the same account, and SSM could
    /// end with one while AD holds the other. SSM has no compare-and-set, but a create that
    /// refuses an existing name is one: the lock is created with `Overwrite: false` and holds the
    /// run's token and the time its lease ends (the invocation's deadline: Lambda has ended the
    /// run by then). A lock past its lease is a run that was killed; it is removed and taken.
    /// `None`: another run holds it.
    async fn acquire(&self, deadline_ms: u64) -> Result<Option<String>, RotationError> {
        let name = self.config.lock_parameter();
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| RotationError::Generate(e.to_string()))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let until = match deadline_ms {
            0 => now_ms() + 15 * 60 * 1000,
            d => d + 5_000,
        };
        let value = format!("{token} {until}");
        let tags = self.owner_tags().await?;
        for _ in 0..3 {
            let err = match self
                .store
                .put(
                    &name,
                    Value::Plain(&value),
                    "fargate-smb: held by the rotation run in progress (its token and lease end, ms since the epoch)",
                    false,
                    &tags,
                )
                .await
            {
                Ok(_) => return Ok(Some(token)),
                Err(e) => e,
            };
            if !matches!(err, StoreError::AlreadyExists { .. }) {
                // Possibly applied: a read-back decides.
                tracing::warn!(parameter = %name, error = %err, "taking the lock failed");
            }
            let Some(held) = self.store.get(&name, false).await? else {
                continue; // released meanwhile
            };
            let mut parts = held.value.expose().split(' ');
            let (holder, lease) = (parts.next().unwrap_or_default(), parts.next());
            if holder == token {
                return Ok(Some(token));
            }
            match lease.and_then(|l| l.parse::<u64>().ok()) {
                Some(end) if end > now_ms() => return Ok(None),
                _ => {
                    tracing::warn!(parameter = %name, holder, "the lock's lease has ended (a run that was killed): taking it over");
                    self.store.delete(&name).await?;
                }
            }
        }
        Ok(None)
    }

    /// Give the lock back, if it is still ours. A failure only delays the next run until the
    /// lease ends.
    async fn release(&self, token: &str) {
        let name = self.config.lock_parameter();
        match self.store.get(&name, false).await {
            Ok(Some(held)) if held.value.expose().split(' ').next() == Some(token) => {
                if let Err(e) = self.store.delete(&name).await {
                    tracing::warn!(parameter = %name, error = %e, "could not release the lock; it expires with its lease");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(parameter = %name, error = %e, "could not release the lock; it expires with its lease")
            }
        }
    }

    async fn owner_tags(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let tags = self
            .store
            .tags(&self.config.username_parameter())
            .await?
            .unwrap_or_default();
        Ok(tags
            .get(OWNER_TAG)
            .map(|owner| [(OWNER_TAG.to_owned(), owner.clone())].into())
            .unwrap_or_default())
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

    /// Deploy, record the rotation as complete, then drop the pending copy of the password.
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
            fingerprint: None,
        })
        .await?;
        // After the record: a run that finds Idle never reads the pending parameter, so losing
        // this delete costs nothing but a second copy of the active password under the same key
        // and path, which the next rotation overwrites.
        let pending = self.config.pending_parameter();
        if let Err(e) = self.store.delete(&pending).await {
            tracing::warn!(parameter = %pending, error = %e, "could not delete the pending password; the next rotation overwrites it");
        }
        Ok(json!({"outcome": how, "active": active, "previous": previous, "deployed": services}))
    }

    /// Milliseconds left before the invocation's deadline (`None` if unknown).
    fn left_ms(deadline_ms: u64) -> Option<u64> {
        (deadline_ms != 0).then(|| deadline_ms.saturating_sub(now_ms()))
    }

    /// The time the two writes of a switch may take at worst (each bounded by the SDK's
    /// operation timeout). A run killed after that is finished by the next one, but until then
    /// SSM may hold a mismatched pair, so no write round starts with less time than this left.
    fn switch_budget_ms(&self) -> u64 {
        self.operation_timeout.as_millis() as u64 * 2
    }

    /// Refuse to start a step that must not be cut short without the time to finish it. Nothing
    /// is lost when this refuses (the pending password and the record let the next run go on),
    /// but a run killed mid-switch leaves SSM mismatched until then.
    fn time_for(&self, step: &str, needed_ms: u64, deadline_ms: u64) -> Result<(), RotationError> {
        match Self::left_ms(deadline_ms) {
            Some(left) if left < needed_ms => Err(RotationError::NoTime {
                step: step.to_owned(),
                needed_ms,
                left_ms: left,
            }),
            _ => Ok(()),
        }
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
            if let Some(done) = self.resume(r, &username, &share, deadline_ms).await? {
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
                    "keep a new password in {} (SecureString, the password's KMS key)",
                    c.pending_parameter()
                ),
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
                    "write {} (SecureString, same KMS key), then {} = {target}, and read both back",
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
        // In single-account mode the reset below kills the credential SSM holds until the switch
        // after it: do not start what there is no time to finish.
        self.time_for("start a rotation", self.switch_budget_ms(), deadline_ms)?;

        let dir = self.directory().await?;
        let user = dir.usable(&target_name).await?;
        let password = PasswordRules {
            length: c.password_length,
            ..PasswordRules::default()
        }
        .generate()
        .map_err(|e| RotationError::Generate(e.to_string()))?;
        let fingerprint =
            Fingerprint::of(&password).map_err(|e| RotationError::Generate(e.to_string()))?;
        let key_id = self.store.key_id(&c.password_parameter()).await?;

        // 1. The new password is kept before AD has it: from here on, whatever dies, the next run
        //    can finish with it. This write is also the first use of the KMS key for this
        //    password, so a key policy that refuses it stops the rotation before AD changes.
        self.put_owned(
            &c.pending_parameter(),
            Value::Secure {
                value: &password,
                key_id: key_id.as_deref(),
            },
            "fargate-smb: the password a rotation in progress is setting (deleted when it completes)",
        )
        .await
        .map_err(|e| RotationError::Switch {
            parameter: c.pending_parameter(),
            detail: e.to_string(),
            rollback: "nothing was changed in AD or in the credential parameters".into(),
        })?;
        let plan = Plan {
            active: username.clone(),
            target,
            password,
            fingerprint,
        };
        self.write_record(&plan.record(State::Pending, "new password kept; resetting AD"))
            .await?;
        self.complete(&dir, &user, &plan, &share, deadline_ms, "rotated")
            .await
    }

    /// From `Pending`: reset AD to the pending password, prove it, switch SSM, deploy, record.
    async fn complete(
        &self,
        dir: &Dir,
        user: &User,
        plan: &Plan,
        share: &str,
        deadline_ms: u64,
        how: &str,
    ) -> Result<Json, RotationError> {
        let c = &self.config;
        // What SSM holds before the switch, for an undo if the switch cannot be finished (only
        // in alternating mode: in single-account mode the old password no longer logs on).
        let old = if c.alternating() {
            let current = self.parameter(&c.password_parameter(), true).await?;
            (!plan.fingerprint.matches(&current)).then_some(current)
        } else {
            None
        };

        // 2. AD. Resetting to the value it may already hold (a resumed run) is accepted: an
        //    administrative reset is not a password change and history does not apply.
        dir.set_password(user, &plan.password).await?;
        tracing::info!(account = %plan.target, "password reset in AD");

        // 3. Proven before SSM changes. In single-account mode AD holds only the new password
        //    now, so SSM follows whatever the proof says (it may only be replication lag); the
        //    report says whether it was proven.
        let unproven = match self.prove(share, &plan.target, &plan.password).await {
            Ok(()) => None,
            Err(e) if c.alternating() => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "single-account mode: switching SSM to the new password anyway, the only one AD accepts now");
                Some(e.to_string())
            }
        };

        // 4. SSM, verified by reading it back.
        self.time_for("switch SSM", self.switch_budget_ms(), deadline_ms)?;
        self.switch(plan, old.as_ref(), deadline_ms).await?;

        // 5. Deploy and record.
        let previous =
            (!plan.target.eq_ignore_ascii_case(&plan.active)).then(|| plan.active.clone());
        let mut report = self.finish(&plan.target, previous, how).await?;
        if let Some(why) = unproven {
            report["unproven"] = Json::String(why);
        }
        Ok(report)
    }

    /// The two credential parameters as SSM holds them now.
    async fn observe(&self) -> Result<(String, Secret), RotationError> {
        let c = &self.config;
        let user = self.parameter(&c.username_parameter(), false).await?;
        let password = self.parameter(&c.password_parameter(), true).await?;
        Ok((user.expose().trim().to_owned(), password))
    }

    async fn put_password(&self, value: &Secret, key_id: Option<&str>) -> Result<(), StoreError> {
        self.store
            .put(
                &self.config.password_parameter(),
                Value::Secure { value, key_id },
                "fargate-smb: the service account's password (rotated)",
                true,
                &BTreeMap::new(),
            )
            .await
            .map(|_| ())
    }

    async fn put_username(&self, value: &str) -> Result<(), StoreError> {
        self.store
            .put(
                &self.config.username_parameter(),
                Value::Plain(value),
                "fargate-smb: the service account the container maps the share with (rotated)",
                true,
                &BTreeMap::new(),
            )
            .await
            .map(|_| ())
    }

    /// Switch SSM to `plan` (whose password AD holds). Recorded first, so a run that dies here is
    /// finished by the next.
    ///
    /// Order: the password first, then the username. A task starting between the two writes
    /// (tens of milliseconds) reads the old username with the new password and its logon fails;
    /// the entrypoint exits and ECS starts a replacement, which reads the consistent pair — the
    /// bounded retry. The other order has the same window; this one puts first the write that
    /// can fail for reasons of its own (KMS key policy, SecureString limits).
    ///
    /// A write that returned an error may still have been applied (a timeout, a 5xx after the
    /// write), so no error is taken to mean "nothing changed": every round starts by reading
    /// both parameters back, and the switch is done only when the read-back shows the target
    /// with the pending password.
    async fn switch(
        &self,
        plan: &Plan,
        old: Option<&Secret>,
        deadline_ms: u64,
    ) -> Result<(), RotationError> {
        let c = &self.config;
        let key_id = self.store.key_id(&c.password_parameter()).await?;
        self.write_record(&plan.record(State::Switching, "switching SSM to the new credential"))
            .await?;
        let mut last = String::from("no attempt was made");
        for round in 0..=SWITCH_ROUNDS {
            if round > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(SWITCH_PAUSE_MS)).await;
            }
            let (user, password) = match self.observe().await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::warn!(round, error = %e, "reading the credential back failed");
                    last = format!("reading it back: {e}");
                    continue;
                }
            };
            let has_password = plan.fingerprint.matches(&password);
            if has_password && user == plan.target {
                self.write_record(&Record {
                    state: State::Deploying,
                    active: plan.target.clone(),
                    target: None,
                    previous: Some(plan.active.clone()),
                    time: now_utc(),
                    outcome: "SSM switched (read back); deploying".into(),
                    fingerprint: None,
                })
                .await?;
                tracing::info!(from = %plan.active, to = %plan.target, "SSM switched to the new credential");
                return Ok(());
            }
            if round == SWITCH_ROUNDS {
                break;
            }
            if let Err(e) = self.time_for("write SSM", self.switch_budget_ms(), deadline_ms) {
                last = e.to_string();
                break;
            }
            if !has_password
                && let Err(e) = self.put_password(&plan.password, key_id.as_deref()).await
            {
                tracing::warn!(round, parameter = %c.password_parameter(), error = %e, "writing the password failed (it may still have been applied)");
                last = format!("writing {}: {e}", c.password_parameter());
                continue;
            }
            if user != plan.target
                && let Err(e) = self.put_username(&plan.target).await
            {
                tracing::warn!(round, parameter = %c.username_parameter(), error = %e, "writing the username failed (it may still have been applied)");
                last = format!("writing {}: {e}", c.username_parameter());
            }
        }
        // Not verified. In alternating mode the previous pair still logs on: put it back, and
        // believe that only from a read-back.
        if let Some(old) = old
            && let Ok((user, password)) = self.observe().await
            && user == plan.active
        {
            let restored = password == *old
                || (self.put_password(old, key_id.as_deref()).await.is_ok()
                    && matches!(self.observe().await, Ok((u, p)) if u == plan.active && p == *old));
            if restored {
                self.write_record(&Record {
                    state: State::Idle,
                    active: plan.active.clone(),
                    target: None,
                    previous: None,
                    time: now_utc(),
                    outcome: format!("rolled back: the switch could not be completed: {last}"),
                    fingerprint: None,
                })
                .await?;
                return Err(RotationError::Switch {
                    parameter: c.password_parameter(),
                    detail: last,
                    rollback: "SSM holds the previous, working credential (read back and verified)"
                        .into(),
                });
            }
        }
        Err(RotationError::Switch {
            parameter: c.password_parameter(),
            detail: last,
            rollback: format!(
                "the record says switching and {} keeps the new password, which AD holds: the next run \
                 finishes the switch; until then SSM may hold a pair that does not log on",
                c.pending_parameter()
            ),
        })
    }

    /// Finish what an earlier run left: `Some(report)` when this run is done, `None` to go on
    /// with a normal rotation.
    ///
    /// Nothing here logs on with a password to find out what SSM holds: a password the account
    /// does not have counts towards its lockout. The fingerprint in the record says whether a
    /// value is the pending password.
    async fn resume(
        &self,
        r: &Record,
        username: &str,
        share: &str,
        deadline_ms: u64,
    ) -> Result<Option<Json>, RotationError> {
        if r.state == State::Idle {
            return Ok(None);
        }
        if r.state == State::Deploying {
            tracing::info!(active = %r.active, "the last rotation switched SSM but did not deploy: deploying now");
            return self
                .finish(
                    &r.active,
                    r.previous.clone(),
                    "rotated (deployment completed by a later run)",
                )
                .await
                .map(Some);
        }
        let target = r.target.clone().unwrap_or_default();
        let pending = self
            .store
            .get(&self.config.pending_parameter(), true)
            .await?
            .map(|s| s.value);
        let plan = match (&r.fingerprint, pending) {
            (Some(fingerprint), Some(password))
                if fingerprint.matches(&password) && !target.is_empty() =>
            {
                Plan {
                    active: r.active.clone(),
                    target: target.clone(),
                    password,
                    fingerprint: fingerprint.clone(),
                }
            }
            _ => {
                // A record of the previous version (no pending password), or one whose pending
                // password is gone. The password is always written before the username, so a
                // username that already names the target means the switch had completed.
                if !target.is_empty() && username == target {
                    tracing::info!(target = %target, "the interrupted switch had completed: deploying");
                    return self
                        .finish(
                            &target,
                            Some(r.active.clone()),
                            "rotated (switch completed by a later run)",
                        )
                        .await
                        .map(Some);
                }
                // Otherwise start over: a new rotation resets the target again and switches SSM to
                // it, which is right whatever the password parameter holds now.
                tracing::warn!(state = ?r.state, target = %target, "an interrupted rotation left no usable pending password: starting over");
                return Ok(None);
            }
        };
        match r.state {
            State::Pending => {
                tracing::info!(target = %plan.target, "an interrupted rotation had kept its new password: finishing it");
                self.time_for("resume a rotation", self.switch_budget_ms(), deadline_ms)?;
                let dir = self.directory().await?;
                let user = dir.usable(account_of(&plan.target)).await?;
                self.complete(
                    &dir,
                    &user,
                    &plan,
                    share,
                    deadline_ms,
                    "rotated (completed by a later run)",
                )
                .await
                .map(Some)
            }
            _ => {
                tracing::info!(target = %plan.target, "an interrupted switch is finished from the pending password");
                self.time_for("finish the switch", self.switch_budget_ms(), deadline_ms)?;
                self.switch(&plan, None, deadline_ms).await?;
                self.finish(
                    &plan.target,
                    Some(plan.active.clone()),
                    "rotated (switch completed by a later run)",
                )
                .await
                .map(Some)
            }
        }
    }
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rounds of read-back-and-write in a switch, and the pause between them.
const SWITCH_ROUNDS: u32 = 3;
const SWITCH_PAUSE_MS: u64 = 500;

/// A rotation in flight: from the active account to the target, with the pending password.
struct Plan {
    /// The username parameter's value when the rotation started.
    active: String,
    /// The target, written like `active`.
    target: String,
    password: Secret,
    fingerprint: Fingerprint,
}

impl Plan {
    fn record(&self, state: State, outcome: &str) -> Record {
        Record {
            state,
            active: self.active.clone(),
            target: Some(self.target.clone()),
            previous: None,
            time: now_utc(),
            outcome: outcome.to_owned(),
            fingerprint: Some(self.fingerprint.clone()),
        }
    }
}

/// The target as the rotation may reset it: present, and enabled. Both backends enable an
/// account when they reset its password (`ds:ResetUserPassword` is the Data API's documented
/// way to enable a user), so resetting a disabled one would silently undo whoever disabled it —
/// `Custom::AdServiceAccount`'s `OnDelete: disable`, or an administrator taking the account out
/// of service.
pub(crate) async fn usable_target<D: Directory>(
    dir: &D,
    name: &str,
) -> Result<User, RotationError> {
    let user = dir
        .find_user(name)
        .await?
        .ok_or_else(|| RotationError::NoSuchAccount(name.to_owned()))?;
    if !user.enabled {
        return Err(RotationError::Disabled(name.to_owned()));
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_directory as ds;
    use aws_sdk_directoryservicedata as data;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    /// The Managed AD backend (no emulator exists for the Data API or ResetUserPassword, so
    /// `aws-smithy-mocks` stands in for the service): a disabled target is refused before any
    /// reset is sent, an enabled one is reset once.
    #[tokio::test]
    async fn a_disabled_account_is_never_reset_through_managed_ad() {
        for enabled in [false, true] {
            let describe = mock!(data::Client::describe_user).then_output(move || {
                data::operation::describe_user::DescribeUserOutput::builder()
                    .directory_id("d-1234567890")
                    .sam_account_name("svc-web-b")
                    .sid("S-1-5-21-1-2-3-1106")
                    .enabled(enabled)
                    .build()
            });
            let reset = mock!(ds::Client::reset_user_password).then_output(|| {
                ds::operation::reset_user_password::ResetUserPasswordOutput::builder().build()
            });
            let dir = ManagedAdDirectory::from_clients(
                mock_client!(
                    aws_sdk_directoryservicedata,
                    RuleMode::MatchAny,
                    [&describe]
                ),
                mock_client!(aws_sdk_directory, RuleMode::MatchAny, [&reset]),
                "d-1234567890",
            );
            let found = usable_target(&dir, "svc-web-b").await;
            if enabled {
                let user = found.unwrap();
                dir.set_password(&user, &Secret::new("Pw-0123456789abcdef"))
                    .await
                    .unwrap();
                assert_eq!(reset.num_calls(), 1);
            } else {
                let err = found.unwrap_err();
                assert!(matches!(err, RotationError::Disabled(ref n) if n == "svc-web-b"));
                assert!(err.to_string().contains("Enable it deliberately"), "{err}");
                assert_eq!(
                    reset.num_calls(),
                    0,
                    "no reset may be sent for a disabled account"
                );
            }
            assert_eq!(describe.num_calls(), 1);
        }
    }

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
