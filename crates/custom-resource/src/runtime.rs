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

    /// Remove the resource. Must succeed if it is already gone.
    fn delete(
        &self,
        request: &Request<Self::Properties>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Run the Lambda event loop for `R`. `init` builds the resource (clients, configuration); if it
/// fails, every event is answered FAILED with its message and the process keeps serving, so a
/// misconfigured function never leaves a stack waiting.
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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let resource = resource.clone();
        let responder = responder.clone();
        async move {
            let deadline = instant_from_epoch_ms(event.context.deadline);
            let suffix = format!(" [log stream: {}]", event.context.env_config.log_stream);
            let (url, response) =
                answer(&resource, event.payload, deadline)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot answer CloudFormation");
                        lambda_runtime::Error::from(e)
                    })?;
            let status = response.status;
            responder
                .send(&url, response.encode(&suffix), deadline)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "could not deliver the response to CloudFormation");
                    lambda_runtime::Error::from(e.to_string())
                })?;
            tracing::info!(?status, "request answered");
            Ok::<(), lambda_runtime::Error>(())
        }
    }))
    .await
}

fn instant_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
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
    let task = tokio::spawn(async move { dispatch(resource, payload).await });
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
    match result {
        Ok((id, outcome)) => {
            response.status = Status::Success;
            response.physical_resource_id = id;
            response.data = outcome.data;
            response.no_echo = outcome.no_echo;
        }
        Err(reason) => {
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
    let resource = match resource.as_ref() {
        Ok(r) => r.clone(),
        Err(init) => {
            return Err(format!(
                "{kind} failed: the function could not initialise: {init}"
            ));
        }
    };
    let request = Request {
        request_type: kind,
        stack_id: envelope.stack_id,
        request_id: envelope.request_id,
        logical_resource_id: envelope.logical_resource_id,
        resource_type: envelope.resource_type,
        physical_resource_id: envelope.physical_resource_id,
        properties: properties::<R::Properties>(
            "ResourceProperties",
            envelope.resource_properties,
        )?,
    };
    let failed = |e: R::Error| format!("{kind} failed: {}", chain(&e));
    match kind {
        RequestType::Create => {
            let id = checked_id(resource.physical_id(&request))?;
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
                tracing::info!(old = %current_id, new = %id, "a property that requires replacement changed");
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
