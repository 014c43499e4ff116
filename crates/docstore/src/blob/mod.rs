//! Blob stores: where envelopes live. One small trait; the implementation wraps `object_store`, so
//! S3, the local filesystem and memory share one code path.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::model::Timestamp;

mod object;

pub use object::ObjectBlobStore;

/// A blob as listed by [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Blob key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: Timestamp,
}

/// A streamed blob body with its total size.
pub struct BlobRead {
    /// Total size of the blob.
    pub size: u64,
    /// What the backend says identifies this stored object (its ETag and version), when it says
    /// anything: another object written under the key gets another tag.
    pub tag: Option<String>,
    /// The bytes, in backend-sized chunks.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead")
            .field("size", &self.size)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// An upload in progress. Dropping it without [`BlobUpload::finish`] must not leave a visible blob.
#[async_trait]
pub trait BlobUpload: Send {
    /// Appends bytes; may wait for earlier parts to drain (back-pressure).
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Makes the blob visible under its key.
    async fn finish(self: Box<Self>) -> Result<()>;
    /// Discards what was written.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// The seam to object storage. Keys are never overwritten: callers write fresh unique keys.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Starts a streaming upload to a new key.
    async fn upload(&self, key: &str) -> Result<Box<dyn BlobUpload>>;
    /// Streams a whole blob.
    async fn get(&self, key: &str) -> Result<BlobRead>;
    /// Reads a byte range.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Size of a blob.
    async fn size(&self, key: &str) -> Result<u64>;
    /// Deletes a blob; deleting a missing blob succeeds.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Lists blobs under a prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>>;
}
