//! The conformance suite on S3 and KMS (moto, from `scripts/services.sh`), and on the mixes the
//! configuration allows with SQLite and PostgreSQL metadata; KMS fault behaviour.

mod common;

use std::sync::Arc;

use docstore::audit::MemoryAudit;
use docstore::aws::AwsSettings;
use docstore::blob::ObjectBlobStore;
use docstore::conformance;
use docstore::envelope::EncryptionContext;
use docstore::keys::KeyProvider;
use docstore::keys::kms::KmsKeys;
use docstore::meta::MetadataStore;
use docstore::meta::sqlite::SqliteMetadata;
use docstore::{DocStore, Error, Identity, IntegrityError, KeyFailure};

fn aws() -> Option<AwsSettings> {
    common::service("DOCSTORE_TEST_AWS_ENDPOINT").map(|e| AwsSettings::local(&e))
}

fn s3(settings: &AwsSettings) -> ObjectBlobStore {
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    ObjectBlobStore::s3(&bucket, Some(&prefix), settings).unwrap()
}

/// A fresh KMS key with an alias; returns (provider, key id).
async fn kms(settings: &AwsSettings) -> (KmsKeys, String) {
    let client = settings.kms_client();
    let key = client.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let alias = format!("alias/docstore-test-{}", uuid::Uuid::new_v4().simple());
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    (KmsKeys::new(client, alias), key_id)
}

#[tokio::test]
async fn blob_store_s3() {
    let Some(settings) = aws() else { return };
    conformance::blob_store(&s3(&settings)).await;
}

#[tokio::test]
async fn key_provider_kms() {
    let Some(settings) = aws() else { return };
    conformance::key_provider(&kms(&settings).await.0).await;
}

async fn mixed_store(settings: &AwsSettings, meta: Arc<dyn MetadataStore>) -> DocStore {
    DocStore::new(
        Arc::new(s3(settings)),
        meta,
        Arc::new(kms(settings).await.0),
        Arc::new(MemoryAudit::default()),
    )
}

