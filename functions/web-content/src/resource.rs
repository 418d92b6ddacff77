//! Create, update and delete: connect to the share as the admin, run the copy, report.

use crate::properties::{Checked, Properties};
use admin_credential::AdminCredentials;
use aws_config::SdkConfig;
use content_copy::{CopyError, Options, Probe, ProbeError, S3Source, Summary, Target};
use custom_resource::{CustomResource, Invalid, Outcome, Request};
use ownership::{Ownership, Release};
use serde_json::{Map, Value};
use share_target::TargetError;
use smb_share::{Share, ShareError};
use std::time::Duration;

/// Copies in all when the SMB connection drops during one: the first and two over a new
/// connection. A link that keeps dropping fails the request (CloudFormation then rolls back).
const LINK_ATTEMPTS: u32 = 3;

/// Bound on connecting and on each SMB request.
const SMB_TIMEOUT: Duration = Duration::from_secs(20);

/// How many rejected or failed keys a failure reason lists (the response must stay under
/// 4 KiB; the log has them all).
const LISTED: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid property {0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Keys rejected or files that failed; everything else was copied.
    #[error("{0}")]
    Incomplete(String),
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Aws(#[from] aws_env::ConfigError),
}

/// The resource, with its AWS clients built once per container. The SMB sessions are opened per
/// request: a Lambda container may sit idle longer than a file server keeps a session.
#[derive(Debug)]
pub struct WebContent {
    s3: S3Source,
    admin: AdminCredentials,
    max_memory_bytes: u64,
    tuning: Tuning,
}

/// Settings of the function (its environment) rather than of a resource.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// `FARGATE_SMB_TEMP_MAX_AGE_SECONDS`: temporary files older than this are a killed
    /// invocation's leftovers. Default, and least, [`content_copy::DEFAULT_TEMP_MAX_AGE`]
    /// (Lambda's longest timeout plus clock skew): the handler is not told its own deadline at the start, and a
    /// bound that holds for any configured timeout needs no coupling to the template.
    pub temp_max_age: Duration,
    /// `FARGATE_SMB_RENAME_ATTEMPTS` and `FARGATE_SMB_RENAME_PAUSE_MS` (first pause, doubling
    /// to 4 s): retries of a rename refused because a reader holds a file open, their pauses
    /// cut to [`content_copy::MAX_RENAME_WAIT`] in all.
    pub rename_retry: content_copy::Retry,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            temp_max_age: content_copy::DEFAULT_TEMP_MAX_AGE,
            rename_retry: content_copy::Retry::default(),
        }
    }
}

impl Tuning {
    /// From the environment; a value that does not parse is ignored with a warning.
    pub fn from_env() -> Self {
        let number = |name: &str| -> Option<u64> {
            let text = std::env::var(name).ok()?;
            match text.trim().parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(variable = name, value = %text, "not a whole number; the default is used");
                    None
                }
            }
        };
        let mut t = Self::default();
        if let Some(s) = number("FARGATE_SMB_TEMP_MAX_AGE_SECONDS") {
            t.temp_max_age = Duration::from_secs(s);
        }
        if let Some(n) = number("FARGATE_SMB_RENAME_ATTEMPTS") {
            t.rename_retry.attempts = n.clamp(1, 1000) as u32;
        }
        if let Some(ms) = number("FARGATE_SMB_RENAME_PAUSE_MS") {
            t.rename_retry.first_pause = Duration::from_millis(ms);
        }
        t.bounded()
    }

    /// Within the bounds that keep the function safe, each cut logged: a temporary-file age
    /// below [`content_copy::MIN_TEMP_MAX_AGE`] would sweep another invocation's live temporary
    /// files, and rename retries pausing more than [`content_copy::MAX_RENAME_WAIT`] in all
    /// would let one held file run the invocation into its timeout.
    pub fn bounded(mut self) -> Self {
        if self.temp_max_age < content_copy::MIN_TEMP_MAX_AGE {
            tracing::warn!(
                variable = "FARGATE_SMB_TEMP_MAX_AGE_SECONDS",
                asked = self.temp_max_age.as_secs(),
                used = content_copy::MIN_TEMP_MAX_AGE.as_secs(),
                "below Lambda's longest timeout plus clock skew: a live invocation's temporary file could be removed; the least safe value is used"
            );
            self.temp_max_age = content_copy::MIN_TEMP_MAX_AGE;
        }
        let asked = self.rename_retry.attempts;
        self.rename_retry = content_copy::bounded_retry(self.rename_retry);
        if self.rename_retry.attempts < asked {
            tracing::warn!(
                variable = "FARGATE_SMB_RENAME_ATTEMPTS",
                asked,
                used = self.rename_retry.attempts,
                max_wait_s = content_copy::MAX_RENAME_WAIT.as_secs(),
                "the rename retries would pause longer than the bound; fewer attempts are used"
            );
        }
        self
    }
}

