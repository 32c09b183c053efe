//! The archive in an S3-compatible object store (AWS S3, MinIO, SeaweedFS, R2…), for a fleet of Parley instances
//! and archive workers that share no filesystem.
//!
//! # Layout
//!
//! The same keys as on disk, under `prefix`: `<prefix>/<YYYY>/<MM>/<DD>/<CallSid>/<file>`. Objects cannot be appended
//! to, so a file written as the call goes on (`recording.wav`, `timeline.jsonl`) is a series of part objects,
//! `<file>.parts/<sequence>`, each what was written since the previous one; reading the file concatenates them in
//! order. A part is uploaded at most every `upload_every_ms` (the recorder flushes its audio and timeline lines every
//! tick), and everything left when the call ends, before its metadata says "sealed" — so a crash of Parley loses at
//! most the last upload period plus the recorder's hold. The recording's header goes up alone as the first part when
//! the call starts, and that part is replaced with the header's final sizes when the call is sealed. A file replaced
//! whole (`put`: `metadata.json`, `recording.opus`, a recording resealed after a crash) is one object at `<file>`,
//! which takes precedence over parts.
//!
//! # Credentials
//!
//! From the environment only, as every S3 client reads them: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, or a web identity / container role (`AWS_WEB_IDENTITY_TOKEN_FILE`…).
//!
//! # Threads
//!
//! The store's methods are blocking, like the filesystem's: the recorder threads call them. Requests run on a small
//! runtime of the store's own, so a call from inside Tokio (start-up, the CLI) waits without needing the caller's
//! runtime to make progress.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};
use serde::Deserialize;

use super::store::CallWriter;
use super::{ArchiveError, ArchiveStore, CallKey};

/// `[archive.s3]`: where the archive lives when `archive.store = "s3"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The bucket; it must exist.
    pub bucket: String,
    /// Key prefix the calls are kept under (no leading or trailing slash needed).
    pub prefix: String,
    /// The S3 endpoint for a store other than AWS (`http://minio:9000`); unset, `AWS_ENDPOINT` or AWS itself.
    pub endpoint: Option<String>,
    /// Region; unset, `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1.
    pub region: Option<String>,
    /// How often at most a part of a call's recording or timeline is uploaded while the call goes on, in
    /// milliseconds (the recorder hands over its audio every 500 ms). Lower loses less in a crash and costs more
    /// requests.
    pub upload_every_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config { bucket: String::new(), prefix: "parley".into(), endpoint: None, region: None, upload_every_ms: 500 }
    }
}

/// Suffix of the folder of part objects a file is written in.
const PARTS: &str = ".parts";
/// What an upload may hold in memory while the store does not answer, before the recording gives up.
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// A runtime for the store's requests, shut down without waiting (dropping it from async code is allowed).
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: IoRuntime,
    upload_every: Duration,
}

impl Inner {
    /// Runs a request on the store's runtime and waits for it.
    fn block_on<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Result<T, ArchiveError> {
        let runtime = self.runtime.0.as_ref().ok_or_else(|| store_error("the store's runtime is gone"))?;
        let (done, result) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = done.send(work.await);
        });
        result.recv().map_err(|_| store_error("the store's runtime stopped mid-request"))
    }

    fn path(&self, relative: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{}/{relative}", self.prefix))
        }
    }

    fn file(&self, key: &CallKey, name: &str) -> ObjectPath {
        self.path(&format!("{key}/{name}"))
    }

    fn parts(&self, key: &CallKey, name: &str) -> ObjectPath {
        self.path(&format!("{key}/{name}{PARTS}"))
    }

    fn put(&self, path: ObjectPath, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let objects = self.objects_handle();
        let shown = path.to_string();
        self.block_on(async move { objects.put(&path, PutPayload::from(bytes)).await })?
            .map(|_| ())
            .map_err(|e| object_error(&shown, e))
    }

    fn get(&self, path: ObjectPath) -> Result<Vec<u8>, ArchiveError> {
        let objects = self.objects_handle();
        let shown = path.to_string();
        self.block_on(async move { objects.get(&path).await?.bytes().await })?
            .map(|bytes| bytes.to_vec())
            .map_err(|e| object_error(&shown, e))
    }

    /// The part objects of a file, in order.
    fn list_parts(&self, key: &CallKey, name: &str) -> Result<Vec<ObjectPath>, ArchiveError> {
        let objects = self.objects_handle();
        let prefix = self.parts(key, name);
        let shown = prefix.to_string();
        let mut parts: Vec<ObjectPath> = self
            .block_on(async move { objects.list(Some(&prefix)).map_ok(|meta| meta.location).try_collect().await })?
            .map_err(|e: object_store::Error| object_error(&shown, e))?;
        // Sequence numbers are zero-padded: name order is write order.
        parts.sort();
        Ok(parts)
    }

    /// The next part number of a file.
    fn next_part(&self, key: &CallKey, name: &str) -> Result<u64, ArchiveError> {
        let parts = self.list_parts(key, name)?;
        Ok(parts.last().and_then(|p| p.filename()).and_then(|f| f.parse::<u64>().ok()).map_or(0, |n| n + 1))
    }

    fn objects_handle(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.objects)
    }
}

