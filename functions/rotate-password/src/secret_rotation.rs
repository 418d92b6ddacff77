//! Secrets Manager mode (`CREDENTIAL_STORE=secrets-manager`): the four steps of Secrets Manager's
//! rotation protocol on the one secret `SECRET_ID`, with the alternating accounts.
//!
//! The secret's value is the JSON of [`service_credential`]: `username` (the active account,
//! `DOMAIN\name`), `password`, `share`. Secrets Manager calls the function once per step with
//! the same `ClientRequestToken` (the id of the version the rotation makes) and serialises the
//! rotations of a secret, so this mode needs none of the SSM mode's lock or record: the versions
//! and their staging labels are the state, and every step first reads them (DescribeSecret).
//!
//! - `createSecret`: puts `AWSPENDING` = the other account of `ACCOUNTS` with a new password
//!   (nothing else changes, nothing in the directory: a deployment rolling out does not stop
//!   it). Done once per token: a repeat finds the version and keeps it.
//! - `setSecret`: resets that account's password in the directory, never while a deployment
//!   rolls out (its old tasks may still use that account). The account `AWSCURRENT` names,
//!   which running tasks use, is never reset (alternating mode). Done once per token: the tag
//!   `fargate-smb:password-set` = token records that the directory holds the pending password,
//!   and a repeat changes nothing.
//! - `testSecret`: proves the pending credential by an SMB logon to the secret's `share`. A
//!   failure forgets the tag above, so that the retry resets the password again (someone may have
//!   reset the account in between).
//! - `finishSecret`: proves the pending credential once more (nothing else says the directory
//!   still holds it: setSecret may never have run, or the account was reset since), refuses a
//!   pending account that `AWSCURRENT` names now (CloudFormation wrote a new value during the
//!   rotation), then moves `AWSCURRENT` to the token's version and forces a new ECS deployment.
//!   The tag `fargate-smb:redeploy` = token is put on the secret before the move and removed once
//!   the deployment is forced, so a deployment that failed after the move is done by a repeat of
//!   finishSecret or by the next createSecret.
//!
//! Secrets Manager retries a failed rotation from createSecret, with the same token. Once the
//! token is `AWSCURRENT` every step answers `already-finished` and changes nothing (createSecret
//! still forces a due deployment first), so that the retry reaches finishSecret.
//!
//! Every read names its version (`VersionStage`, and `VersionId` for the pending one): moto
//! answers a read without them with the version AWSCURRENT had before a move (a gap of the
//! emulator that AWS does not have), and being explicit costs nothing on AWS.

use crate::rotation::{RotationError, Rotator, account_of, qualify_like};
use aws_env::sdk_error_text;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use secrets::{PasswordRules, Secret};
use serde_json::{Value as Json, json};
use service_credential::{SHAPE, ServiceCredential, ShapeError};
use std::collections::HashMap;

/// Tag on the secret while a deployment is due after AWSCURRENT moved: the token it moved to.
pub const REDEPLOY_TAG: &str = "fargate-smb:redeploy";
/// Tag on the secret once setSecret has put a token's password in the directory: the token.
pub const PASSWORD_SET_TAG: &str = "fargate-smb:password-set";
const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// One of Secrets Manager's rotation steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Step::Create, Step::Set, Step::Test, Step::Finish]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// A rotation step as Secrets Manager sends it (`RotationToken`, when present, is not needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    pub step: Step,
    pub secret_id: String,
    pub token: String,
}

impl StepEvent {
    /// `None`: the event has no `Step` (a scheduled-style event).
    pub fn from_event(event: &Json) -> Result<Option<Self>, StepError> {
        let Some(step) = event.get("Step") else {
            return Ok(None);
        };
        let bad = |problem: String| StepError::BadEvent { problem };
        let step = step.as_str().and_then(Step::from_name).ok_or_else(|| {
            bad(format!(
                "Step is {step}, none of createSecret, setSecret, testSecret, finishSecret"
            ))
        })?;
        let text = |key: &str| {
            event
                .get(key)
                .and_then(Json::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("{key} is missing or not a string")))
        };
        let secret_id = text("SecretId")?;
        let token = text("ClientRequestToken")?;
        // A version id is 32 to 64 characters; the token is only ever compared and sent back,
        // but it goes into messages, so anything else is refused rather than echoed.
        if !(32..=64).contains(&token.len())
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                "ClientRequestToken is not a version id (32 to 64 letters, digits, - or _)".into(),
            ));
        }
        Ok(Some(Self {
            step,
            secret_id,
            token,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(
        "this function rotates the secret {secret} (CREDENTIAL_STORE=secrets-manager) and takes only Secrets \
         Manager's rotation steps, not a scheduled run: rotate with `aws secretsmanager rotate-secret --secret-id \
         {secret}`, and remove any schedule that invokes the function directly"
    )]
    NotAStep { secret: String },
    #[error(
        "this function rotates SSM parameters (CREDENTIAL_STORE=ssm-parameters) and was sent Secrets Manager's \
         {step} step for {secret}: set CREDENTIAL_STORE=secrets-manager and SECRET_ID to rotate that secret with \
         it, or turn off the secret's rotation (`aws secretsmanager cancel-rotate-secret --secret-id {secret}`)"
    )]
    StepInSsmMode { step: String, secret: String },
    #[error(
        "the event is not a Secrets Manager rotation step: {problem}; Secrets Manager sends \
         {{\"Step\", \"SecretId\", \"ClientRequestToken\"}}"
    )]
    BadEvent { problem: String },
    #[error("{step} of {secret} (ClientRequestToken {token}) failed: {problem}")]
    Failed {
        step: &'static str,
        secret: String,
        token: String,
        problem: Box<Problem>,
    },
}

