//! Tamper classes: every modification of stored bytes or of the wrapped key is caught with a typed
//! integrity error, and no unauthenticated plaintext is released.

mod common;

use std::path::PathBuf;

use docstore::envelope::{self, EncryptionContext, Header, TAG_LEN};
use docstore::{DocStore, Error, Identity, IntegrityError, VersionRecord};
use futures::StreamExt;
use zeroize::Zeroizing;

const FS: u32 = 1024;
const LEN: usize = 4 * FS as usize + 100; // 5 frames, the last one short

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: DocStore,
    plain: Vec<u8>,
    v1: VersionRecord,
    v2: VersionRecord,
    original: Vec<u8>,
    header_len: usize,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let store = DocStore::init_local(&root)
            .await
            .unwrap()
            .with_frame_size(FS)
            .unwrap();
        let who = Identity::new("staff:tamper");
        let plain = docstore::conformance::pattern(LEN, 5);
        let req = docstore::conformance::request(None, "p-1", "e-1");
        let v1 = store.put(&who, req, &plain[..]).await.unwrap();
        let req = docstore::conformance::request(Some(&v1.document_id), "p-1", "e-1");
        let v2 = store.put(&who, req, &plain[..]).await.unwrap();
        let path = root.join("objects").join(&v2.blob_key);
        let original = std::fs::read(&path).unwrap();
        let header_len = Header::parse(&original).unwrap().1;
        Fixture {
            _dir: dir,
            root,
            store,
            plain,
            v1,
            v2,
            original,
            header_len,
        }
    }

    /// The metadata database, for the edits no API allows.
    async fn metadata(&self) -> sqlx::SqlitePool {
        let url = format!("sqlite://{}", self.root.join("metadata.sqlite").display());
        sqlx::SqlitePool::connect(&url).await.unwrap()
    }

    /// A whole read of v2.
    async fn full_read(&self) -> Result<Vec<u8>, Error> {
        let who = Identity::new("staff:tamper");
        match self.store.get(&who, &self.v2.document_id, Some(2)).await {
            Ok(d) => d.read_all().await.map(|b| b.to_vec()),
            Err(e) => Err(e),
        }
    }

    fn blob_path(&self) -> PathBuf {
        self.root.join("objects").join(&self.v2.blob_key)
    }

    fn frame_range(&self, i: usize) -> std::ops::Range<usize> {
        let full = FS as usize + TAG_LEN;
        let start = self.header_len + i * full;
        start..(start + full).min(self.original.len())
    }

    /// Writes `bytes` as v2's blob, reads v2 every way, and returns the error of the full read.
    async fn check(&self, what: &str, bytes: &[u8]) -> IntegrityError {
        std::fs::write(self.blob_path(), bytes).unwrap();
        let kind = self.expect_integrity(what).await;
        std::fs::write(self.blob_path(), &self.original).unwrap();
        kind
    }

    async fn expect_integrity(&self, what: &str) -> IntegrityError {
        let who = Identity::new("staff:tamper");
        let doc = &self.v2.document_id;
        // Whole read: an error and no bytes at all.
        let kind = match self.full_read().await.map(|b| b.len()) {
            Err(Error::Integrity { kind, version: 2, .. }) => kind,
            other => panic!("{what}: expected an integrity error, got {other:?}"),
        };
        // Streaming: whatever is released before the error is authentic plaintext, in order.
        if let Ok(d) = self.store.get(&who, doc, Some(2)).await {
            let mut s = d.into_stream();
            let mut released = Vec::new();
            let mut failed = false;
            while let Some(item) = s.next().await {
                match item {
                    Ok(chunk) => released.extend_from_slice(&chunk),
                    Err(Error::Integrity { .. }) => {
                        failed = true;
                        break;
                    }
                    Err(e) => panic!("{what}: unexpected error {e}"),
                }
            }
            assert!(failed, "{what}: stream ended without an error");
            assert!(released.len() < LEN, "{what}: released the whole document");
            assert!(
                released[..] == self.plain[..released.len()],
                "{what}: released unauthenticated bytes"
            );
        }
        // Ranged reads over the whole document fail or return only authentic bytes.
        for r in [0..LEN as u64, (LEN - 10) as u64..LEN as u64] {
            if let Ok(b) = self.store.get_range(&who, doc, Some(2), r.clone()).await {
                assert!(
                    b[..] == self.plain[r.start as usize..r.end as usize],
                    "{what}: ranged read"
                );
            }
        }
        // The untouched version still reads.
        let v1 = self
            .store
            .get(&who, doc, Some(1))
            .await
            .unwrap()
            .read_all()
            .await
            .unwrap();
        assert!(v1[..] == self.plain[..], "{what}: collateral damage to v1");
        kind
    }
}