impl WebContent {
    pub async fn from_env() -> Result<Self, InitError> {
        let sdk = aws_env::load().await?;
        // Lambda tells the process its memory size; keep half of it for file data in flight.
        let memory_mib = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()
            .and_then(|m| m.trim().parse::<u64>().ok())
            .unwrap_or(512);
        let mut me = Self::new(&sdk, (memory_mib / 2).max(32) * 1024 * 1024);
        me.tuning = Tuning::from_env();
        Ok(me)
    }

    pub fn new(sdk: &SdkConfig, max_memory_bytes: u64) -> Self {
        Self {
            s3: S3Source::new(sdk),
            admin: AdminCredentials::new(sdk),
            max_memory_bytes,
            tuning: Tuning::default(),
        }
    }

    async fn connect(&self, c: &Checked) -> Result<Share, Error> {
        Ok(c.target.connect(&self.admin, SMB_TIMEOUT).await?)
    }

    /// `count` more sessions to the share, opened at once. One that fails is left out with a
    /// warning: the copy goes on over those that connected (the first one did).
    async fn more_sessions(&self, c: &Checked, count: usize) -> Vec<Share> {
        let opened = futures_util::future::join_all(
            (0..count).map(|_| c.target.connect(&self.admin, SMB_TIMEOUT)),
        )
        .await;
        opened
            .into_iter()
            .filter_map(|r| {
                r.map_err(|e| tracing::warn!(error = %e, "could not open another SMB session; copying over fewer"))
                    .ok()
            })
            .collect()
    }

