//! Envelope format v1: framed AES-256-GCM with HKDF-derived frame keys and key commitment.
//!
//! The byte layout is specified in `docs/envelope-v1.md`; known-answer vectors live in
//! `crates/docstore/tests/vectors/`. This module is synchronous and does no I/O: the store drives it
//! one frame at a time, so memory stays O(frame size) whatever the document size.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::IntegrityError;

/// Magic bytes at offset 0 of every envelope.
pub const MAGIC: [u8; 4] = *b"DSTE";
/// The format version this module writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// AES-256-GCM, HKDF-SHA-256 frame key, HKDF-SHA-256 key commitment.
pub const ALG_AES256GCM_HKDF_COMMIT: u16 = 0x0001;
/// Default plaintext bytes per frame: large enough that per-frame cost vanishes, small enough for
/// cheap ranged reads.
pub const DEFAULT_FRAME_SIZE: u32 = 64 * 1024;
/// Smallest frame size accepted (keeps the tag overhead under 6.25 %).
pub const MIN_FRAME_SIZE: u32 = 256;
/// Largest frame size accepted: a hostile header must not make a reader allocate more.
pub const MAX_FRAME_SIZE: u32 = 16 * 1024 * 1024;
/// AES-GCM tag length appended to every frame.
pub const TAG_LEN: usize = 16;
/// Length of the random message id (HKDF salt).
pub const MESSAGE_ID_LEN: usize = 32;
/// Length of the key commitment.
pub const COMMITMENT_LEN: usize = 32;
/// Fixed part of the header before the encryption context.
const FIXED_PREFIX: usize = 4 + 1 + 2 + 4 + MESSAGE_ID_LEN + 2;
/// Largest encoded encryption context accepted.
pub const MAX_CONTEXT_LEN: usize = 4096;
/// GCM with a counter nonce under one key: stay far below 2^32 invocations.
const MAX_FRAMES: u64 = 1 << 32;

const INFO_FRAME_KEY: &[u8] = b"docstore envelope v1 frame key";
const INFO_COMMIT: &[u8] = b"docstore envelope v1 key commitment";

/// A 256-bit data key, zeroized on drop.
pub type DataKey = Zeroizing<[u8; 32]>;

/// Ordered key/value pairs bound to an envelope (and to the wrapped data key).
///
/// Pairs are kept sorted by key, so the canonical encoding is unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(Vec<(String, String)>);

impl EncryptionContext {
    /// Builds a context from pairs; later duplicates replace earlier ones.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in pairs {
            map.insert(k.into(), v.into());
        }
        EncryptionContext(map.into_iter().collect())
    }

    /// The pairs, sorted by key.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Canonical encoding: u16 count, then per pair u16 length + UTF-8 key, u16 length + UTF-8 value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        for (k, v) in &self.0 {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    /// Decodes the canonical encoding, rejecting unsorted or duplicate keys.
    pub fn decode(bytes: &[u8]) -> Result<Self, IntegrityError> {
        let mut r = ByteReader(bytes);
        let count = r.u16()?;
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let k = r.string()?;
            let v = r.string()?;
            if let Some((prev, _)) = pairs.last()
                && prev >= &k
            {
                return Err(IntegrityError::MalformedHeader(
                    "context keys not strictly sorted",
                ));
            }
            check_strings(&k, &v)?;
            pairs.push((k, v));
        }
        if !r.0.is_empty() {
            return Err(IntegrityError::MalformedHeader("trailing bytes in context"));
        }
        Ok(EncryptionContext(pairs))
    }
}

/// One spelling per string: a context that differs only in normalisation would bind a different
/// AAD for what a person reads as the same text, so only NFC is written or read.
fn check_strings(k: &str, v: &str) -> Result<(), IntegrityError> {
    if k.is_empty() {
        return Err(IntegrityError::MalformedHeader("empty context key"));
    }
    if !unicode_normalization::is_nfc(k) || !unicode_normalization::is_nfc(v) {
        return Err(IntegrityError::MalformedHeader("context string is not NFC"));
    }
    Ok(())
}

/// Reads big-endian fields from a slice, failing instead of panicking on short input.
struct ByteReader<'a>(&'a [u8]);

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IntegrityError> {
        if self.0.len() < n {
            return Err(IntegrityError::MalformedHeader("truncated field"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, IntegrityError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, IntegrityError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn string(&mut self) -> Result<String, IntegrityError> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| IntegrityError::MalformedHeader("context is not UTF-8"))
    }
}

/// The immutable envelope header. Its SHA-256 is bound into every frame's AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Plaintext bytes per full frame.
    pub frame_size: u32,
    /// Random per-envelope salt for HKDF.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// Context bound to the envelope and to the data key.
    pub context: EncryptionContext,
    /// HKDF-derived key commitment.
    pub commitment: [u8; COMMITMENT_LEN],
    encoded: Vec<u8>,
    digest: [u8; 32],
}

