//! The worker runtime, the same tests on the in-process bus and on a real Kafka broker
//! (`DOCSTORE_TEST_KAFKA`, started by scripts/services.sh): no loss across a rebalance, retries
//! with backoff, dead letters (permanent, exhausted, malformed) and their replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use docstore_bus::kafka::{KafkaBus, KafkaConfig};
use docstore_bus::{EventBus, InProcessBus, Message, Subscription};
use docstore_events::CloudEvent;
use docstore_pipeline::runtime::{
    RuntimeConfig, Stage, StageError, Worker, dlq_headers, replay_dead_letters,
};
use tokio::sync::watch;

fn uploaded(doc: &str, version: u64) -> Message {
    let ev = serde_json::json!({
        "specversion": "1.0", "id": format!("file.uploaded:{doc}:{version}"), "source": "urn:test",
        "type": "file.uploaded", "subject": doc,
        "data": {"document_id": doc, "version": version, "version_id": format!("{doc}-{version}"),
                 "patient_id": "p", "exam_id": "e", "kind": "report", "media_type": "application/pdf",
                 "size": 1, "sha256": "00"}
    });
    Message {
        topic: "file.uploaded".into(),
        key: doc.into(),
        payload: serde_json::to_vec(&ev).unwrap(),
        headers: vec![(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        )],
    }
}

/// Records every handled (document, version), with a configurable failure script.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, u64, Instant)>>,
    /// document → remaining transient failures
    transient: Mutex<HashMap<String, u32>>,
    /// documents that fail permanently
    permanent: Mutex<Vec<String>>,
    delay: Duration,
}

#[async_trait]
impl Stage for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError> {
        let f = event
            .file_uploaded()
            .map_err(|e| StageError::Permanent(e.to_string()))?;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.seen
            .lock()
            .unwrap()
            .push((f.document_id.clone(), f.version, Instant::now()));
        if self.permanent.lock().unwrap().contains(&f.document_id) {
            return Err(StageError::Permanent("not a PDF".into()));
        }
        if let Some(n) = self.transient.lock().unwrap().get_mut(&f.document_id)
            && *n > 0
        {
            *n -= 1;
            return Err(StageError::Transient("backend down".into()));
        }
        Ok(())
    }
}

/// A Kafka bus on the test broker with topics of its own (a fresh prefix), or `None` (skip) when
/// no broker is configured and services are not required.
fn kafka() -> Option<Arc<dyn EventBus>> {
    let mut c = KafkaConfig::new(docstore_testkit::service("DOCSTORE_TEST_KAFKA")?);
    c.partitions = 8;
    c.topic_prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    Some(Arc::new(KafkaBus::new(c).unwrap()))
}

/// Reads a topic as a group of its own, keeping everything seen.
struct Tap {
    sub: Box<dyn Subscription>,
    seen: Vec<Message>,
}

impl Tap {
    async fn new(bus: &dyn EventBus, topic: &str) -> Tap {
        let group = format!("tap-{}", uuid::Uuid::new_v4().simple());
        Tap {
            sub: bus.subscribe(&group, &[topic.to_owned()]).await.unwrap(),
            seen: Vec::new(),
        }
    }

    async fn refresh(&mut self) {
        for d in self.sub.poll(100, Duration::from_millis(100)).await.unwrap() {
            self.sub.ack(&d).await.unwrap();
            self.seen.push(d.message);
        }
    }

    /// Waits until at least `n` messages were seen; then a little longer, to catch extras.
    async fn wait_for(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let start = Instant::now();
        while self.seen.len() < n {
            assert!(
                start.elapsed() < timeout,
                "timed out: {} of {n} messages",
                self.seen.len()
            );
            self.refresh().await;
        }
        for _ in 0..5 {
            self.refresh().await;
        }
        self.seen.clone()
    }
}