    async fn copy(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        let p = &request.properties;
        let c = p.validate()?;
        let mut share = self.connect(&c).await?;
        // Left by an earlier request's dropped connection, in this container.
        content_copy::remove_left_behind(&share).await;
        let id = self.physical_id(request);
        // Whose content the folder held before: a failed Create may clean up only content that
        // was its own (a replacement's Create must never empty what the old id still serves).
        let before = content_copy::read_manifest(Target {
            share: &share,
            folder: &c.target.folder,
        })
        .await;
        let owner = request.owner();
        let own_before = match &before {
            Ok(None) => true,
            Ok(Some(m)) => {
                m.owner.as_ref().is_none_or(|o| *o == owner)
                    && m.ownership
                        .as_ref()
                        .is_some_and(|o| o.id == id && o.previous.is_none())
            }
            Err(_) => false,
        };
        let mut options = Options::new(&c.bucket, &c.prefix);
        options.owner_id = Some(id.clone());
        // Only a replaced id that names this folder shares its content.
        options.replacing = request
            .replacing
            .clone()
            .filter(|old| share_target::same_target(old, &id));
        options.in_place = request.in_place_update();
        options.owner = Some(owner);
        options.content_version = p.content_version.clone();
        options.prune = p.prune();
        options.parallelism = p.parallelism();
        options.max_memory_bytes = self.max_memory_bytes;
        options.temp_max_age = self.tuning.temp_max_age;
        options.rename_retry = self.tuning.rename_retry.clone();
        // A connection that drops halfway (a file server failover, a reset) fails what was in
        // flight; each file went to a temporary name first, so nothing half-written is under a
        // final name. Over a new connection the copy goes on: unchanged files (the manifest's
        // checkpoints) are skipped, the rest copied again.
        let mut attempt = 1;
        let mut reconnect_failed = None;
        let result = loop {
            let extra = self.more_sessions(&c, p.sessions().saturating_sub(1)).await;
            let more: Vec<&Share> = extra.iter().collect();
            let target = Target {
                share: &share,
                folder: &c.target.folder,
            };
            let result = content_copy::copy_prefix_on(&self.s3, target, &more, &options).await;
            drop(more);
            for s in extra {
                s.close().await;
            }
            let lost = match &result {
                Ok(summary) => summary.link_lost(),
                Err(e) => e.is_link_lost(),
            };
            if !lost || attempt >= LINK_ATTEMPTS {
                break result;
            }
            tracing::warn!(
                attempt,
                attempts = LINK_ATTEMPTS,
                "the SMB connection was lost during the copy: reconnecting to copy the rest (unchanged files are skipped)"
            );
            attempt += 1;
            match self.connect(&c).await {
                Ok(fresh) => {
                    std::mem::replace(&mut share, fresh).close().await;
                    content_copy::remove_left_behind(&share).await;
                }
                // The clean-up below still runs (and tries to connect once more).
                Err(e) => {
                    reconnect_failed = Some(e);
                    break result;
                }
            }
        };
        let target = Target {
            share: &share,
            folder: &c.target.folder,
        };
        let result = match (reconnect_failed, result) {
            (Some(e), _) => Err(e),
            (None, Ok(summary)) => judge(p, &c, summary),
            (None, Err(e)) => Err(e.into()),
        };
        // The health probe goes last, once the content is in place: the probe says "this folder
        // serves the site", and a task must not pass its health check (and take users) on a
        // folder whose copy has not finished or failed. A failed request writes none; one that
        // fails writing it fails like a failed copy (a Create then cleans up below).
        // `HealthProbe: false` writes none (and leaves one that is there: the health checks of
        // whoever turned it off may still read it).
        let result = match result {
            Ok(outcome) if p.health_probe() => self
                .probe(target, &c)
                .await
                .map(|path| outcome.with("HealthProbePath", path)),
            other => other,
        };
        // The clean-up below needs a live connection; the lost one refuses every request at once.
        let hands_back = matches!(&before, Ok(Some(_)));
        let removes = p.remove_on_delete() && own_before;
        if result.is_err()
            && !request.in_place_update()
            && (hands_back || removes)
            && share.is_lost()
        {
            match self.connect(&c).await {
                Ok(fresh) => {
                    std::mem::replace(&mut share, fresh).close().await;
                    content_copy::remove_left_behind(&share).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not reconnect to clean up after the failed copy")
                }
            }
        }
        let target = Target {
            share: &share,
            folder: &c.target.folder,
        };
        // A Create (or a replacement's) that fails must leave the content to the owner it had:
        // CloudFormation keeps that one and never deletes this one.
        if result.is_err()
            && !request.in_place_update()
            && let Ok(Some(was)) = &before
        {
            hand_back(target, was).await;
        }
        // A Create that fails is never deleted by CloudFormation (the runtime answers the
        // rollback's Delete itself), so with RemoveOnDelete it cleans up here, as Delete would,
        // what it copied into a folder that was not another id's.
        if result.is_err() && !request.in_place_update() && p.remove_on_delete() && own_before {
            match remove_content(target, p.parallelism()).await {
                Ok(r) if !r.failed.is_empty() => tracing::error!(
                    removed = r.removed,
                    failed = r.failed.len(),
                    "could not remove all of the failed Create's content"
                ),
                Ok(r) => tracing::info!(
                    removed = r.removed,
                    "the failed Create's content was removed (RemoveOnDelete)"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "could not remove the failed Create's content")
                }
            }
        }
        share.close().await;
        result
    }

    /// Write the health probe (or find it in place); its UNC path.
    async fn probe(&self, target: Target<'_>, c: &Checked) -> Result<String, Error> {
        let written = content_copy::write_health_probe(target, &self.tuning.rename_retry).await?;
        let path = content_paths::join(&c.target.share, &target.health_probe_path());
        match written {
            Probe::Written => tracing::info!(path = %path, "health probe written"),
            Probe::InPlace => tracing::info!(path = %path, "health probe already in place"),
        }
        Ok(path)
    }
}

