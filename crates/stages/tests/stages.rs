//! Stages through the join on the embedded store: an exam image's thumbnail is stored as an
//! encrypted rendition linked to its version, `file.processed` is recorded once and names it;
//! reprocessing replaces, never duplicates; bad input is a permanent error.

mod common;

use std::sync::Arc;

use docstore::conformance::request;
use docstore::{DocStore, Identity, Kind};
use docstore_events::CloudEvent;
use docstore_pipeline::join::Joined;
use docstore_pipeline::runtime::{Stage, StageError};
use docstore_stages::Thumbnailer;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

async fn uploaded_event(store: &DocStore, doc: &str) -> CloudEvent {
    let entry = store
        .metadata()
        .outbox_pending(10_000)
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.key == doc && e.event_type == "file.uploaded")
        .unwrap();
    CloudEvent::decode(entry.payload.as_bytes()).unwrap()
}

#[tokio::test]
async fn thumbnail_rendition_join_and_idempotence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&dir.path().join("data")).await.unwrap());
    let who = Identity::new("staff:stages");
    let mut req = request(None, "pat-img", "exam-img");
    req.kind = Kind::Image;
    req.media_type = "image/png".into();
    let v = store.put(&who, req, &png(1200, 800)[..]).await.unwrap();
    let stage = Joined::new(Thumbnailer::default(), store.clone(), vec!["thumbnail".into()]);
    let event = uploaded_event(&store, &v.document_id).await;
    stage.handle(&event).await.unwrap();

    let thumb = store
        .get_rendition(&who, &v.document_id, 1, "thumbnail")
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    let img = image::load_from_memory_with_format(&thumb, image::ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (256, 170));
    let record = store.metadata().version(&v.document_id, Some(1)).await.unwrap();
    assert_eq!(record.state, docstore::ProcessingState::Processed);
    assert_eq!(record.renditions.len(), 1);
    let first_key = record.renditions[0].blob_key.clone();

    // A redelivery reprocesses: the rendition is replaced, not duplicated, and no second
    // file.processed is recorded.
    stage.handle(&event).await.unwrap();
    let record = store.metadata().version(&v.document_id, Some(1)).await.unwrap();
    assert_eq!(record.renditions.len(), 1);
    assert_ne!(record.renditions[0].blob_key, first_key);
    let processed: Vec<_> = store
        .metadata()
        .outbox_pending(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key == v.document_id && e.event_type == "file.processed")
        .collect();
    assert_eq!(processed.len(), 1);
    let ev = CloudEvent::decode(processed[0].payload.as_bytes()).unwrap();
    let data = ev.file_processed().unwrap();
    assert_eq!(data.renditions.len(), 1);
    assert_eq!(data.renditions[0].media_type, "image/png");
    // The contract's rendition type has no key field; the text holds none either.
    assert!(
        !processed[0].payload.contains("key_block"),
        "no wrapped key in the event"
    );

    // Not an image: permanent.
    let mut req = request(None, "pat-img", "exam-img");
    req.media_type = "text/plain".into();
    let bad = store
        .put(&who, req, &b"plain text, not an image"[..])
        .await
        .unwrap();
    let event = uploaded_event(&store, &bad.document_id).await;
    assert!(matches!(
        stage.handle(&event).await,
        Err(StageError::Permanent(_))
    ));
    // A truncated image: permanent too.
    let mut req = request(None, "pat-img", "exam-img");
    req.media_type = "image/png".into();
    let cut = png(300, 300);
    let cut = store.put(&who, req, &cut[..cut.len() / 2]).await.unwrap();
    let event = uploaded_event(&store, &cut.document_id).await;
    assert!(matches!(
        stage.handle(&event).await,
        Err(StageError::Permanent(_))
    ));
}

#[tokio::test]
async fn text_stage_stores_page_text_and_reports_counts() {
    let pdf = std::fs::read(docstore_testkit::corpus_file(
        "text-pt-8p-diario-oficial-signed.pdf",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&dir.path().join("data")).await.unwrap());
    let who = Identity::new("staff:stages");
    let v = store
        .put(&who, request(None, "pat-pdf", "exam-pdf"), &pdf[..])
        .await
        .unwrap();
    let required = vec!["text".to_owned(), "thumbnail".to_owned()];
    let text = Joined::new(
        docstore_stages::Extractor::default(),
        store.clone(),
        required.clone(),
    );
    let thumb = Joined::new(Thumbnailer::default(), store.clone(), required);
    let event = uploaded_event(&store, &v.document_id).await;
    text.handle(&event).await.unwrap();
    thumb.handle(&event).await.unwrap();
    let body = store
        .get_rendition(&who, &v.document_id, 1, "text")
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(body.matches('\u{c}').count(), 7, "8 pages, form-feed separated");
    assert!(body.to_lowercase().contains("diário oficial") || body.to_lowercase().contains("diario oficial"));
    let processed = store
        .metadata()
        .outbox_pending(10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.key == v.document_id && e.event_type == "file.processed")
        .expect("both stages done: file.processed recorded");
    let data = CloudEvent::decode(processed.payload.as_bytes())
        .unwrap()
        .file_processed()
        .unwrap();
    assert_eq!(data.page_count, Some(8));
    assert!(data.text_length.unwrap() > 1000);
    assert_eq!(data.renditions.len(), 2);
}

