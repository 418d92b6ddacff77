//! Per-key state in DynamoDB: the last sequencer applied to each key of a target, so an older
//! event never overwrites newer content and a repeated one changes nothing.
//!
//! One item per (scope, key): `scope` is the target folder and source ([`crate::Config::scope`]),
//! `objectKey` the S3 key; `sequencer` (normalized, so string order is event order), `phase`
//! (`applying` or `done`), `change` (`put`/`delete`), `etag`. Conditional writes make the claim
//! atomic across concurrent invocations, which a file on the share could not.

use crate::events::{Change, ObjectEvent, Sequencer};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};
use std::collections::HashMap;

const SCOPE: &str = "scope";
const KEY: &str = "objectKey";

#[derive(Debug, thiserror::Error)]
#[error("dynamodb:{action} on the table {table} failed: {message}")]
pub struct StateError {
    pub action: &'static str,
    pub table: String,
    pub message: String,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This event is the newest seen for its key (or a retry of the one being applied): apply it.
    Claimed,
    /// The same event was applied already.
    Duplicate,
    /// A newer event for the key was applied or is being applied.
    Older { applied: String },
}

/// What the store holds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub sequencer: Option<String>,
    pub done: bool,
    pub change: String,
    pub etag: String,
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
                "{code}: {}; grant the function's role dynamodb:GetItem, UpdateItem and Query on the table",
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

    fn item_key(scope: &str, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(SCOPE.to_owned(), s(scope)), (KEY.to_owned(), s(key))])
    }

    /// Claim `event` for its key: succeeds when no sequencer is stored, the stored one is older,
    /// or it is this very event still `applying` (a retry after a failure or a timeout).
    pub async fn claim(&self, scope: &str, event: &ObjectEvent) -> Result<Claim, StateError> {
        let etag = match &event.change {
            Change::Put { etag, .. } => etag.as_str(),
            Change::Delete => "",
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, &event.key)))
            .update_expression(
                "SET #seq = :seq, #phase = :applying, #change = :change, #etag = :etag",
            )
            .condition_expression(
                "attribute_not_exists(#seq) OR #seq < :seq OR (#seq = :seq AND #phase = :applying)",
            )
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_values(":seq", s(event.sequencer.as_str()))
            .expression_attribute_values(":applying", s("applying"))
            .expression_attribute_values(":change", s(event.change.kind()))
            .expression_attribute_values(":etag", s(etag))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) if conditional(&e) => {
                let stored = e
                    .as_service_error()
                    .and_then(|se| match se {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item(),
                        _ => None,
                    })
                    .and_then(|item| field(item, "sequencer"))
                    .unwrap_or_default();
                if stored == event.sequencer.as_str() {
                    Ok(Claim::Duplicate)
                } else {
                    Ok(Claim::Older { applied: stored })
                }
            }
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    /// Whether the key's claim is still `sequencer` (no newer event took over).
    pub async fn still_claimed(
        &self,
        scope: &str,
        key: &str,
        sequencer: &Sequencer,
    ) -> Result<bool, StateError> {
        Ok(self
            .get(scope, key)
            .await?
            .and_then(|k| k.sequencer)
            .as_deref()
            == Some(sequencer.as_str()))
    }

    /// Mark the claim done; `false` if a newer event took the key over meanwhile.
    pub async fn done(
        &self,
        scope: &str,
        key: &str,
        sequencer: &Sequencer,
    ) -> Result<bool, StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, key)))
            .update_expression("SET #phase = :done")
            .condition_expression("#seq = :seq")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_values(":seq", s(sequencer.as_str()))
            .expression_attribute_values(":done", s("done"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }

    pub async fn get(&self, scope: &str, key: &str) -> Result<Option<KeyState>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.fail("GetItem", e))?;
        Ok(out.item().map(key_state))
    }

    /// Every key's state in `scope` (for reconcile).
    pub async fn all(&self, scope: &str) -> Result<HashMap<String, KeyState>, StateError> {
        let mut out = HashMap::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#scope = :scope")
            .expression_attribute_names("#scope", SCOPE)
            .expression_attribute_values(":scope", s(scope))
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("Query", e))?;
            for item in page.items() {
                if let Some(key) = field(item, KEY) {
                    out.insert(key, key_state(item));
                }
            }
        }
        Ok(out)
    }

    /// After reconcile copied the object version `etag` of `key`: record it, unless an event
    /// changed the key since reconcile read its state (`seen` is the sequencer it read then).
    pub async fn reconciled(
        &self,
        scope: &str,
        key: &str,
        etag: &str,
        seen: Option<&str>,
    ) -> Result<bool, StateError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(scope, key)))
            .update_expression("SET #phase = :done, #change = :put, #etag = :etag")
            .expression_attribute_names("#seq", "sequencer")
            .expression_attribute_names("#phase", "phase")
            .expression_attribute_names("#change", "change")
            .expression_attribute_names("#etag", "etag")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":put", s("put"))
            .expression_attribute_values(":etag", s(etag));
        request = match seen {
            Some(seq) => request
                .condition_expression("#seq = :seen")
                .expression_attribute_values(":seen", s(seq)),
            None => request.condition_expression("attribute_not_exists(#seq)"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(self.fail("UpdateItem", e)),
        }
    }
}

fn key_state(item: &HashMap<String, AttributeValue>) -> KeyState {
    KeyState {
        sequencer: field(item, "sequencer"),
        done: field(item, "phase").as_deref() == Some("done"),
        change: field(item, "change").unwrap_or_default(),
        etag: field(item, "etag").unwrap_or_default(),
    }
}
