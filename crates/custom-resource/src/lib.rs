//! A runtime for CloudFormation custom resources on AWS Lambda, built so that CloudFormation
//! always gets an answer.
//!
//! Implement [`CustomResource`] for a type with typed properties; call [`serve`] from `main`.
//! The runtime:
//! - parses the raw event as JSON first and, once the `ResponseURL` is known, answers FAILED for
//!   anything that goes wrong: an event of the wrong shape, missing or ill-typed properties, a
//!   handler error, a panic, the Lambda deadline coming close, or a failed initialisation (reported
//!   on every event, while the process keeps serving);
//! - accepts CloudFormation's string-encoded numbers and booleans ([`cfn`]);
//! - uses deterministic physical ids: an Update keeps the id unless the id computed from the new
//!   properties differs (a replacement, which CloudFormation completes by deleting the old id);
//!   a Delete of a resource whose Create failed succeeds without calling the handler;
//! - PUTs the response with bounded retries, status checks and timeouts, within CloudFormation's
//!   4,096-byte limit;
//! - logs JSON lines through `tracing` and never logs the pre-signed `ResponseURL`.

pub mod cfn;
pub mod env;
mod event;
mod invalid;
pub mod logging;
mod responder;
mod response;
mod runtime;

pub use event::{Request, RequestType, StackArn};
pub use invalid::{Invalid, invalid};
pub use responder::{HttpResponder, ResponderConfig, ResponseError};
pub use response::{MAX_RESPONSE_BYTES, Outcome, Response, Status};
pub use runtime::{CREATE_FAILED_PREFIX, CustomResource, Unreadable, serve};
pub use secrets::Secret;

#[doc(hidden)]
pub use runtime::answer;
