//! Create, update and delete of the service account(s) and their group.

use crate::properties::{Backend, OnDelete, PasswordSource, Properties};
use admin_credential::{AdminCredentials, CredentialError};
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use custom_resource::{CustomResource, Invalid, Outcome, Request, Secret, Unreadable};
use directory::{
    Directory, DirectoryError, Group, NewUser, User,
    ldaps::{LdapsConfig, LdapsDirectory},
    managed_ad::ManagedAdDirectory,
};
use ownership::{Before, Ownership, Release};
use parameter_store::{ParameterStore, StoreError};
use secrets::PasswordRules;
use serde_json::{Map, Value};
use service_credential::ShapeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid property {0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the SSM parameter {name} ({property}) does not exist: create it first (Custom::SsmParameters does), or fix the name"
    )]
    MissingParameter {
        property: &'static str,
        name: String,
    },
    #[error(transparent)]
    AdminCredential(#[from] CredentialError),
    #[error(
        "the account {name} already exists and was not created by this resource (its description lacks {marker}): \
         choose another AccountName, or set AdoptExisting: true to take it over"
    )]
    Foreign { name: String, marker: String },
    #[error("the group {0} does not exist: create it, or set CreateGroup: true")]
    NoGroup(String),
    #[error(
        "UsernameParameter {parameter} holds {value:?}, which is none of this resource's accounts ({names}): fix the parameter, or run the rotation again"
    )]
    ActiveUnknown {
        parameter: String,
        value: String,
        names: String,
    },
    #[error("could not generate a password: {0}")]
    Password(#[from] secrets::PasswordError),
    #[error("the secret {id} (PasswordSecretId) could not be read: {detail}")]
    SecretUnreadable { id: String, detail: String },
    #[error(
        "the AWSCURRENT value of the secret {id} (PasswordSecretId) {problem}: it must be a SecretString holding JSON {shape}",
        shape = service_credential::SHAPE
    )]
    SecretShape { id: String, problem: String },
    #[error(
        "the secret {id} (PasswordSecretId) names {username:?} as the active account, which is none of this \
         resource's accounts ({names}): fix the secret's \"username\", or run the rotation again"
    )]
    SecretActiveUnknown {
        id: String,
        username: String,
        names: String,
    },
    #[error(
        "the secret {id} (PasswordSecretId) names {username:?}, which is not in this resource's domain: \
         write its \"username\" as {netbios}\\<account> or <account>@{domain} (NetbiosName, Domain)"
    )]
    SecretOtherDomain {
        id: String,
        username: String,
        netbios: String,
        domain: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Aws(#[from] aws_env::ConfigError),
}

/// The ownership marker this resource writes into the description of what it creates.
pub fn marker(owner: &str) -> String {
    format!("[fargate-smb:{owner}]")
}

/// The resource, with its AWS clients built once per container. LDAP sessions are opened per
/// request: a Lambda container may sit idle longer than a DC keeps a connection.
#[derive(Debug)]
pub struct AdServiceAccount {
    store: ParameterStore,
    admin: AdminCredentials,
    secrets: aws_sdk_secretsmanager::Client,
    ds_data: aws_sdk_directoryservicedata::Client,
    ds: aws_sdk_directory::Client,
}

impl AdServiceAccount {
    pub async fn from_env() -> Result<Self, InitError> {
        let sdk = aws_env::load().await?;
        Ok(Self::new(&sdk))
    }

    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            store: ParameterStore::new(sdk),
            admin: AdminCredentials::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
            ds_data: aws_sdk_directoryservicedata::Client::new(sdk),
            ds: aws_sdk_directory::Client::new(sdk),
        }
    }

    async fn parameter(
        &self,
        property: &'static str,
        name: &str,
        decrypt: bool,
    ) -> Result<Secret, Error> {
        self.store
            .get(name, decrypt)
            .await?
            .map(|p| p.value)
            .ok_or_else(|| Error::MissingParameter {
                property,
                name: name.to_owned(),
            })
    }

    /// The service credential in the secret `id`: its AWSCURRENT version, asked for by stage
    /// (never the default) so the request reads exactly what ECS and the rotation read.
    async fn service_secret(
        &self,
        id: &str,
    ) -> Result<service_credential::ServiceCredential, Error> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(id)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| Error::SecretUnreadable {
                id: id.to_owned(),
                detail: read_failure(&e),
            })?;
        let shape = |problem: &str| Error::SecretShape {
            id: id.to_owned(),
            problem: problem.to_owned(),
        };
        // Only the string is taken into a `Secret`; the rest of the output holds no value.
        let value = match (out.secret_string, out.secret_binary.is_some()) {
            (Some(text), _) if !text.is_empty() => Secret::new(text),
            (_, true) => return Err(shape("is binary (SecretBinary)")),
            _ => return Err(shape("is empty")),
        };
        service_credential::parse(&value).map_err(|e| {
            shape(&match e {
                ShapeError::NotAnObject(what) => what.to_owned(),
                key => format!("is wrong: {key}"),
            })
        })
    }

    /// The admin's user name and password, from SSM or Secrets Manager.
    async fn admin_credential(&self, p: &Properties) -> Result<(String, Secret), Error> {
        let source = match (&p.admin_password_parameter, &p.admin_secret_id) {
            (Some(name), _) => admin_credential::Source::Parameter(name),
            (None, id) => admin_credential::Source::Secret(id.as_deref().unwrap_or_default()),
        };
        let c = self.admin.read(p.admin_username.as_deref(), source).await?;
        Ok((c.username, c.password))
    }

    async fn connect(&self, p: &Properties) -> Result<Dir, Error> {
        match p.backend {
            Backend::Ldaps => {
                let (bind_user, bind_password) = self.admin_credential(p).await?;
                if bind_user.is_empty() {
                    return Err(custom_resource::invalid(
                        "AdminUsername",
                        "is not set and the secret holds no username",
                        "set AdminUsername",
                    )
                    .into());
                }
                let config = LdapsConfig {
                    url: p.server.clone().unwrap_or_default(),
                    starttls: p.start_tls.unwrap_or(false),
                    ca_bundle_pem: p.ca_bundle.clone(),
                    bind_user,
                    bind_password,
                    domain: p.domain(),
                    timeout: p.timeout(),
                };
                Ok(Dir::Ldaps(Box::new(LdapsDirectory::connect(config).await?)))
            }
            Backend::ManagedAd => Ok(Dir::Managed(ManagedAdDirectory::from_clients(
                self.ds_data.clone(),
                self.ds.clone(),
                p.directory_id.clone().unwrap_or_default(),
            ))),
        }
    }

    /// The request's shared context: who owns what, the active account, its password.
    async fn context(
        &self,
        request: &Request<Properties>,
        reset_without_check: bool,
    ) -> Result<Context, Error> {
        let id = self.physical_id(request);
        let p = &request.properties;
        let names = p.account_names();
        let (active, password, source) = match p.password_source()? {
            PasswordSource::Parameter {
                name,
                username_parameter,
            } => {
                let password = self.parameter("PasswordParameter", name, true).await?;
                let mut active = names[0].clone();
                if let Some(param) = username_parameter
                    && let Some(stored) = self.store.get(param, false).await?
                {
                    let value = stored.value.expose().to_owned();
                    let name = ad_names::split_qualified(&value)
                        .map(|(_, n)| n.to_owned())
                        .unwrap_or(value.clone());
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                        return Err(Error::ActiveUnknown {
                            parameter: param.to_owned(),
                            value,
                            names: names.join(", "),
                        });
                    }
                    active = name;
                }
                (active, password, "the SSM parameter")
            }
            PasswordSource::Secret { id } => {
                let credential = self.service_secret(id).await?;
                let active = active_in_secret(p, &names, id, &credential.username)?;
                (active, credential.password, "the secret")
            }
        };
        Ok(Context {
            props: p.clone(),
            marker: marker(&request.owner()),
            id,
            replacing: request.replacing.clone(),
            in_place: request.in_place_update(),
            request_id: request.request_id.clone(),
            names,
            active,
            password,
            source,
            reset_without_check,
        })
    }
}

