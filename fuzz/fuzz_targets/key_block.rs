//! Untrusted key blocks (read from metadata): decode must fail cleanly on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = docstore::keys::decode_key_block(data) {
        assert_eq!(docstore::keys::encode_key_block(&keys), data);
    }
});