/// The archive in an S3-compatible bucket; see the module documentation.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Connects to the bucket `config` names, with credentials from the environment. Nothing is requested yet: a
    /// wrong bucket or credentials show at the first request (start-up lists the archive, so `parley serve` fails
    /// early).
    pub fn new(config: &S3Config) -> Result<S3Store, ArchiveError> {
        if config.bucket.is_empty() {
            return Err(store_error("archive.s3.bucket is not set"));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(10), ..Default::default() })
            .with_client_options(
                ClientOptions::new().with_timeout(Duration::from_secs(10)).with_connect_timeout(Duration::from_secs(3)),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        let objects = builder.build().map_err(|e| object_error(&config.bucket, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("parley-s3")
            .enable_all()
            .build()
            .map_err(|source| ArchiveError::Io { path: PathBuf::from("s3 runtime"), source })?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                objects: Arc::new(objects),
                prefix: config.prefix.trim_matches('/').to_owned(),
                runtime: IoRuntime(Some(runtime)),
                upload_every: Duration::from_millis(config.upload_every_ms),
            }),
        })
    }

    /// The folder names one level under `relative` (`""` for the top).
    fn folders(&self, relative: &str) -> Result<Vec<String>, ArchiveError> {
        let objects = self.inner.objects_handle();
        let prefix = if relative.is_empty() { self.inner.path("") } else { self.inner.path(relative) };
        let shown = prefix.to_string();
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let listed = self
            .inner
            .block_on(async move { objects.list_with_delimiter(prefix.as_ref()).await })?
            .map_err(|e| object_error(&shown, e))?;
        let mut names: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        names.sort();
        Ok(names)
    }

    /// The calls in one day folder (`YYYY/MM/DD`): the folders holding a `metadata.json`. Some stores (SeaweedFS)
    /// keep listing a folder as a common prefix after its last object is deleted, so a folder alone is no call.
    fn calls_on(&self, day: &str) -> Result<Vec<CallKey>, ArchiveError> {
        let mut calls = Vec::new();
        for name in self.folders(day)? {
            let Some(key) = CallKey::from_relative(&PathBuf::from(format!("{day}/{name}"))) else { continue };
            if self.exists(self.inner.file(&key, super::METADATA_FILE))? {
                calls.push(key);
            }
        }
        Ok(calls)
    }

    fn exists(&self, path: ObjectPath) -> Result<bool, ArchiveError> {
        let objects = self.inner.objects_handle();
        let shown = path.to_string();
        match self.inner.block_on(async move { objects.head(&path).await })? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(object_error(&shown, e)),
        }
    }

    fn writer(&self, key: &CallKey, name: &str, next: u64) -> Box<dyn CallWriter> {
        Box::new(PartWriter {
            store: Arc::clone(&self.inner),
            parts: self.inner.parts(key, name),
            next,
            from_start: next == 0,
            pending: Vec::new(),
            uploaded_at: Instant::now(),
        })
    }
}

impl ArchiveStore for S3Store {
    fn create_call(&self, key: CallKey) -> Result<CallKey, ArchiveError> {
        for attempt in 1u32.. {
            let name = if attempt == 1 { key.name.clone() } else { format!("{}-{attempt}", key.name) };
            let candidate = CallKey { name, ..key.clone() };
            if !self.exists(self.inner.file(&candidate, super::METADATA_FILE))? {
                return Ok(candidate);
            }
        }
        unreachable!("the attempts never run out")
    }

    fn create(&self, key: &CallKey, name: &str) -> Result<Box<dyn CallWriter>, ArchiveError> {
        Ok(self.writer(key, name, 0))
    }

    fn append(&self, key: &CallKey, name: &str) -> Result<Box<dyn CallWriter>, ArchiveError> {
        let next = self.inner.next_part(key, name)?;
        Ok(self.writer(key, name, next))
    }

