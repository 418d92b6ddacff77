//! Create, update and delete: apply the grants, record what was there, verify by read-back,
//! undo exactly on Delete.

use crate::properties::{Checked, Mode, Properties};
use crate::record::{BOOKKEEPING_FOLDER, RECORD_FOLDER, Record, RecordedAce, record_path};
use admin_credential::AdminCredentials;
use aws_config::SdkConfig;
use custom_resource::{CustomResource, Invalid, Outcome, Request};
use ownership::{Before, Ownership, Release};
use serde_json::{Map, Value};
use share_target::TargetError;
use smb_share::{
    Share, ShareError,
    acl::{self, Ace},
};
use std::time::Duration;

/// Bound on connecting and on each SMB request.
const SMB_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid property {0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(
        "the record {path} on the share is unreadable ({detail}): it holds what Delete must restore; repair or \
         remove it by hand (removing it means Delete will leave the folder's permissions as they are)"
    )]
    BadRecord { path: String, detail: String },
    #[error(
        "could not make {path} private to administrators: {source} (it holds the records Delete restores \
         permissions from; give the admin account full control of it, or protect it by hand: no inheritance, full \
         control for SYSTEM, Administrators and the admin account)"
    )]
    Private { path: String, source: ShareError },
    #[error(
        "the permissions read back from {folder} differ from what was written ({detail}): the file server \
         changed or refused part of the DACL"
    )]
    Verify { folder: String, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Aws(#[from] aws_env::ConfigError),
}

/// The resource, with its AWS clients built once per container; the SMB session is per request.
#[derive(Debug)]
pub struct ShareAcl {
    admin: AdminCredentials,
}

impl ShareAcl {
    pub async fn from_env() -> Result<Self, InitError> {
        Ok(Self::new(&aws_env::load().await?))
    }

    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            admin: AdminCredentials::new(sdk),
        }
    }

    /// Create and Update: the folder's DACL becomes what the properties ask, relative to the
    /// recorded original.
    async fn apply(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        let c = request.properties.validate()?;
        let id = self.physical_id(request);
        let share = c.target.connect(&self.admin, SMB_TIMEOUT).await?;
        let result = apply_on(&share, request, &c, &id).await;
        share.close().await;
        result
    }
}