/// What a failed GetSecretValue means for the operator. AWS's message names the secret and
/// the denied action, never a value; the error chain covers what has no code (no network, a
/// timeout). Never the SDK's Debug form (`DisplayErrorContext` appends it): it holds the raw
/// response, which for an answer that could not be parsed is the secret's value.
fn read_failure(e: &SdkError<GetSecretValueError>) -> String {
    let code = match e.as_service_error() {
        Some(GetSecretValueError::ResourceNotFoundException(_)) => {
            Some("ResourceNotFoundException")
        }
        Some(GetSecretValueError::DecryptionFailure(_)) => Some("DecryptionFailure"),
        _ => e.code(),
    };
    match code {
        Some("ResourceNotFoundException") => {
            "it does not exist (or has no AWSCURRENT version): create it first, or fix PasswordSecretId".into()
        }
        Some("AccessDeniedException") => "access denied: grant the function's role secretsmanager:GetSecretValue \
             on the secret, and kms:Decrypt on its KMS key (via secretsmanager.<region>.amazonaws.com)"
            .into(),
        Some("DecryptionFailure") => "Secrets Manager could not decrypt it: grant the function's role \
             kms:Decrypt on the secret's KMS key (via secretsmanager.<region>.amazonaws.com)"
            .into(),
        // Any other answer, an unreadable one (never its body), a timeout, no connection.
        _ => aws_env::sdk_error_text(e),
    }
}

