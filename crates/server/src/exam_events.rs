//! The exam service's events, as the access policy needs them: `exam.created` and `exam.updated`
//! record the exam's patient and the requesting doctor (`data.requested_by`, a token subject);
//! `exam.result.ready` releases the exam's documents to its patient; `exam.completed` marks the
//! exam complete (`GET /v1/exams/{e}` shows it). A worker of the pipeline's
//! runtime runs it, so delivery, retries and dead letters are the pipeline's.

use std::sync::Arc;

use async_trait::async_trait;
use docstore::meta::MetadataStore;
use docstore_events::{CloudEvent, EventType};
use docstore_pipeline::runtime::{Stage, StageError};

use crate::access::{AccessError, AccessStore};

/// The topics [`ExamEvents`] reads.
pub const TOPICS: &[&str] = &[
    "exam.created",
    "exam.updated",
    "exam.completed",
    "exam.result.ready",
];

/// Applies exam events to the [`AccessStore`].
#[derive(Debug, Clone)]
pub struct ExamEvents {
    access: AccessStore,
    meta: Arc<dyn MetadataStore>,
}

impl ExamEvents {
    /// A stage writing to `access`, and releases to `meta` too (see [`AccessStore::release`]).
    pub fn new(access: AccessStore, meta: Arc<dyn MetadataStore>) -> Self {
        ExamEvents { access, meta }
    }
}

fn stage_error(e: AccessError) -> StageError {
    if e.is_transient() {
        StageError::Transient(e.to_string())
    } else {
        StageError::Permanent(e.to_string())
    }
}

#[async_trait]
impl Stage for ExamEvents {
    fn name(&self) -> &str {
        "exam-access"
    }

    async fn handle(&self, event: &CloudEvent) -> Result<(), StageError> {
        let exam = event
            .exam()
            .map_err(|e| StageError::Permanent(format!("exam event: {e}")))?;
        for (what, id) in [("exam", &exam.exam_id), ("patient", &exam.patient_id)] {
            docstore::validate_id(what, id).map_err(|e| StageError::Permanent(e.to_string()))?;
        }
        match event.event_type {
            EventType::ExamCreated | EventType::ExamUpdated => {
                self.access
                    .record_exam(&exam.exam_id, &exam.patient_id)
                    .await
                    .map_err(stage_error)?;
                if let Some(doctor) = exam.rest.get("requested_by").and_then(|v| v.as_str()) {
                    docstore::validate_id("doctor", doctor)
                        .map_err(|e| StageError::Permanent(e.to_string()))?;
                    self.access
                        .assign(&exam.exam_id, doctor)
                        .await
                        .map_err(stage_error)?;
                }
            }
            EventType::ExamResultReady => {
                self.access
                    .release(
                        self.meta.as_ref(),
                        &exam.exam_id,
                        &exam.patient_id,
                        &format!("event:{}", event.id),
                    )
                    .await
                    .map_err(stage_error)?;
            }
            EventType::ExamCompleted => {
                self.access
                    .complete(&exam.exam_id, &exam.patient_id)
                    .await
                    .map_err(stage_error)?;
            }
            // Other types are not on this stage's topics.
            _ => {}
        }
        Ok(())
    }
}
