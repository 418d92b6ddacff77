//! Per-path state in DynamoDB: which key owns each file of a target folder and the last event of
//! that key applied to it, so an older event never overwrites newer content, a repeated one
//! changes nothing, and a key that differs from another only in case never removes the other's
//! file.
//!
//! One item per (scope, path): `scope` is the target folder and source ([`crate::Config::scope`]),
//! `objectKey` the file's path as NTFS compares it ([`path_key`]: the folded folder, `|`, the
//! folded name). Attributes: `key` (the S3 key that owns the
//! file), `sequencer` (of that key's last claimed event, normalized so string order is event
//! order; empty when the owner was handed the file without an event), `phase` (`applying` or
//! `done`), `change` (`put`/`delete`), `etag`, `modified` (the file's last write time after the
//! copy, when known), `contenders` (other keys that map to the same file and were refused while
//! the owner lived). Conditional writes make every change atomic across concurrent invocations,
//! which a file on the share could not.
//!
//! The item with the sort key [`CURSOR`] (no `|`, so never a path) holds reconcile's cursor.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};
use std::collections::HashMap;

const SCOPE: &str = "scope";
const SORT: &str = "objectKey";
/// The sort key of reconcile's cursor item.
pub const CURSOR: &str = "#reconcile-cursor";

#[derive(Debug, thiserror::Error)]
#[error("dynamodb:{action} on the table {table} failed: {message}")]
pub struct StateError {
    pub action: &'static str,
    pub table: String,
    pub message: String,
}

/// The sort key of a file: `FOLDER|NAME`, both folded as NTFS compares names
/// ([`content_paths::fold`]), `FOLDER` `\`-separated and empty for the target folder itself. `|`
/// cannot be in a Windows name, so the split is unambiguous and `begins_with(FOLDER|)` is exactly
/// the files of one folder.
pub fn path_key(path: &str) -> String {
    let folded = content_paths::fold(path);
    match folded.rsplit_once('\\') {
        Some((folder, name)) => format!("{folder}|{name}"),
        None => format!("|{folded}"),
    }
}

/// The prefix of every [`path_key`] of files directly in `folder` (folded or not).
pub fn folder_key(folder: &str) -> String {
    format!("{}|", content_paths::fold(folder))
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This event is the newest seen for its key (or a retry of the one being applied), and the
    /// key owns the file (or now does: the path was free): apply it. `previous`: the item as it
    /// was before the claim.
    Claimed { previous: Option<PathState> },
    /// The same event was applied already.
    Duplicate,
    /// A newer event for the key was applied or is being applied.
    Older { applied: String },
    /// Another key owns the file and its object lives (or is being applied): this key was
    /// recorded as a contender, to be handed the file when the owner is deleted. `stored`: the
    /// item as it is.
    Collision { owner: String, stored: PathState },
}

/// What the store holds for a path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathState {
    /// The S3 key that owns the file.
    pub key: String,
    /// Empty when the owner was handed the file (reconcile, a collision hand-over) rather than
    /// claiming it with an event: any event of the owner is newer.
    pub sequencer: String,
    pub done: bool,
    pub change: String,
    pub etag: String,
    /// The file's last write time after the copy (FILETIME), when known.
    pub modified: Option<u64>,
    pub contenders: Vec<String>,
}

impl PathState {
    /// The owner's object was put, and the file is (or is being) written from it.
    pub fn is_put(&self) -> bool {
        self.change == "put"
    }
}

/// Where an interrupted reconcile stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last folder completed, folded ([`content_paths::fold`]), `\`-separated; `None`:
    /// a pass began and stopped before it finished any.
    pub folder: Option<String>,
    /// When the pass began (seconds since the Unix epoch).
    pub started: u64,
}

