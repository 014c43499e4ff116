//! Worker scaling on Kafka: the `verify` stage in 1, 2 and 4 `docstore-worker` processes (one
//! consumer group, 12 partitions) against S3 + KMS on moto behind a proxy of ours on 127.0.0.1
//! that holds each request 20 ms, with PostgreSQL metadata. For each count: a backlog of exams
//! uploaded and relayed first, then the workers started; exams/s is the number of exams over the
//! span of their verify timestamps (recorded by the stage, in PostgreSQL), and the efficiency is
//! that rate over N × the one-worker rate. Then the pause of a group change: 2 workers under a
//! paced upload rate, a third joining and one leaving (SIGTERM) in the middle, and upload →
//! verified p50/p99 for the exams of each phase.
//!
//! ```text
//! scripts/services.sh start && source "$DOCSTORE_SERVICES_DIR/env"
//! cargo build --release -p docstore-workers --bin docstore-worker
//! DOCSTORE_WORKER_BIN=$CARGO_TARGET_DIR/release/docstore-worker \
//!   cargo bench -p docstore-benches --bench scaling
//! ```
//!
//! `DOCSTORE_SCALING_EXAMS` (default 600), `DOCSTORE_SCALING_LATENCY_MS` (20),
//! `DOCSTORE_SCALING_WORKERS` (1,2,4). Without `--bench` (as `cargo test --all-targets` runs it)
//! or without the services it prints why and does nothing: it is a measurement, not a test.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docstore::aws::AwsSettings;
use docstore::config::StoreConfig;
use docstore::{DocStore, Identity};
use docstore_bus::open_bus;
use docstore_pipeline::relay::OutboxRelay;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that holds the first bytes of every request
/// (client bytes after at least 2 ms of silence on the connection) for `delay`: a network round
/// trip to S3 or KMS, added to moto's own time.
async fn latency_proxy(upstream: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut last = Instant::now() - Duration::from_secs(1);
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if last.elapsed() >= Duration::from_millis(2) {
                            tokio::time::sleep(delay).await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        last = Instant::now();
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

struct Setup {
    store: Arc<DocStore>,
    pg: String,
    bus_url: String,
    /// Environment of the worker processes (S3 and KMS through the proxy).
    worker_env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

/// A fresh store (S3 prefix, KMS key, PostgreSQL database) and fresh topics of 12 partitions.
async fn setup(kafka: &str, endpoint: &str, pg_url: &str, proxy: &str) -> Setup {
    let settings = AwsSettings::local(endpoint);
    let alias = docstore::conformance::fresh_kms_alias(&settings, "scaling").await;
    let pg = docstore::conformance::fresh_pg_database(pg_url, "scaling").await;
    let dir = tempfile::tempdir().unwrap();
    let bucket = std::env::var("DOCSTORE_TEST_S3_BUCKET").unwrap_or_else(|_| "docstore-test".into());
    let config = StoreConfig {
        blobs: format!("s3://{bucket}/scaling-{}", uuid::Uuid::new_v4().simple()),
        metadata: pg.clone(),
        keys: format!("kms://{alias}"),
        audit: format!("file://{}", dir.path().join("audit.jsonl").display()),
    };
    let store = Arc::new(config.open_with(true, &settings).await.unwrap());
    // The workers write their own audit file, beside the bench's.
    let worker_env = docstore::conformance::process_env(
        &AwsSettings::local(&format!("http://{proxy}")),
        &StoreConfig {
            audit: format!("file://{}", dir.path().join("worker-audit.jsonl").display()),
            ..config.clone()
        },
    );
    let prefix = format!("scaling{}.", uuid::Uuid::new_v4().simple());
    Setup {
        store,
        pg,
        bus_url: format!("kafka://{kafka}?prefix={prefix}&partitions=12&session_timeout_ms=3000"),
        worker_env,
        dir,
    }
}

fn worker(bin: &str, s: &Setup) -> Child {
    Command::new(bin)
        .args(["--stage", "verify", "--required", "verify", "--bus", &s.bus_url])
        .args(["--metrics-addr", "127.0.0.1:0", "--shutdown-grace", "5s"])
        .envs(s.worker_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn upload(store: &DocStore, i: usize) {
    let body = docstore::conformance::pattern(64 << 10, i as u64);
    let req = docstore::conformance::request(None, &format!("pac-{:04}", i % 500), &format!("exm-{i:07}"));
    store
        .put(&Identity::new("bench:reception"), req, &body[..])
        .await
        .unwrap();
}

/// Verified exams: (created_at, verified_at) in Unix ms.
async fn verified(pg: &str) -> Vec<(i64, i64)> {
    let mut c = sqlx::PgConnection::connect(pg).await.unwrap();
    sqlx::query_as(
        "SELECT created_at, (stages->'verify'->>'recorded_at')::BIGINT FROM versions \
         WHERE stages ? 'verify'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

async fn wait_verified(pg: &str, n: usize, limit: Duration) -> Vec<(i64, i64)> {
    let start = Instant::now();
    loop {
        let got = verified(pg).await;
        if got.len() >= n || start.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn relay(s: &Setup) -> tokio::task::JoinHandle<()> {
    let relay = OutboxRelay::new(s.store.metadata().clone(), open_bus(&s.bus_url).unwrap(), 200);
    tokio::spawn(async move { relay.run(Duration::from_millis(20), std::future::pending()).await })
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("scaling: a measurement; run it with cargo bench (see the file's header)");
        return;
    }
    let (Ok(kafka), Ok(endpoint), Ok(pg_url), Ok(bin)) = (
        std::env::var("DOCSTORE_TEST_KAFKA"),
        std::env::var("DOCSTORE_TEST_AWS_ENDPOINT"),
        std::env::var("DOCSTORE_TEST_PG_URL"),
        std::env::var("DOCSTORE_WORKER_BIN"),
    ) else {
        eprintln!(
            "scaling: needs DOCSTORE_TEST_KAFKA, DOCSTORE_TEST_AWS_ENDPOINT, DOCSTORE_TEST_PG_URL and DOCSTORE_WORKER_BIN"
        );
        return;
    };
    let exams: usize = env_or("DOCSTORE_SCALING_EXAMS", 600);
    let delay = Duration::from_millis(env_or("DOCSTORE_SCALING_LATENCY_MS", 20));
    let counts: Vec<usize> = std::env::var("DOCSTORE_SCALING_WORKERS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = latency_proxy(upstream, delay).await;
    println!(
        "verify stage, {exams} exams of 64 KiB, 12 partitions, {} ms per S3/KMS request",
        delay.as_millis()
    );
    println!("| workers | exams/s | efficiency vs N × one |");
    println!("| ---: | ---: | ---: |");
    let mut one = None;
    for &n in &counts {
        let s = setup(&kafka, &endpoint, &pg_url, &proxy).await;
        let r = relay(&s);
        for i in 0..exams {
            upload(&s.store, i).await;
        }
        let children: Vec<Child> = (0..n).map(|_| worker(&bin, &s)).collect();
        let done = wait_verified(&s.pg, exams, Duration::from_secs(600)).await;
        for c in children {
            stop(c);
        }
        r.abort();
        assert_eq!(
            done.len(),
            exams,
            "{n} workers: {} of {exams} verified in 10 min",
            done.len()
        );
        let first = done.iter().map(|d| d.1).min().unwrap();
        let last = done.iter().map(|d| d.1).max().unwrap();
        let rate = (exams - 1) as f64 / ((last - first) as f64 / 1e3);
        let base = *one.get_or_insert(rate);
        println!("| {n} | {rate:.1} | {:.2} |", rate / (n as f64 * base));
    }

    // The pause of a group change: paced uploads with 2 workers, a third joins at 1/3 of the run
    // and one leaves at 2/3.
    let pace: f64 = env_or("DOCSTORE_SCALING_PACE", 10.0);
    let secs: u64 = env_or("DOCSTORE_SCALING_SECONDS", 45);
    let s = setup(&kafka, &endpoint, &pg_url, &proxy).await;
    let r = relay(&s);
    let mut children: Vec<Child> = (0..2).map(|_| worker(&bin, &s)).collect();
    tokio::time::sleep(Duration::from_secs(8)).await; // the group forms
    let total = (pace * secs as f64) as usize;
    let start = Instant::now();
    let mut phases = Vec::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / pace);
        tokio::time::sleep_until(due.into()).await;
        if i == total / 3 {
            phases.push(docstore::Timestamp::now().0);
            children.push(worker(&bin, &s));
        }
        if i == 2 * total / 3 {
            phases.push(docstore::Timestamp::now().0);
            stop(children.remove(0));
        }
        upload(&s.store, i).await;
    }
    let done = wait_verified(&s.pg, total, Duration::from_secs(300)).await;
    for c in children {
        stop(c);
    }
    r.abort();
    assert_eq!(done.len(), total, "{} of {total} verified", done.len());
    println!();
    println!(
        "group changes: {total} exams at {pace}/s; 2 workers, a third joins at {} s, one leaves at {} s",
        secs / 3,
        2 * secs / 3
    );
    println!("| exams uploaded | count | upload → verified p50 | p99 |");
    println!("| --- | ---: | ---: | ---: |");
    let (join, leave) = (phases[0], phases[1]);
    let window = 10_000;
    // Uploads (by time) in [from, to).
    let rows = [
        ("steady, 2 workers (before the join)", 0, join),
        ("within 10 s after the join", join, join + window),
        ("within 10 s after the leave", leave, leave + window),
    ];
    for (name, from, to) in rows {
        let mut lat: Vec<i64> = done
            .iter()
            .filter(|d| d.0 >= from && d.0 < to)
            .map(|d| d.1 - d.0)
            .collect();
        if lat.is_empty() {
            println!("| {name} | 0 | | |");
            continue;
        }
        let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
        println!("| {name} | {} | {p50} ms | {p99} ms |", lat.len());
    }
}
