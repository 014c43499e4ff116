//! S3/DynamoDB/KMS outage: moto is frozen (SIGSTOP) mid-test, as in a network partition. Calls fail
//! with typed errors after bounded retries and change nothing; after SIGCONT the same calls succeed.
//! Its own test binary, because freezing the shared server would fail other tests running beside it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::audit::MemoryAudit;
use docstore::aws::AwsSettings;
use docstore::blob::ObjectBlobStore;
use docstore::conformance;
use docstore::keys::kms::KmsKeys;
use docstore::meta::MetadataStore;
use docstore::meta::dynamodb::DynamoMetadata;
use docstore::{DocStore, Error, Identity, KeyFailure};

fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Resumes moto even if the test panics.
struct Thaw(String);
impl Drop for Thaw {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

fn is_outage(e: &Error) -> bool {
    matches!(
        e,
        Error::Unavailable { .. }
            | Error::Blob { .. }
            | Error::KeyUnavailable {
                failure: KeyFailure::Unavailable,
                ..
            }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_aws_gives_typed_errors_then_recovers() {
    let Some(endpoint) = common::service("DOCSTORE_TEST_AWS_ENDPOINT") else {
        return;
    };
    let Some(pid) = common::service("DOCSTORE_TEST_MOTO_PID") else {
        return;
    };
    let mut settings = AwsSettings::local(&endpoint);
    settings.max_attempts = 2;
    settings.attempt_timeout = Duration::from_secs(1);
    let kms = settings.kms_client();
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let table = format!("outage-{}", uuid::Uuid::new_v4().simple());
    DynamoMetadata::create_table(&settings.dynamodb_client(), &table)
        .await
        .unwrap();
    let meta = Arc::new(DynamoMetadata::new(settings.dynamodb_client(), &table));
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let prefix = format!("outage-{}", uuid::Uuid::new_v4().simple());
    let store = DocStore::new(
        Arc::new(ObjectBlobStore::s3(&bucket, Some(&prefix), &settings).unwrap()),
        meta.clone(),
        Arc::new(KmsKeys::new(kms, key_id)),
        Arc::new(MemoryAudit::default()),
    );
    let who = Identity::new("staff:outage");
    let body = conformance::pattern(300_000, 8);
    let v1 = store
        .put(&who, conformance::request(None, "pac-o", "exm-o"), &body[..])
        .await
        .unwrap();
    let doc = v1.document_id.clone();

    {
        signal(&pid, "-STOP");
        let _thaw = Thaw(pid.clone());
        let started = Instant::now();
        let put = store
            .put(
                &who,
                conformance::request(Some(&doc), "pac-o", "exm-o"),
                &body[..],
            )
            .await;
        let e = put.expect_err("put during an outage");
        assert!(is_outage(&e), "put: untyped outage error {e:?}");
        match store.get(&who, &doc, None).await {
            Err(e) => assert!(is_outage(&e), "get: {e:?}"),
            Ok(_) => panic!("get succeeded while every AWS service was frozen"),
        }
        let e = store
            .versions(&who, &doc)
            .await
            .expect_err("versions during an outage");
        assert!(is_outage(&e), "versions: {e:?}");
        let e = meta
            .outbox_pending(10)
            .await
            .expect_err("outbox during an outage");
        assert!(is_outage(&e), "outbox: {e:?}");
        // Bounded retries: every call gave up on its own, nothing hung.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "calls hung for {:?}",
            started.elapsed()
        );
    }

    // Back: nothing partial was recorded, and the same operations now succeed.
    let versions = store.versions(&who, &doc).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1]);
    let events: Vec<_> = meta
        .outbox_pending(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key == doc)
        .collect();
    assert_eq!(events.len(), 1, "only v1's event");
    let v2 = store
        .put(
            &who,
            conformance::request(Some(&doc), "pac-o", "exm-o"),
            &body[..],
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let back = store
        .get(&who, &doc, None)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert!(back[..] == body[..]);
}