/// The account the secret's `username` names as active: one of `names`, in this resource's
/// domain (`NETBIOS\name` or `name@<domain>`, compared case-insensitively as AD does).
fn active_in_secret(
    p: &Properties,
    names: &[String],
    id: &str,
    username: &str,
) -> Result<String, Error> {
    let other_domain = || Error::SecretOtherDomain {
        id: id.to_owned(),
        username: username.to_owned(),
        netbios: p.netbios(),
        domain: p.domain(),
    };
    // `service_credential::parse` checked the shape; this also checks the account name.
    let (domain, name) = ad_names::split_qualified(username).map_err(|why| Error::SecretShape {
        id: id.to_owned(),
        problem: format!("is wrong: its \"username\" names no account ({why})"),
    })?;
    let expected = if username.contains('\\') {
        p.netbios()
    } else {
        p.domain()
    };
    if !domain.eq_ignore_ascii_case(&expected) {
        return Err(other_domain());
    }
    names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .cloned()
        .ok_or_else(|| Error::SecretActiveUnknown {
            id: id.to_owned(),
            username: username.to_owned(),
            names: names.join(", "),
        })
}

/// The backend chosen by the properties.
enum Dir {
    Ldaps(Box<LdapsDirectory>),
    Managed(ManagedAdDirectory),
}

macro_rules! with_dir {
    ($dir:expr, $d:ident => $body:expr) => {
        match $dir {
            Dir::Ldaps($d) => {
                let $d = &**$d;
                $body
            }
            Dir::Managed($d) => $body,
        }
    };
}

struct Context {
    props: Properties,
    marker: String,
    /// The physical id this request is for; recorded on what it creates or adopts.
    id: String,
    /// The id being replaced, when this Create is a replacement.
    replacing: Option<String>,
    /// An Update applied in place (see `Ownership::settled`).
    in_place: bool,
    request_id: String,
    names: Vec<String>,
    active: String,
    password: Secret,
    /// Where the password came from, for the log.
    source: &'static str,
    /// Reset the active password even where the backend cannot check it (Create; a new
    /// PasswordParameterVersion or PasswordSecretVersion, another secret).
    reset_without_check: bool,
}

impl Context {
    /// The description of an account of ours: the text, the resource's marker, and the owning
    /// physical id, claimed from what the account's `existing` description records (`None`: the
    /// request makes the account). A replacement keeps the id it took an existing account over
    /// from until CloudFormation deletes one of the two.
    fn description(&self, name: &str, existing: Option<&str>) -> String {
        let text = self
            .props
            .description
            .clone()
            .unwrap_or_else(|| "fargate-smb service account".into());
        self.claim(Some(name), existing)
            .mark(&format!("{text} {}", self.marker))
    }

    fn group_description(&self, existing: Option<&str>) -> String {
        self.claim(None, existing)
            .mark(&format!("fargate-smb share access group {}", self.marker))
    }

    /// The ownership of the account `name` (or, `None`, the group) after this request.
    fn claim(&self, name: Option<&str>, existing: Option<&str>) -> Ownership {
        if self.in_place {
            return Ownership::settled(&self.id);
        }
        // A damaged marker on an account of ours is rewritten, as if none had been recorded.
        let recorded = existing.map(|d| Ownership::from_marker(d).ok().flatten());
        let before = match &recorded {
            None => Before::Absent,
            Some(r) => Before::of(true, r.as_ref()),
        };
        // A legacy account the replaced id names (AD compares names case-insensitively) is
        // shared with it; a legacy group is taken to be (its name is not in the id, and
        // deleting a group the old id still uses would be worse than leaving one behind).
        let same_object = |old: &str| match name {
            Some(name) => names_in_id(old)
                .is_some_and(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name))),
            None => true,
        };
        Ownership::claim(before, &self.id, self.replacing.as_deref(), same_object)
    }

    /// The longest description a request could write (the owning id and, in a replacement,
    /// the replaced one): AD keeps at most 1,024 characters.
    fn check_description_budget(&self) -> Result<(), Error> {
        let text = self
            .props
            .description
            .clone()
            .unwrap_or_else(|| "fargate-smb service account".into());
        let worst = Ownership {
            id: self.id.clone(),
            previous: Some(self.replacing.clone().unwrap_or_else(|| self.id.clone())),
        }
        .mark(&format!("{text} {}", self.marker));
        let length = worst.chars().count();
        if length > MAX_AD_DESCRIPTION {
            return Err(custom_resource::invalid(
                "Description",
                format!(
                    "with this resource's markers (stack, logical id, owning ids) the description would be {length} \
                     characters, over AD's {MAX_AD_DESCRIPTION}"
                ),
                "shorten Description (or the logical id)",
            )
            .into());
        }
        Ok(())
    }

    fn ours(&self, description: Option<&str>) -> bool {
        description.is_some_and(|d| d.contains(&self.marker))
    }

    fn is_active(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.active)
    }
}

