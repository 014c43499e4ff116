//! Untrusted search text (`GET /v1/search?q=`, `docstore search`): every input gives hits or a
//! typed error (`Query` or `Limit`), never a panic or a stack overflow, and no error message
//! carries the query's text.
#![no_main]

use std::sync::OnceLock;

use docstore::Timestamp;
use docstore_search::{IndexedVersion, SearchError, SearchIndex, SearchQuery};
use libfuzzer_sys::fuzz_target;

fn index() -> &'static SearchIndex {
    static INDEX: OnceLock<SearchIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let idx = SearchIndex::in_memory().expect("in-memory index");
        for (i, text) in [
            "Hemograma completo: hemoglobina 13,5 g/dL, leucócitos normais",
            "Glicemia de jejum 92 mg/dL; colesterol total 180 mg/dL",
            "Ultrassonografia abdominal sem alterações",
        ]
        .iter()
        .enumerate()
        {
            idx.upsert(IndexedVersion {
                document_id: format!("doc-{i}"),
                version: 1,
                patient_id: format!("pac-{i}"),
                exam_id: format!("exm-{i}"),
                kind: "report".into(),
                clinic: "Clínica".into(),
                created_at: Timestamp(1_764_000_000_000),
                text: (*text).into(),
            })
            .expect("upsert");
        }
        idx.commit().expect("commit");
        idx
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(text).into_owned();
    let mut q = SearchQuery::new(text.clone());
    q.fuzzy = flags & 1 == 1;
    q.all_versions = flags & 2 == 2;
    q.offset = usize::from(flags >> 4) * 1_000;
    match index().search(&q) {
        Ok(_) => {}
        Err(e @ (SearchError::Query(_) | SearchError::Limit(_))) => {
            let message = e.to_string();
            // A word of the query found in the message would be an echo (short words are also
            // the messages' own).
            for word in text.split_whitespace().filter(|w| w.len() >= 12) {
                assert!(!message.contains(word), "error echoes the query: {message}");
            }
        }
        Err(other) => panic!("untyped search failure: {other}"),
    }
});