/// Remove what this resource put in the folder: the health probe first, then the files the
/// manifest lists (and the manifest). The probe goes whenever the content goes, never otherwise
/// — a probe left over a folder emptied of its site would keep a task healthy that serves 404s.
/// First, so that if its removal fails nothing else is gone yet and the manifest still leads a
/// repeated Delete here; the service that reads it is gone by now (the template's WebService
/// depends on WebContent, so CloudFormation deletes it first).
async fn remove_content(
    target: Target<'_>,
    parallelism: usize,
) -> Result<content_copy::Removal, Error> {
    if content_copy::remove_health_probe(target).await? {
        tracing::info!(path = %target.health_probe_path(), "health probe removed");
    }
    Ok(content_copy::remove_copied(target, parallelism).await?)
}

/// SUCCESS with the counts, or FAILED saying what was not copied and what to do.
fn judge(p: &Properties, c: &Checked, s: Summary) -> Result<Outcome, Error> {
    let source = format!("s3://{}/{}", c.bucket, c.prefix);
    let mut problems = Vec::new();
    if !s.failed.is_empty() {
        problems.push(format!(
            "{} object(s) of {source} could not be copied (run the update again to retry them; unchanged files are skipped): {}",
            s.failed.len(),
            listing(s.failed.iter().map(|f| format!("{:?}: {}", f.key, f.error)))
        ));
    }
    if !s.rejected.is_empty() && p.fail_on_rejected() {
        problems.push(format!(
            "{} key(s) of {source} cannot be file names on a Windows share and were not copied \
             (rename them in the bucket, or set FailOnRejectedKeys: false to copy the rest and only count them): {}",
            s.rejected.len(),
            listing(s.rejected.iter().map(|r| format!("{:?}: {}", r.key, r.reason)))
        ));
    }
    if !problems.is_empty() {
        return Err(Error::Incomplete(format!(
            "{} ({} copied, {} unchanged, {} removed)",
            problems.join("; "),
            s.copied,
            s.skipped,
            s.removed
        )));
    }
    let unc = |relative: &str| content_paths::join(&c.target.share, relative);
    Ok(Outcome::new()
        .with("Copied", s.copied.to_string())
        .with("Skipped", s.skipped.to_string())
        .with("Removed", s.removed.to_string())
        .with("Rejected", s.rejected.len().to_string())
        .with("Bytes", s.bytes.to_string())
        .with("Path", unc(&c.target.folder))
        .with("ManifestPath", unc(&s.manifest_path)))
}

fn listing(items: impl ExactSizeIterator<Item = String>) -> String {
    let total = items.len();
    let mut shown: Vec<String> = items.take(LISTED).collect();
    if total > LISTED {
        shown.push(format!("and {} more (see the log)", total - LISTED));
    }
    shown.join("; ")
}

impl CustomResource for WebContent {
    type Properties = Properties;
    type Error = Error;

    fn physical_id(&self, request: &Request<Properties>) -> String {
        request.properties.target()
    }

    async fn create(&self, request: &Request<Properties>) -> Result<Outcome, Error> {
        self.copy(request).await
    }

    async fn update(
        &self,
        request: &Request<Properties>,
        old: &Properties,
    ) -> Result<Outcome, Error> {
        if request.properties.content_version != old.content_version {
            tracing::info!(
                old = old.content_version.as_deref().unwrap_or(""),
                new = request.properties.content_version.as_deref().unwrap_or(""),
                "ContentVersion changed: every object is copied again"
            );
        }
        self.copy(request).await
    }