impl Header {
    /// The encoded header bytes as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-256 of the encoded header.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    fn build(
        frame_size: u32,
        message_id: [u8; MESSAGE_ID_LEN],
        context: EncryptionContext,
        commitment: [u8; COMMITMENT_LEN],
    ) -> Result<Self, IntegrityError> {
        for (k, v) in context.pairs() {
            check_strings(k, v)?;
        }
        let ctx = context.encode();
        if ctx.len() > MAX_CONTEXT_LEN {
            return Err(IntegrityError::MalformedHeader("encryption context too long"));
        }
        let mut encoded = Vec::with_capacity(FIXED_PREFIX + ctx.len() + COMMITMENT_LEN);
        encoded.extend_from_slice(&MAGIC);
        encoded.push(FORMAT_VERSION);
        encoded.extend_from_slice(&ALG_AES256GCM_HKDF_COMMIT.to_be_bytes());
        encoded.extend_from_slice(&frame_size.to_be_bytes());
        encoded.extend_from_slice(&message_id);
        encoded.extend_from_slice(&(ctx.len() as u16).to_be_bytes());
        encoded.extend_from_slice(&ctx);
        encoded.extend_from_slice(&commitment);
        let digest = Sha256::digest(&encoded).into();
        Ok(Header {
            frame_size,
            message_id,
            context,
            commitment,
            encoded,
            digest,
        })
    }

    /// Length of the header that starts `prefix`, once at least [`Header::MIN_PREFIX`] bytes are
    /// available; lets a ranged reader fetch exactly the header.
    pub fn encoded_len(prefix: &[u8]) -> Result<usize, IntegrityError> {
        if prefix.len() < FIXED_PREFIX {
            return Err(IntegrityError::MalformedHeader("truncated header"));
        }
        check_prefix(prefix)?;
        let ctx_len = u16::from_be_bytes([prefix[FIXED_PREFIX - 2], prefix[FIXED_PREFIX - 1]]) as usize;
        Ok(FIXED_PREFIX + ctx_len + COMMITMENT_LEN)
    }

    /// Bytes needed to call [`Header::encoded_len`].
    pub const MIN_PREFIX: usize = FIXED_PREFIX;

    /// Parses a header from the start of `bytes`; returns it and the bytes consumed.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), IntegrityError> {
        let len = Header::encoded_len(bytes)?;
        if bytes.len() < len {
            return Err(IntegrityError::MalformedHeader("truncated header"));
        }
        let mut r = ByteReader(&bytes[..len]);
        r.take(7)?; // magic, version, algorithm: checked by encoded_len
        let frame_size = r.u32()?;
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size) {
            return Err(IntegrityError::FrameSize(frame_size));
        }
        let message_id: [u8; MESSAGE_ID_LEN] = r.take(MESSAGE_ID_LEN)?.try_into().expect("len");
        let ctx_len = r.u16()? as usize;
        if ctx_len > MAX_CONTEXT_LEN {
            return Err(IntegrityError::MalformedHeader("encryption context too long"));
        }
        let context = EncryptionContext::decode(r.take(ctx_len)?)?;
        let commitment: [u8; COMMITMENT_LEN] = r.take(COMMITMENT_LEN)?.try_into().expect("len");
        let encoded = bytes[..len].to_vec();
        let digest = Sha256::digest(&encoded).into();
        Ok((
            Header {
                frame_size,
                message_id,
                context,
                commitment,
                encoded,
                digest,
            },
            len,
        ))
    }

    /// Geometry of a body of `body_len` ciphertext bytes under this header.
    pub fn layout(&self, body_len: u64) -> Result<Layout, IntegrityError> {
        Layout::from_body_len(self.frame_size, body_len)
    }
}

fn check_prefix(prefix: &[u8]) -> Result<(), IntegrityError> {
    if prefix[..4] != MAGIC {
        return Err(IntegrityError::BadMagic);
    }
    if prefix[4] != FORMAT_VERSION {
        return Err(IntegrityError::UnsupportedVersion(prefix[4]));
    }
    let alg = u16::from_be_bytes([prefix[5], prefix[6]]);
    if alg != ALG_AES256GCM_HKDF_COMMIT {
        return Err(IntegrityError::UnsupportedAlgorithm(alg));
    }
    Ok(())
}

