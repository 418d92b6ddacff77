//! The event loop: parse, dispatch to the resource, bound by the deadline, answer, keep serving.

use crate::{
    HttpResponder, Outcome, Request, RequestType, ResponderConfig, Response, Status,
    event::{Envelope, RESERVED_PROPERTIES},
    response::MAX_PHYSICAL_ID_BYTES,
};
use lambda_runtime::{LambdaEvent, service_fn};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::{
    any::Any,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::time::Instant;

/// The physical id answered for a Create that failed. CloudFormation sends a Delete for it on
/// rollback; the runtime recognises the prefix and succeeds without calling the handler, since
/// nothing was created (a resource's `create` cleans up its own partial work before failing).
pub const CREATE_FAILED_PREFIX: &str = "create-failed:";

/// One custom resource type.
///
/// `physical_id` must be a pure function of the request (normally of the properties that
/// identify the thing created): the runtime calls it on Create, and on Update compares it with
/// the current id. A different id means the change needs a replacement: the runtime calls
/// `create` for the new properties and answers the new id; CloudFormation then sends a Delete
/// for the old id with the old properties.
pub trait CustomResource: Send + Sync + 'static {
    type Properties: DeserializeOwned + Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    fn physical_id(&self, request: &Request<Self::Properties>) -> String;

    /// Create the resource (also called for a replacement during an Update). Must be
    /// idempotent: CloudFormation may deliver the same request more than once.
    fn create(
        &self,
        request: &Request<Self::Properties>,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;

    /// Change the resource in place from `old` to `request.properties`.
    fn update(
        &self,
        request: &Request<Self::Properties>,
        old: &Self::Properties,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;

    /// Remove the resource. Must succeed if it is already gone, and must remove only what
    /// `request.physical_resource_id` still owns: after a replacement that CloudFormation
    /// considers a new resource but the target system considers the same object (a name
    /// respelled in another case), the old id's Delete must leave the object to the new id.
    fn delete(
        &self,
        request: &Request<Self::Properties>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called on Delete when this version cannot read the properties (written for another
    /// version of the function, or missing fields): add, from the physical id, the required
    /// properties that are missing. Unknown and ill-typed properties are dropped before and after
    /// this call. The default adds nothing, so the Delete fails saying what to do.
    fn recover_properties(&self, _physical_id: &str, _properties: &mut Map<String, Value>) {}

    /// On Delete, what to do with `property` when this version cannot read the value given.
    /// Leaving it out falls back to its default, which must not destroy more than asked
    /// (`RetainOnDelete`: use true; `OnDelete`: use disable) nor silently remove less (a group
    /// that would then be left behind: refuse). The default: leave it out.
    fn on_unreadable(&self, _property: &str) -> Unreadable {
        Unreadable::LeaveOut
    }
}

/// What a Delete does with a property this version cannot read ([`CustomResource::on_unreadable`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Unreadable {
    /// Go on without it (its default).
    LeaveOut,
    /// Go on with this value instead.
    Use(Value),
    /// Fail the Delete, naming the property: without it the Delete cannot tell what to remove.
    Refuse,
}

/// Run the Lambda event loop for `R`. `init` builds the resource (clients, configuration); if it
/// fails, every event is answered FAILED with its message and the process keeps serving, so a
/// misconfigured function never leaves a stack waiting.
///
/// Every event is acknowledged to Lambda as a success once CloudFormation has been answered, or
/// once answering has failed for good: CloudFormation invokes custom resources asynchronously,
/// and an error would make Lambda run the whole request again, possibly after the stack has moved
/// on (a retried Create after a rollback makes things nothing will ever delete).
pub async fn serve<R, F, E>(init: F) -> Result<(), lambda_runtime::Error>
where
    R: CustomResource,
    F: Future<Output = Result<R, E>>,
    E: std::fmt::Display,
{
    crate::logging::init();
    let resource = match init.await {
        Ok(r) => Ok(Arc::new(r)),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "initialisation failed; every request will be answered FAILED");
            Err(message)
        }
    };
    let resource = Arc::new(resource);
    let responder = Arc::new(HttpResponder::new(ResponderConfig::default()));
    let answered = Arc::new(Answered::default());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let resource = resource.clone();
        let responder = responder.clone();
        let answered = answered.clone();
        async move {
            let (deadline, relative) = deadline_from(event.context.deadline);
            if relative {
                tracing::warn!(
                    deadline_ms = event.context.deadline,
                    "Lambda-Runtime-Deadline-Ms is not an epoch time (a local runner such as cargo lambda watch \
                     sends the timeout instead): read as milliseconds from now"
                );
            }
            let suffix = format!(" [log stream: {}]", event.context.env_config.log_stream);
            let request_id = text(&event.payload, "RequestId");
            if let Some((cached_url, body)) = answered.get(&request_id) {
                // The same request delivered again (an async retry): its work is done; answer
                // CloudFormation again with the same response instead of redoing it.
                tracing::warn!(request_id = %request_id, "this request was already answered: sending the same response again");
                let url = event
                    .payload
                    .get("ResponseURL")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or(cached_url);
                deliver(&responder, &url, body, deadline).await;
                return Ok::<(), lambda_runtime::Error>(());
            }
            let (url, response) =
                answer(&resource, event.payload, deadline)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot answer CloudFormation");
                        lambda_runtime::Error::from(e)
                    })?;
            let status = response.status;
            let body = response.encode(&suffix);
            answered.put(&request_id, &url, &body);
            if deliver(&responder, &url, body, deadline).await {
                tracing::info!(?status, "request answered");
            }
            Ok::<(), lambda_runtime::Error>(())
        }
    }))
    .await
}

