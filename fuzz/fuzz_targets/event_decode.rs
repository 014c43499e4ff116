//! Untrusted bus messages: decoding must fail with a typed error on any input, and whatever decodes
//! must re-encode to an event that decodes to the same value.
#![no_main]

use docstore_events::CloudEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = CloudEvent::decode(data) {
        let again = CloudEvent::decode(&ev.encode()).expect("re-encoded event decodes");
        assert_eq!(again, ev);
        let _ = ev.file_uploaded();
        let _ = ev.file_processed();
        let _ = ev.exam();
    }
});
