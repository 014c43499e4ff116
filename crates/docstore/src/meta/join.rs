//! The `file.processed` join, shared by every metadata backend: merge a stage's result into the
//! version's recorded results and decide whether this write completes the version.
//!
//! Each backend runs [`merge`] inside one atomic write guarded by the version row it read (a row
//! lock in SQL, a condition on the previous value in DynamoDB), so of any number of concurrent
//! stage completions exactly one sees the version go from pending to complete and records the
//! `file.processed` outbox entry in that same write.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{JoinOutcome, ProcessingState, Rendition, StageResult, VersionRecord};

/// Recorded results of a version, by stage name (stored as JSON in the version row or item).
pub(crate) type Stages = BTreeMap<String, StageResult>;

/// The result of merging one stage result into a version.
pub(crate) struct Merged {
    /// New stored value of the stage results.
    pub(crate) stages_json: String,
    /// New rendition list (this stage's earlier renditions replaced).
    pub(crate) renditions: Vec<Rendition>,
    /// Processing state to store.
    pub(crate) state: ProcessingState,
    /// `(event id, payload)` of the `file.processed` entry when this write completes the join.
    pub(crate) event: Option<(String, String)>,
    /// What to return to the caller once the write committed.
    pub(crate) outcome: JoinOutcome,
}

/// Parses the stored stage results (`""` or absent means none yet).
pub(crate) fn parse(stages_json: &str) -> Result<Stages> {
    if stages_json.is_empty() {
        return Ok(Stages::new());
    }
    serde_json::from_str(stages_json).map_err(|e| Error::Metadata(e.into()))
}

/// Merges `result` into `version` (whose stored stage results are `stages_json`).
pub(crate) fn merge(
    version: &VersionRecord,
    stages_json: &str,
    result: StageResult,
    required: &[String],
) -> Result<Merged> {
    if result.stage.is_empty() {
        return Err(Error::InvalidInput("stage name is empty".into()));
    }
    if version.key_block.is_empty() {
        // Shredded meanwhile: a rendition recorded now would be readable patient data again.
        return Err(Error::Refused {
            document: version.document_id.clone(),
            reason: format!("v{}: shredded", version.version),
        });
    }
    let mut stages = parse(stages_json)?;
    let mut renditions: Vec<Rendition> = version
        .renditions
        .iter()
        .filter(|r| r.stage != result.stage)
        .cloned()
        .collect();
    renditions.extend(result.renditions.iter().cloned());
    // The rendition list is the one place a rendition's key block is kept (re-wrap replaces it
    // there); the stage result keeps only the descriptors.
    let mut result = result;
    for r in &mut result.renditions {
        r.key_block.clear();
    }
    stages.insert(result.stage.clone(), result);
    let missing: Vec<String> = required
        .iter()
        .filter(|s| !stages.contains_key(s.as_str()))
        .cloned()
        .collect();
    let completes = missing.is_empty() && version.state == ProcessingState::Pending;
    let state = if completes {
        ProcessingState::Processed
    } else {
        version.state
    };
    let event = completes.then(|| {
        let mut done = version.clone();
        done.renditions = renditions.clone();
        done.state = state;
        crate::outbox::file_processed(&done, &stages)
    });
    let stages_json = serde_json::to_string(&stages).map_err(|e| Error::Metadata(e.into()))?;
    Ok(Merged {
        stages_json,
        renditions,
        state,
        event,
        outcome: JoinOutcome {
            completed_now: completes,
            state,
            missing,
        },
    })
}

/// The stored form of a version's rendition list.
pub(crate) fn renditions_json(renditions: &[Rendition]) -> Result<String> {
    serde_json::to_string(renditions).map_err(|e| Error::Metadata(e.into()))
}

/// A shredded version's rendition list: the descriptors stay, every key block is emptied, so no
/// key unwraps a rendition's data key any more (its ciphertext is deleted next).
pub(crate) fn shredded(renditions: &[Rendition]) -> Vec<Rendition> {
    renditions
        .iter()
        .map(|r| Rendition {
            key_block: Vec::new(),
            ..r.clone()
        })
        .collect()
}

/// Refuses a stage result for a document soft-deleted meanwhile.
pub(crate) fn refuse_if_deleted(doc: &crate::model::DocumentRecord) -> Result<()> {
    match doc.deleted_at {
        Some(_) => Err(Error::Refused {
            document: doc.document_id.clone(),
            reason: "the document is deleted".into(),
        }),
        None => Ok(()),
    }
}

/// The refusal when a compare-and-swap on a version's renditions finds them changed.
pub(crate) fn renditions_changed(document_id: &str, version: u64) -> Error {
    Error::Refused {
        document: document_id.to_owned(),
        reason: format!("v{version}: renditions changed concurrently or version missing"),
    }
}