/// PUT the response; on failure log it and give up. CloudFormation then waits for the
/// resource's ServiceTimeout; re-running the handler would be worse (see [`serve`]).
async fn deliver(responder: &HttpResponder, url: &str, body: Vec<u8>, deadline: Instant) -> bool {
    match responder.send(url, body, deadline).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(
                error = %e,
                "could not deliver the response to CloudFormation; not retrying the request (CloudFormation will \
                 time the resource out after its ServiceTimeout)"
            );
            false
        }
    }
}

/// The last requests this container answered, so a duplicate delivery gets the same answer.
#[derive(Default)]
struct Answered(std::sync::Mutex<std::collections::VecDeque<(String, String, Vec<u8>)>>);

impl Answered {
    const KEEP: usize = 32;

    fn get(&self, request_id: &str) -> Option<(String, Vec<u8>)> {
        if request_id.is_empty() {
            return None;
        }
        let list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.iter()
            .find(|(id, _, _)| id == request_id)
            .map(|(_, url, body)| (url.clone(), body.clone()))
    }

    fn put(&self, request_id: &str, url: &str, body: &[u8]) {
        if request_id.is_empty() {
            return;
        }
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == Self::KEEP {
            list.pop_front();
        }
        list.push_back((request_id.to_owned(), url.to_owned(), body.to_vec()));
    }
}

/// Epoch milliseconds before 2001-09-09: no real deadline is that old, so such a value is a
/// duration (what `cargo lambda watch` sends: its timeout, 600000).
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

/// The deadline as an instant, and whether it was given as a duration rather than epoch ms.
fn deadline_from(deadline_ms: u64) -> (Instant, bool) {
    if deadline_ms < EPOCH_MS_FLOOR {
        return (Instant::now() + Duration::from_millis(deadline_ms), true);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (
        Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)),
        false,
    )
}

/// Time kept back from the handler to send the response: a fifth of what is left, between
/// 0.5 s and 10 s.
fn reserve(remaining: Duration) -> Duration {
    (remaining / 5).clamp(Duration::from_millis(500), Duration::from_secs(10))
}

#[derive(Debug, thiserror::Error)]
pub enum NoAnswer {
    #[error(
        "the event is not a CloudFormation request: it has no string ResponseURL, so no answer can be sent"
    )]
    NoResponseUrl,
}

