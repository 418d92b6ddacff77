//! The health probe: [`HEALTH_PROBE_NAME`] at the top of the content folder, holding exactly
//! [`HEALTH_PROBE_BODY`].
//!
//! The load balancer's health check (and the container's) asks IIS for it through the `/content`
//! virtual directory, which IIS serves from the mapped share: it answers 200 only when IIS runs,
//! the virtual directory is set, the share is mapped and the web app's account can read the
//! folder. `Custom::WebContent` writes it once its copy has succeeded and removes it exactly when
//! it removes the content it copied. The name is reserved ([`crate::manifest::reserved`]), so
//! no object, sync event or reconcile ever replaces or removes it.
//!
//! It is not in the manifest: the manifest lists files copied from objects (what pruning and
//! Delete remove by key), and the probe is no object's.

use crate::manifest::{HEALTH_PROBE_BODY, HEALTH_PROBE_NAME};
use crate::{Target, discard, temp_name};
use smb_share::{Retry, ShareError};

/// What [`write_health_probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It was missing (or held something else) and is written now.
    Written,
    /// It was already there with its content: left as it was.
    InPlace,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "could not write the health probe {path}: {source} (the load balancer's health check asks for this file, so \
         the tasks stay unhealthy until it is there: check that the admin account may create and replace files at the \
         top of the folder and that nothing else, such as a folder, has that name; then run the update again)"
    )]
    Write { path: String, source: ShareError },
    #[error(
        "could not remove the health probe {path}: {source} (nothing else was removed yet; deleting again retries it, \
         or delete the file by hand)"
    )]
    Remove { path: String, source: ShareError },
}

impl Target<'_> {
    /// The probe of this folder, relative to the share root.
    pub fn health_probe_path(&self) -> String {
        self.path(HEALTH_PROBE_NAME)
    }
}

/// Make the probe be there with its content. Idempotent: a probe already right is not touched (a
/// health check may be reading it, and replacing a file a reader holds open is refused on
/// Windows). Otherwise it is written as the copy writes every file, to a temporary name beside
/// it and renamed over it (retried as `retry` says while a reader holds it), so a health check
/// never reads a partial probe.
pub async fn write_health_probe(target: Target<'_>, retry: &Retry) -> Result<Probe, ProbeError> {
    let path = target.health_probe_path();
    match target.share.read(&path).await {
        Ok(body) if body == HEALTH_PROBE_BODY => return Ok(Probe::InPlace),
        Ok(body) => tracing::info!(
            path = %path,
            bytes = body.len(),
            "the health probe holds something else: it is written again"
        ),
        Err(ShareError::NotFound { .. }) => {}
        // A folder of that name, or a file the admin may not read: the write below either fixes
        // it or fails with what is wrong.
        Err(e) => tracing::debug!(path = %path, error = %e, "the health probe could not be read"),
    }
    let temp = target.path(&temp_name(HEALTH_PROBE_NAME));
    let written = async {
        target.share.write(&temp, HEALTH_PROBE_BODY).await?;
        target.share.rename_retrying(&temp, &path, retry).await
    }
    .await;
    match written {
        Ok(_) => Ok(Probe::Written),
        Err(source) => {
            discard(target.share, &temp).await;
            Err(ProbeError::Write { path, source })
        }
    }
}

/// Remove the probe; `Ok(false)` if there was none. A folder of that name is not the probe and
/// is left alone.
pub async fn remove_health_probe(target: Target<'_>) -> Result<bool, ProbeError> {
    let path = target.health_probe_path();
    let remove_error = |source| ProbeError::Remove {
        path: path.clone(),
        source,
    };
    match target.share.stat(&path).await {
        Err(ShareError::NotFound { .. }) => return Ok(false),
        Err(source) => return Err(remove_error(source)),
        Ok(meta) if meta.is_dir => {
            tracing::warn!(path = %path, "a folder has the health probe's name: not ours, left alone");
            return Ok(false);
        }
        Ok(_) => {}
    }
    target.share.remove(&path).await.map_err(remove_error)?;
    Ok(true)
}
