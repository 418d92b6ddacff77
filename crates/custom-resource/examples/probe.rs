//! A custom resource whose behaviour its properties choose: the end-to-end tests run this real
//! bootstrap to watch the runtime's failure paths from outside (panic, deadline, oversized data,
//! long reasons, NoEcho), which a well-behaved resource never exercises.
//!
//! Properties: `Name` (required), `Mode` = ok | fail | panic | sleep | big | long-reason |
//! no-echo, `Size` (bytes for big / long-reason).

use custom_resource::{CustomResource, Outcome, Request, cfn};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Props {
    name: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, deserialize_with = "cfn::opt_number")]
    size: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("probe failed as asked: {0}")]
struct ProbeError(String);

#[derive(Debug)]
struct Probe;

impl Probe {
    async fn act(&self, p: &Props) -> Result<Outcome, ProbeError> {
        let size = p.size.unwrap_or(5000);
        // The tests count these lines to see whether work was done (or redone).
        tracing::info!(name = %p.name, "probe acted");
        match p.mode.as_deref().unwrap_or("ok") {
            "ok" => Ok(Outcome::new().with("Name", p.name.as_str())),
            "fail" => Err(ProbeError("mode=fail".into())),
            "panic" => panic!("probe panicked as asked ({})", p.name),
            "sleep" => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(Outcome::new())
            }
            "big" => Ok(Outcome::new().with("Blob", "x".repeat(size))),
            "long-reason" => Err(ProbeError("é".repeat(size))),
            "no-echo" => Ok(Outcome::new()
                .with("Token", "visible-only-to-getatt")
                .no_echo()),
            other => Err(ProbeError(format!("unknown Mode {other:?}"))),
        }
    }
}

impl CustomResource for Probe {
    type Properties = Props;
    type Error = ProbeError;

    fn physical_id(&self, request: &Request<Props>) -> String {
        format!("probe-{}", request.properties.name)
    }

    async fn create(&self, request: &Request<Props>) -> Result<Outcome, ProbeError> {
        self.act(&request.properties).await
    }

    async fn update(&self, request: &Request<Props>, _old: &Props) -> Result<Outcome, ProbeError> {
        self.act(&request.properties).await
    }

    async fn delete(&self, request: &Request<Props>) -> Result<(), ProbeError> {
        self.act(&request.properties).await.map(|_| ())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::serve(async { Ok::<_, std::convert::Infallible>(Probe) }).await
}
