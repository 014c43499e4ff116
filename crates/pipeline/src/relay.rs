//! The outbox relay: publishes the events the metadata store committed with each version, in
//! commit order, then marks them sent.
//!
//! Exactly once, where the bus can publish atomically (Kafka transactions; the in-process bus):
//! each batch is published together with a checkpoint naming its event ids, in one transaction
//! of an exclusive session. A relay that starts (or restarts after any error) first opens a new
//! session — which fences every older session of the same relay name, in any process — and marks
//! the last checkpoint's entries sent before it reads the outbox. So a crash between publishing
//! and marking never republishes, and of several relays running at once only the newest session
//! can commit: the others' transactions abort and they start over. The invariant: before any
//! batch commits, every earlier committed batch is marked sent.
//!
//! On a bus without atomic publishing the same code is at-least-once; events carry stable ids.

use std::sync::Arc;
use std::time::Duration;

use docstore::meta::MetadataStore;

use docstore_bus::{EventBus, Message, Session};

/// Publishes outbox entries from a metadata store to a bus.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    meta: Arc<dyn MetadataStore>,
    bus: Arc<dyn EventBus>,
    batch: usize,
    name: String,
    /// The current publishing session; `None` after an error (the next pass opens a new one).
    session: Arc<std::sync::Mutex<Option<Session>>>,
}

/// How long a fenced relay waits before opening a new session.
const FENCED_STANDBY: Duration = Duration::from_secs(5);
/// The first wait after a failed pass; it doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long [`OutboxRelay::run`] waits after a pass: not at all after a full batch (more may be
/// pending), `idle` after a short one, the standby after being fenced (another relay of this
/// name took over: fencing it right back would starve both), and a doubling `backoff` while the
/// store or the bus fails. A pass that succeeds resets the backoff.
fn pause_after(
    outcome: &Result<usize, RelayError>,
    batch: usize,
    idle: Duration,
    backoff: &mut Duration,
) -> Duration {
    match outcome {
        Ok(n) if *n >= batch => Duration::ZERO,
        Ok(_) => {
            *backoff = BACKOFF_FIRST;
            idle
        }
        Err(RelayError::Bus(docstore_bus::BusError::Fenced(_))) => FENCED_STANDBY,
        Err(_) => {
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
            *backoff
        }
    }
}

/// Default relay name (the Kafka transactional id, under the bus's topic prefix).
pub const DEFAULT_RELAY: &str = "docstore-outbox";

/// Why a relay pass stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Reading or marking the outbox failed.
    #[error(transparent)]
    Store(#[from] docstore::Error),
    /// Publishing failed; the entry stays pending and is retried on the next pass.
    #[error(transparent)]
    Bus(#[from] docstore_bus::BusError),
    /// The bus holds a checkpoint this relay cannot read.
    #[error("relay checkpoint unreadable: {0}")]
    Checkpoint(String),
}

/// The bus message of an outbox entry, with a `traceparent` that starts the event's trace: from
/// the event if it has one, else derived from the event id (so a redelivery keeps its trace).
fn message(entry: &docstore::OutboxEntry) -> Message {
    message_of(&entry.event_type, &entry.key, &entry.event_id, &entry.payload)
}

/// The bus message of an event not read from the outbox (the in-process catch-up's
/// re-announcements), built as the relay builds its own.
pub fn message_of(event_type: &str, key: &str, event_id: &str, payload: &str) -> Message {
    // Structured content mode, said in the header the Kafka binding (§3.1) reads: without it a
    // receiver must take the message as binary mode, and any `ce_` header makes SDKs do so.
    let mut headers = vec![(
        "content-type".to_owned(),
        docstore_events::STRUCTURED_CONTENT_TYPE.to_owned(),
    )];
    let given = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("traceparent").and_then(|t| t.as_str()).map(str::to_owned));
    let traceparent = given.unwrap_or_else(|| docstore::outbox::traceparent(event_id, event_id));
    headers.push(("traceparent".to_owned(), traceparent));
    Message {
        topic: event_type.to_owned(),
        key: key.to_owned(),
        payload: payload.as_bytes().to_vec(),
        headers,
    }
}

