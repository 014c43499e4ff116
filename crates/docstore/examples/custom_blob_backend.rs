//! A blob backend of your own behind the `BlobStore` seam: here a wrapper that meters what an
//! inner store moves (a clinic would bill or alert on it), in front of a local folder. The store
//! sees only the trait, so the envelope, the digest check and the audit work unchanged; what the
//! backend receives and returns is ciphertext. Run:
//! `cargo run -p docstore --example custom_blob_backend`.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use docstore::audit::MemoryAudit;
use docstore::blob::{BlobMeta, BlobRead, BlobStore, BlobUpload, ObjectBlobStore};
use docstore::keys::keyring::Keyring;
use docstore::meta::sqlite::SqliteMetadata;
use docstore::{DocStore, ExamId, Identity, PatientId, PutRequest, Result};

/// Bytes written to and read from the inner store.
#[derive(Debug, Default)]
struct Meter {
    written: AtomicU64,
    read: AtomicU64,
}

/// A `BlobStore` that counts bytes and delegates everything else.
#[derive(Debug)]
struct Metered {
    inner: Arc<dyn BlobStore>,
    meter: Arc<Meter>,
}

struct MeteredUpload {
    inner: Box<dyn BlobUpload>,
    meter: Arc<Meter>,
}

#[async_trait]
impl BlobUpload for MeteredUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.meter.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner.write(data).await
    }
    async fn finish(self: Box<Self>) -> Result<()> {
        self.inner.finish().await
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl BlobStore for Metered {
    async fn upload(&self, key: &str) -> Result<Box<dyn BlobUpload>> {
        Ok(Box::new(MeteredUpload {
            inner: self.inner.upload(key).await?,
            meter: self.meter.clone(),
        }))
    }
    async fn get(&self, key: &str) -> Result<BlobRead> {
        let blob = self.inner.get(key).await?;
        // Counted as announced; a stream could also be counted chunk by chunk.
        self.meter.read.fetch_add(blob.size, Ordering::Relaxed);
        Ok(blob)
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self.inner.get_range(key, range).await?;
        self.meter.read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
    async fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>> {
        self.inner.list(prefix).await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let meter = Arc::new(Meter::default());
    let blobs = Arc::new(Metered {
        inner: Arc::new(ObjectBlobStore::local(&dir.path().join("objects"))?),
        meter: meter.clone(),
    });
    let store = DocStore::builder()
        .blobs(blobs)
        .metadata(Arc::new(SqliteMetadata::in_memory().await?))
        .keys(Arc::new(Keyring::create(&dir.path().join("keyring.json"))?))
        .audit(Arc::new(MemoryAudit::default()))
        .build()?;
    let who = Identity::new("staff:example");
    let report = b"Glicemia de jejum: 92 mg/dL".repeat(1000);
    let v = store
        .put(
            &who,
            PutRequest::new(PatientId::new("patient-7")?, ExamId::new("exam-2026-0042")?)
                .media_type("text/plain"),
            &report[..],
        )
        .await?;
    let back = store.get(&who, &v.document_id, None).await?.read_all().await?;
    assert_eq!(back[..], report[..]);
    println!(
        "{} bytes of report: {} bytes written to the backend, {} read back (header and tags included)",
        report.len(),
        meter.written.load(Ordering::Relaxed),
        meter.read.load(Ordering::Relaxed)
    );
    Ok(())
}