/// What went wrong in a step, and what to do about it. Never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(
        "this function rotates {configured} (SECRET_ID), not {event}{detail}: point that secret's rotation at \
         its own rotation function, or fix SECRET_ID"
    )]
    OtherSecret {
        configured: String,
        event: String,
        detail: String,
    },
    #[error(
        "rotation is not enabled on the secret (DescribeSecret: RotationEnabled false), and a step outside a \
         rotation is refused: enable it (the stack's AWS::SecretsManager::RotationSchedule), then {}",
        new_rotation(secret)
    )]
    RotationDisabled { secret: String },
    #[error(
        "the token is not a version of the secret (Secrets Manager sends the id of the version its rotation \
         made): {}",
        new_rotation(secret)
    )]
    UnknownToken { secret: String },
    #[error(
        "the token's version has the stages [{stages}], not AWSPENDING: only the version a rotation is making is \
         set, tested or finished; {}",
        new_rotation(secret)
    )]
    NotPending { stages: String, secret: String },
    #[error("secretsmanager:{operation} failed: {detail}; {fix}")]
    Call {
        operation: &'static str,
        detail: String,
        fix: String,
    },
    #[error("the secret's {version} value {problem}: it must be JSON like {SHAPE}; {fix}")]
    Shape {
        version: String,
        problem: ShapeError,
        fix: String,
    },
    #[error(
        "the secret's AWSCURRENT value has no \"share\" (the UNC the tasks map), and testSecret proves a new \
         password by a logon to it: put the share into the secret (the stack's SecretStringTemplate has it), then {}",
        rotate_again(secret)
    )]
    NoShare { secret: String },
    #[error(
        "the token's AWSPENDING version holds no value: createSecret has not completed for this token. Secrets \
         Manager runs createSecret first; {}",
        rotate_again(secret)
    )]
    NoPendingValue { secret: String },
    #[error(
        "the secret's {version} value names {username}, which is none of ACCOUNTS ({accounts}): set ACCOUNTS to the \
         pair Custom::AdServiceAccount made (its SamAccountNames), or fix the secret"
    )]
    NotInAccounts {
        version: String,
        username: String,
        accounts: String,
    },
    #[error(
        "a deployment is still rolling out ({why}), and its old tasks may still use {account}, whose password this \
         rotation would reset; nothing was changed. Once it has rolled out, {}",
        rotate_again(secret)
    )]
    Rolling {
        why: String,
        account: String,
        secret: String,
    },
    #[error(
        "a rotation moved AWSCURRENT to version {due} and its ECS deployment is still due (tag {REDEPLOY_TAG}), \
         but forcing it failed: {detail}. Running tasks keep the previous account, which the next reset would \
         change, so this step stops with nothing changed: fix the cause (ECS_CLUSTER, ECS_SERVICES, \
         ecs:UpdateService), then retry, or {}",
        rotate_again(secret)
    )]
    DueDeployment {
        due: String,
        detail: String,
        secret: String,
    },
    #[error(
        "AWSCURRENT now holds {account} (this token's version), but forcing a new ECS deployment failed: {detail}. \
         Running tasks keep working (the previous account is untouched); the tag {REDEPLOY_TAG} on the secret marks \
         the deployment as due: a retry of finishSecret, or the next rotation's createSecret, forces it"
    )]
    Deploy { account: String, detail: String },
    #[error(
        "the pending password of {account} did not log on to {share} after {attempts} attempt(s) ({detail}); \
         {current}. A retry resets the password again before it tests: fix the \
         cause (the share in the secret, the file server's reachability, SMB_PORT, replication between DCs), \
         then retry, or {}",
        rotate_again(secret)
    )]
    Proof {
        account: String,
        share: String,
        attempts: u32,
        detail: String,
        /// What the failure means for AWSCURRENT.
        current: &'static str,
        secret: String,
    },
    #[error(
        "the AWSPENDING value names {username}, the account AWSCURRENT holds now and running tasks use: \
         AWSCURRENT has changed since this rotation's createSecret (CloudFormation wrote a new value, or someone \
         put one), or the pending value was put by hand. With alternating accounts the active account is never \
         reset, so this version can never become AWSCURRENT; AWSCURRENT was not moved and the directory was not \
         touched. {}",
        stale_way_out(secret, token, dropped)
    )]
    StalePending {
        username: String,
        secret: String,
        token: String,
        /// Whether AWSPENDING could be taken off the version (else what the service said).
        dropped: Result<(), String>,
    },
    #[error(
        "the pending password of {account} does not log on to {share} ({attempts} attempt(s): {detail}), so \
         AWSCURRENT was not moved to it: setSecret and testSecret have not both succeeded for this token, or the \
         account was reset since. A retry of the rotation (Secrets Manager retries it from createSecret with this \
         token) resets the password again before it tests; or {}",
        rotate_again(secret)
    )]
    NotProven {
        account: String,
        share: String,
        attempts: u32,
        detail: String,
        secret: String,
    },
    #[error("the secret has no AWSCURRENT version: put the credential as AWSCURRENT first")]
    NoCurrent,
    /// The directory, the administrator's credential, the time left: their messages say what
    /// to do.
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// How to get a new password when no rotation is under way.
fn new_rotation(secret: &str) -> String {
    format!("start a new rotation: `aws secretsmanager rotate-secret --secret-id {secret}`")
}