#[tokio::test]
async fn docstore_s3_sqlite_kms() {
    let Some(settings) = aws() else { return };
    let meta = Arc::new(SqliteMetadata::in_memory().await.unwrap());
    conformance::docstore(&mixed_store(&settings, meta).await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn docstore_s3_postgres_kms() {
    let Some(settings) = aws() else { return };
    let Some(url) = common::service("DOCSTORE_TEST_PG_URL") else {
        return;
    };
    let meta = Arc::new(
        docstore::meta::postgres::PostgresMetadata::connect(&url, 10)
            .await
            .unwrap(),
    );
    conformance::docstore(&mixed_store(&settings, meta).await).await;
}

#[tokio::test]
async fn docstore_local_sqlite_kms() {
    let Some(settings) = aws() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::new(
        Arc::new(ObjectBlobStore::local(dir.path()).unwrap()),
        Arc::new(SqliteMetadata::in_memory().await.unwrap()),
        Arc::new(kms(&settings).await.0),
        Arc::new(MemoryAudit::default()),
    );
    conformance::docstore(&store).await;
}

#[tokio::test]
async fn crash_between_blob_and_commit_on_s3() {
    let Some(settings) = aws() else { return };
    conformance::crash_before_commit(
        Arc::new(s3(&settings)),
        Arc::new(SqliteMetadata::in_memory().await.unwrap()),
        Arc::new(kms(&settings).await.0),
        Arc::new(MemoryAudit::default()),
    )
    .await;
}

#[tokio::test]
async fn large_body_goes_multipart_on_s3() {
    let Some(settings) = aws() else { return };
    let store = mixed_store(&settings, Arc::new(SqliteMetadata::in_memory().await.unwrap())).await;
    let who = Identity::new("staff:s3");
    let body = conformance::pattern(13 * 1024 * 1024 + 5, 77);
    let v = store
        .put(&who, conformance::request(None, "p-s3", "e-s3"), &body[..])
        .await
        .unwrap();
    let back = store
        .get(&who, &v.document_id, None)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert!(back[..] == body[..]);
    let r = store
        .get_range(&who, &v.document_id, None, 6_000_000..6_200_000)
        .await
        .unwrap();
    assert!(r[..] == body[6_000_000..6_200_000]);
    assert!(store.blobs().size(&v.blob_key).await.unwrap() > body.len() as u64);
}

#[tokio::test]
async fn kms_faults_are_typed() {
    let Some(settings) = aws() else { return };
    let (keys, key_id) = kms(&settings).await;
    let ctx = EncryptionContext::new([("docstore.document", "d1"), ("docstore.version_id", "v1")]);
    let (_, wrapped) = keys.generate_data_key(&ctx).await.unwrap();
    // Another document's context: KMS refuses, typed as an unwrap integrity failure.
    let other = EncryptionContext::new([("docstore.document", "d2"), ("docstore.version_id", "v1")]);
    assert!(matches!(
        keys.decrypt_data_key(&wrapped, &other).await,
        Err(Error::Integrity {
            kind: IntegrityError::KeyUnwrap,
            ..
        })
    ));
    // A disabled key: typed, for both generate and decrypt; enabling it again restores service.
    let client = settings.kms_client();
    client.disable_key().key_id(&key_id).send().await.unwrap();
    assert!(matches!(
        keys.decrypt_data_key(&wrapped, &ctx).await,
        Err(Error::KeyUnavailable {
            failure: KeyFailure::Disabled,
            ..
        })
    ));
    assert!(matches!(
        keys.generate_data_key(&ctx).await,
        Err(Error::KeyUnavailable {
            failure: KeyFailure::Disabled,
            ..
        })
    ));
    client.enable_key().key_id(&key_id).send().await.unwrap();
    keys.decrypt_data_key(&wrapped, &ctx).await.unwrap();
    // An unknown key.
    let missing = KmsKeys::new(settings.kms_client(), "alias/does-not-exist");
    assert!(matches!(
        missing.generate_data_key(&ctx).await,
        Err(Error::KeyUnavailable {
            failure: KeyFailure::NotFound,
            ..
        })
    ));
}

/// Strict unwrapping: content sealed under a KMS key the store is not configured with (as someone
/// with write access to blobs and metadata could do with a key of their own) is refused with a
/// typed error before any Decrypt call, and read once that key is allowed (a rotation).
#[tokio::test]
async fn kms_unwraps_only_allowed_keys() {
    let Some(settings) = aws() else { return };
    let (ours, _) = kms(&settings).await;
    let (theirs, their_key) = kms(&settings).await;
    let their_alias = theirs.key_id().to_owned();
    let blobs = Arc::new(s3(&settings));
    let meta: Arc<dyn MetadataStore> = Arc::new(SqliteMetadata::in_memory().await.unwrap());
    let store_with = |keys: KmsKeys| {
        DocStore::new(
            blobs.clone(),
            meta.clone(),
            Arc::new(keys),
            Arc::new(MemoryAudit::default()),
        )
    };
    let who = Identity::new("staff:kms");
    let body = conformance::pattern(10_000, 3);
    let sealed = store_with(theirs)
        .put(&who, conformance::request(None, "pat-k", "exam-k"), &body[..])
        .await
        .unwrap();
    let refused = store_with(ours.clone())
        .get(&who, &sealed.document_id, None)
        .await
        .map(|d| d.record)
        .expect_err("content under a foreign key was served");
    match &refused {
        Error::KeyUnavailable {
            key_id,
            failure: KeyFailure::NotAllowed,
        } => assert!(key_id.ends_with(&their_key), "{key_id}"),
        other => panic!("{other:?}"),
    }
    // The same through a key id or an ARN in the allowlist.
    let rotated = ours.clone().allow([their_alias.as_str()]);
    let got = store_with(rotated)
        .get(&who, &sealed.document_id, None)
        .await
        .unwrap()
        .read_all()
        .await
        .unwrap();
    assert!(got[..] == body[..]);
    let by_id = ours.allow([their_key.as_str()]);
    store_with(by_id)
        .get(&who, &sealed.document_id, None)
        .await
        .unwrap();
}

/// A fresh DynamoDB table.
async fn dynamodb(settings: &AwsSettings) -> docstore::meta::dynamodb::DynamoMetadata {
    use docstore::meta::dynamodb::DynamoMetadata;
    let client = settings.dynamodb_client();
    let table = format!("docstore-test-{}", uuid::Uuid::new_v4().simple());
    DynamoMetadata::create_table(&client, &table).await.unwrap();
    DynamoMetadata::new(client, table)
}

#[tokio::test]
async fn metadata_dynamodb() {
    let Some(settings) = aws() else { return };
    conformance::metadata_store(&dynamodb(&settings).await).await;
    conformance::processing_join(&dynamodb(&settings).await).await;
    conformance::shred_write(&dynamodb(&settings).await).await;
}

#[tokio::test]
async fn docstore_s3_dynamodb_kms() {
    let Some(settings) = aws() else { return };
    let meta = Arc::new(dynamodb(&settings).await);
    conformance::docstore(&mixed_store(&settings, meta).await).await;
}

#[tokio::test]
async fn docstore_local_dynamodb_keyring() {
    let Some(settings) = aws() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::new(
        Arc::new(ObjectBlobStore::local(&dir.path().join("objects")).unwrap()),
        Arc::new(dynamodb(&settings).await),
        Arc::new(docstore::keys::keyring::Keyring::create(&dir.path().join("k.json")).unwrap()),
        Arc::new(MemoryAudit::default()),
    );
    conformance::docstore(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_fifty_puts_on_dynamodb() {
    let Some(settings) = aws() else { return };
    let meta = dynamodb(&settings).await;
    let store = mixed_store(&settings, Arc::new(meta.clone())).await;
    // Four store instances model four processes: each has its own commit lock, so the
    // conditional transaction is what keeps their versions apart.
    let stores: Vec<DocStore> = (0..4)
        .map(|_| {
            let own = docstore::meta::dynamodb::DynamoMetadata::new(settings.dynamodb_client(), meta.table());
            DocStore::new(
                store.blobs().clone(),
                Arc::new(own),
                store.keys().clone(),
                store.audit_sink().clone(),
            )
        })
        .collect();
    conformance::concurrent_writers(&stores, 16, 50).await;
}

#[tokio::test]
async fn crash_between_blob_and_commit_on_dynamodb() {
    let Some(settings) = aws() else { return };
    conformance::crash_before_commit(
        Arc::new(s3(&settings)),
        Arc::new(dynamodb(&settings).await),
        Arc::new(kms(&settings).await.0),
        Arc::new(MemoryAudit::default()),
    )
    .await;
}

#[tokio::test]
async fn a_refused_rendition_swap_is_retried_on_dynamodb_and_kms() {
    let Some(settings) = aws() else { return };
    conformance::rendition_swap_retries(
        Arc::new(s3(&settings)),
        Arc::new(dynamodb(&settings).await),
        Arc::new(kms(&settings).await.0),
        Arc::new(MemoryAudit::default()),
        Arc::new(kms(&settings).await.0),
    )
    .await;
}

#[tokio::test]
async fn rewrap_to_a_new_kms_key_disable_the_old_then_shred() {
    let Some(settings) = aws() else { return };
    let (old, old_id) = kms(&settings).await;
    let store = DocStore::new(
        Arc::new(s3(&settings)),
        Arc::new(dynamodb(&settings).await),
        Arc::new(old),
        Arc::new(MemoryAudit::default()),
    );
    let (new, _) = kms(&settings).await;
    let client = settings.kms_client();
    conformance::rewrap_and_shred(&store, Arc::new(new), async move {
        client.disable_key().key_id(&old_id).send().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn rewrap_from_local_keyring_to_kms() {
    let Some(settings) = aws() else { return };
    let (_dir, store) = common::local_store().await;
    let (target, _) = kms(&settings).await;
    conformance::rewrap_and_shred(&store, Arc::new(target), async {}).await;
}
