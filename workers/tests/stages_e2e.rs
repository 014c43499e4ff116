//! The processing stages end to end on real services: a report and an exam image uploaded to a
//! store on S3 + DynamoDB + KMS (moto), their `file.uploaded` relayed to Kafka, three
//! `docstore-worker` processes (stamp, thumbnail, text — with OCR when built with it) each in its
//! own consumer group, renditions stored encrypted through the store, exactly one
//! `file.processed` per version on the topic, and an index worker making the report searchable.
//!
//! Needs `DOCSTORE_TEST_KAFKA` and `DOCSTORE_TEST_AWS_ENDPOINT` (scripts/services.sh) and the
//! shared corpus; skipped without the services unless `DOCSTORE_REQUIRE_SERVICES` is set, failed
//! without the corpus (docstore-testkit).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{WorkerProc, assert_exactly_once, count_processed, service};
use docstore::aws::AwsSettings;
use docstore::meta::dynamodb::DynamoMetadata;
use docstore::{DocStore, ExamId, Identity, Kind, PatientId, ProcessingState, PutRequest, VersionRecord};
use docstore_bus::open_bus;
use docstore_stages::extract::{ExtractLimits, extract_pdf_text};

const CLINIC: &str = "Clínica São Lucas";
const PATIENT: &str = "pac-e2e-7731";

async fn upload(store: &DocStore, path: PathBuf, kind: Kind, media_type: &str) -> VersionRecord {
    let body = std::fs::read(path).unwrap();
    let req = PutRequest::new(
        PatientId::new(PATIENT).unwrap(),
        ExamId::new("exm-e2e-1").unwrap(),
    )
    .kind(kind)
    .media_type(media_type);
    store
        .put(&Identity::new("test:reception"), req, &body[..])
        .await
        .unwrap()
}