/// The text stage then the index stage on the embedded store: a report's words are searchable
/// once its `file.processed` is handled; a new version takes over; redelivery does not duplicate;
/// deleting, restoring and shredding move the index with the store.
#[tokio::test]
async fn text_then_index_follows_versions_and_deletes() {
    use docstore_search::{SearchIndex, SearchQuery};
    use docstore_stages::Extractor;
    use docstore_stages::index::Indexer;

    let corpus = common::corpus();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&dir.path().join("data")).await.unwrap());
    let who = Identity::new("staff:index");
    let text = Joined::new(Extractor::default(), store.clone(), vec!["text".into()]);
    let index = Arc::new(
        SearchIndex::open(&dir.path().join("index"), store.keys().as_ref())
            .await
            .unwrap(),
    );
    let indexer = Indexer::new(store.clone(), index.clone(), "Clínica");
    let processed_event = |doc: String| {
        let store = store.clone();
        async move {
            let entry = store
                .metadata()
                .outbox_pending(10_000)
                .await
                .unwrap()
                .into_iter()
                .rfind(|e| e.key == doc && e.event_type == "file.processed")
                .unwrap();
            CloudEvent::decode(entry.payload.as_bytes()).unwrap()
        }
    };
    let hits = |text: &str, all: bool| {
        let mut q = SearchQuery::new(text);
        q.all_versions = all;
        index
            .search(&q)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.version.version)
            .collect::<Vec<_>>()
    };

    let pdf = std::fs::read(corpus.join("text-2p-pdf20-tagged-latex.pdf")).unwrap();
    let v1 = store
        .put(&who, request(None, "pat-ix", "exam-ix"), &pdf[..])
        .await
        .unwrap();
    let doc = v1.document_id.clone();
    text.handle(&uploaded_event(&store, &doc).await).await.unwrap();
    let ev1 = processed_event(doc.clone()).await;
    indexer.handle(&ev1).await.unwrap();
    assert_eq!(hits("theorems", false), [1]);
    indexer.handle(&ev1).await.unwrap();
    assert_eq!(hits("theorems", true), [1], "redelivery duplicated the entry");

    let other = std::fs::read(corpus.join("text-french-diacritics-pdftex.pdf")).unwrap();
    store
        .put(&who, request(Some(&doc), "pat-ix", "exam-ix"), &other[..])
        .await
        .unwrap();
    text.handle(&uploaded_event(&store, &doc).await).await.unwrap();
    indexer.handle(&processed_event(doc.clone()).await).await.unwrap();
    assert!(hits("theorems", false).is_empty(), "v1 is no longer the latest");
    assert_eq!(hits("theorems", true), [1]);

    store.delete(&who, &doc).await.unwrap();
    indexer.refresh_document(&doc).await.unwrap();
    assert!(
        hits("theorems", true).is_empty(),
        "a deleted document left in the index"
    );
    store.restore(&who, &doc).await.unwrap();
    indexer.refresh_document(&doc).await.unwrap();
    assert_eq!(hits("theorems", true), [1]);
    store.shred(&who, &doc, 1).await.unwrap();
    indexer.refresh_document(&doc).await.unwrap();
    assert!(
        hits("theorems", true).is_empty(),
        "a shredded version left in the index"
    );
    // The index worker read the metadata through the store's audited reads, like any caller.
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let by_indexer = |action: &str| {
        audit.lines().any(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["actor"] == "service:index-worker" && r["action"] == action && r["document"] == doc.as_str()
        })
    };
    assert!(
        by_indexer("document") && by_indexer("versions"),
        "index reads not audited"
    );
}

/// `event` with its data's `field` set to `value`.
fn forged(event: &CloudEvent, field: &str, value: serde_json::Value) -> CloudEvent {
    let mut json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
    json["data"][field] = value;
    CloudEvent::decode(&serde_json::to_vec(&json).unwrap()).unwrap()
}

