//! The event bus on Apache Kafka (`rdkafka`, librdkafka built from source with `cmake-build`).
//!
//! - Producer: idempotent, `acks=all`; [`EventBus::publish`] returns once the broker has the
//!   message on every in-sync replica. The partition is librdkafka's hash of the key (the document
//!   id), so a document's versions stay in one partition, in order.
//! - Consumer: a group member with `enable.auto.offset.store=false`: [`Subscription::ack`] stores
//!   the next offset of a handled message, and librdkafka's background thread commits stored
//!   offsets (every second, on rebalance and on close) — the async runtime never waits on a
//!   synchronous commit. Storing an offset for a partition this member no longer owns is refused
//!   by librdkafka and surfaces as [`BusError::Revoked`].
//! - `isolation.level=read_committed`, cooperative-sticky assignment, a short session timeout so a
//!   killed member's partitions move within seconds.
//! - Topics are created on first use with [`KafkaConfig::partitions`] partitions; an optional
//!   [`KafkaConfig::topic_prefix`] namespaces every topic on the wire (one cluster, several
//!   environments or test runs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::{BusError, Delivery, EventBus, Message, Position, Session, Subscription};

/// librdkafka security settings a bus URL may carry. Secrets never ride in the URL (URLs end up
/// in logs and process lists): see [`SECRET_SETTINGS`].
pub const SECURITY_SETTINGS: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
];

/// Secret librdkafka settings and where they come from: the environment variable, or a file
/// named by the same variable with `_FILE` appended (a mounted secret; one trailing newline is
/// dropped). Never taken from the URL, never logged.
pub const SECRET_SETTINGS: &[(&str, &str)] = &[
    ("sasl.password", "DOCSTORE_KAFKA_SASL_PASSWORD"),
    ("ssl.key.password", "DOCSTORE_KAFKA_SSL_KEY_PASSWORD"),
];

/// Settings of the Kafka bus. Its `Debug` output shows secret settings as `<redacted>`.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Partitions of topics this bus creates.
    pub partitions: i32,
    /// Replication factor of topics this bus creates (`-1`: the broker's default).
    pub replication: i32,
    /// Prefix added to every topic name on the wire (empty: none).
    pub topic_prefix: String,
    /// Consumer session timeout: how soon a dead member's partitions move to the others.
    pub session_timeout: Duration,
    /// How long a publish may wait for the broker before failing.
    pub delivery_timeout: Duration,
    /// Further librdkafka properties (`security.protocol`, `sasl.*` …), applied last.
    pub extra: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| {
                let secret = SECRET_SETTINGS.iter().any(|(s, _)| s == k);
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("topic_prefix", &self.topic_prefix)
            .field("session_timeout", &self.session_timeout)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("extra", &extra)
            .finish()
    }
}

