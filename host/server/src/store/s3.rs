//! The tool store in S3, shared by every replica: `PREFIX/blobs/<digest>.wasm`
//! and `PREFIX/index.json`. The index changes only by conditional writes
//! (`If-Match` its ETag, `If-None-Match: *` for the first one), so replicas
//! changing it at once each retry on the other's result and none is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use serde::Deserialize;

use super::{Index, NO_INDEX, StoreError, StoredTool, ToolStore, digest_of};

/// How to reach S3 (or an S3-compatible server). Unset fields come from the
/// standard AWS chain (environment, profile, ECS task role).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// An endpoint other than AWS's (an S3-compatible server).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The bucket's region.
    #[serde(default)]
    pub region: Option<String>,
    /// `endpoint/bucket/key` addressing instead of `bucket.endpoint/key`
    /// (most S3-compatible servers need it).
    #[serde(default)]
    pub path_style: bool,
}

/// An `s3://` URL that names no usable bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3LocationError {
    /// Not a valid S3 bucket name.
    #[error(
        "`{text}`: `{bucket}` is not an S3 bucket name (3-63 of a-z 0-9 . -, starting and ending with a letter or digit)"
    )]
    BucketName {
        /// The URL as given.
        text: String,
        /// The bucket it names.
        bucket: String,
    },
}

/// `s3://BUCKET[/PREFIX]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, empty or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parse `s3://BUCKET[/PREFIX]`; `None` if `text` is not an `s3://` URL.
    pub fn parse(text: &str) -> Option<Result<S3Location, S3LocationError>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid {
            return Some(Err(S3LocationError::BucketName {
                text: text.to_string(),
                bucket: bucket.to_string(),
            }));
        }
        let prefix = prefix.trim_matches('/');
        Some(Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }))
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The store in a bucket.
pub struct S3Store {
    client: Client,
    at: S3Location,
    // The trait is blocking (callers are on `spawn_blocking`); the SDK is async.
    runtime: tokio::runtime::Handle,
    grace: u64,
}

const INDEX: &str = "index.json";
/// Conditional writes that lost to another replica, retried on its result.
const INDEX_ATTEMPTS: usize = 16;

fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3Store {
    /// A client for `at` (from the standard AWS chain and `config`), after
    /// one read of the index shows the bucket is there and readable.
    pub async fn open(at: S3Location, config: &S3Config) -> Result<S3Store, StoreError> {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(region) = &config.region {
            builder = builder.region(aws_sdk_s3::config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let store = S3Store::with_client(Client::from_conf(builder.build()), at);
        store.read_index(None).await.map_err(|e| {
            StoreError::new(
                &store.at,
                format!(
                    "{}; check the bucket's name and region, and that this task may s3:GetObject, s3:PutObject and s3:DeleteObject under the prefix",
                    e.message
                ),
            )
        })?;
        Ok(store)
    }

    /// The store at `at` through a client the caller built. Inside a Tokio
    /// runtime, whose handle the blocking methods use.
    pub fn with_client(client: Client, at: S3Location) -> S3Store {
        S3Store {
            client,
            at,
            runtime: tokio::runtime::Handle::current(),
            grace: super::ORPHAN_GRACE_SECS,
        }
    }

    /// Keep unnamed blobs `secs` seconds before deleting them.
    pub fn with_grace(mut self, secs: u64) -> S3Store {
        self.grace = secs;
        self
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.at.prefix)
    }

    fn blob_key(&self, digest: &str) -> Result<String, StoreError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::new(
                &self.at,
                format!("`{digest}` is not a sha256 digest"),
            ));
        }
        Ok(self.key(&format!("blobs/{digest}.wasm")))
    }

    fn error(&self, what: &str, e: impl std::error::Error) -> StoreError {
        StoreError::new(&self.at, format!("{what}: {}", DisplayErrorContext(e)))
    }

    /// The index and its ETag (empty when there is none yet); `None` when
    /// its ETag is still `if_none_match`.
    async fn read_index(
        &self,
        if_none_match: Option<&str>,
    ) -> Result<Option<(String, Index)>, StoreError> {
        let got = self
            .client
            .get_object()
            .bucket(&self.at.bucket)
            .key(self.key(INDEX))
            .set_if_none_match(if_none_match.map(str::to_string))
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if status(&e) == Some(304) => return Ok(None),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Some((String::new(), Index::default())));
            }
            Err(e) => return Err(self.error("reading the index", e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| self.error("reading the index", e))?
            .into_bytes();
        let index = Index::parse(&bytes)
            .map_err(|e| StoreError::new(&self.at, format!("the index is not valid: {e}")))?;
        Ok(Some((etag, index)))
    }

    /// Write `index` if the stored one is still at `etag`; whether it was.
    async fn write_index(&self, index: &Index, etag: &str) -> Result<bool, StoreError> {
        let body = serde_json::to_vec_pretty(index).map_err(|e| StoreError::new(&self.at, e))?;
        let put = self
            .client
            .put_object()
            .bucket(&self.at.bucket)
            .key(self.key(INDEX))
            .content_type("application/json")
            .body(ByteStream::from(body));
        let put = if etag.is_empty() {
            put.if_none_match("*")
        } else {
            put.if_match(etag)
        };
        match put.send().await {
            Ok(_) => Ok(true),
            // 412: changed since read; 409: a conditional write racing ours.
            Err(e) if matches!(status(&e), Some(412 | 409)) => Ok(false),
            Err(e) => Err(self.error("writing the index", e)),
        }
    }

    /// Apply `change` to the current index until the write wins (a change
    /// is decided again on each retry, against the index as it is then);
    /// what it returned, after deleting the blobs due. A change that
    /// returns `None` writes nothing.
    async fn change<T>(
        &self,
        change: impl Fn(&mut Index) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        for _ in 0..INDEX_ATTEMPTS {
            let Some((etag, mut index)) = self.read_index(None).await? else {
                continue;
            };
            let Some(out) = change(&mut index)? else {
                return Ok(None);
            };
            let due = index.collectable(super::now(), self.grace);
            if self.write_index(&index, &etag).await? {
                self.collect(&due).await;
                return Ok(Some(out));
            }
        }
        Err(StoreError::new(
            &self.at,
            format!("the index changed under each of {INDEX_ATTEMPTS} attempts; try again"),
        ))
    }

    /// Delete blobs no tool has named for the grace period. Best effort: an
    /// orphan costs space, never correctness.
    async fn collect(&self, due: &[String]) {
        for digest in due {
            let Ok(key) = self.blob_key(digest) else {
                continue;
            };
            if let Err(e) = self
                .client
                .delete_object()
                .bucket(&self.at.bucket)
                .key(key)
                .send()
                .await
            {
                tracing::warn!(
                    "tool store {}: deleting an unused blob: {}",
                    self.at,
                    DisplayErrorContext(e)
                );
            }
        }
    }

    /// Write the blob unless it is there (412: the same content is).
    async fn put_blob(&self, key: &str, wasm: &[u8]) -> Result<(), StoreError> {
        let put = self
            .client
            .put_object()
            .bucket(&self.at.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(wasm.to_vec()))
            .send()
            .await;
        match put {
            Err(e) if !matches!(status(&e), Some(412 | 409)) => {
                Err(self.error(&format!("writing {key}"), e))
            }
            _ => Ok(()),
        }
    }

    async fn blob_exists(&self, key: &str) -> Result<bool, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.at.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.error(&format!("checking {key}"), e)),
        }
    }
}

