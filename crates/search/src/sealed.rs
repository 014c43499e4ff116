//! The index at rest: every file tantivy writes is sealed in the envelope format (docs/envelope-v1.md)
//! under one index data key, itself wrapped by the store's key provider (KMS in production) and
//! kept beside the index as `index.key`. The index holds every report's text, so without this
//! the directory, its backups and its copies would hold patient text in plaintext.
//!
//! - Each file is one envelope with its own random message id, so its own frame key, and with the
//!   file's name in its encryption context: a file renamed or moved over another is refused.
//! - Reads decrypt only the frames a range touches. The plaintext is kept in a bounded cache
//!   ([`FRAME_CACHE_BYTES`]) under the range that was read: single frames for small reads
//!   (dictionary and store blocks), and whole ranges for reads across frames, because tantivy
//!   reads a term's posting list and its positions in one call each time a query names the term.
//!   A hot term then costs neither a decryption nor a copy.
//! - Writes seal frame by frame as tantivy writes; memory stays one frame per open file.
//! - Locks, deletes, directory syncs and the meta-file watch are the plain directory's (lock files
//!   are empty).
//!
//! What is not covered: the *names* of the files (segment ids) and their sizes are visible, and an
//! attacker who can write the directory can put back an older sealed `meta.json` (a rollback to
//! an older commit of the same index). Plaintext read by tantivy lives in this process's memory as
//! long as tantivy keeps it; the cache's plaintext is not zeroized when evicted.

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use docstore::envelope::{self, DataKey, EncryptionContext, Header, Layout, MAGIC, Opener, Sealer, TAG_LEN};
use docstore::keys::{KeyProvider, WrappedKey, decode_key_block, encode_key_block};
use tantivy::HasLen;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, OwnedBytes, TerminatingWrite,
    WatchCallback, WatchHandle, WritePtr,
};
use zeroize::Zeroizing;

use crate::SearchError;

/// The wrapped index data key, beside the index.
pub const KEY_FILE: &str = "index.key";
/// Plaintext bytes per frame of an index file: small, because queries read small ranges.
pub const FRAME_SIZE: u32 = 16 * 1024;
/// Bytes of opened plaintext kept per index. At 4,000,000 reports the posting lists of the search
/// bench's 15 queries outgrow 64 MiB, and a cyclic pass over a working set larger than an LRU
/// cache misses every time, decrypting megabytes per query again; the ciphertext itself is 6 GB
/// of page cache at that size, so this is a small share of what the index holds in memory.
pub const FRAME_CACHE_BYTES: usize = 512 << 20;
/// Reads larger than this share of the cache (32 MiB) are not kept: tantivy reads such files
/// (fast fields, the term dictionary's FST) once when it opens a segment and holds them itself,
/// and keeping them would only evict the hot lists.
const LARGEST_CACHED: usize = FRAME_CACHE_BYTES / 16;
/// The encryption context of the index data key (KMS binds it to the wrap).
const PURPOSE: (&str, &str) = ("purpose", "docstore-search-index");

/// The data key that seals one index's files, unwrapped. Zeroized on drop; `Debug` names only the
/// provider and key id that wrap it.
pub struct IndexKey {
    pub(crate) key: DataKey,
    wrapped: WrappedKey,
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexKey")
            .field("provider", &self.wrapped.provider)
            .field("key_id", &self.wrapped.key_id)
            .finish_non_exhaustive()
    }
}

fn key_context() -> EncryptionContext {
    EncryptionContext::new([PURPOSE])
}

fn file_context(path: &Path) -> EncryptionContext {
    EncryptionContext::new([PURPOSE, ("file", &*path.to_string_lossy())])
}

fn index_err(place: &Path) -> impl Fn(io::Error) -> SearchError + '_ {
    move |e| SearchError::Index(format!("{}: {e}", place.display()))
}