impl KafkaConfig {
    /// Defaults for a cluster at `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            partitions: 6,
            replication: -1,
            topic_prefix: String::new(),
            session_timeout: Duration::from_secs(6),
            delivery_timeout: Duration::from_secs(30),
            extra: Vec::new(),
        }
    }

    /// Parses `kafka://host:port[,host:port…][?partitions=N&replication=R&prefix=P&session_timeout_ms=T]`,
    /// plus any of [`SECURITY_SETTINGS`] (e.g. `security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512&sasl.username=docstore&ssl.ca.location=/etc/docstore/kafka-ca.pem`),
    /// with [`SECRET_SETTINGS`] read from the process environment.
    pub fn from_url(url: &str) -> Result<Self, BusError> {
        Self::from_url_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`KafkaConfig::from_url`] with the environment given as a lookup (tests, embedders).
    pub fn from_url_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, BusError> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| BusError::Config("bus URL: expected kafka://".into()))?;
        let (brokers, query) = rest.split_once('?').unwrap_or((rest, ""));
        // Errors name the brokers and the setting, never the query's values.
        let bad = |why: &str| BusError::Config(format!("bus URL kafka://{brokers}: {why}"));
        if brokers.is_empty() {
            return Err(bad("no brokers"));
        }
        let mut c = KafkaConfig::new(brokers);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("query needs key=value"))?;
            let num = |v: &str| v.parse::<i64>().map_err(|_| bad(&format!("{k} is not a number")));
            match k {
                "partitions" => c.partitions = num(v)?.clamp(1, 10_000) as i32,
                "replication" => c.replication = num(v)?.clamp(-1, 100) as i32,
                "prefix" => c.topic_prefix = v.to_owned(),
                "session_timeout_ms" => c.session_timeout = Duration::from_millis(num(v)?.max(1) as u64),
                k if SECURITY_SETTINGS.contains(&k) => c.extra.push((k.to_owned(), v.to_owned())),
                other => {
                    return Err(bad(&match SECRET_SETTINGS.iter().find(|(s, _)| *s == other) {
                        Some((_, var)) => {
                            format!("{other} does not belong in a URL: set {var} or {var}_FILE")
                        }
                        None => format!("unknown setting {other}"),
                    }));
                }
            }
        }
        for (setting, var) in SECRET_SETTINGS {
            let value = match (env(var), env(&format!("{var}_FILE"))) {
                (Some(v), _) if !v.is_empty() => Some(v),
                (_, Some(path)) if !path.is_empty() => {
                    let text =
                        std::fs::read_to_string(&path).map_err(|e| bad(&format!("{var}_FILE: {e}")))?;
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    Some(text.strip_suffix('\r').unwrap_or(text).to_owned())
                }
                _ => None,
            };
            if let Some(v) = value {
                c.extra.push(((*setting).to_owned(), v));
            }
        }
        Ok(c)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "docstore")
            .set("log_level", "4");
        c
    }

    fn apply_extra(&self, c: &mut ClientConfig) {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
    }
}

fn unavailable(what: &str, e: KafkaError) -> BusError {
    // KafkaError's text names codes and brokers, never message content.
    BusError::Unavailable(format!("kafka {what}: {e}"))
}

/// Topic (one partition) where a relay's transactions record their checkpoints.
fn checkpoint_topic(relay: &str) -> String {
    format!("docstore.relay.{relay}")
}

fn txn_err(what: &str, relay: &str, e: KafkaError) -> BusError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch) => {
            BusError::Fenced(relay.to_owned())
        }
        _ => unavailable(what, e),
    }
}

/// The payload of the last committed message of a one-partition topic (blocking). Reads
/// backwards in growing windows, because aborted transactions and commit markers also take
/// offsets.
fn last_committed(reader: &BaseConsumer, topic: &str) -> Result<Option<Vec<u8>>, BusError> {
    let (low, high) = reader
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_err(|e| unavailable("checkpoint watermarks", e))?;
    if high <= low {
        return Ok(None);
    }
    // Checkpoints are small; a window of 64 covers a long tail of aborted ones at once.
    let mut window = 64i64;
    loop {
        let start = (high - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start))
            .map_err(|e| unavailable("checkpoint assign", e))?;
        reader
            .assign(&tpl)
            .map_err(|e| unavailable("checkpoint assign", e))?;
        let mut last = None;
        let mut idle = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    idle = 0;
                    last = Some(m.payload().unwrap_or_default().to_vec());
                    if m.offset() >= high - 1 {
                        break;
                    }
                }
                // The end of the committed log. Aborted records and transaction markers are
                // never delivered, so without this signal a tail of aborted checkpoints (a relay
                // killed mid-batch, again and again) would cost the idle wait below on every
                // widening of the window.
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(unavailable("checkpoint read", e)),
                None => {
                    let pos = reader
                        .position()
                        .ok()
                        .and_then(|t| t.find_partition(topic, 0).and_then(|e| e.offset().to_raw()))
                        .unwrap_or(-1);
                    idle += 1;
                    // Caught up (position past the end), or only markers were left.
                    if pos >= high || idle >= 10 {
                        break;
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(BusError::Unavailable("checkpoint read timed out".into()));
            }
        }
        if last.is_some() || start == low {
            return Ok(last);
        }
        window *= 4;
    }
}