/// After a stale pending version: AWSPENDING was taken off it (so Secrets Manager no longer takes
/// the rotation as unfinished), or how to take it off by hand.
fn stale_way_out(secret: &str, token: &str, dropped: &Result<(), String>) -> String {
    match dropped {
        Ok(()) => format!(
            "AWSPENDING was taken off this version, so the next rotation starts anew and its createSecret \
             picks the other account: {}",
            new_rotation(secret)
        ),
        Err(e) => format!(
            "Taking AWSPENDING off it failed ({e}): drop it (`aws secretsmanager update-secret-version-stage \
             --secret-id {secret} --version-stage AWSPENDING --remove-from-version-id {token}`), then {}",
            new_rotation(secret)
        ),
    }
}

/// The way out of a rotation that failed: its AWSPENDING version (Secrets Manager's, or
/// createSecret's) stays, and while it does Secrets Manager takes the rotation as unfinished.
fn rotate_again(secret: &str) -> String {
    format!(
        "{} (should it answer that a rotation is still in progress, first drop this one's label: `aws \
         secretsmanager update-secret-version-stage --secret-id {secret} --version-stage AWSPENDING \
         --remove-from-version-id <the token above>`)",
        new_rotation(secret)
    )
}

/// A failed Secrets Manager call as a [`Problem`]: what the service said (never the body of an
/// answer that could not be read: a GetSecretValue answer holds the password), and the fix.
fn call_problem<E, R>(operation: &'static str, e: &SdkError<E, R>, secret: &str) -> Problem
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let fix = match e.code() {
        Some("AccessDeniedException") => format!(
            "grant the function's role secretsmanager:{operation} on {secret}, and kms:Decrypt and \
             kms:GenerateDataKey on the secret's key (via secretsmanager)"
        ),
        Some("ResourceNotFoundException") => {
            format!("the secret {secret} does not exist (deleted?): fix SECRET_ID")
        }
        _ => format!("fix the cause and retry, or {}", rotate_again(secret)),
    };
    Problem::Call {
        operation,
        detail: sdk_error_text(e),
        fix,
    }
}

/// The secret as DescribeSecret shows it.
#[derive(Debug, Clone, Default)]
struct Described {
    arn: String,
    name: String,
    rotation_enabled: Option<bool>,
    versions: HashMap<String, Vec<String>>,
    tags: HashMap<String, String>,
}

impl Described {
    fn stages(&self, token: &str) -> Option<&[String]> {
        self.versions.get(token).map(Vec::as_slice)
    }

    fn current(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == CURRENT))
            .map(|(id, _)| id.as_str())
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// Whether the described secret is the configured one: an ARN is compared with the secret's
/// ARN, exactly; anything else is a name and compared with its name.
fn is_configured(configured: &str, arn: &str, name: &str) -> bool {
    if configured.starts_with("arn:") {
        configured == arn
    } else {
        configured == name
    }
}

/// Where the token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenStage {
    /// Not a version yet (createSecret only): moto cannot make the value-less version Secrets
    /// Manager makes before createSecret, and on AWS PutSecretValue fills that version in.
    New,
    /// AWSPENDING: the version this rotation is making.
    Pending,
    /// AWSCURRENT: this rotation has moved the label, so it has finished (or its deployment is
    /// still due). Every step accepts it: Secrets Manager retries a failed rotation from
    /// createSecret with the same token, and a finishSecret that failed after the move must be
    /// reached again.
    Current,
}

/// Which stages the token may have for `step`.
fn check_stages(
    step: Step,
    stages: Option<&[String]>,
    secret: &str,
) -> Result<TokenStage, Problem> {
    let has = |label: &str| stages.is_some_and(|s| s.iter().any(|x| x == label));
    let secret = secret.to_owned();
    match (step, stages) {
        (Step::Create, None) => return Ok(TokenStage::New),
        (_, None) => return Err(Problem::UnknownToken { secret }),
        _ => {}
    }
    if has(CURRENT) {
        return Ok(TokenStage::Current);
    }
    if has(PENDING) {
        return Ok(TokenStage::Pending);
    }
    Err(Problem::NotPending {
        stages: stages.unwrap_or_default().join(", "),
        secret,
    })
}

