//! The whole pipeline in one process on the in-process bus — the embedded default's event
//! system: the outbox relay, the stamp, thumbnail and text stages (each its own consumer group,
//! joined into `file.processed`) and the index stage. Same runtime, same semantics as the Kafka
//! deployment; used by `docstore demo` and `docstore load`.

use std::sync::Arc;
use std::time::Duration;

use docstore::DocStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use docstore_bus::{EventBus, InProcessBus};
use docstore_pipeline::join::Joined;
use docstore_pipeline::observe::WorkerMetrics;
use docstore_pipeline::relay::OutboxRelay;
use docstore_pipeline::runtime::{RuntimeConfig, Stage, Worker};
use docstore_search::SearchIndex;
use docstore_stages::index::Indexer;
use docstore_stages::{Extractor, Stamper, Thumbnailer};

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
    /// Topics each stage reads, by stage name, in the order of `metrics`.
    topics: Vec<&'static [&'static str]>,
    bus: Arc<dyn EventBus>,
    /// Set when the bus is this process's own: then [`LocalPipeline::drained`] can count it.
    in_process: Option<Arc<InProcessBus>>,
    store: Arc<DocStore>,
    index: Arc<SearchIndex>,
    clinic: String,
}

/// What [`LocalPipeline::catch_up`] found and handed back to the stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CatchUp {
    /// Documents looked at.
    pub documents: u64,
    /// Latest versions still pending whose `file.uploaded` had already left the outbox: announced
    /// again (stages are idempotent; the join records `file.processed` once).
    pub reannounced: u64,
    /// Documents whose index entry was missing or outlived a delete: re-read from the store.
    pub reindexed: u64,
}

/// Reads an outbox or catch-up failure as a store error.
fn bus_error(e: docstore_bus::BusError) -> docstore::Error {
    docstore::Error::unavailable_from("bus", e.to_string(), e)
}

impl LocalPipeline {
    /// Starts the relay, the three stages and the indexer on `store` and `index`, on an
    /// in-process bus.
    pub fn start(store: Arc<DocStore>, index: Arc<SearchIndex>, config: LocalConfig) -> LocalPipeline {
        let bus = Arc::new(InProcessBus::new(config.partitions));
        let mut pipeline = LocalPipeline::start_on(bus.clone(), store, index, config);
        pipeline.in_process = Some(bus);
        pipeline
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
        let stages: Vec<(Arc<dyn Stage>, &'static [&'static str])> = vec![
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
                Arc::new(Indexer::new(store.clone(), index.clone(), config.clinic.clone())),
                &[docstore::outbox::FILE_PROCESSED, docstore::outbox::FILE_DELETED],
            ),
        ];
        let mut metrics = Vec::new();
        let mut read = Vec::new();
        for (stage, topics) in stages {
            read.push(topics);
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
        LocalPipeline {
            stop,
            tasks,
            metrics,
            topics: read,
            bus,
            in_process: None,
            store,
            index,
            clinic: config.clinic,
        }
    }

    /// Hands back what an earlier process left half done. The in-process bus forgets what it held
    /// when its process ends, so a version whose `file.uploaded` left the outbox but whose stages
    /// did not finish would wait forever: each document's latest version still pending is
    /// announced again, and a document the index lacks (or still holds after a delete) is re-read.
    /// One pass over the documents; `docstore reindex` rebuilds the whole index.
    pub async fn catch_up(&self) -> Result<CatchUp, docstore::Error> {
        let meta = self.store.metadata();
        let indexer = Indexer::new(self.store.clone(), self.index.clone(), self.clinic.clone());
        let mut report = CatchUp::default();
        let mut pending = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = meta.list_documents(after.as_deref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.document_id.clone());
            for doc in &page {
                report.documents += 1;
                let in_index = self
                    .index
                    .contains(&doc.document_id)
                    .map_err(|e| docstore::Error::unavailable_from("index", e.to_string(), e))?;
                if doc.deleted_at.is_some() {
                    if in_index {
                        self.reindex(&indexer, &doc.document_id).await?;
                        report.reindexed += 1;
                    }
                    continue;
                }
                let latest = meta.version(&doc.document_id, None).await?;
                match latest.state {
                    docstore::ProcessingState::Pending => pending.push(latest),
                    docstore::ProcessingState::Processed if !in_index => {
                        self.reindex(&indexer, &doc.document_id).await?;
                        report.reindexed += 1;
                    }
                    _ => {}
                }
            }
        }
        // Read after the versions, then the bus after the outbox. A version seen pending had its
        // outbox entry written in the same transaction, so the entry is either still queued (the
        // relay will send it) or was published before it was marked sent (it is on this
        // process's bus); only an entry sent by an earlier process is in neither. Reading in any
        // other order lets a version put meanwhile be announced twice.
        let queued: std::collections::HashSet<String> = meta
            .outbox_pending(usize::MAX)
            .await?
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        let on_bus: std::collections::HashSet<String> = self
            .in_process
            .as_ref()
            .map(|bus| {
                bus.messages(docstore::outbox::FILE_UPLOADED)
                    .iter()
                    .filter_map(|m| docstore_events::CloudEvent::decode(&m.payload).ok().map(|e| e.id))
                    .collect()
            })
            .unwrap_or_default();
        for latest in pending {
            let (id, payload) = docstore::outbox::file_uploaded(&latest);
            if !queued.contains(&id) && !on_bus.contains(&id) {
                let topic = docstore::outbox::FILE_UPLOADED;
                let message = docstore_pipeline::relay::message_of(topic, &latest.document_id, &id, &payload);
                self.bus.publish(message).await.map_err(bus_error)?;
                report.reannounced += 1;
            }
        }
        Ok(report)
    }

    async fn reindex(&self, indexer: &Indexer, document_id: &str) -> Result<(), docstore::Error> {
        indexer
            .refresh_document(document_id)
            .await
            .map(|_| ())
            .map_err(|e| docstore::Error::unavailable_from("index", e.to_string(), e))
    }

    /// True when nothing is left to do: the outbox is empty and every stage has handled (done,
    /// ignored or dead-lettered) every message of its topics. Only an in-process bus can be
    /// counted; on any other bus this is always false.
    pub async fn drained(&self) -> Result<bool, docstore::Error> {
        let Some(bus) = &self.in_process else {
            return Ok(false);
        };
        let meta = self.store.metadata();
        // Order matters: an empty outbox means every entry was published before this point, so
        // the counts below include it; a stage's handling writes its outbox entries (the join's
        // file.processed) before it counts as handled, so the second look catches those.
        if !meta.outbox_pending(1).await?.is_empty() {
            return Ok(false);
        }
        for ((_, m), topics) in self.metrics.iter().zip(&self.topics) {
            let published: u64 = topics.iter().map(|t| bus.messages(t).len() as u64).sum();
            let handled = m.processed.get() + m.ignored.get() + m.dead_lettered.get();
            if handled < published {
                return Ok(false);
            }
        }
        Ok(meta.outbox_pending(1).await?.is_empty())
    }

    /// Dead letters written so far, over every stage.
    pub fn dead_lettered(&self) -> u64 {
        self.metrics.iter().map(|(_, m)| m.dead_lettered.get()).sum()
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
