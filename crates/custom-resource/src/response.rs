//! The response document CloudFormation expects, kept within its 4,096-byte limit.

use serde::Serialize;
use serde_json::{Map, Value};

/// CloudFormation rejects response bodies larger than this.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// CloudFormation's limit on a physical resource id.
pub const MAX_PHYSICAL_ID_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Success,
    Failed,
}

/// What a successful Create or Update returns: attributes for `Fn::GetAtt`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub data: Map<String, Value>,
    /// Mask the data in CloudFormation's console and API output.
    pub no_echo: bool,
}

impl Outcome {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    pub fn no_echo(mut self) -> Self {
        self.no_echo = true;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub no_echo: bool,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
}

const TRUNCATED: &str = " …[truncated]";

impl Response {
    /// Serialize within [`MAX_RESPONSE_BYTES`]. Oversized `Data` turns the response into FAILED
    /// with a reason that says so (a SUCCESS without the promised attributes would break
    /// `Fn::GetAtt` later and far from the cause); an oversized reason is truncated at a character
    /// boundary, keeping `suffix` (the log stream pointer) intact.
    pub fn encode(mut self, suffix: &str) -> Vec<u8> {
        let body = self.serialized(suffix);
        if body.len() <= MAX_RESPONSE_BYTES {
            return body;
        }
        if !self.data.is_empty() {
            let data_bytes = serde_json::to_vec(&self.data)
                .map(|v| v.len())
                .unwrap_or_default();
            self.status = Status::Failed;
            self.reason = Some(format!(
                "the response Data is {data_bytes} bytes and the whole response would be {} bytes, over \
                 CloudFormation's {MAX_RESPONSE_BYTES}-byte limit: return fewer or shorter attributes",
                body.len()
            ));
            self.data.clear();
            self.no_echo = false;
        }
        let body = self.serialized(suffix);
        if body.len() <= MAX_RESPONSE_BYTES {
            return body;
        }
        // Keep the longest prefix of the reason that fits. JSON escaping makes a character cost 1
        // to 6 bytes, so search on the serialized size rather than compute it.
        let reason: String = self.reason.take().unwrap_or_default();
        let fits = |keep: usize, this: &mut Self| {
            this.reason = Some(format!("{}{TRUNCATED}", &reason[..keep]));
            this.serialized(suffix)
        };
        let (mut lo, mut hi) = (0usize, reason.len());
        while lo < hi {
            let mut mid = (lo + hi).div_ceil(2);
            while !reason.is_char_boundary(mid) {
                mid -= 1;
            }
            if mid <= lo {
                break;
            }
            if fits(mid, &mut self).len() <= MAX_RESPONSE_BYTES {
                lo = mid;
            } else {
                hi = mid - 1;
                while !reason.is_char_boundary(hi) {
                    hi -= 1;
                }
            }
        }
        fits(lo, &mut self)
    }

    fn serialized(&self, suffix: &str) -> Vec<u8> {
        let mut shown = self.clone();
        // The log stream pointer helps only where something went wrong.
        if !suffix.is_empty() && shown.status == Status::Failed {
            shown.reason = Some(match shown.reason {
                Some(r) => format!("{r}{suffix}"),
                None => suffix.trim_start().to_owned(),
            });
        }
        // Serializing these plain types cannot fail; fall back to an empty object rather than panic.
        serde_json::to_vec(&shown).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(status: Status, reason: Option<String>, data: Map<String, Value>) -> Response {
        Response {
            status,
            reason,
            physical_resource_id: "pid".into(),
            stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/g".into(),
            request_id: "req".into(),
            logical_resource_id: "Res".into(),
            no_echo: false,
            data,
        }
    }

    #[test]
    fn small_response_is_unchanged_and_shaped_as_cloudformation_wants() {
        let mut data = Map::new();
        data.insert("Arn".into(), json!("arn:x"));
        let body = response(Status::Success, None, data).encode("");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Status"], "SUCCESS");
        assert_eq!(v["PhysicalResourceId"], "pid");
        assert_eq!(v["Data"]["Arn"], "arn:x");
        assert_eq!(v["NoEcho"], false);
        assert!(v.get("Reason").is_none());
    }

    #[test]
    fn oversized_data_becomes_failed_with_a_clear_reason() {
        let mut data = Map::new();
        data.insert("Big".into(), json!("x".repeat(5000)));
        let body = response(Status::Success, None, data).encode(" [log stream: s]");
        assert!(body.len() <= MAX_RESPONSE_BYTES);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Status"], "FAILED");
        let reason = v["Reason"].as_str().unwrap();
        assert!(
            reason.contains("4096-byte limit") && reason.contains("Data is"),
            "{reason}"
        );
        assert!(reason.ends_with("[log stream: s]"));
        assert!(v.get("Data").is_none());
    }

    #[test]
    fn long_reason_is_truncated_at_a_char_boundary_keeping_the_suffix() {
        for filler in ["é", "a", "\"", "\u{1}", "日"] {
            let reason = filler.repeat(9000);
            let body =
                response(Status::Failed, Some(reason), Map::new()).encode(" [log stream: 2026/x]");
            assert!(body.len() <= MAX_RESPONSE_BYTES, "{filler}: {}", body.len());
            assert!(
                body.len() > MAX_RESPONSE_BYTES - 64,
                "{filler}: wasted space {}",
                body.len()
            );
            let v: Value = serde_json::from_slice(&body).unwrap();
            let reason = v["Reason"].as_str().unwrap();
            assert!(
                reason.ends_with("…[truncated] [log stream: 2026/x]"),
                "{reason}"
            );
        }
    }
}