/// A `file.uploaded` whose fields are not the stored version's is a permanent error that leaves
/// the renditions as they were: a forged `version_id`, a claimed `size` of 1 on a large version
/// (never read), a forged patient (never stamped).
#[tokio::test]
async fn forged_upload_events_change_no_rendition() {
    use docstore_stages::Stamper;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&dir.path().join("data")).await.unwrap());
    let who = Identity::new("staff:stages");
    let mut req = request(None, "pat-real", "exam-real");
    req.kind = Kind::Image;
    req.media_type = "image/png".into();
    let v = store.put(&who, req, &png(1200, 800)[..]).await.unwrap();
    let event = uploaded_event(&store, &v.document_id).await;
    let stage = Joined::new(Thumbnailer::default(), store.clone(), vec!["thumbnail".into()]);
    stage.handle(&event).await.unwrap();
    let keys = |r: &docstore::VersionRecord| -> Vec<String> {
        r.renditions.iter().map(|r| r.blob_key.clone()).collect()
    };
    let before = keys(&store.metadata().version(&v.document_id, Some(1)).await.unwrap());

    let pdf = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/columns/table-rows.pdf"
    ))
    .unwrap();
    let p = store
        .put(&who, request(None, "pat-real", "exam-real"), &pdf[..])
        .await
        .unwrap();
    let pdf_event = uploaded_event(&store, &p.document_id).await;
    let stamper = Joined::new(Stamper::new("Clínica"), store.clone(), vec!["stamp".into()]);

    let thumbnail_cases = [
        (
            "version_id",
            serde_json::json!("0192f7a0-0000-7000-8000-000000000000"),
        ),
        ("size", serde_json::json!(1)),
        ("patient_id", serde_json::json!("pat-forged")),
    ];
    for (field, value) in thumbnail_cases {
        match stage.handle(&forged(&event, field, value)).await {
            Err(StageError::Permanent(why)) => assert!(why.contains(field), "{field}: {why}"),
            other => panic!("{field}: {other:?}"),
        }
        let now = keys(&store.metadata().version(&v.document_id, Some(1)).await.unwrap());
        assert_eq!(now, before, "{field}");
    }
    match stamper
        .handle(&forged(&pdf_event, "patient_id", "pat-forged".into()))
        .await
    {
        Err(StageError::Permanent(why)) => assert!(why.contains("patient_id"), "{why}"),
        other => panic!("{other:?}"),
    }
    let record = store.metadata().version(&p.document_id, Some(1)).await.unwrap();
    assert!(record.renditions.is_empty(), "{:?}", record.renditions);
    // The genuine event still stamps, with the stored patient.
    stamper.handle(&pdf_event).await.unwrap();
    let stamped = store
        .get_rendition(&who, &p.document_id, 1, "stamp")
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    let text = docstore_stages::extract::extract_pdf_text(&stamped, &Default::default())
        .unwrap()
        .joined();
    assert!(text.contains("pat-real"), "{text}");
}

/// The stamp prints the exam's release time from the metadata store once the exam is released,
/// and says "Emitido em" with no release claim before; a release recorded for another patient is
/// not printed on this patient's document.
#[tokio::test]
async fn stamp_prints_the_recorded_release_time() {
    use docstore_stages::Stamper;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&dir.path().join("data")).await.unwrap());
    let who = Identity::new("staff:stages");
    let pdf = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/columns/table-rows.pdf"
    ))
    .unwrap();
    let stamper = Joined::new(Stamper::new("Clínica"), store.clone(), vec!["stamp".into()]);
    let stamp_text = |doc: String| {
        let (store, who) = (store.clone(), who.clone());
        async move {
            let stamped = store
                .get_rendition(&who, &doc, 1, "stamp")
                .await
                .unwrap()
                .read_all()
                .await
                .unwrap();
            docstore_stages::extract::extract_pdf_text(&stamped, &Default::default())
                .unwrap()
                .joined()
        }
    };

    let before = store
        .put(&who, request(None, "pat-r", "exam-r"), &pdf[..])
        .await
        .unwrap();
    stamper
        .handle(&uploaded_event(&store, &before.document_id).await)
        .await
        .unwrap();
    let text = stamp_text(before.document_id.clone()).await;
    assert!(
        text.contains("Emitido em") && !text.contains("LIBERADO"),
        "{text}"
    );

    // 2023-11-14 22:13:20 UTC.
    let release = docstore::ExamRelease {
        exam_id: "exam-r".into(),
        patient_id: "pat-r".into(),
        released_at: docstore::Timestamp(1_700_000_000_000),
        released_by: "staff:ana".into(),
    };
    store.metadata().record_release(&release).await.unwrap();
    let after = store
        .put(&who, request(None, "pat-r", "exam-r"), &pdf[..])
        .await
        .unwrap();
    stamper
        .handle(&uploaded_event(&store, &after.document_id).await)
        .await
        .unwrap();
    let text = stamp_text(after.document_id.clone()).await;
    assert!(
        text.contains("LIBERADO") && text.contains("Liberado em 2023-11-14 22:13 UTC"),
        "{text}"
    );
    // Stamping again (a redelivery of the first version's event) now prints the release.
    stamper
        .handle(&uploaded_event(&store, &before.document_id).await)
        .await
        .unwrap();
    let text = stamp_text(before.document_id).await;
    assert!(text.contains("Liberado em 2023-11-14 22:13 UTC"), "{text}");

    // The same exam id under another patient (a forged or mistaken upload) prints no release.
    let other = store
        .put(&who, request(None, "pat-other", "exam-r"), &pdf[..])
        .await
        .unwrap();
    stamper
        .handle(&uploaded_event(&store, &other.document_id).await)
        .await
        .unwrap();
    let text = stamp_text(other.document_id).await;
    assert!(
        text.contains("Emitido em") && !text.contains("Liberado em"),
        "{text}"
    );
    // Each stamp read the release through the store's audited read.
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let release_reads = audit
        .lines()
        .filter(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["action"] == "exam_release" && r["detail"] == "exam=exam-r"
        })
        .count();
    assert_eq!(release_reads, 4, "one audited release read per stamp");
}
