//! The worker runtime every stage runs in: poll a batch, handle it with bounded concurrency while
//! keeping per-document order, retry transient failures with backoff, dead-letter permanent ones,
//! and ack only what is fully handled.
//!
//! - Polls of at most [`RuntimeConfig::batch`] (10) deliveries.
//! - Deliveries of one partition are handled one after another, in a lane of their own (a
//!   partition holds whole documents, so versions of a document stay in order); at most
//!   [`RuntimeConfig::concurrency`] lanes run at once. A lane does not wait for the others: a
//!   poll hands out a fetched partition's messages together, so a worker that waited for each
//!   batch ran one partition at a time on a backlog. Polling pauses while `2 × batch ×
//!   concurrency` deliveries are unacked: back-pressure.
//! - Transient errors: at most [`RuntimeConfig::max_attempts`] (3) attempts, backoff 1 s then ×2,
//!   with ±20 % jitter. Permanent errors (bad input, unknown document), decode errors and exhausted
//!   retries go to `<topic>.dlq` at once, with the error, the attempt count and the original
//!   headers. Either way the delivery is then acked.
//! - Shutdown: stop polling, let the lanes in flight finish (or abandon them after
//!   [`RuntimeConfig::shutdown_grace`]: unacked work is redelivered), then return.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use docstore_bus::{BusError, Delivery, EventBus, Message, Subscription};
use docstore_events::CloudEvent;

/// Header names of dead letters.
pub mod dlq_headers {
    /// Why the message was dead-lettered.
    pub const ERROR: &str = "dlq.error";
    /// `permanent`, `decode` or `exhausted`.
    pub const KIND: &str = "dlq.kind";
    /// Attempts made.
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// Stage that failed.
    pub const STAGE: &str = "dlq.stage";
    /// Topic the message came from (where `dlq replay` sends it back).
    pub const ORIGINAL_TOPIC: &str = "dlq.original_topic";
}

/// How often the consumer lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Suffix of dead-letter topics.
pub const DLQ_SUFFIX: &str = ".dlq";

/// How a stage failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// Worth retrying (a backend is down, a timeout).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (not a PDF, encrypted PDF, unknown document).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// One processing step, run for every event of the topics its worker reads. Must be idempotent:
/// the runtime delivers at least once.
#[async_trait]
pub trait Stage: Send + Sync {
    /// Stable name (also the consumer group by default).
    fn name(&self) -> &str;
    /// Handles one event.
    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError>;
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Consumer group.
    pub group: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Deliveries per poll (≤ 10 by design).
    pub batch: usize,
    /// Partitions handled at once (lanes).
    pub concurrency: usize,
    /// Attempts per delivery, including the first.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each further failure.
    pub backoff: Duration,
    /// How long a poll waits for new messages.
    pub poll_wait: Duration,
    /// How long shutdown waits for the lanes in flight.
    pub shutdown_grace: Duration,
}

