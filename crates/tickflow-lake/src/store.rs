//! A lake on S3-compatible object storage: the same layout under `s3://bucket/prefix`.
//!
//! An object appears whole or not at all, and is durable once the PUT is answered, so
//! files go straight to their final names: no temporary name, rename or sync. Compaction
//! keeps its commit point, the merged file's PUT; superseded inputs are skipped by readers
//! and deleted after it, as on disk.
//!
//! The lake is the only writer under its prefix, so it lists the prefix once when opened
//! and then keeps the listing itself as it writes and deletes: queries never wait on a
//! LIST. A lake file is named by its URL (`s3://bucket/prefix/trades/date=…/part-….parquet`),
//! which is also what DataFusion reads it by. Queries get the sizes of files from that
//! listing too ([`KnownSizes`]), not from a HEAD request per file per query.
//!
//! Requests run on a small runtime of the lake's own, so the lake's blocking API works from
//! any thread. `object_store` retries failed requests with backoff; what still fails is
//! returned, and the caller (the pipeline's lake writer) retries the whole flush.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    ClientConfigKey, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, RetryConfig,
};

use crate::{Error, Result};

/// Longest a connection may take to open, within the request's timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Requests in flight at once when a flush or a compaction writes or deletes many files.
const CONCURRENT_REQUESTS: usize = 16;

/// Where a lake on object storage lives and how to reach it. Unset fields come from the
/// standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, …). `Debug` leaves the secret out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObjectLake {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// For S3-compatible stores (MinIO, moto, R2): `http://127.0.0.1:9000`. Plain HTTP is
    /// allowed only when the endpoint says `http://`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Longest one request may take, connecting included, before it counts as failed
    /// (default [`OBJECT_REQUEST_TIMEOUT`]).
    pub timeout: Option<std::time::Duration>,
}

/// How long a request may take when no `timeout_ms` is set: object_store's own default.
pub const OBJECT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for ObjectLake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLake")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("timeout", &self.timeout)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl ObjectLake {
    /// The bucket and the prefix inside it (without slashes at either end). A prefix is
    /// required: recovery deletes what it does not recognise as committed, so the lake must
    /// own everything under it.
    ///
    /// # Errors
    /// The URL is not `s3://bucket/prefix`.
    pub fn bucket_and_prefix(&self) -> std::result::Result<(&str, &str), String> {
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            format!(
                "{:?} is not an s3:// URL (s3://bucket/prefix; other object stores speak S3)",
                self.url
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{:?} names no bucket", self.url));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Err(format!(
                "{:?} names no prefix: the lake needs a folder of its own, as s3://{bucket}/tickflow",
                self.url
            ));
        }
        Ok((bucket, prefix))
    }

    /// A client for the bucket and the prefix under it, for another writer of the same
    /// bucket (the S3 JSON sink) that shares the lake's settings and checks.
    ///
    /// # Errors
    /// The URL is not `s3://bucket/prefix`, or the client cannot be built.
    pub fn connect(&self) -> std::result::Result<(Arc<dyn ObjectStore>, String), String> {
        let (bucket, prefix) = self.bucket_and_prefix()?;
        let client = self
            .client(bucket)
            .map_err(|e| format!("{}: {e}", self.url))?;
        Ok((Arc::new(client), prefix.to_string()))
    }

    /// A client for the bucket.
    fn client(&self, bucket: &str) -> object_store::Result<object_store::aws::AmazonS3> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        // A store that stops answering (a blackholed link) fails a request after `timeout`,
        // and object_store gives up after two more tries: the caller's retry loop, which
        // the status shows as `retrying`, takes over instead of hanging for minutes.
        let timeout = self.timeout.unwrap_or(OBJECT_REQUEST_TIMEOUT);
        builder = builder
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", timeout.as_millis()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}ms", timeout.min(CONNECT_TIMEOUT).as_millis()),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: timeout * 3,
                ..RetryConfig::default()
            });
        // An endpoint of its own (here or from the environment) is an S3-compatible server:
        // plain HTTP only when it says so, and path-style addresses, since such servers
        // seldom resolve bucket subdomains.
        if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        builder.build()
    }
}

/// The connection to the bucket, and what the lake knows is stored under its prefix.
pub(crate) struct Remote {
    store: Arc<dyn ObjectStore>,
    /// A client of its own for queries, which run on their caller's runtime: a pooled
    /// connection belongs to the runtime that opened it.
    query_store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: what DataFusion registers the store under.
    bucket_url: String,
    io: Option<tokio::runtime::Runtime>,
    /// Every stored file, by location, with its size.
    known: Arc<Mutex<Known>>,
}

type Known = BTreeMap<PathBuf, u64>;

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A lake may be dropped inside an async task, where waiting for a runtime's
        // threads is not allowed; nothing is in flight once the lake goes.
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

