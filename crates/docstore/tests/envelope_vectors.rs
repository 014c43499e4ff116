//! Known-answer vectors for envelope format v1 (`docs/envelope-v1.md`). These bytes must keep
//! decrypting forever: a change that breaks them is a format change and needs a new version.
//!
//! Regenerate (only when adding vectors) with
//! `DOCSTORE_WRITE_VECTORS=1 cargo test -p docstore --test envelope_vectors`.

use docstore::envelope::{self, Aead, EncryptionContext, Header};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Serialize, Deserialize)]
struct Vector {
    name: String,
    data_key: String,
    message_id: String,
    frame_size: u32,
    context: Vec<(String, String)>,
    plaintext: String,
    header_sha256: String,
    envelope: String,
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/envelope-v1.json");

/// (name, plaintext length, frame size, context pairs)
type Case = (&'static str, usize, u32, Vec<(&'static str, &'static str)>);

fn cases() -> Vec<Case> {
    let ctx = vec![
        ("docstore.document", "doc-1"),
        ("docstore.version_id", "00000000-0000-4000-8000-000000000001"),
    ];
    vec![
        ("empty plaintext, one empty final frame", 0, 256, ctx.clone()),
        ("one byte", 1, 256, ctx.clone()),
        ("exactly one full frame", 256, 256, ctx.clone()),
        ("one full frame and one byte", 257, 256, ctx.clone()),
        ("three frames, last short", 700, 256, ctx),
        ("empty context", 40, 1024, vec![]),
        (
            "UTF-8 context",
            300,
            256,
            vec![("clinic", "Clínica São João"), ("exam", "hemograma-çã")],
        ),
    ]
}

fn build(i: usize, name: &str, len: usize, fs: u32, ctx: &[(&str, &str)]) -> Vector {
    let key: [u8; 32] = std::array::from_fn(|b| (b as u8).wrapping_mul(7).wrapping_add(i as u8));
    let mid: [u8; 32] = std::array::from_fn(|b| 0xA0u8.wrapping_add(b as u8).wrapping_add(i as u8));
    let plaintext: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
    let context = EncryptionContext::new(ctx.iter().copied());
    let env = envelope::seal_to_vec(&Zeroizing::new(key), context, fs, mid, &plaintext).unwrap();
    let (header, _) = Header::parse(&env).unwrap();
    Vector {
        name: name.into(),
        data_key: hex::encode(key),
        message_id: hex::encode(mid),
        frame_size: fs,
        context: ctx.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        plaintext: hex::encode(&plaintext),
        header_sha256: hex::encode(header.digest()),
        envelope: hex::encode(env),
    }
}

/// The implementations this build has: the tests enable the pure-Rust fallback, so both run.
fn implementations() -> Vec<Aead> {
    vec![Aead::AwsLc, Aead::RustCrypto]
}

#[test]
fn known_answer_vectors() {
    if std::env::var_os("DOCSTORE_WRITE_VECTORS").is_some() {
        let all: Vec<Vector> = cases()
            .iter()
            .enumerate()
            .map(|(i, (n, l, fs, c))| build(i, n, *l, *fs, c))
            .collect();
        std::fs::write(PATH, serde_json::to_string_pretty(&all).unwrap() + "\n").unwrap();
    }
    let stored: Vec<Vector> = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(stored.len(), cases().len());
    for v in &stored {
        let key: [u8; 32] = hex::decode(&v.data_key).unwrap().try_into().unwrap();
        let key = Zeroizing::new(key);
        let mid: [u8; 32] = hex::decode(&v.message_id).unwrap().try_into().unwrap();
        let ctx = EncryptionContext::new(v.context.iter().cloned());
        let plaintext = hex::decode(&v.plaintext).unwrap();
        let env = hex::decode(&v.envelope).unwrap();
        let (header, _) = Header::parse(&env).unwrap();
        assert_eq!(hex::encode(header.digest()), v.header_sha256, "{}", v.name);
        // Every AES-GCM implementation reads and writes the same bytes.
        for aead in implementations() {
            // Decrypt the stored bytes (compatibility) ...
            let opened = envelope::open_from_slice_in(aead, &key, &ctx, &env)
                .unwrap_or_else(|e| panic!("{} ({aead:?}): {e}", v.name));
            assert_eq!(&opened[..], &plaintext[..], "{} ({aead:?})", v.name);
            // ... and encryption is deterministic given key and message id (the writer did not drift).
            let sealed =
                envelope::seal_to_vec_in(aead, &key, ctx.clone(), v.frame_size, mid, &plaintext).unwrap();
            assert_eq!(hex::encode(sealed), v.envelope, "{} ({aead:?})", v.name);
            // A flipped ciphertext bit fails the frame's tag in each of them.
            let mut bad = env.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(
                envelope::open_from_slice_in(aead, &key, &ctx, &bad).is_err(),
                "{} ({aead:?})",
                v.name
            );
        }
    }
}