async fn wait_processed(store: &DocStore, docs: &[&VersionRecord], timeout: Duration) {
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        for d in docs {
            let now = store
                .metadata()
                .version(&d.document_id, Some(d.version))
                .await
                .unwrap();
            if now.state != ProcessingState::Processed {
                pending.push(d.document_id.clone());
            }
        }
        if pending.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "not processed within {timeout:?}: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A rendition's plaintext, read back through the store (decrypted and digest-checked), after
/// checking that its stored blob is not that plaintext.
async fn rendition(store: &DocStore, v: &VersionRecord, stage: &str) -> Vec<u8> {
    let record = store
        .metadata()
        .version(&v.document_id, Some(v.version))
        .await
        .unwrap();
    let r = record
        .renditions
        .iter()
        .find(|r| r.stage == stage)
        .unwrap_or_else(|| panic!("{} has no {stage} rendition", v.document_id))
        .clone();
    assert!(!r.key_block.is_empty(), "{stage}: no wrapped key");
    let plain = store
        .get_rendition(&Identity::new("test:staff"), &v.document_id, v.version, stage)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap()
        .to_vec();
    let size = store.blobs().size(&r.blob_key).await.unwrap();
    let raw = store.blobs().get_range(&r.blob_key, 0..size).await.unwrap();
    let probe = &plain[..plain.len().min(48)];
    assert!(
        probe.is_empty() || !raw.windows(probe.len()).any(|w| w == probe),
        "{stage} rendition stored in the clear"
    );
    plain
}

/// Polls the search index (read-only, beside the index worker that writes it) until `query` finds
/// `document`; returns how long after `since` that was. Bounded (a liveness check, not a timing
/// assertion: the time is reported).
async fn searchable_after(
    store: &DocStore,
    dir: &std::path::Path,
    query: &str,
    document: &str,
    since: Instant,
) -> Duration {
    use docstore_search::{SearchIndex, SearchQuery};
    let mut index = None;
    loop {
        if index.is_none() {
            index = SearchIndex::open_read_only(dir, store.keys().as_ref()).await.ok();
        }
        if let Some(ix) = &index {
            ix.refresh().unwrap();
            let hits = ix.search(&SearchQuery::new(query)).unwrap().hits;
            if hits.iter().any(|h| h.version.document_id == document) {
                return since.elapsed();
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "{document} not searchable for {query} after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_and_an_image_get_encrypted_renditions_and_one_file_processed_each() {
    let dir = docstore_testkit::corpus();
    let (Some(kafka), Some(endpoint)) = (
        service("DOCSTORE_TEST_KAFKA"),
        service("DOCSTORE_TEST_AWS_ENDPOINT"),
    ) else {
        return;
    };
    let settings = AwsSettings::local(&endpoint);
    let table = format!("stages-{}", uuid::Uuid::new_v4().simple());
    DynamoMetadata::create_table(&settings.dynamodb_client(), &table)
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (store_env, store, _) =
        common::aws_store(&endpoint, format!("dynamodb://{table}"), work.path()).await;
    let prefix = format!("stages{}.", uuid::Uuid::new_v4().simple());
    let bus_url = format!("kafka://{kafka}?prefix={prefix}&partitions=3&session_timeout_ms=3000");

    let _relay = common::relay(&store, &bus_url);
    let required = "stamp,thumbnail,text";
    let ocr = cfg!(feature = "ocr");
    let mut workers = Vec::new();
    for stage in ["stamp", "thumbnail", "text"] {
        let mut args = vec!["--stage", stage, "--required", required, "--clinic", CLINIC];
        if ocr && stage == "text" {
            args.push("--ocr");
        }
        workers.push(WorkerProc::start(work.path(), stage, &args, &bus_url, &store_env));
    }
    // The index worker follows file.processed into the search index.
    let index_dir = work.path().join("index");
    let index_arg = index_dir.display().to_string();
    workers.push(WorkerProc::start(
        work.path(),
        "index",
        &["--stage", "index", "--index", &index_arg, "--clinic", CLINIC],
        &bus_url,
        &store_env,
    ));

    let uploaded = Instant::now();
    let report = upload(
        &store,
        dir.join("text-2p-pdf20-tagged-latex.pdf"),
        Kind::Report,
        "application/pdf",
    )
    .await;
    let image = upload(
        &store,
        dir.join("image-large-photo-4032x3024.jpg"),
        Kind::Image,
        "image/jpeg",
    )
    .await;
    let scan = if ocr {
        Some(
            upload(
                &store,
                dir.join("scanned-1p-jbig2-xerox-rot270.pdf"),
                Kind::Report,
                "application/pdf",
            )
            .await,
        )
    } else {
        None
    };
    let searchable = searchable_after(
        &store,
        &index_dir,
        "\"two column example\"",
        &report.document_id,
        uploaded,
    )
    .await;
    eprintln!("report searchable {searchable:?} after its upload");
    let mut all = vec![&report, &image];
    all.extend(scan.as_ref());
    wait_processed(&store, &all, Duration::from_secs(180)).await;

    // The report: stamped on both pages, thumbnailed, its text extracted.
    let stamped = rendition(&store, &report, "stamp").await;
    let text = extract_pdf_text(&stamped, &ExtractLimits::default()).unwrap();
    assert_eq!(text.page_count, 2);
    for (i, page) in text.pages.iter().enumerate() {
        assert!(page.contains(PATIENT), "stamp missing on page {}", i + 1);
    }
    let (w, h) = png_size(&rendition(&store, &report, "thumbnail").await);
    assert!(w.max(h) == 256 && w.min(h) > 100, "report thumbnail {w}×{h}");
    let body = String::from_utf8(rendition(&store, &report, "text").await).unwrap();
    assert!(
        body.contains("Two Column Example") && body.contains('\u{c}'),
        "report text: {:?}",
        &body[..body.len().min(200)]
    );

    // The image (a 12-megapixel photo): a 256 px thumbnail with its aspect ratio, no stamp.
    let (w, h) = png_size(&rendition(&store, &image, "thumbnail").await);
    assert_eq!((w, h), (256, 192), "image thumbnail");
    let record = store
        .metadata()
        .version(&image.document_id, Some(1))
        .await
        .unwrap();
    assert!(record.renditions.iter().all(|r| r.stage != "stamp"));

    // The scan (OCR builds): its words, recognised.
    if let Some(scan) = &scan {
        let body = String::from_utf8(rendition(&store, scan, "text").await).unwrap();
        assert!(body.contains("Doesn"), "OCR text: {body:?}");
    }

    // With the workers warm (groups joined), a new report: time from upload to searchable.
    let warm = Instant::now();
    let second = upload(
        &store,
        dir.join("text-1p-latex-objstm.pdf"),
        Kind::Report,
        "application/pdf",
    )
    .await;
    let took = searchable_after(
        &store,
        &index_dir,
        "misfits troublemakers",
        &second.document_id,
        warm,
    )
    .await;
    eprintln!("warm pipeline: report searchable {took:?} after its upload");
    wait_processed(&store, &[&second], Duration::from_secs(60)).await;
    all.push(&second);

    // Exactly one file.processed per version on the topic.
    let bus = open_bus(&bus_url).unwrap();
    let counts = count_processed(bus.as_ref(), all.len(), Duration::from_secs(120)).await;
    let ids: Vec<String> = all.iter().map(|v| v.document_id.clone()).collect();
    assert_exactly_once(&counts, &ids, 1);
    for w in workers {
        w.stop();
    }
}

/// A one-page PDF whose page draws nothing, with a correct cross-reference table.
fn blank_pdf() -> Vec<u8> {
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << >> >>",
    ];
    let mut pdf = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// Empty text is a result, not a failure: a blank page and a scan read without OCR each reach
/// `file.processed` through the broker with `text_length: 0`, and their text rendition is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blank_page_and_a_scan_without_ocr_reach_file_processed_with_no_text() {
    let dir = docstore_testkit::corpus();
    let (Some(kafka), Some(endpoint)) = (
        service("DOCSTORE_TEST_KAFKA"),
        service("DOCSTORE_TEST_AWS_ENDPOINT"),
    ) else {
        return;
    };
    let settings = AwsSettings::local(&endpoint);
    let table = format!("blank-{}", uuid::Uuid::new_v4().simple());
    DynamoMetadata::create_table(&settings.dynamodb_client(), &table)
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (store_env, store, _) =
        common::aws_store(&endpoint, format!("dynamodb://{table}"), work.path()).await;
    let prefix = format!("blank{}.", uuid::Uuid::new_v4().simple());
    let bus_url = format!("kafka://{kafka}?prefix={prefix}&partitions=1&session_timeout_ms=3000");
    let _relay = common::relay(&store, &bus_url);
    let required = "stamp,thumbnail,text";
    let mut workers = Vec::new();
    for stage in ["stamp", "thumbnail", "text"] {
        let args = ["--stage", stage, "--required", required, "--clinic", CLINIC];
        workers.push(WorkerProc::start(work.path(), stage, &args, &bus_url, &store_env));
    }
    let blank_path = work.path().join("blank.pdf");
    std::fs::write(&blank_path, blank_pdf()).unwrap();
    let blank = upload(&store, blank_path, Kind::Report, "application/pdf").await;
    let scan = upload(
        &store,
        dir.join("scanned-1p-jbig2-xerox-rot270.pdf"),
        Kind::Report,
        "application/pdf",
    )
    .await;
    wait_processed(&store, &[&blank, &scan], Duration::from_secs(120)).await;

    let bus = open_bus(&bus_url).unwrap();
    let events = common::processed_events(bus.as_ref(), 2, Duration::from_secs(60)).await;
    assert_eq!(events.len(), 2, "one file.processed each: {events:?}");
    for v in [&blank, &scan] {
        let ev = events
            .iter()
            .find(|e| e["data"]["document_id"] == v.document_id.as_str())
            .unwrap_or_else(|| panic!("no file.processed for {}", v.document_id));
        assert_eq!(ev["data"]["text_length"], 0, "{ev}");
        assert_eq!(ev["data"]["page_count"], 1, "{ev}");
        assert!(rendition(&store, v, "text").await.is_empty());
    }

    // A PDF on which pdf_oxide panics (caught): the panic hook's line names the document and
    // the trace, from the event's span, and withholds the message, which quotes the file.
    let panics = upload(
        &store,
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/stages/tests/fuzz-found/extract-pdf-oxide-char-boundary.pdf"),
        Kind::Report,
        "application/pdf",
    )
    .await;
    let log_path = work.path().join("text.log");
    let start = Instant::now();
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("message withheld")) {
            break l.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no panic line in {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["span"]["document"], panics.document_id.as_str(), "{line}");
    let trace = entry["span"]["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(!line.contains("char boundary"), "panic message leaked: {line}");

    // Forged `file.uploaded` events for the blank page, published straight to the broker (not
    // through the relay): a wrong version_id, another patient, a size of 1. Each of the three
    // stages dead-letters each, and no rendition of the page changes.
    let keys =
        |r: &VersionRecord| -> Vec<String> { r.renditions.iter().map(|r| r.blob_key.clone()).collect() };
    let stored = store
        .metadata()
        .version(&blank.document_id, Some(1))
        .await
        .unwrap();
    let before = keys(&stored);
    assert_eq!(before.len(), 3);
    let (_, genuine) = docstore::outbox::file_uploaded(&stored);
    for (field, value) in [
        (
            "version_id",
            serde_json::json!("0192f7a0-0000-7000-8000-000000000000"),
        ),
        ("patient_id", serde_json::json!("pac-forged")),
        ("size", serde_json::json!(1)),
    ] {
        let mut ev: serde_json::Value = serde_json::from_str(&genuine).unwrap();
        ev["id"] = uuid::Uuid::new_v4().to_string().into();
        ev["data"][field] = value;
        bus.publish(docstore_bus::Message {
            topic: "file.uploaded".into(),
            key: blank.document_id.clone(),
            payload: serde_json::to_vec(&ev).unwrap(),
            headers: vec![(
                "content-type".into(),
                docstore_events::STRUCTURED_CONTENT_TYPE.into(),
            )],
        })
        .await
        .unwrap();
    }
    let mut dlq = bus
        .subscribe(
            &format!("forged-{}", uuid::Uuid::new_v4().simple()),
            &["file.uploaded.dlq".to_owned()],
        )
        .await
        .unwrap();
    let mut letters = Vec::new();
    let start = Instant::now();
    while letters.len() < 9 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "forged events dead-lettered: {} of 9",
            letters.len()
        );
        for d in dlq.poll(100, Duration::from_millis(500)).await.unwrap() {
            dlq.ack(&d).await.unwrap();
            if d.message.key == blank.document_id {
                letters.push(d.message);
            }
        }
    }
    for m in &letters {
        let kind = m
            .headers
            .iter()
            .find(|(k, _)| k == "dlq.kind")
            .map(|(_, v)| v.as_str());
        assert_eq!(kind, Some("permanent"), "{:?}", m.headers);
    }
    let after = store
        .metadata()
        .version(&blank.document_id, Some(1))
        .await
        .unwrap();
    assert_eq!(keys(&after), before, "a forged event changed a rendition");
    for w in workers {
        w.stop();
    }
}