/// What a request made, so a failure can take it back, and the existing objects whose
/// ownership it takes over once everything else has succeeded (a replacement's Create that fails
/// half-way must leave them owned by the id CloudFormation keeps).
#[derive(Default)]
struct Made {
    users: Vec<User>,
    group: Option<Group>,
    remark_users: Vec<(User, String)>,
    remark_group: Option<(Group, String)>,
}

async fn ensure_group<D: Directory>(
    d: &D,
    ctx: &Context,
    made: &mut Made,
) -> Result<Option<Group>, Error> {
    let Some(name) = ctx.props.group_name() else {
        return Ok(None);
    };
    if let Some(g) = d.find_group(name).await? {
        // A group of ours records its owner like the accounts do; a group someone else made is
        // only used, never marked.
        if ctx.ours(g.description.as_deref()) {
            let wanted = ctx.group_description(g.description.as_deref());
            if g.description.as_deref() != Some(wanted.as_str()) {
                made.remark_group = Some((g.clone(), wanted));
            }
        }
        return Ok(Some(g));
    }
    if !ctx.props.create_group.unwrap_or(false) {
        return Err(Error::NoGroup(name.to_owned()));
    }
    let ou = ctx
        .props
        .group_organizational_unit
        .clone()
        .or_else(|| ctx.props.organizational_unit.clone())
        .unwrap_or_default();
    let description = ctx.group_description(None);
    let token = format!("{}-group-{name}", ctx.request_id);
    let group = d.create_group(name, &ou, &description, &token).await?;
    made.group = Some(group.clone());
    Ok(Some(group))
}

async fn ensure_user<D: Directory>(
    d: &D,
    ctx: &Context,
    name: &str,
    made: &mut Made,
) -> Result<User, Error> {
    let active = ctx.is_active(name);
    // The inactive account of a pair gets a password nobody knows; rotation sets a known one
    // before it becomes active.
    let password = if active {
        ctx.password.clone()
    } else {
        PasswordRules::default().generate()?
    };
    match d.find_user(name).await? {
        None => {
            let spec = NewUser {
                sam_account_name: name.to_owned(),
                ou: ctx.props.organizational_unit.clone().unwrap_or_default(),
                description: ctx.description(name, None),
                password_never_expires: ctx.props.password_never_expires.unwrap_or(true),
                client_token: format!("{}-{name}", ctx.request_id),
            };
            let user = d.create_user(&spec, &password).await?;
            tracing::info!(account = name, sid = %user.sid, "account created");
            made.users.push(user.clone());
            Ok(user)
        }
        Some(user) if !ctx.ours(user.description.as_deref()) => {
            if !ctx.props.adopt_existing.unwrap_or(false) {
                return Err(Error::Foreign {
                    name: name.to_owned(),
                    marker: ctx.marker.clone(),
                });
            }
            d.set_description(&user, &ctx.description(name, None))
                .await?;
            d.set_password(&user, &password).await?;
            tracing::warn!(
                account = name,
                "AdoptExisting: an existing account was taken over and its password reset"
            );
            Ok(user)
        }
        Some(user) => {
            if active {
                let matches = d.check_password(&user, &ctx.password).await?;
                let reset = match matches {
                    Some(ok) => !ok,
                    None => ctx.reset_without_check,
                };
                if reset || !user.enabled {
                    d.set_password(&user, &ctx.password).await?;
                    tracing::info!(account = name, source = ctx.source, "password set");
                }
            }
            let wanted = ctx.description(name, user.description.as_deref());
            if user.description.as_deref() != Some(wanted.as_str()) {
                made.remark_users.push((user.clone(), wanted));
            }
            Ok(user)
        }
    }
}

