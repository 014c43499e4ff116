//! Store two versions of an exam report in the embedded default and read them back, whole and by
//! range. Run: `cargo run -p docstore --example put_get`.

use docstore::{DocStore, Identity, Kind, PutRequest};

#[tokio::main]
async fn main() -> docstore::Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DocStore::init_local(&dir.path().join("data")).await?;
    let who = Identity::new("staff:example");
    let request = |document_id: Option<String>| PutRequest {
        document_id,
        patient_id: "patient-42".into(),
        exam_id: "exam-2026-0001".into(),
        kind: Kind::Report,
        media_type: "text/plain".into(),
        expected_version: None,
    };
    let v1 = store
        .put(&who, request(None), &b"Hemoglobina: 13,5 g/dL"[..])
        .await?;
    let v2 = store
        .put(
            &who,
            request(Some(v1.document_id.clone())),
            &b"Hemoglobina: 13,8 g/dL (revisado)"[..],
        )
        .await?;
    println!("stored {} v{} and v{}", v1.document_id, v1.version, v2.version);

    let latest = store.get(&who, &v1.document_id, None).await?.read_all().await?;
    println!("latest: {}", String::from_utf8_lossy(&latest));
    let first = store
        .get(&who, &v1.document_id, Some(1))
        .await?
        .read_all()
        .await?;
    println!("v1: {}", String::from_utf8_lossy(&first));
    let slice = store.get_range(&who, &v1.document_id, Some(2), 13..22).await?;
    println!("v2 bytes 13..22: {}", String::from_utf8_lossy(&slice));
    for r in store.audit_log(&who, Some(&v1.document_id), 100).await? {
        println!("audit: {} {} {}", r.action, r.outcome, r.actor);
    }
    Ok(())
}
