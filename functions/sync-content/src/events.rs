//! What an invocation carries, parsed and checked before anything touches the share: S3 events
//! delivered by EventBridge (`Object Created` / `Object Deleted`), directly or through an SQS
//! queue that an EventBridge rule targets; S3 notification records in an SQS batch (also
//! SNS-wrapped, and delivered to Lambda directly); or a reconcile request.
//!
//! Keys in S3 notification records are URL-encoded (`+` is a space, `%XX` a byte of UTF-8);
//! they are decoded here with the same decoder the listing uses. Sequencers are normalized so
//! that comparing two of them is comparing two strings (see [`Sequencer`]).

use serde_json::Value;

/// Width sequencers are padded to. S3's are 16–18 hex digits today; anything longer than this
/// is refused rather than compared wrongly.
pub const SEQUENCER_WIDTH: usize = 32;

/// S3's per-key event order. AWS documents the comparison: sequencers may differ in length, so
/// right-pad the shorter with zeros, then compare lexicographically. Normalizing every sequencer
/// to upper-case hex right-padded to [`SEQUENCER_WIDTH`] makes that plain string order — here
/// (`Ord`) and in DynamoDB's condition expressions alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sequencer(String);

impl Sequencer {
    pub fn parse(text: &str) -> Result<Self, EventError> {
        let t = text.trim();
        if t.is_empty() || t.len() > SEQUENCER_WIDTH || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EventError::BadSequencer(text.to_owned()));
        }
        let mut s = t.to_ascii_uppercase();
        s.extend(std::iter::repeat_n('0', SEQUENCER_WIDTH - t.len()));
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened to the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or overwritten; the ETag (unquoted, as events carry it) names the version.
    Put { etag: String, size: u64 },
    /// Deleted (or hidden by a delete marker).
    Delete,
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Put { .. } => "put",
            Change::Delete => "delete",
        }
    }
}

/// One S3 change, key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    pub key: String,
    pub sequencer: Sequencer,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event has no {0}")]
    Missing(&'static str),
    #[error("the key {0:?} is not valid URL encoding of UTF-8")]
    BadKey(String),
    #[error(
        "the sequencer {0:?} is not 1 to {SEQUENCER_WIDTH} hexadecimal digits; without it events cannot be ordered"
    )]
    BadSequencer(String),
    #[error("the SQS message body is not an S3 notification: {0}")]
    BadBody(String),
}

/// One SQS message: its id (for `batchItemFailures`) and the S3 changes in its body. A body may
/// hold several records; `s3:TestEvent` and event types that change nothing hold none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    pub id: String,
    pub events: Result<Vec<ObjectEvent>, EventError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `{"reconcile": true}`, by hand or from a schedule; `{"reconcile": "continue"}` only
    /// continues a pass an earlier run stopped (and does nothing when none is pending).
    Reconcile { only_continue: bool },
    /// One EventBridge event. `Ok(None)`: a detail type that changes no content.
    EventBridge {
        id: String,
        event: Result<Option<ObjectEvent>, EventError>,
    },
    /// An SQS batch (partial failures are reported per message).
    Sqs(Vec<SqsMessage>),
    /// S3 notification records delivered to the function directly.
    S3(Vec<Result<Option<ObjectEvent>, EventError>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the invocation is not an S3 event from EventBridge, an SQS batch of S3 notifications, or {{\"reconcile\": true}}: {0}"
)]
pub struct UnknownInvocation(pub String);

/// How EventBridge keys are read. S3 notification records are documented as URL-encoded;
/// `decode_eventbridge` says whether EventBridge's `detail.object.key` is decoded too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    pub decode_eventbridge: bool,
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            decode_eventbridge: true,
        }
    }
}

