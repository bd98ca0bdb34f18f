//! S3 and S3-compatible object stores, through the `object_store` crate.
//!
//! - [`PutMode::Create`] is a PUT with `If-None-Match: *`; stores that ignore the header
//!   are detected by [`probe_create_if_absent`](super::probe_create_if_absent).
//! - [`PutMode::Update`] is a PUT with `If-Match: <ETag>`; a version is the object's
//!   ETag. S3 has no conditional DELETE: a delete is ordered with updates by S3's own
//!   serialisation of requests to one key (an update after it finds no object and fails).
//! - Blobs of at least [`S3Options::multipart_threshold`] bytes go up by multipart
//!   upload; reads of a range are ranged GETs.
//! - Transient failures (5xx, 408, 429, connection resets, timeouts) are retried by
//!   `object_store` with exponential backoff and jitter, bounded in attempts and time,
//!   and by this backend for what those retries do not cover; every other 4xx answer
//!   (a wrong key, a missing bucket, a refused request) is permanent and never retried.
//!   Every request has a timeout; at most `connections` requests run at once.

use super::name::{validate_name as validate, validate_prefix};
use super::{BlobInfo, BlobMeta, Bytes, PutMode, Storage, Version, Versioned};
use crate::error::{Error, Result};
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, PutResult,
    RetryConfig, UpdateVersion, WriteMultipart,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where and how to reach an S3 bucket. `None` fields fall back to the standard AWS
/// environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...)
/// read by [`S3Options::from_env`], then to the AWS shared config files.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), may be empty.
    pub prefix: String,
    /// Endpoint URL of an S3-compatible store (default: AWS).
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted style.
    /// Default: path style for custom endpoints, virtual-hosted for AWS.
    pub path_style: Option<bool>,
    /// Allow plain HTTP (default: only when the endpoint is an `http://` URL).
    pub allow_http: Option<bool>,
    /// Most requests in flight at once.
    pub connections: usize,
    /// Timeout of one request (a whole pack upload or download).
    pub request_timeout: Duration,
    /// Retries of one request on transient errors.
    pub max_retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Blobs this large or larger are uploaded in parts.
    pub multipart_threshold: usize,
    /// Part size of multipart uploads.
    pub part_size: usize,
}

impl S3Options {
    /// Options for `bucket`/`prefix` with defaults for everything else.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            path_style: None,
            allow_http: None,
            connections: 8,
            request_timeout: Duration::from_secs(300),
            max_retries: 8,
            retry_timeout: Duration::from_secs(180),
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
        }
    }

    /// Parse `s3://bucket/prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another scheme or an empty bucket.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::InvalidArgument(format!("{url}: not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{url}: no bucket name (expected s3://BUCKET/PREFIX)"
            )));
        }
        Ok(S3Options::new(bucket, prefix))
    }

    /// Fill unset fields from the standard AWS environment variables and shared config
    /// files (`AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`).
    pub fn from_env(mut self) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.endpoint = self
            .endpoint
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| env("AWS_ENDPOINT"));
        self.region = self
            .region
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"));
        self.access_key_id = self.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID"));
        self.secret_access_key = self
            .secret_access_key
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        self.session_token = self.session_token.or_else(|| env("AWS_SESSION_TOKEN"));
        if self.allow_http.is_none() {
            self.allow_http = env("AWS_ALLOW_HTTP").map(|v| v.eq_ignore_ascii_case("true"));
        }
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let home = env("HOME").unwrap_or_default();
        let creds_file = env("AWS_SHARED_CREDENTIALS_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/credentials"));
        let config_file = env("AWS_CONFIG_FILE").unwrap_or_else(|| format!("{home}/.aws/config"));
        let creds = read_ini_section(&creds_file, &profile);
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let config = read_ini_section(&config_file, &config_section);
        let get = |m: &[(String, String)], k: &str| {
            m.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
        };
        if self.access_key_id.is_none() && self.secret_access_key.is_none() {
            self.access_key_id =
                get(&creds, "aws_access_key_id").or_else(|| get(&config, "aws_access_key_id"));
            self.secret_access_key = get(&creds, "aws_secret_access_key")
                .or_else(|| get(&config, "aws_secret_access_key"));
            self.session_token = self
                .session_token
                .or_else(|| get(&creds, "aws_session_token"));
        }
        self.region = self.region.or_else(|| get(&config, "region"));
        self.endpoint = self.endpoint.or_else(|| get(&config, "endpoint_url"));
        self
    }
}

