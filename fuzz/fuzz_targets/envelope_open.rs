//! Untrusted envelope bytes: parsing, layout and frame opening must return errors, never panic,
//! and never allocate beyond the header's bounded frame size.
#![no_main]

use docstore::envelope::{self, EncryptionContext, Header};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let key = Zeroizing::new([7u8; 32]);
    let ctx = EncryptionContext::new([("docstore.document", "d"), ("docstore.version_id", "v")]);
    if let Ok((header, used)) = Header::parse(data) {
        let _ = header.layout((data.len() - used) as u64);
        // Re-parse the context from the header to exercise the canonical decoder.
        let _ = EncryptionContext::decode(&header.context.encode());
    }
    let _ = envelope::open_from_slice(&key, &ctx, data);
});
