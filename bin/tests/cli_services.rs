//! The CLI on the production backends (S3 + DynamoDB + KMS on moto, and PostgreSQL), chosen by
//! URL settings; crash behaviour of the outbox with a real child process and SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use docstore::aws::AwsSettings;
use docstore::config::StoreConfig;
use serde_json::Value;

use docstore_testkit::service;

struct Env {
    _dir: tempfile::TempDir,
    work: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_docstore"));
        c.args(args)
            .env("DOCSTORE_DATA_DIR", self.work.join("unused"))
            .env("DOCSTORE_ACTOR", "test:services")
            .env_remove("DOCSTORE_FAILPOINTS")
            .current_dir(&self.work);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn config(&self) -> StoreConfig {
        let get = |k: &str| {
            self.vars
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        StoreConfig {
            blobs: get("DOCSTORE_BLOBS"),
            metadata: get("DOCSTORE_METADATA"),
            keys: get("DOCSTORE_KEYS"),
            audit: get("DOCSTORE_AUDIT"),
        }
    }
}

async fn kms_alias(settings: &AwsSettings) -> (String, String) {
    let client = settings.kms_client();
    let key = client.create_key().send().await.unwrap();
    let id = key.key_metadata().unwrap().key_id().to_owned();
    let alias = format!("alias/cli-{}", uuid::Uuid::new_v4().simple());
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    (alias, id)
}

/// S3 + `metadata` + KMS, configured purely through environment variables.
async fn production_env(metadata: Option<String>) -> Option<(Env, AwsSettings)> {
    let endpoint = service("DOCSTORE_TEST_AWS_ENDPOINT")?;
    let settings = AwsSettings::local(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_owned();
    let (alias, _) = kms_alias(&settings).await;
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let table = format!("cli-{}", uuid::Uuid::new_v4().simple());
    let vars = vec![
        ("AWS_ENDPOINT_URL".into(), endpoint),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        (
            "DOCSTORE_BLOBS".into(),
            format!("s3://{bucket}/{}", uuid::Uuid::new_v4().simple()),
        ),
        (
            "DOCSTORE_METADATA".into(),
            metadata.unwrap_or(format!("dynamodb://{table}")),
        ),
        ("DOCSTORE_KEYS".into(), format!("kms://{alias}")),
        (
            "DOCSTORE_AUDIT".into(),
            format!("file://{}", work.join("audit.jsonl").display()),
        ),
    ];
    Some((
        Env {
            _dir: dir,
            work,
            vars,
        },
        settings,
    ))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

async fn full_cycle(env: &Env, settings: &AwsSettings) {
    let out = env.run(&["provision"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>();
    let f = write(&env.work, "laudo.pdf", &body);
    let v1 = env.json(&["put", &f, "--patient", "pac-9", "--exam", "exm-9"]);
    let doc = v1["document_id"].as_str().unwrap().to_owned();
    let v2 = env.json(&[
        "put",
        &f,
        "--patient",
        "pac-9",
        "--exam",
        "exm-9",
        "--document",
        &doc,
    ]);
    assert_eq!(v2["version"], 2);
    let out = env.work.join("back.pdf");
    env.json(&["versions", &doc]);
    assert!(
        env.run(&["get", &doc, "--version", "1", "-o", out.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(std::fs::read(&out).unwrap(), body);
    // Re-wrap to a new KMS key, disable the old one: everything still reads.
    let old_key = {
        let c = settings.kms_client();
        let alias = env.config().keys.trim_start_matches("kms://").to_owned();
        c.describe_key()
            .key_id(alias)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_owned()
    };
    let (new_alias, _) = kms_alias(settings).await;
    let report = env.json(&[
        "rewrap",
        "--to",
        &format!("kms://{new_alias}"),
        "--document",
        &doc,
    ]);
    assert_eq!(report["rewrapped"], 2, "{report}");
    settings
        .kms_client()
        .disable_key()
        .key_id(&old_key)
        .send()
        .await
        .unwrap();
    let mut moved = env.command(&["get", &doc, "--version", "2"]);
    moved.env("DOCSTORE_KEYS", format!("kms://{new_alias}"));
    let got = moved.output().unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(got.stdout, body);
    // Shred v1: refused without --yes, then unreadable for good.
    assert!(!env.run(&["shred", &doc, "--version", "1"]).status.success());
    let mut shred = env.command(&["--json", "shred", &doc, "--version", "1", "--yes"]);
    shred.env("DOCSTORE_KEYS", format!("kms://{new_alias}"));
    assert!(shred.output().unwrap().status.success());
    let mut after = env.command(&["get", &doc, "--version", "1"]);
    after.env("DOCSTORE_KEYS", format!("kms://{new_alias}"));
    let after = after.output().unwrap();
    assert_eq!(after.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&after.stderr).contains("crypto-shredded"));
}

#[tokio::test]
async fn cli_on_s3_dynamodb_kms() {
    let Some((env, settings)) = production_env(None).await else {
        return;
    };
    full_cycle(&env, &settings).await;
}

#[tokio::test]
async fn cli_on_s3_postgres_kms() {
    let Some(pg) = service("DOCSTORE_TEST_PG_URL") else {
        return;
    };
    let Some((env, settings)) = production_env(Some(pg)).await else {
        return;
    };
    full_cycle(&env, &settings).await;
}

/// `docstore load` on the production mix: S3 + PostgreSQL + KMS (moto) with every stage in
/// Kafka consumer groups: the small day is processed and searchable, no document fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_on_kafka_s3_postgres_kms() {
    let (Some(pg_url), Some(kafka)) = (service("DOCSTORE_TEST_PG_URL"), service("DOCSTORE_TEST_KAFKA"))
    else {
        return;
    };
    // A database of its own: the relay publishes the whole outbox of the database it is given,
    // and the other tests' stores share the default one.
    let pg = docstore::conformance::fresh_pg_database(&pg_url, "load").await;
    let Some((mut env, _)) = production_env(Some(pg)).await else {
        return;
    };
    let prefix = format!("load{}.", uuid::Uuid::new_v4().simple());
    env.vars.push((
        "DOCSTORE_BUS".into(),
        format!("kafka://{kafka}?prefix={prefix}&partitions=2"),
    ));
    let index = env.work.join("index");
    let v = env.json(&[
        "load",
        "--exams",
        "3",
        "--image-size",
        "800x600",
        "--distinct-images",
        "1",
        "--index",
        index.to_str().unwrap(),
        "--out",
        env.work.join("load.json").to_str().unwrap(),
        "--timeout",
        "3m",
    ]);
    let r = &v["report"];
    assert_eq!(v["plan"]["bus"], "kafka");
    assert_eq!(r["failed_documents"], 0, "{r}");
    for stage in ["stamp", "thumbnail", "text", "index"] {
        assert_eq!(r["stages"][stage]["processed"], 6, "{stage}: {r}");
    }
    assert!(r["time_to_searchable_ms"]["max"].as_f64().unwrap() > 0.0);
}

fn wait_for(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "child exited before {what}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL a real `docstore put` between the metadata commit and any relay: the version and its
/// `file.uploaded` outbox entry are there, exactly once; killing before the commit leaves only an
/// orphan blob for gc.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_between_commit_and_relay_keeps_the_outbox_entry() {
    let Some((env, settings)) = production_env(None).await else {
        return;
    };
    assert!(env.run(&["provision"]).status.success());
    let cfg = env.config();
    let table = cfg.metadata.trim_start_matches("dynamodb://");
    let meta: std::sync::Arc<dyn docstore::meta::MetadataStore> = std::sync::Arc::new(
        docstore::meta::dynamodb::DynamoMetadata::new(settings.dynamodb_client(), table),
    );
    let f = write(&env.work, "r.pdf", b"%PDF-1.7 killed after commit");
    let mut child = env
        .command(&[
            "put",
            &f,
            "--patient",
            "pac-k",
            "--exam",
            "exm-k",
            "--document",
            "doc-killed",
        ])
        .env("DOCSTORE_FAILPOINTS", "after_commit=pause")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Handle::current();
    wait_for(&mut child, "the commit", || {
        let m = meta.clone();
        tokio::task::block_in_place(|| {
            rt.block_on(async move { m.version("doc-killed", None).await.is_ok() })
        })
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let pending: Vec<_> = meta
        .outbox_pending(100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key == "doc-killed")
        .collect();
    assert_eq!(
        pending.len(),
        1,
        "exactly one file.uploaded for the committed version"
    );
    let ev: Value = serde_json::from_str(&pending[0].payload).unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["data"]["version"].as_u64()),
        (Some("file.uploaded"), Some(1))
    );
    assert!(
        env.run(&["get", "doc-killed"]).status.success(),
        "the committed version reads"
    );
    // Delivered later: a relay started after the crash publishes it, once, and clears the outbox.
    {
        use docstore_bus::{EventBus, InProcessBus};
        let bus = std::sync::Arc::new(InProcessBus::new(4));
        let relay = docstore_pipeline::relay::OutboxRelay::new(meta.clone(), bus.clone(), 100);
        while relay.run_once().await.unwrap() > 0 {}
        let mut sub = bus.subscribe("check", &["file.uploaded".into()]).await.unwrap();
        let got = sub.poll(1000, Duration::from_millis(100)).await.unwrap();
        let mine: Vec<_> = got.iter().filter(|d| d.message.key == "doc-killed").collect();
        assert_eq!(mine.len(), 1, "delivered exactly once");
        let ev = docstore_events::CloudEvent::decode(&mine[0].message.payload).unwrap();
        assert_eq!(ev.file_uploaded().unwrap().version, 1);
        assert!(
            meta.outbox_pending(100_000)
                .await
                .unwrap()
                .iter()
                .all(|e| e.key != "doc-killed")
        );
    }

    // Killed before the commit: no record, no event, one orphan blob that gc removes.
    let mut child = env
        .command(&[
            "put",
            &f,
            "--patient",
            "pac-k",
            "--exam",
            "exm-k",
            "--document",
            "doc-early",
        ])
        .env("DOCSTORE_FAILPOINTS", "before_commit=pause")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (bucket, prefix) = cfg.blobs.trim_start_matches("s3://").split_once('/').unwrap();
    let blobs = docstore::blob::ObjectBlobStore::s3(bucket, Some(prefix), &settings).unwrap();
    wait_for(&mut child, "the blob", || {
        let b = blobs.clone();
        tokio::task::block_in_place(|| {
            rt.block_on(async move {
                use docstore::blob::BlobStore;
                !b.list("blobs/doc-early").await.unwrap().is_empty()
            })
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // moto is a single Python process: under load a read can time out (Unavailable); ask again.
    let mut early = meta.document("doc-early").await;
    for _ in 0..5 {
        if !matches!(early, Err(docstore::Error::Unavailable { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        early = meta.document("doc-early").await;
    }
    assert!(
        matches!(early, Err(docstore::Error::NotFound { .. })),
        "killed before the commit, yet: {early:?}"
    );
    assert!(
        meta.outbox_pending(100_000)
            .await
            .unwrap()
            .iter()
            .all(|e| e.key != "doc-early")
    );
    std::thread::sleep(Duration::from_millis(50));
    let gc = env.json(&["gc", "--grace", "0s"]);
    assert_eq!(gc["removed"], 1, "{gc}");
}
