//! Key providers: generate and unwrap per-version data keys.
//!
//! The wrapped keys of a version form its *key block*, stored in the metadata record and not in the
//! blob, so that re-wrap rewrites a few hundred bytes and crypto-shredding deletes them, without
//! touching content.

use async_trait::async_trait;

use crate::envelope::{DataKey, EncryptionContext};
use crate::error::{Error, IntegrityError, Result};

pub mod cache;
pub mod keyring;
#[cfg(feature = "aws")]
pub mod kms;

/// One wrapped copy of a data key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Provider that can unwrap it (`keyring`, `kms`).
    pub provider: String,
    /// Key id within that provider.
    pub key_id: String,
    /// Provider-specific ciphertext of the data key.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey")
            .field("provider", &self.provider)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

const KEY_BLOCK_VERSION: u8 = 1;
const MAX_WRAPPED: usize = 16;

/// Encodes wrapped keys: u8 version, u16 count, then per key u16+provider, u16+key id, u32+ciphertext.
pub fn encode_key_block(keys: &[WrappedKey]) -> Vec<u8> {
    let mut out = vec![KEY_BLOCK_VERSION];
    out.extend_from_slice(&(keys.len() as u16).to_be_bytes());
    for k in keys {
        for s in [k.provider.as_bytes(), k.key_id.as_bytes()] {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&(k.ciphertext.len() as u32).to_be_bytes());
        out.extend_from_slice(&k.ciphertext);
    }
    out
}

/// Decodes a key block; an empty block means the version was crypto-shredded.
pub fn decode_key_block(bytes: &[u8]) -> Result<Vec<WrappedKey>, IntegrityError> {
    let bad = IntegrityError::MalformedHeader("malformed key block");
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], IntegrityError> {
        if rest.len() < n {
            return Err(bad.clone());
        }
        let (h, t) = rest.split_at(n);
        rest = t;
        Ok(h)
    };
    if take(1)?[0] != KEY_BLOCK_VERSION {
        return Err(bad.clone());
    }
    let count = u16::from_be_bytes(take(2)?.try_into().expect("2")) as usize;
    if count == 0 || count > MAX_WRAPPED {
        return Err(bad.clone());
    }
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let mut strings = [String::new(), String::new()];
        for s in &mut strings {
            let n = u16::from_be_bytes(take(2)?.try_into().expect("2")) as usize;
            *s = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad.clone())?;
        }
        let n = u32::from_be_bytes(take(4)?.try_into().expect("4")) as usize;
        let ciphertext = take(n)?.to_vec();
        let [provider, key_id] = strings;
        keys.push(WrappedKey {
            provider,
            key_id,
            ciphertext,
        });
    }
    if !rest.is_empty() {
        return Err(bad);
    }
    Ok(keys)
}

/// The seam to a key-management system.
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// Name written into [`WrappedKey::provider`].
    fn name(&self) -> &str;

    /// A fresh 256-bit data key and its wrapped form, bound to `context`.
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<(DataKey, WrappedKey)>;

    /// Wraps an existing data key under this provider's current key (re-wrap).
    async fn encrypt_data_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey>;

    /// Unwraps a data key; fails with [`IntegrityError::KeyUnwrap`] when the ciphertext or the context
    /// does not match.
    async fn decrypt_data_key(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey>;
}

/// Unwraps the first key in `block` that `provider` can open.
pub async fn unwrap_key_block(
    provider: &dyn KeyProvider,
    block: &[u8],
    context: &EncryptionContext,
    document: &str,
    version: u64,
) -> Result<DataKey> {
    let keys = decode_key_block(block).map_err(|k| Error::integrity(document, version, k))?;
    let mut last = None;
    for k in keys.iter().filter(|k| k.provider == provider.name()) {
        match provider.decrypt_data_key(k, context).await {
            Ok(key) => return Ok(key),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(Error::Integrity { kind, .. }) => Error::integrity(document, version, kind),
        Some(other) => other,
        None => Error::Key(format!(
            "no wrapped key for provider {} on {document} v{version}",
            provider.name()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_block_round_trip_and_rejects_garbage() {
        let k = WrappedKey {
            provider: "keyring".into(),
            key_id: "local-1".into(),
            ciphertext: vec![1, 2, 3],
        };
        let enc = encode_key_block(std::slice::from_ref(&k));
        assert_eq!(decode_key_block(&enc).unwrap(), vec![k]);
        assert!(decode_key_block(&enc[..enc.len() - 1]).is_err());
        assert!(decode_key_block(&[]).is_err());
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode_key_block(&extra).is_err());
    }

    /// A block holds one to sixteen wrapped keys: none, or more than sixteen, is malformed.
    #[test]
    fn key_block_counts_are_bounded() {
        let k = |i: usize| WrappedKey {
            provider: "keyring".into(),
            key_id: format!("k{i}"),
            ciphertext: vec![i as u8],
        };
        let keys = |n: usize| (0..n).map(k).collect::<Vec<_>>();
        assert_eq!(decode_key_block(&encode_key_block(&keys(16))).unwrap().len(), 16);
        assert!(decode_key_block(&encode_key_block(&keys(17))).is_err());
        assert!(decode_key_block(&encode_key_block(&[])).is_err());
    }

    /// Debug output names the provider and key id, never the wrapped key's bytes.
    #[test]
    fn debug_names_the_key_not_its_ciphertext() {
        let k = WrappedKey {
            provider: "kms".into(),
            key_id: "alias/clinic".into(),
            ciphertext: vec![0xAB; 4],
        };
        let shown = format!("{k:?}");
        assert!(shown.contains("kms") && shown.contains("alias/clinic"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
            "{shown}"
        );
    }
}