impl Remote {
    /// Connects to the bucket `config` names and lists what is already there. Returns the
    /// lake's root location with it.
    pub(crate) fn open(config: &ObjectLake) -> Result<(PathBuf, Self)> {
        let bad = |message: String| Error::Config {
            url: config.url.clone(),
            message,
        };
        let (bucket, prefix) = config.bucket_and_prefix().map_err(bad)?;
        let client = || config.client(bucket).map_err(|e| bad(e.to_string()));
        let (store, query_store) = (client()?, client()?);
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tickflow-lake-io")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                path: PathBuf::from(&config.url),
                source,
            })?;
        let bucket_url = format!("s3://{bucket}");
        let root = PathBuf::from(format!("{bucket_url}/{prefix}"));
        let known: Arc<Mutex<Known>> = Arc::default();
        let remote = Self {
            store: Arc::new(store),
            query_store: Arc::new(KnownSizes {
                inner: Arc::new(query_store),
                known: Arc::clone(&known),
                bucket_url: bucket_url.clone(),
            }),
            bucket_url,
            io: Some(io),
            known,
        };
        remote.list(&root)?;
        Ok((root, remote))
    }

    /// The store queries read through, and the URL DataFusion should register it under.
    pub(crate) fn store(&self) -> (String, Arc<dyn ObjectStore>) {
        (self.bucket_url.clone(), Arc::clone(&self.query_store))
    }

    /// Runs `work` on the lake's runtime and waits for it, from any thread but the
    /// runtime's own.
    fn block<T: Send + 'static>(
        &self,
        location: &Path,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let Some(io) = &self.io else {
            return Err(gone(location));
        };
        io.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().map_err(|_| gone(location))?
    }

    /// The object key of a location under the bucket.
    fn key(&self, location: &Path) -> Result<Key> {
        let text = location.to_string_lossy();
        text.strip_prefix(&self.bucket_url)
            .and_then(|k| k.strip_prefix('/'))
            .map(Key::from)
            .ok_or_else(|| Error::Config {
                url: location.to_string_lossy().into_owned(),
                message: format!("not a location in {}", self.bucket_url),
            })
    }

    /// Learns every object under `root`.
    fn list(&self, root: &Path) -> Result<()> {
        let listed = self.listing(root)?;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, size) in listed {
            known.insert(PathBuf::from(format!("{}/{key}", self.bucket_url)), size);
        }
        Ok(())
    }

    /// The keys and sizes of every object under `under`, asked of the store.
    fn listing(&self, under: &Path) -> Result<Vec<(String, u64)>> {
        let prefix = self.key(under)?;
        let store = Arc::clone(&self.store);
        self.block(under, {
            let under = under.to_path_buf();
            async move {
                store
                    .list(Some(&prefix))
                    .map_ok(|meta| (meta.location.to_string(), meta.size))
                    .try_collect()
                    .await
                    .map_err(store_error(&under))
            }
        })
    }

    /// Lists `under` again, forgetting what is no longer there: files another process
    /// writes and deletes.
    pub(crate) fn relist(&self, under: &Path) -> Result<()> {
        let listed = self.listing(under)?;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.retain(|path, _| !path.starts_with(under));
        for (key, size) in listed {
            known.insert(PathBuf::from(format!("{}/{key}", self.bucket_url)), size);
        }
        Ok(())
    }

    /// Stored files under `under`, with their sizes.
    pub(crate) fn files_under(&self, under: &Path) -> Vec<(PathBuf, u64)> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .range(under.to_path_buf()..)
            .take_while(|(path, _)| path.starts_with(under))
            .map(|(path, size)| (path.clone(), *size))
            .collect()
    }

    /// Stores every file, several requests at a time; each is known once its PUT is
    /// answered.
    pub(crate) fn put_all(&self, files: Vec<(PathBuf, Bytes)>) -> Result<()> {
        let mut keyed = Vec::with_capacity(files.len());
        for (location, bytes) in files {
            keyed.push((self.key(&location)?, location, bytes));
        }
        let Some(first) = keyed.first().map(|(_, l, _)| l.clone()) else {
            return Ok(());
        };
        let store = Arc::clone(&self.store);
        let answers: Vec<Result<(PathBuf, u64)>> = self.block(&first, async move {
            Ok(futures::stream::iter(keyed)
                .map(|(key, location, bytes)| {
                    let store = Arc::clone(&store);
                    async move {
                        let size = bytes.len() as u64;
                        store
                            .put(&key, PutPayload::from_bytes(bytes))
                            .await
                            .map_err(store_error(&location))?;
                        Ok((location, size))
                    }
                })
                .buffer_unordered(CONCURRENT_REQUESTS)
                .collect()
                .await)
        })?;
        // What was stored is known even when another PUT failed.
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut failed = None;
        for answer in answers {
            match answer {
                Ok((location, size)) => {
                    known.insert(location, size);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Stops listing `files`, before they are deleted: readers must not be handed a file
    /// that may be gone.
    pub(crate) fn forget(&self, files: &[PathBuf]) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for location in files {
            known.remove(location);
        }
    }

    /// Deletes every file (already forgotten), a thousand to a request where the store
    /// takes batches; one already gone counts as deleted. A file left by a failure is found
    /// by the next start's listing: recovery deletes it again if it is superseded or
    /// uncommitted, retention if it is expired.
    pub(crate) fn delete_all(&self, files: &[PathBuf]) -> Result<()> {
        let mut keys = Vec::with_capacity(files.len());
        for location in files {
            keys.push(Ok(self.key(location)?));
        }
        let Some(first) = files.first() else {
            return Ok(());
        };
        let store = Arc::clone(&self.store);
        let root = first.clone();
        self.block(first, async move {
            let answers: Vec<object_store::Result<Key>> = store
                .delete_stream(futures::stream::iter(keys).boxed())
                .collect()
                .await;
            for answer in answers {
                match answer {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(&root)(e)),
                }
            }
            Ok(())
        })
    }

    /// The whole of one stored file.
    pub(crate) fn get(&self, location: &Path) -> Result<Bytes> {
        let key = self.key(location)?;
        let store = Arc::clone(&self.store);
        let owned = location.to_path_buf();
        self.block(location, async move {
            let got = store.get(&key).await.map_err(store_error(&owned))?;
            got.bytes().await.map_err(store_error(&owned))
        })
    }
}

fn store_error(location: &Path) -> impl FnOnce(object_store::Error) -> Error + use<> {
    let path = location.to_path_buf();
    move |source| Error::Store {
        path,
        source: Box::new(source),
    }
}

fn gone(location: &Path) -> Error {
    Error::Read {
        path: location.to_path_buf(),
        message: "the request never finished: the lake's I/O runtime stopped, or the request's task failed".into(),
    }
}

/// The bucket as queries read it: the size of a file the lake lists is answered from its
/// listing. DataFusion asks for the size of every file a query names, one HEAD request each,
/// for files whose size the lake already knows and which never change once stored.
#[derive(Debug)]
struct KnownSizes {
    inner: Arc<dyn ObjectStore>,
    known: Arc<Mutex<Known>>,
    bucket_url: String,
}

impl std::fmt::Display for KnownSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (sizes from the lake's listing)", self.inner)
    }
}