fn outcome(ctx: &Context, users: &[User], group: Option<&Group>) -> Outcome {
    let active = users
        .iter()
        .find(|u| ctx.is_active(&u.sam_account_name))
        .or(users.first());
    let join =
        |f: fn(&User) -> String, sep: &str| users.iter().map(f).collect::<Vec<_>>().join(sep);
    let mut out = Outcome::new()
        .with(
            "SamAccountName",
            active
                .map(|u| u.sam_account_name.clone())
                .unwrap_or_default(),
        )
        .with(
            "Username",
            format!(
                "{}\\{}",
                ctx.props.netbios(),
                active
                    .map(|u| u.sam_account_name.as_str())
                    .unwrap_or_default()
            ),
        )
        .with("SamAccountNames", join(|u| u.sam_account_name.clone(), ","))
        .with("Sid", active.map(|u| u.sid.clone()).unwrap_or_default())
        .with("Sids", join(|u| u.sid.clone(), ","))
        .with(
            "DistinguishedName",
            active.and_then(|u| u.dn.clone()).unwrap_or_default(),
        )
        .with(
            "DistinguishedNames",
            join(|u| u.dn.clone().unwrap_or_default(), ";"),
        );
    // The principal a share ACL should grant: the group when there is one (it survives rotation).
    let principal = group
        .map(|g| g.sid.clone())
        .or_else(|| active.map(|u| u.sid.clone()))
        .unwrap_or_default();
    out = out.with("PrincipalSid", principal);
    if let Some(g) = group {
        out = out
            .with("GroupName", g.sam_account_name.clone())
            .with("GroupSid", g.sid.clone())
            .with("GroupDistinguishedName", g.dn.clone().unwrap_or_default());
    }
    out
}

async fn apply<D: Directory>(
    d: &D,
    ctx: &Context,
    old: Option<&Properties>,
    made: &mut Made,
) -> Result<Outcome, Error> {
    ctx.check_description_budget()?;
    let group = ensure_group(d, ctx, made).await?;
    let mut users = Vec::new();
    for name in &ctx.names {
        users.push(ensure_user(d, ctx, name, made).await?);
    }
    if let Some(g) = &group {
        for u in &users {
            d.add_member(g, u).await?;
        }
    }
    // A group change applies in place: leave the old group (and delete it if this resource made it).
    if let Some(old_name) = old
        .and_then(|o| o.group_name())
        .filter(|o| Some(*o) != ctx.props.group_name())
        && let Some(old_group) = d.find_group(old_name).await?
    {
        for u in &users {
            d.remove_member(&old_group, u).await?;
        }
        if ctx.ours(old_group.description.as_deref()) {
            d.delete_group(&old_group).await?;
            tracing::info!(
                group = old_name,
                "the previous group, made by this resource, was deleted"
            );
        }
    }
    // Last: the existing objects become this id's (see `Made`).
    for (user, description) in std::mem::take(&mut made.remark_users) {
        d.set_description(&user, &description).await?;
    }
    if let Some((group, description)) = made.remark_group.take() {
        d.set_group_description(&group, &description).await?;
    }
    Ok(outcome(ctx, &users, group.as_ref()))
}

async fn roll_back<D: Directory>(d: &D, made: Made) {
    for user in made.users {
        match d.delete_user(&user).await {
            Ok(()) => tracing::info!(account = %user.sam_account_name, "rolled back"),
            Err(e) => {
                tracing::error!(account = %user.sam_account_name, error = %e, "could not roll back")
            }
        }
    }
    if let Some(group) = made.group
        && let Err(e) = d.delete_group(&group).await
    {
        tracing::error!(group = %group.sam_account_name, error = %e, "could not roll back");
    }
}

async fn create_or_update<D: Directory>(
    d: &D,
    ctx: &Context,
    old: Option<&Properties>,
) -> Result<Outcome, Error> {
    let mut made = Made::default();
    match apply(d, ctx, old, &mut made).await {
        Ok(out) => Ok(out),
        Err(e) => {
            roll_back(d, made).await;
            Err(e)
        }
    }
}

/// What a Delete for `id` does with one object of ours, from the owner its description records.
/// A damaged marker leaves the object alone: it cannot be told whose it is.
fn release(description: Option<&str>, id: &str, computed: &str) -> Release {
    match description.map(Ownership::from_marker) {
        None | Some(Ok(None)) => Release::Remove,
        Some(Ok(Some(r))) => Ownership::release(Some(&r), id, computed),
        Some(Err(e)) => Release::NotOwned {
            owner: format!("unknown ({e})"),
        },
    }
}