/// How a body splits into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Plaintext bytes per full frame.
    pub frame_size: u32,
    /// Number of frames (at least 1: empty plaintext is one empty final frame).
    pub frames: u64,
    /// Plaintext length of the whole body.
    pub plaintext_len: u64,
}

impl Layout {
    /// Layout for a known plaintext length.
    pub fn from_plaintext_len(frame_size: u32, plaintext_len: u64) -> Layout {
        let fs = frame_size as u64;
        Layout {
            frame_size,
            frames: plaintext_len.div_ceil(fs).max(1),
            plaintext_len,
        }
    }

    /// Layout for a ciphertext body length; fails when no frame sequence has that length.
    pub fn from_body_len(frame_size: u32, body_len: u64) -> Result<Layout, IntegrityError> {
        let full = frame_size as u64 + TAG_LEN as u64;
        if body_len < TAG_LEN as u64 {
            return Err(IntegrityError::Length(body_len));
        }
        let frames = body_len.div_ceil(full);
        let last = body_len - (frames - 1) * full;
        // A bare tag after full frames is a layout no writer emits (it looks ahead and flags the
        // last full frame final), so the one body length has one frame sequence.
        if last < TAG_LEN as u64 || (frames > 1 && last == TAG_LEN as u64) || frames > MAX_FRAMES {
            return Err(IntegrityError::Length(body_len));
        }
        Ok(Layout {
            frame_size,
            frames,
            plaintext_len: body_len - frames * TAG_LEN as u64,
        })
    }

    /// Ciphertext length of the body.
    pub fn body_len(&self) -> u64 {
        self.plaintext_len + self.frames * TAG_LEN as u64
    }

    /// Plaintext length of frame `index`.
    pub fn frame_plaintext_len(&self, index: u64) -> u64 {
        if index + 1 == self.frames {
            self.plaintext_len - index * self.frame_size as u64
        } else {
            self.frame_size as u64
        }
    }

    /// Offset of frame `index` within the body.
    pub fn frame_offset(&self, index: u64) -> u64 {
        index * (self.frame_size as u64 + TAG_LEN as u64)
    }

    /// Frames `first..=last` covering plaintext `start..end` (`end` > `start`, `end` ≤ length).
    pub fn frames_for(&self, start: u64, end: u64) -> (u64, u64) {
        let fs = self.frame_size as u64;
        (start / fs, (end - 1) / fs)
    }
}

/// Derives the frame key and key commitment from a data key and message id.
fn derive(
    data_key: &[u8; 32],
    message_id: &[u8; MESSAGE_ID_LEN],
) -> (Zeroizing<[u8; 32]>, [u8; COMMITMENT_LEN]) {
    let hk = Hkdf::<Sha256>::new(Some(message_id), data_key);
    let alg = ALG_AES256GCM_HKDF_COMMIT.to_be_bytes();
    let mut frame_key = Zeroizing::new([0u8; 32]);
    let mut commitment = [0u8; COMMITMENT_LEN];
    hk.expand_multi_info(&[INFO_FRAME_KEY, &alg], frame_key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    hk.expand_multi_info(&[INFO_COMMIT, &alg], &mut commitment)
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    (frame_key, commitment)
}

fn nonce(index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

fn aad(digest: &[u8; 32], index: u64, is_final: bool) -> [u8; 41] {
    let mut a = [0u8; 41];
    a[..32].copy_from_slice(digest);
    a[32..40].copy_from_slice(&index.to_be_bytes());
    a[40] = is_final as u8;
    a
}

/// Which AES-256-GCM implementation seals and opens frames. Both write and read the same bytes
/// (the known-answer vectors run against each).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aead {
    /// AWS-LC through `aws-lc-rs`: assembly AES-GCM (AES-NI, PCLMULQDQ, VAES where present).
    #[default]
    AwsLc,
    /// RustCrypto's pure-Rust `aes-gcm`, for targets AWS-LC does not build on (feature
    /// `rustcrypto-aead`).
    #[cfg(feature = "rustcrypto-aead")]
    RustCrypto,
}

/// One frame key, bound to the implementation chosen. AWS-LC's context is freed through
/// `OPENSSL_free`, which cleanses the allocation, so the key schedule does not outlive it; the
/// RustCrypto one is built with its `zeroize` feature.
enum FrameCipher {
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    #[cfg(feature = "rustcrypto-aead")]
    RustCrypto(Box<aes_gcm::Aes256Gcm>),
}

impl FrameCipher {
    fn new(aead: Aead, key: &[u8; 32]) -> FrameCipher {
        match aead {
            Aead::AwsLc => FrameCipher::AwsLc(aws_lc_rs::aead::LessSafeKey::new(
                aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
                    .expect("32 bytes is an AES-256 key"),
            )),
            #[cfg(feature = "rustcrypto-aead")]
            Aead::RustCrypto => {
                use aes_gcm::aead::KeyInit;
                FrameCipher::RustCrypto(Box::new(aes_gcm::Aes256Gcm::new(key.into())))
            }
        }
    }

    /// Encrypts in place; `None` only if the implementation refuses the length.
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        match self {
            FrameCipher::AwsLc(key) => {
                let tag = key
                    .seal_in_place_separate_tag(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                        aws_lc_rs::aead::Aad::from(aad),
                        buf,
                    )
                    .ok()?;
                tag.as_ref().try_into().ok()
            }
            #[cfg(feature = "rustcrypto-aead")]
            FrameCipher::RustCrypto(c) => {
                use aes_gcm::aead::AeadInPlace;
                let tag = c
                    .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), aad, buf)
                    .ok()?;
                Some(tag.into())
            }
        }
    }

    /// Authenticates and decrypts in place; `false` when the tag does not verify.
    fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        match self {
            FrameCipher::AwsLc(key) => key
                .open_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(aad),
                    tag,
                    buf,
                )
                .is_ok(),
            #[cfg(feature = "rustcrypto-aead")]
            FrameCipher::RustCrypto(c) => {
                use aes_gcm::aead::AeadInPlace;
                c.decrypt_in_place_detached(
                    aes_gcm::Nonce::from_slice(&nonce),
                    aad,
                    buf,
                    aes_gcm::Tag::from_slice(tag),
                )
                .is_ok()
            }
        }
    }
}

