//! The conformance suite every backend runs, in the spirit of `object_store`'s `integration.rs`.
//!
//! Each function takes a backend (or a whole [`DocStore`]) and panics with a message on the first
//! broken guarantee. Ids are fresh per call, so suites can share one server. Backends' test files
//! call these; nothing here knows which backend it runs on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::audit::AuditSink;
use crate::blob::BlobStore;
use crate::envelope::EncryptionContext;
use crate::keys::KeyProvider;
use crate::meta::{HoldChange, MetadataStore};
use crate::{
    DocStore, DocumentId, DocumentRecord, Error, ExamId, ExamRelease, Identity, IntegrityError, JoinOutcome,
    Kind, NewVersion, OutboxEntry, PatientId, ProcessingState, PutRequest, Rendition, Result, StageResult,
    Timestamp, VersionRecord,
};

fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A put request for a new or existing document.
pub fn request(document_id: Option<&str>, patient: &str, exam: &str) -> PutRequest {
    let req = PutRequest::new(
        PatientId::new(patient).expect("a test's patient id"),
        ExamId::new(exam).expect("a test's exam id"),
    );
    match document_id {
        Some(d) => req.document(DocumentId::new(d).expect("a test's document id")),
        None => req,
    }
}

/// Blob store guarantees: streaming upload, whole and ranged reads, listing, idempotent delete,
/// abort leaves nothing.
pub async fn blob_store(store: &dyn BlobStore) {
    let prefix = fresh("conformance");
    let key = format!("{prefix}/a");
    // Past the one-request read (8 MiB), over three of the local store's 4 MiB read windows and
    // into a partial fourth.
    let data = pattern(13 * 1024 * 1024 + 123, 1);
    let mut up = store.upload(&key).await.expect("upload");
    for chunk in data.chunks(100_000) {
        up.write(Bytes::copy_from_slice(chunk)).await.expect("write");
    }
    up.finish().await.expect("finish");
    assert_eq!(store.size(&key).await.unwrap(), data.len() as u64);
    let read = store.get(&key).await.unwrap();
    assert_eq!(read.size, data.len() as u64);
    let mut got = Vec::new();
    let mut s = read.stream;
    while let Some(c) = s.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert!(got == data, "whole read differs");
    assert_eq!(
        &store.get_range(&key, 5..70_000).await.unwrap()[..],
        &data[5..70_000]
    );
    let across = (4 << 20) - 10..(4 << 20) + 10;
    assert_eq!(
        &store.get_range(&key, across.clone()).await.unwrap()[..],
        &data[across.start as usize..across.end as usize]
    );

    let aborted = format!("{prefix}/aborted");
    let mut up = store.upload(&aborted).await.unwrap();
    up.write(Bytes::from_static(b"partial")).await.unwrap();
    up.abort().await.unwrap();
    let listed: Vec<String> = store
        .list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert_eq!(listed, vec![key.clone()], "abort must leave no blob");

    assert!(matches!(
        store.get(&format!("{prefix}/missing")).await,
        Err(Error::Blob { .. })
    ));
    store.delete(&key).await.unwrap();
    store
        .delete(&key)
        .await
        .expect("deleting a missing blob succeeds");
    assert!(store.list(&prefix).await.unwrap().is_empty());
}

/// Key provider guarantees: data keys unwrap only under the same context and unmodified ciphertext.
pub async fn key_provider(keys: &dyn KeyProvider) {
    let ctx = EncryptionContext::new([
        ("docstore.document", fresh("d")),
        ("docstore.version_id", fresh("v")),
    ]);
    let (key, wrapped) = keys.generate_data_key(&ctx).await.unwrap();
    let (key2, _) = keys.generate_data_key(&ctx).await.unwrap();
    assert_ne!(*key, *key2, "data keys must be fresh");
    assert_eq!(wrapped.provider, keys.name());
    assert_eq!(*keys.decrypt_data_key(&wrapped, &ctx).await.unwrap(), *key);
    let other = EncryptionContext::new([("docstore.document", "x"), ("docstore.version_id", "y")]);
    assert!(matches!(
        keys.decrypt_data_key(&wrapped, &other).await,
        Err(Error::Integrity {
            kind: IntegrityError::KeyUnwrap,
            ..
        })
    ));
    let mut bad = wrapped.clone();
    let last = bad.ciphertext.len() - 1;
    bad.ciphertext[last] ^= 1;
    assert!(keys.decrypt_data_key(&bad, &ctx).await.is_err());
}

fn new_version(doc: &str, patient: &str, exam: &str) -> NewVersion {
    let vid = crate::VersionId::generate();
    NewVersion {
        document_id: doc.into(),
        blob_key: format!("blobs/{doc}/{vid}"),
        version_id: vid,
        patient_id: patient.into(),
        exam_id: exam.into(),
        kind: Kind::Report,
        media_type: "application/pdf".into(),
        size: 3,
        sha256: [7; 32],
        created_at: Timestamp::now(),
        created_by: "conformance".into(),
        key_block: vec![1, 2, 3],
    }
}