fn config(backoff_ms: u64) -> RuntimeConfig {
    // A group per test run: tests share the broker and run at once.
    let mut c = RuntimeConfig::new(
        format!("recorders-{}", uuid::Uuid::new_v4().simple()),
        &["file.uploaded"],
    );
    c.backoff = Duration::from_millis(backoff_ms);
    c.poll_wait = Duration::from_millis(20);
    c
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_in_process() {
    thousand_events_two_workers_rebalance_nothing_lost(Arc::new(InProcessBus::new(8))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_kafka() {
    let Some(bus) = kafka() else { return };
    thousand_events_two_workers_rebalance_nothing_lost(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_replay_in_process() {
    retries_with_backoff_then_dead_letters_and_replays(Arc::new(InProcessBus::new(4))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_replay_kafka() {
    let Some(bus) = kafka() else { return };
    retries_with_backoff_then_dead_letters_and_replays(bus).await;
}

async fn thousand_events_two_workers_rebalance_nothing_lost(bus: Arc<dyn EventBus>) {
    let mut dlq = Tap::new(bus.as_ref(), "file.uploaded.dlq").await;
    let stage = Arc::new(Recorder {
        delay: Duration::from_millis(1),
        ..Default::default()
    });
    let (stop_a, rx_a) = watch::channel(false);
    // One group: b joins a's group late, a leaves early.
    let group = config(10);
    let a = Worker::new(bus.clone(), stage.clone(), group.clone());
    let ha = tokio::spawn(async move {
        a.run(async move {
            let mut r = rx_a;
            let _ = r.changed().await;
        })
        .await
    });
    for i in 0..1000u64 {
        bus.publish(uploaded(&format!("doc-{}", i % 200), i / 200 + 1))
            .await
            .unwrap();
    }
    wait_until("a first share", Duration::from_secs(60), || {
        stage.seen.lock().unwrap().len() >= 200
    })
    .await;
    // Second worker joins late (rebalance), then the first leaves early (rebalance again).
    let (stop_b, rx_b) = watch::channel(false);
    let b = Worker::new(bus.clone(), stage.clone(), group);
    let hb = tokio::spawn(async move {
        b.run(async move {
            let mut r = rx_b;
            let _ = r.changed().await;
        })
        .await
    });
    wait_until("more progress", Duration::from_secs(60), || {
        stage.seen.lock().unwrap().len() >= 600
    })
    .await;
    stop_a.send(true).unwrap();
    ha.await.unwrap().unwrap();
    let seen_distinct = || {
        let s = stage.seen.lock().unwrap();
        s.iter()
            .map(|(d, v, _)| (d.clone(), *v))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    wait_until("all 1000", Duration::from_secs(90), || seen_distinct() == 1000).await;
    stop_b.send(true).unwrap();
    hb.await.unwrap().unwrap();
    // Per document, versions were first handled in order.
    let seen = stage.seen.lock().unwrap().clone();
    let mut first: HashMap<String, Vec<u64>> = HashMap::new();
    for (d, v, _) in seen.iter() {
        let vs = first.entry(d.clone()).or_default();
        if !vs.contains(v) {
            vs.push(*v);
        }
    }
    for (d, vs) in first {
        assert_eq!(vs, vec![1, 2, 3, 4, 5], "order of {d}");
    }
    dlq.refresh().await;
    assert!(dlq.seen.is_empty(), "nothing dead-lettered");
}

async fn retries_with_backoff_then_dead_letters_and_replays(bus: Arc<dyn EventBus>) {
    let mut dlq_tap = Tap::new(bus.as_ref(), "file.uploaded.dlq").await;
    let stage = Arc::new(Recorder::default());
    stage.transient.lock().unwrap().insert("flaky".into(), 2);
    stage.transient.lock().unwrap().insert("down".into(), 99);
    stage.permanent.lock().unwrap().push("broken".into());
    let worker = Worker::new(bus.clone(), stage.clone(), config(1000));
    let metrics = worker.metrics();
    let (stop, rx) = watch::channel(false);
    let h = tokio::spawn(async move {
        worker
            .run(async move {
                let mut r = rx;
                let _ = r.changed().await;
            })
            .await
    });
    for doc in ["flaky", "broken", "down"] {
        bus.publish(uploaded(doc, 1)).await.unwrap();
    }
    for raw in [
        &b"not json"[..],
        br#"{"specversion":"0.3","id":"x","source":"s","type":"file.uploaded"}"#,
        br#"{"specversion":"1.0","source":"s","type":"file.uploaded"}"#,
    ] {
        bus.publish(Message {
            topic: "file.uploaded".into(),
            key: "bad".into(),
            payload: raw.to_vec(),
            headers: vec![],
        })
        .await
        .unwrap();
    }
    bus.publish(uploaded("after-bad", 1)).await.unwrap();
    let dlq = dlq_tap.wait_for(5, Duration::from_secs(30)).await;
    assert_eq!(dlq.len(), 5);
    wait_until("the rest", Duration::from_secs(20), || {
        stage
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|(d, _, _)| d == "after-bad")
    })
    .await;

    // Flaky: three attempts, ~1 s then ~2 s apart (±20 % jitter).
    wait_until("flaky's third attempt", Duration::from_secs(20), || {
        stage
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _, _)| d == "flaky")
            .count()
            == 3
    })
    .await;
    let times: Vec<Instant> = stage
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _, _)| d == "flaky")
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(times.len(), 3);
    let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    assert!(gaps[0] >= 0.8 && gaps[0] < 1.5, "first backoff {:?}", gaps[0]);
    assert!(gaps[1] >= 1.6 && gaps[1] < 2.8, "second backoff {:?}", gaps[1]);

    let header = |m: &Message, k: &str| m.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let broken = dlq.iter().find(|m| m.key == "broken").unwrap();
    assert_eq!(header(broken, dlq_headers::KIND).as_deref(), Some("permanent"));
    assert_eq!(
        header(broken, dlq_headers::ATTEMPTS).as_deref(),
        Some("1"),
        "permanent errors are not retried"
    );
    assert!(header(broken, dlq_headers::ERROR).unwrap().contains("not a PDF"));
    assert!(header(broken, "traceparent").is_some(), "original headers kept");
    let down = dlq.iter().find(|m| m.key == "down").unwrap();
    assert_eq!(header(down, dlq_headers::KIND).as_deref(), Some("exhausted"));
    assert_eq!(header(down, dlq_headers::ATTEMPTS).as_deref(), Some("3"));
    let decode: Vec<_> = dlq.iter().filter(|m| m.key == "bad").collect();
    assert_eq!(decode.len(), 3);
    assert!(
        decode
            .iter()
            .all(|m| header(m, dlq_headers::KIND).as_deref() == Some("decode"))
    );
    assert_eq!(metrics.dead_lettered.get(), 5);

    // Fix the cause, replay: the broken document is processed; nothing is dead-lettered again.
    stage.permanent.lock().unwrap().clear();
    stage.transient.lock().unwrap().clear();
    let before = stage
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _, _)| d == "broken")
        .count();
    let replayed = replay_dead_letters(bus.as_ref(), "file.uploaded.dlq", 5, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(replayed, 5);
    wait_until("replayed broken", Duration::from_secs(20), || {
        stage
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _, _)| d == "broken")
            .count()
            > before
    })
    .await;
    wait_until("replayed down", Duration::from_secs(20), || {
        stage
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _, _)| d == "down")
            .count()
            >= 4
    })
    .await;
    // Replay again: nothing new (the replay group already consumed them); the malformed three
    // went back and were dead-lettered again, as they must be.
    assert_eq!(dlq_tap.wait_for(8, Duration::from_secs(30)).await.len(), 8);
    stop.send(true).unwrap();
    h.await.unwrap().unwrap();
    let all = Tap::new(bus.as_ref(), "file.uploaded.dlq")
        .await
        .wait_for(8, Duration::from_secs(30))
        .await;
    let count = |k: &str| all.iter().filter(|m| m.key == k).count();
    assert_eq!(
        (count("bad"), count("broken"), count("down")),
        (6, 1, 1),
        "only the malformed came back"
    );
}

