//! `/v1/patients/{p}/documents` and `/v1/exams/{e}/documents`, narrowed by the policy, and the
//! staff's release action `POST /v1/exams/{e}/release`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::policy::{Action, Condition, Role, grant};
use crate::problem::ApiError;
use crate::routes::views::{DocumentView, Page, PageQuery};
use crate::state::{AppState, Caller, access_error};

/// List query: pagination, and (for roles that see deleted documents) `include_deleted`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    // Not `#[serde(flatten)]`: flattened fields of a query string lose their number types.
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// Items per page, 1–200 (default 50).
    #[serde(default)]
    limit: Option<usize>,
    /// Also list soft-deleted documents (roles that may restore).
    #[serde(default)]
    include_deleted: bool,
}

fn page(
    docs: Vec<docstore::DocumentRecord>,
    q: &ListQuery,
    allowed: Option<&[String]>,
    role: Role,
) -> Result<Page<DocumentView>, ApiError> {
    // Only roles granted unconditionally see tombstones.
    let deleted_ok = q.include_deleted && matches!(grant(role, Action::Restore), Some(Condition::Always));
    let mut views: Vec<DocumentView> = docs
        .iter()
        .filter(|d| deleted_ok || d.deleted_at.is_none())
        .filter(|d| allowed.is_none_or(|a| a.binary_search(&d.exam_id).is_ok()))
        .map(DocumentView::from)
        .collect();
    views.sort_by(|a, b| a.document_id.cmp(&b.document_id));
    let page = PageQuery {
        cursor: q.cursor.clone(),
        limit: q.limit,
    };
    Page::of(views, &page, |d| d.document_id.clone())
}

/// `GET /v1/patients/{p}/documents`.
#[utoipa::path(get, path = "/v1/patients/{p}/documents", tag = "lists",
    params(("p" = String, Path, description = "Patient id"), ListQuery),
    responses((status = 200, description = "Documents, by id", body = Page<DocumentView>), crate::openapi::Problems))]
pub async fn of_patient(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(patient): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<DocumentView>>, ApiError> {
    caller.about(Action::ListPatient, None, None);
    let mut allowed = state
        .visible_exams(&caller.principal, Action::ListPatient)
        .await?;
    if grant(caller.role(), Action::ListPatient) == Some(Condition::OwnReleased)
        && caller.principal.patient_id.as_deref() != Some(patient.as_str())
    {
        return Err(ApiError::denied());
    }
    if docstore::validate_id("patient", &patient).is_err() {
        return Err(ApiError::NotFound { denied: false });
    }
    let docs = state
        .store
        .documents_of_patient(&caller.principal.identity(), &patient)
        .await?;
    if let Some(a) = allowed.as_mut() {
        a.sort();
    }
    Ok(Json(page(docs, &q, allowed.as_deref(), caller.role())?))
}

/// `GET /v1/exams/{e}/documents`.
#[utoipa::path(get, path = "/v1/exams/{e}/documents", tag = "lists",
    params(("e" = String, Path, description = "Exam id"), ListQuery),
    responses((status = 200, description = "Documents, by id", body = Page<DocumentView>), crate::openapi::Problems))]
pub async fn of_exam(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(exam): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<DocumentView>>, ApiError> {
    caller.about(Action::ListExam, None, None);
    let mut allowed = state.visible_exams(&caller.principal, Action::ListExam).await?;
    if docstore::validate_id("exam", &exam).is_err() {
        return Err(ApiError::NotFound { denied: false });
    }
    if let Some(a) = allowed.as_mut() {
        a.sort();
        if a.binary_search(&exam).is_err() {
            return Err(ApiError::denied());
        }
    }
    let docs = state
        .store
        .documents_of_exam(&caller.principal.identity(), &exam)
        .await?;
    Ok(Json(page(docs, &q, allowed.as_deref(), caller.role())?))
}

/// An exam's state, as the access policy knows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExamView {
    /// Exam id.
    exam_id: String,
    /// Its patient.
    patient_id: String,
    /// When its results were released to the patient, RFC 3339.
    released_at: Option<String>,
    /// When the exam service reported it complete (`exam.completed`), RFC 3339.
    completed_at: Option<String>,
}

/// `GET /v1/exams/{e}`: whether the exam is released and complete.
#[utoipa::path(get, path = "/v1/exams/{e}", operation_id = "get_exam", tag = "lists",
    params(("e" = String, Path, description = "Exam id")),
    responses((status = 200, description = "The exam", body = ExamView), crate::openapi::Problems))]
pub async fn exam(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(exam): Path<String>,
) -> Result<Json<ExamView>, ApiError> {
    caller.audit.about_exam(Action::ListExam, &exam);
    let e = state
        .authorize_exam(&caller.principal, Action::ListExam, &exam)
        .await?;
    Ok(Json(ExamView {
        exam_id: e.exam_id,
        patient_id: e.patient_id,
        released_at: e.released_at.map(|t| t.to_rfc3339()),
        completed_at: e.completed_at.map(|t| t.to_rfc3339()),
    }))
}

/// Answer of `POST /v1/exams/{e}/release`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Released {
    /// Exam id.
    exam_id: String,
    /// Its patient.
    patient_id: String,
    /// When it was first released, RFC 3339.
    released_at: Option<String>,
}

/// Body of `POST /v1/exams/{e}/release`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// The exam's patient; default: the patient of the exam's documents.
    #[serde(default)]
    patient_id: Option<String>,
}

/// `POST /v1/exams/{e}/release`: releases the exam's documents to its patient (staff). The same
/// as the exam service's `exam.result.ready`.
#[utoipa::path(post, path = "/v1/exams/{e}/release", tag = "lists",
    params(("e" = String, Path, description = "Exam id")), request_body(content = Option<ReleaseBody>),
    responses((status = 200, description = "Released", body = Released), crate::openapi::Problems))]
pub async fn release(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(exam): Path<String>,
    body: Bytes,
) -> Result<Json<Released>, ApiError> {
    caller.audit.about_exam(Action::Release, &exam);
    if grant(caller.role(), Action::Release).is_none() {
        return Err(ApiError::Status(
            axum::http::StatusCode::FORBIDDEN,
            "this role may not release results",
        ));
    }
    docstore::validate_id("exam", &exam).map_err(|_| ApiError::NotFound { denied: false })?;
    let b: ReleaseBody = if body.is_empty() {
        ReleaseBody::default()
    } else {
        crate::routes::json_body(&state, &body)?
    };
    let patient = match b.patient_id {
        Some(p) => {
            docstore::validate_id("patient", &p)?;
            p
        }
        None => state.exam_patient(&caller.principal, &exam).await?,
    };
    let by = caller.principal.identity().subject;
    let e = state
        .access
        .release(state.store.metadata().as_ref(), &exam, &patient, &by)
        .await
        .map_err(|e| match e {
            crate::access::AccessError::PatientMismatch => ApiError::Status(
                axum::http::StatusCode::CONFLICT,
                "the exam belongs to another patient",
            ),
            other => access_error(other),
        })?;
    Ok(Json(Released {
        exam_id: e.exam_id,
        patient_id: e.patient_id,
        released_at: e.released_at.map(|t| t.to_rfc3339()),
    }))
}
