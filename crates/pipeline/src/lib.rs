//! # docstore-pipeline
//!
//! The event side of docstore: CloudEvents ([`events`]), the event-bus seam with an in-process
//! implementation ([`bus`]), and the outbox relay that publishes what the store committed
//! ([`relay`]). Kafka, the worker runtime and the processing stages build on these.

pub mod bus;
pub mod events;
pub mod relay;
pub mod runtime;
