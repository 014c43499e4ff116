//! [`InProcessBus`]: the bus semantics of the crate root inside one process, for the embedded
//! default and tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::{BusError, Delivery, EventBus, Message, Position, Session, Subscription, partition_for};

#[derive(Debug, Default)]
struct Group {
    /// Member ids in join order; member i owns partitions p with p % members == i.
    members: Vec<u64>,
    /// Next offset to read, per (topic, partition).
    committed: HashMap<(String, u32), u64>,
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Vec<Vec<Message>>>,
    /// Relay name → (current session epoch, last checkpoint).
    sessions: HashMap<String, (u64, Option<Vec<u8>>)>,
    groups: HashMap<String, Group>,
    next_member: u64,
}

/// An in-process bus with the semantics above, for the embedded default and tests.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    partitions: u32,
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus::new(8)
    }
}

impl InProcessBus {
    /// A bus whose topics have `partitions` partitions each.
    pub fn new(partitions: u32) -> Self {
        InProcessBus {
            state: Arc::default(),
            notify: Arc::new(Notify::new()),
            partitions: partitions.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every message of a topic, partition by partition (for tests and inspection).
    pub fn messages(&self, topic: &str) -> Vec<Message> {
        self.lock()
            .topics
            .get(topic)
            .map(|ps| ps.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, message: Message) -> Result<(), BusError> {
        {
            let mut st = self.lock();
            let n = self.partitions;
            let parts = st
                .topics
                .entry(message.topic.clone())
                .or_insert_with(|| vec![Vec::new(); n as usize]);
            parts[partition_for(&message.key, n) as usize].push(message);
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn committed(&self, group: &str, topics: &[String]) -> Result<Vec<Position>, BusError> {
        let st = self.lock();
        let mut out: Vec<Position> = st
            .groups
            .get(group)
            .map(|g| {
                g.committed
                    .iter()
                    .filter(|((t, _), _)| topics.contains(t))
                    .map(|((topic, partition), offset)| Position {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    async fn seed(&self, group: &str, positions: &[Position]) -> Result<(), BusError> {
        let mut st = self.lock();
        let g = st.groups.entry(group.to_owned()).or_default();
        if !g.members.is_empty() || !g.committed.is_empty() {
            return Err(BusError::Config(format!(
                "group {group} already has members or committed positions"
            )));
        }
        for p in positions {
            g.committed.insert((p.topic.clone(), p.partition), p.offset);
        }
        Ok(())
    }

    async fn begin_session(&self, relay: &str) -> Result<Session, BusError> {
        let mut st = self.lock();
        let session = st.sessions.entry(relay.to_owned()).or_default();
        session.0 += 1;
        Ok(Session {
            relay: relay.to_owned(),
            id: session.0,
            checkpoint: session.1.clone(),
        })
    }

    async fn publish_atomic(
        &self,
        session: &Session,
        messages: Vec<Message>,
        checkpoint: Vec<u8>,
    ) -> Result<(), BusError> {
        let relay = session.relay.as_str();
        // One lock for the whole batch: readers see all of it or none.
        {
            let mut st = self.lock();
            if st.sessions.get(relay).map(|s| s.0) != Some(session.id) {
                return Err(BusError::Fenced(relay.to_owned()));
            }
            for m in messages {
                let p = partition_for(&m.key, self.partitions) as usize;
                let parts = st
                    .topics
                    .entry(m.topic.clone())
                    .or_insert_with(|| vec![Vec::new(); self.partitions as usize]);
                parts[p].push(m);
            }
            if let Some(s) = st.sessions.get_mut(relay) {
                s.1 = Some(checkpoint);
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Box<dyn Subscription>, BusError> {
        let id = {
            let mut st = self.lock();
            st.next_member += 1;
            let id = st.next_member;
            let g = st.groups.entry(group.to_owned()).or_default();
            g.members.push(id);
            g.generation += 1;
            id
        };
        self.notify.notify_waiters();
        Ok(Box::new(Member {
            bus: self.clone(),
            group: group.to_owned(),
            topics: topics.to_vec(),
            id,
            generation: 0,
            positions: HashMap::new(),
        }))
    }
}

struct Member {
    bus: InProcessBus,
    group: String,
    topics: Vec<String>,
    id: u64,
    generation: u64,
    /// Fetch position per owned (topic, partition); reset from the committed offset on rebalance.
    positions: HashMap<(String, u32), u64>,
}

impl Member {
    fn owns(&self, g: &Group, partition: u32) -> bool {
        let idx = g.members.iter().position(|m| *m == self.id);
        idx.is_some_and(|i| partition as usize % g.members.len() == i)
    }

    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let mut st = self.bus.lock();
        let n = self.bus.partitions;
        let State { topics, groups, .. } = &mut *st;
        let g = groups.entry(self.group.clone()).or_default();
        if g.generation != self.generation {
            // Rebalance: forget positions, restart owned partitions from the committed offsets.
            self.generation = g.generation;
            self.positions.clear();
        }
        // Each owned partition's fetch position and log.
        let mut cursors = Vec::new();
        for topic in &self.topics {
            let Some(parts) = topics.get(topic) else { continue };
            for p in 0..n {
                if !self.owns(g, p) {
                    continue;
                }
                let key = (topic.clone(), p);
                let pos = *self
                    .positions
                    .entry(key.clone())
                    .or_insert_with(|| g.committed.get(&key).copied().unwrap_or(0));
                cursors.push((key, pos, &parts[p as usize]));
            }
        }
        // Round-robin over the partitions, as a broker's fetch answers for several at once: a
        // backlog in one partition does not hide the others from a worker.
        let mut out = Vec::new();
        let mut progress = true;
        while out.len() < max && progress {
            progress = false;
            for (key, next, log) in cursors.iter_mut() {
                if out.len() == max {
                    break;
                }
                if let Some(message) = log.get(*next as usize) {
                    out.push(Delivery {
                        message: message.clone(),
                        partition: key.1,
                        offset: *next,
                    });
                    *next += 1;
                    progress = true;
                }
            }
        }
        for (key, next, _) in cursors {
            self.positions.insert(key, next);
        }
        out
    }
}

#[async_trait]
impl Subscription for Member {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.bus.notify.clone();
        loop {
            // Register for wake-ups before looking, so a publish in between is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.take(max.max(1));
            if !got.is_empty() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn lag(&mut self) -> Option<u64> {
        let st = self.bus.lock();
        let g = st.groups.get(&self.group)?;
        let mut lag = 0u64;
        for topic in &self.topics {
            let Some(parts) = st.topics.get(topic) else {
                continue;
            };
            for (p, log) in parts.iter().enumerate() {
                if self.owns(g, p as u32) {
                    let pos = self
                        .positions
                        .get(&(topic.clone(), p as u32))
                        .copied()
                        .unwrap_or_else(|| g.committed.get(&(topic.clone(), p as u32)).copied().unwrap_or(0));
                    lag += (log.len() as u64).saturating_sub(pos);
                }
            }
        }
        Some(lag)
    }

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let mut st = self.bus.lock();
        let g = st.groups.entry(self.group.clone()).or_default();
        if g.generation != self.generation || !self.owns(g, delivery.partition) {
            return Err(BusError::Revoked {
                topic: delivery.message.topic.clone(),
                partition: delivery.partition,
            });
        }
        let slot = g
            .committed
            .entry((delivery.message.topic.clone(), delivery.partition))
            .or_insert(0);
        *slot = (*slot).max(delivery.offset + 1);
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut st = self.bus.lock();
        if let Some(g) = st.groups.get_mut(&self.group) {
            g.members.retain(|m| *m != self.id);
            g.generation += 1;
        }
        drop(st);
        self.bus.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(key: &str, i: u32) -> Message {
        Message {
            topic: "t".into(),
            key: key.into(),
            payload: i.to_be_bytes().to_vec(),
            headers: vec![],
        }
    }

    #[tokio::test]
    async fn per_key_order_ack_and_redelivery() {
        let bus = InProcessBus::new(4);
        for i in 0..20 {
            bus.publish(msg(&format!("doc-{}", i % 3), i)).await.unwrap();
        }
        let mut a = bus.subscribe("g", &["t".into()]).await.unwrap();
        let got = a.poll(100, Duration::from_millis(10)).await.unwrap();
        assert_eq!(got.len(), 20);
        for key in ["doc-0", "doc-1", "doc-2"] {
            let seq: Vec<_> = got
                .iter()
                .filter(|d| d.message.key == key)
                .map(|d| d.message.payload.clone())
                .collect();
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "order kept per key");
        }
        for d in got.iter().take(5) {
            a.ack(d).await.unwrap();
        }
        drop(a);
        // Unacked work comes back to the next member of the group; acked work does not.
        let mut b = bus.subscribe("g", &["t".into()]).await.unwrap();
        let again = b.poll(100, Duration::from_millis(10)).await.unwrap();
        assert!(again.len() >= 15 && again.len() < 20, "{}", again.len());
    }

    #[tokio::test]
    async fn rebalance_splits_partitions_and_revokes_stale_acks() {
        let bus = InProcessBus::new(4);
        for i in 0..40 {
            bus.publish(msg(&format!("doc-{i}"), i)).await.unwrap();
        }
        let mut a = bus.subscribe("g", &["t".into()]).await.unwrap();
        let first = a.poll(100, Duration::from_millis(10)).await.unwrap();
        assert_eq!(first.len(), 40);
        let mut b = bus.subscribe("g", &["t".into()]).await.unwrap();
        // a's generation is stale: its acks are refused until it polls again.
        assert!(matches!(a.ack(&first[0]).await, Err(BusError::Revoked { .. })));
        let a2 = a.poll(100, Duration::from_millis(10)).await.unwrap();
        let b2 = b.poll(100, Duration::from_millis(10)).await.unwrap();
        assert_eq!(
            a2.len() + b2.len(),
            40,
            "each partition owned by exactly one member"
        );
        assert!(a2.iter().all(|d| !b2.iter().any(|e| e.partition == d.partition)));
    }
}
