//! A local keyring file: the embedded default key provider. **Not for production**: the master keys
//! sit on the same disk as the data. Use AWS KMS in production.
//!
//! The file is JSON, created with mode 0600; opening refuses a file that group or others can read,
//! one another user owns, or a symlink, because anyone who reads it can unwrap every data key.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{KeyProvider, WrappedKey};
use crate::envelope::{DataKey, EncryptionContext};
use crate::error::{Error, IntegrityError, Result};

/// Provider name written into wrapped keys.
pub const PROVIDER: &str = "keyring";
const WARNING: &str = "LOCAL KEYRING - NOT FOR PRODUCTION. Anyone who can read this file can decrypt every document. Use AWS KMS in production.";
const AAD_PREFIX: &[u8] = b"docstore keyring v1\0";

#[derive(Serialize, Deserialize)]
struct FileFormat {
    warning: String,
    format: u32,
    primary: String,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
struct FileKey {
    id: String,
    created_at: i64,
    enabled: bool,
    material: String,
}

struct Entry {
    id: String,
    enabled: bool,
    cipher: Aes256Gcm,
}

/// Master keys loaded from a keyring file.
pub struct Keyring {
    path: PathBuf,
    primary: String,
    keys: Vec<Entry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("primary", &self.primary)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Keyring {
    /// Creates a new keyring file (mode 0600) with one fresh master key; fails if it exists.
    pub fn create(path: &Path) -> Result<Self> {
        let mut material = Zeroizing::new([0u8; 32]);
        rand::fill(material.as_mut_slice());
        let id = format!("local-{}", uuid::Uuid::new_v4());
        let mut file_fmt = FileFormat {
            warning: WARNING.into(),
            format: 1,
            primary: id.clone(),
            keys: vec![FileKey {
                id: id.clone(),
                created_at: crate::model::Timestamp::now().0,
                enabled: true,
                material: B64.encode(material.as_slice()),
            }],
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file_fmt).expect("serializable"));
        file_fmt.keys[0].material.zeroize();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(Keyring {
            path: path.to_owned(),
            primary: id.clone(),
            keys: vec![Entry {
                id,
                enabled: true,
                cipher: Aes256Gcm::new(material.as_slice().into()),
            }],
        })
    }

    /// Opens an existing keyring, refusing unsafe permissions.
    ///
    /// The checks are made on the open descriptor (`O_NOFOLLOW`, then `fstat`), so what is checked
    /// is what is read: a symlink, a file another user owns, or one that group or others can
    /// read is refused, and no swap between a check and the read can change that.
    pub fn open(path: &Path) -> Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let io = |e: std::io::Error| Error::io(path.display().to_string(), e);
        let refused = |mode| Error::KeyringPermissions {
            path: path.to_owned(),
            mode,
        };
        let fd = match rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // ELOOP: the last component is a symlink (reported as lstat would: S_IFLNK | 0777).
            Err(rustix::io::Errno::LOOP) => return Err(refused(0o120777)),
            Err(e) => return Err(io(e.into())),
        };
        let mut file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(io)?;
        let mode = meta.mode() & 0o7777;
        if !meta.file_type().is_file()
            || mode & 0o077 != 0
            || meta.uid() != rustix::process::geteuid().as_raw()
        {
            return Err(refused(mode));
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        std::io::Read::read_to_end(&mut file, &mut raw).map_err(io)?;
        let mut parsed: FileFormat = serde_json::from_slice(&raw).map_err(|e| {
            Error::Key(format!(
                "keyring {} is not valid: line {}",
                path.display(),
                e.line()
            ))
        })?;
        if parsed.format != 1 {
            return Err(Error::Key(format!(
                "keyring format {} not supported",
                parsed.format
            )));
        }
        let mut keys = Vec::with_capacity(parsed.keys.len());
        for (i, k) in parsed.keys.iter_mut().enumerate() {
            // The AAD ends the id with a 00 byte, unprefixed: an id holding one (or an empty id)
            // could share an AAD with another id and context, so the file is refused.
            if k.id.is_empty() || k.id.contains('\0') {
                return Err(Error::Key(format!(
                    "keyring key #{i} has an empty id or one with a 00 byte"
                )));
            }
            if keys.iter().any(|e: &Entry| e.id == k.id) {
                return Err(Error::Key(format!("keyring key id {} appears twice", k.id)));
            }
            let material = Zeroizing::new(B64.decode(k.material.as_bytes()).unwrap_or_default());
            k.material.zeroize();
            if material.len() != 32 {
                return Err(Error::Key(format!("keyring key {} has bad material", k.id)));
            }
            keys.push(Entry {
                id: k.id.clone(),
                enabled: k.enabled,
                cipher: Aes256Gcm::new(material.as_slice().into()),
            });
        }
        if !keys.iter().any(|k| k.id == parsed.primary && k.enabled) {
            return Err(Error::Key("keyring primary key missing or disabled".into()));
        }
        Ok(Keyring {
            path: path.to_owned(),
            primary: parsed.primary,
            keys,
        })
    }

    /// Id of the key new data keys are wrapped under.
    pub fn primary_key_id(&self) -> &str {
        &self.primary
    }

    fn aad(key_id: &str, context: &EncryptionContext) -> Vec<u8> {
        let mut aad = AAD_PREFIX.to_vec();
        aad.extend_from_slice(key_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&context.encode());
        aad
    }

