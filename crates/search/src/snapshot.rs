//! Snapshots of a sealed index in the object store, so that a new search node starts from one
//! instead of reindexing every document from the store.
//!
//! A snapshot copies the files of one commit as they are on disk: each is already an envelope
//! under the index key ([`crate::sealed`]), so the object store receives no plaintext. Beside
//! them go the wrapped index key (`index.key`, which only the key provider can unwrap) and a
//! manifest (the commit's files with their sizes and SHA-256, the number of entries and the bus
//! positions the index covers), itself sealed under the index key with the snapshot's id in its
//! context:
//!
//! ```text
//! search-snapshots/<id>/files/<name>   the sealed index files of one commit, byte for byte
//! search-snapshots/<id>/index.key      the wrapped index key (a key block, as on disk)
//! search-snapshots/<id>/manifest       envelope of the manifest JSON, written last
//! ```
//!
//! The id is the creation time in Unix milliseconds (13 digits) and 8 random hex digits, so the
//! newest snapshot sorts last. A snapshot without its manifest (a crash while taking it) is not
//! listed. A restore checks the manifest's envelope, then every file's size and SHA-256 against
//! it, then that the restored index opens and holds the manifest's count, all in a temporary
//! directory beside the target: an altered, missing or extra byte is an
//! [`SearchError::Integrity`] and nothing is put in place.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use bytes::Bytes;
use docstore::blob::BlobStore;
use docstore::envelope::{self, EncryptionContext};
use docstore::keys::KeyProvider;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::SearchError;
use crate::index::SearchIndex;
use crate::sealed::{IndexKey, KEY_FILE};

/// Where snapshots live in the store's object store (beside `blobs/` and `renditions/`, which
/// the store's garbage collection scans; it never looks here).
pub const SNAPSHOT_PREFIX: &str = "search-snapshots";
/// Bytes read from a file or an object at a time.
const CHUNK: usize = 8 << 20;
/// Attempts at a snapshot while a writer keeps committing.
const ATTEMPTS: usize = 5;
/// Largest manifest accepted (a hostile object must not make a reader allocate more).
const MAX_MANIFEST: u64 = 16 << 20;
/// A key block holds one wrapped data key: a few hundred bytes.
const MAX_KEY_BLOCK: u64 = 64 << 10;

/// What a snapshot holds, as its manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotManifest {
    /// Manifest format (1).
    pub format: u32,
    /// The snapshot's id.
    pub id: String,
    /// When it was taken, Unix milliseconds.
    pub created_at_ms: i64,
    /// Indexed entries (versions) in the commit.
    pub entries: u64,
    /// The commit's files.
    pub files: Vec<SnapshotFile>,
    /// The bus positions the index covers: the index consumer group's committed offsets, read
    /// before the files were copied. Every event before them is in the snapshot (the index stage
    /// commits before it acknowledges); a node restored from it seeds its own group here, and
    /// events after them that are in the snapshot too are indexed again, which is a replace.
    #[serde(default)]
    pub positions: Vec<Position>,
}

/// A consumer group's committed offset in one partition, as a snapshot records it (topic without
/// any wire prefix).
pub use docstore_bus::Position;

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotFile {
    /// Its name in the index directory.
    pub name: String,
    /// Its size (sealed), bytes.
    pub size: u64,
    /// SHA-256 of its sealed bytes, hex.
    pub sha256: String,
}

impl SnapshotManifest {
    /// Sum of the files' sizes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn object(id: &str, part: &str) -> String {
    format!("{SNAPSHOT_PREFIX}/{id}/{part}")
}

fn manifest_context(id: &str) -> EncryptionContext {
    EncryptionContext::new([("purpose", "docstore-search-snapshot"), ("snapshot", id)])
}

fn store_err(e: docstore::Error) -> SearchError {
    SearchError::Store(e)
}

fn io_err(place: &Path) -> impl Fn(io::Error) -> SearchError + '_ {
    move |e| SearchError::Index(format!("{}: {e}", place.display()))
}

