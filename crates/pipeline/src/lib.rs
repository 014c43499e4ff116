//! # docstore-pipeline
//!
//! The event side of docstore: CloudEvents ([`events`]), the event-bus seam with an in-process
//! implementation ([`bus`]), and the outbox relay that publishes what the store committed
//! ([`relay`]), the same bus on Apache Kafka ([`kafka`]), the worker runtime every stage runs in
//! ([`runtime`]), the `file.processed` join ([`join`]), worker observability ([`observe`]), the
//! whole pipeline in one process ([`local`]) and the measured day of exams ([`load`]); the
//! stages themselves, stamp, thumbnail, text (with OCR under the `ocr` feature) and index
//! ([`stages`]); the staff full-text search over tantivy ([`search`]); and the synthetic lab
//! reports and exam images the demo and the load upload ([`synthetic`]).

pub mod bus;
pub mod events;
pub mod join;
pub mod kafka;
pub mod load;
pub mod local;
pub mod observe;
pub mod relay;
pub mod runtime;
pub mod search;
pub mod stages;
pub mod synthetic;