/// The Kafka event bus.
#[derive(Clone)]
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    known: Arc<Mutex<HashSet<String>>>,
    /// Transactional producers of relay sessions: relay name → (session id, producer).
    sessions: Arc<Mutex<HashMap<String, (u64, FutureProducer)>>>,
    next_session: Arc<AtomicU64>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.config.brokers)
            .field("topic_prefix", &self.config.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects a producer and an admin client (lazily: librdkafka connects in the background).
    pub fn new(config: KafkaConfig) -> Result<Self, BusError> {
        let mut p = config.client();
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "delivery.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        config.apply_extra(&mut p);
        let producer: FutureProducer = p.create().map_err(|e| unavailable("producer", e))?;
        let mut a = config.client();
        config.apply_extra(&mut a);
        let admin: AdminClient<DefaultClientContext> = a.create().map_err(|e| unavailable("admin", e))?;
        Ok(KafkaBus {
            config,
            producer,
            admin: Arc::new(admin),
            known: Arc::default(),
            sessions: Arc::default(),
            next_session: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    async fn transaction(
        &self,
        producer: &FutureProducer,
        relay: &str,
        messages: Vec<Message>,
        checkpoint: Vec<u8>,
    ) -> Result<(), BusError> {
        producer
            .begin_transaction()
            .map_err(|e| txn_err("begin transaction", relay, e))?;
        let checkpoint_msg = Message {
            topic: checkpoint_topic(relay),
            key: relay.to_owned(),
            payload: checkpoint,
            headers: Vec::new(),
        };
        let mut failed = None;
        for m in messages.iter().chain(std::iter::once(&checkpoint_msg)) {
            if let Err(e) = self.send(producer, m).await {
                failed = Some(e);
                break;
            }
        }
        let p = producer.clone();
        let finished = match failed {
            None => tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(30)))
                .await
                .map_err(|e| BusError::Unavailable(format!("commit: {e}")))?
                .map_err(|e| txn_err("commit transaction", relay, e)),
            Some(e) => Err(e),
        };
        if finished.is_err() {
            // Best effort: an unfinished transaction is aborted by the next session's init anyway.
            let p = producer.clone();
            let _ = tokio::task::spawn_blocking(move || p.abort_transaction(Duration::from_secs(10))).await;
        }
        finished
    }

    async fn send(&self, producer: &FutureProducer, message: &Message) -> Result<(), BusError> {
        let topic = self.wire(&message.topic);
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (k, v) in &message.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(&topic)
            .key(&message.key)
            .payload(&message.payload)
            .headers(headers);
        producer
            .send(record, Timeout::After(self.config.delivery_timeout))
            .await
            .map(|_| ())
            .map_err(|(e, _)| unavailable("publish", e))
    }

    fn wire(&self, topic: &str) -> String {
        format!("{}{topic}", self.config.topic_prefix)
    }

    /// Creates the topics that do not exist yet (on the wire, with the prefix).
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        self.ensure_topics_with(topics, self.config.partitions).await
    }

    async fn ensure_topics_with(&self, topics: &[String], partitions: i32) -> Result<(), BusError> {
        let missing: Vec<String> = {
            let known = self.known.lock().expect("topic set");
            let mut missing: Vec<String> = topics
                .iter()
                .map(|t| self.wire(t))
                .filter(|t| !known.contains(t))
                .collect();
            // One request may not name a topic twice.
            missing.sort();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(self.config.replication)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Timeout::After(Duration::from_secs(30))));
        let results = self
            .admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| unavailable("create topics", e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(BusError::Unavailable(format!("kafka create topic {t}: {code}")));
                }
            }
        }
        // CreateTopics returns once the controller has the topics; a client whose next metadata
        // request still misses one would wait for its periodic refresh (minutes, for a
        // subscription). So wait, bounded, until the topics are visible.
        let producer = self.producer.clone();
        let names = missing.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            for name in &names {
                loop {
                    let visible = producer
                        .client()
                        .fetch_metadata(Some(name), Duration::from_secs(2))
                        .ok()
                        .and_then(|m| {
                            m.topics()
                                .first()
                                .map(|t| t.error().is_none() && !t.partitions().is_empty())
                        })
                        .unwrap_or(false);
                    if visible {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(BusError::Unavailable(format!(
                            "kafka topic {name} not visible after creation"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| BusError::Unavailable(format!("topic metadata: {e}")))??;
        self.known.lock().expect("topic set").extend(missing);
        Ok(())
    }
}

/// A consumer of `group` that never joins it (no subscribe): it reads and writes the group's
/// committed offsets only.
fn group_client(config: &KafkaConfig, group: &str) -> Result<BaseConsumer, BusError> {
    let mut c = config.client();
    c.set("group.id", group).set("enable.auto.commit", "false");
    config.apply_extra(&mut c);
    c.create().map_err(|e| unavailable("consumer", e))
}

/// Every partition of the `wire` topics (blocking).
fn all_partitions(consumer: &BaseConsumer, wire: &[String]) -> Result<TopicPartitionList, BusError> {
    let mut tpl = TopicPartitionList::new();
    for topic in wire {
        let meta = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| unavailable("metadata", e))?;
        for t in meta.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    Ok(tpl)
}

impl KafkaBus {
    /// The committed positions, on the wire topics `wire`, of the group `consumer` was made for
    /// by [`group_client`] (blocking).
    fn committed_blocking(
        consumer: &BaseConsumer,
        config: &KafkaConfig,
        wire: &[String],
    ) -> Result<Vec<Position>, BusError> {
        let tpl = all_partitions(consumer, wire)?;
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| unavailable("committed offsets", e))?;
        let mut out: Vec<Position> = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(n) if n >= 0 => Some(Position {
                    topic: e.topic().strip_prefix(&config.topic_prefix)?.to_owned(),
                    partition: u32::try_from(e.partition()).ok()?,
                    offset: n as u64,
                }),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, message: Message) -> Result<(), BusError> {
        self.ensure_topics(std::slice::from_ref(&message.topic)).await?;
        self.send(&self.producer, &message).await
    }

    async fn committed(&self, group: &str, topics: &[String]) -> Result<Vec<Position>, BusError> {
        self.ensure_topics(topics).await?;
        let wire: Vec<String> = topics.iter().map(|t| self.wire(t)).collect();
        let (config, group) = (self.config.clone(), group.to_owned());
        tokio::task::spawn_blocking(move || {
            Self::committed_blocking(&group_client(&config, &group)?, &config, &wire)
        })
        .await
        .map_err(|e| BusError::Unavailable(format!("committed offsets: {e}")))?
    }

    async fn seed(&self, group: &str, positions: &[Position]) -> Result<(), BusError> {
        let topics: Vec<String> = {
            let mut t: Vec<String> = positions.iter().map(|p| p.topic.clone()).collect();
            t.sort();
            t.dedup();
            t
        };
        self.ensure_topics(&topics).await?;
        let wire: Vec<String> = topics.iter().map(|t| self.wire(t)).collect();
        let mut tpl = TopicPartitionList::new();
        for p in positions {
            let partition = i32::try_from(p.partition)
                .map_err(|_| BusError::Config(format!("partition {} out of range", p.partition)))?;
            let offset = i64::try_from(p.offset)
                .map_err(|_| BusError::Config(format!("offset {} out of range", p.offset)))?;
            tpl.add_partition_offset(&self.wire(&p.topic), partition, Offset::Offset(offset))
                .map_err(|e| unavailable("seed offsets", e))?;
        }
        let (config, group) = (self.config.clone(), group.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer = group_client(&config, &group)?;
            let groups = consumer
                .fetch_group_list(Some(&group), Duration::from_secs(10))
                .map_err(|e| unavailable("group list", e))?;
            let busy = groups.groups().iter().any(|g| !g.members().is_empty());
            if busy || !Self::committed_blocking(&consumer, &config, &wire)?.is_empty() {
                return Err(BusError::Config(format!(
                    "group {group} already has members or committed positions"
                )));
            }
            // Without subscribe(), a commit is a simple (generation-less) commit, which the
            // broker accepts for a group with no members.
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| unavailable("seed commit", e))
        })
        .await
        .map_err(|e| BusError::Unavailable(format!("seed: {e}")))?
    }

    async fn begin_session(&self, relay: &str) -> Result<Session, BusError> {
        let checkpoints = checkpoint_topic(relay);
        self.ensure_topics_with(std::slice::from_ref(&checkpoints), 1)
            .await?;
        let mut p = self.config.client();
        p.set("transactional.id", format!("{}{relay}", self.config.topic_prefix))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("transaction.timeout.ms", "60000")
            // The init after a crash waits while the broker aborts the dead producer's open
            // transaction; retry that often rather than backing off to the 1 s default.
            .set("retry.backoff.max.ms", "100")
            .set(
                "message.timeout.ms",
                self.config.delivery_timeout.as_millis().to_string(),
            );
        self.config.apply_extra(&mut p);
        let producer: FutureProducer = p.create().map_err(|e| unavailable("producer", e))?;
        let init = producer.clone();
        // Fences every earlier producer of this transactional id and completes or aborts its
        // open transaction, so the checkpoint read next is final. Blocking: off the runtime.
        tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
            .await
            .map_err(|e| BusError::Unavailable(format!("init transactions: {e}")))?
            .map_err(|e| txn_err("init transactions", relay, e))?;
        let mut c = self.config.client();
        c.set(
            "group.id",
            format!("{}{relay}-checkpoint", self.config.topic_prefix),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // At the end of the log the broker would hold each fetch this long for new records.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed");
        self.config.apply_extra(&mut c);
        let reader: BaseConsumer = c.create().map_err(|e| unavailable("consumer", e))?;
        let topic = self.wire(&checkpoints);
        let checkpoint = tokio::task::spawn_blocking(move || last_committed(&reader, &topic))
            .await
            .map_err(|e| BusError::Unavailable(format!("read checkpoint: {e}")))??;
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.sessions
            .lock()
            .expect("sessions")
            .insert(relay.to_owned(), (id, producer));
        Ok(Session {
            relay: relay.to_owned(),
            id,
            checkpoint,
        })
    }

    async fn publish_atomic(
        &self,
        session: &Session,
        messages: Vec<Message>,
        checkpoint: Vec<u8>,
    ) -> Result<(), BusError> {
        let producer = match self.sessions.lock().expect("sessions").get(&session.relay) {
            Some((id, p)) if *id == session.id => p.clone(),
            _ => return Err(BusError::Fenced(session.relay.clone())),
        };
        let topics: Vec<String> = messages.iter().map(|m| m.topic.clone()).collect();
        self.ensure_topics(&topics).await?;
        let result = self
            .transaction(&producer, &session.relay, messages, checkpoint)
            .await;
        if result.is_err() {
            // The session is over: the caller starts a new one, which re-reads the checkpoint.
            let mut sessions = self.sessions.lock().expect("sessions");
            if sessions
                .get(&session.relay)
                .is_some_and(|(id, _)| *id == session.id)
            {
                sessions.remove(&session.relay);
            }
        }
        result
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, BusError> {
        self.ensure_topics(topics).await?;
        let mut c = self.config.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A safety net for topics created elsewhere after this member subscribed.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set(
                "session.timeout.ms",
                self.config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout.as_millis() / 3).max(100).to_string(),
            );
        self.config.apply_extra(&mut c);
        let consumer: StreamConsumer = c.create().map_err(|e| unavailable("consumer", e))?;
        let wire: Vec<String> = topics.iter().map(|t| self.wire(t)).collect();
        let refs: Vec<&str> = wire.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|e| unavailable("subscribe", e))?;
        Ok(Box::new(KafkaSubscription {
            consumer: Some(Arc::new(consumer)),
            prefix: self.config.topic_prefix.clone(),
            lag: Arc::default(),
        }))
    }
}

