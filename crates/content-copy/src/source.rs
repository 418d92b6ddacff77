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

/// One folder of a bucket ([`S3Source::list_folder`]).
#[derive(Debug, Clone, Default)]
pub struct Folder {
    /// The objects directly in it.
    pub objects: Vec<Object>,
    /// The prefixes of its subfolders, each ending in `/`.
    pub folders: Vec<String>,
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

    /// One "folder" of the bucket: the objects directly under `prefix` (which ends in `/`, or
    /// is empty for the top) and the prefixes of the folders below it, each in S3's order (by
    /// the UTF-8 bytes of the key). One ListObjectsV2 with the `/` delimiter per 1,000 entries:
    /// memory grows with the folder, never with the bucket.
    pub async fn list_folder(&self, bucket: &str, prefix: &str) -> Result<Folder, SourceError> {
        let mut out = Folder::default();
        let mut token = None;
        loop {
            let (page, next) = self.list_folder_page(bucket, prefix, token).await?;
            out.objects.extend(page.objects);
            out.folders.extend(page.folders);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// One page (up to 1,000 entries) of [`Self::list_folder`], from `token` (the previous
    /// page's continuation token; `None` for the first): memory of one page, whatever the
    /// folder holds.
    pub async fn list_folder_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Folder, Option<String>), SourceError> {
        let resource = format!("s3://{bucket}/{prefix}");
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .encoding_type(EncodingType::Url)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| SourceError::from_sdk("ListBucket", bucket, &resource, e))?;
        let mut out = Folder::default();
        for o in page.contents() {
            let encoded = o.key().unwrap_or_default();
            let Some(key) = decode_key(encoded) else {
                tracing::warn!(key = %encoded, "a listed key does not decode to UTF-8; skipped");
                continue;
            };
            out.objects.push(Object {
                key,
                size: o.size().unwrap_or_default().max(0) as u64,
                etag: o.e_tag().unwrap_or_default().to_owned(),
            });
        }
        for p in page.common_prefixes() {
            let encoded = p.prefix().unwrap_or_default();
            match decode_key(encoded) {
                Some(folder) => out.folders.push(folder),
                None => {
                    tracing::warn!(prefix = %encoded, "a listed prefix does not decode to UTF-8; skipped")
                }
            }
        }
        let next = if page.is_truncated() == Some(true) {
            page.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((out, next))
    }

    /// The current version of `key` (HeadObject), or `None` if there is none: deleted, or, in
    /// a versioned bucket, a delete marker on top.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<Object>, SourceError> {
        let resource = format!("s3://{bucket}/{key}");
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Object {
                key: key.to_owned(),
                size: out.content_length().unwrap_or_default().max(0) as u64,
                etag: out.e_tag().unwrap_or_default().to_owned(),
            })),
            // HEAD has no body, so S3 answers a missing key with a bare 404 (`NotFound`), and a
            // delete marker on top with 404 and `x-amz-delete-marker: true`: both mean "none".
            Err(e)
                if e.as_service_error().is_some_and(|se| se.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                Ok(None)
            }
            // Without s3:ListBucket, S3 answers HEAD of a missing key with 403, not 404.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
                Err(SourceError::Other {
                    action: "GetObject",
                    resource,
                    message: format!(
                        "access denied (HEAD). S3 answers a missing key with 403 unless the caller may \
                         s3:ListBucket: grant the function's role s3:GetObject on the prefix and \
                         s3:ListBucket on arn:aws:s3:::{bucket}"
                    ),
                })
            }
            Err(e) => Err(SourceError::from_sdk("GetObject", bucket, &resource, e)),
        }
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
/// `%XX` escapes (exactly two hex digits), and `+` for a space (S3 encodes a literal `+` as
/// `%2B`). `None` if an escape is malformed or the bytes are not UTF-8.
pub fn decode_key(encoded: &str) -> Option<String> {
    let mut bytes = encoded.bytes();
    let mut out = Vec::with_capacity(encoded.len());
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            // Digit by digit: `u8::from_str_radix` would also take a sign (`%+A` as 0x0A).
            b'%' => {
                let high = hex_digit(bytes.next()?)?;
                let low = hex_digit(bytes.next()?)?;
                high << 4 | low
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
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

    #[test]
    fn decode_key_takes_exactly_two_hex_digits() {
        // `from_str_radix` takes a sign: `%+A` must not be read as byte 0x0A, nor `%-1` as -1.
        assert_eq!(decode_key("%+A"), None);
        assert_eq!(decode_key("a%+Ab"), None);
        assert_eq!(decode_key("%-1"), None);
        assert_eq!(decode_key("%+0"), None);
        assert_eq!(decode_key("%4"), None);
        assert_eq!(decode_key("%zz"), None);
        assert_eq!(decode_key("%4z"), None);
        assert_eq!(decode_key("%"), None);
        assert_eq!(decode_key("key%"), None);
        assert_eq!(decode_key("%%41"), None);
        // An escape followed by a multi-byte character is not two hex digits either.
        assert_eq!(decode_key("%4é"), None);
        assert_eq!(decode_key("%é1"), None);
        assert_eq!(decode_key("%0a%0A").as_deref(), Some("\n\n"));
        assert_eq!(decode_key("%41%62").as_deref(), Some("Ab"));
    }

    #[test]
    fn escapes_decode_to_utf8_or_nothing() {
        // Valid multi-byte UTF-8, escaped or not, and both mixed.
        assert_eq!(decode_key("%E6%97%A5.txt").as_deref(), Some("日.txt"));
        assert_eq!(decode_key("%F0%9F%98%80").as_deref(), Some("😀"));
        assert_eq!(decode_key("日%E6%9C%AC").as_deref(), Some("日本"));
        // Invalid UTF-8: a lone continuation byte, a truncated sequence, an overlong form, a
        // surrogate half.
        assert_eq!(decode_key("%80"), None);
        assert_eq!(decode_key("%E6%97"), None);
        assert_eq!(decode_key("%C0%AF"), None);
        assert_eq!(decode_key("%ED%A0%80"), None);
        // A truncated sequence completed by a literal character is still invalid.
        assert_eq!(decode_key("%C3x"), None);
    }

    /// Replays the fuzz corpus of the `decode_key` target (fuzz/, run by scripts/fuzz-paths)
    /// through the checks that target asserts, so CI asserts them again on stable Rust.
    #[test]
    fn decode_key_keeps_its_promises_on_the_fuzz_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode_key");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "{}: only {} inputs",
            dir.display(),
            files.len()
        );
        let broken: Vec<String> = files
            .iter()
            .filter_map(|path| {
                let data = std::fs::read(path).expect("a corpus file");
                content_paths::invariants::check_decode_key(&data, decode_key)
                    .err()
                    .map(|v| format!("{}: {v}", path.display()))
            })
            .collect();
        assert!(broken.is_empty(), "{}", broken.join("\n"));
    }
}
