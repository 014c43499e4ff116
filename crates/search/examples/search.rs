//! Searching: index the text of three exam reports in an in-memory index, then run the staff
//! queries the search page sends: terms through the Portuguese analyser (accents fold), a
//! phrase, a fuzzy term, a patient filter. Through `search::search` each search is also written
//! to the store's audit log, with a digest of the query, never its text. Run:
//! `cargo run -p docstore-pipeline --example search`.

use std::sync::Arc;

use docstore::{DocStore, Identity, Timestamp};
use docstore_search::{IndexedVersion, SearchIndex, SearchQuery, search};

fn report(document: &str, patient: &str, text: &str) -> IndexedVersion {
    IndexedVersion {
        document_id: document.into(),
        version: 1,
        patient_id: patient.into(),
        exam_id: format!("exam-{document}"),
        kind: "report".into(),
        clinic: "Clínica Exemplo".into(),
        created_at: Timestamp::now(),
        text: text.into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = DocStore::init_local(&dir.path().join("data")).await?;
    let index = Arc::new(SearchIndex::in_memory()?);
    for v in [
        report(
            "d1",
            "patient-1",
            "Hemograma completo: hemoglobina 13,5 g/dL, leucócitos normais.",
        ),
        report(
            "d2",
            "patient-2",
            "Ultrassonografia abdominal: fígado de dimensões normais.",
        ),
        report(
            "d3",
            "patient-1",
            "Glicemia de jejum 92 mg/dL. Hemoglobina glicada 5,4 %.",
        ),
    ] {
        index.upsert(v)?;
    }
    index.commit()?;

    let who = Identity::new("staff:example");
    let mut totals = Vec::new();
    for (label, q) in [
        ("terms, accents folded", SearchQuery::new("leucocitos normais")),
        ("phrase", SearchQuery::new("\"hemoglobina glicada\"")),
        (
            "fuzzy (one edit)",
            SearchQuery {
                fuzzy: true,
                ..SearchQuery::new("hemoglobna")
            },
        ),
        (
            "one patient",
            SearchQuery {
                patient: Some("patient-1".into()),
                ..SearchQuery::new("hemoglobina")
            },
        ),
    ] {
        let found = search(&store, &index, &who, q).await?;
        let hits: Vec<String> = found
            .hits
            .iter()
            .map(|h| {
                let snippet = h.snippet.as_ref().map(|s| s.marked("[", "]")).unwrap_or_default();
                format!("{} ({snippet})", h.version.document_id)
            })
            .collect();
        println!("{label}: {} hit(s): {}", found.total, hits.join("; "));
        totals.push(found.total);
    }
    let audited = store
        .audit_log(&who, None, 100)
        .await?
        .into_iter()
        .filter(|r| r.action == "search")
        .count();
    println!("{audited} searches in the audit log");
    assert_eq!(totals, [1, 1, 2, 2]);
    assert_eq!(audited, 4);
    Ok(())
}
