use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::logging::init();
    // A bad configuration is reported on every invocation (and fails it), not by a crash loop.
    let rotator = rotate_password::Rotator::from_env().await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let rotator = &rotator;
        async move {
            // A Diagnostic of our own: its errorType is a stable name (see `error_type`), not
            // the type path the runtime derives from a boxed error.
            match rotator {
                Ok(r) => r
                    .handle(event.payload, event.context.deadline)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, error_type = e.error_type(), "rotation failed");
                        Diagnostic {
                            error_type: e.error_type().into(),
                            error_message: e.to_string(),
                        }
                    }),
                Err(e) => {
                    tracing::error!(error = %e, "configuration error");
                    Err(Diagnostic {
                        error_type: "ConfigurationError".into(),
                        error_message: e.to_string(),
                    })
                }
            }
        }
    }))
    .await
}