/// A snapshot id as this module writes them: 13 digits, a dash, 8 hex digits.
fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 22
        && b[..13].iter().all(u8::is_ascii_digit)
        && b[13] == b'-'
        && b[14..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// A file name tantivy writes: flat, no path separator, not the key file.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name != KEY_FILE && !name.contains(['/', '\\', '\0'])
}

async fn put(blobs: &dyn BlobStore, key: &str, bytes: Vec<u8>) -> Result<(), SearchError> {
    let mut up = blobs.upload(key).await.map_err(store_err)?;
    up.write(Bytes::from(bytes)).await.map_err(store_err)?;
    up.finish().await.map_err(store_err)
}

async fn get_small(blobs: &dyn BlobStore, key: &str, limit: u64) -> Result<Vec<u8>, SearchError> {
    let read = blobs.get(key).await.map_err(store_err)?;
    if read.size > limit {
        return Err(SearchError::Integrity(format!(
            "{key}: {} bytes, over {limit}",
            read.size
        )));
    }
    let mut out = Vec::with_capacity(read.size as usize);
    let mut stream = read.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(store_err)?);
        if out.len() as u64 > limit {
            return Err(SearchError::Integrity(format!("{key}: over {limit} bytes")));
        }
    }
    Ok(out)
}

/// Copies `path` to `key`, streaming; `None` when there is no such file (a segment need not have
/// every component; a file a merge removed meanwhile shows as a changed `meta.json`).
async fn upload_file(
    blobs: &dyn BlobStore,
    path: &Path,
    key: &str,
) -> Result<Option<(u64, String)>, SearchError> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut up = blobs.upload(key).await.map_err(store_err)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        let n = (&mut f)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf);
        size += n as u64;
        if let Err(e) = up.write(Bytes::from(buf)).await {
            let _ = up.abort().await;
            return Err(store_err(e));
        }
    }
    up.finish().await.map_err(store_err)?;
    Ok(Some((size, hex::encode(hash.finalize()))))
}

async fn delete_prefix(blobs: &dyn BlobStore, id: &str) {
    if let Ok(listed) = blobs.list(&format!("{SNAPSHOT_PREFIX}/{id}/")).await {
        for b in listed {
            let _ = blobs.delete(&b.key).await;
        }
    }
}

/// Takes a snapshot of the committed index in `dir` into `blobs`. The index may be open for
/// writing elsewhere: the files of one commit are copied, and if a commit lands meanwhile (its
/// `meta.json` changes, or a merge removes a file being copied) the attempt is dropped and taken
/// again, up to five times. `positions` are the bus positions the index covers, read by the
/// caller before this call (see [`SnapshotManifest::positions`]); empty without a bus.
pub async fn take(
    dir: &Path,
    blobs: &dyn BlobStore,
    keys: &dyn KeyProvider,
    positions: Vec<Position>,
) -> Result<SnapshotManifest, SearchError> {
    let key_block = match std::fs::read(dir.join(KEY_FILE)) {
        Ok(b) => b,
        // No key file: no sealed index here (or one from before sealing); load says which.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IndexKey::load(dir, keys)
                .await
                .err()
                .unwrap_or_else(|| io_err(dir)(e)));
        }
        Err(e) => return Err(io_err(dir)(e)),
    };
    let key = IndexKey::from_block(&key_block, keys).await?;
    let meta_path = dir.join("meta.json");
    for _ in 0..ATTEMPTS {
        let before = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let (entries, mut names) = {
            let index = SearchIndex::open_dir(dir, &key, false)?;
            (index.len(), index.committed_files()?)
        };
        names.insert("meta.json".into());
        if dir.join(".managed.json").exists() {
            names.insert(".managed.json".into());
        }
        let id = format!(
            "{:013}-{}",
            docstore::Timestamp::now().0,
            hex::encode(rand::random::<[u8; 4]>())
        );
        let mut files = Vec::with_capacity(names.len());
        for name in &names {
            match upload_file(blobs, &dir.join(name), &object(&id, &format!("files/{name}"))).await {
                Ok(Some((size, sha256))) => files.push(SnapshotFile {
                    name: name.clone(),
                    size,
                    sha256,
                }),
                Ok(None) => {}
                Err(e) => {
                    delete_prefix(blobs, &id).await;
                    return Err(e);
                }
            }
        }
        // A commit meanwhile rewrote meta.json (and may have removed files copied or not yet).
        let after = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        if after != before {
            delete_prefix(blobs, &id).await;
            continue;
        }
        let manifest = SnapshotManifest {
            format: 1,
            id: id.clone(),
            created_at_ms: docstore::Timestamp::now().0,
            entries,
            files,
            positions: positions.clone(),
        };
        let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let sealed = envelope::seal_to_vec(
            &key.key,
            manifest_context(&id),
            envelope::DEFAULT_FRAME_SIZE,
            rand::random(),
            &json,
        )
        .map_err(|e| SearchError::Index(format!("sealing the manifest: {e}")))?;
        put(blobs, &object(&id, KEY_FILE), key_block.clone()).await?;
        // Last: a snapshot is listed only once its manifest exists.
        put(blobs, &object(&id, "manifest"), sealed).await?;
        return Ok(manifest);
    }
    Err(SearchError::Index(format!(
        "{}: the index kept changing during {ATTEMPTS} snapshot attempts",
        dir.display()
    )))
}