/// The in-process bus with subscriptions that misbehave as a real broker's can.
#[derive(Debug)]
struct ShimBus {
    inner: InProcessBus,
    shim: Arc<Shim>,
}

#[derive(Debug, Default)]
struct Shim {
    /// Subscriptions refused before one is granted (a broker that blinks).
    refuse: std::sync::atomic::AtomicU32,
    /// Closing fails (a broker gone by the time the worker stops).
    fail_close: bool,
    /// Polls hand out at most half of what they ask for, rounded up (what has been fetched).
    half_polls: bool,
    /// Lag checks are counted here (each then answers 0).
    lag_checks: Option<Arc<std::sync::atomic::AtomicU32>>,
}

impl ShimBus {
    fn new(partitions: u32, shim: Shim) -> ShimBus {
        ShimBus {
            inner: InProcessBus::new(partitions),
            shim: Arc::new(shim),
        }
    }
}

struct ShimSub {
    inner: Box<dyn Subscription>,
    shim: Arc<Shim>,
}

#[async_trait]
impl Subscription for ShimSub {
    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<docstore_bus::Delivery>, docstore_bus::BusError> {
        let max = if self.shim.half_polls {
            max.div_ceil(2)
        } else {
            max
        };
        self.inner.poll(max, wait).await
    }
    async fn ack(&mut self, d: &docstore_bus::Delivery) -> Result<(), docstore_bus::BusError> {
        self.inner.ack(d).await
    }
    async fn close(&mut self) -> Result<(), docstore_bus::BusError> {
        if self.shim.fail_close {
            return Err(docstore_bus::BusError::Unavailable("broker gone".into()));
        }
        self.inner.close().await
    }
    async fn lag(&mut self) -> Option<u64> {
        let counter = self.shim.lag_checks.as_ref()?;
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(0)
    }
}

