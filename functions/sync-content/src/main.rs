// The handler future nests the SDK, SMB and copy futures deeper than the default limit.
#![recursion_limit = "256"]

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::logging::init();
    // A bad configuration is reported on every invocation (and fails it), not by a crash loop.
    let function = sync_content::Function::from_env().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let function = &function;
        async move {
            match function {
                Ok(f) => f
                    .handle(event.payload, Some(event.context.deadline()))
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "invocation failed");
                        lambda_runtime::Error::from(e.to_string())
                    }),
                Err(e) => {
                    tracing::error!(error = %e, "configuration error");
                    Err(lambda_runtime::Error::from(e.to_string()))
                }
            }
        }
    }))
    .await
}