    fn put(&self, key: &CallKey, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        // One PUT is atomic: readers see the old object or the new one.
        self.inner.put(self.inner.file(key, name), bytes.to_vec())?;
        // JSON files (metadata, transcript) are only ever written whole: no parts to look for.
        if name.ends_with(".json") {
            return Ok(());
        }
        // Parts the whole object replaces go after it is written, so a crash in between loses nothing.
        let parts = self.inner.list_parts(key, name)?;
        if !parts.is_empty() {
            let objects = self.inner.objects_handle();
            self.inner.block_on(async move {
                for part in parts {
                    if let Err(err) = objects.delete(&part).await {
                        tracing::warn!(%err, part = %part, "cannot delete a replaced part");
                    }
                }
            })?;
        }
        Ok(())
    }

    fn get(&self, key: &CallKey, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let objects = self.inner.objects_handle();
        let whole = self.inner.file(key, name);
        let shown = whole.to_string();
        match self.inner.block_on(async move { objects.get(&whole).await?.bytes().await })? {
            Ok(bytes) => return Ok(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(object_error(&shown, e)),
        }
        let parts = self.inner.list_parts(key, name)?;
        if parts.is_empty() {
            return Err(ArchiveError::Io {
                path: PathBuf::from(shown),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
            });
        }
        let objects = self.inner.objects_handle();
        let shown = self.inner.parts(key, name).to_string();
        self.inner
            .block_on(async move {
                let mut bytes = Vec::new();
                for part in parts {
                    bytes.extend_from_slice(&objects.get(&part).await?.bytes().await?);
                }
                Ok::<_, object_store::Error>(bytes)
            })?
            .map_err(|e| object_error(&shown, e))
    }

    fn has(&self, key: &CallKey, name: &str) -> Result<bool, ArchiveError> {
        Ok(self.exists(self.inner.file(key, name))? || !self.inner.list_parts(key, name)?.is_empty())
    }

    fn delete(&self, key: &CallKey, name: &str) -> Result<(), ArchiveError> {
        let mut objects_to_delete = self.inner.list_parts(key, name)?;
        objects_to_delete.push(self.inner.file(key, name));
        let objects = self.inner.objects_handle();
        let shown = self.inner.file(key, name).to_string();
        self.inner
            .block_on(async move {
                for object in objects_to_delete {
                    match objects.delete(&object).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(())
            })?
            .map_err(|e| object_error(&shown, e))
    }

    fn list(&self) -> Result<Vec<CallKey>, ArchiveError> {
        let mut keys = Vec::new();
        for year in self.folders("")?.into_iter().filter(|y| y.parse::<u32>().is_ok()) {
            for month in self.folders(&year)? {
                for day in self.folders(&format!("{year}/{month}"))? {
                    keys.extend(self.calls_on(&format!("{year}/{month}/{day}"))?);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn list_since(&self, since_day: i64) -> Result<Vec<CallKey>, ArchiveError> {
        let mut keys = Vec::new();
        for day in super::store::days_until_today(since_day) {
            keys.extend(self.calls_on(&day)?);
        }
        keys.sort();
        Ok(keys)
    }

    fn remove(&self, key: &CallKey) -> Result<(), ArchiveError> {
        let objects = self.inner.objects_handle();
        let folder = self.inner.path(&key.to_string());
        let shown = folder.to_string();
        self.inner
            .block_on(async move {
                let every: Vec<ObjectPath> =
                    objects.list(Some(&folder)).map_ok(|meta| meta.location).try_collect().await?;
                for object in every {
                    objects.delete(&object).await?;
                }
                Ok::<_, object_store::Error>(())
            })?
            .map_err(|e| object_error(&shown, e))
    }

    fn local_dir(&self, _key: &CallKey) -> Option<PathBuf> {
        None
    }

    fn create_record(&self, path: &str, bytes: &[u8]) -> Result<bool, ArchiveError> {
        let objects = self.inner.objects_handle();
        let path = self.inner.path(path);
        let shown = path.to_string();
        let payload = PutPayload::from(bytes.to_vec());
        // `If-None-Match: *`: the store itself refuses the second writer.
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.inner.block_on(async move { objects.put_opts(&path, payload, options).await })? {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(object_error(&shown, e)),
        }
    }

    fn put_record(&self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.inner.put(self.inner.path(path), bytes.to_vec())
    }

    fn get_record(&self, path: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let objects = self.inner.objects_handle();
        let path = self.inner.path(path);
        let shown = path.to_string();
        match self.inner.block_on(async move { objects.get(&path).await?.bytes().await })? {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_error(&shown, e)),
        }
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ArchiveError> {
        let objects = self.inner.objects_handle();
        let folder = self.inner.path(folder);
        let shown = folder.to_string();
        let listed = self
            .inner
            .block_on(async move { objects.list_with_delimiter(Some(&folder)).await })?
            .map_err(|e| object_error(&shown, e))?;
        let mut names: Vec<String> =
            listed.objects.iter().filter_map(|o| o.location.filename().map(str::to_owned)).collect();
        names.sort();
        Ok(names)
    }

    fn delete_record(&self, path: &str) -> Result<(), ArchiveError> {
        let objects = self.inner.objects_handle();
        let path = self.inner.path(path);
        let shown = path.to_string();
        match self.inner.block_on(async move { objects.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(&shown, e)),
        }
    }
}

/// A file written as a series of part objects: what was written since the last upload goes up as the next part on
/// `flush` once the upload period has passed, and on `sync` at once.
struct PartWriter {
    store: Arc<Inner>,
    parts: ObjectPath,
    next: u64,
    /// Whether this writer wrote the file from its first part (so it may rewrite its start).
    from_start: bool,
    pending: Vec<u8>,
    uploaded_at: Instant,
}

impl PartWriter {
    fn upload(&mut self) -> Result<(), ArchiveError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let part = self.parts.child(format!("{:010}", self.next));
        self.store.put(part, self.pending.clone())?;
        self.pending.clear();
        self.next += 1;
        self.uploaded_at = Instant::now();
        Ok(())
    }
}

impl Write for PartWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.pending.len() + bytes.len() > MAX_PENDING {
            return Err(std::io::Error::other("the object store has not taken this file's parts for too long"));
        }
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.uploaded_at.elapsed() < self.store.upload_every {
            return Ok(());
        }
        // A failed upload stays pending and is tried again at the next flush; the call goes on meanwhile.
        if let Err(err) = self.upload() {
            tracing::warn!(%err, "uploading a part of an archived call failed; retrying at the next flush");
            self.uploaded_at = Instant::now();
        }
        Ok(())
    }
}

impl CallWriter for PartWriter {
    fn sync(&mut self) -> Result<(), ArchiveError> {
        self.upload()
    }

    /// The first part is replaced whole (one PUT, atomic) with its start overwritten; a writer that has not uploaded
    /// anything yet patches what it holds.
    fn rewrite_start(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        if !self.from_start {
            return Err(store_error("only a file written from its start can have its start rewritten"));
        }
        if self.next == 0 {
            let Some(start) = self.pending.get_mut(..bytes.len()) else {
                return Err(store_error("the file is shorter than the bytes to rewrite"));
            };
            start.copy_from_slice(bytes);
            return Ok(());
        }
        let first = self.parts.child(format!("{:010}", 0));
        let mut part = self.store.get(first.clone())?;
        let Some(start) = part.get_mut(..bytes.len()) else {
            return Err(store_error("the first part is shorter than the bytes to rewrite"));
        };
        start.copy_from_slice(bytes);
        self.store.put(first, part)
    }
}

fn store_error(message: &str) -> ArchiveError {
    ArchiveError::Io { path: PathBuf::from("s3"), source: std::io::Error::other(message.to_owned()) }
}

fn object_error(path: &str, err: object_store::Error) -> ArchiveError {
    let kind = match err {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::Other,
    };
    ArchiveError::Io { path: PathBuf::from(path), source: std::io::Error::new(kind, err) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{ArchiveConfig, StoreKind};

    #[test]
    fn the_bucket_is_configured_in_the_archive_section() {
        let config: ArchiveConfig = toml::from_str(
            "store = \"s3\"\nlease_secs = 6\n[s3]\nbucket = \"calls\"\nendpoint = \"http://127.0.0.1:9000\"\n",
        )
        .unwrap();
        assert_eq!(config.store, StoreKind::S3);
        assert_eq!(config.lease(), Duration::from_secs(6));
        assert_eq!(config.s3.bucket, "calls");
        assert_eq!(config.s3.prefix, "parley");
        assert_eq!(config.s3.upload_every_ms, 500);
        assert_eq!(ArchiveConfig::default().store, StoreKind::Local);
        let unset = ArchiveConfig { store: StoreKind::S3, ..ArchiveConfig::default() };
        let err = unset.open_store().err().expect("no bucket, no store");
        assert!(err.to_string().contains("archive.s3.bucket"), "{err}");
    }
}