/// In SSM mode: a Secrets Manager step was sent to the function by mistake.
pub(crate) fn refuse_step_in_ssm_mode(event: &Json) -> Result<(), StepError> {
    match event.get("Step") {
        None => Ok(()),
        // Only echoed, and cut short: the event comes from whoever may invoke the function.
        Some(step) => Err(StepError::StepInSsmMode {
            step: step
                .as_str()
                .unwrap_or("(not a string)")
                .chars()
                .take(40)
                .collect(),
            secret: event
                .get("SecretId")
                .and_then(Json::as_str)
                .unwrap_or("<secret>")
                .chars()
                .take(2048)
                .collect(),
        }),
    }
}

/// A report without the password.
fn report(ev: &StepEvent, arn: &str, outcome: &str, account: &str) -> Json {
    json!({
        "step": ev.step.name(),
        "token": ev.token,
        "secret": arn,
        "outcome": outcome,
        "account": account,
    })
}

impl Rotator {
    /// One Secrets Manager step on `configured` (SECRET_ID).
    pub(crate) async fn rotation_step(
        &self,
        configured: &str,
        event: &Json,
        deadline_ms: u64,
    ) -> Result<Json, RotationError> {
        let ev = StepEvent::from_event(event)?.ok_or_else(|| StepError::NotAStep {
            secret: configured.to_owned(),
        })?;
        tracing::info!(step = ev.step.name(), token = %ev.token, secret = %ev.secret_id, "rotation step started");
        match self.step(&ev, configured, deadline_ms).await {
            Ok(report) => {
                tracing::info!(step = ev.step.name(), token = %ev.token, outcome = report["outcome"].as_str().unwrap_or_default(), report = %report, "rotation step finished");
                Ok(report)
            }
            Err(problem) => Err(StepError::Failed {
                step: ev.step.name(),
                secret: ev.secret_id.clone(),
                token: ev.token.clone(),
                problem: Box::new(problem),
            }
            .into()),
        }
    }

    async fn step(
        &self,
        ev: &StepEvent,
        configured: &str,
        deadline_ms: u64,
    ) -> Result<Json, Problem> {
        let other = |detail: String| Problem::OtherSecret {
            configured: configured.to_owned(),
            event: ev.secret_id.clone(),
            detail,
        };
        // Two ARNs that differ are two secrets: refused before any call.
        if configured.starts_with("arn:")
            && ev.secret_id.starts_with("arn:")
            && configured != ev.secret_id
        {
            return Err(other(String::new()));
        }
        let d = match self.describe(&ev.secret_id).await {
            Ok(d) => d,
            Err(p) if ev.secret_id != configured => {
                return Err(other(format!(" (DescribeSecret on it failed: {p})")));
            }
            Err(p) => return Err(p),
        };
        if !is_configured(configured, &d.arn, &d.name) {
            return Err(other(format!(" (its ARN is {})", d.arn)));
        }
        // moto reports RotationEnabled only once RotateSecret was called; AWS always does. An
        // absent field is let be, an explicit false is refused.
        if d.rotation_enabled == Some(false) {
            return Err(Problem::RotationDisabled { secret: d.arn });
        }
        let stage = check_stages(ev.step, d.stages(&ev.token), &d.arn)?;
        let is_current = stage == TokenStage::Current;
        match ev.step {
            Step::Create => self.create(ev, &d, is_current).await,
            // Finished: nothing to reset or prove (the directory is not touched).
            Step::Set | Step::Test if is_current => self.already_finished(ev, &d, None).await,
            Step::Set => self.set(ev, &d, deadline_ms).await,
            Step::Test => self.test(ev, &d, deadline_ms).await,
            Step::Finish => self.finish_step(ev, &d, is_current, deadline_ms).await,
        }
    }