#[async_trait]
impl EventBus for ShimBus {
    async fn publish(&self, m: Message) -> Result<(), docstore_bus::BusError> {
        self.inner.publish(m).await
    }
    async fn committed(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Vec<docstore_bus::Position>, docstore_bus::BusError> {
        self.inner.committed(group, topics).await
    }
    async fn seed(
        &self,
        group: &str,
        positions: &[docstore_bus::Position],
    ) -> Result<(), docstore_bus::BusError> {
        self.inner.seed(group, positions).await
    }
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Subscription>, docstore_bus::BusError> {
        use std::sync::atomic::Ordering;
        if self
            .shim
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(docstore_bus::BusError::Unavailable("connection refused".into()));
        }
        Ok(Box::new(ShimSub {
            inner: self.inner.subscribe(group, topics).await?,
            shim: self.shim.clone(),
        }))
    }
}

/// The shared run loop rejoins after the bus refuses it, and a failure while stopping (the last
/// close) ends the loop quietly: no poll of a finished shutdown, no panic, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_cancelled_rejoins_and_stops_on_a_failing_close() {
    let bus = Arc::new(ShimBus::new(
        2,
        Shim {
            refuse: 2.into(),
            fail_close: true,
            ..Shim::default()
        },
    ));
    for i in 0..20 {
        bus.publish(uploaded(&format!("doc-{i}"), 1)).await.unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    let worker = Worker::new(bus.clone(), recorder.clone(), config(1));
    let metrics = worker.metrics();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run_until_cancelled(&stop).await }
    });
    wait_until("all 20 handled", Duration::from_secs(20), || {
        recorder.seen.lock().unwrap().len() == 20
    })
    .await;
    assert_eq!(metrics.rejoins.get(), 2, "one rejoin per refused subscribe");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop ended after the failing close")
        .expect("no panic");
    assert_eq!(
        metrics.rejoins.get(),
        2,
        "a failure while stopping is not a rejoin"
    );
}

