//! `functions/sync-content`: S3 object created/deleted events (through EventBridge, or S3
//! notifications through SQS) applied to a folder of the SMB share, at least once and in any
//! order, with a reconcile mode that makes the folder equal to the prefix.
//!
//! - [`events`]: parsing, URL-decoding of keys, sequencer order;
//! - [`state`]: the per-key state in DynamoDB (claim, re-check, done);
//! - [`sync`]: applying events with the copy engine of `Custom::WebContent`, and reconcile.

pub mod config;
pub mod events;
mod reconcile;
pub mod state;
pub mod sync;

pub use config::{Config, ConfigError};

use events::{Invocation, ObjectEvent};
use serde_json::{Value, json};
use sync::{EventReport, Outcome, Syncer};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Aws(#[from] aws_env::ConfigError),
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Unknown(#[from] events::UnknownInvocation),
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
    /// Some events could not be applied: failing the invocation makes Lambda retry it.
    #[error("{failed} event(s) could not be applied and will be retried: {detail}")]
    Failed { failed: usize, detail: String },
    #[error("reconcile could not fix {failed} file(s): {detail}")]
    Reconcile { failed: usize, detail: String },
}

/// The function: clients built once per container.
#[derive(Debug)]
pub struct Function {
    syncer: Syncer,
}

impl Function {
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let sdk = aws_env::load().await?;
        Ok(Self {
            syncer: Syncer::new(&sdk, config),
        })
    }

    /// `deadline`: the invocation's (reconcile stops before it and continues next time).
    pub async fn handle(
        &self,
        payload: Value,
        deadline: Option<std::time::SystemTime>,
    ) -> Result<Value, HandlerError> {
        match events::parse(&payload, self.syncer.config.decoding)? {
            Invocation::Reconcile { only_continue } => {
                let Some(report) = self.syncer.reconcile(deadline, only_continue).await? else {
                    return Ok(json!({ "reconcile": { "pending": false } }));
                };
                if report.failed_count > 0 {
                    return Err(HandlerError::Reconcile {
                        failed: report.failed_count,
                        detail: listing(&report.failed),
                    });
                }
                Ok(json!({ "reconcile": report }))
            }
            Invocation::EventBridge { id, event } => {
                let mut report = EventReport::default();
                match event {
                    Ok(Some(e)) => {
                        let outcomes = self.syncer.apply_all(std::slice::from_ref(&e)).await;
                        report.add(&e.key, &outcomes[0]);
                    }
                    Ok(None) => report.ignored += 1,
                    Err(e) => {
                        // Malformed: retrying cannot help; report it.
                        tracing::error!(event = %id, error = %e, "event cannot be used");
                        report.add(
                            &id,
                            &Outcome::Rejected {
                                rule: "malformed-event",
                                reason: e.to_string(),
                            },
                        );
                    }
                }
                finish(report)
            }
            Invocation::S3(records) => {
                let mut report = EventReport::default();
                let mut good = Vec::new();
                for r in records {
                    match r {
                        Ok(Some(e)) => good.push(e),
                        Ok(None) => report.ignored += 1,
                        Err(e) => report.add(
                            "(record)",
                            &Outcome::Rejected {
                                rule: "malformed-event",
                                reason: e.to_string(),
                            },
                        ),
                    }
                }
                let outcomes = self.syncer.apply_all(&good).await;
                for (e, o) in good.iter().zip(&outcomes) {
                    report.add(&e.key, o);
                }
                finish(report)
            }
            Invocation::Sqs(messages) => Ok(self.sqs(messages).await),
        }
    }

    /// An SQS batch: only the messages holding a failed record are returned as
    /// `batchItemFailures`, so only they are retried. Rejected keys never succeed on retry: they
    /// are logged (by name) and not returned. A body that cannot be read at all is returned, so
    /// that the queue's redrive policy moves it to the dead-letter queue for a person to look
    /// at, instead of the change being lost without a trace.
    async fn sqs(&self, messages: Vec<events::SqsMessage>) -> Value {
        let mut events: Vec<ObjectEvent> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match &m.events {
                Ok(list) => {
                    for e in list {
                        events.push(e.clone());
                        owner.push(i);
                    }
                }
                Err(e) => {
                    tracing::error!(message_id = %m.id, error = %e, "message cannot be used; returned for the dead-letter queue")
                }
            }
        }
        let outcomes = self.syncer.apply_all(&events).await;
        let mut report = EventReport::default();
        let mut failed: Vec<bool> = messages.iter().map(|m| m.events.is_err()).collect();
        for ((e, o), &i) in events.iter().zip(&outcomes).zip(&owner) {
            report.add(&e.key, o);
            if matches!(o, Outcome::Failed(_)) {
                failed[i] = true;
            }
        }
        let failures: Vec<Value> = messages
            .iter()
            .zip(&failed)
            .filter(|(_, f)| **f)
            .map(|(m, _)| json!({ "itemIdentifier": m.id }))
            .collect();
        tracing::info!(
            messages = messages.len(),
            records = events.len(),
            copied = report.copied,
            deleted = report.deleted,
            duplicates = report.duplicates,
            older = report.older,
            superseded = report.superseded,
            ignored = report.ignored,
            rejected = report.rejected.len(),
            failed_messages = failures.len(),
            "batch applied"
        );
        json!({ "batchItemFailures": failures })
    }
}

fn finish(report: EventReport) -> Result<Value, HandlerError> {
    tracing::info!(
        copied = report.copied,
        deleted = report.deleted,
        duplicates = report.duplicates,
        older = report.older,
        superseded = report.superseded,
        ignored = report.ignored,
        rejected = report.rejected.len(),
        failed = report.failed.len(),
        "events applied"
    );
    if !report.failed.is_empty() {
        return Err(HandlerError::Failed {
            failed: report.failed.len(),
            detail: listing(&report.failed),
        });
    }
    Ok(json!(report))
}

fn listing(items: &[sync::Named]) -> String {
    items
        .iter()
        .take(12)
        .map(|n| format!("{:?}: {}", n.key, n.reason))
        .collect::<Vec<_>>()
        .join("; ")
}