impl ToolStore for S3Store {
    fn list(&self) -> Result<Vec<StoredTool>, StoreError> {
        self.runtime.block_on(async {
            let (_, index) = self.read_index(None).await?.unwrap_or_default();
            Ok(index.tools.into_values().collect())
        })
    }

    fn signers(&self) -> Result<BTreeMap<String, Option<String>>, StoreError> {
        self.runtime.block_on(async {
            let (_, index) = self.read_index(None).await?.unwrap_or_default();
            Ok(index.signers)
        })
    }

    fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let key = self.blob_key(digest)?;
        self.runtime.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.at.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.error(&format!("reading {key}"), e))?;
            let bytes = out
                .body
                .collect()
                .await
                .map_err(|e| self.error(&format!("reading {key}"), e))?
                .into_bytes();
            if digest_of(&bytes) != digest {
                return Err(StoreError::new(
                    &self.at,
                    format!("{key}: its content does not match its digest"),
                ));
            }
            Ok(bytes.to_vec())
        })
    }

    fn put(
        &self,
        entry: &StoredTool,
        wasm: &[u8],
        same_signer: bool,
    ) -> Result<Option<StoredTool>, StoreError> {
        let key = self.blob_key(&entry.digest)?;
        self.runtime.block_on(async {
            // The content first, so that no index names a missing blob.
            self.put_blob(&key, wasm).await?;
            let replaced = self
                .change(|index| {
                    index
                        .put(entry, super::now(), same_signer)
                        .map(Some)
                        .map_err(|was| StoreError::signer_changed(&self.at, was))
                })
                .await?
                .expect("a put always changes the index");
            // A replica's collection may have taken content that was there
            // when it answered 412: the index names it now, so put it back.
            if !self.blob_exists(&key).await? {
                self.put_blob(&key, wasm).await?;
            }
            Ok(replaced)
        })
    }

    fn remove(&self, name: &str) -> Result<Option<StoredTool>, StoreError> {
        self.runtime.block_on(async {
            self.change(|index| Ok(index.remove(name, super::now())))
                .await
        })
    }

    fn poll(&self, seen: Option<&str>) -> Result<Option<(String, Vec<StoredTool>)>, StoreError> {
        self.runtime.block_on(async {
            let etag = seen.filter(|s| *s != NO_INDEX);
            let Some((version, index)) = self.read_index(etag).await? else {
                return Ok(None);
            };
            let version = if version.is_empty() {
                NO_INDEX.to_string()
            } else {
                version
            };
            if seen == Some(version.as_str()) {
                return Ok(None);
            }
            Ok(Some((version, index.tools.into_values().collect())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_or_say_what_is_wrong() {
        let at = S3Location::parse("s3://airlock-tools/prod/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (at.bucket.as_str(), at.prefix.as_str()),
            ("airlock-tools", "prod/")
        );
        let at = S3Location::parse("s3://airlock-tools").unwrap().unwrap();
        assert_eq!(at.prefix, "");
        assert!(S3Location::parse("/var/lib/airlock").is_none());
        let e = S3Location::parse("s3://Tools_Bucket/x")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`Tools_Bucket` is not an S3 bucket name"), "{e}");
    }
}
