//! The whole pipeline in one process on the in-process bus — the embedded default's event
//! system: the outbox relay, the stamp, thumbnail and text stages (each its own consumer group,
//! joined into `file.processed`) and the index stage. Same runtime, same semantics as the Kafka
//! deployment; used by `docstore demo` and `docstore load`.

use std::sync::Arc;
use std::time::Duration;

use docstore::DocStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{EventBus, InProcessBus};
use crate::join::Joined;
use crate::observe::WorkerMetrics;
use crate::relay::OutboxRelay;
use crate::runtime::{RuntimeConfig, Stage, Worker};
use crate::search::SearchIndex;
use crate::stages::index::Indexer;
use crate::stages::{Extractor, Stamper, Thumbnailer};

/// What runs.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Clinic name (stamps, index).
    pub clinic: String,
    /// Partitions of the in-process topics (the stages' parallelism).
    pub partitions: u32,
    /// The text stage (with OCR settings when built with `ocr`).
    pub extractor: Extractor,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            clinic: "Clínica".into(),
            partitions: 4,
            extractor: Extractor::default(),
        }
    }
}

/// A running in-process pipeline; [`LocalPipeline::stop`] ends it cleanly.
pub struct LocalPipeline {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    metrics: Vec<(String, Arc<WorkerMetrics>)>,
}

impl LocalPipeline {
    /// Starts the relay, the three stages and the indexer on `store` and `index`, on an
    /// in-process bus.
    pub fn start(store: Arc<DocStore>, index: Arc<SearchIndex>, config: LocalConfig) -> LocalPipeline {
        let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::new(config.partitions));
        LocalPipeline::start_on(bus, store, index, config)
    }

    /// The same on `bus` (e.g. Kafka: `docstore load --bus kafka://…` runs every stage in this
    /// process, each in its own consumer group, as separate workers would).
    pub fn start_on(
        bus: Arc<dyn EventBus>,
        store: Arc<DocStore>,
        index: Arc<SearchIndex>,
        config: LocalConfig,
    ) -> LocalPipeline {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let relay = OutboxRelay::new(store.metadata().clone(), bus.clone(), 100);
        let relay_stop = stop.clone().cancelled_owned();
        tasks.push(tokio::spawn(async move {
            relay.run(Duration::from_millis(20), relay_stop).await
        }));
        let required: Vec<String> = ["stamp", "thumbnail", "text"].map(String::from).to_vec();
        let stages: Vec<(Arc<dyn Stage>, &[&str])> = vec![
            (
                Arc::new(Joined::new(
                    Stamper::new(config.clinic.clone()),
                    store.clone(),
                    required.clone(),
                )),
                &[docstore::outbox::FILE_UPLOADED],
            ),
            (
                Arc::new(Joined::new(
                    Thumbnailer::default(),
                    store.clone(),
                    required.clone(),
                )),
                &[docstore::outbox::FILE_UPLOADED],
            ),
            (
                Arc::new(Joined::new(config.extractor.clone(), store.clone(), required)),
                &[docstore::outbox::FILE_UPLOADED],
            ),
            (
                Arc::new(Indexer::new(store, index, config.clinic.clone())),
                &[docstore::outbox::FILE_PROCESSED, docstore::outbox::FILE_DELETED],
            ),
        ];
        let mut metrics = Vec::new();
        for (stage, topics) in stages {
            let name = stage.name().to_owned();
            let mut rc = RuntimeConfig::new(format!("docstore-{name}"), topics);
            rc.concurrency = config.partitions as usize;
            rc.poll_wait = Duration::from_millis(20);
            let worker = Worker::new(bus.clone(), stage, rc);
            metrics.push((name.clone(), worker.metrics()));
            let stop = stop.clone();
            tasks.push(tokio::spawn(
                async move { worker.run_until_cancelled(&stop).await },
            ));
        }
        LocalPipeline { stop, tasks, metrics }
    }

    /// Each stage's metrics (processed, failed, dead-lettered …), by stage name.
    pub fn metrics(&self) -> &[(String, Arc<WorkerMetrics>)] {
        &self.metrics
    }

    /// Stops every task (in-flight work finishes or is abandoned within the runtime's grace).
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