impl IndexKey {
    /// The key of the index in `dir`: unwrapped from `dir/index.key` with `keys`, or, when the
    /// directory has no index yet, a new data key from `keys` whose wrapped form is written there
    /// (the directory is created, mode 0700). An index whose key file is gone cannot be read:
    /// that is [`SearchError::Outdated`] (rebuild it with `docstore reindex`).
    pub async fn load_or_create(dir: &Path, keys: &dyn KeyProvider) -> Result<IndexKey, SearchError> {
        match Self::load(dir, keys).await {
            Err(SearchError::Missing(_)) if !dir.join(tantivy_meta()).exists() => {}
            other => return other,
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(index_err(dir))?;
        let (key, wrapped) = keys
            .generate_data_key(&key_context())
            .await
            .map_err(SearchError::Key)?;
        let made = IndexKey { key, wrapped };
        match made.write(dir) {
            Ok(()) => Ok(made),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(dir, keys).await,
            Err(e) => Err(index_err(dir)(e)),
        }
    }

    /// The key of the existing index in `dir`; [`SearchError::Missing`] when it has no key file
    /// and no index, [`SearchError::Outdated`] when it has an index but no key file.
    pub async fn load(dir: &Path, keys: &dyn KeyProvider) -> Result<IndexKey, SearchError> {
        let place = || dir.display().to_string();
        let bytes = match std::fs::read(dir.join(KEY_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if dir.join(tantivy_meta()).exists() {
                    SearchError::Outdated(place())
                } else {
                    SearchError::Missing(place())
                });
            }
            Err(e) => return Err(index_err(dir)(e)),
        };
        Self::from_block(&bytes, keys).await.map_err(|e| match e {
            SearchError::Index(why) => SearchError::Index(format!("{}: {KEY_FILE}: {why}", place())),
            other => other,
        })
    }

    /// The key whose wrapped form is the key block `bytes` (an `index.key` file's content).
    pub async fn from_block(bytes: &[u8], keys: &dyn KeyProvider) -> Result<IndexKey, SearchError> {
        let bad = |why: &str| SearchError::Index(why.to_owned());
        let mut block = decode_key_block(bytes).map_err(|e| bad(&e.to_string()))?;
        if block.len() != 1 {
            return Err(bad("expected one wrapped key"));
        }
        let wrapped = block.remove(0);
        let key = keys
            .decrypt_data_key(&wrapped, &key_context())
            .await
            .map_err(SearchError::Key)?;
        Ok(IndexKey { key, wrapped })
    }

    /// Writes the wrapped key to `dir/index.key` (never over an existing one), durably.
    pub(crate) fn write(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = tempfile::Builder::new().prefix(".index.key").tempfile_in(dir)?;
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .mode(0o600)
                .open(tmp.path())?;
            f.write_all(&encode_key_block(std::slice::from_ref(&self.wrapped)))?;
            f.sync_all()?;
        }
        // A hard link fails if the name exists: two processes creating one index keep one key.
        std::fs::hard_link(tmp.path(), dir.join(KEY_FILE))?;
        drop(tmp);
        std::fs::File::open(dir)?.sync_all()
    }
}

fn tantivy_meta() -> &'static str {
    "meta.json"
}

/// Whether the index in `dir` was written before its files were sealed (its `meta.json` is not an
/// envelope): it must be rebuilt.
pub(crate) fn is_plaintext_index(dir: &Path) -> bool {
    let mut magic = [0u8; 4];
    match std::fs::File::open(dir.join(tantivy_meta())) {
        Ok(mut f) => io::Read::read_exact(&mut f, &mut magic).is_err() || magic != MAGIC,
        Err(_) => false,
    }
}

/// Plaintext of every file of one index, keyed by (file, start, end) of the range read, least
/// recently used evicted first.
struct FrameCache {
    ranges: lru::LruCache<(u64, usize, usize), (OwnedBytes, usize)>,
    bytes: usize,
}

impl FrameCache {
    fn get(&mut self, at: (u64, usize, usize)) -> Option<OwnedBytes> {
        self.ranges.get(&at).map(|(p, _)| p.clone())
    }

    /// Keeps `plain`, which holds `cost` bytes of memory (a range's view keeps its whole frames).
    fn put(&mut self, at: (u64, usize, usize), plain: OwnedBytes, cost: usize) {
        if cost > LARGEST_CACHED {
            return;
        }
        self.bytes += cost;
        if let Some((_, old)) = self.ranges.push(at, (plain, cost)) {
            self.bytes -= old.1;
        }
        while self.bytes > FRAME_CACHE_BYTES {
            match self.ranges.pop_lru() {
                Some((_, (_, c))) => self.bytes -= c,
                None => break,
            }
        }
    }
}