/// Seals frames of one envelope, in order.
pub struct Sealer {
    cipher: FrameCipher,
    header: Header,
    next: u64,
    finished: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Starts an envelope. `message_id` must be fresh random bytes (tests pass fixed ones for
    /// known-answer vectors).
    pub fn new(
        data_key: &DataKey,
        context: EncryptionContext,
        frame_size: u32,
        message_id: [u8; MESSAGE_ID_LEN],
    ) -> Result<Self, IntegrityError> {
        Sealer::new_in(Aead::default(), data_key, context, frame_size, message_id)
    }

    /// [`Sealer::new`] with a chosen AES-GCM implementation.
    pub fn new_in(
        aead: Aead,
        data_key: &DataKey,
        context: EncryptionContext,
        frame_size: u32,
        message_id: [u8; MESSAGE_ID_LEN],
    ) -> Result<Self, IntegrityError> {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size) {
            return Err(IntegrityError::FrameSize(frame_size));
        }
        let (frame_key, commitment) = derive(data_key, &message_id);
        let header = Header::build(frame_size, message_id, context, commitment)?;
        Ok(Sealer {
            cipher: FrameCipher::new(aead, &frame_key),
            header,
            next: 0,
            finished: false,
        })
    }

    /// Starts an envelope with a random message id.
    pub fn with_random_id(
        data_key: &DataKey,
        context: EncryptionContext,
        frame_size: u32,
    ) -> Result<Self, IntegrityError> {
        Sealer::new(data_key, context, frame_size, rand::random())
    }

    /// The header to write before the first frame.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Encrypts `buf` in place as the next frame and appends its tag. Non-final frames must hold
    /// exactly `frame_size` bytes; the final frame holds 0..=`frame_size`.
    pub fn seal_frame(&mut self, buf: &mut Vec<u8>, is_final: bool) -> Result<(), IntegrityError> {
        let tag = self.seal_in_place(buf, is_final)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Encrypts `buf` in place as the next frame and returns its tag (for writers that place the
    /// tag themselves, without a copy).
    pub fn seal_in_place(&mut self, buf: &mut [u8], is_final: bool) -> Result<[u8; TAG_LEN], IntegrityError> {
        let fs = self.header.frame_size as usize;
        if self.finished || buf.len() > fs || (!is_final && buf.len() != fs) || self.next >= MAX_FRAMES {
            return Err(IntegrityError::Length(buf.len() as u64));
        }
        let tag = self
            .cipher
            .seal(
                nonce(self.next),
                &aad(&self.header.digest, self.next, is_final),
                buf,
            )
            .ok_or(IntegrityError::Length(buf.len() as u64))?;
        self.next += 1;
        self.finished = is_final;
        Ok(tag)
    }
}

/// Opens frames of one envelope, in any order (ranged reads open only the frames they need).
pub struct Opener {
    cipher: FrameCipher,
    digest: [u8; 32],
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").finish_non_exhaustive()
    }
}

impl Opener {
    /// Checks the key commitment (in constant time) before any frame is touched.
    pub fn new(header: &Header, data_key: &DataKey) -> Result<Self, IntegrityError> {
        Opener::new_in(Aead::default(), header, data_key)
    }