/// The object stays: log why and record the owner it now has.
fn kept(kind: &str, name: &str, release: &Release) -> Option<Ownership> {
    match release {
        Release::Remove => None,
        Release::Superseded { to } => {
            tracing::info!(
                kind,
                name,
                owner = %to.id,
                "owned by the resource that replaced this one: left in place"
            );
            Some(to.clone())
        }
        Release::HandBack { to } => {
            tracing::info!(
                kind,
                name,
                owner = %to.id,
                "this resource replaced another that CloudFormation keeps (a rolled-back replacement): \
                 left in place and handed back"
            );
            Some(to.clone())
        }
        Release::NotOwned { owner } => {
            tracing::info!(
                kind,
                name,
                owner = %owner,
                "owned by another physical id of this resource: left in place"
            );
            None
        }
    }
}

/// AD's limit on the description attribute.
const MAX_AD_DESCRIPTION: usize = 1024;

/// The accounts a physical id names: `<domain>/<account>[+<account>]`.
fn names_in_id(id: &str) -> Option<Vec<String>> {
    let (_, names) = id.split_once('/')?;
    let names: Vec<String> = names.split('+').map(str::to_owned).collect();
    (!names.iter().any(String::is_empty)).then_some(names)
}

/// Delete for `id`. The accounts are the ones the id names (what this resource answered),
/// whatever the properties say, so properties this version could not read cannot make it look
/// for others; `computed` is the id the properties compute.
async fn remove<D: Directory>(
    d: &D,
    p: &Properties,
    marker: &str,
    id: &str,
    computed: &str,
) -> Result<(), Error> {
    let ours = |desc: Option<&str>| desc.is_some_and(|x| x.contains(marker));
    let group = match p.group_name() {
        Some(name) => d.find_group(name).await?,
        None => None,
    };
    // An id of another form (CloudFormation's own, for a Create it never heard back from) or
    // of another domain names no accounts of ours: then the properties do.
    let in_domain = id
        .split_once('/')
        .is_some_and(|(domain, _)| domain.eq_ignore_ascii_case(&p.domain()));
    let names = match names_in_id(id) {
        Some(names) if id != computed && in_domain => names,
        _ => p.account_names(),
    };
    for name in names {
        match d.find_user(&name).await? {
            None => tracing::info!(account = %name, "already gone"),
            Some(u) if !ours(u.description.as_deref()) => {
                tracing::warn!(account = %name, "not created by this resource; left in place")
            }
            Some(u) => {
                let release = release(u.description.as_deref(), id, computed);
                if release != Release::Remove {
                    if let Some(to) = kept("account", &name, &release) {
                        d.set_description(&u, &to.mark(u.description.as_deref().unwrap_or("")))
                            .await?;
                    }
                    continue;
                }
                match p.on_delete {
                    OnDelete::Delete => {
                        d.delete_user(&u).await?;
                        tracing::info!(account = %name, "deleted");
                    }
                    OnDelete::Disable => {
                        d.disable(&u).await?;
                        if let Some(g) = &group {
                            d.remove_member(g, &u).await?;
                        }
                        tracing::info!(account = %name, "disabled");
                    }
                }
            }
        }
    }
    if let Some(g) = group
        && ours(g.description.as_deref())
    {
        let release = release(g.description.as_deref(), id, computed);
        if release == Release::Remove {
            if p.on_delete == OnDelete::Delete {
                d.delete_group(&g).await?;
                tracing::info!(group = %g.sam_account_name, "deleted");
            }
        } else if let Some(to) = kept("group", &g.sam_account_name, &release) {
            d.set_group_description(&g, &to.mark(g.description.as_deref().unwrap_or("")))
                .await?;
        }
    }
    Ok(())
}

impl CustomResource for AdServiceAccount {
    type Properties = Properties;
    type Error = Error;

    fn physical_id(&self, request: &Request<Properties>) -> String {
        let p = &request.properties;
        format!("{}/{}", p.domain(), p.account_names().join("+"))
    }

    async fn create(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        request.properties.validate()?;
        let ctx = self.context(request, true).await?;
        let dir = self.connect(&request.properties).await?;
        with_dir!(&dir, d => create_or_update(d, &ctx, None).await)
    }

    async fn update(
        &self,
        request: &Request<Properties>,
        old: &Properties,
    ) -> Result<Outcome, Error> {
        request.properties.validate()?;
        let changed = request.properties.password_changed_from(old);
        let ctx = self.context(request, changed).await?;
        let dir = self.connect(&request.properties).await?;
        with_dir!(&dir, d => create_or_update(d, &ctx, Some(old)).await)
    }