/// The `key = value` pairs of `[section]` in an INI file (AWS shared config format);
/// empty if the file or section is missing.
pub fn read_ini_section(path: &str, section: &str) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    options: S3Options,
    permits: Arc<Semaphore>,
}

impl S3Storage {
    /// The object's metadata (HEAD), retried like every request.
    async fn object_meta(&self, name: &str) -> Result<object_store::ObjectMeta> {
        validate(name)?;
        retry(|| async {
            let _permit = self.permit().await?;
            self.store
                .head(&self.path(name))
                .await
                .map_err(|e| map_err(name, e))
        })
        .await
    }

    /// Connect (lazily: no request is made here).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the options do not form a valid client.
    pub fn new(options: S3Options) -> Result<Self> {
        let custom_endpoint = options.endpoint.is_some();
        let allow_http = options.allow_http.unwrap_or_else(|| {
            options
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        });
        let path_style = options.path_style.unwrap_or(custom_endpoint);
        // Without explicit keys, start from the environment so object_store can find
        // instance, container or web-identity credentials; explicit settings win.
        let mut builder = match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => {
                let b = AmazonS3Builder::new()
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                match &options.session_token {
                    Some(t) => b.with_token(t),
                    None => b,
                }
            }
            (None, None) => AmazonS3Builder::from_env(),
            _ => {
                return Err(Error::InvalidArgument(
                    "S3: give both an access key id and a secret access key, or neither".into(),
                ))
            }
        };
        builder = builder
            .with_bucket_name(&options.bucket)
            .with_region(options.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_allow_http(allow_http)
            .with_virtual_hosted_style_request(!path_style)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: options.max_retries,
                retry_timeout: options.retry_timeout,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(options.request_timeout)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_allow_http(allow_http),
            );
        if let Some(e) = &options.endpoint {
            builder = builder.with_endpoint(e);
        }
        let store = builder
            .build()
            .map_err(|e| Error::InvalidArgument(format!("S3 client: {e}")))?;
        Ok(S3Storage {
            store: Arc::new(store),
            permits: Arc::new(Semaphore::new(options.connections.max(1))),
            options,
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.options.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.options.prefix))
        }
    }

    fn strip(&self, key: &str) -> String {
        if self.options.prefix.is_empty() {
            key.to_string()
        } else {
            key.strip_prefix(&self.options.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(key)
                .to_string()
        }
    }

    /// An unconditional write, in parts for large blobs.
    async fn overwrite(&self, name: &str, data: Bytes) -> Result<Version> {
        let path = self.path(name);
        retry(|| async {
            let _permit = self.permit().await?;
            let result: Result<PutResult> = if data.len() >= self.options.multipart_threshold {
                let upload = self
                    .store
                    .put_multipart(&path)
                    .await
                    .map_err(|e| map_write_err(name, e))?;
                let mut writer =
                    WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
                writer.put(data.clone());
                writer.finish().await.map_err(|e| map_err(name, e))
            } else {
                self.store
                    .put(&path, PutPayload::from(data.clone()))
                    .await
                    .map_err(|e| map_write_err(name, e))
            };
            match result {
                // A multipart completion whose reply was cut is reported as NotFound;
                // writing the same bytes again is harmless, so retry. (A missing bucket
                // fails the multipart start with a permanent status instead.)
                Err(Error::NotFound { .. }) if data.len() >= self.options.multipart_threshold => {
                    Err(Error::Storage {
                        object: name.to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::Interrupted,
                            "upload reported missing",
                        ),
                    })
                }
                other => other.map(|r| version_of(r.e_tag)),
            }
        })
        .await
    }

    /// A create or update: one PUT with `If-None-Match: *` or `If-Match: <ETag>`.
    async fn put_conditional(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        let path = self.path(name);
        let os_mode = match &mode {
            PutMode::Update(version) => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(version.as_str().to_owned()),
                version: None,
            }),
            _ => object_store::PutMode::Create,
        };
        let result = retry(|| async {
            let _permit = self.permit().await?;
            let opts = PutOptions {
                mode: os_mode.clone(),
                ..Default::default()
            };
            self.store
                .put_opts(&path, PutPayload::from(data.clone()), opts)
                .await
                .map(|r| version_of(r.e_tag))
                .map_err(|e| map_write_err(name, e))
        })
        .await;
        match result {
            // Refused: because someone else got there first, or because an earlier
            // attempt of ours succeeded and its reply was lost. Our mutable files carry
            // random nonces, so finding our exact bytes means it was ours. Both check
            // always: object_store retries a request on its own (a reset or a 5xx
            // after the write took effect), so even a first attempt of ours may have
            // been answered by the retry's 412.
            Err(e @ (Error::AlreadyExists { .. } | Error::Conflict { .. })) => {
                match self.get_versioned(name).await {
                    Ok(existing) if existing.data == data => Ok(existing.version),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("S3 connection pool closed".into()))
    }
}

