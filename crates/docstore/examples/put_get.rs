//! Store two versions of an exam report in the embedded default and read them back, whole and by
//! range. Run: `cargo run -p docstore --example put_get`.

use docstore::{DocStore, DocumentId, ExamId, Identity, PatientId, PutRequest};

#[tokio::main]
async fn main() -> docstore::Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DocStore::init_local(&dir.path().join("data")).await?;
    let who = Identity::new("staff:example");
    // Ids are checked once, where they are built.
    let request = PutRequest::new(PatientId::new("patient-42")?, ExamId::new("exam-2026-0001")?)
        .media_type("text/plain");
    let v1 = store
        .put(&who, request.clone(), &b"Hemoglobina: 13,5 g/dL"[..])
        .await?;
    let v2 = store
        .put(
            &who,
            request.document(DocumentId::new(&v1.document_id)?),
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
