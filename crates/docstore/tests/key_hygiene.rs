//! The AES-256 key schedules the envelope's frame cipher holds are wiped when dropped. A
//! compile-time check: without `aes`'s `zeroize` feature this file does not build.

fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}

#[test]
fn aes_key_schedules_are_zeroized_on_drop() {
    wiped_on_drop::<aes::Aes256>();
    wiped_on_drop::<aes::Aes256Enc>();
    wiped_on_drop::<aes::Aes256Dec>();
}
