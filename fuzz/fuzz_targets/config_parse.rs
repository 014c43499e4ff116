//! Untrusted configuration text: the store's TOML settings and the bus URL parse to a value or a
//! typed error, and validation of whatever parses never panics.
#![no_main]

use std::path::Path;

use docstore::config::StoreConfig;
use docstore_bus::kafka::KafkaConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = StoreConfig::from_toml(Path::new("/srv/docstore"), text) {
        let _ = cfg.validate();
    }
    let _ = KafkaConfig::from_url(text);
});
