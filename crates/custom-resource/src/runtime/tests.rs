use super::*;
use serde::Deserialize;
use serde_json::json;
use std::sync::Mutex;

/// A resource whose behaviour the properties choose, recording what it was asked to do.
#[derive(Default)]
struct Probe {
    calls: Mutex<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ProbeProps {
    name: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, deserialize_with = "crate::cfn::opt_number")]
    size: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("probe refused")]
struct ProbeError(#[source] std::io::Error);

impl Probe {
    fn act(&self, what: &str, p: &ProbeProps) -> Result<Outcome, ProbeError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{what} {}", p.name));
        match p.mode.as_deref() {
            Some("fail") => Err(ProbeError(std::io::Error::other("disk on fire"))),
            Some("panic") => panic!("boom at {}", p.name),
            Some("big") => {
                Ok(Outcome::new().with("Blob", "x".repeat(p.size.unwrap_or(5000) as usize)))
            }
            Some("secret") => Ok(Outcome::new().with("Token", "t0k").no_echo()),
            _ => Ok(Outcome::new().with("Name", p.name.clone())),
        }
    }
}

impl CustomResource for Probe {
    type Properties = ProbeProps;
    type Error = ProbeError;

    fn physical_id(&self, request: &Request<ProbeProps>) -> String {
        format!("probe-{}", request.properties.name)
    }

    async fn create(&self, request: &Request<ProbeProps>) -> Result<Outcome, ProbeError> {
        if request.properties.mode.as_deref() == Some("sleep") {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        self.act("create", &request.properties)
    }

    async fn update(
        &self,
        request: &Request<ProbeProps>,
        old: &ProbeProps,
    ) -> Result<Outcome, ProbeError> {
        self.calls.lock().unwrap().push(format!("old {}", old.name));
        self.act("update", &request.properties)
    }

    async fn delete(&self, request: &Request<ProbeProps>) -> Result<(), ProbeError> {
        self.act("delete", &request.properties).map(|_| ())
    }
}

fn event(kind: &str, props: Value) -> Value {
    json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:probe",
        "ResponseURL": "http://127.0.0.1:9/cfn",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/guid",
        "RequestId": "req-1",
        "ResourceType": "Custom::Probe",
        "LogicalResourceId": "Probe",
        "ResourceProperties": props,
    })
}

fn with(mut e: Value, key: &str, value: Value) -> Value {
    e[key] = value;
    e
}