/// The ids of the complete snapshots in `blobs`, oldest first.
pub async fn list(blobs: &dyn BlobStore) -> Result<Vec<String>, SearchError> {
    let listed = blobs
        .list(&format!("{SNAPSHOT_PREFIX}/"))
        .await
        .map_err(store_err)?;
    let mut ids: Vec<String> = listed
        .iter()
        .filter_map(|b| {
            b.key
                .strip_prefix(&format!("{SNAPSHOT_PREFIX}/"))?
                .strip_suffix("/manifest")
        })
        .filter(|id| valid_id(id))
        .map(str::to_owned)
        .collect();
    ids.sort();
    Ok(ids)
}

/// `id` checked, or the newest snapshot's id when `id` is `None`; `None` when there is none.
async fn resolve_id(blobs: &dyn BlobStore, id: Option<&str>) -> Result<Option<String>, SearchError> {
    match id {
        Some(id) if valid_id(id) => Ok(Some(id.to_owned())),
        Some(_) => Err(SearchError::Snapshot("not a snapshot id".into())),
        None => Ok(list(blobs).await?.pop()),
    }
}

/// Opens the manifest of snapshot `id` with `key`.
async fn open_manifest(
    blobs: &dyn BlobStore,
    key: &IndexKey,
    id: &str,
) -> Result<SnapshotManifest, SearchError> {
    let sealed = get_small(blobs, &object(id, "manifest"), MAX_MANIFEST).await?;
    let json = envelope::open_from_slice(&key.key, &manifest_context(id), &sealed)
        .map_err(|e| SearchError::Integrity(format!("snapshot {id}: manifest: {e}")))?;
    let m: SnapshotManifest = serde_json::from_slice(&json)
        .map_err(|e| SearchError::Integrity(format!("snapshot {id}: manifest: {e}")))?;
    if m.format != 1 || m.id != id {
        return Err(SearchError::Integrity(format!(
            "snapshot {id}: the manifest names another snapshot or format"
        )));
    }
    Ok(m)
}

