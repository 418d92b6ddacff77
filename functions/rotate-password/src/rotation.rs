//! The rotation itself.

use crate::config::{AdminSource, Backend, Config, ConfigError, CredentialStore};
use crate::record::{Fingerprint, Record, State, now_utc};
use admin_credential::{AdminCredentials, CredentialError, Source};
use aws_config::SdkConfig;
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
    #[error("could not take the rotation lock: {0}")]
    Lock(String),
    #[error(
        "too little time is left to {step} safely ({left_ms} ms left, {needed_ms} ms needed); nothing was \
         changed by this step: raise the function's timeout (the template's 120 s is ample with its timeouts)"
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
    /// Secrets Manager mode: a step that failed, or an event that is not a step.
    #[error(transparent)]
    Step(#[from] crate::secret_rotation::StepError),
}

impl RotationError {
    /// The Lambda `errorType` of the invocation this error fails: stable names to alarm and
    /// filter on (the runtime's default is a Rust type path).
    pub fn error_type(&self) -> &'static str {
        use crate::secret_rotation::StepError;
        match self {
            RotationError::Config(_) | RotationError::Aws(_) => "ConfigurationError",
            RotationError::Step(StepError::Failed { .. }) => "RotationStepFailed",
            RotationError::Step(_) => "InvalidEvent",
            _ => "RotationFailed",
        }
    }
}

/// The directory backend, for what a rotation needs.
pub(crate) enum Dir {
    Ldaps(Box<LdapsDirectory>),
    Managed(ManagedAdDirectory),
}

impl Dir {
    pub(crate) async fn set_password(
        &self,
        user: &User,
        password: &Secret,
    ) -> Result<(), DirectoryError> {
        match self {
            Dir::Ldaps(d) => d.set_password(user, password).await,
            Dir::Managed(d) => d.set_password(user, password).await,
        }
    }

    pub(crate) async fn usable(&self, name: &str) -> Result<User, RotationError> {
        match self {
            Dir::Ldaps(d) => usable_target(d.as_ref(), name).await,
            Dir::Managed(d) => usable_target(d, name).await,
        }
    }
}

/// The function, its AWS clients built once per container.
#[derive(Debug)]
pub struct Rotator {
    pub(crate) config: Config,
    store: ParameterStore,
    admin: AdminCredentials,
    ecs: aws_sdk_ecs::Client,
    ds_data: aws_sdk_directoryservicedata::Client,
    ds: aws_sdk_directory::Client,
    /// Secrets Manager mode's store.
    pub(crate) secrets: aws_sdk_secretsmanager::Client,
    /// The bound on one SDK call, for the time a switch may take.
    pub(crate) operation_timeout: std::time::Duration,
}

/// `DOMAIN\name` / `name@domain` / `name`: the account part.
pub(crate) fn account_of(username: &str) -> &str {
    if let Some((_, name)) = username.split_once('\\') {
        name
    } else if let Some((name, _)) = username.split_once('@') {
        name
    } else {
        username
    }
}