struct KafkaSubscription {
    /// `None` once closed.
    consumer: Option<Arc<StreamConsumer>>,
    prefix: String,
    lag: Arc<std::sync::Mutex<LagProbe>>,
}

/// The last consumer lag measured, and whether a measurement is running.
#[derive(Default)]
struct LagProbe {
    last: Option<u64>,
    running: bool,
}

impl KafkaSubscription {
    fn consumer(&self) -> Result<&StreamConsumer, BusError> {
        self.consumer
            .as_deref()
            .ok_or_else(|| BusError::Unavailable("subscription closed".into()))
    }

    fn delivery(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
        let topic = m.topic();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Delivery {
            message: Message {
                topic: topic.strip_prefix(&self.prefix).unwrap_or(topic).to_owned(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            },
            partition: m.partition() as u32,
            offset: m.offset() as u64,
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let consumer = self.consumer()?;
        let first = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(e)) => return Err(unavailable("poll", e)),
            Ok(Ok(m)) => self.delivery(&m),
        };
        let mut out = vec![first];
        // Take what librdkafka has already fetched, without waiting for more.
        while out.len() < max.max(1) {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => out.push(self.delivery(&m)),
                Some(Err(e)) => return Err(unavailable("poll", e)),
                None => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let consumer = self.consumer()?;
        let topic = format!("{}{}", self.prefix, delivery.message.topic);
        match consumer.store_offset(&topic, delivery.partition as i32, delivery.offset as i64) {
            Ok(()) => Ok(()),
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition)) => {
                Err(BusError::Revoked {
                    topic: delivery.message.topic.clone(),
                    partition: delivery.partition,
                })
            }
            Err(e) => Err(unavailable("store offset", e)),
        }
    }

    async fn lag(&mut self) -> Option<u64> {
        let consumer = self.consumer.clone()?;
        let probe = self.lag.clone();
        let last = {
            let mut p = probe.lock().expect("lag probe");
            if p.running {
                return p.last;
            }
            p.running = true;
            p.last
        };
        // Watermark queries are blocking network calls, and each waits on the broker behind the
        // consumer's own long-poll fetch (up to `fetch.wait.max.ms`, 500 ms): 12 partitions held
        // a worker's loop for 6 s of every 6.7 in the scaling bench. So they run in the
        // background and this returns the last figure.
        tokio::task::spawn_blocking(move || {
            let lag = (|| {
                let positions = consumer.position().ok()?;
                let mut lag = 0u64;
                for e in positions.elements() {
                    let (_, high) = consumer
                        .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                        .ok()?;
                    let pos = e.offset().to_raw().filter(|p| *p >= 0).unwrap_or(0);
                    lag += (high - pos).max(0) as u64;
                }
                Some(lag)
            })();
            let mut p = probe.lock().expect("lag probe");
            p.running = false;
            p.last = lag.or(p.last);
        });
        last
    }

    async fn close(&mut self) -> Result<(), BusError> {
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        // Commit what is stored and leave the group; librdkafka's calls block, so off the runtime.
        tokio::task::spawn_blocking(move || {
            let committed = match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
                Err(e) => Err(unavailable("commit", e)),
            };
            consumer.unsubscribe();
            drop(consumer);
            committed
        })
        .await
        .map_err(|e| BusError::Unavailable(format!("close: {e}")))?
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // Destroying a consumer blocks (it leaves the group); never on an async worker thread.
        if let Some(consumer) = self.consumer.take() {
            std::thread::spawn(move || drop(consumer));
        }
    }
}
