use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::logging::init();
    // A bad configuration is reported on every invocation (and fails it), not by a crash loop.
    let rotator = rotate_password::Rotator::from_env().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let rotator = &rotator;
        async move {
            match rotator {
                Ok(r) => r
                    .handle(event.payload, event.context.deadline)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "rotation failed");
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