    /// [`Opener::new`] with a chosen AES-GCM implementation.
    pub fn new_in(aead: Aead, header: &Header, data_key: &DataKey) -> Result<Self, IntegrityError> {
        let (frame_key, commitment) = derive(data_key, &header.message_id);
        if !bool::from(commitment.ct_eq(&header.commitment)) {
            return Err(IntegrityError::Commitment);
        }
        Ok(Opener {
            cipher: FrameCipher::new(aead, &frame_key),
            digest: header.digest,
        })
    }

    /// Authenticates and decrypts frame `index` in place (ciphertext + tag in, plaintext out). On
    /// failure the buffer is wiped, so no unauthenticated byte can leak.
    pub fn open_frame(&self, index: u64, is_final: bool, buf: &mut Vec<u8>) -> Result<(), IntegrityError> {
        if buf.len() < TAG_LEN {
            buf.clear();
            return Err(IntegrityError::Frame { index });
        }
        let split = buf.len() - TAG_LEN;
        let tag: [u8; TAG_LEN] = buf[split..].try_into().expect("tag length");
        buf.truncate(split);
        self.open_in_place(index, is_final, buf, &tag)
    }

    /// Authenticates and decrypts one frame's ciphertext in place, given its tag. On failure the
    /// buffer is wiped.
    pub fn open_in_place(
        &self,
        index: u64,
        is_final: bool,
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        if !self
            .cipher
            .open(nonce(index), &aad(&self.digest, index, is_final), buf, tag)
        {
            zeroize::Zeroize::zeroize(buf);
            return Err(IntegrityError::Frame { index });
        }
        Ok(())
    }
}

/// Seals a whole plaintext held in memory (tests, vectors, small renditions).
pub fn seal_to_vec(
    data_key: &DataKey,
    context: EncryptionContext,
    frame_size: u32,
    message_id: [u8; MESSAGE_ID_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, IntegrityError> {
    seal_to_vec_in(
        Aead::default(),
        data_key,
        context,
        frame_size,
        message_id,
        plaintext,
    )
}

/// [`seal_to_vec`] with a chosen AES-GCM implementation.
pub fn seal_to_vec_in(
    aead: Aead,
    data_key: &DataKey,
    context: EncryptionContext,
    frame_size: u32,
    message_id: [u8; MESSAGE_ID_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, IntegrityError> {
    let mut sealer = Sealer::new_in(aead, data_key, context, frame_size, message_id)?;
    let layout = Layout::from_plaintext_len(frame_size, plaintext.len() as u64);
    let mut out = Vec::with_capacity(sealer.header().as_bytes().len() + layout.body_len() as usize);
    out.extend_from_slice(sealer.header().as_bytes());
    let mut frame = Vec::with_capacity(frame_size as usize + TAG_LEN);
    for i in 0..layout.frames {
        let start = (i * frame_size as u64) as usize;
        let end = start + layout.frame_plaintext_len(i) as usize;
        frame.clear();
        frame.extend_from_slice(&plaintext[start..end]);
        sealer.seal_frame(&mut frame, i + 1 == layout.frames)?;
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

/// Opens a whole envelope held in memory, checking that its context is `expected`. Returns nothing
/// unless every frame authenticates.
pub fn open_from_slice(
    data_key: &DataKey,
    expected: &EncryptionContext,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    open_from_slice_in(Aead::default(), data_key, expected, envelope)
}

/// [`open_from_slice`] with a chosen AES-GCM implementation.
pub fn open_from_slice_in(
    aead: Aead,
    data_key: &DataKey,
    expected: &EncryptionContext,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    let (header, consumed) = Header::parse(envelope)?;
    if &header.context != expected {
        return Err(IntegrityError::Context);
    }
    let opener = Opener::new_in(aead, &header, data_key)?;
    let body = &envelope[consumed..];
    let layout = header.layout(body.len() as u64)?;
    let mut out = Zeroizing::new(Vec::with_capacity(layout.plaintext_len as usize));
    let mut frame = Zeroizing::new(Vec::with_capacity(header.frame_size as usize + TAG_LEN));
    for i in 0..layout.frames {
        let off = layout.frame_offset(i) as usize;
        let len = layout.frame_plaintext_len(i) as usize + TAG_LEN;
        frame.clear();
        frame.extend_from_slice(&body[off..off + len]);
        opener.open_frame(i, i + 1 == layout.frames, &mut frame)?;
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> DataKey {
        Zeroizing::new([b; 32])
    }

    fn ctx() -> EncryptionContext {
        EncryptionContext::new([("docstore.document", "d1"), ("docstore.version_id", "v1")])
    }

    #[test]
    fn round_trips_every_boundary() {
        for len in [0usize, 1, 255, 256, 257, 511, 512, 513, 2048] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let env = seal_to_vec(&key(1), ctx(), 256, [9; 32], &pt).unwrap();
            assert_eq!(
                &open_from_slice(&key(1), &ctx(), &env).unwrap()[..],
                &pt[..],
                "len {len}"
            );
        }
    }

    #[test]
    fn wrong_key_fails_commitment() {
        let env = seal_to_vec(&key(1), ctx(), 256, [9; 32], b"hello").unwrap();
        assert_eq!(
            open_from_slice(&key(2), &ctx(), &env).unwrap_err(),
            IntegrityError::Commitment
        );
    }

    #[test]
    fn layout_rejects_impossible_lengths() {
        assert!(Layout::from_body_len(256, 15).is_err());
        assert!(Layout::from_body_len(256, 272 + 5).is_err());
        assert_eq!(Layout::from_body_len(256, 272 + 17).unwrap().frames, 2);
        // A bare tag after a full frame: the one layout a writer never emits.
        assert_eq!(
            Layout::from_body_len(256, 272 + 16),
            Err(IntegrityError::Length(272 + 16))
        );
    }

    #[test]
    fn an_authentic_tag_only_final_frame_is_refused() {
        // Only a holder of the data key can build this: a full frame not flagged final, then an
        // empty frame sealed with the final flag. Its tags verify, but the layout is refused.
        let pt = [7u8; 256];
        let mut sealer = Sealer::new(&key(1), ctx(), 256, [9; 32]).unwrap();
        let mut env = sealer.header().as_bytes().to_vec();
        let mut frame = pt.to_vec();
        sealer.seal_frame(&mut frame, false).unwrap();
        env.extend_from_slice(&frame);
        let mut last = Vec::new();
        sealer.seal_frame(&mut last, true).unwrap();
        env.extend_from_slice(&last);
        assert_eq!(
            open_from_slice(&key(1), &ctx(), &env).unwrap_err(),
            IntegrityError::Length(272 + 16)
        );
        // The writer's own encoding of the same plaintext is one full final frame.
        let ours = seal_to_vec(&key(1), ctx(), 256, [9; 32], &pt).unwrap();
        assert_eq!(ours.len(), env.len() - TAG_LEN);
        assert_eq!(&open_from_slice(&key(1), &ctx(), &ours).unwrap()[..], &pt[..]);
    }

    fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut bytes = (pairs.len() as u16).to_be_bytes().to_vec();
        for (k, v) in pairs {
            for s in [k, v] {
                bytes.extend_from_slice(&(s.len() as u16).to_be_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
        }
        bytes
    }

    #[test]
    fn context_refuses_empty_keys_and_non_nfc_strings() {
        // "é" as e + combining acute (NFD) and as one code point (NFC).
        let nfd = "e\u{301}";
        let nfc = "\u{e9}";
        for (pairs, why) in [
            (vec![("", "x")], "empty context key"),
            (vec![(nfd, "x")], "context string is not NFC"),
            (vec![("k", nfd)], "context string is not NFC"),
        ] {
            assert_eq!(
                EncryptionContext::decode(&encode_pairs(&pairs)),
                Err(IntegrityError::MalformedHeader(why))
            );
            let ctx = EncryptionContext::new(pairs.iter().copied());
            assert_eq!(
                Sealer::new(&key(1), ctx, 256, [9; 32]).err(),
                Some(IntegrityError::MalformedHeader(why))
            );
        }
        let ok = encode_pairs(&[("k", nfc)]);
        assert_eq!(EncryptionContext::decode(&ok).unwrap().pairs()[0].1, nfc);
    }

    #[test]
    fn the_default_frame_is_64_kib() {
        // docs/envelope-v1.md: docstore writes 65 536-byte frames, so 100,000 bytes are one full
        // frame and a final one.
        let pt = vec![3u8; 100_000];
        let env = seal_to_vec(&key(1), ctx(), DEFAULT_FRAME_SIZE, [9; 32], &pt).unwrap();
        let (header, n) = Header::parse(&env).unwrap();
        assert_eq!(header.frame_size, 65_536);
        let layout = header.layout((env.len() - n) as u64).unwrap();
        assert_eq!(
            (layout.frames, layout.frame_plaintext_len(1)),
            (2, 100_000 - 65_536)
        );
    }

    #[test]
    fn frame_sizes_are_bounded_at_both_ends() {
        // 16 MiB is the documented ceiling: accepted by the writer and the reader, one byte
        // more refused by both.
        for fs in [MIN_FRAME_SIZE, 16 << 20] {
            let env = seal_to_vec(&key(1), ctx(), fs, [9; 32], b"bounded").unwrap();
            assert_eq!(Header::parse(&env).unwrap().0.frame_size, fs);
            assert_eq!(&open_from_slice(&key(1), &ctx(), &env).unwrap()[..], b"bounded");
        }
        assert_eq!(MAX_FRAME_SIZE, 16 << 20);
        let good = seal_to_vec(&key(1), ctx(), MIN_FRAME_SIZE, [9; 32], b"x").unwrap();
        for fs in [MIN_FRAME_SIZE - 1, MAX_FRAME_SIZE + 1, 0, u32::MAX] {
            assert_eq!(
                Sealer::new(&key(1), ctx(), fs, [9; 32]).err(),
                Some(IntegrityError::FrameSize(fs))
            );
            let mut bad = good.clone();
            bad[7..11].copy_from_slice(&fs.to_be_bytes());
            assert_eq!(Header::parse(&bad).err(), Some(IntegrityError::FrameSize(fs)));
        }
    }

    /// A context of one pair whose encoding is exactly `len` bytes.
    fn context_of_len(len: usize) -> EncryptionContext {
        // count (2) + key length (2) + "k" + value length (2) + value
        let value = "v".repeat(len - 7);
        let ctx = EncryptionContext::new([("k", value)]);
        assert_eq!(ctx.encode().len(), len);
        ctx
    }

    #[test]
    fn the_context_may_fill_its_limit_and_not_more() {
        let full = context_of_len(MAX_CONTEXT_LEN);
        let env = seal_to_vec(&key(1), full.clone(), 256, [9; 32], b"x").unwrap();
        let (header, consumed) = Header::parse(&env).unwrap();
        assert_eq!(header.context, full);
        assert_eq!(consumed, FIXED_PREFIX + MAX_CONTEXT_LEN + COMMITMENT_LEN);
        assert_eq!(Header::encoded_len(&env).unwrap(), consumed);
        assert_eq!(header.as_bytes(), &env[..consumed]);

        let over = context_of_len(MAX_CONTEXT_LEN + 1);
        assert_eq!(
            Sealer::new(&key(1), over.clone(), 256, [9; 32]).err(),
            Some(IntegrityError::MalformedHeader("encryption context too long"))
        );
        // The same context written by hand after a valid prefix: the reader refuses it too.
        let mut bad = env[..FIXED_PREFIX - 2].to_vec();
        let ctx = over.encode();
        bad.extend_from_slice(&(ctx.len() as u16).to_be_bytes());
        bad.extend_from_slice(&ctx);
        bad.extend_from_slice(&[0; COMMITMENT_LEN]);
        assert_eq!(
            Header::parse(&bad).err(),
            Some(IntegrityError::MalformedHeader("encryption context too long"))
        );
    }

    #[test]
    fn a_header_is_read_only_once_its_prefix_is_whole() {
        let env = seal_to_vec(&key(1), ctx(), 256, [9; 32], b"x").unwrap();
        assert_eq!(Header::MIN_PREFIX, 4 + 1 + 2 + 4 + MESSAGE_ID_LEN + 2);
        let len = Header::encoded_len(&env[..Header::MIN_PREFIX]).unwrap();
        assert_eq!(len, Header::parse(&env).unwrap().1);
        assert_eq!(
            Header::encoded_len(&env[..Header::MIN_PREFIX - 1]),
            Err(IntegrityError::MalformedHeader("truncated header"))
        );
        assert_eq!(
            Header::parse(&env[..len - 1]).err(),
            Some(IntegrityError::MalformedHeader("truncated header"))
        );
        let mut v = env.clone();
        v[4] = 2;
        assert_eq!(
            Header::parse(&v).err(),
            Some(IntegrityError::UnsupportedVersion(2))
        );
        let mut a = env.clone();
        a[6] = 2;
        assert_eq!(
            Header::parse(&a).err(),
            Some(IntegrityError::UnsupportedAlgorithm(2))
        );
        let mut m = env;
        m[0] = b'X';
        assert_eq!(Header::parse(&m).err(), Some(IntegrityError::BadMagic));
    }

    #[test]
    fn no_more_than_two_to_the_32_frames() {
        // The layout of the largest body allowed, and of one frame more.
        let full = 256 + TAG_LEN as u64;
        let max = Layout::from_body_len(256, MAX_FRAMES * full).unwrap();
        assert_eq!(max.frames, 1 << 32);
        assert_eq!(max.plaintext_len, (1u64 << 32) * 256);
        assert_eq!(max.body_len(), MAX_FRAMES * full);
        assert_eq!(
            Layout::from_body_len(256, MAX_FRAMES * full + 17),
            Err(IntegrityError::Length(MAX_FRAMES * full + 17))
        );
        // The sealer stops at the same count (its counter set by hand: 2^32 seals take hours).
        let mut sealer = Sealer::new(&key(1), ctx(), 256, [9; 32]).unwrap();
        sealer.next = MAX_FRAMES - 1;
        assert!(sealer.seal_in_place(&mut [0u8; 256], false).is_ok());
        assert_eq!(
            sealer.seal_in_place(&mut [0u8; 256], true),
            Err(IntegrityError::Length(256))
        );
    }

    #[test]
    fn layout_geometry() {
        let l = Layout::from_plaintext_len(256, 600);
        assert_eq!((l.frames, l.body_len()), (3, 600 + 3 * 16));
        assert_eq!(
            (0..3).map(|i| l.frame_plaintext_len(i)).collect::<Vec<_>>(),
            [256, 256, 88]
        );
        assert_eq!(
            (0..3).map(|i| l.frame_offset(i)).collect::<Vec<_>>(),
            [0, 272, 544]
        );
        assert_eq!(l.frames_for(0, 1), (0, 0));
        assert_eq!(l.frames_for(255, 257), (0, 1));
        assert_eq!(l.frames_for(256, 600), (1, 2));
        assert_eq!(l.frames_for(0, 256), (0, 0));
        assert_eq!(Layout::from_plaintext_len(256, 0).frames, 1);
        assert_eq!(Layout::from_body_len(256, 600 + 48), Ok(l));
        assert_eq!(Layout::from_body_len(256, 16).unwrap().plaintext_len, 0);
    }

    #[test]
    fn a_sealer_refuses_frames_out_of_shape() {
        let mut s = Sealer::new(&key(1), ctx(), 256, [9; 32]).unwrap();
        // A short frame that is not final, and an oversized one.
        assert_eq!(
            s.seal_in_place(&mut [0u8; 255], false),
            Err(IntegrityError::Length(255))
        );
        assert_eq!(
            s.seal_in_place(&mut [0u8; 257], true),
            Err(IntegrityError::Length(257))
        );
        assert!(s.seal_in_place(&mut [0u8; 256], false).is_ok());
        assert!(s.seal_in_place(&mut [0u8; 10], true).is_ok());
        // Nothing after the final frame.
        assert_eq!(
            s.seal_in_place(&mut [0u8; 10], true),
            Err(IntegrityError::Length(10))
        );
        assert!(format!("{s:?}").starts_with("Sealer { next: 2"));
    }

    #[test]
    fn a_frame_opens_only_at_its_index_with_its_flag() {
        let pt = [5u8; 600];
        let env = seal_to_vec(&key(1), ctx(), 256, [9; 32], &pt).unwrap();
        let (header, n) = Header::parse(&env).unwrap();
        let body = &env[n..];
        let opener = Opener::new(&header, &key(1)).unwrap();
        assert_eq!(format!("{opener:?}"), "Opener { .. }");
        let frame = |i: usize, len: usize| body[i * 272..i * 272 + len].to_vec();
        let mut ok = frame(1, 272);
        opener.open_frame(1, false, &mut ok).unwrap();
        assert_eq!(ok, [5u8; 256]);
        for (index, is_final) in [(0, false), (1, true), (2, false)] {
            let mut f = frame(1, 272);
            assert_eq!(
                opener.open_frame(index, is_final, &mut f),
                Err(IntegrityError::Frame { index })
            );
            assert!(f.iter().all(|&b| b == 0), "a refused frame is wiped");
        }
        let mut last = body[544..].to_vec();
        opener.open_frame(2, true, &mut last).unwrap();
        assert_eq!(last, [5u8; 88]);
        let mut short = vec![1u8; TAG_LEN - 1];
        assert_eq!(
            opener.open_frame(0, false, &mut short),
            Err(IntegrityError::Frame { index: 0 })
        );
        assert!(short.is_empty());
        // Every other envelope under another context is refused before any frame is read.
        let other = EncryptionContext::new([("docstore.document", "d2")]);
        assert_eq!(
            open_from_slice(&key(1), &other, &env).err(),
            Some(IntegrityError::Context)
        );
    }

    #[test]
    fn context_decode_rejects_unsorted() {
        let mut bytes = vec![0, 2];
        for s in ["b", "1", "a", "2"] {
            bytes.extend_from_slice(&(s.len() as u16).to_be_bytes());
            bytes.extend_from_slice(s.as_bytes());
        }
        assert!(EncryptionContext::decode(&bytes).is_err());
    }
}