/// Restores snapshot `id` (default: the newest) into `dir`, which must not exist or be empty.
/// Everything is checked in a temporary directory beside `dir` before it is renamed into place;
/// on any failure nothing is left at `dir`. Reads only the snapshot's objects: no document.
pub async fn restore(
    dir: &Path,
    blobs: &dyn BlobStore,
    keys: &dyn KeyProvider,
    id: Option<&str>,
) -> Result<SnapshotManifest, SearchError> {
    let place = dir.display().to_string();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            if entries.into_iter().next().is_some() {
                return Err(SearchError::Snapshot(format!(
                    "{place}: not empty (a snapshot is restored into a new directory)"
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let id = resolve_id(blobs, id)
        .await?
        .ok_or_else(|| SearchError::Missing(format!("{SNAPSHOT_PREFIX}/ (no snapshot)")))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    // The index directory must be 0700.
    let tmp = tempfile::Builder::new()
        .prefix(".restoring-")
        .tempdir_in(&parent)
        .map_err(io_err(&parent))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(tmp.path()))?;
    }
    let key_block = get_small(blobs, &object(&id, KEY_FILE), MAX_KEY_BLOCK).await?;
    let key = IndexKey::from_block(&key_block, keys).await?;
    write_new(&tmp.path().join(KEY_FILE), &key_block).await?;
    let manifest = open_manifest(blobs, &key, &id).await?;
    let mut named = BTreeSet::new();
    for f in &manifest.files {
        if !valid_name(&f.name) || !named.insert(f.name.as_str()) {
            return Err(SearchError::Integrity(format!(
                "snapshot {id}: bad file name in the manifest"
            )));
        }
    }
    // The objects present are exactly the files named: none missing, none added.
    let files = format!("{SNAPSHOT_PREFIX}/{id}/files/");
    let stored = blobs.list(&files).await.map_err(store_err)?;
    let present: BTreeSet<&str> = stored.iter().filter_map(|b| b.key.strip_prefix(&files)).collect();
    if present != named {
        return Err(SearchError::Integrity(format!(
            "snapshot {id}: its files are not the ones its manifest names"
        )));
    }
    for f in &manifest.files {
        fetch_file(blobs, &id, f, &tmp.path().join(&f.name)).await?;
    }
    let entries = SearchIndex::open_dir(tmp.path(), &key, false)
        .map_err(|e| SearchError::Integrity(format!("snapshot {id}: the restored index does not open: {e}")))?
        .len();
    if entries != manifest.entries {
        return Err(SearchError::Integrity(format!(
            "snapshot {id}: {entries} entries restored, the manifest says {}",
            manifest.entries
        )));
    }
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io_err(dir))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, dir).map_err(io_err(dir))?;
    Ok(manifest)
}

/// A new file only its owner can read (the restored index is patient text, sealed or not).
async fn create_private(path: &Path) -> Result<tokio::fs::File, SearchError> {
    docstore::create_private(path).await.map_err(io_err(path))
}

async fn write_new(path: &Path, bytes: &[u8]) -> Result<(), SearchError> {
    let mut f = create_private(path).await?;
    f.write_all(bytes).await.map_err(io_err(path))?;
    f.sync_all().await.map_err(io_err(path))
}

/// Streams one file of snapshot `id` to `path`, checking its size and SHA-256 on the way.
async fn fetch_file(
    blobs: &dyn BlobStore,
    id: &str,
    f: &SnapshotFile,
    path: &Path,
) -> Result<(), SearchError> {
    let bad = || SearchError::Integrity(format!("snapshot {id}: {} does not match the manifest", f.name));
    let read = blobs
        .get(&object(id, &format!("files/{}", f.name)))
        .await
        .map_err(store_err)?;
    if read.size != f.size {
        return Err(bad());
    }
    let mut out = create_private(path).await?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut stream = read.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(store_err)?;
        size += chunk.len() as u64;
        if size > f.size {
            return Err(bad());
        }
        hash.update(&chunk);
        out.write_all(&chunk).await.map_err(io_err(path))?;
    }
    if size != f.size || hex::encode(hash.finalize()) != f.sha256 {
        return Err(bad());
    }
    out.sync_all().await.map_err(io_err(path))
}

/// The manifest of snapshot `id` (default: the newest), checked; `None` when there is none.
pub async fn manifest(
    blobs: &dyn BlobStore,
    keys: &dyn KeyProvider,
    id: Option<&str>,
) -> Result<Option<SnapshotManifest>, SearchError> {
    let Some(id) = resolve_id(blobs, id).await? else {
        return Ok(None);
    };
    let key_block = get_small(blobs, &object(&id, KEY_FILE), MAX_KEY_BLOCK).await?;
    let key = IndexKey::from_block(&key_block, keys).await?;
    open_manifest(blobs, &key, &id).await.map(Some)
}