pub fn parse(payload: &Value, decoding: Decoding) -> Result<Invocation, UnknownInvocation> {
    if payload.get("reconcile").and_then(Value::as_bool) == Some(true) {
        return Ok(Invocation::Reconcile {
            only_continue: false,
        });
    }
    if payload.get("reconcile").and_then(Value::as_str) == Some("continue") {
        return Ok(Invocation::Reconcile {
            only_continue: true,
        });
    }
    if payload.get("source").and_then(Value::as_str) == Some("aws.s3")
        && payload.get("detail").is_some()
    {
        let id = text(payload, &["id"]).unwrap_or_default().to_owned();
        return Ok(Invocation::EventBridge {
            id,
            event: eventbridge(payload, decoding),
        });
    }
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        let source = records
            .first()
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str);
        return match source {
            Some("aws:sqs") => Ok(Invocation::Sqs(
                records.iter().map(|m| sqs_message(m, decoding)).collect(),
            )),
            Some("aws:s3") => Ok(Invocation::S3(records.iter().map(s3_record).collect())),
            None if records.is_empty() => Ok(Invocation::Sqs(Vec::new())),
            other => Err(UnknownInvocation(format!(
                "records from {}",
                other.unwrap_or("an unknown source")
            ))),
        };
    }
    Err(UnknownInvocation(
        "no \"Records\", no \"source\": \"aws.s3\", no \"reconcile\"".into(),
    ))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, p| v.get(*p))
        .and_then(Value::as_str)
}