/// What answered a failed request: an HTTP status, or nothing (the request failed in
/// transport: refused or reset connection, timeout, cut body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Status(u16),
    Transport,
    Unknown,
}

/// The answer behind `e`. object_store 0.14 keeps its request error type private (it
/// hands the status only to multipart retry policies), so the status is read from that
/// error's rendering, `Server returned non-2xx status code: <status> ...`, in the
/// source chain; a transport failure is its public `HttpError`.
fn answer_of(e: &object_store::Error) -> Answer {
    const STATUS_PREFIX: &str = "Server returned non-2xx status code: ";
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return Answer::Transport;
        }
        let text = error.to_string();
        if let Some(rest) = text.strip_prefix(STATUS_PREFIX) {
            if let Some(status) = rest.get(..3).and_then(|d| d.parse::<u16>().ok()) {
                return Answer::Status(status);
            }
        }
        source = error.source();
    }
    Answer::Unknown
}

/// Whether an answer with this HTTP status may go another way if asked again: server
/// errors, throttling (429) and request timeouts (408). Every other 4xx answer (bad
/// credentials, a missing bucket, a malformed or refused request) is the same next time.
fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429) || status >= 500
}

/// Map an `object_store` error about `name` to the engine's error, keeping it as the
/// source. What retrying can help ([`Error::is_transient`]) is decided by the HTTP
/// status where there is one ([`status_is_retryable`]), else by the kind of failure:
/// a request that got no answer (connection refused or reset, timeout) is transient.
fn map_err(name: &str, e: object_store::Error) -> Error {
    use std::io::ErrorKind;
    let kind = match &e {
        object_store::Error::NotFound { .. } => return Error::not_found(name),
        object_store::Error::AlreadyExists { .. } => {
            return Error::AlreadyExists {
                object: name.to_string(),
            }
        }
        object_store::Error::Precondition { .. } => return Error::conflict(name),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            ErrorKind::Unsupported
        }
        object_store::Error::InvalidPath { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => ErrorKind::InvalidInput,
        _ => match answer_of(&e) {
            Answer::Status(status) if status_is_retryable(status) => ErrorKind::Interrupted,
            Answer::Status(401 | 403) => ErrorKind::PermissionDenied,
            Answer::Status(404) => ErrorKind::NotFound,
            Answer::Status(_) => ErrorKind::InvalidInput,
            // No answer, or a body cut off: another attempt later may succeed.
            Answer::Transport | Answer::Unknown => ErrorKind::Interrupted,
        },
    };
    Error::Storage {
        object: name.to_string(),
        source: std::io::Error::new(kind, e),
    }
}

/// [`map_err`] for a request that writes: a 404 there is no missing blob but a missing
/// bucket (or prefix the store refuses), which no retry finds.
fn map_write_err(name: &str, e: object_store::Error) -> Error {
    match e {
        e @ object_store::Error::NotFound { .. } => Error::Storage {
            object: name.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
        },
        e => map_err(name, e),
    }
}

fn version_of(e_tag: Option<String>) -> Version {
    Version::new(e_tag.unwrap_or_default())
}