impl KnownSizes {
    fn size_of(&self, key: &Key) -> Option<u64> {
        let location = PathBuf::from(format!("{}/{key}", self.bucket_url));
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(&location).copied()
    }
}

#[async_trait::async_trait]
impl ObjectStore for KnownSizes {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Key,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let plain_head = options.head
            && options.range.is_none()
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if plain_head && let Some(size) = self.size_of(location) {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta: ObjectMeta {
                    location: location.clone(),
                    // Files never change once stored: one time serves every cache check.
                    last_modified: Default::default(),
                    size,
                    e_tag: None,
                    version: None,
                },
                range: 0..size,
                attributes: Default::default(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Key>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Key>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Key>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Key,
        to: &Key,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[test]
    fn queries_get_sizes_from_the_listing_and_the_rest_from_the_store() {
        let inner = Arc::new(InMemory::new());
        let known: Arc<Mutex<Known>> = Arc::default();
        let store = KnownSizes {
            inner: Arc::clone(&inner) as _,
            known: Arc::clone(&known),
            bucket_url: "s3://b".into(),
        };
        let io = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let listed = Key::from("lake/trades/part-000000000001-00000.parquet");
        let other = Key::from("lake/trades/part-000000000002-00000.parquet");
        io.block_on(async {
            inner
                .put(&listed, Bytes::from_static(b"0123456789").into())
                .await
                .unwrap();
            inner
                .put(&other, Bytes::from_static(b"abc").into())
                .await
                .unwrap();
        });
        // The listing's size is the answer, whatever the bucket would say: no request.
        known
            .lock()
            .unwrap()
            .insert(PathBuf::from(format!("s3://b/{listed}")), 7);
        let head = io.block_on(store.head(&listed)).unwrap();
        assert_eq!((head.size, &head.location), (7, &listed));
        // A file the lake does not list is asked of the store, as is every read.
        assert_eq!(io.block_on(store.head(&other)).unwrap().size, 3);
        let bytes = io.block_on(store.get_range(&listed, 2..5)).unwrap();
        assert_eq!(&bytes[..], b"234");
    }
}
