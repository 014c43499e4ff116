//! Writing a stage: a step of your own that the worker runtime runs for every `file.uploaded`,
//! with the same at-least-once delivery, retries and dead letters as the built-in stages. This
//! one flags large uploads for review. Documents are put on an embedded store, the outbox relay
//! publishes their events to the in-process bus, and a `Worker` runs the stage until the events
//! are handled. Run: `cargo run -p docstore-pipeline --example write_a_stage`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use docstore::{DocStore, ExamId, Identity, PatientId, PutRequest};
use docstore_bus::{EventBus, InProcessBus};
use docstore_events::CloudEvent;
use docstore_pipeline::relay::OutboxRelay;
use docstore_pipeline::runtime::{RuntimeConfig, Stage, StageError, Worker};

/// Uploads above this size are flagged.
const LARGE: u64 = 4096;

/// The stage: decodes the event's typed data and keeps the documents to review.
#[derive(Default)]
struct FlagLarge {
    flagged: Mutex<Vec<String>>,
}

#[async_trait]
impl Stage for FlagLarge {
    fn name(&self) -> &str {
        "flag-large"
    }

    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError> {
        // A malformed event will not get better with retries: permanent, so it is dead-lettered.
        let up = event
            .file_uploaded()
            .map_err(|e| StageError::Permanent(e.to_string()))?;
        if up.size > LARGE {
            let mut flagged = self.flagged.lock().expect("not poisoned");
            // Delivery is at least once: handling an event twice must change nothing.
            if !flagged.contains(&up.document_id) {
                flagged.push(up.document_id);
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = DocStore::init_local(&dir.path().join("data")).await?;
    let who = Identity::new("staff:example");
    for (exam, size) in [("exam-1", 100), ("exam-2", 10_000), ("exam-3", 50_000)] {
        let request =
            PutRequest::new(PatientId::new("patient-9")?, ExamId::new(exam)?).media_type("text/plain");
        store.put(&who, request, &vec![b'x'; size][..]).await?;
    }

    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(4));
    let relay = OutboxRelay::new(store.metadata().clone(), bus.clone(), 100);
    let stage = Arc::new(FlagLarge::default());
    let worker = Worker::new(
        bus,
        stage.clone(),
        RuntimeConfig::new("flag-large", &["file.uploaded"]),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop.cancelled()).await }
    });
    let published = relay.run_once().await?;
    // Bounded wait for the worker to catch up.
    for _ in 0..100 {
        if stage.flagged.lock().expect("not poisoned").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    running.await??;
    let flagged = stage.flagged.lock().expect("not poisoned").clone();
    println!("{published} events published; flagged for review: {flagged:?}");
    assert_eq!(flagged.len(), 2, "the two uploads above {LARGE} bytes");
    Ok(())
}