    async fn describe(&self, id: &str) -> Result<Described, Problem> {
        let out = self
            .secrets
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| call_problem("DescribeSecret", &e, id))?;
        Ok(Described {
            arn: out.arn.unwrap_or_default(),
            name: out.name.unwrap_or_default(),
            rotation_enabled: out.rotation_enabled,
            versions: out.version_ids_to_stages.unwrap_or_default(),
            tags: out
                .tags
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())))
                .collect(),
        })
    }

    /// The value of the version with `stage` (and `version_id`, if given). `None`: no such
    /// value (ResourceNotFoundException), as for the value-less version Secrets Manager makes
    /// before createSecret.
    async fn read(
        &self,
        arn: &str,
        stage: &str,
        version_id: Option<&str>,
    ) -> Result<Option<Secret>, Problem> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(arn)
            .version_stage(stage)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await;
        match out {
            // Moved out of the answer, not copied: it becomes the `Secret` that wipes it.
            Ok(out) => Ok(out.secret_string.map(Secret::new)),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(call_problem("GetSecretValue", &e, arn)),
        }
    }

    /// AWSCURRENT, parsed.
    async fn current(&self, d: &Described) -> Result<ServiceCredential, Problem> {
        let value = self
            .read(&d.arn, CURRENT, None)
            .await?
            .ok_or(Problem::NoCurrent)?;
        service_credential::parse(&value).map_err(|problem| Problem::Shape {
            version: CURRENT.into(),
            problem,
            fix: format!(
                "put a value of that shape (`aws secretsmanager put-secret-value --secret-id {}`), or update the \
                 stack's PasswordVersion so that CloudFormation writes a new one",
                d.arn
            ),
        })
    }

    /// The token's AWSPENDING value, parsed; `None` if the version holds no value.
    async fn pending(
        &self,
        d: &Described,
        token: &str,
    ) -> Result<Option<ServiceCredential>, Problem> {
        let Some(value) = self.read(&d.arn, PENDING, Some(token)).await? else {
            return Ok(None);
        };
        service_credential::parse(&value)
            .map(Some)
            .map_err(|problem| Problem::Shape {
                version: format!("AWSPENDING ({token})"),
                problem,
                fix: format!(
                    "drop that version's label (`aws secretsmanager update-secret-version-stage --secret-id {} \
                     --version-stage AWSPENDING --remove-from-version-id {token}`), then {}",
                    d.arn,
                    rotate_again(&d.arn)
                ),
            })
    }

    fn require_in_accounts(&self, version: &str, username: &str) -> Result<(), Problem> {
        if self.in_accounts(username) {
            Ok(())
        } else {
            Err(Problem::NotInAccounts {
                version: version.to_owned(),
                username: username.to_owned(),
                accounts: self.config.accounts.join(", "),
            })
        }
    }

    async fn tag(&self, arn: &str, key: &str, value: &str) -> Result<(), Problem> {
        self.secrets
            .tag_resource()
            .secret_id(arn)
            .tags(Tag::builder().key(key).value(value).build())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_problem("TagResource", &e, arn))
    }

    /// AWSPENDING off the finished version. Left on it, the label would stay behind on an old
    /// version once CloudFormation writes a new value (a PasswordVersion change), and
    /// Secrets Manager refuses every later RotateSecret while AWSPENDING is on a version that is
    /// not AWSCURRENT ("a previous rotation is still in progress").
    async fn drop_pending_label(&self, arn: &str, token: &str) -> Result<(), Problem> {
        self.secrets
            .update_secret_version_stage()
            .secret_id(arn)
            .version_stage(PENDING)
            .remove_from_version_id(token)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| call_problem("UpdateSecretVersionStage", &e, arn))
    }

    /// A pending version that names the active account can never be finished: every retry of
    /// its token would fail the same way, and while it keeps AWSPENDING Secrets Manager starts no
    /// new rotation (it resumes this one), nor can CloudFormation update the rotation schedule.
    /// Taking the label off is always safe (AWSCURRENT has not moved) and unwedges it.
    async fn refuse_stale(
        &self,
        ev: &StepEvent,
        d: &Described,
        pending: &str,
    ) -> Result<(), Problem> {
        if !self.config.alternating() {
            return Ok(());
        }
        let current = self.current(d).await?;
        if !account_of(&current.username).eq_ignore_ascii_case(account_of(pending)) {
            return Ok(());
        }
        let username = pending.to_owned();
        let dropped = self
            .drop_pending_label(&d.arn, &ev.token)
            .await
            .map_err(|p| p.to_string());
        match &dropped {
            Ok(()) => {
                tracing::warn!(step = ev.step.name(), token = %ev.token, account = %username, "the pending version names the active account: AWSPENDING taken off it, so the next rotation starts anew")
            }
            Err(e) => {
                tracing::warn!(step = ev.step.name(), token = %ev.token, account = %username, error = %e, "the pending version names the active account, and AWSPENDING could not be taken off it")
            }
        }
        Err(Problem::StalePending {
            username,
            secret: d.arn.clone(),
            token: ev.token.clone(),
            dropped,
        })
    }

    /// A failed proof: the password-set mark of this token goes, so that the retry's setSecret
    /// resets the account again (someone may have reset it since).
    async fn forget_password_set(&self, ev: &StepEvent, d: &Described) {
        if d.tag(PASSWORD_SET_TAG) == Some(ev.token.as_str()) {
            self.untag(ev, &d.arn, &[PASSWORD_SET_TAG]).await;
        }
    }

    /// Remove the tags; a failure is only logged (what it leaves behind is said at each call).
    async fn untag(&self, ev: &StepEvent, arn: &str, keys: &[&str]) -> bool {
        let result = self
            .secrets
            .untag_resource()
            .secret_id(arn)
            .set_tag_keys(Some(keys.iter().map(|k| (*k).to_owned()).collect()))
            .send()
            .await;
        match result {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(step = ev.step.name(), token = %ev.token, tags = ?keys, error = %sdk_error_text(&e), "could not remove the tags");
                false
            }
        }
    }

    /// The report of a step whose token is AWSCURRENT already: the rotation has finished, and
    /// the step changes nothing.
    async fn already_finished(
        &self,
        ev: &StepEvent,
        d: &Described,
        due_done: Option<Json>,
    ) -> Result<Json, Problem> {
        let account = self.current(d).await?.username;
        tracing::info!(step = ev.step.name(), token = %ev.token, account = %account, "the token's version is AWSCURRENT already: this rotation has finished, nothing to do");
        let mut r = report(ev, &d.arn, "already-finished", &account);
        if let Some(due) = due_done {
            r["dueDeployment"] = due;
        }
        Ok(r)
    }

    /// A due deployment has been forced: the tags go, so that no later step forces it again.
    /// The other tag names a token that is AWSCURRENT now (or that a due deployment has
    /// overtaken), which no setSecret accepts.
    async fn deployment_done(&self, ev: &StepEvent, arn: &str) {
        if !self.untag(ev, arn, &[REDEPLOY_TAG, PASSWORD_SET_TAG]).await {
            tracing::warn!(step = ev.step.name(), token = %ev.token, tag = REDEPLOY_TAG, "the deployment is forced, but the tag that marks it as due stays on the secret: the next createSecret or finishSecret forces one more deployment (harmless: the tasks get AWSCURRENT either way)");
        }
    }

    /// createSecret: AWSPENDING = the other account (single-account mode: the same one) with a
    /// new password. First forces a deployment an earlier rotation left due. It touches nothing
    /// in the directory, so a deployment rolling out does not stop it (setSecret waits for it).
    async fn create(
        &self,
        ev: &StepEvent,
        d: &Described,
        is_current: bool,
    ) -> Result<Json, Problem> {
        let mut due_done = None;
        if let Some(due) = d.tag(REDEPLOY_TAG) {
            tracing::info!(step = ev.step.name(), token = %ev.token, due, "a deployment is due from an earlier rotation: forcing it first");
            let services = self
                .deploy()
                .await
                .map_err(|detail| Problem::DueDeployment {
                    due: due.to_owned(),
                    detail,
                    secret: d.arn.clone(),
                })?;
            self.deployment_done(ev, &d.arn).await;
            due_done = Some(json!({"token": due, "deployed": services}));
        }
        if is_current {
            // Secrets Manager's retry of a rotation whose finishSecret failed after the move.
            return self.already_finished(ev, d, due_done).await;
        }
        if d.stages(&ev.token).is_some()
            && let Some(pending) = self.pending(d, &ev.token).await?
        {
            self.refuse_stale(ev, d, &pending.username).await?;
            tracing::info!(step = ev.step.name(), token = %ev.token, account = %pending.username, "the pending version exists already");
            let mut r = report(ev, &d.arn, "already-created", &pending.username);
            if let Some(due) = due_done {
                r["dueDeployment"] = due;
            }
            return Ok(r);
        }
        let current = self.current(d).await?;
        self.require_in_accounts(CURRENT, &current.username)?;
        let share = current.share.clone().ok_or_else(|| Problem::NoShare {
            secret: d.arn.clone(),
        })?;
        let c = &self.config;
        let active = account_of(&current.username);
        let target_name = if c.alternating() {
            c.accounts
                .iter()
                .find(|a| !a.eq_ignore_ascii_case(active))
                .cloned()
                .unwrap_or_default()
        } else {
            active.to_owned()
        };
        let target = qualify_like(&current.username, &target_name);
        let password = PasswordRules {
            length: c.password_length,
            ..PasswordRules::default()
        }
        .generate()
        .map_err(|e| RotationError::Generate(e.to_string()))?;
        let credential = ServiceCredential {
            username: target.clone(),
            password,
            share: Some(share),
        };
        let value = service_credential::to_json(&credential);
        let put = self
            .secrets
            .put_secret_value()
            .secret_id(&d.arn)
            .client_request_token(&ev.token)
            .secret_string(value.expose())
            .version_stages(PENDING)
            .send()
            .await;
        drop(value);
        if let Err(e) = put {
            // Applied and still answered with an error (a timeout, a 5xx after the write)? The
            // version says: it holds this password or nothing.
            let detail = sdk_error_text(&e);
            tracing::warn!(step = ev.step.name(), token = %ev.token, error = %detail, "PutSecretValue failed (it may still have been applied): reading the version back");
            let applied = matches!(
                self.pending(d, &ev.token).await,
                Ok(Some(p)) if p.username == target && p.password.expose() == credential.password.expose()
            );
            if !applied {
                return Err(call_problem("PutSecretValue", &e, &d.arn));
            }
        }
        tracing::info!(step = ev.step.name(), token = %ev.token, account = %target, "AWSPENDING holds the other account with a new password");
        let mut r = report(ev, &d.arn, "created", &target);
        if let Some(due) = due_done {
            r["dueDeployment"] = due;
        }
        Ok(r)
    }

    /// setSecret: the directory gets the pending password, once per token.
    async fn set(&self, ev: &StepEvent, d: &Described, deadline_ms: u64) -> Result<Json, Problem> {
        let pending = self
            .pending(d, &ev.token)
            .await?
            .ok_or_else(|| Problem::NoPendingValue {
                secret: d.arn.clone(),
            })?;
        self.require_in_accounts(PENDING, &pending.username)?;
        let c = &self.config;
        self.refuse_stale(ev, d, &pending.username).await?;
        if d.tag(PASSWORD_SET_TAG) == Some(ev.token.as_str()) {
            tracing::info!(step = ev.step.name(), token = %ev.token, account = %pending.username, "the directory already holds the pending password: not reset again");
            return Ok(report(ev, &d.arn, "already-set", &pending.username));
        }
        if c.alternating()
            && let Some(why) = self.rollout().await.map_err(|detail| Problem::Call {
                operation: "(ecs) DescribeServices",
                detail,
                fix: format!(
                    "grant ecs:DescribeServices on the services, or fix ECS_CLUSTER/ECS_SERVICES, then retry or {}",
                    rotate_again(&d.arn)
                ),
            })?
        {
            return Err(Problem::Rolling {
                why,
                account: pending.username,
                secret: d.arn.clone(),
            });
        }
        // Connecting, finding the account and the reset (LDAP operations at TIMEOUT_SECONDS),
        // the administrator's credential and the tag (SDK calls): started only with the time
        // for them, though a reset cut short is only repeated by the retry.
        let needed =
            c.timeout.as_millis() as u64 * 3 + self.operation_timeout.as_millis() as u64 * 2;
        self.time_for("reset the password in the directory", needed, deadline_ms)?;
        let dir = self.directory().await?;
        let user = dir.usable(account_of(&pending.username)).await?;
        dir.set_password(&user, &pending.password)
            .await
            .map_err(RotationError::from)?;
        tracing::info!(step = ev.step.name(), token = %ev.token, account = %pending.username, "password reset in the directory");
        if let Err(e) = self.tag(&d.arn, PASSWORD_SET_TAG, &ev.token).await {
            // The reset is done; without the tag a repeat of this step resets once more, which
            // is harmless.
            tracing::warn!(step = ev.step.name(), token = %ev.token, error = %e, "could not record the reset on the secret; a repeat of setSecret resets again");
        }
        Ok(report(ev, &d.arn, "set", &pending.username))
    }

    /// testSecret: an SMB logon to the share with the pending credential. A version without a
    /// value (Secrets Manager's test of the rotation configuration, RotateImmediately false)
    /// proves AWSCURRENT instead: the function reaches the secret and the file server, and
    /// nothing changes.
    async fn test(&self, ev: &StepEvent, d: &Described, deadline_ms: u64) -> Result<Json, Problem> {
        let (credential, outcome) = match self.pending(d, &ev.token).await? {
            Some(p) => (p, "proven"),
            None => {
                tracing::info!(step = ev.step.name(), token = %ev.token, "the pending version holds no value (a test of the rotation's configuration): proving AWSCURRENT");
                (self.current(d).await?, "proven-current")
            }
        };
        let share = credential.share.clone().ok_or_else(|| Problem::NoShare {
            secret: d.arn.clone(),
        })?;
        match self
            .prove(
                &share,
                &credential.username,
                &credential.password,
                deadline_ms,
                0,
            )
            .await
        {
            Ok(()) => Ok(report(ev, &d.arn, outcome, &credential.username)),
            Err(RotationError::Proof {
                account,
                share,
                attempts,
                detail,
            }) => {
                // Someone may have reset the account since setSecret: the retry resets it again.
                self.forget_password_set(ev, d).await;
                Err(Problem::Proof {
                    account,
                    share,
                    attempts,
                    detail,
                    current: if self.config.alternating() {
                        "AWSCURRENT is unchanged and still works"
                    } else {
                        "single-account mode: AWSCURRENT no longer logs on once setSecret has run (the directory \
                         holds the pending password), so new tasks fail until this rotation finishes"
                    },
                    secret: d.arn.clone(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// finishSecret: AWSCURRENT to the token's version, then a forced deployment; the redeploy
    /// tag covers the time in between.
    async fn finish_step(
        &self,
        ev: &StepEvent,
        d: &Described,
        is_current: bool,
        deadline_ms: u64,
    ) -> Result<Json, Problem> {
        let account;
        let outcome;
        if is_current {
            account = self.current(d).await?.username;
            if d.tag(REDEPLOY_TAG).is_none() {
                if d.stages(&ev.token)
                    .is_some_and(|s| s.iter().any(|x| x == PENDING))
                {
                    self.drop_pending_label(&d.arn, &ev.token).await?;
                }
                tracing::info!(step = ev.step.name(), token = %ev.token, "AWSCURRENT holds the token and no deployment is due");
                return Ok(report(ev, &d.arn, "already-finished", &account));
            }
            tracing::info!(step = ev.step.name(), token = %ev.token, "AWSCURRENT holds the token, and its deployment is due: forcing it");
            outcome = "finished";
        } else {
            let pending =
                self.pending(d, &ev.token)
                    .await?
                    .ok_or_else(|| Problem::NoPendingValue {
                        secret: d.arn.clone(),
                    })?;
            // What the tasks are about to get must be a credential of the pair.
            self.require_in_accounts(PENDING, &pending.username)?;
            let c = &self.config;
            // The pending account is the one AWSCURRENT names now: AWSCURRENT was rewritten
            // (a PasswordVersion update) since createSecret picked the other account, and that
            // account's password in the directory is AWSCURRENT's, not this version's.
            self.refuse_stale(ev, d, &pending.username).await?;
            let share = pending.share.clone().ok_or_else(|| Problem::NoShare {
                secret: d.arn.clone(),
            })?;
            // Nothing but a logon proves that the directory holds this password now: setSecret
            // may never have run for the token, or the account may have been reset since
            // testSecret. The proof's retries leave the time for the tag, the move and the
            // read-back.
            let move_ms = self.operation_timeout.as_millis() as u64 * 3;
            let attempt_ms = (c.timeout + c.proof_delay).as_millis() as u64;
            self.time_for(
                "prove the pending password and move AWSCURRENT",
                attempt_ms + move_ms,
                deadline_ms,
            )?;
            match self
                .prove(
                    &share,
                    &pending.username,
                    &pending.password,
                    deadline_ms,
                    move_ms,
                )
                .await
            {
                Ok(()) => {}
                Err(RotationError::Proof {
                    account,
                    share,
                    attempts,
                    detail,
                }) => {
                    // As after a failed testSecret: the retry's setSecret resets again.
                    self.forget_password_set(ev, d).await;
                    return Err(Problem::NotProven {
                        account,
                        share,
                        attempts,
                        detail,
                        secret: d.arn.clone(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
            account = pending.username;
            let from = d.current().ok_or(Problem::NoCurrent)?.to_owned();
            self.time_for("move AWSCURRENT", move_ms, deadline_ms)?;
            self.tag(&d.arn, REDEPLOY_TAG, &ev.token).await?;
            let moved = self
                .secrets
                .update_secret_version_stage()
                .secret_id(&d.arn)
                .version_stage(CURRENT)
                .move_to_version_id(&ev.token)
                .remove_from_version_id(&from)
                .send()
                .await;
            if let Err(e) = moved {
                // Applied, and answered with an error? The stages say.
                tracing::warn!(step = ev.step.name(), token = %ev.token, error = %sdk_error_text(&e), "UpdateSecretVersionStage failed (it may still have been applied): reading the stages back");
                let now = self.describe(&d.arn).await.ok();
                let applied = now
                    .as_ref()
                    .and_then(|n| n.stages(&ev.token))
                    .is_some_and(|s| s.iter().any(|x| x == CURRENT));
                if !applied {
                    // Not moved: no deployment is due (a tag left behind forces one more).
                    self.untag(ev, &d.arn, &[REDEPLOY_TAG]).await;
                    return Err(call_problem("UpdateSecretVersionStage", &e, &d.arn));
                }
            }
            tracing::info!(step = ev.step.name(), token = %ev.token, from = %from, account = %account, "AWSCURRENT moved to the token's version");
            outcome = "finished";
        }
        let services = self.deploy().await.map_err(|detail| Problem::Deploy {
            account: account.clone(),
            detail,
        })?;
        self.deployment_done(ev, &d.arn).await;
        // Last, once nothing else is due: a repeat of this step finds AWSCURRENT on the token
        // and drops the label then.
        self.drop_pending_label(&d.arn, &ev.token).await?;
        let mut r = report(ev, &d.arn, outcome, &account);
        r["deployed"] = json!(services);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0b6a2a6e-1f1e-4c1c-9d47-6f1f0e3a9b01";

    fn event(step: &str) -> Json {
        json!({"Step": step, "SecretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:web-AbCdEf",
               "ClientRequestToken": TOKEN, "RotationToken": "ignored"})
    }

    #[test]
    fn events_as_secrets_manager_sends_them() {
        let ev = StepEvent::from_event(&event("setSecret")).unwrap().unwrap();
        assert_eq!((ev.step, ev.token.as_str()), (Step::Set, TOKEN));
        assert_eq!(
            StepEvent::from_event(&json!({"dryRun": true})).unwrap(),
            None
        );
        for bad in [
            json!({"Step": "rotateSecret", "SecretId": "s", "ClientRequestToken": TOKEN}),
            json!({"Step": "createSecret", "ClientRequestToken": TOKEN}),
            json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": "short"}),
            json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": format!("{TOKEN}\" x")}),
        ] {
            assert!(
                matches!(StepEvent::from_event(&bad), Err(StepError::BadEvent { .. })),
                "{bad}"
            );
        }
        assert!(refuse_step_in_ssm_mode(&json!({"dryRun": true})).is_ok());
        let e = refuse_step_in_ssm_mode(&event("createSecret")).unwrap_err();
        assert!(
            e.to_string().contains("CREDENTIAL_STORE=secrets-manager"),
            "{e}"
        );
    }

    #[test]
    fn the_configured_secret_by_arn_or_by_name() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:web-AbCdEf";
        assert!(is_configured(arn, arn, "web"));
        assert!(is_configured("web", arn, "web"));
        assert!(!is_configured(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:web",
            arn,
            "web"
        ));
        assert!(!is_configured("other", arn, "web"));
    }

    #[test]
    fn which_stages_each_step_accepts() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let pending = s(&["AWSPENDING"]);
        let current = s(&["AWSCURRENT", "AWSPENDING"]);
        let previous = s(&["AWSPREVIOUS"]);
        for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
            assert_eq!(
                check_stages(step, Some(&pending), "s").unwrap(),
                TokenStage::Pending
            );
            // Secrets Manager's retry of a rotation that failed after the move starts again at
            // createSecret: every step must reach finishSecret.
            assert_eq!(
                check_stages(step, Some(&current), "s").unwrap(),
                TokenStage::Current
            );
            assert!(matches!(
                check_stages(step, Some(&previous), "s"),
                Err(Problem::NotPending { .. })
            ));
        }
        assert_eq!(
            check_stages(Step::Create, None, "s").unwrap(),
            TokenStage::New
        );
        for step in [Step::Set, Step::Test, Step::Finish] {
            assert!(matches!(
                check_stages(step, None, "s"),
                Err(Problem::UnknownToken { .. })
            ));
        }
    }
}
