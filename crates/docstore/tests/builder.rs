//! The embedding API: `DocStore::builder()` (every seam must be named; a built store stores and
//! reads back), and ids checked once, where they are built (a bad one never reaches the store,
//! from code or from JSON, and the error names what it is), with `PutRequest::new` and setters.

use std::sync::Arc;

use docstore::audit::MemoryAudit;
use docstore::blob::ObjectBlobStore;
use docstore::conformance::request;
use docstore::keys::keyring::Keyring;
use docstore::meta::sqlite::SqliteMetadata;
use docstore::{DocStore, DocumentId, Error, ExamId, Identity, Kind, PatientId, PutRequest, VersionId};

#[tokio::test]
async fn a_built_store_works_and_a_missing_seam_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap());
    let meta = Arc::new(SqliteMetadata::in_memory().await.unwrap());
    let keys = Arc::new(Keyring::create(&dir.path().join("keyring.json")).unwrap());
    let audit = Arc::new(MemoryAudit::default());

    let partial = DocStore::builder()
        .blobs(blobs.clone())
        .metadata(meta.clone())
        .audit(audit.clone());
    assert_eq!(
        format!("{partial:?}"),
        "DocStoreBuilder { blobs: true, metadata: true, keys: false, audit: true, frame_size: None }"
    );
    let err = partial.build().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("key provider")),
        "{err}"
    );
    let err = DocStore::builder()
        .blobs(blobs.clone())
        .metadata(meta.clone())
        .keys(keys.clone())
        .audit(audit.clone())
        .frame_size(1)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    let store = DocStore::builder()
        .blobs(blobs)
        .metadata(meta)
        .keys(keys)
        .audit(audit)
        .frame_size(4096)
        .build()
        .unwrap();
    let who = Identity::new("staff:builder");
    let body = vec![7u8; 10_000];
    let v = store
        .put(&who, request(None, "pac-b", "exm-b"), &body[..])
        .await
        .unwrap();
    let back = store
        .get(&who, &v.document_id, None)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert_eq!(back[..], body[..]);
}

#[test]
fn good_ids_are_kept_as_given() {
    for id in ["p-1", "exm_2026.001", "urn:clinic:7", &"x".repeat(128)] {
        assert_eq!(PatientId::new(id).unwrap().as_str(), id);
        assert_eq!(id.parse::<ExamId>().unwrap().to_string(), id);
        assert_eq!(String::from(DocumentId::new(id).unwrap()), id);
    }
}

#[test]
fn bad_ids_are_refused_naming_what_they_are() {
    for id in ["", ".", "..", "a/b", "../x", "a b", "é", &"x".repeat(129), "a\0b"] {
        match PatientId::new(id) {
            Err(Error::InvalidInput(m)) => assert!(m.starts_with("patient id"), "{m}"),
            other => panic!("{id:?}: {other:?}"),
        }
        assert!(matches!(ExamId::new(id), Err(Error::InvalidInput(m)) if m.starts_with("exam id")));
        assert!(matches!(DocumentId::new(id), Err(Error::InvalidInput(m)) if m.starts_with("document id")));
    }
}

/// A version id is what the store generates (a UUID) or a rendition's `<id>#<stage>@<n>`; ids
/// that could travel into a path or a log line are refused, and a rendition's stage must be an id.
#[test]
fn version_ids_are_generated_checked_and_extended_for_renditions() {
    let v = VersionId::generate();
    assert_eq!(v.as_str().len(), 36, "{v}");
    assert_ne!(VersionId::generate(), v, "fresh each time");
    assert_eq!(VersionId::new(v.as_str()).unwrap(), v);
    let r = v.rendition("thumbnail", 2).unwrap();
    assert_eq!(r.as_str(), format!("{v}#thumbnail@2"));
    assert_eq!(
        r.as_str().parse::<VersionId>().unwrap(),
        r,
        "a rendition's id is a version id"
    );
    assert!(v.rendition("../x", 1).is_err());
    assert!(v.rendition("", 1).is_err());
    for bad in ["", "a/b", "a b", "é", "a\nb", &"x".repeat(257)] {
        assert!(
            matches!(VersionId::new(bad), Err(Error::InvalidInput(m)) if m.starts_with("version id")),
            "{bad:?}"
        );
    }
    assert!(serde_json::from_str::<VersionId>(r#""a/b""#).is_err());
}

#[test]
fn json_holds_the_bare_string_and_refuses_a_bad_one() {
    let id = PatientId::new("p-1").unwrap();
    assert_eq!(serde_json::to_string(&id).unwrap(), r#""p-1""#);
    assert_eq!(serde_json::from_str::<PatientId>(r#""p-1""#).unwrap(), id);
    assert!(serde_json::from_str::<PatientId>(r#""../etc""#).is_err());
}

#[test]
fn a_put_request_defaults_to_a_new_report_and_takes_setters() {
    let req = PutRequest::new(PatientId::new("p").unwrap(), ExamId::new("e").unwrap());
    assert_eq!(
        (
            &req.document_id,
            req.kind,
            req.media_type.as_str(),
            req.expected_version
        ),
        (&None, Kind::Report, "application/pdf", None)
    );
    let req = req
        .document(DocumentId::new("d").unwrap())
        .kind(Kind::Image)
        .media_type("image/png")
        .expected_version(3);
    assert_eq!(req.document_id.as_ref().map(DocumentId::as_str), Some("d"));
    assert_eq!(
        (req.kind, req.media_type.as_str(), req.expected_version),
        (Kind::Image, "image/png", Some(3))
    );
}
