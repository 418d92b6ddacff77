use super::*;
use serde::Deserialize;
use serde_json::json;
use std::sync::Mutex;

/// A resource whose behaviour the properties choose, recording what it was asked to do.
#[derive(Default)]
struct Probe {
    calls: Mutex<Vec<String>>,
    modes: Mutex<Vec<Option<String>>>,
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
        self.modes
            .lock()
            .unwrap()
            .push(request.properties.mode.clone());
        self.act("delete", &request.properties).map(|_| ())
    }

    fn on_unreadable(&self, property: &str) -> Unreadable {
        match property {
            "Mode" => Unreadable::Use(json!("careful")),
            "Size" => Unreadable::Refuse,
            _ => Unreadable::LeaveOut,
        }
    }

    fn recover_properties(&self, physical_id: &str, properties: &mut Map<String, Value>) {
        if let Some(name) = physical_id.strip_prefix("probe-") {
            properties
                .entry("Name")
                .or_insert_with(|| Value::String(name.to_owned()));
        }
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
    // Cut short, the Create could not clean up: its rollback Delete must reach the handler.
    assert_eq!(r.physical_resource_id, "probe-p");
    let r = run(&s, event("Create", json!({"Name": "p", "Mode": "fail"}))).await;
    assert_eq!(
        r.physical_resource_id, "create-failed:req-1",
        "a handler error cleans up itself"
    );
    let r = run(&s, event("Create", json!({"Name": "q"}))).await;
    assert_eq!(r.status, Status::Success);
    assert_eq!(probe.calls.lock().unwrap().len(), 3);
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
    assert_eq!(r.physical_resource_id, "probe-slow");
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

fn delete_of(id: &str, props: Value) -> Value {
    with(event("Delete", props), "PhysicalResourceId", json!(id))
}

#[tokio::test]
async fn a_delete_with_another_versions_properties_still_deletes() {
    let (s, probe) = state(Probe::default());
    // Unknown fields (a newer template), an ill-typed optional field, and a required field of
    // the wrong type that the physical id can supply.
    for props in [
        json!({"Name": "a", "Retention": {"Days": 3}, "ServiceToken": "x"}),
        json!({"Name": ["a"], "Extra": 1}),
        json!({}),
    ] {
        let r = run(&s, delete_of("probe-a", props.clone())).await;
        assert_eq!(r.status, Status::Success, "{props}: {r:?}");
        assert_eq!(r.physical_resource_id, "probe-a");
    }
    assert_eq!(*probe.calls.lock().unwrap(), ["delete a"; 3]);
    // A property the resource needs to read is refused, not left out.
    let r = run(
        &s,
        delete_of("probe-a", json!({"Name": "a", "Size": "many"})),
    )
    .await;
    assert_eq!(r.status, Status::Failed);
    assert!(reason(&r).contains("cannot read Size"), "{r:?}");
    assert!(reason(&r).contains("continue-update-rollback"), "{r:?}");
}

#[tokio::test]
async fn a_delete_that_cannot_recover_says_what_to_do() {
    let (s, probe) = state(Probe::default());
    let r = run(&s, delete_of("other-id", json!({"Bogus": 1}))).await;
    assert_eq!(r.status, Status::Failed);
    let why = reason(&r);
    assert!(why.contains("cannot read the properties"), "{why}");
    assert!(why.contains("\"other-id\""), "{why}");
    assert!(
        why.contains("delete-stack --stack-name s --retain-resources Probe"),
        "{why}"
    );
    assert!(probe.calls.lock().unwrap().is_empty());
    // A handler failure on Delete carries the same way out.
    let r = run(
        &s,
        delete_of("probe-a", json!({"Name": "a", "Mode": "fail"})),
    )
    .await;
    assert!(reason(&r).contains("--retain-resources Probe"), "{r:?}");
    // Create and Update stay strict.
    let r = run(&s, event("Create", json!({"Name": "a", "Extra": 1}))).await;
    assert!(reason(&r).contains("unknown field `Extra`"), "{r:?}");
}

#[tokio::test]
async fn a_replacement_tells_create_which_id_it_replaces() {
    #[derive(Default)]
    struct Seen(Mutex<Vec<Option<String>>>);
    impl CustomResource for Seen {
        type Properties = ProbeProps;
        type Error = ProbeError;
        fn physical_id(&self, r: &Request<ProbeProps>) -> String {
            format!("probe-{}", r.properties.name)
        }
        async fn create(&self, r: &Request<ProbeProps>) -> Result<Outcome, ProbeError> {
            self.0.lock().unwrap().push(r.replacing.clone());
            Ok(Outcome::new())
        }
        async fn update(
            &self,
            _: &Request<ProbeProps>,
            _: &ProbeProps,
        ) -> Result<Outcome, ProbeError> {
            Ok(Outcome::new())
        }
        async fn delete(&self, _: &Request<ProbeProps>) -> Result<(), ProbeError> {
            Ok(())
        }
    }
    let seen = Arc::new(Seen::default());
    let s: Arc<Result<Arc<Seen>, String>> = Arc::new(Ok(seen.clone()));
    answer(&s, event("Create", json!({"Name": "a"})), later())
        .await
        .unwrap();
    let mut e = with(
        event("Update", json!({"Name": "A"})),
        "PhysicalResourceId",
        json!("probe-a"),
    );
    e["OldResourceProperties"] = json!({"Name": "a"});
    let (_, r) = answer(&s, e, later()).await.unwrap();
    assert_eq!(r.physical_resource_id, "probe-A");
    assert_eq!(*seen.0.lock().unwrap(), [None, Some("probe-a".to_owned())]);
}

#[test]
fn a_deadline_given_as_a_duration_is_read_from_now() {
    // cargo lambda watch sends its timeout (600000 ms) instead of an epoch time.
    let (at, relative) = deadline_from(600_000);
    assert!(relative);
    let left = at.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (at, relative) = deadline_from(now_ms + 30_000);
    assert!(!relative);
    let left = at.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    assert!(
        !deadline_from(now_ms - 5).1,
        "a real deadline just passed is not a duration"
    );
}

#[test]
fn answered_requests_are_remembered_within_a_bound() {
    let a = Answered::default();
    assert!(a.get("r1").is_none());
    a.put("r1", "http://u/1", b"one");
    assert_eq!(
        a.get("r1"),
        Some(("http://u/1".to_owned(), b"one".to_vec()))
    );
    for i in 0..Answered::KEEP {
        a.put(&format!("x{i}"), "u", b"");
    }
    assert!(a.get("r1").is_none(), "the oldest is forgotten");
    a.put("", "u", b"");
    assert!(a.get("").is_none(), "no id, no memory");
}

#[tokio::test]
async fn an_unreadable_safety_property_takes_its_cautious_value_not_the_default() {
    let (s, probe) = state(Probe::default());
    let r = run(
        &s,
        delete_of("probe-a", json!({"Name": "a", "Mode": {"v2": "keep"}})),
    )
    .await;
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert_eq!(*probe.calls.lock().unwrap(), ["delete a"]);
    // The probe's act() answers an unknown mode with Ok; what matters is what it was given.
    let seen = probe.modes.lock().unwrap().clone();
    assert_eq!(seen, [Some("careful".to_owned())]);
}
