//! Every backend mix the configuration allows, opened by URL settings (as the CLI does) and put
//! through the whole-store conformance suite: {local folder, S3} × {SQLite, PostgreSQL, DynamoDB}
//! × {keyring, KMS}.

mod common;

use docstore::aws::AwsSettings;
use docstore::config::StoreConfig;
use docstore::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_mix_passes_the_conformance_suite() {
    let Some(endpoint) = common::service("DOCSTORE_TEST_AWS_ENDPOINT") else {
        return;
    };
    let Some(pg) = common::service("DOCSTORE_TEST_PG_URL") else {
        return;
    };
    let settings = AwsSettings::local(&endpoint);
    let kms = settings.kms_client();
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let table = format!("matrix-{}", uuid::Uuid::new_v4().simple());
    docstore::meta::dynamodb::DynamoMetadata::create_table(&settings.dynamodb_client(), &table)
        .await
        .unwrap();
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for (bi, blobs) in [
        format!("file://{}", dir.path().join("objects").display()),
        format!("s3://{bucket}/matrix-{}", uuid::Uuid::new_v4().simple()),
    ]
    .iter()
    .enumerate()
    {
        for (mi, metadata) in [
            format!(
                "sqlite://{}",
                dir.path().join(format!("meta-{bi}.sqlite")).display()
            ),
            pg.clone(),
            format!("dynamodb://{table}"),
        ]
        .iter()
        .enumerate()
        {
            for keys in [
                format!(
                    "keyring://{}",
                    dir.path().join(format!("keyring-{bi}-{mi}.json")).display()
                ),
                format!("kms://{key_id}"),
            ] {
                let cfg = StoreConfig {
                    blobs: blobs.clone(),
                    metadata: metadata.clone(),
                    keys: keys.clone(),
                    audit: format!("file://{}", dir.path().join("audit.jsonl").display()),
                };
                let store = cfg
                    .open_with(true, &settings)
                    .await
                    .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
                eprintln!("mix: {blobs} + {metadata} + {keys}");
                conformance::docstore(&store).await;
                ran += 1;
            }
        }
    }
    assert_eq!(ran, 12);
}