/// `name` written the way `like` is (same domain part and form).
pub(crate) fn qualify_like(like: &str, name: &str) -> String {
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
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            operation_timeout,
        }
    }

    /// One invocation. In Secrets Manager mode the event is one of Secrets Manager's rotation
    /// steps (see [`crate::secret_rotation`]). In SSM mode it may carry `{"dryRun": true}`
    /// (EventBridge Scheduler input, or by hand); anything else in it is ignored, except a
    /// Secrets Manager `Step`, which is refused.
    /// `deadline_ms` is the invocation's deadline (ms since the epoch), 0 if unknown.
    pub async fn handle(&self, event: Json, deadline_ms: u64) -> Result<Json, RotationError> {
        match &self.config.store {
            CredentialStore::SecretsManager { secret_id } => {
                return self.rotation_step(secret_id, &event, deadline_ms).await;
            }
            CredentialStore::SsmParameters { .. } => {
                crate::secret_rotation::refuse_step_in_ssm_mode(&event)?;
            }
        }
        let dry_run =
            self.config.dry_run || event.get("dryRun").and_then(Json::as_bool) == Some(true);
        // EventBridge Scheduler's `<aws.scheduler.scheduled-time>` (the template puts it in the
        // input): the same for every delivery of one scheduled invocation, retries and duplicates
        // included, so a delivery for a time that already rotated is a duplicate.
        let execution = event
            .get("scheduledTime")
            .and_then(Json::as_str)
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('<'))
            .map(str::to_owned);
        let report = if dry_run {
            self.run(true, None, deadline_ms).await?
        } else {
            let Some(lock) = self.acquire(deadline_ms).await? else {
                let lock = self.config.lock_parameter();
                // With a rotation in progress the holder may be a run that died (its lease ends
                // at its deadline): fail, so that Lambda retries this delivery later, rather than
                // answer a success that ends the retries with the rotation unfinished.
                if let Ok(Some(r)) = self.read_record().await
                    && r.state != State::Idle
                {
                    return Err(RotationError::Lock(format!(
                        "another run holds {lock} while a rotation is {:?}: retry when its lease has ended \
                         (Lambda retries this invocation by itself)",
                        r.state
                    )));
                }
                let why = format!(
                    "another run holds {lock} (a duplicate delivery, or a run by hand): this one changes nothing"
                );
                tracing::info!(reason = %why, "skipped");
                return Ok(json!({"outcome": "skipped", "reason": why}));
            };
            let result = self.run(false, execution, deadline_ms).await;
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
        let name = self.config.record_parameter();
        let version = self
            .store
            .put(
                &name,
                Value::Plain(&text),
                "fargate-smb: the last password rotation and, while one runs, its step",
                true,
                &BTreeMap::new(),
            )
            .await?;
        // Owned like the parameters it describes, so deleting Custom::SsmParameters removes it;
        // tagged when it is first made (a tag survives overwrites).
        if version == 1 {
            let owner = self.owner_tags().await?;
            if !owner.is_empty() {
                self.store.tag(&name, &owner).await?;
            }
        }
        Ok(())
    }

    /// Keep the pending password. Created with its owner tag in the same call when it does not
    /// exist (the usual case: it is deleted when a rotation completes), so no crash can leave an
    /// untagged copy of a password that outlives the stack.
    async fn put_pending(&self, password: &Secret, key_id: Option<&str>) -> Result<(), StoreError> {
        let name = self.config.pending_parameter();
        let value = || Value::Secure {
            value: password,
            key_id,
        };
        let description = "fargate-smb: the password a rotation in progress is setting (deleted when it completes)";
        let tags = self.owner_tags().await?;
        match self
            .store
            .put(&name, value(), description, false, &tags)
            .await
        {
            Err(StoreError::AlreadyExists { .. }) => self
                .store
                .put(&name, value(), description, true, &BTreeMap::new())
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    /// Take `<prefix>/rotation-lock`: one run at a time. Two runs started together would each
    /// keep a password of their own and reset the same account, and SSM could end with one while
    /// AD holds the other.
    ///
    /// SSM has no conditional write, but its version numbers are one: every write of a
    /// parameter gets the next version, so of two writes that both read version `n`, exactly one
    /// is answered `n + 1`. The lock is never deleted (a delete would reset the count): a run
    /// takes it by overwriting a free or expired value and holds it only if its write got
    /// `n + 1`; it gives it back by writing `free`. The value is the run's token and the end of
    /// its lease, the invocation's deadline (Lambda has ended the run by then), so the lock of a
    /// run that was killed expires by itself. The first run creates it (`Overwrite: false`, which
    /// only one create can win). `None`: another run holds it.
    ///
    /// A losing write still lands (as version `n + 2`) and replaces the winner's value with the
    /// loser's. So a value is written with a long lease (the deadline plus 15 minutes, far more
    /// than an invocation): a loser's value, on top of the winner's, outlasts the winner's run,
    /// and no third run can take the lock while the winner works; for the same reason the winner
    /// may give the lock back even when a loser's value is on top of its own (see
    /// [`Self::release`]). The winner then shortens its own lease to its deadline (plus 5 s), so
    /// that Lambda's retry of a run that was killed finds the lock expired. The lock must not be
    /// edited by hand.
    async fn acquire(&self, deadline_ms: u64) -> Result<Option<Held>, RotationError> {
        let name = self.config.lock_parameter();
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| RotationError::Generate(e.to_string()))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let end = match deadline_ms {
            0 => now_ms() + 15 * 60 * 1000,
            d => d,
        };
        let value = format!("{token} {}", end + 15 * 60 * 1000);
        let Some(version) = self.try_lock(&name, &value).await? else {
            return Ok(None);
        };
        let short = format!("{token} {}", end + 5_000);
        if let Err(e) = self
            .store
            .put(
                &name,
                Value::Plain(&short),
                LOCK_DESCRIPTION,
                true,
                &BTreeMap::new(),
            )
            .await
        {
            tracing::warn!(parameter = %name, error = %e, "could not shorten the lock's lease; a retry of this run, should it die, waits 15 minutes longer");
        }
        Ok(Some(Held { token, version }))
    }

    /// One attempt at winning the lock with `value`: the version this run's write got, `None` if
    /// another run holds it, an error if SSM refused or could not say.
    async fn try_lock(&self, name: &str, value: &str) -> Result<Option<i64>, RotationError> {
        let mut last = String::new();
        for _ in 0..3 {
            let expected = match self.store.get(name, false).await? {
                None => {
                    let tags = self.owner_tags().await?;
                    match self
                        .store
                        .put(name, Value::Plain(value), LOCK_DESCRIPTION, false, &tags)
                        .await
                    {
                        Ok(version) => return Ok(Some(version)),
                        // Another run created it first, or this create was applied and still
                        // answered with an error: look again.
                        Err(e) => {
                            tracing::warn!(parameter = %name, error = %e, "creating the lock failed; reading it back");
                            last = e.to_string();
                            continue;
                        }
                    }
                }
                Some(found) => {
                    if found.value.expose() == value {
                        return Ok(Some(found.version)); // our own create, answered with an error
                    }
                    let mut parts = found.value.expose().split(' ');
                    let (holder, lease) = (parts.next().unwrap_or_default(), parts.next());
                    let lease = lease.and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
                    if holder != "free" && lease > now_ms() {
                        return Ok(None);
                    }
                    if holder != "free" {
                        tracing::warn!(parameter = %name, holder, "the lock's lease has ended (a run that was killed): taking it over");
                    }
                    found.version + 1
                }
            };
            return match self
                .store
                .put(
                    name,
                    Value::Plain(value),
                    LOCK_DESCRIPTION,
                    true,
                    &BTreeMap::new(),
                )
                .await
            {
                Ok(version) if version == expected => Ok(Some(version)),
                Ok(_) => Ok(None),
                Err(e) => {
                    // Applied or not, only the version says whose it is.
                    tracing::warn!(parameter = %name, error = %e, "taking the lock failed; reading it back");
                    match self.store.get(name, false).await? {
                        Some(found)
                            if found.value.expose() == value && found.version == expected =>
                        {
                            Ok(Some(expected))
                        }
                        // Another run's write is there: it decided.
                        Some(found) if found.version >= expected => Ok(None),
                        // Nothing was written: SSM refused (a missing permission, throttling).
                        _ => Err(RotationError::Lock(e.to_string())),
                    }
                }
            };
        }
        Err(RotationError::Lock(format!(
            "{name} could not be created ({last}); run it again"
        )))
    }

    /// Give the lock back. It is ours to free when it holds our token, or when a later version
    /// is on top of ours: while our lease runs nobody can win the lock (every value since ours
    /// is ours or a loser's, whose lease outlasts our run), so a later version is a loser's. A
    /// failure only delays the next run until the lease ends.
    async fn release(&self, lock: &Held) {
        let name = self.config.lock_parameter();
        let result = match self.store.get(&name, false).await {
            Ok(Some(found))
                if found.value.expose().split(' ').next() == Some(lock.token.as_str())
                    || found.version > lock.version =>
            {
                self.store
                    .put(
                        &name,
                        Value::Plain(&format!("free {}", now_ms())),
                        LOCK_DESCRIPTION,
                        true,
                        &BTreeMap::new(),
                    )
                    .await
                    .map(|_| ())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(parameter = %name, error = %e, "could not release the lock; it expires with its lease");
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

    pub(crate) async fn directory(&self) -> Result<Dir, RotationError> {
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
    /// against a DC the new password has not replicated to yet) while an attempt and the pause
    /// before it still leave `reserve_ms` of the invocation for what follows.
    pub(crate) async fn prove(
        &self,
        share: &str,
        username: &str,
        password: &Secret,
        deadline_ms: u64,
        reserve_ms: u64,
    ) -> Result<(), RotationError> {
        let mut last = String::new();
        let attempt_ms = (self.config.timeout + self.config.proof_delay).as_millis() as u64;
        let mut attempt = 0;
        while attempt < self.config.proof_attempts {
            if attempt > 0 {
                if Self::left_ms(deadline_ms).is_some_and(|left| left < attempt_ms + reserve_ms) {
                    last = format!("{last}; no time is left for another attempt");
                    break;
                }
                tokio::time::sleep(self.config.proof_delay).await;
            }
            attempt += 1;
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
                        break;
                    }
                }
            }
        }
        Err(RotationError::Proof {
            account: username.to_owned(),
            share: share.to_owned(),
            attempts: attempt,
            detail: last,
        })
    }

    /// A deployment of any configured service that is still rolling out.
    async fn deployment_in_progress(&self) -> Result<Option<String>, RotationError> {
        self.rollout()
            .await
            .map_err(|detail| RotationError::Deploy {
                active: "(unchanged)".into(),
                detail,
            })
    }

    /// [`Self::deployment_in_progress`], its error the failed call as text (for either mode's
    /// own error).
    pub(crate) async fn rollout(&self) -> Result<Option<String>, String> {
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
            .map_err(|e| {
                format!(
                    "ecs:DescribeServices failed: {}",
                    aws_env::sdk_error_text(&e)
                )
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
    pub(crate) async fn deploy(&self) -> Result<Vec<String>, String> {
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
                        "ecs:UpdateService {service}: {}",
                        aws_env::sdk_error_text(&e)
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
        execution: Option<String>,
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
            execution,
        })
        .await?;
        // After the record: a run that finds Idle never reads the pending parameter, so losing
        // this delete costs nothing but a second copy of the active password under the same key
        // and path, which the next rotation overwrites.
        self.drop_pending().await;
        Ok(json!({"outcome": how, "active": active, "previous": previous, "deployed": services}))
    }

    async fn drop_pending(&self) {
        let pending = self.config.pending_parameter();
        if let Err(e) = self.store.delete(&pending).await {
            tracing::warn!(parameter = %pending, error = %e, "could not delete the pending password; the next rotation overwrites it");
        }
    }

    /// Milliseconds left before the invocation's deadline (`None` if unknown).
    pub(crate) fn left_ms(deadline_ms: u64) -> Option<u64> {
        (deadline_ms != 0).then(|| deadline_ms.saturating_sub(now_ms()))
    }

    /// The time the two writes of a switch may take at worst (each bounded by the SDK's
    /// operation timeout).
    fn switch_budget_ms(&self) -> u64 {
        self.operation_timeout.as_millis() as u64 * 2
    }

    /// A heuristic for the time from a rotation's start to its first SSM write after the AD
    /// reset: two LDAP operations at TIMEOUT_SECONDS, four SDK calls at the operation timeout,
    /// then the switch's two writes. Not every call at its timeout at once (about seven LDAP
    /// operations and nine SDK calls: more than any sensible function timeout); it stops a run
    /// started with plainly too little time. A run that still dies after the reset is finished
    /// by the next.
    fn start_budget_ms(&self) -> u64 {
        let ldap = self.config.timeout.as_millis() as u64 * 2;
        let calls = self.operation_timeout.as_millis() as u64 * 4;
        ldap + calls + self.switch_budget_ms()
    }

    /// Refuse to start a step that must not be cut short without the time to finish it. Only
    /// ever asked before AD is reset, or while SSM still holds the previous, consistent pair.
    pub(crate) fn time_for(
        &self,
        step: &str,
        needed_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), RotationError> {
        match Self::left_ms(deadline_ms) {
            Some(left) if left < needed_ms => Err(RotationError::NoTime {
                step: step.to_owned(),
                needed_ms,
                left_ms: left,
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn in_accounts(&self, username: &str) -> bool {
        let name = account_of(username);
        self.config
            .accounts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name))
    }

    async fn run(
        &self,
        dry_run: bool,
        execution: Option<String>,
        deadline_ms: u64,
    ) -> Result<Json, RotationError> {
        let c = &self.config;
        let username_parameter = c.username_parameter();
        let username = self
            .parameter(&username_parameter, false)
            .await?
            .expose()
            .trim()
            .to_owned();
        let active = account_of(&username).to_owned();
        if !self.in_accounts(&username) {
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

        if let Some(r) = &record {
            if r.state != State::Idle {
                if dry_run {
                    return Ok(json!({"outcome": "dry-run", "plan": [format!(
                        "resume the interrupted rotation ({:?}) to {}", r.state, r.target.as_deref().unwrap_or("?")
                    )]}));
                }
                if let Some(done) = self
                    .resume(r, &username, &share, execution.clone(), deadline_ms)
                    .await?
                {
                    return Ok(done);
                }
            } else if execution.is_some() && r.execution == execution {
                let why = format!(
                    "the schedule's invocation for {} already rotated the password at {}: a duplicate delivery",
                    execution.as_deref().unwrap_or_default(),
                    r.time
                );
                tracing::info!(reason = %why, "skipped");
                return Ok(json!({"outcome": "skipped", "active": username, "reason": why}));
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
            ];
            let prove = format!("prove it with an SMB logon to {share}");
            let switch = format!(
                "write {} (SecureString, same KMS key), then {} = {target}, and read both back",
                c.password_parameter(),
                username_parameter
            );
            if c.alternating() {
                plan.extend([prove, switch]);
            } else {
                plan.extend([switch, prove]);
            }
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
        // Once AD is reset the run never refuses an SSM write for lack of time, so it must not
        // start without the time to get there.
        self.time_for("start a rotation", self.start_budget_ms(), deadline_ms)?;

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
        self.put_pending(&password, key_id.as_deref())
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
            key_id,
            execution,
        };
        self.write_record(&plan.record(State::Pending, "new password kept; resetting AD"))
            .await?;
        // The previous password, to put back if the switch cannot be finished: only alternating
        // mode has a previous pair that still logs on (and single-account mode must not fail on
        // a read it does not need).
        let old = if c.alternating() {
            Some(self.parameter(&c.password_parameter(), true).await?)
        } else {
            None
        };
        self.complete(&dir, &user, &plan, &share, old, deadline_ms, "rotated")
            .await
    }

    /// From `Pending`: reset AD to the pending password, prove it, switch SSM, deploy, record.
    /// `old` (alternating mode, a run that started the rotation itself): the password SSM held,
    /// which still logs on, to put back if the switch cannot be finished.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        dir: &Dir,
        user: &User,
        plan: &Plan,
        share: &str,
        old: Option<Secret>,
        deadline_ms: u64,
        how: &str,
    ) -> Result<Json, RotationError> {
        let alternating = self.config.alternating();
        let old = old.filter(|o| alternating && !plan.fingerprint.matches(o));

        // 2. AD. Resetting to the value it may already hold (a resumed run) is accepted: an
        //    administrative reset is not a password change and history does not apply.
        dir.set_password(user, &plan.password).await?;
        tracing::info!(account = %plan.target, "password reset in AD");

        let mut report = if alternating {
            // A resumed switch may find SSM already half switched: then the pair in SSM does not
            // log on, and finishing comes before any proof or time check.
            let untouched = match self.observe().await {
                Ok((user, password)) => user == plan.active && !plan.fingerprint.matches(&password),
                Err(_) => false,
            };
            if untouched {
                // 3. Proven before SSM changes: the previous pair keeps working meanwhile.
                self.prove(
                    share,
                    &plan.target,
                    &plan.password,
                    deadline_ms,
                    self.switch_budget_ms(),
                )
                .await?;
                self.time_for("switch SSM", self.switch_budget_ms(), deadline_ms)?;
            } else {
                tracing::warn!(target = %plan.target, "SSM already holds part of the new credential: finishing the switch before anything else");
            }
            // 4. SSM, verified by reading it back.
            self.switch(plan, old.as_ref(), deadline_ms).await?;
            self.finish(
                &plan.target,
                Some(plan.active.clone()),
                how,
                plan.execution.clone(),
            )
            .await?
        } else {
            // Single-account mode: AD now accepts only the new password, so SSM follows at once,
            // whatever the time; the proof comes after, for the report (a failure there is
            // typically replication to the DC the file server asks).
            self.switch(plan, None, 0).await?;
            // Deployed and recorded first: the proof only feeds the report, and may take the
            // rest of the invocation.
            let mut report = self
                .finish(&plan.target, None, how, plan.execution.clone())
                .await?;
            let proof = self
                .prove(share, &plan.target, &plan.password, deadline_ms, 0)
                .await;
            if let Err(RotationError::Proof {
                attempts, detail, ..
            }) = proof
            {
                tracing::error!(account = %plan.target, attempts, detail = %detail, "the new password, which AD and SSM hold, did not log on to the share yet");
                report["unproven"] = Json::String(format!(
                    "the new password, which AD and SSM hold, did not log on to {share} after {attempts} attempt(s): \
                     {detail}; most likely replication to the DC the file server asks"
                ));
            }
            report
        };
        if report.get("unproven").is_none() {
            report["proven"] = Json::Bool(true);
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
    /// with the pending password. A round is refused for lack of time only while SSM still holds
    /// the previous pair unchanged (`deadline_ms` 0: never, as in single-account mode, where the
    /// previous pair no longer logs on).
    async fn switch(
        &self,
        plan: &Plan,
        old: Option<&Secret>,
        deadline_ms: u64,
    ) -> Result<(), RotationError> {
        let c = &self.config;
        let key_id = plan.key_id.as_deref();
        let recorded = self
            .write_record(&plan.record(State::Switching, "switching SSM to the new credential"))
            .await;
        match recorded {
            Ok(()) => {}
            // Before any SSM write the previous pair still works: stop cleanly.
            Err(e) if c.alternating() => return Err(e),
            // In single-account mode SSM holds a dead password now; the Pending record is enough
            // for a later run to finish, so the switch goes on.
            Err(e) => {
                tracing::warn!(error = %e, "could not record the switch; switching anyway (the pending record lets a later run finish)")
            }
        }
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
                    previous: (plan.target != plan.active).then(|| plan.active.clone()),
                    time: now_utc(),
                    outcome: "SSM switched (read back); deploying".into(),
                    fingerprint: None,
                    execution: plan.execution.clone(),
                })
                .await?;
                tracing::info!(from = %plan.active, to = %plan.target, "SSM switched to the new credential");
                return Ok(());
            }
            if round == SWITCH_ROUNDS {
                break;
            }
            let untouched = !has_password && user == plan.active;
            if untouched
                && let Err(e) = self.time_for("write SSM", self.switch_budget_ms(), deadline_ms)
            {
                last = e.to_string();
                break;
            }
            if !has_password && let Err(e) = self.put_password(&plan.password, key_id).await {
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
        // Not verified. A run that started this rotation knows the previous pair, which still
        // logs on (alternating mode): put both back, and believe it only from a read-back.
        if let Some(old) = old {
            let mut restored = false;
            for _ in 0..2 {
                let Ok((user, password)) = self.observe().await else {
                    continue;
                };
                if user == plan.active && password == *old {
                    restored = true;
                    break;
                }
                if password != *old {
                    let _ = self.put_password(old, key_id).await;
                }
                if user != plan.active {
                    let _ = self.put_username(&plan.active).await;
                }
            }
            if restored {
                self.write_record(&Record {
                    state: State::Idle,
                    active: plan.active.clone(),
                    target: None,
                    previous: None,
                    time: now_utc(),
                    outcome: format!("rolled back: the switch could not be completed: {last}"),
                    fingerprint: None,
                    execution: None,
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
                "the record says it is switching and {} keeps the new password, which AD holds: the next run \
                 finishes the switch; until then SSM may hold a pair that does not log on",
                c.pending_parameter()
            ),
        })
    }

    /// Give up an interrupted rotation that no longer fits the configuration: record why, drop
    /// its pending password, and let a fresh rotation start.
    async fn abandon(&self, r: &Record, why: &str) -> Result<(), RotationError> {
        tracing::warn!(state = ?r.state, target = ?r.target, reason = why, "abandoning an interrupted rotation");
        self.write_record(&Record {
            state: State::Idle,
            active: r.active.clone(),
            target: None,
            previous: r.previous.clone(),
            time: now_utc(),
            outcome: format!("an interrupted rotation was abandoned: {why}"),
            fingerprint: None,
            execution: None,
        })
        .await?;
        self.drop_pending().await;
        Ok(())
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
        execution: Option<String>,
        deadline_ms: u64,
    ) -> Result<Option<Json>, RotationError> {
        let target = r.target.clone().unwrap_or_default();
        // The configuration may have changed since (a stack update renamed the pair, or set
        // another Username): finishing for accounts that are no longer the pair would move SSM
        // outside ACCOUNTS.
        let fits = match r.state {
            State::Idle => return Ok(None),
            State::Deploying => {
                self.in_accounts(&r.active) && username.eq_ignore_ascii_case(&r.active)
            }
            _ => {
                self.in_accounts(&r.active)
                    && self.in_accounts(&target)
                    && (username.eq_ignore_ascii_case(&r.active)
                        || username.eq_ignore_ascii_case(&target))
            }
        };
        if !fits {
            self.abandon(
                r,
                &format!(
                    "it was for {} and {target}, and ACCOUNTS ({}) or {} ({username}) have changed since",
                    r.active,
                    self.config.accounts.join(", "),
                    self.config.username_parameter()
                ),
            )
            .await?;
            return Ok(None);
        }
        if r.state == State::Deploying {
            tracing::info!(active = %r.active, "the last rotation switched SSM but did not deploy: deploying now");
            return self
                .finish(
                    &r.active,
                    r.previous.clone(),
                    "rotated (deployment completed by a later run)",
                    r.execution.clone().or(execution),
                )
                .await
                .map(Some);
        }
        let pending = match self.store.get(&self.config.pending_parameter(), true).await {
            Ok(p) => p.map(|s| s.value),
            // A key that was replaced or a policy that changed: the kept password is lost to
            // this function, which is the same as having none.
            Err(e @ (StoreError::Key { .. } | StoreError::AccessDenied { .. })) => {
                tracing::warn!(error = %e, "the pending password cannot be read");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let plan = match (&r.fingerprint, pending) {
            (Some(fingerprint), Some(password)) if fingerprint.matches(&password) => Plan {
                active: r.active.clone(),
                target: target.clone(),
                password,
                fingerprint: fingerprint.clone(),
                key_id: self.store.key_id(&self.config.password_parameter()).await?,
                execution: r.execution.clone().or(execution),
            },
            _ => {
                // A record of the previous version (no pending password), or one whose pending
                // password is gone. In alternating mode the password is always written before
                // the username, so a username that already names the target means the switch
                // had completed. (In single-account mode the username always names the target
                // and says nothing.)
                if target != r.active && username == target {
                    tracing::info!(target = %target, "the interrupted switch had completed: deploying");
                    return self
                        .finish(
                            &target,
                            Some(r.active.clone()),
                            "rotated (switch completed by a later run)",
                            execution,
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
        // Pending or Switching: AD is reset to the kept password again before the switch is
        // finished, in case someone reset the account since (a PasswordVersion update, an
        // administrator). The reset is idempotent and costs no failed logon.
        tracing::info!(state = ?r.state, target = %plan.target, "an interrupted rotation had kept its new password: finishing it");
        self.time_for("resume a rotation", self.start_budget_ms(), deadline_ms)?;
        let dir = self.directory().await?;
        let user = dir.usable(account_of(&plan.target)).await?;
        let how = if r.state == State::Pending {
            "rotated (completed by a later run)"
        } else {
            "rotated (switch completed by a later run)"
        };
        self.complete(&dir, &user, &plan, share, None, deadline_ms, how)
            .await
            .map(Some)
    }
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const LOCK_DESCRIPTION: &str = "fargate-smb: the rotation run in progress (its token and lease end, ms since the epoch), or free";

/// The rotation lock, as this run holds it: its token and the version its write got.
struct Held {
    token: String,
    version: i64,
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
    /// The password parameter's KMS key, passed again on every overwrite.
    key_id: Option<String>,
    /// The schedule's time of the invocation that started it, if known.
    execution: Option<String>,
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
            execution: self.execution.clone(),
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
