//! Known-answer vectors for the keyring wrap and the key block (`docs/envelope-v1.md` §6). The
//! bytes in `vectors/keyring-v1.json` were computed by `vectors/keyring_v1.py` with Python's
//! `cryptography` from the spec's text, not by docstore: docstore must unwrap them and re-encode
//! each key block byte for byte.

use std::os::unix::fs::OpenOptionsExt;

use docstore::envelope::EncryptionContext;
use docstore::keys::keyring::Keyring;
use docstore::keys::{KeyProvider, decode_key_block, encode_key_block};
use docstore::{Error, IntegrityError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    master_key_b64: String,
    key_id: String,
    data_key: String,
    context: Vec<(String, String)>,
    wrapped: String,
    key_block: String,
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/keyring-v1.json");

/// A keyring file as §6 documents it, holding the vector's master key as primary.
fn keyring_for(dir: &std::path::Path, v: &Vector) -> Keyring {
    let path = dir.join(format!("{}.json", hex::encode(&v.name)));
    let body = serde_json::json!({
        "warning": "test vectors",
        "format": 1,
        "primary": v.key_id,
        "keys": [{"id": v.key_id, "created_at": 0, "enabled": true, "material": v.master_key_b64}],
    });
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &serde_json::to_vec(&body).unwrap()).unwrap();
    Keyring::open(&path).unwrap()
}

#[tokio::test]
async fn keyring_vectors_unwrap_and_key_blocks_reencode() {
    let stored: Vec<Vector> = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(stored.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    for v in &stored {
        let ring = keyring_for(dir.path(), v);
        let block = hex::decode(&v.key_block).unwrap();
        let entries = decode_key_block(&block).unwrap();
        assert_eq!(encode_key_block(&entries), block, "{}", v.name);
        let ours = &entries[0];
        assert_eq!(
            (ours.provider.as_str(), ours.key_id.as_str()),
            ("keyring", &*v.key_id)
        );
        assert_eq!(hex::encode(&ours.ciphertext), v.wrapped, "{}", v.name);

        let ctx = EncryptionContext::new(v.context.iter().cloned());
        let key = ring.decrypt_data_key(ours, &ctx).await.unwrap();
        assert_eq!(hex::encode(*key), v.data_key, "{}", v.name);

        // The context is the AAD: one changed value, and the unwrap fails.
        let mut pairs = v.context.clone();
        pairs[0].1.push('x');
        let wrong = EncryptionContext::new(pairs);
        assert!(
            matches!(
                ring.decrypt_data_key(ours, &wrong).await,
                Err(Error::Integrity {
                    kind: IntegrityError::KeyUnwrap,
                    ..
                })
            ),
            "{}",
            v.name
        );
    }
}
