//! Put/get latency of 1 MB documents on any backend mix, p50/p99, as JSON.
//!
//! ```sh
//! # embedded default (a temporary directory)
//! cargo run --release -p docstore --all-features --example latency -- 200
//! # S3 + DynamoDB + KMS (moto from scripts/services.sh), by URL settings
//! DOCSTORE_BLOBS=s3://docstore-test/lat DOCSTORE_METADATA=dynamodb://lat DOCSTORE_KEYS=kms://alias/lat \
//!   AWS_ENDPOINT_URL=http://127.0.0.1:PORT ... cargo run --release ... --example latency -- 200
//! ```
//! Bounded: N puts then N gets, sequential, one document each.

use std::time::{Duration, Instant};

use docstore::config::StoreConfig;
use docstore::{DocStore, ExamId, Identity, PatientId, PutRequest};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> docstore::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100)
        .clamp(1, 100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let cfg = StoreConfig::resolve(&root, None)?;
    let (store, backends) = if cfg.is_local(&root) {
        (
            DocStore::init_local(&root).await?,
            "embedded (local folder + SQLite + keyring)".to_owned(),
        )
    } else {
        let label = format!("{} + {} + {}", cfg.blobs, cfg.metadata, cfg.keys);
        std::fs::create_dir_all(&root).expect("data dir");
        (cfg.open(true).await?, label)
    };
    let who = Identity::new("bench:latency");
    let body: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut puts = Vec::with_capacity(n);
    let mut docs = Vec::with_capacity(n);
    for i in 0..n {
        let req = PutRequest::new(
            PatientId::new(format!("lat-p{}", i % 50))?,
            ExamId::new(format!("lat-e{i}"))?,
        );
        let t = Instant::now();
        let v = store.put(&who, req, &body[..]).await?;
        puts.push(t.elapsed());
        docs.push(v.document_id);
    }
    let mut gets = Vec::with_capacity(n);
    for d in &docs {
        let t = Instant::now();
        let got = store.get(&who, d, None).await?.read_all().await?;
        gets.push(t.elapsed());
        assert_eq!(got.len(), body.len());
    }
    puts.sort();
    gets.sort();
    let report = serde_json::json!({
        "backends": backends,
        "documents": n,
        "size_bytes": body.len(),
        "put_ms": {"p50": percentile(&puts, 0.5), "p99": percentile(&puts, 0.99), "max": percentile(&puts, 1.0)},
        "get_ms": {"p50": percentile(&gets, 0.5), "p99": percentile(&gets, 0.99), "max": percentile(&gets, 1.0)},
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    Ok(())
}
