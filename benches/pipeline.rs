//! Events per second through the worker runtime with a no-op stage, on the in-process bus and —
//! when `DOCSTORE_TEST_KAFKA` names a broker — on Apache Kafka, in the same run.
//!
//! Each iteration starts a fresh consumer group on a topic filled beforehand and times from the
//! first event the stage sees to the last (group join and assignment are not counted).
//!
//! `DOCSTORE_TEST_KAFKA=127.0.0.1:9092 cargo bench -p docstore-benches --bench pipeline`

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use docstore_bus::kafka::{KafkaBus, KafkaConfig};
use docstore_bus::{EventBus, InProcessBus, Message};
use docstore_events::CloudEvent;
use docstore_pipeline::runtime::{RuntimeConfig, Stage, StageError, Worker};
use tokio::sync::Mutex;

/// Counts events; records when the first and the `target`-th arrived.
struct NoOp {
    seen: AtomicUsize,
    target: usize,
    first: Mutex<Option<Instant>>,
    done: tokio::sync::Notify,
}

#[async_trait]
impl Stage for NoOp {
    fn name(&self) -> &str {
        "noop"
    }
    async fn handle(&self, _event: &CloudEvent) -> Result<(), StageError> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            *self.first.lock().await = Some(Instant::now());
        }
        if n == self.target {
            self.done.notify_one();
        }
        Ok(())
    }
}

fn event(i: usize) -> Message {
    let doc = format!("doc-{}", i % 500);
    let ev = serde_json::json!({
        "specversion": "1.0", "id": format!("file.uploaded:{i}"), "source": "urn:bench",
        "type": "file.uploaded", "subject": doc,
        "data": {"document_id": doc, "version": i / 500 + 1, "version_id": format!("v{i}"),
                 "patient_id": "p", "exam_id": "e", "kind": "report", "media_type": "application/pdf",
                 "size": 1, "sha256": "00"}
    });
    Message {
        topic: "file.uploaded".into(),
        key: doc,
        payload: serde_json::to_vec(&ev).unwrap(),
        headers: vec![(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        )],
    }
}

/// Time for one fresh group to handle `n` events already on the bus.
async fn drain(bus: Arc<dyn EventBus>, n: usize) -> Duration {
    let stage = Arc::new(NoOp {
        seen: AtomicUsize::new(0),
        target: n,
        first: Mutex::new(None),
        done: tokio::sync::Notify::new(),
    });
    let mut config = RuntimeConfig::new(
        format!("bench-{}", uuid::Uuid::new_v4().simple()),
        &["file.uploaded"],
    );
    config.poll_wait = Duration::from_millis(50);
    let worker = Worker::new(bus, stage.clone(), config);
    let done = stage.done.notified();
    tokio::pin!(done);
    let run = worker.run(async {
        done.await;
    });
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("drained in time")
        .expect("bus");
    let first = stage.first.lock().await.expect("saw events");
    first.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("runtime_noop");
    group.sample_size(10);

    let n_mem = 20_000;
    let mem: Arc<dyn EventBus> = Arc::new(InProcessBus::new(6));
    rt.block_on(async {
        for i in 0..n_mem {
            mem.publish(event(i)).await.unwrap();
        }
    });
    group.throughput(Throughput::Elements(n_mem as u64));
    group.bench_function("in_process", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(drain(mem.clone(), n_mem))).sum())
    });

    if let Ok(brokers) = std::env::var("DOCSTORE_TEST_KAFKA") {
        let n_kafka = 20_000;
        let mut cfg = KafkaConfig::new(brokers);
        cfg.topic_prefix = format!("bench{}.", uuid::Uuid::new_v4().simple());
        let kafka: Arc<dyn EventBus> = Arc::new(KafkaBus::new(cfg).unwrap());
        rt.block_on(async {
            // Concurrent publishes: the idempotent producer keeps per-partition order.
            for chunk in (0..n_kafka).collect::<Vec<_>>().chunks(1000) {
                let sends = chunk.iter().map(|i| kafka.publish(event(*i)));
                for r in futures_join(sends).await {
                    r.unwrap();
                }
            }
        });
        group.throughput(Throughput::Elements(n_kafka as u64));
        group.bench_function("kafka", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(drain(kafka.clone(), n_kafka)))
                    .sum()
            })
        });
    } else {
        eprintln!("DOCSTORE_TEST_KAFKA not set: Kafka skipped");
    }
    group.finish();
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.collect();
    let mut out = Vec::with_capacity(handles.len());
    // Polled together by one join: the sends overlap.
    for r in futures::future::join_all(handles).await {
        out.push(r);
    }
    out
}

criterion_group!(benches, bench);
criterion_main!(benches);
