//! The S3 side: list a prefix, fetch one object exactly as listed.

use crate::plan::Object;
use aws_config::SdkConfig;
use aws_sdk_s3::types::EncodingType;
use aws_sdk_s3::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
};
use std::pin::Pin;
use tokio::io::AsyncRead;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the bucket {bucket} does not exist (or not in this partition): fix Bucket")]
    NoSuchBucket { bucket: String },
    #[error(
        "access denied calling s3:{action} on {resource}: grant the function's role s3:ListBucket on \
         arn:aws:s3:::{bucket} (it may be limited with the condition s3:prefix) and s3:GetObject on \
         arn:aws:s3:::{bucket}/<Prefix>*, and kms:Decrypt if the objects use a KMS key"
    )]
    AccessDenied {
        action: &'static str,
        bucket: String,
        resource: String,
    },
    #[error(
        "the bucket {bucket} is in another region than the function ({message}): deploy the function in the bucket's region, or copy the content there"
    )]
    WrongRegion { bucket: String, message: String },
    #[error("s3:{action} on {resource} failed: {message}")]
    Other {
        action: &'static str,
        resource: String,
        message: String,
    },
    #[error("was deleted after it was listed")]
    Vanished,
    #[error("changed after it was listed (its ETag is no longer {etag}): run the copy again")]
    Changed { etag: String },
    #[error("the download ended after {got} of {size} bytes")]
    Truncated { got: u64, size: u64 },
}

impl SourceError {
    fn from_sdk<E, R>(
        action: &'static str,
        bucket: &str,
        resource: &str,
        err: SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string());
        let bucket = bucket.to_owned();
        let resource = resource.to_owned();
        match err.code() {
            Some("NoSuchBucket") => Self::NoSuchBucket { bucket },
            Some("AccessDenied" | "AccessDeniedException" | "AllAccessDisabled") => {
                Self::AccessDenied {
                    action,
                    bucket,
                    resource,
                }
            }
            Some(
                "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException",
            ) => Self::WrongRegion { bucket, message },
            Some("NoSuchKey") => Self::Vanished,
            Some(code) => Self::Other {
                action,
                resource,
                message: format!("{code}: {message}"),
            },
            None => Self::Other {
                action,
                resource,
                message,
            },
        }
    }
}

/// An object being downloaded.
pub struct Download {
    pub size: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// An S3 client built once per container.
#[derive(Debug, Clone)]
pub struct S3Source {
    client: Client,
}

impl S3Source {
    /// A client from the shared configuration. With an endpoint override (moto, LocalStack, a
    /// VPC endpoint URL) bucket names go in the path: such endpoints do not serve
    /// `<bucket>.<host>` names.
    pub fn new(sdk: &SdkConfig) -> Self {
        let overridden = sdk.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(overridden)
            .build();
        Self::from_client(Client::from_conf(config))
    }

    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// Every object under `prefix` (folder markers included; the planner skips them).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Object>, SourceError> {
        let resource = format!("s3://{bucket}/{prefix}");
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            // Keys may hold characters XML 1.0 cannot carry (control characters): ask S3 to
            // URL-encode them, as the AWS CLI does, and decode below.
            .encoding_type(EncodingType::Url)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut page_count = 0usize;
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| SourceError::from_sdk("ListBucket", bucket, &resource, e))?;
            for o in page.contents() {
                let Some(encoded) = o.key() else { continue };
                let Some(key) = decode_key(encoded) else {
                    tracing::warn!(key = %encoded, "a listed key does not decode to UTF-8; skipped");
                    continue;
                };
                out.push(Object {
                    key,
                    size: o.size().unwrap_or_default().max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_owned(),
                });
            }
            page_count += 1;
            if page_count.is_multiple_of(10) {
                tracing::info!(objects = out.len(), source = %resource, "listing");
            }
        }
        Ok(out)
    }

    /// A stream of the bytes of `object`, exactly the version listed (`If-Match` on its ETag),
    /// and its length.
    pub async fn open(&self, bucket: &str, object: &Object) -> Result<Download, SourceError> {
        let resource = format!("s3://{bucket}/{}", object.key);
        let mut request = self.client.get_object().bucket(bucket).key(&object.key);
        if !object.etag.is_empty() {
            request = request.if_match(&object.etag);
        }
        let out = request.send().await.map_err(|e| {
            if e.code() == Some("PreconditionFailed") {
                SourceError::Changed {
                    etag: object.etag.clone(),
                }
            } else {
                SourceError::from_sdk("GetObject", bucket, &resource, e)
            }
        })?;
        let size = out
            .content_length()
            .map(|n| n.max(0) as u64)
            .unwrap_or(object.size);
        Ok(Download {
            size,
            reader: Box::pin(out.body.into_async_read()),
        })
    }
}

/// A key as S3 returns it with `encoding-type=url`, or as its event notifications carry it:
/// `%XX` escapes, and `+` for a space (S3 encodes a literal `+` as `%2B`). `None` if an escape
/// is malformed or the bytes are not UTF-8.
pub fn decode_key(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = encoded.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::decode_key;

    #[test]
    fn url_encoded_keys_decode() {
        assert_eq!(decode_key("a%3Ab").as_deref(), Some("a:b"));
        assert_eq!(decode_key("ctl%01.txt").as_deref(), Some("ctl\u{1}.txt"));
        assert_eq!(
            decode_key("sp%20ace%2Bplus.txt").as_deref(),
            Some("sp ace+plus.txt")
        );
        assert_eq!(decode_key("sp+ace").as_deref(), Some("sp ace"));
        assert_eq!(decode_key("%C3%BC.txt").as_deref(), Some("ü.txt"));
        assert_eq!(decode_key("ü.txt").as_deref(), Some("ü.txt"));
        assert_eq!(
            decode_key("plain/key.html").as_deref(),
            Some("plain/key.html")
        );
        assert_eq!(decode_key("bad%zz"), None);
        assert_eq!(decode_key("cut%4"), None);
        assert_eq!(decode_key("%FF"), None);
    }
}