impl OutboxRelay {
    /// A relay moving up to `batch` entries per pass, named [`DEFAULT_RELAY`].
    pub fn new(meta: Arc<dyn MetadataStore>, bus: Arc<dyn EventBus>, batch: usize) -> Self {
        OutboxRelay {
            meta,
            bus,
            batch: batch.max(1),
            name: DEFAULT_RELAY.to_owned(),
            session: Arc::default(),
        }
    }

    /// Renames the relay: relays of one name fence each other (one publishes at a time).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The open session, or a new one after the previous checkpoint's entries are marked sent.
    async fn session(&self) -> Result<Session, RelayError> {
        if let Some(s) = self.session.lock().expect("session").take() {
            return Ok(s);
        }
        let session = self.bus.begin_session(&self.name).await?;
        if let Some(cp) = &session.checkpoint {
            let ids: Vec<String> =
                serde_json::from_slice(cp).map_err(|e| RelayError::Checkpoint(e.to_string()))?;
            self.meta.outbox_mark_sent(&ids).await?;
        }
        Ok(session)
    }

    /// One pass: publishes up to a batch of pending entries, oldest first, in one atomic step
    /// with their checkpoint, then marks them sent. Returns how many were published.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        let session = self.session().await?;
        let pending = self.meta.outbox_pending(self.batch).await?;
        if pending.is_empty() {
            *self.session.lock().expect("session") = Some(session);
            return Ok(0);
        }
        let ids: Vec<String> = pending.iter().map(|e| e.event_id.clone()).collect();
        let messages = pending.iter().map(message).collect();
        let checkpoint = serde_json::to_vec(&ids).map_err(|e| RelayError::Checkpoint(e.to_string()))?;
        // On error the session is dropped: the next pass opens a new one and reconciles.
        self.bus.publish_atomic(&session, messages, checkpoint).await?;
        self.meta.outbox_mark_sent(&ids).await?;
        *self.session.lock().expect("session") = Some(session);
        Ok(pending.len())
    }

    /// Runs passes until `shutdown` resolves, sleeping `idle` when the outbox is empty and backing
    /// off (up to 30 s) while the store or the bus fails.
    pub async fn run(&self, idle: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = BACKOFF_FIRST;
        loop {
            let outcome = self.run_once().await;
            if let Err(e) = &outcome {
                match e {
                    RelayError::Bus(docstore_bus::BusError::Fenced(_)) => {
                        tracing::info!(relay = %self.name, "another relay is active; standing by")
                    }
                    e => tracing::warn!(error = %e, "outbox relay pass failed; retrying"),
                }
            }
            let pause = pause_after(&outcome, self.batch, idle, &mut backoff);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(2);

    #[test]
    fn a_full_batch_goes_on_at_once_and_a_short_one_waits() {
        let mut backoff = BACKOFF_FIRST;
        assert_eq!(pause_after(&Ok(10), 10, IDLE, &mut backoff), Duration::ZERO);
        assert_eq!(pause_after(&Ok(9), 10, IDLE, &mut backoff), IDLE);
        assert_eq!(pause_after(&Ok(0), 10, IDLE, &mut backoff), IDLE);
    }

    #[test]
    fn failures_back_off_doubling_to_a_cap_and_success_resets() {
        let failed = || Err(RelayError::Checkpoint("unreadable".into()));
        let mut backoff = BACKOFF_FIRST;
        let waits: Vec<Duration> = (0..12)
            .map(|_| pause_after(&failed(), 10, IDLE, &mut backoff))
            .collect();
        assert_eq!(waits[..3], [200, 400, 800].map(Duration::from_millis));
        assert_eq!(waits[11], BACKOFF_MAX, "capped");
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        pause_after(&Ok(1), 10, IDLE, &mut backoff);
        assert_eq!(backoff, BACKOFF_FIRST, "a pass that works resets the backoff");
        assert_eq!(
            pause_after(&failed(), 10, IDLE, &mut backoff),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn a_fenced_relay_stands_by() {
        let mut backoff = BACKOFF_FIRST;
        let fenced = Err(RelayError::Bus(docstore_bus::BusError::Fenced(
            "newer session".into(),
        )));
        assert_eq!(pause_after(&fenced, 10, IDLE, &mut backoff), FENCED_STANDBY);
        assert_eq!(backoff, BACKOFF_FIRST, "standing by is not a failure");
    }
}