async fn read_record(share: &Share, path: &str) -> Result<Option<Record>, Error> {
    match share.read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::BadRecord {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        Err(ShareError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write the record beside a temporary name, then rename over the old one: a reader sees the
/// old record or the new, never half of one.
async fn write_record(share: &Share, path: &str, record: &Record) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::BadRecord {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    share.create_dir_all(RECORD_FOLDER).await?;
    let temp = format!("{path}.tmp");
    share.write(&temp, &json).await?;
    share.rename(&temp, path, true).await?;
    Ok(())
}

async fn apply_on(
    share: &Share,
    request: &Request<Properties>,
    c: &Checked,
    id: &str,
) -> Result<Outcome, Error> {
    let folder = c.target.folder.as_str();
    if !folder.is_empty() {
        share.create_dir_all(folder).await?;
    }
    // Before a record is read or written: one request when it is private already.
    share
        .ensure_private_folder(BOOKKEEPING_FOLDER)
        .await
        .map_err(|source| Error::Private {
            path: BOOKKEEPING_FOLDER.to_owned(),
            source,
        })?;
    let owner = request.owner();
    let path = record_path(&owner, folder);
    let current = share.security(folder).await?;
    // A record from an earlier attempt (a retried Create, or any Update) keeps the original
    // that was there before this resource's first change.
    let previous = read_record(share, &path).await?;
    let (original_protected, original) = match &previous {
        Some(r) => (r.original_protected, r.original_aces()),
        None => (current.protected, current.aces.clone()),
    };
    let wanted = &c.aces;
    let (dacl, protected, added) = match c.mode {
        Mode::Replace => (acl::canonical(wanted), true, Vec::new()),
        Mode::Merge => {
            // Start from the folder as it is now, minus what this resource added before and no
            // longer grants; after a Replace, from the original it replaced.
            let (base, protected) = match &previous {
                Some(r) if r.mode == Mode::Replace.as_str() => {
                    (original.clone(), original_protected)
                }
                Some(r) => {
                    let dropped: Vec<Ace> = r
                        .added_aces()
                        .into_iter()
                        .filter(|a| !wanted.contains(a))
                        .collect();
                    (
                        acl::remove_exact(&current.aces, &dropped),
                        current.protected,
                    )
                }
                None => (current.aces.clone(), current.protected),
            };
            // Ours are the grants that were not in the original: an identical ACE that was
            // already there is not ours to remove later.
            let added: Vec<Ace> = wanted
                .iter()
                .filter(|w| !acl::contains_explicit(&original, w))
                .cloned()
                .collect();
            (acl::add_exact(&base, wanted), protected, added)
        }
    };
    // The record is keyed by the logical resource and the folder as the share compares it, so
    // a replacement that respells the folder or names the server another way finds this record:
    // it takes the change over, and the replaced id's Delete will leave it alone.
    let claimed = request.claim(
        Before::of(
            previous.is_some(),
            previous.as_ref().and_then(|r| r.ownership.as_ref()),
        ),
        id,
        |old| share_target::same_target(old, id),
    );
    // Until the change is verified the record keeps the owner it had: a replacement's Create
    // that fails half-way (or times out) must leave the folder to the id CloudFormation keeps.
    let ownership = match &previous {
        Some(r) => r.ownership.clone(),
        None => Some(claimed.clone()),
    };
    let record = Record {
        version: 1,
        ownership,
        owner,
        folder: folder.to_owned(),
        mode: c.mode.as_str().to_owned(),
        original_protected,
        original: original.iter().map(RecordedAce::from).collect(),
        added: added.iter().map(RecordedAce::from).collect(),
    };
    // Recorded before the change: a failure in between still leaves the original on record.
    write_record(share, &path, &record).await?;
    let unchanged = protected == current.protected && dacl == current.aces;
    let changed = async {
        if unchanged {
            tracing::info!(folder, "the folder already has exactly these permissions");
        } else {
            share.set_dacl(folder, &dacl, protected).await?;
        }
        let after = share.security(folder).await?;
        verify(folder, &after, wanted, c.mode)?;
        if record.ownership.as_ref() != Some(&claimed) {
            let owned = Record {
                ownership: Some(claimed.clone()),
                ..record.clone()
            };
            write_record(share, &path, &owned).await?;
        }
        Ok::<_, Error>(after)
    }
    .await;
    let after = match changed {
        Ok(after) => after,
        Err(e) => {
            // A Create that fails is never deleted (its Delete carries the create-failed id),
            // and a failed Update is rolled back from what was there: put the folder and the
            // record back as this request found them.
            put_back(share, folder, &current, unchanged, &path, previous.as_ref()).await;
            return Err(e);
        }
    };
    tracing::info!(
        folder,
        mode = c.mode.as_str(),
        aces = after.aces.len(),
        added = added.len(),
        "permissions applied and verified"
    );
    Ok(Outcome::new()
        .with("Folder", c.target.display())
        .with("Mode", c.mode.as_str())
        .with("AceCount", after.aces.len())
        .with("Protected", after.protected)
        .with("RecordPath", path))
}

/// Best effort, after a failed change: the DACL and the record as they were before it.
async fn put_back(
    share: &Share,
    folder: &str,
    before: &smb_share::SecurityInfo,
    unchanged: bool,
    path: &str,
    previous: Option<&Record>,
) {
    if !unchanged && let Err(e) = share.set_dacl(folder, &before.aces, before.protected).await {
        tracing::error!(folder, error = %e, "could not put the folder's permissions back after the failure");
    }
    let restored = match previous {
        Some(r) => write_record(share, path, r).await,
        None => share.remove(path).await.map_err(Error::from),
    };
    if let Err(e) = restored {
        tracing::error!(path, error = %e, "could not put the record back after the failure");
    }
}

/// The read-back carries every grant; under Replace it is protected and carries nothing else
/// explicit.
fn verify(
    folder: &str,
    after: &smb_share::SecurityInfo,
    wanted: &[Ace],
    mode: Mode,
) -> Result<(), Error> {
    let fail = |detail: String| Error::Verify {
        folder: folder.to_owned(),
        detail,
    };
    if !acl::satisfies(&after.aces, wanted) {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !acl::satisfies(&after.aces, std::slice::from_ref(*w)))
            .map(ToString::to_string)
            .collect();
        return Err(fail(format!("missing {}", missing.join(" "))));
    }
    if mode == Mode::Replace {
        if !after.protected {
            return Err(fail("the DACL is not protected from inheritance".into()));
        }
        let extra: Vec<String> = after
            .aces
            .iter()
            .filter(|a| !acl::satisfies(wanted, std::slice::from_ref(*a)))
            .map(ToString::to_string)
            .collect();
        if !extra.is_empty() {
            return Err(fail(format!("unexpected {}", extra.join(" "))));
        }
    }
    Ok(())
}

impl CustomResource for ShareAcl {
    type Properties = Properties;
    type Error = Error;

    fn physical_id(&self, request: &Request<Properties>) -> String {
        request.properties.target_id()
    }

    async fn create(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        self.apply(request).await
    }

    async fn update(
        &self,
        request: &Request<Properties>,
        _old: &Properties,
    ) -> Result<Outcome, Error> {
        // The same folder (another one is a replacement): the record holds the original and
        // what the previous properties added, which is all an in-place change needs.
        self.apply(request).await
    }

    async fn delete(&self, request: &Request<Properties>) -> Result<(), Error> {
        // Only the target matters to Delete: the grants are on record.
        let target = request.properties.validate_target()?;
        let share = match target.connect(&self.admin, SMB_TIMEOUT).await {
            Ok(s) => s,
            Err(TargetError::Share(ShareError::ShareNotFound { .. })) => {
                tracing::info!(share = %target.share, "the share no longer exists: nothing to undo");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let computed = self.physical_id(request);
        let id = request
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| computed.clone());
        let result = undo(&share, request, &target.folder, &id, &computed).await;
        share.close().await;
        result
    }

    /// The id is `\\server\share[\folder]`: the share and the folder a Delete needs.
    fn recover_properties(&self, physical_id: &str, properties: &mut Map<String, Value>) {
        share_target::recover_from_id(physical_id, properties);
        properties
            .entry("Grants")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
}

async fn undo(
    share: &Share,
    request: &Request<Properties>,
    folder: &str,
    id: &str,
    computed: &str,
) -> Result<(), Error> {
    let path = record_path(&request.owner(), folder);
    let Some(record) = read_record(share, &path).await? else {
        tracing::info!(
            folder,
            "no record: this resource never changed the folder, nothing to undo"
        );
        return Ok(());
    };
    match Ownership::release(record.ownership.as_ref(), id, computed) {
        Release::Remove => {}
        Release::Superseded { to } | Release::HandBack { to } => {
            tracing::info!(
                folder,
                owner = %to.id,
                "the permissions belong to the resource that replaced this one (or that this one replaced, \
                 on rollback): left in place"
            );
            let kept = Record {
                ownership: Some(to),
                ..record
            };
            return write_record(share, &path, &kept).await;
        }
        Release::NotOwned { owner } => {
            tracing::info!(folder, owner = %owner, "the permissions belong to another physical id: left in place");
            return Ok(());
        }
    }
    match share.security(folder).await {
        Ok(current) => {
            let (dacl, protected) = if record.mode == Mode::Replace.as_str() {
                (
                    acl::canonical(&record.original_aces()),
                    record.original_protected,
                )
            } else {
                (
                    acl::remove_exact(&current.aces, &record.added_aces()),
                    current.protected,
                )
            };
            if dacl != current.aces || protected != current.protected {
                share.set_dacl(folder, &dacl, protected).await?;
            }
            tracing::info!(folder, mode = %record.mode, "permissions restored");
        }
        Err(ShareError::NotFound { .. }) => {
            tracing::info!(folder, "the folder is gone: nothing to restore");
        }
        Err(e) => return Err(e.into()),
    }
    share.remove(&path).await?;
    Ok(())
}