/// Attempts of one operation at this level, on top of object_store's retries of single
/// requests (which do not cover cut response bodies, listings and multipart uploads).
const ATTEMPTS: usize = 4;

async fn retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        if self.options.prefix.is_empty() {
            format!("s3://{}", self.options.bucket)
        } else {
            format!("s3://{}/{}", self.options.bucket, self.options.prefix)
        }
    }

    async fn put_opts(&self, name: &str, data: Bytes, mode: PutMode) -> Result<Version> {
        validate(name)?;
        match mode {
            PutMode::Overwrite => self.overwrite(name, data).await,
            mode => self.put_conditional(name, data, mode).await,
        }
    }

    async fn get_versioned(&self, name: &str) -> Result<Versioned> {
        validate(name)?;
        retry(|| async {
            let _permit = self.permit().await?;
            let result = self
                .store
                .get(&self.path(name))
                .await
                .map_err(|e| map_err(name, e))?;
            let version = version_of(result.meta.e_tag.clone());
            // A body cut off mid-way fails here and the whole read is retried.
            let data = result.bytes().await.map_err(|e| map_err(name, e))?;
            Ok(Versioned {
                data: data.to_vec(),
                version,
            })
        })
        .await
    }

    async fn modified(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        let meta = self.object_meta(name).await?;
        Ok(Some(std::time::SystemTime::from(meta.last_modified)))
    }

    async fn head(&self, name: &str) -> Result<BlobMeta> {
        let meta = self.object_meta(name).await?;
        Ok(BlobMeta {
            size: meta.size,
            version: version_of(meta.e_tag),
        })
    }

    async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        validate(name)?;
        let past_end = |size: u64| {
            Error::corrupt(
                name,
                format!("range {offset}+{len} extends past the end of a {size}-byte blob"),
            )
        };
        let Some(end) = offset.checked_add(len) else {
            return Err(past_end(self.size(name).await?));
        };
        if len == 0 {
            let size = self.size(name).await?;
            return if offset > size {
                Err(past_end(size))
            } else {
                Ok(Vec::new())
            };
        }
        let path = self.path(name);
        let result = retry(|| async {
            let _permit = self.permit().await?;
            match self.store.get_range(&path, offset..end).await {
                Ok(bytes) => Ok(Ok(bytes)),
                Err(object_store::Error::NotFound { .. }) => Err(Error::not_found(name)),
                // Kept aside: a range past the end is an error S3 answers too.
                Err(e) => match map_err(name, e) {
                    err if err.is_transient() => Err(err),
                    err => Ok(Err(err)),
                },
            }
        })
        .await;
        match result {
            // S3 answers a range that runs past the end with the bytes that exist.
            Ok(Ok(bytes)) if bytes.len() as u64 == len => Ok(bytes.to_vec()),
            Ok(Ok(bytes)) => Err(past_end(offset + bytes.len() as u64)),
            Err(Error::NotFound { .. }) => Err(Error::not_found(name)),
            Ok(Err(e)) | Err(e) => match self.size(name).await {
                Ok(size) if end > size => Err(past_end(size)),
                _ => Err(e),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        validate_prefix(prefix)?;
        let _permit = self.permit().await?;
        let full = if self.options.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.options.prefix)
        };
        // object_store lists by path segments: list the directory part, filter the rest.
        let dir = full.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(ObjectPath::from(dir))
        };
        // A listing cut off mid-body is retried whole (listing is idempotent).
        let metas: Vec<_> = retry(|| async {
            self.store
                .list(dir_path.as_ref())
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| map_err(prefix, e))
        })
        .await?;
        Ok(metas
            .into_iter()
            .map(|m| BlobInfo {
                name: self.strip(m.location.as_ref()),
                size: m.size,
            })
            .filter(|b| b.name.starts_with(prefix))
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        validate(name)?;
        retry(|| async {
            let _permit = self.permit().await?;
            match self.store.delete(&self.path(name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(map_err(name, e)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only server errors, throttling and request timeouts are worth asking again.
    #[test]
    fn retryable_statuses() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_retryable(status), "{status}");
        }
        for status in [400, 401, 403, 404, 405, 409, 411, 412, 413, 416] {
            assert!(!status_is_retryable(status), "{status}");
        }
    }
}