/// A tantivy [`Directory`] whose files are envelopes sealed under an [`IndexKey`], stored in a
/// plain directory on disk.
#[derive(Clone)]
pub struct SealedDirectory {
    inner: MmapDirectory,
    key: Arc<DataKey>,
    cache: Arc<Mutex<FrameCache>>,
    /// Numbers each opened file, for the frame cache's keys.
    opened: Arc<AtomicU64>,
}

impl std::fmt::Debug for SealedDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedDirectory")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn invalid(path: &Path, e: docstore::IntegrityError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sealed index file {}: {e}", path.display()),
    )
}

impl SealedDirectory {
    /// The index files in `dir`, sealed and opened under `key`.
    pub fn open(dir: &Path, key: &IndexKey) -> Result<SealedDirectory, SearchError> {
        let inner =
            MmapDirectory::open(dir).map_err(|e| SearchError::Index(format!("{}: {e}", dir.display())))?;
        Ok(SealedDirectory {
            inner,
            key: Arc::new(key.key.clone()),
            cache: Arc::new(Mutex::new(FrameCache {
                ranges: lru::LruCache::unbounded(),
                bytes: 0,
            })),
            opened: Arc::default(),
        })
    }

    fn open_sealed(&self, path: &Path, sealed: Arc<dyn FileHandle>) -> io::Result<SealedFile> {
        let len = sealed.len();
        let prefix = sealed.read_bytes(0..len.min(Header::MIN_PREFIX))?;
        let header_len = Header::encoded_len(&prefix).map_err(|e| invalid(path, e))?;
        if header_len > len {
            return Err(invalid(
                path,
                docstore::IntegrityError::MalformedHeader("truncated header"),
            ));
        }
        let (header, _) = Header::parse(&sealed.read_bytes(0..header_len)?).map_err(|e| invalid(path, e))?;
        if header.context != file_context(path) {
            return Err(invalid(path, docstore::IntegrityError::Context));
        }
        let opener = Opener::new(&header, &self.key).map_err(|e| invalid(path, e))?;
        let layout = header
            .layout((len - header_len) as u64)
            .map_err(|e| invalid(path, e))?;
        Ok(SealedFile {
            id: self.opened.fetch_add(1, Ordering::Relaxed),
            path: path.to_owned(),
            sealed,
            header_len,
            layout,
            opener,
            cache: self.cache.clone(),
        })
    }
}

/// One sealed file opened for reading: its frames decrypted on demand.
struct SealedFile {
    id: u64,
    path: PathBuf,
    sealed: Arc<dyn FileHandle>,
    header_len: usize,
    layout: Layout,
    opener: Opener,
    cache: Arc<Mutex<FrameCache>>,
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SealedFile {
    fn cached(&self, range: &Range<usize>) -> Option<OwnedBytes> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get((self.id, range.start, range.end))
    }

    fn keep(&self, range: &Range<usize>, plain: &OwnedBytes, cost: usize) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).put(
            (self.id, range.start, range.end),
            plain.clone(),
            cost,
        );
    }

    /// The plaintext of frames `first..=last`, opened in place in one buffer: one copy of the
    /// ciphertext out of the mapped file, no copy of the plaintext.
    fn open_frames(&self, first: u64, last: u64) -> io::Result<Vec<u8>> {
        let fs = self.layout.frame_size as usize;
        let start = first as usize * fs;
        let end = (last as usize + 1) * fs;
        let mut plain = Vec::with_capacity(end.min(self.len()) - start);
        for i in first..=last {
            let at = self.header_len + self.layout.frame_offset(i) as usize;
            let len = self.layout.frame_plaintext_len(i) as usize;
            let cipher = self.sealed.read_bytes(at..at + len + TAG_LEN)?;
            let tag: [u8; TAG_LEN] = cipher.as_slice()[len..].try_into().expect("tag length");
            let from = plain.len();
            plain.extend_from_slice(&cipher.as_slice()[..len]);
            self.opener
                .open_in_place(i, i + 1 == self.layout.frames, &mut plain[from..], &tag)
                .map_err(|e| invalid(&self.path, e))?;
        }
        Ok(plain)
    }
}