#[tokio::test]
async fn flipped_bit_anywhere_in_the_header() {
    let f = Fixture::new().await;
    assert_eq!(f.original.len(), f.header_len + LEN + 5 * TAG_LEN);
    for off in 0..f.header_len {
        let mut b = f.original.clone();
        b[off] ^= 0x10;
        f.check(&format!("header byte {off}"), &b).await;
    }
}

#[tokio::test]
async fn flipped_bit_in_every_frame_and_every_tag() {
    let f = Fixture::new().await;
    for i in 0..5 {
        let r = f.frame_range(i);
        for (label, off) in [
            ("body", r.start + 3),
            ("tag", r.end - 1),
            ("tag start", r.end - TAG_LEN),
        ] {
            let mut b = f.original.clone();
            b[off] ^= 0x01;
            let kind = f.check(&format!("frame {i} {label}"), &b).await;
            assert_eq!(
                kind,
                IntegrityError::Frame { index: i as u64 },
                "frame {i} {label}"
            );
        }
    }
}

#[tokio::test]
async fn truncation_at_a_frame_boundary_and_mid_frame() {
    let f = Fixture::new().await;
    let at_boundary = &f.original[..f.frame_range(3).end];
    assert!(matches!(
        f.check("truncated at boundary", at_boundary).await,
        IntegrityError::Size { .. }
    ));
    let mid = &f.original[..f.frame_range(2).start + 100];
    f.check("truncated mid-frame", mid).await;
    let header_only = &f.original[..f.header_len];
    f.check("header only", header_only).await;
    f.check("half a header", &f.original[..f.header_len / 2]).await;
    f.check("empty blob", &[]).await;
}

#[tokio::test]
async fn swapped_and_appended_frames() {
    let f = Fixture::new().await;
    let mut swapped = f.original[..f.header_len].to_vec();
    for i in [0, 2, 1, 3, 4] {
        swapped.extend_from_slice(&f.original[f.frame_range(i)]);
    }
    assert_eq!(
        f.check("frames 1 and 2 swapped", &swapped).await,
        IntegrityError::Frame { index: 1 }
    );
    let mut appended = f.original.clone();
    appended.extend_from_slice(&f.original[f.frame_range(1)]);
    f.check("frame appended", &appended).await;
}

#[tokio::test]
async fn wrapped_key_swapped_with_another_versions() {
    let f = Fixture::new().await;
    let pool = f.metadata().await;
    let swap = "UPDATE versions SET key_block = (SELECT key_block FROM versions WHERE version = 1) WHERE version = 2";
    sqlx::query(swap).execute(&pool).await.unwrap();
    assert_eq!(
        f.expect_integrity("key block swapped").await,
        IntegrityError::KeyUnwrap
    );
    assert_ne!(f.v1.version_id, f.v2.version_id);
}

#[tokio::test]
async fn encryption_context_changed() {
    let f = Fixture::new().await;
    // Re-point the header's version id at v1's: same length, so only the context differs.
    let needle = f.v2.version_id.as_str().as_bytes();
    let pos = f.original[..f.header_len]
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("version id in header");
    let mut b = f.original.clone();
    b[pos..pos + needle.len()].copy_from_slice(f.v1.version_id.as_str().as_bytes());
    assert_eq!(f.check("context changed", &b).await, IntegrityError::Context);
}

