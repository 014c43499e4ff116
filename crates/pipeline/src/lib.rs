//! # docstore-pipeline
//!
//! How work moves between the store and the stages: the worker runtime every stage runs in
//! ([`runtime`]), the outbox relay that publishes what the store committed ([`relay`]), the
//! `file.processed` join ([`join`]), worker observability ([`observe`]) and the bounded helper
//! threads third-party parsers run on ([`bounded`]).
//!
//! ## Layout
//! The crates around this one, each along a seam:
//! - `docstore-events` (crates/events): the event contract, CloudEvents decoded into types;
//! - `docstore-bus` (crates/bus): the event-bus seam, in-process and (feature `kafka`) Kafka;
//! - this crate (crates/pipeline): `runtime.rs`, `relay.rs`, `join.rs`, `observe.rs`,
//!   `bounded.rs`;
//! - `docstore-stages` (crates/stages): thumbnail, text (OCR), stamp and index, each behind its
//!   feature with the parsers it needs;
//! - `docstore-search` (crates/search): the staff full-text search over tantivy;
//! - `docstore-tools` (crates/tools): the whole pipeline in one process, the measured day of
//!   exams and the synthetic exam results the demo and the load upload.

pub mod bounded;
pub mod join;
pub mod observe;
pub mod process;
pub mod relay;
pub mod runtime;