    fn entry(&self, id: &str) -> Result<&Entry> {
        let e = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::Key(format!("keyring has no key {id:?}")))?;
        if !e.enabled {
            return Err(Error::Key(format!("keyring key {id} is disabled")));
        }
        Ok(e)
    }
}

#[async_trait]
impl KeyProvider for Keyring {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<(DataKey, WrappedKey)> {
        let mut key: DataKey = Zeroizing::new([0u8; 32]);
        rand::fill(key.as_mut_slice());
        let wrapped = self.encrypt_data_key(&key, context).await?;
        Ok((key, wrapped))
    }

    async fn encrypt_data_key(&self, key: &DataKey, context: &EncryptionContext) -> Result<WrappedKey> {
        let entry = self.entry(&self.primary)?;
        let nonce: [u8; 12] = rand::random();
        let aad = Keyring::aad(&entry.id, context);
        let ct = entry
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.as_slice(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Key("keyring wrap failed".into()))?;
        let mut ciphertext = nonce.to_vec();
        ciphertext.extend_from_slice(&ct);
        Ok(WrappedKey {
            provider: PROVIDER.into(),
            key_id: entry.id.clone(),
            ciphertext,
        })
    }

    async fn decrypt_data_key(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<DataKey> {
        let entry = self.entry(&wrapped.key_id)?;
        let unwrap_err = || Error::integrity("-", 0, IntegrityError::KeyUnwrap);
        if wrapped.ciphertext.len() != 12 + 32 + 16 {
            return Err(unwrap_err());
        }
        let (nonce, ct) = wrapped.ciphertext.split_at(12);
        let aad = Keyring::aad(&entry.id, context);
        let pt = Zeroizing::new(
            entry
                .cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .map_err(|_| unwrap_err())?,
        );
        let mut key: DataKey = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&pt);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn wraps_and_binds_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = Keyring::create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let ctx = EncryptionContext::new([("a", "1")]);
        let (key, wrapped) = ring.generate_data_key(&ctx).await.unwrap();
        let reopened = Keyring::open(&path).unwrap();
        assert_eq!(*reopened.decrypt_data_key(&wrapped, &ctx).await.unwrap(), *key);
        let other = EncryptionContext::new([("a", "2")]);
        assert!(matches!(
            reopened.decrypt_data_key(&wrapped, &other).await,
            Err(Error::Integrity {
                kind: IntegrityError::KeyUnwrap,
                ..
            })
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("NOT FOR PRODUCTION"));
    }

    #[test]
    fn refuses_key_ids_with_a_00_byte_empty_or_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        Keyring::create(&path).unwrap();
        let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let id = good["keys"][0]["id"].as_str().unwrap().to_owned();
        for (bad_id, twice, why) in [
            (format!("{id}\0x"), false, "00 byte"),
            (String::new(), false, "empty id"),
            (id.clone(), true, "appears twice"),
        ] {
            let mut v = good.clone();
            let mut key = v["keys"][0].clone();
            key["id"] = bad_id.clone().into();
            if twice {
                v["keys"].as_array_mut().unwrap().push(key);
            } else {
                v["keys"][0] = key;
                v["primary"] = bad_id.into();
            }
            std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
            match Keyring::open(&path) {
                Err(Error::Key(msg)) => assert!(msg.contains(why), "{msg}"),
                other => panic!("{why}: opened {:?}", other.map(|_| ())),
            }
        }
    }

    /// New data keys go under the primary, which must be there and enabled: a keyring whose
    /// primary is disabled is refused even when another key is enabled.
    #[test]
    fn the_primary_must_exist_and_be_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = Keyring::create(&path).unwrap();
        let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let id = good["keys"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(ring.primary_key_id(), id);
        let shown = format!("{ring:?}");
        assert!(shown.contains(&id) && shown.contains("keys: 1"), "{shown}");
        let material = good["keys"][0]["material"].as_str().unwrap();
        assert!(!shown.contains(material), "{shown}");

        let mut v = good.clone();
        let mut spare = v["keys"][0].clone();
        spare["id"] = "spare".into();
        v["keys"][0]["enabled"] = false.into();
        v["keys"].as_array_mut().unwrap().push(spare);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        match Keyring::open(&path) {
            Err(Error::Key(msg)) => assert!(msg.contains("primary key missing or disabled"), "{msg}"),
            other => panic!("opened {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn refuses_group_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        Keyring::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Keyring::open(&path),
            Err(Error::KeyringPermissions { mode: 0o640, .. })
        ));
    }

    #[test]
    fn refuses_a_symlink_even_to_a_safe_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        Keyring::create(&real).unwrap();
        let link = dir.path().join("keyring.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Keyring::open(&real).is_ok());
        assert!(matches!(
            Keyring::open(&link),
            Err(Error::KeyringPermissions { mode: 0o120777, .. })
        ));
    }

    /// Another user's 0600 file is refused too (checked where the test can give a file away).
    #[test]
    fn refuses_a_file_another_user_owns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        Keyring::create(&path).unwrap();
        if std::os::unix::fs::chown(&path, Some(65534), None).is_err() {
            eprintln!("skipping: cannot chown here (not root)");
            return;
        }
        assert!(matches!(
            Keyring::open(&path),
            Err(Error::KeyringPermissions { mode: 0o600, .. })
        ));
    }
}
