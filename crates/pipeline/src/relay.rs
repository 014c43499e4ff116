//! The outbox relay: publishes the events the metadata store committed with each version, in
//! commit order, then marks them sent.
//!
//! At-least-once: a crash after publishing and before marking sent re-publishes the entry on the
//! next pass, and several relays may run at once (each may publish an entry another already did).
//! Both are harmless because every event carries a stable id and consumers are idempotent.

use std::sync::Arc;
use std::time::Duration;

use docstore::meta::MetadataStore;

use crate::bus::{EventBus, Message};

/// Publishes outbox entries from a metadata store to a bus.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    meta: Arc<dyn MetadataStore>,
    bus: Arc<dyn EventBus>,
    batch: usize,
}

/// Why a relay pass stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Reading or marking the outbox failed.
    #[error(transparent)]
    Store(#[from] docstore::Error),
    /// Publishing failed; the entry stays pending and is retried on the next pass.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
}

impl OutboxRelay {
    /// A relay moving up to `batch` entries per pass.
    pub fn new(meta: Arc<dyn MetadataStore>, bus: Arc<dyn EventBus>, batch: usize) -> Self {
        OutboxRelay {
            meta,
            bus,
            batch: batch.max(1),
        }
    }

    /// One pass: publishes pending entries oldest first, marking each sent once the bus has
    /// acknowledged it. Returns how many were published.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        let pending = self.meta.outbox_pending(self.batch).await?;
        for entry in &pending {
            let mut headers = vec![("ce_id".to_owned(), entry.event_id.clone())];
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&entry.payload)
                && let Some(tp) = v.get("traceparent").and_then(|t| t.as_str())
            {
                headers.push(("traceparent".to_owned(), tp.to_owned()));
            }
            self.bus
                .publish(Message {
                    topic: entry.event_type.clone(),
                    key: entry.key.clone(),
                    payload: entry.payload.clone().into_bytes(),
                    headers,
                })
                .await?;
            self.meta
                .outbox_mark_sent(std::slice::from_ref(&entry.event_id))
                .await?;
        }
        Ok(pending.len())
    }

    /// Runs passes until `shutdown` resolves, sleeping `idle` when the outbox is empty and backing
    /// off (up to 30 s) while the store or the bus fails.
    pub async fn run(&self, idle: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match self.run_once().await {
                Ok(n) if n >= self.batch => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    idle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay pass failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
