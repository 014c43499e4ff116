//! # docstore-bus
//!
//! The event-bus seam ([`EventBus`], [`Subscription`]), the factory that opens a bus from its URL
//! ([`open_bus`]), an in-process bus and, under the `kafka` feature, Apache Kafka.
//!
//! ## Layout
//! - `lib.rs`: the seam's types and traits, the partitioner and the factory; the backends
//!   import from here and nothing here imports a backend's internals;
//! - `memory.rs`: [`InProcessBus`], for one process (the embedded default and tests);
//! - `kafka.rs` (feature `kafka`, librdkafka): the production bus, with idempotent and
//!   transactional publishing and the consumer-group protocol.
//!
//! Semantics every bus provides (Kafka's, reduced to what the pipeline relies on):
//! - a topic is split into partitions; a message's partition is a stable hash of its key, so the
//!   versions of one document stay in order;
//! - consumers join a *group*; the group's partitions are divided among its live members and
//!   re-divided when members come and go (a rebalance);
//! - a member reads from the group's committed position and **acks** a delivery once fully
//!   handled; only acked work is skipped after a restart or rebalance (at-least-once);
//! - an ack for a partition the member no longer owns is refused, so a slow member cannot move
//!   the position of work that moved elsewhere.

#[cfg(feature = "kafka")]
pub mod kafka;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::InProcessBus;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic (the event type, or `<type>.dlq`).
    pub topic: String,
    /// Partition key (the document id).
    pub key: String,
    /// Body (a CloudEvent in structured JSON mode).
    pub payload: Vec<u8>,
    /// Headers (`traceparent`, dead-letter details).
    pub headers: Vec<(String, String)>,
}

/// A message delivered to a group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Partition it was read from.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// A consumer group's committed position in one partition: the next offset it will read. Index
/// snapshots record these, as JSON objects of the same three fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to read (every message before it is acknowledged).
    pub offset: u64,
}

/// Bus failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The partition was reassigned to another member; the ack was not recorded.
    #[error("partition {partition} of {topic} is no longer assigned to this member")]
    Revoked {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// The broker could not be reached or refused the request.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A newer publishing session of this relay started; this one may not publish any more.
    #[error("relay {0} was fenced by a newer session")]
    Fenced(String),
    /// The bus settings are invalid.
    #[error("bus configuration: {0}")]
    Config(String),
}

/// Opens the bus a URL names: `kafka://host:port[,…][?…]` (see
/// `kafka::KafkaConfig::from_url`) or `memory://` (an [`InProcessBus`], for one process).
pub fn open_bus(url: &str) -> Result<Arc<dyn EventBus>, BusError> {
    if url == "memory://" || url == "memory" {
        return Ok(Arc::new(InProcessBus::default()));
    }
    #[cfg(feature = "kafka")]
    if url.starts_with("kafka://") {
        let config = kafka::KafkaConfig::from_url(url)?;
        return Ok(Arc::new(kafka::KafkaBus::new(config)?));
    }
    #[cfg(not(feature = "kafka"))]
    if url.starts_with("kafka://") {
        return Err(BusError::Config(format!(
            "bus URL {url:?}: this binary was built without the `kafka` feature"
        )));
    }
    Err(BusError::Config(format!(
        "bus URL {url:?}: expected kafka://host:port or memory://"
    )))
}

/// The seam to a message bus (Kafka in production, [`InProcessBus`] embedded).
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Appends a message; returns once it is durably acknowledged.
    async fn publish(&self, message: Message) -> Result<(), BusError>;
    /// Joins consumer group `group` reading `topics`.
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, BusError>;

    /// The committed positions of `group` in every partition of `topics` that it has committed
    /// in, sorted. A search node reads them before it snapshots its index: everything before
    /// them is in the index, because the index stage commits before it acknowledges.
    async fn committed(&self, group: &str, topics: &[String]) -> Result<Vec<Position>, BusError>;

    /// Sets the committed positions of `group`, a group with no member and no commit yet (a new
    /// search node restored from a snapshot), so that its first member starts from there.
    /// Refused with [`BusError::Config`] when the group already has committed positions.
    async fn seed(&self, group: &str, positions: &[Position]) -> Result<(), BusError>;

    /// Starts an exclusive publishing session for the outbox relay named `relay`, fencing every
    /// earlier session of that name (in any process), and returns it with the checkpoint stored by
    /// the last batch that became visible (`None` if none ever did). After any error of
    /// [`EventBus::publish_atomic`], start a new session.
    ///
    /// Default: no atomic publishing (at-least-once); the checkpoint is always `None`.
    async fn begin_session(&self, relay: &str) -> Result<Session, BusError> {
        Ok(Session {
            relay: relay.to_owned(),
            id: 0,
            checkpoint: None,
        })
    }

    /// Publishes `messages` (in order) and stores `checkpoint` as one atomic step: consumers see
    /// all of them or none, and a later [`EventBus::begin_session`] returns `checkpoint`. Fails
    /// with [`BusError::Fenced`] if a newer session of the relay started.
    ///
    /// Default: publishes one by one and forgets the checkpoint (at-least-once).
    async fn publish_atomic(
        &self,
        session: &Session,
        messages: Vec<Message>,
        checkpoint: Vec<u8>,
    ) -> Result<(), BusError> {
        let _ = (session, checkpoint);
        for m in messages {
            self.publish(m).await?;
        }
        Ok(())
    }
}

/// An exclusive publishing session of a relay (see [`EventBus::begin_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Relay name.
    pub relay: String,
    /// Session number, increasing per relay name.
    pub id: u64,
    /// Checkpoint of the last visible batch.
    pub checkpoint: Option<Vec<u8>>,
}

/// A member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// Up to `max` deliveries from the partitions this member owns, waiting up to `wait` for the
    /// first one.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;
    /// Records that `delivery` is fully handled (processed or dead-lettered).
    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError>;
    /// Makes the acks durable and leaves the group (graceful shutdown). Dropping a subscription
    /// without closing it is a crash as far as the group is concerned: unacked work is redelivered.
    async fn close(&mut self) -> Result<(), BusError> {
        Ok(())
    }
    /// Messages in the owned partitions not read yet, if the bus can tell.
    async fn lag(&mut self) -> Option<u64> {
        None
    }
}

/// Stable partition for a key (FNV-1a), identical across processes and runs.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions as u64) as u32
}