fn text(raw: &Value, field: &str) -> String {
    raw.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Decide the response to one event. Everything the resource does runs in a spawned task, so a
/// panic or a hang is contained; only a missing `ResponseURL` leaves nobody to answer.
pub async fn answer<R: CustomResource>(
    resource: &Arc<Result<Arc<R>, String>>,
    payload: Value,
    deadline: Instant,
) -> Result<(String, Response), NoAnswer> {
    let url = payload
        .get("ResponseURL")
        .and_then(Value::as_str)
        .ok_or(NoAnswer::NoResponseUrl)?
        .to_owned();
    let request_type = text(&payload, "RequestType");
    let request_id = text(&payload, "RequestId");
    let current_id = payload
        .get("PhysicalResourceId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The id to answer when the request fails: the existing one, or a create-failed marker.
    let failure_id = match (&current_id, request_type.as_str()) {
        (Some(id), "Update" | "Delete") if !id.is_empty() => id.clone(),
        _ => format!("{CREATE_FAILED_PREFIX}{request_id}"),
    };
    let mut response = Response {
        status: Status::Failed,
        reason: None,
        physical_resource_id: failure_id,
        stack_id: text(&payload, "StackId"),
        request_id,
        logical_resource_id: text(&payload, "LogicalResourceId"),
        no_echo: false,
        data: Map::new(),
    };
    tracing::info!(
        request_type = %request_type,
        logical_resource_id = %response.logical_resource_id,
        physical_resource_id = current_id.as_deref().unwrap_or(""),
        request_id = %response.request_id,
        stack_id = %response.stack_id,
        resource_type = %text(&payload, "ResourceType"),
        "custom resource request"
    );

    let remaining = deadline.saturating_duration_since(Instant::now());
    let budget = remaining.saturating_sub(reserve(remaining));
    let resource = resource.clone();
    // The id a Create is about to make things under: if it is cut short (the deadline, a
    // panic) it cannot clean up after itself, so the FAILED answer carries this id instead of
    // the create-failed marker, and the rollback's Delete of it reaches the handler.
    let creating = Arc::new(std::sync::Mutex::new(None::<String>));
    let creating_in_task = creating.clone();
    let task = tokio::spawn(async move { dispatch(resource, payload, creating_in_task).await });
    let abort = task.abort_handle();
    let result = match tokio::time::timeout(budget, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => {
            let payload = join.into_panic();
            Err(format!(
                "the handler panicked: {}",
                panic_message(payload.as_ref())
            ))
        }
        Ok(Err(join)) => Err(format!("the handler task was cancelled: {join}")),
        Err(_) => {
            abort.abort();
            Err(format!(
                "the handler did not finish within {:.1} s, the time left before the Lambda timeout less {:.1} s \
                 kept to answer: raise the function's Timeout, and check the resource, whose change may be incomplete",
                budget.as_secs_f64(),
                reserve(remaining).as_secs_f64()
            ))
        }
    };
    let cut_short = matches!(&result, Err(r) if r.starts_with("the handler panicked") || r.starts_with("the handler did not finish"));
    let partial = creating.lock().ok().and_then(|c| c.clone());
    if let (true, Some(id)) = (cut_short, partial) {
        tracing::warn!(physical_resource_id = %id, "the Create was cut short; its rollback Delete will remove what it made");
        response.physical_resource_id = id;
    }
    match result {
        Ok((id, outcome)) => {
            response.status = Status::Success;
            response.physical_resource_id = id;
            response.data = outcome.data;
            response.no_echo = outcome.no_echo;
        }
        Err(mut reason) => {
            // A Delete cut short (deadline, panic) says how to finish without it, as every
            // failed Delete does.
            if request_type == "Delete" && !reason.contains("--retain-resources") {
                reason.push_str(&retain_hint(
                    &response.stack_id,
                    &response.logical_resource_id,
                ));
            }
            tracing::error!(reason = %reason, "request failed");
            response.reason = Some(reason);
        }
    }
    Ok((url, response))
}

fn properties<P: DeserializeOwned>(field: &str, mut map: Map<String, Value>) -> Result<P, String> {
    for reserved in RESERVED_PROPERTIES {
        map.remove(reserved);
    }
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("invalid {field}: {}", e.inner())
        } else {
            format!("invalid {field}.{path}: {}", e.inner())
        }
    })
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Parse the rest of the request and call the resource. `Err` carries the reason for FAILED.
async fn dispatch<R: CustomResource>(
    resource: Arc<Result<Arc<R>, String>>,
    payload: Value,
    creating: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(String, Outcome), String> {
    let envelope: Envelope = serde_path_to_error::deserialize(payload).map_err(|e| {
        format!(
            "the event is not a valid CloudFormation request: {}: {}",
            e.path(),
            e.inner()
        )
    })?;
    let kind = envelope.request_type;
    let current_id = envelope.physical_resource_id.clone().unwrap_or_default();

    if kind == RequestType::Delete && current_id.starts_with(CREATE_FAILED_PREFIX) {
        tracing::info!("the Create of this resource failed, so there is nothing to delete");
        return Ok((current_id, Outcome::new()));
    }
    // Every failed Delete says how to finish the stack's delete without this resource.
    let hint = if kind == RequestType::Delete {
        retain_hint(&envelope.stack_id, &envelope.logical_resource_id)
    } else {
        String::new()
    };
    let resource = match resource.as_ref() {
        Ok(r) => r.clone(),
        Err(init) => {
            return Err(format!(
                "{kind} failed: the function could not initialise: {init}{hint}"
            ));
        }
    };
    let props = if kind == RequestType::Delete {
        delete_properties(resource.as_ref(), &current_id, envelope.resource_properties)
            .map_err(|reason| format!("{reason}{hint}"))?
    } else {
        properties::<R::Properties>("ResourceProperties", envelope.resource_properties)?
    };
    let mut request = Request {
        request_type: kind,
        stack_id: envelope.stack_id,
        request_id: envelope.request_id,
        logical_resource_id: envelope.logical_resource_id,
        resource_type: envelope.resource_type,
        physical_resource_id: envelope.physical_resource_id,
        replacing: None,
        properties: props,
    };
    let failed = |e: R::Error| format!("{kind} failed: {}{hint}", chain(&e));
    match kind {
        RequestType::Create => {
            let id = checked_id(resource.physical_id(&request))?;
            if let Ok(mut c) = creating.lock() {
                *c = Some(id.clone());
            }
            let outcome = resource.create(&request).await.map_err(failed)?;
            Ok((id, outcome))
        }
        RequestType::Update => {
            let old_map = envelope
                .old_resource_properties
                .ok_or("the Update request has no OldResourceProperties")?;
            let old = properties::<R::Properties>("OldResourceProperties", old_map)?;
            let id = checked_id(resource.physical_id(&request))?;
            if id == current_id {
                let outcome = resource.update(&request, &old).await.map_err(failed)?;
                Ok((id, outcome))
            } else {
                tracing::info!(
                    old = %current_id,
                    new = %id,
                    "a property that requires replacement changed: creating the new resource, which takes over \
                     what the old one owned; CloudFormation deletes the old id later (or the new one, on rollback)"
                );
                request.replacing = Some(current_id);
                let outcome = resource.create(&request).await.map_err(failed)?;
                Ok((id, outcome))
            }
        }
        RequestType::Delete => {
            resource.delete(&request).await.map_err(failed)?;
            Ok((current_id, Outcome::new()))
        }
    }
}

/// How to finish a stack's delete when this resource's Delete cannot succeed.
fn retain_hint(stack_id: &str, logical_id: &str) -> String {
    let stack = crate::StackArn::parse(stack_id)
        .map(|a| a.stack_name.to_owned())
        .unwrap_or_else(|| "<stack>".to_owned());
    format!(
        ". To keep what this resource made and finish without it: aws cloudformation delete-stack --stack-name \
         {stack} --retain-resources {logical_id} (in an update rollback: aws cloudformation \
         continue-update-rollback --stack-name {stack} --resources-to-skip {logical_id})"
    )
}

/// The properties of a Delete. A Delete must not fail because this version cannot read what
/// another version (or an older template) wrote: unknown properties and properties of the wrong
/// type are left out, and the resource fills required ones from the physical id. What remains
/// unreadable fails, naming the property.
fn delete_properties<R: CustomResource>(
    resource: &R,
    physical_id: &str,
    mut map: Map<String, Value>,
) -> Result<R::Properties, String> {
    for reserved in RESERVED_PROPERTIES {
        map.remove(reserved);
    }
    let first = match properties::<R::Properties>("ResourceProperties", map.clone()) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    let mut dropped = Vec::new();
    let before: Vec<String> = map.keys().cloned().collect();
    resource.recover_properties(physical_id, &mut map);
    // Each round removes one property; a map cannot have more rounds than keys.
    for _ in 0..=map.len() {
        let error = match serde_path_to_error::deserialize::<_, R::Properties>(Value::Object(
            map.clone(),
        )) {
            Ok(p) => {
                let filled: Vec<&String> = map.keys().filter(|k| !before.contains(k)).collect();
                tracing::warn!(
                    problem = %first,
                    dropped = ?dropped,
                    filled_from_physical_id = ?filled,
                    "Delete: this version cannot read all the properties; going on with what it can read"
                );
                return Ok(p);
            }
            Err(e) => e,
        };
        let key = unknown_field(&error.inner().to_string()).or_else(|| {
            error
                .path()
                .iter()
                .next()
                .and_then(|segment| match segment {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    _ => None,
                })
        });
        match key {
            Some(k) if map.contains_key(&k) => {
                match resource.on_unreadable(&k) {
                    Unreadable::Use(v) if map.get(&k) != Some(&v) => {
                        tracing::warn!(property = %k, value = %v, "Delete: unreadable; the cautious value is used instead");
                        map.insert(k.clone(), v);
                    }
                    Unreadable::Refuse => {
                        return Err(format!(
                            "Delete failed: {first}; this version of the function cannot read {k}, without which it \
                             cannot tell what to remove under {physical_id:?}: deploy a version that can, and delete again"
                        ));
                    }
                    _ => {
                        map.remove(&k);
                    }
                }
                dropped.push(k);
                resource.recover_properties(physical_id, &mut map);
            }
            _ => break,
        }
    }
    Err(format!(
        "Delete failed: {first}; this version of the function cannot read the properties this resource was \
         created with, so it cannot tell what to remove under {physical_id:?}: deploy a version that can, and \
         delete again"
    ))
}

/// The name in serde's "unknown field `Name`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn checked_id(id: String) -> Result<String, String> {
    if id.is_empty() {
        return Err("the resource computed an empty physical id".into());
    }
    if id.len() > MAX_PHYSICAL_ID_BYTES {
        return Err(format!(
            "the physical id is {} bytes, over CloudFormation's {MAX_PHYSICAL_ID_BYTES}-byte limit",
            id.len()
        ));
    }
    Ok(id)
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests;
