//! A bounded cache of *unwrapped* data keys in front of any [`KeyProvider`]. Off by default.
//!
//! It saves a KMS round trip when the same version is read repeatedly (a patient reopening an exam,
//! thumbnails and ranged reads of one document). Data-key *generation* is never cached: every
//! version gets a fresh data key. Trade-off: a cached key stays usable for up to `max_age` (or
//! `max_uses` reads) after the master key is disabled or the version shredded, and sits in this
//! process's memory (zeroized on eviction). Keep the limits small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{KeyProvider, WrappedKey};
use crate::envelope::{DataKey, EncryptionContext};
use crate::error::Result;

/// Cache bounds. All three apply; an entry leaves at whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Entries kept at most (oldest evicted first).
    pub max_entries: usize,
    /// Time an entry stays valid.
    pub max_age: Duration,
    /// Unwraps an entry serves before it is dropped.
    pub max_uses: u64,
}

struct Entry {
    key: DataKey,
    born: Instant,
    uses: u64,
}

/// Where the cache reads the time: `Instant::now`, or a clock a unit test moves.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Caches unwrapped data keys of an inner provider within [`CacheLimits`].
pub struct CachingKeyProvider<P> {
    inner: P,
    limits: CacheLimits,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    clock: Clock,
}

impl<P: std::fmt::Debug> std::fmt::Debug for CachingKeyProvider<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingKeyProvider")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<P> CachingKeyProvider<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, limits: CacheLimits) -> Self {
        CachingKeyProvider {
            inner,
            limits,
            entries: Mutex::new(HashMap::new()),
            clock: Arc::new(Instant::now),
        }
    }

    /// Whether an entry born at `born` is still within `max_age` at `now`.
    fn fresh(&self, born: Instant, now: Instant) -> bool {
        now.saturating_duration_since(born) < self.limits.max_age
    }

    fn slot(wrapped: &WrappedKey, context: &EncryptionContext) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            wrapped.provider.as_bytes(),
            wrapped.key_id.as_bytes(),
            &wrapped.ciphertext,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(context.encode());
        h.finalize().into()
    }

    /// Entries currently cached.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for CachingKeyProvider<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<(DataKey, WrappedKey)> {
        self.inner.generate_data_key(context).await
    }

    async fn encrypt_data_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        self.inner.encrypt_data_key(key, context).await
    }

    async fn decrypt_data_key(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let slot = Self::slot(wrapped, context);
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get_mut(&slot) {
                if self.fresh(e.born, (self.clock)()) && e.uses < self.limits.max_uses {
                    e.uses += 1;
                    return Ok(e.key.clone());
                }
                entries.remove(&slot);
            }
        }
        let key = self.inner.decrypt_data_key(wrapped, context).await?;
        if self.limits.max_entries > 0 && self.limits.max_uses > 0 {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = (self.clock)();
            entries.retain(|_, e| self.fresh(e.born, now));
            while entries.len() >= self.limits.max_entries {
                let oldest = entries.iter().min_by_key(|(_, e)| e.born).map(|(k, _)| *k);
                match oldest {
                    Some(k) => entries.remove(&k),
                    None => break,
                };
            }
            entries.insert(
                slot,
                Entry {
                    key: key.clone(),
                    born: now,
                    uses: 1,
                },
            );
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::keyring::Keyring;

    #[derive(Debug)]
    struct Counting(Keyring, std::sync::atomic::AtomicU64);

    #[async_trait]
    impl KeyProvider for Counting {
        fn name(&self) -> &str {
            self.0.name()
        }
        async fn generate_data_key(&self, c: &EncryptionContext) -> Result<(DataKey, WrappedKey)> {
            self.0.generate_data_key(c).await
        }
        async fn encrypt_data_key(&self, k: &DataKey, c: &EncryptionContext) -> Result<WrappedKey> {
            self.0.encrypt_data_key(k, c).await
        }
        async fn decrypt_data_key(&self, w: &WrappedKey, c: &EncryptionContext) -> Result<DataKey> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.decrypt_data_key(w, c).await
        }
    }

    #[tokio::test]
    async fn bounded_by_uses_entries_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::create(&dir.path().join("k")).unwrap();
        let limits = CacheLimits {
            max_entries: 1,
            max_age: Duration::from_secs(60),
            max_uses: 2,
        };
        let cache = CachingKeyProvider::new(Counting(ring, Default::default()), limits);
        let calls = || cache.inner.1.load(std::sync::atomic::Ordering::SeqCst);
        let ctx = EncryptionContext::new([("a", "1")]);
        let (key, wrapped) = cache.generate_data_key(&ctx).await.unwrap();
        for _ in 0..3 {
            assert_eq!(*cache.decrypt_data_key(&wrapped, &ctx).await.unwrap(), *key);
        }
        assert_eq!(
            calls(),
            2,
            "third read exceeds max_uses = 2 and goes to the provider"
        );
        let other = EncryptionContext::new([("a", "2")]);
        assert!(
            cache.decrypt_data_key(&wrapped, &other).await.is_err(),
            "context is part of the slot"
        );
        let (_, w2) = cache.generate_data_key(&ctx).await.unwrap();
        cache.decrypt_data_key(&w2, &ctx).await.unwrap();
        assert_eq!(cache.len(), 1, "max_entries = 1");
    }

    /// A cache of `max_entries` entries and `max_uses` uses per entry, entries valid for [`AGE`]
    /// by a clock the test moves, over a counting keyring; and the context its keys are read in.
    fn moved_by_hand(
        dir: &std::path::Path,
        max_entries: usize,
        max_uses: u64,
    ) -> (
        CachingKeyProvider<Counting>,
        Arc<Mutex<Instant>>,
        EncryptionContext,
    ) {
        let ring = Keyring::create(&dir.join("k")).unwrap();
        let limits = CacheLimits {
            max_entries,
            max_age: AGE,
            max_uses,
        };
        let mut cache = CachingKeyProvider::new(Counting(ring, Default::default()), limits);
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = now.clone();
        cache.clock = Arc::new(move || *clock.lock().unwrap());
        (cache, now, EncryptionContext::new([("a", "1")]))
    }

    fn calls(cache: &CachingKeyProvider<Counting>) -> u64 {
        cache.inner.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn advance(now: &Mutex<Instant>, by: Duration) {
        let mut t = now.lock().unwrap();
        *t += by;
    }

    const AGE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn an_entry_expires_at_max_age_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, now, ctx) = moved_by_hand(dir.path(), 8, 100);
        let (_, wrapped) = cache.generate_data_key(&ctx).await.unwrap();
        cache.decrypt_data_key(&wrapped, &ctx).await.unwrap();
        assert_eq!(calls(&cache), 1);
        advance(&now, AGE - Duration::from_millis(1));
        cache.decrypt_data_key(&wrapped, &ctx).await.unwrap();
        assert_eq!(calls(&cache), 1, "just under max_age: served from the cache");
        advance(&now, Duration::from_millis(1));
        cache.decrypt_data_key(&wrapped, &ctx).await.unwrap();
        assert_eq!(calls(&cache), 2, "at max_age: the provider is asked again");
    }

    #[tokio::test]
    async fn expired_entries_leave_when_another_is_added() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, now, ctx) = moved_by_hand(dir.path(), 8, 100);
        let (_, old) = cache.generate_data_key(&ctx).await.unwrap();
        let (_, middle) = cache.generate_data_key(&ctx).await.unwrap();
        let (_, new) = cache.generate_data_key(&ctx).await.unwrap();
        cache.decrypt_data_key(&old, &ctx).await.unwrap();
        advance(&now, AGE / 2);
        cache.decrypt_data_key(&middle, &ctx).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(!cache.is_empty());
        // `old` is now exactly max_age old: adding `new` drops it and keeps `middle`.
        advance(&now, AGE / 2);
        cache.decrypt_data_key(&new, &ctx).await.unwrap();
        assert_eq!(cache.len(), 2, "the expired entry left, the fresh one stayed");
        assert_eq!(calls(&cache), 3);
        cache.decrypt_data_key(&middle, &ctx).await.unwrap();
        assert_eq!(calls(&cache), 3, "the fresh entry still serves");
    }

    #[tokio::test]
    async fn the_oldest_entry_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, now, ctx) = moved_by_hand(dir.path(), 2, 100);
        let mut wrapped = Vec::new();
        for _ in 0..3 {
            wrapped.push(cache.generate_data_key(&ctx).await.unwrap().1);
        }
        for w in &wrapped {
            cache.decrypt_data_key(w, &ctx).await.unwrap();
            advance(&now, Duration::from_secs(1));
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(calls(&cache), 3);
        cache.decrypt_data_key(&wrapped[2], &ctx).await.unwrap();
        cache.decrypt_data_key(&wrapped[1], &ctx).await.unwrap();
        assert_eq!(calls(&cache), 3, "the two newest are cached");
        cache.decrypt_data_key(&wrapped[0], &ctx).await.unwrap();
        assert_eq!(calls(&cache), 4, "the oldest was evicted");
    }

    #[tokio::test]
    async fn no_room_or_no_uses_caches_nothing() {
        for (max_entries, max_uses) in [(0, 100), (8, 0)] {
            let dir = tempfile::tempdir().unwrap();
            let (cache, _, ctx) = moved_by_hand(dir.path(), max_entries, max_uses);
            let (key, wrapped) = cache.generate_data_key(&ctx).await.unwrap();
            for _ in 0..2 {
                assert_eq!(*cache.decrypt_data_key(&wrapped, &ctx).await.unwrap(), *key);
            }
            assert!(cache.is_empty(), "{max_entries} entries, {max_uses} uses");
            assert_eq!(cache.len(), 0);
            assert_eq!(calls(&cache), 2, "every read goes to the provider");
        }
    }

    #[tokio::test]
    async fn named_and_shown_as_its_provider_without_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _, ctx) = moved_by_hand(dir.path(), 8, 100);
        assert_eq!(cache.name(), cache.inner.0.name());
        assert!(!cache.name().is_empty());
        let (key, wrapped) = cache.generate_data_key(&ctx).await.unwrap();
        cache.decrypt_data_key(&wrapped, &ctx).await.unwrap();
        let shown = format!("{cache:?}");
        assert!(shown.starts_with("CachingKeyProvider"), "{shown}");
        assert!(shown.contains("max_entries: 8"), "{shown}");
        assert!(!shown.contains(&hex::encode(&key[..])), "no key bytes in Debug");
    }
}