impl HasLen for SealedFile {
    fn len(&self) -> usize {
        self.layout.plaintext_len as usize
    }
}

impl FileHandle for SealedFile {
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        if range.start >= range.end {
            return Ok(OwnedBytes::empty());
        }
        if range.end > self.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of an index file",
            ));
        }
        let fs = self.layout.frame_size as usize;
        let (first, last) = self.layout.frames_for(range.start as u64, range.end as u64);
        let base = first as usize * fs;
        // A read within one frame keeps the whole frame, which the small reads near it share; a
        // read across frames keeps exactly itself.
        let kept_range = if first == last {
            base..(base + fs).min(self.len())
        } else {
            range.clone()
        };
        let kept = match self.cached(&kept_range) {
            Some(p) => p,
            None => {
                let frames = OwnedBytes::new(self.open_frames(first, last)?);
                let cost = frames.len();
                let p = frames.slice(kept_range.start - base..kept_range.end - base);
                self.keep(&kept_range, &p, cost);
                p
            }
        };
        Ok(kept.slice(range.start - kept_range.start..range.end - kept_range.start))
    }
}

/// Seals what tantivy writes, one frame at a time. A frame is sealed once the next byte shows it
/// is not the last; the last is sealed as final on `terminate`. A file dropped without
/// `terminate` has no final frame, and reading it fails.
struct SealingWriter {
    out: WritePtr,
    sealer: Sealer,
    frame: Zeroizing<Vec<u8>>,
    frame_size: usize,
}

impl SealingWriter {
    fn seal(&mut self, is_final: bool) -> io::Result<()> {
        let tag = self
            .sealer
            .seal_in_place(&mut self.frame, is_final)
            .map_err(io::Error::other)?;
        self.out.write_all(&self.frame)?;
        self.out.write_all(&tag)?;
        self.frame.clear();
        Ok(())
    }
}

impl Write for SealingWriter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let given = buf.len();
        while !buf.is_empty() {
            if self.frame.len() == self.frame_size {
                self.seal(false)?;
            }
            let take = (self.frame_size - self.frame.len()).min(buf.len());
            self.frame.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
        }
        Ok(given)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A partial frame cannot be sealed early: only what is sealed reaches the file.
        self.out.flush()
    }
}

impl TerminatingWrite for SealingWriter {
    fn terminate_ref(&mut self, token: AntiCallToken) -> io::Result<()> {
        self.seal(true)?;
        self.out.terminate_ref(token)
    }
}

impl Directory for SealedDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        let sealed = self.inner.get_file_handle(path)?;
        let file = self
            .open_sealed(path, sealed)
            .map_err(|e| OpenReadError::wrap_io_error(e, path.to_owned()))?;
        Ok(Arc::new(file))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let mut out = self.inner.open_write(path)?;
        let io_err = |e: io::Error| OpenWriteError::wrap_io_error(e, path.to_owned());
        let sealer = Sealer::with_random_id(&self.key, file_context(path), FRAME_SIZE)
            .map_err(|e| io_err(io::Error::other(e)))?;
        out.write_all(sealer.header().as_bytes()).map_err(io_err)?;
        Ok(io::BufWriter::new(Box::new(SealingWriter {
            out,
            sealer,
            frame: Zeroizing::new(Vec::with_capacity(FRAME_SIZE as usize)),
            frame_size: FRAME_SIZE as usize,
        })))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        let sealed = self.inner.atomic_read(path)?;
        envelope::open_from_slice(&self.key, &file_context(path), &sealed)
            .map(|plain| plain.to_vec())
            .map_err(|e| OpenReadError::wrap_io_error(invalid(path, e), path.to_owned()))
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let sealed = envelope::seal_to_vec(&self.key, file_context(path), FRAME_SIZE, rand::random(), data)
            .map_err(io::Error::other)?;
        self.inner.atomic_write(path, &sealed)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}