/// The same classes against the bare envelope, without metadata's size check: the frame
/// authentication alone must catch truncation and extension.
#[test]
fn bare_envelope_catches_structure_changes_cryptographically() {
    let key = Zeroizing::new([3u8; 32]);
    let ctx = EncryptionContext::new([("docstore.document", "d"), ("docstore.version_id", "v")]);
    let plain = docstore::conformance::pattern(LEN, 9);
    let env = envelope::seal_to_vec(&key, ctx.clone(), FS, [1; 32], &plain).unwrap();
    let hl = Header::parse(&env).unwrap().1;
    let full = FS as usize + TAG_LEN;
    let open = |b: &[u8]| envelope::open_from_slice(&key, &ctx, b).map(|p| p.len());
    assert_eq!(open(&env), Ok(LEN));
    assert_eq!(
        open(&env[..hl + 4 * full]),
        Err(IntegrityError::Frame { index: 3 })
    );
    assert!(open(&env[..hl + 2 * full + 50]).is_err());
    let mut appended = env.clone();
    appended.extend_from_slice(&env[hl..hl + full]);
    assert_eq!(open(&appended), Err(IntegrityError::Frame { index: 4 }));
    let other = EncryptionContext::new([("docstore.document", "d"), ("docstore.version_id", "w")]);
    assert_eq!(
        envelope::open_from_slice(&key, &other, &env).map(|p| p.len()),
        Err(IntegrityError::Context)
    );
    let wrong_key = Zeroizing::new([4u8; 32]);
    assert_eq!(
        envelope::open_from_slice(&wrong_key, &ctx, &env).map(|p| p.len()),
        Err(IntegrityError::Commitment)
    );
}

/// The record's digest is checked on a full read, and again after a read that matched: the
/// memory of verified objects is keyed by the digest too.
#[tokio::test]
async fn digest_in_the_record_is_checked_before_and_after_a_verified_read() {
    let f = Fixture::new().await;
    let pool = f.metadata().await;
    let set = |hex: String| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE versions SET sha256 = ? WHERE version = 2")
                .bind(hex)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let wrong = "00".repeat(32);
    set(wrong.clone()).await;
    assert_eq!(f.expect_integrity("digest").await, IntegrityError::Digest);
    set(f.v2.sha256.clone()).await;
    assert_eq!(f.full_read().await.unwrap(), f.plain);
    assert_eq!(f.full_read().await.unwrap(), f.plain);
    set(wrong).await;
    assert!(matches!(
        f.full_read().await,
        Err(Error::Integrity {
            kind: IntegrityError::Digest,
            ..
        })
    ));
}

/// Someone who holds the version's data key (object-store write and KMS decrypt, no metadata
/// write) seals other bytes of the same length under the same key and context: every frame
/// authenticates, and only the record's digest tells. A full read that matched before must not
/// let the replacement through.
#[tokio::test]
async fn an_object_resealed_by_a_key_holder_is_caught_after_a_verified_read() {
    let f = Fixture::new().await;
    assert_eq!(f.full_read().await.unwrap(), f.plain);
    let keyring = docstore::keys::keyring::Keyring::open(&f.root.join("keyring.json")).unwrap();
    let ctx = DocStore::context(&f.v2.document_id, &f.v2.version_id);
    let key = docstore::keys::unwrap_key_block(&keyring, &f.v2.key_block, &ctx, &f.v2.document_id, 2)
        .await
        .unwrap();
    let mut other = f.plain.clone();
    other[LEN / 2] ^= 1;
    let forged = envelope::seal_to_vec(&key, ctx, FS, [9; 32], &other).unwrap();
    // Written as a new file under the same key, as an object store's overwrite is.
    let path = f.blob_path();
    let tmp = path.with_extension("forged");
    std::fs::write(&tmp, &forged).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let who = Identity::new("staff:tamper");
    // The frames themselves open: the forgery is one only the digest can see.
    let mid = f
        .store
        .get_range(&who, &f.v2.document_id, Some(2), 0..LEN as u64)
        .await
        .unwrap();
    assert!(mid[..] == other[..]);
    assert!(matches!(
        f.full_read().await,
        Err(Error::Integrity {
            kind: IntegrityError::Digest,
            ..
        })
    ));
}