fn number(v: &Value, path: &[&str]) -> Option<u64> {
    let v = path.iter().try_fold(v, |v, p| v.get(*p))?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn decoded(key: &str, decode: bool) -> Result<String, EventError> {
    if decode {
        content_copy::decode_key(key).ok_or_else(|| EventError::BadKey(key.to_owned()))
    } else {
        Ok(key.to_owned())
    }
}

fn eventbridge(v: &Value, decoding: Decoding) -> Result<Option<ObjectEvent>, EventError> {
    let detail_type = text(v, &["detail-type"]).ok_or(EventError::Missing("detail-type"))?;
    let detail = &v["detail"];
    let change = match detail_type {
        "Object Created" => Change::Put {
            etag: text(detail, &["object", "etag"])
                .ok_or(EventError::Missing("detail.object.etag"))?
                .to_owned(),
            size: number(detail, &["object", "size"]).unwrap_or_default(),
        },
        "Object Deleted" => Change::Delete,
        _ => return Ok(None),
    };
    let bucket =
        text(detail, &["bucket", "name"]).ok_or(EventError::Missing("detail.bucket.name"))?;
    let key = text(detail, &["object", "key"]).ok_or(EventError::Missing("detail.object.key"))?;
    let sequencer = text(detail, &["object", "sequencer"])
        .ok_or(EventError::Missing("detail.object.sequencer"))?;
    Ok(Some(ObjectEvent {
        bucket: bucket.to_owned(),
        key: decoded(key, decoding.decode_eventbridge)?,
        sequencer: Sequencer::parse(sequencer)?,
        change,
    }))
}

/// One record of an S3 notification (`Records[]` of the message S3 sends to SQS, SNS or Lambda).
fn s3_record(r: &Value) -> Result<Option<ObjectEvent>, EventError> {
    let name = text(r, &["eventName"]).ok_or(EventError::Missing("eventName"))?;
    let name = name.strip_prefix("s3:").unwrap_or(name);
    let object = &r["s3"]["object"];
    let change = if name.starts_with("ObjectCreated:") {
        Change::Put {
            etag: text(object, &["eTag"])
                .ok_or(EventError::Missing("s3.object.eTag"))?
                .to_owned(),
            size: number(object, &["size"]).unwrap_or_default(),
        }
    } else if name.starts_with("ObjectRemoved:") {
        Change::Delete
    } else {
        return Ok(None);
    };
    let bucket = text(r, &["s3", "bucket", "name"]).ok_or(EventError::Missing("s3.bucket.name"))?;
    let key = text(object, &["key"]).ok_or(EventError::Missing("s3.object.key"))?;
    let sequencer =
        text(object, &["sequencer"]).ok_or(EventError::Missing("s3.object.sequencer"))?;
    Ok(Some(ObjectEvent {
        bucket: bucket.to_owned(),
        key: decoded(key, true)?,
        sequencer: Sequencer::parse(sequencer)?,
        change,
    }))
}

fn sqs_message(m: &Value, decoding: Decoding) -> SqsMessage {
    let id = text(m, &["messageId"]).unwrap_or_default().to_owned();
    SqsMessage {
        events: sqs_body(m, decoding),
        id,
    }
}

fn sqs_body(m: &Value, decoding: Decoding) -> Result<Vec<ObjectEvent>, EventError> {
    let body = text(m, &["body"]).ok_or(EventError::Missing("body"))?;
    let mut body: Value =
        serde_json::from_str(body).map_err(|e| EventError::BadBody(e.to_string()))?;
    // S3 → SNS → SQS: the notification is the SNS envelope's Message.
    if body.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(message) = body.get("Message").and_then(Value::as_str)
    {
        body = serde_json::from_str(message).map_err(|e| EventError::BadBody(e.to_string()))?;
    }
    // An EventBridge rule whose target is the queue: the body is the event itself.
    if body.get("source").and_then(Value::as_str) == Some("aws.s3") && body.get("detail").is_some()
    {
        return Ok(eventbridge(&body, decoding)?.into_iter().collect());
    }
    // The message S3 sends when a notification is configured: nothing to do.
    if body.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let records = body
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| EventError::BadBody("no Records".into()))?;
    let mut out = Vec::new();
    for r in records {
        if let Some(e) = s3_record(r)? {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seq(s: &str) -> Sequencer {
        Sequencer::parse(s).unwrap()
    }

    #[test]
    fn sequencers_compare_right_padded() {
        // Different lengths: the shorter is right-padded with zeros before comparing.
        assert!(seq("0055AED6DCD90281E5") > seq("0055AED6DCD90281E"));
        assert!(seq("0055AED6DCD90281E5") < seq("0055AED6DCD90281E50001"));
        assert!(seq("0055AED6DCD90281E5") > seq("0055AED6DCD9028"));
        assert_eq!(seq("0055aed6dcd90281e5"), seq("0055AED6DCD90281E5"));
        assert_eq!(seq("AB"), seq("AB00"));
        assert!(seq("0A") < seq("0B"));
        assert!(seq("617F08299329D189") > seq("617F08299329D188"));
        assert_eq!(seq("1").as_str().len(), SEQUENCER_WIDTH);
        for bad in ["", "xyz", "12 34", &"F".repeat(SEQUENCER_WIDTH + 1)] {
            assert!(Sequencer::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn eventbridge_events_through_an_sqs_queue() {
        let d = Decoding::default();
        let created = eventbridge_event("Object Created", "site/a%20b.txt");
        let other = eventbridge_event("Object Restore Completed", "site/x");
        let payload = json!({"Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": created.to_string()},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": other.to_string()},
        ]});
        let Invocation::Sqs(messages) = parse(&payload, d).unwrap() else {
            panic!("not an SQS batch")
        };
        let events = messages[0].events.as_ref().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key, "site/a b.txt");
        assert!(matches!(events[0].change, Change::Put { .. }));
        assert_eq!(messages[1].events, Ok(Vec::new()));
    }

    fn eventbridge_event(detail_type: &str, key: &str) -> Value {
        json!({
            "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": detail_type, "source": "aws.s3", "account": "111122223333",
            "time": "2021-11-12T00:00:00Z", "region": "ca-central-1",
            "resources": ["arn:aws:s3:::bucket"],
            "detail": {
                "version": "0", "bucket": {"name": "bucket"},
                "object": {"key": key, "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184",
                           "sequencer": "617f08299329d189"},
                "reason": "PutObject"
            }
        })
    }

    #[test]
    fn eventbridge_created_and_deleted() {
        let d = Decoding::default();
        let Invocation::EventBridge { id, event } = parse(
            &eventbridge_event("Object Created", "site/red+flower%3F.jpg"),
            d,
        )
        .unwrap() else {
            panic!("not eventbridge")
        };
        assert_eq!(id, "17793124-05d4-b198-2fde-7ededc63b103");
        let e = event.unwrap().unwrap();
        assert_eq!(e.key, "site/red flower?.jpg");
        assert_eq!(e.bucket, "bucket");
        assert_eq!(
            e.change,
            Change::Put {
                etag: "b1946ac92492d2347c6235b4d2611184".into(),
                size: 5
            }
        );
        let Invocation::EventBridge { event, .. } =
            parse(&eventbridge_event("Object Deleted", "a%2Bb.txt"), d).unwrap()
        else {
            panic!()
        };
        let e = event.unwrap().unwrap();
        assert_eq!((e.key.as_str(), e.change), ("a+b.txt", Change::Delete));
        // Raw keys when configured so.
        let raw = Decoding {
            decode_eventbridge: false,
        };
        let Invocation::EventBridge { event, .. } =
            parse(&eventbridge_event("Object Deleted", "a+b.txt"), raw).unwrap()
        else {
            panic!()
        };
        assert_eq!(event.unwrap().unwrap().key, "a+b.txt");
        // Other detail types change nothing.
        let Invocation::EventBridge { event, .. } =
            parse(&eventbridge_event("Object Restore Completed", "a"), d).unwrap()
        else {
            panic!()
        };
        assert_eq!(event, Ok(None));
        let mut bad = eventbridge_event("Object Created", "a%zz");
        let Invocation::EventBridge { event, .. } = parse(&bad, d).unwrap() else {
            panic!()
        };
        assert_eq!(event, Err(EventError::BadKey("a%zz".into())));
        bad["detail"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("sequencer");
        bad["detail"]["object"]["key"] = json!("ok");
        let Invocation::EventBridge { event, .. } = parse(&bad, d).unwrap() else {
            panic!()
        };
        assert_eq!(event, Err(EventError::Missing("detail.object.sequencer")));
    }

    fn record(name: &str, key: &str, seq: &str) -> Value {
        json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventName": name,
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "bucket"},
                   "object": {"key": key, "size": 1024, "eTag": "0123456789abcdef", "sequencer": seq}}
        })
    }

    #[test]
    fn sqs_batches_with_test_events_sns_envelopes_and_bad_bodies() {
        let body = json!({"Records": [record("ObjectCreated:Put", "site/a+b%C3%BC.txt", "0A1B"),
                                      record("ObjectRemoved:DeleteMarkerCreated", "site/x", "0A1C"),
                                      record("ObjectRestore:Completed", "site/y", "0A1D")]});
        let sns = json!({"Type": "Notification", "Message": json!({"Records": [record("s3:ObjectRemoved:Delete", "k", "01")]}).to_string()});
        let payload = json!({"Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": body.to_string()},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bucket"}).to_string()},
            {"messageId": "m3", "eventSource": "aws:sqs", "body": "not json"},
            {"messageId": "m4", "eventSource": "aws:sqs", "body": sns.to_string()},
        ]});
        let Invocation::Sqs(messages) = parse(&payload, Decoding::default()).unwrap() else {
            panic!("not sqs")
        };
        assert_eq!(messages.len(), 4);
        let m1 = messages[0].events.as_ref().unwrap();
        assert_eq!(messages[0].id, "m1");
        assert_eq!(m1.len(), 2);
        assert_eq!(m1[0].key, "site/a bü.txt");
        assert_eq!(m1[0].sequencer, seq("0A1B"));
        assert_eq!(m1[1].change, Change::Delete);
        assert_eq!(messages[1].events, Ok(vec![]));
        assert!(matches!(messages[2].events, Err(EventError::BadBody(_))));
        let m4 = messages[3].events.as_ref().unwrap();
        assert_eq!((m4[0].key.as_str(), &m4[0].change), ("k", &Change::Delete));
    }

    #[test]
    fn direct_s3_records_reconcile_and_unknown_payloads() {
        let payload = json!({"Records": [record("ObjectCreated:Copy", "a%3Ab", "01")]});
        let Invocation::S3(records) = parse(&payload, Decoding::default()).unwrap() else {
            panic!()
        };
        assert_eq!(records[0].as_ref().unwrap().as_ref().unwrap().key, "a:b");
        assert_eq!(
            parse(&json!({"reconcile": true}), Decoding::default()),
            Ok(Invocation::Reconcile {
                only_continue: false
            })
        );
        assert_eq!(
            parse(&json!({"reconcile": "continue"}), Decoding::default()),
            Ok(Invocation::Reconcile {
                only_continue: true
            })
        );
        assert!(parse(&json!({"hello": 1}), Decoding::default()).is_err());
        assert!(
            parse(
                &json!({"Records": [{"eventSource": "aws:kinesis"}]}),
                Decoding::default()
            )
            .is_err()
        );
    }
}