    async fn delete(&self, request: &Request<Properties>) -> Result<(), Error> {
        let p = &request.properties;
        if !p.remove_on_delete() {
            tracing::info!(target = %p.target(), "RemoveOnDelete is not set: the content stays on the share");
            return Ok(());
        }
        // Only the target matters to Delete: what to remove is in the manifest.
        let target = p.validate_target()?;
        let share = match target.connect(&self.admin, SMB_TIMEOUT).await {
            Ok(s) => s,
            // The share itself is gone: so is everything this resource wrote.
            Err(TargetError::Share(ShareError::ShareNotFound { .. })) => {
                tracing::info!(share = %target.share, "the share no longer exists: nothing to remove");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let computed = self.physical_id(request);
        let id = request
            .physical_resource_id
            .clone()
            .unwrap_or_else(|| computed.clone());
        let folder = Target {
            share: &share,
            folder: &target.folder,
        };
        let result = remove_owned(folder, &request.owner(), &id, &computed, p.parallelism()).await;
        share.close().await;
        result
    }

    /// The id is `\\server\share[\folder]`: the share and the folder a Delete needs.
    fn recover_properties(&self, physical_id: &str, properties: &mut Map<String, Value>) {
        share_target::recover_from_id(physical_id, properties);
        // Not read by Delete.
        properties
            .entry("Bucket")
            .or_insert_with(|| Value::String(String::new()));
    }
}

/// After a failed Create: the manifest's owner as it was before, if the copy recorded another.
async fn hand_back(target: Target<'_>, was: &content_copy::Manifest) {
    let Ok(Some(now)) = content_copy::read_manifest(target).await else {
        return;
    };
    if now.ownership == was.ownership && now.owner == was.owner {
        return;
    }
    // Only the head changes, under the lock: the records as read above may miss what another
    // writer saved since, and rewriting them exactly would drop those.
    let result =
        match content_copy::set_owner(target, was.ownership.clone(), was.owner.clone()).await {
            Ok(false) => {
                // A single-file manifest (never written by this version's copies): rewritten whole.
                let restored = content_copy::Manifest {
                    ownership: was.ownership.clone(),
                    owner: was.owner.clone(),
                    ..now
                };
                content_copy::write_manifest(target, &restored).await
            }
            other => other.map(|_| ()),
        };
    match result {
        Ok(()) => {
            tracing::info!(folder = %target.folder, "the failed Create left the content to its previous owner")
        }
        Err(e) => {
            tracing::error!(folder = %target.folder, error = %e, "could not give the content back to its previous owner")
        }
    }
}

/// RemoveOnDelete: remove the files the manifest lists, if this id still owns them.
async fn remove_owned(
    target: Target<'_>,
    owner: &str,
    id: &str,
    computed: &str,
    parallelism: usize,
) -> Result<(), Error> {
    let Some(manifest) = content_copy::read_manifest(target).await? else {
        tracing::info!(folder = %target.folder, "no manifest: nothing of ours to remove");
        return Ok(());
    };
    if let Some(other) = manifest.owner.as_ref().filter(|o| *o != owner) {
        tracing::info!(folder = %target.folder, owner = %other, "the content belongs to another resource: left in place");
        return Ok(());
    }
    match Ownership::release(manifest.ownership.as_ref(), id, computed) {
        Release::Remove => {}
        Release::Superseded { to } | Release::HandBack { to } => {
            tracing::info!(
                folder = %target.folder,
                owner = %to.id,
                "the content belongs to the resource that replaced this one (or that this one replaced, on \
                 rollback): left in place"
            );
            // Only the head, under the lock (see `hand_back`).
            if !content_copy::set_owner(target, Some(to.clone()), manifest.owner.clone()).await? {
                let kept = content_copy::Manifest {
                    ownership: Some(to),
                    ..manifest
                };
                content_copy::write_manifest(target, &kept).await?;
            }
            return Ok(());
        }
        Release::NotOwned { owner } => {
            tracing::info!(folder = %target.folder, owner = %owner, "the content belongs to another physical id: left in place");
            return Ok(());
        }
    }
    let removal = remove_content(target, parallelism).await?;
    if !removal.failed.is_empty() {
        return Err(Error::Incomplete(format!(
            "{} file(s) this resource copied could not be removed ({} were; the manifest lists the rest, so \
             deleting again retries them): {}",
            removal.failed.len(),
            removal.removed,
            listing(
                removal
                    .failed
                    .iter()
                    .map(|f| format!("{:?}: {}", f.key, f.error))
            )
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use content_copy::{Failed, Rejected};
    use serde_json::json;

    #[test]
    fn tuning_is_cut_to_safe_bounds() {
        let t = Tuning {
            temp_max_age: Duration::from_secs(60),
            rename_retry: content_copy::Retry {
                attempts: 1000,
                ..content_copy::Retry::default()
            },
        }
        .bounded();
        assert_eq!(t.temp_max_age, content_copy::MIN_TEMP_MAX_AGE);
        assert!(t.rename_retry.total_pause() <= content_copy::MAX_RENAME_WAIT);
        assert!(t.rename_retry.attempts > Tuning::default().rename_retry.attempts);
        // The defaults are within the bounds and kept as they are.
        let d = Tuning::default().bounded();
        assert_eq!(d.rename_retry, content_copy::Retry::default());
        assert_eq!(d.temp_max_age, content_copy::DEFAULT_TEMP_MAX_AGE);
        let none = content_copy::Retry {
            attempts: 0,
            ..content_copy::Retry::default()
        };
        assert_eq!(content_copy::bounded_retry(none).attempts, 1);
    }

    fn props(extra: serde_json::Value) -> Properties {
        let mut v = json!({
            "ShareUnc": r"\\fs\share", "Folder": "web", "Bucket": "site", "Prefix": "v1",
            "AdminUsername": r"EX\admin", "AdminPasswordParameter": "/admin"
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn summary() -> Summary {
        Summary {
            copied: 3,
            skipped: 2,
            bytes: 42,
            manifest_path: content_copy::manifest::manifest_path("web"),
            rejected: vec![Rejected {
                key: "v1/../x".into(),
                rule: "dot-segment",
                reason: "\"..\" segment (a relative folder reference)".into(),
            }],
            ..Summary::default()
        }
    }

    #[test]
    fn rejected_keys_fail_by_default_naming_each_key_and_the_fix() {
        let p = props(json!({}));
        let c = p.validate().unwrap();
        let e = judge(&p, &c, summary()).unwrap_err().to_string();
        assert!(e.contains("\"v1/../x\": \"..\" segment"), "{e}");
        assert!(e.contains("FailOnRejectedKeys: false"), "{e}");
        assert!(e.contains("3 copied, 2 unchanged"), "{e}");
    }

    #[test]
    fn rejected_keys_only_counted_when_asked() {
        let p = props(json!({"FailOnRejectedKeys": "false"}));
        let c = p.validate().unwrap();
        let out = judge(&p, &c, summary()).unwrap();
        assert_eq!(out.data["Rejected"], "1");
        assert_eq!(out.data["Copied"], "3");
        assert_eq!(out.data["Skipped"], "2");
        assert_eq!(out.data["Bytes"], "42");
        assert_eq!(out.data["Path"], r"\\fs\share\web");
        // Beside the ACL records at the share root, never in the served folder.
        assert_eq!(
            out.data["ManifestPath"],
            r"\\fs\share\.fargate-smb\content\a68d11e83b8b5822836dbc795711a939.json"
        );
    }

    #[test]
    fn failures_always_fail_and_long_lists_are_cut() {
        let p = props(json!({"FailOnRejectedKeys": "false"}));
        let c = p.validate().unwrap();
        let mut s = summary();
        s.failed = (0..20)
            .map(|i| Failed {
                key: format!("v1/f{i}"),
                error: "denied".into(),
                link_lost: false,
            })
            .collect();
        let e = judge(&p, &c, s).unwrap_err().to_string();
        assert!(
            e.starts_with("20 object(s) of s3://site/v1/ could not be copied"),
            "{e}"
        );
        assert!(
            e.contains("\"v1/f11\": denied") && !e.contains("\"v1/f12\""),
            "{e}"
        );
        assert!(e.contains("and 8 more"), "{e}");
    }
}
