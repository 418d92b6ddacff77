//! The CloudFormation custom resource request, parsed in two stages: the envelope (which says
//! where to answer) and then the typed properties.

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

impl std::fmt::Display for RequestType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Delete => "Delete",
        })
    }
}

/// The fields every request carries, before the resource's own properties are looked at.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Envelope {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub _response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub resource_type: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: Map<String, Value>,
    #[serde(default)]
    pub old_resource_properties: Option<Map<String, Value>>,
}

/// What a handler sees of a request.
#[derive(Debug, Clone)]
pub struct Request<P> {
    pub request_type: RequestType,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub resource_type: String,
    /// Present on Update and Delete: the id this resource was created with.
    pub physical_resource_id: Option<String>,
    /// Set when `create` is called for an Update that needs a replacement: the id being
    /// replaced, whose Delete CloudFormation sends once the update completes.
    pub replacing: Option<String>,
    pub properties: P,
}

impl<P> Request<P> {
    /// Partition, region and account of the stack, from its ARN
    /// (`arn:aws:cloudformation:us-east-1:123456789012:stack/name/guid`).
    pub fn stack(&self) -> Option<StackArn<'_>> {
        StackArn::parse(&self.stack_id)
    }

    /// Whether this is an Update applied in place (not a replacement's Create).
    pub fn in_place_update(&self) -> bool {
        self.request_type == RequestType::Update && self.replacing.is_none()
    }

    /// Ownership of an object this request creates or changes, from what the object carried
    /// before: an in-place Update settles it, a Create (or a replacement's) claims it.
    /// `same_object` says whether the replaced id names the object (see
    /// [`ownership::Ownership::claim`]).
    pub fn claim(
        &self,
        before: ownership::Before<'_>,
        id: &str,
        same_object: impl Fn(&str) -> bool,
    ) -> ownership::Ownership {
        if self.in_place_update() {
            ownership::Ownership::settled(id)
        } else {
            ownership::Ownership::claim(before, id, self.replacing.as_deref(), same_object)
        }
    }

    /// A value that identifies this resource in this stack, for ownership tags and markers.
    pub fn owner(&self) -> String {
        format!("{}/{}", self.stack_id, self.logical_resource_id)
    }
}

/// The parts of a CloudFormation stack ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackArn<'a> {
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub stack_name: &'a str,
}

impl<'a> StackArn<'a> {
    pub fn parse(arn: &'a str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some("cloudformation"),
            Some(region),
            Some(account),
            Some(rest),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return None;
        };
        let stack_name = rest.strip_prefix("stack/")?.split('/').next()?;
        if partition.is_empty() || region.is_empty() || account.is_empty() {
            return None;
        }
        Some(Self {
            partition,
            region,
            account,
            stack_name,
        })
    }
}

/// Properties CloudFormation adds on its own; a resource's typed properties never see them.
pub(crate) const RESERVED_PROPERTIES: [&str; 2] = ["ServiceToken", "ServiceTimeout"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_arn_parts() {
        let a =
            StackArn::parse("arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/web/abc-123")
                .unwrap();
        assert_eq!(
            a,
            StackArn {
                partition: "aws-cn",
                region: "cn-north-1",
                account: "123456789012",
                stack_name: "web"
            }
        );
        assert!(StackArn::parse("arn:aws:s3:::bucket").is_none());
        assert!(StackArn::parse("not an arn").is_none());
    }
}
