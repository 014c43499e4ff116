//! Envelope throughput: framed seal/open next to raw AES-256-GCM of the same implementation
//! (`aws-lc-rs`, the envelope's default), in the same run, for 1 MiB and 64 MiB.
//!
//! Run: `cargo bench -p docstore-benches --bench envelope`. Goal: framed ≥ 0.9× raw.
//!
//! - `raw_*`: one AES-256-GCM call over the whole buffer, in place (the ceiling).
//! - `framed_*_in_place`: the envelope's frames (64 KiB, HKDF frame key, per-frame AAD) sealed in
//!   place, tags kept aside: the cost of framing itself.
//! - `framed_*_envelope`: a whole envelope built into / read from a separate buffer (header,
//!   copies, tags inline), as `seal_to_vec` / `open_from_slice` do.
//! - `*_rustcrypto`: the same with RustCrypto's `aes-gcm` (the owner's pick, kept as the
//!   pure-Rust fallback), to weigh one crate against the other.
#![allow(missing_docs)]

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use docstore::envelope::{
    self, Aead, DEFAULT_FRAME_SIZE, EncryptionContext, Header, Layout, Opener, Sealer, TAG_LEN,
};
use zeroize::Zeroizing;

const SIZES: [(usize, &str); 2] = [(1 << 20, "1MiB"), (64 << 20, "64MiB")];

fn ctx() -> EncryptionContext {
    EncryptionContext::new([
        ("docstore.document", "bench-doc"),
        ("docstore.version_id", "bench-version"),
    ])
}

fn seal_in_place(
    aead: Aead,
    key: &envelope::DataKey,
    buf: &mut [u8],
    tags: &mut Vec<[u8; TAG_LEN]>,
) -> Header {
    let mut sealer = Sealer::new_in(aead, key, ctx(), DEFAULT_FRAME_SIZE, [7; 32]).unwrap();
    let header = sealer.header().clone();
    let n = buf.len().div_ceil(DEFAULT_FRAME_SIZE as usize);
    tags.clear();
    for (i, chunk) in buf.chunks_mut(DEFAULT_FRAME_SIZE as usize).enumerate() {
        tags.push(sealer.seal_in_place(chunk, i + 1 == n).unwrap());
    }
    header
}

fn bench(c: &mut Criterion) {
    let key = Zeroizing::new([9u8; 32]);
    let raw = Aes256Gcm::new(key.as_slice().into());
    let nonce = Nonce::from_slice(&[1u8; 12]);
    for (size, label) in SIZES {
        let mut g = c.benchmark_group(format!("envelope/{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        if size > 8 << 20 {
            g.sample_size(10);
        }
        let plain = docstore_pattern(size);
        let mut buf = plain.clone();

        let lc = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key.as_slice()).unwrap(),
        );
        let lc_nonce = || aws_lc_rs::aead::Nonce::assume_unique_for_key([1u8; 12]);
        g.bench_function(BenchmarkId::new("raw_encrypt", label), |b| {
            b.iter(|| {
                lc.seal_in_place_separate_tag(lc_nonce(), aws_lc_rs::aead::Aad::empty(), &mut buf)
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("raw_encrypt_rustcrypto", label), |b| {
            b.iter(|| raw.encrypt_in_place_detached(nonce, b"", &mut buf).unwrap())
        });
        let mut tags = Vec::new();
        g.bench_function(BenchmarkId::new("framed_encrypt_in_place", label), |b| {
            b.iter(|| seal_in_place(Aead::AwsLc, &key, &mut buf, &mut tags))
        });
        g.bench_function(
            BenchmarkId::new("framed_encrypt_in_place_rustcrypto", label),
            |b| b.iter(|| seal_in_place(Aead::RustCrypto, &key, &mut buf, &mut tags)),
        );
        g.bench_function(BenchmarkId::new("framed_encrypt_envelope", label), |b| {
            b.iter(|| envelope::seal_to_vec(&key, ctx(), DEFAULT_FRAME_SIZE, [7; 32], &plain).unwrap())
        });

        // Decrypt: restore real ciphertext before each measured pass (setup is not timed).
        let mut raw_ct = plain.clone();
        let raw_tag = raw.encrypt_in_place_detached(nonce, b"", &mut raw_ct).unwrap();
        g.bench_function(BenchmarkId::new("raw_decrypt", label), |b| {
            b.iter_batched_ref(
                || raw_ct.clone(),
                |ct| {
                    lc.open_in_place_separate_tag(
                        lc_nonce(),
                        aws_lc_rs::aead::Aad::empty(),
                        raw_tag.as_slice(),
                        ct,
                    )
                    .unwrap();
                },
                criterion::BatchSize::PerIteration,
            )
        });
        g.bench_function(BenchmarkId::new("raw_decrypt_rustcrypto", label), |b| {
            b.iter_batched_ref(
                || raw_ct.clone(),
                |ct| raw.decrypt_in_place_detached(nonce, b"", ct, &raw_tag).unwrap(),
                criterion::BatchSize::PerIteration,
            )
        });
        let mut framed_ct = plain.clone();
        let header = seal_in_place(Aead::AwsLc, &key, &mut framed_ct, &mut tags);
        let layout = Layout::from_plaintext_len(DEFAULT_FRAME_SIZE, size as u64);
        g.bench_function(BenchmarkId::new("framed_decrypt_in_place", label), |b| {
            b.iter_batched_ref(
                || framed_ct.clone(),
                |ct| {
                    let opener = Opener::new(&header, &key).unwrap();
                    for (i, chunk) in ct.chunks_mut(DEFAULT_FRAME_SIZE as usize).enumerate() {
                        let i = i as u64;
                        opener
                            .open_in_place(i, i + 1 == layout.frames, chunk, &tags[i as usize])
                            .unwrap();
                    }
                },
                criterion::BatchSize::PerIteration,
            )
        });
        let sealed = envelope::seal_to_vec(&key, ctx(), DEFAULT_FRAME_SIZE, [7; 32], &plain).unwrap();
        g.bench_function(BenchmarkId::new("framed_decrypt_envelope", label), |b| {
            b.iter(|| envelope::open_from_slice(&key, &ctx(), &sealed).unwrap())
        });
        // The whole-plaintext digest every put computes and every full get checks: the owner's
        // pick (`sha2`) next to AWS-LC's, which the envelope's cipher already links.
        g.bench_function(BenchmarkId::new("sha256_sha2", label), |b| {
            b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(&plain))
        });
        g.bench_function(BenchmarkId::new("sha256_aws_lc_rs", label), |b| {
            b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &plain))
        });
        g.finish();
    }
}

fn docstore_pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);