impl RuntimeConfig {
    /// The design's defaults for a stage reading `topics`.
    pub fn new(group: impl Into<String>, topics: &[&str]) -> Self {
        RuntimeConfig {
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            batch: 10,
            concurrency: 4,
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            poll_wait: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

pub use crate::observe::WorkerMetrics;

/// A worker: one stage, one group member.
pub struct Worker {
    bus: Arc<dyn EventBus>,
    stage: Arc<dyn Stage>,
    config: RuntimeConfig,
    metrics: Arc<WorkerMetrics>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("stage", &self.stage.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A partition's lane: its topic and partition.
type LaneKey = (String, u32);

/// What a lane did with its deliveries.
struct LaneDone {
    lane: LaneKey,
    /// Deliveries it was given.
    taken: usize,
    /// The fully handled ones, in order (to ack).
    handled: Vec<Delivery>,
    /// Why it stopped before the end: the rest are left unacked, to be redelivered.
    stopped: Option<BusError>,
}

/// What ended one wait of the worker's loop.
enum Wake {
    Stop,
    Lane(LaneDone),
    Polled(Result<Vec<Delivery>, BusError>),
}

enum Outcome {
    Done,
    DeadLetter {
        kind: &'static str,
        error: String,
        attempts: u32,
    },
}

impl Worker {
    /// A worker running `stage` over `bus`.
    pub fn new(bus: Arc<dyn EventBus>, stage: Arc<dyn Stage>, config: RuntimeConfig) -> Self {
        Worker {
            bus,
            stage,
            config,
            metrics: Arc::default(),
        }
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` resolves, then closes the subscription (acks made durable, group
    /// left). Returns an error when the bus fails (including when a dead letter cannot be
    /// published): the caller restarts the worker, which resumes from the last acked position.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), BusError> {
        let mut sub = self
            .bus
            .subscribe(&self.config.group, &self.config.topics)
            .await?;
        let result = self.run_with(sub.as_mut(), shutdown).await;
        self.metrics.ready.store(false, Ordering::Relaxed);
        let closed = sub.close().await;
        result.and(closed)
    }

    /// Runs until `stop` is cancelled, rejoining the group after a bus failure (backoff 0.5 s,
    /// doubling to 30 s, jittered; reset after a minute of healthy running). A failure while
    /// stopping (the last acks or leaving the group) is logged, not retried: the unacked work is
    /// redelivered to the next owner. The one loop the worker binary, the in-process pipeline
    /// and the service share, so none of them polls a finished shutdown future or gives up on a
    /// broker that blinked.
    pub async fn run_until_cancelled(&self, stop: &tokio_util::sync::CancellationToken) {
        let mut backoff = REJOIN_FIRST;
        loop {
            let started = Instant::now();
            match self.run(stop.cancelled()).await {
                Ok(()) => return,
                Err(e) if stop.is_cancelled() => {
                    tracing::warn!(stage = self.stage.name(), error = %e,
                        "bus failure while stopping; unacked work is redelivered");
                    return;
                }
                Err(e) => {
                    self.metrics.rejoins.inc();
                    tracing::warn!(stage = self.stage.name(), error = %e, "bus failure; rejoining");
                    let wait = rejoin_wait(&mut backoff, started.elapsed());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(jitter(wait)) => {}
                    }
                }
            }
        }
    }

    async fn run_with(
        &self,
        sub: &mut dyn Subscription,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BusError> {
        use futures::StreamExt;
        tokio::pin!(shutdown);
        self.metrics.ready.store(true, Ordering::Relaxed);
        let mut lag_checked = Instant::now();
        let lanes = self.config.concurrency.max(1);
        // Deliveries polled and not acked yet (waiting or in a lane), at most `cap`. Twice the
        // lanes' share of a batch: a poll hands out a fetched partition's messages together
        // (librdkafka: a record batch, often a dozen or more), and the next partitions' come
        // only after them.
        let cap = 2 * self.config.batch.max(1) * lanes;
        let mut held = 0usize;
        let mut waiting: BTreeMap<LaneKey, Vec<Delivery>> = BTreeMap::new();
        let mut busy: BTreeSet<LaneKey> = BTreeSet::new();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            // A partition with work waiting and no lane gets one, up to the concurrency.
            while running.len() < lanes {
                let Some(key) = waiting.keys().find(|k| !busy.contains(*k)).cloned() else {
                    break;
                };
                let deliveries = waiting.remove(&key).unwrap_or_default();
                busy.insert(key.clone());
                running.push(self.run_lane(key, deliveries));
            }
            if lag_checked.elapsed() >= LAG_EVERY {
                lag_checked = Instant::now();
                if let Some(lag) = sub.lag().await {
                    self.metrics.lag.set(lag as i64);
                }
            }
            let wake = tokio::select! {
                _ = &mut shutdown => Wake::Stop,
                Some(done) = running.next(), if !running.is_empty() => Wake::Lane(done),
                b = sub.poll(self.config.batch, self.config.poll_wait), if held < cap => Wake::Polled(b),
            };
            match wake {
                Wake::Polled(Err(e)) => {
                    // The lanes in flight still finish and ack; the caller then rejoins.
                    self.finish_lanes(sub, &mut running).await?;
                    return Err(e);
                }
                Wake::Polled(Ok(batch)) => {
                    held += batch.len();
                    for d in batch {
                        waiting
                            .entry((d.message.topic.clone(), d.partition))
                            .or_default()
                            .push(d);
                    }
                }
                Wake::Lane(done) => {
                    busy.remove(&done.lane);
                    held -= done.taken;
                    Self::ack_lane(sub, done).await?;
                }
                Wake::Stop => {
                    self.finish_lanes(sub, &mut running).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Lets the lanes in flight finish and acks what they handled, within the grace period;
    /// what is unacked (waiting, or in a lane abandoned) is redelivered to the partition's next
    /// owner.
    async fn finish_lanes<F: std::future::Future<Output = LaneDone>>(
        &self,
        sub: &mut dyn Subscription,
        running: &mut futures::stream::FuturesUnordered<F>,
    ) -> Result<(), BusError> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while !running.is_empty() {
            match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(Some(done)) => Self::ack_lane(sub, done).await?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(stage = self.stage.name(), "abandoned work in flight");
                    break;
                }
            }
        }
        Ok(())
    }

    async fn ack_lane(sub: &mut dyn Subscription, done: LaneDone) -> Result<(), BusError> {
        for d in &done.handled {
            match sub.ack(d).await {
                Ok(()) => {}
                // The partition moved during the lane: its new owner redoes the work
                // (stages are idempotent); never store an offset for work we no longer own.
                Err(BusError::Revoked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // A lane stopped short (its dead letter could not be published): acking anything
        // later from its partition would skip that message, so stop; the restart resumes at the gap.
        match done.stopped {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Handles one partition's deliveries in order.
    async fn run_lane(&self, lane: LaneKey, deliveries: Vec<Delivery>) -> LaneDone {
        let taken = deliveries.len();
        let mut handled = Vec::with_capacity(taken);
        for d in deliveries {
            let span = tracing::info_span!(
                "event",
                stage = self.stage.name(),
                // The key is the document id: a caught parser panic, logged inside
                // this span, then names the document and the trace.
                document = %d.message.key,
                trace_id = trace_id(&d.message.headers).unwrap_or(""),
                partition = d.partition,
                offset = d.offset,
            );
            match self.handle_one(&d).instrument(span).await {
                Ok(()) => handled.push(d),
                // Could not even dead-letter (bus down): stop this partition here so
                // nothing after it is acked out of order; it is redelivered.
                Err(e) => {
                    tracing::warn!(error = %e, "dead-letter publish failed");
                    return LaneDone {
                        lane,
                        taken,
                        handled,
                        stopped: Some(e),
                    };
                }
            }
        }
        LaneDone {
            lane,
            taken,
            handled,
            stopped: None,
        }
    }

    async fn handle_one(&self, d: &Delivery) -> Result<(), BusError> {
        let outcome = match CloudEvent::decode(&d.message.payload) {
            Err(e) => Outcome::DeadLetter {
                kind: "decode",
                error: e.to_string(),
                attempts: 0,
            },
            Ok(ev) if ev.event_type.is_ignored() => {
                self.metrics.ignored.inc();
                Outcome::Done
            }
            Ok(ev) => self.attempt(&ev).await,
        };
        match outcome {
            Outcome::Done => Ok(()),
            Outcome::DeadLetter {
                kind,
                error,
                attempts,
            } => {
                let mut headers = d.message.headers.clone();
                headers.extend([
                    (dlq_headers::ERROR.to_owned(), error),
                    (dlq_headers::KIND.to_owned(), kind.to_owned()),
                    (dlq_headers::ATTEMPTS.to_owned(), attempts.to_string()),
                    (dlq_headers::STAGE.to_owned(), self.stage.name().to_owned()),
                    (dlq_headers::ORIGINAL_TOPIC.to_owned(), d.message.topic.clone()),
                ]);
                self.bus
                    .publish(Message {
                        topic: format!("{}{DLQ_SUFFIX}", d.message.topic),
                        key: d.message.key.clone(),
                        payload: d.message.payload.clone(),
                        headers,
                    })
                    .await?;
                self.metrics.dead_lettered.inc();
                // One line per dead letter, so failures show in the logs and not only in metrics
                // and `dlq list`: ids and the error class, never content (the error text, which a
                // parser may fill with bytes of the file, stays in the dead letter's headers).
                let version = serde_json::from_slice::<serde_json::Value>(&d.message.payload)
                    .ok()
                    .and_then(|v| v["data"]["version"].as_u64());
                tracing::warn!(
                    document = %d.message.key,
                    version,
                    stage = self.stage.name(),
                    error_class = kind,
                    attempts,
                    trace_id = trace_id(&d.message.headers).unwrap_or(""),
                    topic = %d.message.topic,
                    "dead-lettered"
                );
                Ok(())
            }
        }
    }

    async fn attempt(&self, ev: &CloudEvent) -> Outcome {
        let mut backoff = self.config.backoff;
        let max = self.config.max_attempts.max(1);
        for attempt in 1..=max {
            let started = Instant::now();
            match self.stage.handle(ev).await {
                Ok(()) => {
                    self.metrics.processed.inc();
                    self.metrics.observe_latency(started.elapsed().as_secs_f64());
                    return Outcome::Done;
                }
                Err(StageError::Permanent(error)) => {
                    self.metrics.failed.inc();
                    return Outcome::DeadLetter {
                        kind: "permanent",
                        error,
                        attempts: attempt,
                    };
                }
                Err(StageError::Transient(error)) => {
                    self.metrics.failed.inc();
                    if attempt == max {
                        return Outcome::DeadLetter {
                            kind: "exhausted",
                            error,
                            attempts: attempt,
                        };
                    }
                    self.metrics.retried.inc();
                    tracing::info!(stage = self.stage.name(), event = %ev.id, attempt, "retrying after a transient error");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff *= 2;
                }
            }
        }
        unreachable!("the loop returns on the last attempt")
    }
}

/// Resolves on SIGTERM or SIGINT: the one graceful-shutdown trigger of the workers, the relay,
/// `docstore process` and the HTTP service. Where signal handlers cannot be installed (a sandbox
/// that forbids them) it waits for Ctrl-C instead.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // No signal handlers could be installed: Ctrl-C is still an orderly stop.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), for logs.
fn trace_id(headers: &[(String, String)]) -> Option<&str> {
    let (_, tp) = headers.iter().find(|(k, _)| k == "traceparent")?;
    let id = tp.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The first wait before rejoining after a bus failure; it doubles per failure up to
/// [`REJOIN_MAX`].
const REJOIN_FIRST: Duration = Duration::from_millis(500);
const REJOIN_MAX: Duration = Duration::from_secs(30);
/// A run this long was healthy: the next failure waits [`REJOIN_FIRST`] again.
const REJOIN_HEALTHY: Duration = Duration::from_secs(60);

/// How long to wait before rejoining after a run of `ran_for` that ended in a bus failure, and
/// the next backoff: doubling to a cap, back to the first after a healthy run.
fn rejoin_wait(backoff: &mut Duration, ran_for: Duration) -> Duration {
    if ran_for >= REJOIN_HEALTHY {
        *backoff = REJOIN_FIRST;
    }
    let wait = *backoff;
    *backoff = (*backoff * 2).min(REJOIN_MAX);
    wait
}

/// ±20 % jitter, so workers that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    let spread = ms / 5;
    Duration::from_millis(ms - spread + rand::random_range(0..=2 * spread))
}

/// Sends at most `max` dead letters back to their original topic (`docstore dlq replay`): the
/// topic `dlq_topic` serves, never another one a letter's header names (those are skipped,
/// logged). Returns how many were sent. Reads the DLQ as its own consumer group, so each dead
/// letter is replayed once.
/// The bound matters: a message that fails again while the replay runs is dead-lettered anew and
/// must wait for the next replay, not loop forever.
pub async fn replay_dead_letters(
    bus: &dyn EventBus,
    dlq_topic: &str,
    max: usize,
    wait: Duration,
) -> Result<usize, BusError> {
    let mut sub = bus
        .subscribe("docstore-dlq-replay", &[dlq_topic.to_owned()])
        .await?;
    let mut replayed = 0;
    while replayed < max {
        let batch = sub.poll((max - replayed).min(100), wait).await?;
        if batch.is_empty() {
            break;
        }
        for d in batch {
            // A dead-letter topic is fed by one topic only, so that is the only one its letters go
            // back to: a letter whose header names another (`exam.result.ready`, say) was not
            // written by a worker, and replaying it would publish what its writer chose.
            let named = d
                .message
                .headers
                .iter()
                .find(|(k, _)| k == dlq_headers::ORIGINAL_TOPIC)
                .map(|(_, v)| v.as_str());
            let Some(original) = dlq_topic
                .strip_suffix(DLQ_SUFFIX)
                .filter(|t| named.is_none_or(|n| n == *t))
                .map(str::to_owned)
            else {
                tracing::warn!(dlq = dlq_topic, key = %d.message.key,
                    "dead letter names another original topic than its queue's; not replayed");
                sub.ack(&d).await?;
                continue;
            };
            let headers = d
                .message
                .headers
                .iter()
                .filter(|(k, _)| !k.starts_with("dlq."))
                .cloned()
                .collect();
            bus.publish(Message {
                topic: original,
                key: d.message.key.clone(),
                payload: d.message.payload.clone(),
                headers,
            })
            .await?;
            sub.ack(&d).await?;
            replayed += 1;
        }
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejoining_backs_off_doubling_to_a_cap_and_resets_after_a_healthy_run() {
        let short = Duration::from_secs(1);
        let mut backoff = REJOIN_FIRST;
        let waits: Vec<Duration> = (0..10).map(|_| rejoin_wait(&mut backoff, short)).collect();
        assert_eq!(waits[..4], [500, 1000, 2000, 4000].map(Duration::from_millis));
        assert_eq!(waits[9], REJOIN_MAX, "capped");
        assert_eq!(
            rejoin_wait(&mut backoff, REJOIN_HEALTHY - Duration::from_millis(1)),
            REJOIN_MAX,
            "a run just short of healthy keeps the backoff"
        );
        assert_eq!(
            rejoin_wait(&mut backoff, REJOIN_HEALTHY),
            REJOIN_FIRST,
            "a healthy run resets it"
        );
        assert_eq!(rejoin_wait(&mut backoff, short), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_within_a_fifth() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        let waits: Vec<u128> = (0..500)
            .map(|_| jitter(Duration::from_secs(1)).as_millis())
            .collect();
        assert!(waits.iter().all(|w| (800..=1200).contains(w)), "{waits:?}");
        assert!(waits.iter().any(|w| *w < 900), "reaches the low end");
        assert!(waits.iter().any(|w| *w > 1100), "reaches the high end");
    }

    #[test]
    fn trace_ids_come_from_a_well_formed_traceparent_only() {
        let h = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let id = "0af7651916cd43dd8448eb211c80319c";
        let good = h("traceparent", &format!("00-{id}-b7ad6b7169203331-01"));
        assert_eq!(trace_id(&good), Some(id));
        assert_eq!(
            trace_id(&h("tracestate", &format!("00-{id}-b7ad6b7169203331-01"))),
            None
        );
        assert_eq!(
            trace_id(&h("traceparent", "00-0af7651916cd43dd-b7ad6b7169203331-01")),
            None,
            "short"
        );
        assert_eq!(
            trace_id(&h(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01"
            )),
            None,
            "not hex"
        );
        assert_eq!(trace_id(&h("traceparent", "garbage")), None);
        assert_eq!(trace_id(&[]), None);
    }

    #[derive(Debug)]
    struct Named;

    #[async_trait]
    impl Stage for Named {
        fn name(&self) -> &str {
            "named-stage"
        }
        async fn handle(&self, _: &CloudEvent) -> Result<(), StageError> {
            Ok(())
        }
    }

    #[test]
    fn a_worker_shows_its_stage_and_config() {
        let bus = Arc::new(docstore_bus::InProcessBus::new(1));
        let worker = Worker::new(
            bus,
            Arc::new(Named),
            RuntimeConfig::new("group-x", &["file.uploaded"]),
        );
        let shown = format!("{worker:?}");
        assert!(shown.starts_with("Worker"), "{shown}");
        assert!(
            shown.contains("named-stage") && shown.contains("group-x"),
            "{shown}"
        );
    }

    /// SIGTERM and SIGINT each end the wait, and nothing else does.
    #[tokio::test]
    async fn shutdown_signal_waits_for_sigterm_or_sigint() {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers for both stay installed for this process from here on, so a signal sent
        // before `shutdown_signal` listens is caught, not fatal.
        let _term = signal(SignalKind::terminate()).unwrap();
        let _int = signal(SignalKind::interrupt()).unwrap();
        for sig in ["-TERM", "-INT"] {
            let waiting = tokio::spawn(shutdown_signal());
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!waiting.is_finished(), "returned before any signal");
            let start = Instant::now();
            while !waiting.is_finished() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{sig} did not end the wait"
                );
                let sent = std::process::Command::new("kill")
                    .args([sig, &std::process::id().to_string()])
                    .status()
                    .unwrap();
                assert!(sent.success());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