/// Metadata store guarantees: gap-free versions, compare-and-swap, owner checks, tombstones, holds,
/// purge, queries, blob references and the outbox.
pub async fn metadata_store(meta: &dyn MetadataStore) {
    let (doc, patient, exam) = (fresh("doc"), fresh("pat"), fresh("exam"));
    assert!(matches!(meta.document(&doc).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        meta.commit_version(new_version(&doc, &patient, &exam), Some(1))
            .await,
        Err(Error::Conflict {
            expected: 1,
            actual: 0,
            ..
        })
    ));
    assert!(
        matches!(meta.document(&doc).await, Err(Error::NotFound { .. })),
        "failed CAS created a document"
    );
    let v1 = meta
        .commit_version(new_version(&doc, &patient, &exam), Some(0))
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    let v2 = meta
        .commit_version(new_version(&doc, &patient, &exam), None)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert!(matches!(
        meta.commit_version(new_version(&doc, &patient, &exam), Some(1))
            .await,
        Err(Error::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    assert!(matches!(
        meta.commit_version(new_version(&doc, "other-patient", &exam), None)
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(meta.version(&doc, None).await.unwrap(), v2);
    assert_eq!(meta.version(&doc, Some(1)).await.unwrap(), v1);
    assert!(matches!(
        meta.version(&doc, Some(3)).await,
        Err(Error::NotFound { version: Some(3), .. })
    ));
    let all = meta.versions(&doc).await.unwrap();
    assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(all[0].key_block, vec![1, 2, 3]);

    let docs = meta.documents_by_patient(&patient).await.unwrap();
    assert_eq!(
        docs.iter().map(|d| d.document_id.as_str()).collect::<Vec<_>>(),
        vec![doc.as_str()]
    );
    assert_eq!(docs[0].latest_version, 2);
    assert_eq!(meta.documents_by_exam(&exam).await.unwrap().len(), 1);
    assert!(
        meta.documents_by_patient(&fresh("nobody"))
            .await
            .unwrap()
            .is_empty()
    );

    // Key block compare-and-swap (re-wrap, shred).
    meta.replace_key_block(&doc, 1, &[1, 2, 3], &[4, 5])
        .await
        .unwrap();
    assert_eq!(meta.version(&doc, Some(1)).await.unwrap().key_block, vec![4, 5]);
    assert!(matches!(
        meta.replace_key_block(&doc, 1, &[1, 2, 3], &[6]).await,
        Err(Error::Refused { .. })
    ));
    assert!(matches!(
        meta.replace_key_block(&doc, 9, &[4, 5], &[6]).await,
        Err(Error::Refused { .. })
    ));
    meta.replace_key_block(&doc, 1, &[4, 5], &[1, 2, 3])
        .await
        .unwrap();
    let listed = meta.list_documents(None, 100_000).await.unwrap();
    assert!(
        listed.windows(2).all(|w| w[0].document_id < w[1].document_id),
        "list_documents is ordered"
    );
    assert!(listed.iter().any(|d| d.document_id == doc));
    let before = &doc[..doc.len() - 1];
    let page = meta.list_documents(Some(before), 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(page[0].document_id.as_str() > before);

    let refs = meta
        .referenced_blobs(&[v1.blob_key.clone(), "blobs/none/none".into()])
        .await
        .unwrap();
    assert_eq!(refs, HashSet::from([v1.blob_key.clone()]));

    // Outbox: one file.uploaded per version, in commit order, until marked sent.
    let pending = outbox_for(meta, &doc).await;
    assert_eq!(pending.len(), 2);
    assert!(pending[0].seq < pending[1].seq);
    for (entry, v) in pending.iter().zip([&v1, &v2]) {
        assert_eq!(entry.event_type, "file.uploaded");
        assert_eq!(entry.key, doc);
        let ev: serde_json::Value = serde_json::from_str(&entry.payload).unwrap();
        assert_eq!(ev["specversion"], "1.0");
        assert_eq!(ev["data"]["version"], v.version);
    }
    meta.outbox_mark_sent(&[pending[0].event_id.clone()])
        .await
        .unwrap();
    assert_eq!(outbox_for(meta, &doc).await.len(), 1);
    meta.outbox_mark_sent(&[pending[0].event_id.clone()])
        .await
        .unwrap();
    assert_eq!(outbox_for(meta, &doc).await.len(), 1, "re-marking is a no-op");
    meta.outbox_mark_sent(&[pending[1].event_id.clone()])
        .await
        .unwrap();
    assert!(outbox_for(meta, &doc).await.is_empty());

    // Purge rules: not before delete, not under hold or retention.
    assert!(matches!(
        meta.purge(&doc, Timestamp::now()).await,
        Err(Error::Refused { .. })
    ));
    let deleted = meta
        .set_tombstone(&doc, Some((Timestamp::now(), "t".into())))
        .await
        .unwrap();
    assert!(deleted.deleted_at.is_some());
    assert!(matches!(
        meta.commit_version(new_version(&doc, &patient, &exam), None)
            .await,
        Err(Error::Deleted { .. })
    ));
    let held = meta
        .set_hold(
            &doc,
            HoldChange {
                legal_hold: Some(true),
                retain_until: None,
            },
        )
        .await
        .unwrap();
    assert!(held.legal_hold);
    assert!(matches!(
        meta.purge(&doc, Timestamp::now()).await,
        Err(Error::Refused { .. })
    ));
    let later = Timestamp::now().plus(Duration::from_secs(3600));
    meta.set_hold(
        &doc,
        HoldChange {
            legal_hold: Some(false),
            retain_until: Some(Some(later)),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        meta.purge(&doc, Timestamp::now()).await,
        Err(Error::Refused { .. })
    ));
    assert_eq!(
        meta.versions(&doc).await.unwrap().len(),
        2,
        "refused purge removed versions"
    );
    let keys = meta
        .purge(&doc, later.plus(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(
        keys.into_iter().collect::<HashSet<_>>(),
        HashSet::from([v1.blob_key.clone(), v2.blob_key.clone()])
    );
    assert!(matches!(meta.document(&doc).await, Err(Error::NotFound { .. })));
    assert!(meta.versions(&doc).await.unwrap().is_empty());
    assert!(matches!(
        meta.set_tombstone(&doc, None).await,
        Err(Error::NotFound { .. })
    ));
    exam_releases(meta).await;
}

/// Releases: none until recorded, the first one kept (time and author), another patient refused.
async fn exam_releases(meta: &dyn MetadataStore) {
    let (exam, patient) = (fresh("exam"), fresh("pat"));
    assert_eq!(meta.exam_release(&exam).await.unwrap(), None);
    let first = ExamRelease {
        exam_id: exam.clone(),
        patient_id: patient.clone(),
        released_at: Timestamp(1_700_000_000_123),
        released_by: "staff:ana".into(),
    };
    assert_eq!(meta.record_release(&first).await.unwrap(), first);
    assert_eq!(meta.exam_release(&exam).await.unwrap().as_ref(), Some(&first));
    let again = ExamRelease {
        released_at: Timestamp(1_800_000_000_000),
        released_by: "event:evt-2".into(),
        ..first.clone()
    };
    assert_eq!(
        meta.record_release(&again).await.unwrap(),
        first,
        "the first release stays"
    );
    let other = ExamRelease {
        patient_id: fresh("pat"),
        ..first.clone()
    };
    assert!(matches!(
        meta.record_release(&other).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(meta.exam_release(&exam).await.unwrap(), Some(first));
    assert_eq!(meta.exam_release(&fresh("exam")).await.unwrap(), None);
}

fn stage_result(stage: &str, rendition: Option<&str>) -> StageResult {
    StageResult {
        stage: stage.to_owned(),
        stage_version: 1,
        renditions: rendition
            .map(|key| Rendition {
                stage: stage.to_owned(),
                stage_version: 1,
                blob_key: key.to_owned(),
                media_type: "image/png".into(),
                size: 10,
                sha256: "00".repeat(32),
                key_block: vec![7, 7, 7],
            })
            .into_iter()
            .collect(),
        page_count: Some(2),
        text_length: None,
        recorded_at: Timestamp::now(),
    }
}

/// Crypto-shredding in the store's write: the version's key block and every rendition's are
/// emptied together; a stage finishing after the shred, or after a delete, records nothing; a
/// legal hold or retention date refuses the shred inside the write.
pub async fn shred_write(meta: &dyn MetadataStore) {
    let (doc, patient, exam) = (fresh("shred"), fresh("pat"), fresh("exam"));
    let v1 = meta
        .commit_version(new_version(&doc, &patient, &exam), None)
        .await
        .unwrap();
    let required: Vec<String> = vec!["thumbnail".into(), "text".into()];
    for stage in ["thumbnail", "text"] {
        let key = fresh("rendition");
        meta.record_stage(&doc, 1, stage_result(stage, Some(&key)), &required)
            .await
            .unwrap();
    }
    let before = meta.version(&doc, Some(1)).await.unwrap();
    assert_eq!(before.renditions.len(), 2);
    assert!(before.renditions.iter().all(|r| !r.key_block.is_empty()));

    // A hold refuses the shred, and nothing changes.
    let hold = |on: bool| HoldChange {
        legal_hold: Some(on),
        retain_until: None,
    };
    meta.set_hold(&doc, hold(true)).await.unwrap();
    assert!(matches!(
        meta.replace_key_block(&doc, 1, &v1.key_block, &[]).await,
        Err(Error::Refused { .. })
    ));
    meta.set_hold(&doc, hold(false)).await.unwrap();
    let retained = HoldChange {
        legal_hold: None,
        retain_until: Some(Some(Timestamp::now().plus(Duration::from_secs(3600)))),
    };
    meta.set_hold(&doc, retained).await.unwrap();
    assert!(matches!(
        meta.replace_key_block(&doc, 1, &v1.key_block, &[]).await,
        Err(Error::Refused { .. })
    ));
    let unretained = HoldChange {
        legal_hold: None,
        retain_until: Some(None),
    };
    meta.set_hold(&doc, unretained).await.unwrap();
    assert_eq!(meta.version(&doc, Some(1)).await.unwrap(), before);

    meta.replace_key_block(&doc, 1, &v1.key_block, &[]).await.unwrap();
    let after = meta.version(&doc, Some(1)).await.unwrap();
    assert!(after.key_block.is_empty());
    assert_eq!(
        after.renditions.len(),
        2,
        "descriptors stay, for deleting the ciphertext"
    );
    assert!(
        after.renditions.iter().all(|r| r.key_block.is_empty()),
        "a rendition key block survived the shred"
    );
    // A stage that finishes after the shred records no rendition.
    assert!(matches!(
        meta.record_stage(&doc, 1, stage_result("stamp", Some(&fresh("late"))), &required)
            .await,
        Err(Error::Refused { .. })
    ));
    assert_eq!(meta.version(&doc, Some(1)).await.unwrap(), after);

    // A stage that finishes after a soft delete records nothing either.
    let gone = fresh("shred");
    meta.commit_version(new_version(&gone, &patient, &exam), None)
        .await
        .unwrap();
    meta.set_tombstone(&gone, Some((Timestamp::now(), "staff:x".into())))
        .await
        .unwrap();
    assert!(matches!(
        meta.record_stage(
            &gone,
            1,
            stage_result("thumbnail", Some(&fresh("late"))),
            &required
        )
        .await,
        Err(Error::Refused { .. })
    ));
    assert!(meta.version(&gone, Some(1)).await.unwrap().renditions.is_empty());
}

/// The `file.processed` join: stage results accumulate idempotently, the version completes once
/// every required stage recorded success, and of concurrent completions exactly one records the
/// `file.processed` outbox entry (in the same write). Renditions are referenced for gc and purge.
pub async fn processing_join(meta: &dyn MetadataStore) {
    let (doc, patient, exam) = (fresh("join"), fresh("pat"), fresh("exam"));
    let v1 = meta
        .commit_version(new_version(&doc, &patient, &exam), None)
        .await
        .unwrap();
    let required: Vec<String> = vec!["thumbnail".into(), "verify".into()];
    let processed = |entries: Vec<OutboxEntry>| {
        entries
            .into_iter()
            .filter(|e| e.event_type == crate::outbox::FILE_PROCESSED)
            .collect::<Vec<_>>()
    };

    let thumb_key = fresh("rendition");
    let first = meta
        .record_stage(&doc, 1, stage_result("thumbnail", Some(&thumb_key)), &required)
        .await
        .unwrap();
    assert!(!first.completed_now);
    assert_eq!(first.missing, vec!["verify".to_owned()]);
    assert_eq!(first.state, ProcessingState::Pending);
    // Re-recording the same stage (a redelivery) changes nothing and completes nothing.
    let again = meta
        .record_stage(&doc, 1, stage_result("thumbnail", Some(&thumb_key)), &required)
        .await
        .unwrap();
    assert!(!again.completed_now);
    let v = meta.version(&doc, Some(1)).await.unwrap();
    assert_eq!(v.renditions.len(), 1, "re-recording duplicated a rendition");
    assert!(processed(outbox_for(meta, &doc).await).is_empty());

    let done = meta
        .record_stage(&doc, 1, stage_result("verify", None), &required)
        .await
        .unwrap();
    assert_eq!(
        done,
        JoinOutcome {
            completed_now: true,
            state: ProcessingState::Processed,
            missing: vec![],
        }
    );
    let v = meta.version(&doc, Some(1)).await.unwrap();
    assert_eq!(v.state, ProcessingState::Processed);
    assert_eq!(v.renditions[0].blob_key, thumb_key);
    let events = processed(outbox_for(meta, &doc).await);
    assert_eq!(events.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(body["type"], "file.processed");
    assert_eq!(body["data"]["version_id"], v1.version_id.as_str());
    assert_eq!(body["data"]["page_count"], 2);
    assert_eq!(body["data"]["renditions"][0]["blob_key"], thumb_key.as_str());
    // A late redelivery after completion: recorded, but no second event.
    let late = meta
        .record_stage(&doc, 1, stage_result("verify", None), &required)
        .await
        .unwrap();
    assert!(!late.completed_now);
    assert_eq!(processed(outbox_for(meta, &doc).await).len(), 1);
    assert!(
        meta.referenced_blobs(std::slice::from_ref(&thumb_key))
            .await
            .unwrap()
            .contains(&thumb_key),
        "a recorded rendition is not referenced (gc would delete it)"
    );

    // Concurrent completions of one version: exactly one wins.
    meta.commit_version(new_version(&doc, &patient, &exam), None)
        .await
        .unwrap();
    let stages: Vec<String> = (0..12).map(|i| format!("stage{i:02}")).collect();
    let outcomes = futures::future::join_all(
        stages
            .iter()
            .map(|st| meta.record_stage(&doc, 2, stage_result(st, None), &stages)),
    )
    .await;
    let winners = outcomes
        .into_iter()
        .map(|o| o.unwrap())
        .filter(|o| o.completed_now)
        .count();
    assert_eq!(winners, 1, "concurrent stage completions");
    assert_eq!(
        meta.version(&doc, Some(2)).await.unwrap().state,
        ProcessingState::Processed
    );
    assert_eq!(processed(outbox_for(meta, &doc).await).len(), 2);

    assert!(matches!(
        meta.record_stage(&doc, 9, stage_result("verify", None), &required)
            .await,
        Err(Error::NotFound { version: Some(9), .. })
    ));
    assert!(matches!(
        meta.record_stage(&fresh("nodoc"), 1, stage_result("verify", None), &required)
            .await,
        Err(Error::NotFound { .. })
    ));
    // Purge releases the renditions' blobs too.
    meta.set_tombstone(&doc, Some((Timestamp::now(), "test".into())))
        .await
        .unwrap();
    let keys = meta.purge(&doc, Timestamp::now()).await.unwrap();
    assert!(keys.contains(&thumb_key), "purge forgot a rendition blob");
    let ids: Vec<String> = outbox_for(meta, &doc)
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    meta.outbox_mark_sent(&ids).await.unwrap();
}

async fn outbox_for(meta: &dyn MetadataStore, doc: &str) -> Vec<OutboxEntry> {
    let mut out = Vec::new();
    // Other suites may share the store: scan a generous window and keep this document's entries.
    for e in meta.outbox_pending(100_000).await.unwrap() {
        if e.key == doc {
            out.push(e);
        }
    }
    out
}

/// Whole-store guarantees through the public API: round trips across frame boundaries, versions,
/// ranged reads, typed errors for bad input, delete/restore/purge rules, and audit records.
pub async fn docstore(store: &DocStore) {
    let who = Identity::new("staff:conformance");
    let (patient, exam) = (fresh("pat"), fresh("exam"));
    let body1 = pattern(3 * 64 * 1024 + 17, 11);
    let v1 = store
        .put(&who, request(None, &patient, &exam), &body1[..])
        .await
        .expect("put v1");
    let doc = v1.document_id.clone();
    assert_eq!((v1.version, v1.size), (1, body1.len() as u64));
    assert_eq!(v1.sha256, sha256_hex(&body1));
    let body2 = pattern(64 * 1024, 12);
    let v2 = store
        .put(&who, request(Some(&doc), &patient, &exam), &body2[..])
        .await
        .unwrap();
    assert_eq!(v2.version, 2);

    let latest = store.get(&who, &doc, None).await.unwrap();
    assert_eq!(latest.record.version, 2);
    assert!(latest.read_all().await.unwrap()[..] == body2[..]);
    let first = store
        .get(&who, &doc, Some(1))
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert!(first[..] == body1[..]);
    for (a, b) in [
        (0u64, 1u64),
        (65_535, 65_537),
        (65_536, 131_072),
        (100, body1.len() as u64 - 1),
    ] {
        let got = store.get_range(&who, &doc, Some(1), a..b).await.unwrap();
        assert!(got[..] == body1[a as usize..b as usize], "range {a}..{b}");
    }
    assert!(matches!(
        store.get_range(&who, &doc, Some(1), 5..5).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store
            .get_range(&who, &doc, Some(1), 0..body1.len() as u64 + 1)
            .await,
        Err(Error::InvalidInput(_))
    ));
    let versions = store.versions(&who, &doc).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);

    // Bad input and unknown things: typed errors, nothing stored.
    assert!(matches!(
        store
            .put(&who, request(Some(&doc), &patient, &exam), &b""[..])
            .await,
        Err(Error::InvalidInput(_))
    ));
    // A bad id cannot reach the store: it is refused where it is built.
    assert!(matches!(
        DocumentId::new("bad id/.."),
        Err(Error::InvalidInput(_))
    ));
    let mut cas = request(Some(&doc), &patient, &exam);
    cas.expected_version = Some(1);
    assert!(matches!(
        store.put(&who, cas, &b"late"[..]).await,
        Err(Error::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    assert_eq!(store.versions(&who, &doc).await.unwrap().len(), 2);
    assert!(matches!(
        store.get(&who, &fresh("nodoc"), None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&who, &doc, Some(9)).await,
        Err(Error::NotFound { version: Some(9), .. })
    ));

    let listed: Vec<DocumentRecord> = store.documents_of_patient(&who, &patient).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        store.documents_of_exam(&who, &exam).await.unwrap()[0].document_id,
        doc
    );

    // Tombstone, restore, hold, purge.
    store.delete(&who, &doc).await.unwrap();
    assert!(matches!(
        store.get(&who, &doc, None).await,
        Err(Error::Deleted { .. })
    ));
    assert!(matches!(
        store.get_range(&who, &doc, None, 0..1).await,
        Err(Error::Deleted { .. })
    ));
    store.restore(&who, &doc).await.unwrap();
    assert!(
        store
            .get(&who, &doc, None)
            .await
            .unwrap()
            .read_all()
            .await
            .unwrap()[..]
            == body2[..]
    );
    store
        .set_hold(
            &who,
            &doc,
            HoldChange {
                legal_hold: Some(true),
                retain_until: None,
            },
        )
        .await
        .unwrap();
    store.delete(&who, &doc).await.unwrap();
    assert!(matches!(
        store.purge(&who, &doc).await,
        Err(Error::Refused { .. })
    ));
    assert_eq!(
        store.versions(&who, &doc).await.unwrap().len(),
        2,
        "refused purge changed something"
    );
    store
        .set_hold(
            &who,
            &doc,
            HoldChange {
                legal_hold: Some(false),
                retain_until: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(store.purge(&who, &doc).await.unwrap(), 2);
    assert!(matches!(
        store.versions(&who, &doc).await,
        Err(Error::NotFound { .. })
    ));
    for v in [&v1, &v2] {
        assert!(
            store.blobs().get(&v.blob_key).await.is_err(),
            "purge left {}",
            v.blob_key
        );
    }

    // Audit: every call above left a record naming the caller; failures record their class.
    let trail = store.audit_log(&who, Some(&doc), 10_000).await.unwrap();
    let actions: HashSet<&str> = trail.iter().map(|r| r.action.as_str()).collect();
    for a in [
        "put",
        "get",
        "get_range",
        "versions",
        "delete",
        "restore",
        "hold",
        "purge",
        "key_generate",
        "key_unwrap",
    ] {
        assert!(actions.contains(a), "no audit record for {a}");
    }
    assert!(trail.iter().all(|r| r.actor == who.subject));
    assert!(
        trail
            .iter()
            .any(|r| r.action == "purge" && r.outcome == "refused")
    );
    assert!(trail.iter().any(|r| r.action == "put" && r.outcome == "conflict"));
    renditions(store).await;
    deletion_events(store).await;
}

/// Renditions: stored encrypted under their own key, recorded through the join, read back intact,
/// refused whenever their version is unreadable (deleted, shredded), never named with keys in
/// events.
async fn renditions(store: &DocStore) {
    let who = Identity::new("service:thumbnail-worker");
    let (patient, exam) = (fresh("pat"), fresh("exam"));
    let body = pattern(70_000, 11);
    let v1 = store
        .put(&who, request(None, &patient, &exam), &body[..])
        .await
        .unwrap();
    let doc = v1.document_id.clone();
    let thumb = pattern(9_000, 12);
    let r = store
        .put_rendition(
            &who,
            &doc,
            1,
            &crate::RenditionSpec {
                stage: "thumbnail".into(),
                stage_version: 1,
                media_type: "image/png".into(),
            },
            &thumb[..],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.size, r.sha256.clone()),
        (thumb.len() as u64, sha256_hex(&thumb))
    );
    assert!(!r.key_block.is_empty());
    let size = store.blobs().size(&r.blob_key).await.unwrap();
    let raw = store.blobs().get_range(&r.blob_key, 0..size).await.unwrap();
    assert!(
        !raw.windows(64).any(|w| thumb.windows(64).next() == Some(w)),
        "rendition stored in the clear"
    );
    // Not recorded yet: not readable.
    assert!(matches!(
        store.get_rendition(&who, &doc, 1, "thumbnail").await,
        Err(Error::NotFound { .. })
    ));
    let result = StageResult {
        stage: "thumbnail".into(),
        stage_version: 1,
        renditions: vec![r.clone()],
        page_count: None,
        text_length: None,
        recorded_at: Timestamp::now(),
    };
    let outcome = store
        .record_stage(&who, &doc, 1, result, &["thumbnail".to_owned()])
        .await
        .unwrap();
    assert!(outcome.completed_now);
    let back = store
        .get_rendition(&who, &doc, 1, "thumbnail")
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert_eq!(&back[..], &thumb[..]);
    assert_eq!(
        store.metadata().version(&doc, Some(1)).await.unwrap().renditions[0].key_block,
        r.key_block,
        "the key block survives the metadata round trip"
    );
    let events = outbox_for(store.metadata().as_ref(), &doc).await;
    let processed = events
        .iter()
        .find(|e| e.event_type == crate::outbox::FILE_PROCESSED)
        .expect("file.processed recorded");
    assert!(processed.payload.contains(&r.blob_key));
    assert!(
        !processed.payload.contains("key_block"),
        "an event carries a wrapped key"
    );

    // An empty rendition (the text of a blank page) is a result: stored, recorded, read back
    // empty. A version, by contrast, must have content.
    let blank = store
        .put_rendition(
            &who,
            &doc,
            1,
            &crate::RenditionSpec {
                stage: "text".into(),
                stage_version: 1,
                media_type: "text/plain; charset=utf-8".into(),
            },
            &b""[..],
        )
        .await
        .expect("an empty rendition is stored");
    assert_eq!((blank.size, blank.sha256.as_str()), (0, sha256_hex(b"").as_str()));
    let text = StageResult {
        stage: "text".into(),
        stage_version: 1,
        renditions: vec![blank],
        page_count: Some(1),
        text_length: Some(0),
        recorded_at: Timestamp::now(),
    };
    store
        .record_stage(&who, &doc, 1, text, &["thumbnail".to_owned()])
        .await
        .unwrap();
    let empty = store
        .get_rendition(&who, &doc, 1, "text")
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert!(empty.is_empty());
    assert!(matches!(
        store
            .put(&who, request(Some(&doc), &patient, &exam), &b""[..])
            .await,
        Err(Error::InvalidInput(_))
    ));

    // A rendition is bound to its (version, stage, stage version): another stage's name fails.
    assert!(matches!(
        store.get_rendition(&who, &doc, 1, "stamp").await,
        Err(Error::NotFound { .. })
    ));
    store.delete(&who, &doc).await.unwrap();
    assert!(matches!(
        store.get_rendition(&who, &doc, 1, "thumbnail").await,
        Err(Error::Deleted { .. })
    ));
    store.restore(&who, &doc).await.unwrap();
    store.shred(&who, &doc, 1).await.unwrap();
    assert!(matches!(
        store.get_rendition(&who, &doc, 1, "thumbnail").await,
        Err(Error::Shredded { .. })
    ));
    assert!(
        store.blobs().size(&r.blob_key).await.is_err(),
        "shred left rendition ciphertext"
    );
    let ids: Vec<String> = events.into_iter().map(|e| e.event_id).collect();
    store.metadata().outbox_mark_sent(&ids).await.unwrap();
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// `writers` tasks each put `puts` versions of one document at once, spread round-robin over
/// `stores` (separate instances model separate processes): versions must be exactly
/// 1..=writers×puts, each body readable back under its own number.
pub async fn concurrent_writers(stores: &[DocStore], writers: usize, puts: usize) {
    let (patient, exam) = (fresh("pat"), fresh("exam"));
    let who = Identity::new("staff:concurrency");
    let doc = fresh("doc");
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = stores[w % stores.len()].clone();
        let (doc, patient, exam, who) = (doc.clone(), patient.clone(), exam.clone(), who.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for p in 0..puts {
                let body = format!("writer {w} put {p}");
                let rec = store
                    .put(&who, request(Some(&doc), &patient, &exam), body.as_bytes())
                    .await
                    .expect("concurrent put");
                mine.push((rec.version, body));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    let total = (writers * puts) as u64;
    let numbers: HashSet<u64> = all.iter().map(|(v, _)| *v).collect();
    assert_eq!(numbers.len() as u64, total, "duplicate version numbers");
    assert_eq!(
        numbers,
        (1..=total).collect::<HashSet<_>>(),
        "gaps in version numbers"
    );
    let store = &stores[0];
    let listed = store.versions(&who, &doc).await.unwrap();
    assert_eq!(
        listed.iter().map(|v| v.version).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for (v, body) in all.iter().step_by(37) {
        let got = store
            .get(&who, &doc, Some(*v))
            .await
            .unwrap()
            .read_all()
            .await
            .unwrap();
        assert_eq!(
            &got[..],
            body.as_bytes(),
            "version {v} holds another writer's body"
        );
    }
}

/// Deleting, restoring, shredding and purging each record one `file.deleted` outbox entry (with
/// its reason) in the write that makes the change, so consumers mirroring the store (the search
/// index) hear of it.
async fn deletion_events(store: &DocStore) {
    let who = Identity::new("staff:conformance");
    let (patient, exam) = (fresh("pat"), fresh("exam"));
    let v1 = store
        .put(&who, request(None, &patient, &exam), &pattern(1000, 1)[..])
        .await
        .unwrap();
    let doc = v1.document_id.clone();
    store
        .put(&who, request(Some(&doc), &patient, &exam), &pattern(1000, 2)[..])
        .await
        .unwrap();
    let events = |store: DocStore, doc: String| async move {
        let mut out: Vec<(Option<u64>, String)> = store
            .metadata()
            .outbox_pending(100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.key == doc && e.event_type == crate::outbox::FILE_DELETED)
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                assert_eq!(v["type"], "file.deleted");
                assert_eq!(v["data"]["document_id"], doc.as_str());
                (
                    v["data"]["version"].as_u64(),
                    v["data"]["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    store.shred(&who, &doc, 1).await.unwrap();
    store.delete(&who, &doc).await.unwrap();
    store.restore(&who, &doc).await.unwrap();
    store.delete(&who, &doc).await.unwrap();
    let mut got = events(store.clone(), doc.clone()).await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (None, "deleted".to_owned()),
            (None, "deleted".to_owned()),
            (None, "restored".to_owned()),
            (Some(1), "shredded".to_owned()),
        ]
    );
    store.purge(&who, &doc).await.unwrap();
    let got = events(store.clone(), doc.clone()).await;
    assert_eq!(got.iter().filter(|(_, r)| r == "purged").count(), 1, "{got:?}");
    // Re-wrapping (a key block replaced by another, not emptied) announces nothing.
    assert_eq!(got.len(), 5);
}

/// Re-wrap and crypto-shredding: `store` (reading with its own provider) moves two documents to
/// `target`; `retire_old` then makes the old key unusable (delete the keyring, disable the KMS key);
/// every version must still read through `target` with unchanged digests and blobs, a second pass
/// must find nothing to do, and a shredded version must be unreadable for good.
pub async fn rewrap_and_shred<F: Future<Output = ()>>(
    store: &DocStore,
    target: Arc<dyn KeyProvider>,
    retire_old: F,
) {
    let who = Identity::new("staff:keys");
    let (patient, exam) = (fresh("pat"), fresh("exam"));
    let mut docs = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..2u64 {
        let a = store
            .put(&who, request(None, &patient, &exam), &pattern(70_000, i)[..])
            .await
            .unwrap();
        let b = store
            .put(
                &who,
                request(Some(&a.document_id), &patient, &exam),
                &pattern(1000, 10 + i)[..],
            )
            .await
            .unwrap();
        bodies.push((a.clone(), pattern(70_000, i)));
        bodies.push((b, pattern(1000, 10 + i)));
        docs.push(a.document_id);
    }
    let blob_bytes = |s: &DocStore, key: String| {
        let s = s.clone();
        async move {
            let mut out = Vec::new();
            let mut st = s.blobs().get(&key).await.unwrap().stream;
            while let Some(c) = st.next().await {
                out.extend_from_slice(&c.unwrap());
            }
            out
        }
    };
    let before: Vec<Vec<u8>> =
        futures::future::join_all(bodies.iter().map(|(r, _)| blob_bytes(store, r.blob_key.clone()))).await;
    // A rendition of the first document's v2: its own key block must move too.
    let thumb = pattern(5_000, 42);
    let (with_rendition, _) = &bodies[1];
    let rendition = store
        .put_rendition(
            &who,
            &with_rendition.document_id,
            with_rendition.version,
            &crate::RenditionSpec {
                stage: "thumbnail".into(),
                stage_version: 1,
                media_type: "image/png".into(),
            },
            &thumb[..],
        )
        .await
        .unwrap();
    let result = StageResult {
        stage: "thumbnail".into(),
        stage_version: 1,
        renditions: vec![rendition.clone()],
        page_count: None,
        text_length: None,
        recorded_at: Timestamp::now(),
    };
    store
        .record_stage(
            &who,
            &with_rendition.document_id,
            with_rendition.version,
            result,
            &[],
        )
        .await
        .unwrap();

    let report = store.rewrap(&who, target.clone(), &docs, None).await.unwrap();
    assert_eq!(
        (report.rewrapped, report.already, report.renditions_rewrapped),
        (4, 0, 1),
        "{report:?}"
    );
    retire_old.await;
    let moved = DocStore::new(
        store.blobs().clone(),
        store.metadata().clone(),
        target.clone(),
        store.audit_sink().clone(),
    );
    for ((rec, body), blob) in bodies.iter().zip(&before) {
        let got = moved
            .get(&who, &rec.document_id, Some(rec.version))
            .await
            .unwrap()
            .read_all()
            .await
            .unwrap();
        assert!(got[..] == body[..], "content changed by rewrap");
        assert_eq!(
            &blob_bytes(&moved, rec.blob_key.clone()).await,
            blob,
            "rewrap touched the blob"
        );
        let now = moved
            .metadata()
            .version(&rec.document_id, Some(rec.version))
            .await
            .unwrap();
        assert_eq!(
            (now.sha256.as_str(), now.blob_key.as_str()),
            (rec.sha256.as_str(), rec.blob_key.as_str())
        );
        assert_ne!(now.key_block, rec.key_block, "key block not replaced");
    }
    let thumb_back = moved
        .get_rendition(
            &who,
            &with_rendition.document_id,
            with_rendition.version,
            "thumbnail",
        )
        .await
        .expect("rendition readable through the target after the old key was retired")
        .read_all()
        .await
        .unwrap();
    assert!(thumb_back[..] == thumb[..], "rendition changed by rewrap");
    let now = moved
        .metadata()
        .version(&with_rendition.document_id, Some(with_rendition.version))
        .await
        .unwrap();
    assert_eq!(now.renditions.len(), 1);
    assert_eq!(
        now.renditions[0].blob_key, rendition.blob_key,
        "rewrap touched the rendition blob"
    );
    assert_ne!(
        now.renditions[0].key_block, rendition.key_block,
        "rendition key block not replaced"
    );
    let again = moved.rewrap(&who, target.clone(), &docs, None).await.unwrap();
    assert_eq!(
        (again.rewrapped, again.already, again.renditions_rewrapped),
        (0, 4, 0),
        "second pass must be a no-op: {again:?}"
    );

    // Shred v1 of the first document: unreadable, whole or ranged; v2 unaffected; audited.
    let (victim, _) = &bodies[0];
    let old_block = moved
        .metadata()
        .version(&victim.document_id, Some(1))
        .await
        .unwrap()
        .key_block;
    let shredded = moved.shred(&who, &victim.document_id, 1).await.unwrap();
    assert!(shredded.key_block.is_empty());
    assert!(matches!(
        moved.get(&who, &victim.document_id, Some(1)).await,
        Err(Error::Shredded { version: 1, .. })
    ));
    assert!(matches!(
        moved.get_range(&who, &victim.document_id, Some(1), 0..10).await,
        Err(Error::Shredded { .. })
    ));
    assert!(
        matches!(
            store.get(&who, &victim.document_id, Some(1)).await,
            Err(Error::Shredded { .. })
        ),
        "the old provider cannot read it either"
    );
    let blob = blob_bytes(&moved, victim.blob_key.clone()).await;
    for k in crate::keys::decode_key_block(&old_block).unwrap() {
        assert!(
            !blob
                .windows(k.ciphertext.len())
                .any(|w| w == k.ciphertext.as_slice()),
            "wrapped key copy in blob"
        );
    }
    moved
        .get(&who, &victim.document_id, Some(2))
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    let after_shred = moved.rewrap(&who, target.clone(), &docs, None).await.unwrap();
    assert_eq!(after_shred.shredded, 1);
    // Shredding is refused under legal hold.
    moved
        .set_hold(
            &who,
            &victim.document_id,
            HoldChange {
                legal_hold: Some(true),
                retain_until: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        moved.shred(&who, &victim.document_id, 2).await,
        Err(Error::Refused { .. })
    ));
    let trail = moved
        .audit_log(&who, Some(&victim.document_id), 1000)
        .await
        .unwrap();
    assert!(trail.iter().any(|r| r.action == "shred" && r.outcome == "ok"));
    assert!(trail.iter().any(|r| r.action == "get" && r.outcome == "shredded"));
}

/// A metadata store with one fault over another: commits that never return (dropping the put
/// future models a crash between the blob write and the metadata commit), or rendition swaps
/// refused as if a stage had recorded one meanwhile.
#[derive(Debug)]
struct Faulty(Arc<dyn MetadataStore>, Fault);

#[derive(Debug)]
enum Fault {
    StallCommits,
    /// Refuses this many rendition swaps, counting the calls.
    RefuseRenditionSwaps(usize, std::sync::atomic::AtomicUsize),
}

#[async_trait]
impl MetadataStore for Faulty {
    async fn commit_version(&self, new: NewVersion, expected: Option<u64>) -> Result<VersionRecord> {
        match self.1 {
            Fault::StallCommits => futures::future::pending().await,
            _ => self.0.commit_version(new, expected).await,
        }
    }
    async fn document(&self, d: &str) -> Result<DocumentRecord> {
        self.0.document(d).await
    }
    async fn version(&self, d: &str, v: Option<u64>) -> Result<VersionRecord> {
        self.0.version(d, v).await
    }
    async fn versions(&self, d: &str) -> Result<Vec<VersionRecord>> {
        self.0.versions(d).await
    }
    async fn set_tombstone(&self, d: &str, t: Option<(Timestamp, String)>) -> Result<DocumentRecord> {
        self.0.set_tombstone(d, t).await
    }
    async fn set_hold(&self, d: &str, c: HoldChange) -> Result<DocumentRecord> {
        self.0.set_hold(d, c).await
    }
    async fn purge(&self, d: &str, now: Timestamp) -> Result<Vec<String>> {
        self.0.purge(d, now).await
    }
    async fn documents_by_patient(&self, p: &str) -> Result<Vec<DocumentRecord>> {
        self.0.documents_by_patient(p).await
    }
    async fn documents_by_exam(&self, e: &str) -> Result<Vec<DocumentRecord>> {
        self.0.documents_by_exam(e).await
    }
    async fn replace_key_block(&self, d: &str, v: u64, e: &[u8], n: &[u8]) -> Result<()> {
        self.0.replace_key_block(d, v, e, n).await
    }
    async fn replace_renditions(&self, d: &str, v: u64, e: &[Rendition], n: &[Rendition]) -> Result<()> {
        if let Fault::RefuseRenditionSwaps(refuse, calls) = &self.1
            && calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < *refuse
        {
            return Err(Error::Refused {
                document: d.to_owned(),
                reason: "renditions changed meanwhile (injected)".into(),
            });
        }
        self.0.replace_renditions(d, v, e, n).await
    }
    async fn list_documents(&self, a: Option<&str>, l: usize) -> Result<Vec<DocumentRecord>> {
        self.0.list_documents(a, l).await
    }
    async fn referenced_blobs(&self, k: &[String]) -> Result<HashSet<String>> {
        self.0.referenced_blobs(k).await
    }
    async fn outbox_pending(&self, l: usize) -> Result<Vec<OutboxEntry>> {
        self.0.outbox_pending(l).await
    }
    async fn outbox_mark_sent(&self, s: &[String]) -> Result<()> {
        self.0.outbox_mark_sent(s).await
    }
    async fn record_stage(&self, d: &str, v: u64, r: StageResult, req: &[String]) -> Result<JoinOutcome> {
        self.0.record_stage(d, v, r, req).await
    }
    async fn record_release(&self, r: &ExamRelease) -> Result<ExamRelease> {
        self.0.record_release(r).await
    }
    async fn exam_release(&self, e: &str) -> Result<Option<ExamRelease>> {
        self.0.exam_release(e).await
    }
}

/// A rewrap whose rendition swap is refused (a stage recorded a rendition meanwhile) reads the
/// version again and retries, up to three attempts in all; when every attempt is refused the
/// refusal is the rewrap's error, not a silent success.
pub async fn rendition_swap_retries(
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    keys: Arc<dyn KeyProvider>,
    audit: Arc<dyn AuditSink>,
    target: Arc<dyn KeyProvider>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let who = Identity::new("staff:retry");
    for (refused, calls, ok) in [(1, 2, true), (2, 3, true), (usize::MAX, 3, false)] {
        let faulty = Arc::new(Faulty(
            meta.clone(),
            Fault::RefuseRenditionSwaps(refused, AtomicUsize::new(0)),
        ));
        let store = DocStore::new(blobs.clone(), faulty.clone(), keys.clone(), audit.clone());
        let v = store
            .put(
                &who,
                request(None, &fresh("pat"), &fresh("exam")),
                &pattern(3000, 7)[..],
            )
            .await
            .unwrap();
        let spec = crate::RenditionSpec {
            stage: "thumbnail".into(),
            stage_version: 1,
            media_type: "image/png".into(),
        };
        let rendition = store
            .put_rendition(&who, &v.document_id, v.version, &spec, &pattern(500, 8)[..])
            .await
            .unwrap();
        let result = StageResult {
            stage: "thumbnail".into(),
            stage_version: 1,
            renditions: vec![rendition],
            page_count: None,
            text_length: None,
            recorded_at: Timestamp::now(),
        };
        store
            .record_stage(&who, &v.document_id, v.version, result, &[])
            .await
            .unwrap();
        let outcome = store
            .rewrap(&who, target.clone(), &[v.document_id.to_string()], None)
            .await;
        let Fault::RefuseRenditionSwaps(_, seen) = &faulty.1 else {
            unreachable!("built with refusals")
        };
        assert_eq!(
            seen.load(Ordering::SeqCst),
            calls,
            "swaps tried with {refused} refused"
        );
        match outcome {
            Ok(report) if ok => assert_eq!(report.renditions_rewrapped, 1, "{report:?}"),
            Err(Error::Refused { .. }) if !ok => {}
            other => panic!("{refused} refused: {other:?}"),
        }
    }
}

/// A crash between blob write and metadata commit leaves no record and one orphan blob, which `gc`
/// keeps during the grace period and removes after it. `blobs` must hold no other blob under
/// [`crate::BLOB_PREFIX`] for the counts to hold.
pub async fn crash_before_commit(
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    keys: Arc<dyn KeyProvider>,
    audit: Arc<dyn AuditSink>,
) {
    let who = Identity::new("staff:crash");
    let crashing = DocStore::new(
        blobs.clone(),
        Arc::new(Faulty(meta.clone(), Fault::StallCommits)),
        keys.clone(),
        audit.clone(),
    );
    let doc = fresh("doc");
    let body = pattern(200_000, 3);
    let put = crashing.put(&who, request(Some(&doc), "pat-crash", "exam-crash"), &body[..]);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), put)
            .await
            .is_err(),
        "the stalled commit should not return"
    );
    let store = DocStore::new(blobs.clone(), meta, keys, audit);
    assert!(matches!(
        store.get(&who, &doc, None).await,
        Err(Error::NotFound { .. })
    ));
    let orphans = blobs
        .list(&format!("{}/{doc}", crate::BLOB_PREFIX))
        .await
        .unwrap();
    assert_eq!(orphans.len(), 1, "the blob is written before the commit");
    let kept = store.gc(&who, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        (kept.removed, kept.young_orphans),
        (0, 1),
        "young orphans are kept"
    );
    // Let the orphan age past a zero grace period (mtime granularity).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let swept = store.gc(&who, Duration::ZERO).await.unwrap();
    assert_eq!(swept.removed, 1);
    assert!(
        blobs
            .list(&format!("{}/{doc}", crate::BLOB_PREFIX))
            .await
            .unwrap()
            .is_empty()
    );
    // Committed documents survive gc.
    let v = store
        .put(&who, request(None, "pat-crash", "exam-crash"), &body[..])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.gc(&who, Duration::ZERO).await.unwrap().removed, 0);
    assert!(
        store
            .get(&who, &v.document_id, None)
            .await
            .unwrap()
            .read_all()
            .await
            .unwrap()[..]
            == body[..]
    );
}

/// A new, empty PostgreSQL database (`PREFIX_<uuid>`) on the server of `url`, and its URL: for
/// tests whose relay publishes a whole outbox, which must not see the other tests' entries.
///
/// # Panics
/// If the server refuses (a test helper: the test fails there).
#[cfg(feature = "postgres")]
pub async fn fresh_pg_database(url: &str, prefix: &str) -> String {
    use sqlx::Connection;
    let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a PostgreSQL URL ends in /DATABASE");
    format!("{base}/{db}")
}

/// A new KMS key behind a fresh alias (`alias/PREFIX-<uuid>`) on the endpoint of `settings`, and
/// the alias: for tests and benches that need a key of their own on a shared KMS (moto).
///
/// # Panics
/// If KMS refuses (a test helper: the test fails there).
#[cfg(feature = "aws")]
pub async fn fresh_kms_alias(settings: &crate::aws::AwsSettings, prefix: &str) -> String {
    let kms = settings.kms_client();
    let key = kms.create_key().send().await.expect("create a KMS key");
    let alias = format!("alias/{prefix}-{}", uuid::Uuid::new_v4().simple());
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(key.key_metadata().expect("key metadata").key_id())
        .send()
        .await
        .expect("create a KMS alias");
    alias
}

/// The environment a `docstore` or `docstore-worker` process needs to open `config` with `aws`:
/// what [`crate::aws::AwsSettings::from_env`] and [`crate::config::StoreConfig::resolve`] read
/// back.
#[cfg(feature = "aws")]
pub fn process_env(
    aws: &crate::aws::AwsSettings,
    config: &crate::config::StoreConfig,
) -> Vec<(String, String)> {
    let mut env = vec![("AWS_REGION", aws.region.as_str())];
    env.extend(aws.endpoint.as_deref().map(|e| ("AWS_ENDPOINT_URL", e)));
    if let Some((id, secret)) = &aws.credentials {
        env.extend([
            ("AWS_ACCESS_KEY_ID", id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ]);
    }
    env.extend([
        ("DOCSTORE_BLOBS", config.blobs.as_str()),
        ("DOCSTORE_METADATA", &config.metadata),
        ("DOCSTORE_KEYS", &config.keys),
        ("DOCSTORE_AUDIT", &config.audit),
    ]);
    env.into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
