//! # docstore-tools
//!
//! What runs the whole pipeline for a person at a keyboard rather than for a deployment: the
//! pipeline in one process on the in-process bus ([`local`], behind `docstore demo`,
//! `docstore process` and the embedded server), the measured day of exams ([`load`], behind
//! `docstore load`) and the synthetic exam results both upload ([`synthetic`]).
//!
//! ## Layout
//! - `local.rs`: [`local::LocalPipeline`], the relay, every stage and the index wired on one bus;
//! - `load.rs`: [`load::run`], a day of exams generated, uploaded and measured;
//! - `synthetic.rs`: [`synthetic::Generator`], Portuguese lab reports (printpdf) and exam images.

pub mod load;
pub mod local;
pub mod synthetic;