/// Runs `worker` until `done` holds (bounded), then stops it.
async fn run_until(worker: Worker, what: &str, done: impl FnMut() -> bool) {
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run_until_cancelled(&stop).await }
    });
    wait_until(what, Duration::from_secs(20), done).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

/// What a worker handled is acked: the next member of its group starts after it, and gets none
/// of it again. Events of the types the pipeline ignores are counted and acked, never handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_and_ignored_events_are_acked() {
    let bus = Arc::new(InProcessBus::new(2));
    for i in 0..6 {
        bus.publish(uploaded(&format!("doc-{i}"), 1)).await.unwrap();
    }
    let account = serde_json::json!({
        "specversion": "1.0", "id": "account.created:a1", "source": "urn:test",
        "type": "account.created", "subject": "a1", "data": {}
    });
    bus.publish(Message {
        topic: "file.uploaded".into(),
        key: "a1".into(),
        payload: serde_json::to_vec(&account).unwrap(),
        headers: vec![],
    })
    .await
    .unwrap();
    let cfg = config(1);
    let first = Arc::new(Recorder::default());
    let worker = Worker::new(bus.clone(), first.clone(), cfg.clone());
    let metrics = worker.metrics();
    let m = metrics.clone();
    run_until(worker, "six handled, one ignored", || {
        first.seen.lock().unwrap().len() == 6 && m.ignored.get() == 1
    })
    .await;
    assert_eq!(metrics.processed.get(), 6);
    assert_eq!(metrics.dead_lettered.get(), 0, "an ignored type is not a failure");

    bus.publish(uploaded("doc-late", 1)).await.unwrap();
    let second = Arc::new(Recorder::default());
    let worker = Worker::new(bus.clone(), second.clone(), cfg);
    run_until(worker, "the late one", || !second.seen.lock().unwrap().is_empty()).await;
    let again: Vec<String> = second
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(d, _, _)| d.clone())
        .collect();
    assert_eq!(again, ["doc-late"], "only what the first member did not ack");
}

/// The lag is asked of the bus every few seconds, not on every poll (on Kafka each check is a
/// watermark request per partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_checked_seconds_apart_not_per_poll() {
    let checks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let bus = Arc::new(ShimBus::new(
        2,
        Shim {
            lag_checks: Some(checks.clone()),
            ..Shim::default()
        },
    ));
    let worker = Worker::new(bus, Arc::new(Recorder::default()), config(1));
    let started = Instant::now();
    // poll_wait is 20 ms: a second is some 50 polls of an empty topic.
    run_until(worker, "a second of polling", || {
        started.elapsed() > Duration::from_secs(1)
    })
    .await;
    let n = checks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n <= 1, "{n} lag checks in a second");
}