fn state(probe: Probe) -> (Arc<Result<Arc<Probe>, String>>, Arc<Probe>) {
    let p = Arc::new(probe);
    (Arc::new(Ok(p.clone())), p)
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

async fn run(s: &Arc<Result<Arc<Probe>, String>>, e: Value) -> Response {
    answer(s, e, later()).await.unwrap().1
}

fn reason(r: &Response) -> &str {
    r.reason.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn create_succeeds_with_a_deterministic_id_and_service_token_ignored() {
    let (s, probe) = state(Probe::default());
    let e = event(
        "Create",
        json!({"ServiceToken": "x", "ServiceTimeout": "300", "Name": "a", "Size": "12"}),
    );
    let (url, r) = answer(&s, e, later()).await.unwrap();
    assert_eq!(url, "http://127.0.0.1:9/cfn");
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert_eq!(r.physical_resource_id, "probe-a");
    assert_eq!(r.data["Name"], "a");
    assert_eq!(
        (r.request_id.as_str(), r.logical_resource_id.as_str()),
        ("req-1", "Probe")
    );
    assert_eq!(*probe.calls.lock().unwrap(), ["create a"]);
}

#[tokio::test]
async fn no_response_url_means_no_answer() {
    let (s, _) = state(Probe::default());
    let mut e = event("Create", json!({"Name": "a"}));
    e.as_object_mut().unwrap().remove("ResponseURL");
    assert!(matches!(
        answer(&s, e, later()).await,
        Err(NoAnswer::NoResponseUrl)
    ));
}

#[tokio::test]
async fn an_event_of_the_wrong_shape_is_failed_naming_the_field() {
    let (s, probe) = state(Probe::default());
    let r = run(
        &s,
        with(
            event("Create", json!({"Name": "a"})),
            "RequestType",
            json!("Upsert"),
        ),
    )
    .await;
    assert_eq!(r.status, Status::Failed);
    assert!(
        reason(&r).contains("RequestType") && reason(&r).contains("Upsert"),
        "{r:?}"
    );
    assert_eq!(r.physical_resource_id, "create-failed:req-1");
    let mut e = event("Create", json!({"Name": "a"}));
    e.as_object_mut().unwrap().remove("StackId");
    let r = run(&s, e).await;
    assert!(reason(&r).contains("StackId"), "{r:?}");
    assert!(probe.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_unknown_and_ill_typed_properties_are_failed_by_name() {
    let (s, _) = state(Probe::default());
    let r = run(&s, event("Create", json!({}))).await;
    assert!(
        reason(&r).contains("invalid ResourceProperties") && reason(&r).contains("`Name`"),
        "{r:?}"
    );
    let r = run(&s, event("Create", json!({"Name": "a", "Size": "big"}))).await;
    assert!(
        reason(&r).contains("ResourceProperties.Size") && reason(&r).contains("expected a number"),
        "{r:?}"
    );
    let r = run(&s, event("Create", json!({"Name": "a", "Sise": 1}))).await;
    assert!(reason(&r).contains("unknown field `Sise`"), "{r:?}");
}

#[tokio::test]
async fn a_handler_error_is_failed_with_its_causes() {
    let (s, _) = state(Probe::default());
    let r = run(&s, event("Create", json!({"Name": "a", "Mode": "fail"}))).await;
    assert_eq!(r.status, Status::Failed);
    assert_eq!(reason(&r), "Create failed: probe refused: disk on fire");
    assert_eq!(r.physical_resource_id, "create-failed:req-1");
}

#[tokio::test]
async fn a_panic_is_failed_and_the_next_event_is_served() {
    let (s, probe) = state(Probe::default());
    let r = run(&s, event("Create", json!({"Name": "p", "Mode": "panic"}))).await;
    assert_eq!(r.status, Status::Failed);
    assert!(reason(&r).contains("panicked: boom at p"), "{r:?}");
    let r = run(&s, event("Create", json!({"Name": "q"}))).await;
    assert_eq!(r.status, Status::Success);
    assert_eq!(probe.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn the_deadline_is_answered_before_it_passes() {
    let (s, _) = state(Probe::default());
    let start = Instant::now();
    let deadline = start + Duration::from_millis(1500);
    let (_, r) = answer(
        &s,
        event("Create", json!({"Name": "slow", "Mode": "sleep"})),
        deadline,
    )
    .await
    .unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(reason(&r).contains("did not finish within"), "{r:?}");
    // The handler sleeps 30 s; the answer must come while time is left to send it.
    assert!(Instant::now() < deadline, "answered after the deadline");
}

#[tokio::test]
async fn an_init_failure_is_answered_on_every_event() {
    let s: Arc<Result<Arc<Probe>, String>> = Arc::new(Err(
        "PROBE_TABLE is not set: set it to the table name".into(),
    ));
    for _ in 0..2 {
        let r = run(&s, event("Create", json!({"Name": "a"}))).await;
        assert_eq!(r.status, Status::Failed);
        assert!(
            reason(&r).contains("could not initialise: PROBE_TABLE is not set"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn update_keeps_the_id_unless_a_replacing_property_changed() {
    let (s, probe) = state(Probe::default());
    let e = with(
        event("Update", json!({"Name": "a", "Mode": "x"})),
        "PhysicalResourceId",
        json!("probe-a"),
    );
    let e = with(
        e,
        "OldResourceProperties",
        json!({"Name": "a", "ServiceToken": "x"}),
    );
    let r = run(&s, e).await;
    assert_eq!(
        (r.status, r.physical_resource_id.as_str()),
        (Status::Success, "probe-a")
    );
    assert_eq!(*probe.calls.lock().unwrap(), ["old a", "update a"]);

    let e = with(
        event("Update", json!({"Name": "b"})),
        "PhysicalResourceId",
        json!("probe-a"),
    );
    let e = with(e, "OldResourceProperties", json!({"Name": "a"}));
    let r = run(&s, e).await;
    assert_eq!(
        (r.status, r.physical_resource_id.as_str()),
        (Status::Success, "probe-b")
    );
    assert_eq!(probe.calls.lock().unwrap().last().unwrap(), "create b");
}

#[tokio::test]
async fn a_failed_update_keeps_the_old_id() {
    let (s, _) = state(Probe::default());
    let e = with(
        event("Update", json!({"Name": "a", "Mode": "fail"})),
        "PhysicalResourceId",
        json!("probe-a"),
    );
    let e = with(e, "OldResourceProperties", json!({"Name": "a"}));
    let r = run(&s, e).await;
    assert_eq!(
        (r.status, r.physical_resource_id.as_str()),
        (Status::Failed, "probe-a")
    );
    let e = with(
        event("Update", json!({"Name": "a"})),
        "PhysicalResourceId",
        json!("probe-a"),
    );
    let r = run(&s, e).await;
    assert!(reason(&r).contains("no OldResourceProperties"), "{r:?}");
}

#[tokio::test]
async fn delete_after_a_failed_create_touches_nothing_even_with_bad_properties_or_init() {
    let (s, probe) = state(Probe::default());
    let created = run(&s, event("Create", json!({"Name": "a", "Mode": "fail"}))).await;
    let e = with(
        event("Delete", json!({"Bogus": true})),
        "PhysicalResourceId",
        json!(created.physical_resource_id),
    );
    let r = run(&s, e.clone()).await;
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert_eq!(r.physical_resource_id, "create-failed:req-1");
    assert_eq!(*probe.calls.lock().unwrap(), ["create a"]);
    let broken: Arc<Result<Arc<Probe>, String>> = Arc::new(Err("bad env".into()));
    assert_eq!(run(&broken, e).await.status, Status::Success);
}

#[tokio::test]
async fn delete_calls_the_handler_and_echoes_the_id() {
    let (s, probe) = state(Probe::default());
    let e = with(
        event("Delete", json!({"Name": "a"})),
        "PhysicalResourceId",
        json!("probe-a"),
    );
    let r = run(&s, e).await;
    assert_eq!(
        (r.status, r.physical_resource_id.as_str()),
        (Status::Success, "probe-a")
    );
    assert_eq!(*probe.calls.lock().unwrap(), ["delete a"]);
}

#[tokio::test]
async fn no_echo_and_oversized_data_reach_the_encoded_body() {
    let (s, _) = state(Probe::default());
    let r = run(&s, event("Create", json!({"Name": "a", "Mode": "secret"}))).await;
    let v: Value = serde_json::from_slice(&r.encode("")).unwrap();
    assert_eq!(v["NoEcho"], true);
    let r = run(
        &s,
        event(
            "Create",
            json!({"Name": "a", "Mode": "big", "Size": "6000"}),
        ),
    )
    .await;
    let v: Value = serde_json::from_slice(&r.encode("")).unwrap();
    assert_eq!(v["Status"], "FAILED");
    assert!(v["Reason"].as_str().unwrap().contains("4096-byte limit"));
}

#[test]
fn reserve_is_bounded() {
    assert_eq!(reserve(Duration::from_secs(900)), Duration::from_secs(10));
    assert_eq!(reserve(Duration::from_secs(10)), Duration::from_secs(2));
    assert_eq!(
        reserve(Duration::from_millis(100)),
        Duration::from_millis(500)
    );
}