    async fn delete(&self, request: &Request<Properties>) -> Result<(), Error> {
        let p = &request.properties;
        // Only what reaching the directory needs: a rule added to Create since this resource
        // was made must not stop its Delete.
        p.validate_connection()?;
        let dir = self.connect(p).await?;
        let marker = marker(&request.owner());
        let computed = self.physical_id(request);
        let id = request
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| computed.clone());
        with_dir!(&dir, d => remove(d, p, &marker, &id, &computed).await)
    }

    /// An OnDelete this version cannot read disables rather than deletes; without the Group
    /// the Delete could not remove a group it made.
    fn on_unreadable(&self, property: &str) -> Unreadable {
        match property {
            "OnDelete" => Unreadable::Use(Value::String("disable".into())),
            "Group" => Unreadable::Refuse,
            _ => Unreadable::LeaveOut,
        }
    }

    /// The id is `<domain>/<account>[+<account>]`: enough to find the accounts. The password
    /// source (PasswordParameter or PasswordSecretId) is not needed: Delete never reads it.
    fn recover_properties(&self, physical_id: &str, properties: &mut Map<String, Value>) {
        let Some((domain, names)) = physical_id.split_once('/') else {
            return;
        };
        let text = |v: &str| Value::String(v.to_owned());
        properties.entry("Domain").or_insert_with(|| text(domain));
        if !properties.contains_key("AccountName") {
            let names: Vec<&str> = names.split('+').collect();
            match names.as_slice() {
                [one] => {
                    properties.insert("AccountName".into(), text(one));
                    properties.insert("Alternating".into(), Value::Bool(false));
                }
                [a, b] if a.len() == b.len() && a.ends_with("-a") && b.ends_with("-b") => {
                    properties.insert("AccountName".into(), text(&a[..a.len() - 2]));
                    properties.insert("Alternating".into(), Value::Bool(true));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The secret's read against `aws-smithy-mocks` for what moto cannot show (an access
    //! denied, a KMS failure, the stage asked for); the whole path runs against moto and Samba
    //! in tests/test_ad_service_account.py.

    use super::*;
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_sdk_secretsmanager::primitives::Blob;
    use aws_sdk_secretsmanager::types::error::{DecryptionFailure, ResourceNotFoundException};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    const ID: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:web-AbCdEf";

    fn resource(secrets: aws_sdk_secretsmanager::Client) -> AdServiceAccount {
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        AdServiceAccount {
            secrets,
            ..AdServiceAccount::new(&sdk)
        }
    }

    fn properties(extra: serde_json::Value) -> Properties {
        let mut v = serde_json::json!({
            "Domain": "Example.Test", "AccountName": "svc-web", "Alternating": true,
            "PasswordSecretId": ID, "Server": "ldaps://127.0.0.1",
            "OrganizationalUnit": "OU=fargate-smb,DC=example,DC=test", "AdminSecretId": "admin"
        });
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn the_secret_is_read_at_awscurrent_by_name() {
        let get = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
            .match_requests(|r| r.secret_id() == Some(ID) && r.version_stage() == Some("AWSCURRENT"))
            .then_output(|| {
                GetSecretValueOutput::builder()
                    .secret_string(r#"{"username":"EXAMPLE\\svc-web-b","password":"Pw-1","share":"\\\\fs\\share"}"#)
                    .build()
            });
        let r = resource(mock_client!(aws_sdk_secretsmanager, [&get]));
        let c = r.service_secret(ID).await.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            (r"EXAMPLE\svc-web-b", "Pw-1")
        );
        assert_eq!(get.num_calls(), 1);
    }

    #[tokio::test]
    async fn each_read_failure_names_the_secret_the_property_and_the_fix() {
        let denied = || {
            GetSecretValueError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("User: arn:aws:sts::123456789012:assumed-role/fn is not authorized")
                    .build(),
            )
        };
        let cases: Vec<(aws_smithy_mocks::Rule, &[&str])> = vec![
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_error(|| {
                    GetSecretValueError::ResourceNotFoundException(
                        ResourceNotFoundException::builder()
                            .message("Secrets Manager can't find the specified secret.")
                            .build(),
                    )
                }),
                &["does not exist", "fix PasswordSecretId"],
            ),
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_error(denied),
                &[
                    "access denied",
                    "secretsmanager:GetSecretValue",
                    "kms:Decrypt",
                ],
            ),
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_error(|| {
                    GetSecretValueError::DecryptionFailure(
                        DecryptionFailure::builder().message("KMS said no").build(),
                    )
                }),
                &["could not decrypt", "kms:Decrypt"],
            ),
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(|| {
                    GetSecretValueOutput::builder()
                        .secret_binary(Blob::new(b"Hidden-1".to_vec()))
                        .build()
                }),
                &["is binary (SecretBinary)", service_credential::SHAPE],
            ),
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value)
                    .then_output(|| GetSecretValueOutput::builder().secret_string("").build()),
                &["is empty", service_credential::SHAPE],
            ),
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(|| {
                    GetSecretValueOutput::builder()
                        .secret_string(r#"{"username":"EXAMPLE\\svc-web-a","pass":"Hidden-1"}"#)
                        .build()
                }),
                &["the key \"password\" is missing", service_credential::SHAPE],
            ),
            (
                mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(|| {
                    GetSecretValueOutput::builder()
                        .secret_string("Hidden-1")
                        .build()
                }),
                &["is not JSON"],
            ),
        ];
        for (rule, expected) in cases {
            let r = resource(mock_client!(
                aws_sdk_secretsmanager,
                RuleMode::MatchAny,
                [&rule]
            ));
            let e = r.service_secret(ID).await.unwrap_err().to_string();
            assert!(e.contains(ID) && e.contains("(PasswordSecretId)"), "{e}");
            for x in expected {
                assert!(e.contains(x), "{x:?} not in {e}");
            }
            assert!(!e.contains("Hidden-1"), "{e}");
        }
    }

    /// An answer the SDK cannot parse: its Debug form (which `DisplayErrorContext` appends)
    /// carries the raw body, here the secret's value.
    #[tokio::test]
    async fn an_unreadable_answer_shows_no_value() {
        let garbled =
            mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_http_response(|| {
                aws_sdk_secretsmanager::config::http::HttpResponse::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(200).unwrap(),
                    aws_smithy_types::body::SdkBody::from(
                        r#"{"SecretString": "{\"password\": \"Hidden-1\"}", "VersionStages": 7}"#,
                    ),
                )
            });
        let r = resource(mock_client!(aws_sdk_secretsmanager, [&garbled]));
        let e = r.service_secret(ID).await.unwrap_err().to_string();
        assert!(e.contains(ID) && e.contains("failed to parse"), "{e}");
        assert!(!e.contains("Hidden-1"), "{e}");
    }

    #[test]
    fn the_active_account_is_the_secret_s_username() {
        let p = properties(serde_json::json!({}));
        let names = p.account_names();
        for (username, active) in [
            (r"EXAMPLE\svc-web-a", "svc-web-a"),
            (r"example\SVC-WEB-B", "svc-web-b"),
            ("svc-web-b@EXAMPLE.test", "svc-web-b"),
        ] {
            assert_eq!(
                active_in_secret(&p, &names, ID, username).unwrap(),
                active,
                "{username}"
            );
        }
        let p = properties(serde_json::json!({"NetbiosName": "CORP"}));
        assert_eq!(
            active_in_secret(&p, &names, ID, r"corp\svc-web-a").unwrap(),
            "svc-web-a"
        );
        for username in [
            r"EXAMPLE\svc-web-a",
            r"example.test\svc-web-a",
            "svc-web-a@corp",
            "svc-web-a@other.test",
        ] {
            let e = active_in_secret(&p, &names, ID, username).unwrap_err();
            assert!(
                matches!(e, Error::SecretOtherDomain { .. }),
                "{username}: {e}"
            );
            let e = e.to_string();
            assert!(
                e.contains(ID)
                    && e.contains(r"CORP\<account>")
                    && e.contains("<account>@example.test"),
                "{e}"
            );
        }
        let e = active_in_secret(&p, &names, ID, r"CORP\svc*web-a").unwrap_err();
        assert!(matches!(e, Error::SecretShape { .. }), "{e}");
        assert!(
            e.to_string().contains(r#"its "username" names no account"#),
            "{e}"
        );
        for username in [r"CORP\svc-web", r"CORP\svc-api-a", r"CORP\svc-web-c"] {
            let e = active_in_secret(&p, &names, ID, username).unwrap_err();
            assert!(
                matches!(e, Error::SecretActiveUnknown { .. }),
                "{username}: {e}"
            );
            let e = e.to_string();
            assert!(
                e.contains(ID)
                    && e.contains("PasswordSecretId")
                    && e.contains("svc-web-a, svc-web-b"),
                "{e}"
            );
        }
    }
}