/// A replay sends at most `max` letters, over polls that return less than asked, and each goes
/// back without its `dlq.*` headers but with the rest (its trace).
#[tokio::test]
async fn replay_stops_at_max_and_strips_the_dead_letter_headers() {
    let bus = ShimBus::new(
        1,
        Shim {
            half_polls: true,
            ..Shim::default()
        },
    );
    let mut uploads = Tap::new(&bus.inner, "file.uploaded").await;
    for i in 0..10 {
        let mut m = uploaded(&format!("doc-{i}"), 1);
        m.topic = "file.uploaded.dlq".into();
        m.headers
            .push((dlq_headers::KIND.to_owned(), "permanent".to_owned()));
        m.headers
            .push((dlq_headers::ORIGINAL_TOPIC.to_owned(), "file.uploaded".to_owned()));
        bus.publish(m).await.unwrap();
    }
    let replayed = replay_dead_letters(&bus, "file.uploaded.dlq", 5, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(replayed, 5);
    let back = uploads.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(back.len(), 5, "no more than max");
    for m in &back {
        let names: Vec<&str> = m.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["traceparent"], "{names:?}");
    }
    let rest = replay_dead_letters(&bus, "file.uploaded.dlq", 100, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(rest, 5, "the others wait for the next replay");
}

/// A dead letter whose header names another topic than its queue's is not replayed there: only
/// the relay and the workers write `file.*` and exam topics, not whoever can write a DLQ.
#[tokio::test]
async fn replay_sends_letters_only_back_to_their_queues_topic() {
    let bus = InProcessBus::new(2);
    let mut exams = Tap::new(&bus, "exam.result.ready").await;
    let mut uploads = Tap::new(&bus, "file.uploaded").await;
    for (key, named) in [
        ("forged", Some("exam.result.ready")),
        ("plain", None),
        ("own", Some("file.uploaded")),
    ] {
        let mut headers = vec![(dlq_headers::KIND.to_owned(), "permanent".to_owned())];
        if let Some(t) = named {
            headers.push((dlq_headers::ORIGINAL_TOPIC.to_owned(), t.to_owned()));
        }
        bus.publish(Message {
            topic: "file.uploaded.dlq".into(),
            key: key.into(),
            payload: b"{}".to_vec(),
            headers,
        })
        .await
        .unwrap();
    }
    let replayed = replay_dead_letters(&bus, "file.uploaded.dlq", 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(replayed, 2);
    let back: Vec<String> = uploads
        .wait_for(2, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(back, ["plain", "own"]);
    exams.refresh().await;
    assert!(exams.seen.is_empty(), "{:?}", exams.seen);
}

/// A stage that counts how many events it handles at once, and holds `doc-slow` until released.
struct Overlap {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    seen: Mutex<Vec<(String, u64)>>,
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl Stage for Overlap {
    fn name(&self) -> &str {
        "overlap"
    }
    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError> {
        use std::sync::atomic::Ordering::SeqCst;
        let f = event
            .file_uploaded()
            .map_err(|e| StageError::Permanent(e.to_string()))?;
        let at_once = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(at_once, SeqCst);
        if f.document_id == "doc-slow" {
            self.release.acquire().await.unwrap().forget();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.seen.lock().unwrap().push((f.document_id.clone(), f.version));
        self.now.fetch_sub(1, SeqCst);
        Ok(())
    }
}

/// A partition whose lane is busy does not hold up the others: with one event stuck in its
/// stage, the worker goes on polling and handling the other partitions' events (a batch that
/// waited for its slowest partition stopped after at most 9 of them). At most `concurrency`
/// events are handled at once, and each document's versions in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_partition_does_not_hold_up_the_others() {
    let bus = Arc::new(InProcessBus::new(8));
    bus.publish(uploaded("doc-slow", 1)).await.unwrap();
    for v in [1, 2] {
        for i in 0..32 {
            bus.publish(uploaded(&format!("doc-{i}"), v)).await.unwrap();
        }
    }
    let stage = Arc::new(Overlap {
        now: Default::default(),
        most: Default::default(),
        seen: Mutex::default(),
        release: tokio::sync::Semaphore::new(0),
    });
    let cfg = config(1);
    let concurrency = cfg.concurrency;
    let worker = Worker::new(bus.clone(), stage.clone(), cfg);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run_until_cancelled(&stop).await }
    });
    wait_until("30 events past the stuck one", Duration::from_secs(20), || {
        stage.seen.lock().unwrap().len() >= 30
    })
    .await;
    assert!(stage.seen.lock().unwrap().iter().all(|(d, _)| d != "doc-slow"));
    stage.release.add_permits(1);
    wait_until("all 65", Duration::from_secs(20), || {
        stage.seen.lock().unwrap().len() == 65
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    let most = stage.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=concurrency).contains(&most), "{most} events handled at once");
    let seen = stage.seen.lock().unwrap();
    for i in 0..32 {
        let doc = format!("doc-{i}");
        let versions: Vec<u64> = seen.iter().filter(|(d, _)| *d == doc).map(|(_, v)| *v).collect();
        assert_eq!(versions, [1, 2], "{doc}");
    }
}
