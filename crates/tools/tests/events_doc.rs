//! `docs/events.md` against the wire: every JSON example in the document decodes with the strict
//! decoder, and the `file.uploaded` and `file.processed` examples have the fields, types, fixed
//! values and renditions of the events a real put and the real stages record in the outbox (the
//! bytes the relay publishes).

use std::collections::BTreeMap;
use std::sync::Arc;

use docstore::conformance::request;
use docstore::{DocStore, Identity, Kind};
use docstore_events::CloudEvent;
use docstore_pipeline::join::Joined;
use docstore_pipeline::runtime::Stage;
use docstore_stages::{Extractor, Stamper, Thumbnailer};
use serde_json::Value;

/// The first ```json block under each `### `type`` heading, by type.
fn doc_examples() -> BTreeMap<String, Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    let mut heading: Option<String> = None;
    let mut block: Option<String> = None;
    for line in text.lines() {
        if let Some(b) = block.as_mut() {
            if line == "```" {
                let json = block.take().unwrap();
                if let Some(h) = heading.take() {
                    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{h}: {e}"));
                    out.insert(h, v);
                }
            } else {
                b.push_str(line);
                b.push('\n');
            }
        } else if let Some(rest) = line.strip_prefix("### `") {
            heading = Some(rest.split('`').next().unwrap().to_owned());
        } else if line == "```json" {
            block = Some(String::new());
        }
    }
    out
}

/// Field names and JSON types, recursively; arrays element by element.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

fn outbox_event(entries: &[docstore::OutboxEntry], doc: &str, ty: &str) -> Value {
    let e = entries
        .iter()
        .find(|e| e.key == doc && e.event_type == ty)
        .unwrap_or_else(|| panic!("no {ty} for {doc}"));
    CloudEvent::decode(e.payload.as_bytes()).unwrap();
    serde_json::from_str(&e.payload).unwrap()
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What both the example and the real event must agree on beyond shape.
fn check_common(ty: &str, doc: &Value, real: &Value) {
    for ev in [doc, real] {
        let d = &ev["data"];
        assert_eq!(
            ev["id"],
            format!("{ty}:{}", d["version_id"].as_str().unwrap()),
            "{ev}"
        );
        assert_eq!(ev["subject"], d["document_id"], "{ev}");
        let time = ev["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[19..20] == ".",
            "{time}"
        );
    }
    for k in ["specversion", "source", "type", "datacontenttype"] {
        assert_eq!(doc[k], real[k], "{ty}.{k}");
    }
    assert_eq!(doc["data"]["kind"], real["data"]["kind"], "{ty}.data.kind");
    assert!(is_hex(real["data"]["sha256"].as_str().unwrap(), 64));
}

#[tokio::test]
async fn documented_examples_match_the_events_recorded() {
    let examples = doc_examples();
    // Under `exam.created`, … the example is an `exam.result.ready`: the heading names the family.
    for ty in ["file.uploaded", "file.processed", "file.deleted", "exam.created"] {
        assert!(examples.contains_key(ty), "no example under {ty}");
    }
    for (heading, ex) in &examples {
        CloudEvent::decode(ex.to_string().as_bytes()).unwrap_or_else(|e| panic!("{heading}: {e}"));
    }

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DocStore::init_local(&dir.path().join("data")).await.unwrap());
    let who = Identity::new("staff:events-doc");
    let report = docstore_tools::synthetic::Generator::new(7, "Clínica Exemplo", 3)
        .with_exams_per_report(5..=6)
        .report();
    let mut req = request(None, &report.patient_id, &report.exam_id);
    req.kind = Kind::Report;
    let pdf = store.put(&who, req, &report.pdf[..]).await.unwrap();
    let mut images = docstore_tools::synthetic::Generator::new(8, "Clínica Exemplo", 3);
    let (patient, exam, jpeg) = images.image(640, 480);
    let mut req = request(None, &patient, &exam);
    req.kind = Kind::Image;
    req.media_type = "image/jpeg".into();
    let img = store.put(&who, req, &jpeg[..]).await.unwrap();

    let required: Vec<String> = ["stamp", "text", "thumbnail"].map(String::from).into();
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(Joined::new(
            Stamper::new("Clínica Exemplo"),
            store.clone(),
            required.clone(),
        )),
        Box::new(Joined::new(Extractor::default(), store.clone(), required.clone())),
        Box::new(Joined::new(Thumbnailer::default(), store.clone(), required)),
    ];
    let pending = store.metadata().outbox_pending(10_000).await.unwrap();
    for doc in [&pdf.document_id, &img.document_id] {
        let uploaded = outbox_event(&pending, doc, "file.uploaded");
        let event = CloudEvent::decode(uploaded.to_string().as_bytes()).unwrap();
        for s in &stages {
            s.handle(&event).await.unwrap();
        }
    }
    let pending = store.metadata().outbox_pending(10_000).await.unwrap();

    let doc = &examples["file.uploaded"];
    let real = outbox_event(&pending, &pdf.document_id, "file.uploaded");
    assert_eq!(
        shape(doc),
        shape(&real),
        "file.uploaded: fields and types\n{real:#}"
    );
    check_common("file.uploaded", doc, &real);
    assert_eq!(doc["data"]["media_type"], real["data"]["media_type"]);

    let doc = &examples["file.processed"];
    let real = outbox_event(&pending, &pdf.document_id, "file.processed");
    assert_eq!(
        shape(doc),
        shape(&real),
        "file.processed: fields and types\n{real:#}"
    );
    check_common("file.processed", doc, &real);
    // Compared by stage: the list is in the order the stages finished.
    let renditions = |ev: &Value| -> Vec<(String, Value, Value)> {
        ev["data"]["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["stage"].to_string(),
                    (r["stage_version"].clone(), r["media_type"].clone()),
                )
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(stage, (v, m))| (stage, v, m))
            .collect()
    };
    assert_eq!(
        renditions(doc),
        renditions(&real),
        "stage, version, media type of each rendition"
    );
    for r in real["data"]["renditions"].as_array().unwrap() {
        let key = r["blob_key"].as_str().unwrap();
        assert!(
            key.starts_with(&format!("renditions/{}/", pdf.document_id)),
            "{key}"
        );
    }
    assert_eq!(doc["data"]["stages"], real["data"]["stages"]);
    let tp = real["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && is_hex(parts[1], 32)
            && is_hex(parts[2], 16)
            && parts[3] == "01",
        "{tp}"
    );
    let doc_tp = doc["traceparent"].as_str().unwrap();
    assert!(doc_tp.starts_with("00-") && doc_tp.ends_with("-01"), "{doc_tp}");
    assert!(real["data"]["page_count"].as_u64().unwrap() >= 2);
    assert!(real["data"]["text_length"].as_u64().unwrap() > 500);

    // An image read without OCR: no stamp, no text; neither count measured, so both null.
    let real = outbox_event(&pending, &img.document_id, "file.processed");
    let d = &real["data"];
    assert_eq!(
        (&d["page_count"], &d["text_length"]),
        (&Value::Null, &Value::Null),
        "{real:#}"
    );
    let stages: Vec<_> = d["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stage"].clone())
        .collect();
    assert_eq!(stages, ["thumbnail"], "{real:#}");
}