#[derive(Debug, Clone)]
pub struct StateStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn field(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn conditional<E: ProvideErrorMetadata>(e: &SdkError<E, impl std::fmt::Debug>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// The condition that the item is still as `seen` was read (owner and sequencer), or absent
/// when `seen` is `None`.
fn unchanged(seen: Option<&PathState>) -> (String, Vec<(&'static str, AttributeValue)>) {
    // An item that holds only contenders has no claim: it counts as absent.
    match seen.filter(|st| !st.key.is_empty() || !st.sequencer.is_empty()) {
        Some(st) => (
            "#key = :seenkey AND #seq = :seenseq AND #etag = :seenetag".into(),
            vec![
                (":seenkey", s(st.key.clone())),
                (":seenseq", s(st.sequencer.clone())),
                (":seenetag", s(st.etag.clone())),
            ],
        ),
        None => ("attribute_not_exists(#seq)".into(), Vec::new()),
    }
}

impl StateStore {
    pub fn new(sdk: &SdkConfig, table: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            table: table.into(),
        }
    }

    fn fail<E, R>(&self, action: &'static str, e: SdkError<E, R>) -> StateError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = match (e.code(), e.message()) {
            (Some("ResourceNotFoundException"), _) => {
                "the table does not exist: set STATE_TABLE to the table the template creates".into()
            }
            (Some(code @ ("AccessDeniedException" | "UnrecognizedClientException")), m) => format!(
                "{code}: {}; grant the function's role dynamodb:GetItem, BatchGetItem and UpdateItem on the table",
                m.unwrap_or_default()
            ),
            (Some(code), Some(m)) => format!("{code}: {m}"),
            _ => DisplayErrorContext(&e).to_string(),
        };
        StateError {
            action,
            table: self.table.clone(),
            message,
        }
    }

    fn item_key(scope: &str, sort: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(SCOPE.to_owned(), s(scope)), (SORT.to_owned(), s(sort))])
    }

    /// Claim the file at `path` for event `sequencer` of `key`. It succeeds when no event was
    /// recorded for the path, when `key` owns it and the stored event is older (or is this very
    /// event still `applying`: a retry after a failure or a timeout), or when the owner's object
    /// was deleted and that deletion is done (the path is free). A key other than a live owner
    /// is added to the contenders instead.
    pub async fn claim(
        &self,
        scope: &str,
        path: &str,
        key: &str,
        sequencer: &str,
        change: &str,
        etag: &str,
    ) -> Result<Claim, StateError> {
        // A collision is recorded only while the owner still lives; if the owner's deletion
        // finished in between, the path is free and the claim is tried again. Each retry means
        // the item changed under us: a few suffice.
        for _ in 0..8 {
            match self
                .try_claim(scope, path, key, sequencer, change, etag)
                .await?
            {
                Claim::Collision { owner, stored } if change == "put" => {
                    if self.add_contender(scope, path, key).await? {
                        return Ok(Claim::Collision { owner, stored });
                    }
                }
                // A delete of a key that does not own the file changes nothing here: the key
                // may be a contender still (its later put may have arrived first); the owner's
                // deletion asks S3 (HEAD) before handing the file to any contender.
                other => return Ok(other),
            }
        }
        Err(StateError {
            action: "UpdateItem",
            table: self.table.clone(),
            message: format!(
                "the state of {path:?} kept changing while {key:?} claimed it; retried"
            ),
        })
    }

    async fn try_claim(
        &self,
        scope: &str,
        path: &str,
        key: &str,
        sequencer: &str,
        change: &str,
        etag: &str,
    ) -> Result<Claim, StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .update_expression(
                "SET #key = :key, #seq = :seq, #phase = :applying, #change = :change, #etag = :etag REMOVE #modified",
            )
            .condition_expression(
                "attribute_not_exists(#seq) \
                 OR (#key = :key AND (#seq < :seq OR (#seq = :seq AND #phase = :applying))) \
                 OR (#key <> :key AND :change = :put AND #change = :delete AND #phase = :done)",
            )
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_names("#modified", "modified")
            .expression_attribute_values(":key", s(key))
            .expression_attribute_values(":seq", s(sequencer))
            .expression_attribute_values(":applying", s("applying"))
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":delete", s("delete"))
            .expression_attribute_values(":put", s("put"))
            .expression_attribute_values(":change", s(change))
            .expression_attribute_values(":etag", s(etag))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Claim::Claimed {
                previous: out
                    .attributes()
                    .filter(|a| a.contains_key("sequencer"))
                    .map(path_state),
            }),
            Err(e) if conditional(&e) => {
                let stored = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item(),
                        _ => None,
                    })
                    .map(path_state)
                    .unwrap_or_default();
                if stored.key == key {
                    if stored.sequencer == sequencer {
                        Ok(Claim::Duplicate)
                    } else {
                        Ok(Claim::Older {
                            applied: stored.sequencer,
                        })
                    }
                } else {
                    Ok(Claim::Collision {
                        owner: stored.key.clone(),
                        stored,
                    })
                }
            }
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    /// Record `key` as a contender for `path` while another key owns the file; `false` if the
    /// path is free (the owner's deletion finished) or unclaimed.
    pub async fn contend(&self, scope: &str, path: &str, key: &str) -> Result<bool, StateError> {
        self.add_contender(scope, path, key).await
    }

    /// `false`: the path is free now (the owner's deletion finished) or unclaimed.
    async fn add_contender(&self, scope: &str, path: &str, key: &str) -> Result<bool, StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .update_expression("ADD #contenders :k")
            .condition_expression(
                "attribute_exists(#seq) AND #key <> :key AND NOT (#change = :delete AND #phase = :done)",
            )
            .expression_attribute_names("#contenders", "contenders")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":k", AttributeValue::Ss(vec![key.to_owned()]))
            .expression_attribute_values(":key", s(key))
            .expression_attribute_values(":delete", s("delete"))
            .expression_attribute_values(":done", s("done"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    /// `key` is no longer a contender for `path` (its object was deleted, or it was handed the
    /// file).
    pub async fn remove_contender(
        &self,
        scope: &str,
        path: &str,
        key: &str,
    ) -> Result<(), StateError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .update_expression("DELETE #contenders :k")
            .condition_expression("attribute_exists(#contenders)")
            .expression_attribute_names("#contenders", "contenders")
            .expression_attribute_values(":k", AttributeValue::Ss(vec![key.to_owned()]))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if conditional(&e) {
                    Ok(())
                } else {
                    Err(self.fail("UpdateItem", e))
                }
            })
    }

    /// Whether `path` is still claimed by `sequencer` of `key` (no newer event, no other key
    /// took over).
    ///
    /// The ETag is compared too: reconcile records another version of the same key under the
    /// owner's sequencer (and a removal clears it), and an event in flight must see that.
    pub async fn still_claimed(
        &self,
        scope: &str,
        path: &str,
        key: &str,
        sequencer: &str,
        etag: &str,
    ) -> Result<bool, StateError> {
        Ok(self.get(scope, path).await?.is_some_and(|st| {
            st.key == key
                && st.sequencer == sequencer
                && st.etag.trim_matches('"') == etag.trim_matches('"')
        }))
    }

    /// Mark the claim done, with the file's last write time if the claim wrote it; `false` if
    /// another event took the path over meanwhile, or, with `no_contenders` (a deletion that
    /// removed the file), if a contender was recorded since it looked: it must be handed the
    /// file first.
    ///
    /// `now_put`: the claim ends with the key's object in place (the ETag it holds), whatever
    /// the event was: a delete event that found the key still has a current version (a
    /// versioned bucket), or a key handed the file. The item must say so, or the path would
    /// look free to other keys.
    #[allow(clippy::too_many_arguments)]
    pub async fn done(
        &self,
        scope: &str,
        path: &str,
        key: &str,
        sequencer: &str,
        etag: &str,
        modified: Option<u64>,
        no_contenders: bool,
        now_put: Option<&str>,
    ) -> Result<bool, StateError> {
        let condition = if no_contenders {
            "#key = :key AND #seq = :seq AND #etag = :etag AND attribute_not_exists(#contenders)"
        } else {
            "#key = :key AND #seq = :seq AND #etag = :etag"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .condition_expression(condition)
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":key", s(key))
            .expression_attribute_values(":seq", s(sequencer))
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_values(":etag", s(etag));
        if no_contenders {
            request = request.expression_attribute_names("#contenders", "contenders");
        }
        let mut update = String::from("SET #phase = :done");
        if let Some(current) = now_put {
            update.push_str(", #change = :put, #etag = :current");
            request = request
                .expression_attribute_names("#change", "change")
                .expression_attribute_values(":put", s("put"))
                .expression_attribute_values(":current", s(current));
        }
        if let Some(m) = modified {
            update.push_str(", #modified = :modified");
            request = request
                .expression_attribute_names("#modified", "modified")
                .expression_attribute_values(":modified", AttributeValue::N(m.to_string()));
        }
        request = request.update_expression(update);
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    /// Give the file at `path` to `key` (its object version `etag`), without an event: a
    /// collision's hand-over, or reconcile. Conditional on the item being as `seen` was read
    /// (absent for `None`); `false` if it changed. The new owner's sequencer is empty, so any
    /// event of it is newer; the phase is `applying` until [`Self::done`] with an empty sequencer.
    pub async fn hand_over(
        &self,
        scope: &str,
        path: &str,
        seen: Option<&PathState>,
        key: &str,
        etag: &str,
    ) -> Result<bool, StateError> {
        let (condition, values) = unchanged(seen);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .update_expression(
                "SET #key = :key, #seq = :empty, #phase = :applying, #change = :put, #etag = :etag \
                 REMOVE #modified",
            )
            .condition_expression(condition)
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_names("#modified", "modified")
            .expression_attribute_values(":key", s(key))
            .expression_attribute_values(":empty", s(""))
            .expression_attribute_values(":applying", s("applying"))
            .expression_attribute_values(":put", s("put"))
            .expression_attribute_values(":etag", s(etag));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    /// After reconcile removed the file at `path` (no object maps to it): record the path as
    /// free, unless the item changed since `seen` was read.
    pub async fn freed(
        &self,
        scope: &str,
        path: &str,
        seen: Option<&PathState>,
    ) -> Result<bool, StateError> {
        // An item without a claim (none, or contenders only) has nothing to free; writing it
        // would also leave an expression attribute name unused, which DynamoDB refuses.
        let Some(seen) = seen.filter(|st| !st.key.is_empty() || !st.sequencer.is_empty()) else {
            return Ok(true);
        };
        let (condition, values) = unchanged(Some(seen));
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .update_expression(
                "SET #phase = :done, #change = :delete, #etag = :empty REMOVE #modified",
            )
            .condition_expression(condition)
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#modified", "modified")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":delete", s("delete"))
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_values(":empty", s(""));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    pub async fn get(&self, scope: &str, path: &str) -> Result<Option<PathState>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("GetItem", e))?;
        Ok(out.item().map(path_state))
    }

    /// The state of each of `paths` (at most a page of a listing), by [`path_key`]:
    /// BatchGetItem, 100 keys a request, unprocessed keys asked again.
    pub async fn get_many(
        &self,
        scope: &str,
        paths: &[&str],
    ) -> Result<HashMap<String, PathState>, StateError> {
        let mut out = HashMap::new();
        let mut sorts: Vec<String> = paths.iter().map(|p| path_key(p)).collect();
        sorts.sort();
        sorts.dedup();
        for chunk in sorts.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> =
                chunk.iter().map(|k| Self::item_key(scope, k)).collect();
            let mut rounds = 0;
            while !keys.is_empty() {
                rounds += 1;
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StateError {
                        action: "BatchGetItem",
                        table: self.table.clone(),
                        message: e.to_string(),
                    })?;
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| self.fail("BatchGetItem", e))?;
                for item in answer
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(sort) = field(item, SORT) {
                        out.insert(sort, path_state(item));
                    }
                }
                if let Some(left) = answer
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .filter(|k| !k.is_empty())
                {
                    if rounds >= 8 {
                        return Err(StateError {
                            action: "BatchGetItem",
                            table: self.table.clone(),
                            message: "the table kept returning unprocessed keys (throttled); run reconcile again".into(),
                        });
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50 << rounds)).await;
                    keys = left;
                }
            }
        }
        Ok(out)
    }

    /// After reconcile copied the object version `etag` of `key` to `path`: record `key` as
    /// the owner with that version, unless the item changed since `seen` was read.
    pub async fn reconciled(
        &self,
        scope: &str,
        path: &str,
        seen: Option<&PathState>,
        key: &str,
        etag: &str,
        modified: Option<u64>,
    ) -> Result<bool, StateError> {
        let (condition, values) = unchanged(seen);
        let mut update = String::from(
            "SET #key = :key, #seq = :seq, #phase = :done, #change = :put, #etag = :etag",
        );
        if modified.is_some() {
            update.push_str(", #modified = :modified");
        } else {
            update.push_str(" REMOVE #modified");
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &path_key(path))))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_names("#modified", "modified")
            .expression_attribute_values(":key", s(key))
            // The owner's sequencer is kept when it stays the owner: its older events must
            // still lose. A new owner has none yet.
            .expression_attribute_values(
                ":seq",
                s(seen
                    .filter(|st| st.key == key)
                    .map(|st| st.sequencer.clone())
                    .unwrap_or_default()),
            )
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":put", s("put"))
            .expression_attribute_values(":etag", s(etag));
        if let Some(m) = modified {
            request =
                request.expression_attribute_values(":modified", AttributeValue::N(m.to_string()));
        }
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    pub async fn cursor(&self, scope: &str) -> Result<Option<Cursor>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, CURSOR)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("GetItem", e))?;
        Ok(out.item().and_then(|item| {
            let started = item
                .get("started")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())?;
            Some(Cursor {
                folder: field(item, "folder"),
                started,
            })
        }))
    }

    /// UpdateItem rather than PutItem and DeleteItem: the function's role needs no more than
    /// the claims do.
    pub async fn save_cursor(&self, scope: &str, cursor: &Cursor) -> Result<(), StateError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, CURSOR)))
            .set_update_expression(Some(match cursor.folder {
                Some(_) => "SET #folder = :folder, #started = :started".to_owned(),
                None => "SET #started = :started REMOVE #folder".to_owned(),
            }))
            .expression_attribute_names("#folder", "folder")
            .expression_attribute_names("#started", "started")
            .set_expression_attribute_values(Some(
                [
                    Some((
                        ":started".to_owned(),
                        AttributeValue::N(cursor.started.to_string()),
                    )),
                    cursor
                        .folder
                        .as_ref()
                        .map(|f| (":folder".to_owned(), s(f.clone()))),
                ]
                .into_iter()
                .flatten()
                .collect(),
            ))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail("UpdateItem", e))
    }

    pub async fn clear_cursor(&self, scope: &str) -> Result<(), StateError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, CURSOR)))
            .update_expression("REMOVE #folder, #started")
            .expression_attribute_names("#folder", "folder")
            .expression_attribute_names("#started", "started")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.fail("UpdateItem", e))
    }
}

fn path_state(item: &HashMap<String, AttributeValue>) -> PathState {
    PathState {
        key: field(item, "key").unwrap_or_default(),
        sequencer: field(item, "sequencer").unwrap_or_default(),
        done: field(item, "phase").as_deref() == Some("done"),
        change: field(item, "change").unwrap_or_default(),
        etag: field(item, "etag").unwrap_or_default(),
        modified: item
            .get("modified")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()),
        contenders: item
            .get("contenders")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_key_is_its_folded_folder_and_name() {
        assert_eq!(path_key(r"docs\Index.html"), r"DOCS|INDEX.HTML");
        assert_eq!(path_key("index.html"), "|INDEX.HTML");
        assert_eq!(path_key(r"a\b\c.txt"), r"A\B|C.TXT");
        assert!(path_key(r"a\b\c.txt").starts_with(&folder_key(r"A\b")));
        // A folder's prefix is never the prefix of a sibling folder's files.
        assert!(!path_key(r"ab\c.txt").starts_with(&folder_key("a")));
        assert!(!path_key(r"a\b\c.txt").starts_with(&folder_key("a")));
        assert_ne!(path_key(CURSOR), CURSOR);
    }
}
