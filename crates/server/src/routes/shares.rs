//! Sharing an exam with a doctor who did not request it: `PUT` and `DELETE
//! /v1/exams/{e}/shares/{doctor}`, `GET /v1/exams/{e}/shares`. A patient shares their own
//! released exams; staff share any. A shared doctor reads the exam's documents as if they had
//! requested it (the policy's `assigned` condition), in reads, lists and searches alike.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::policy::Action;
use crate::problem::ApiError;
use crate::state::{AppState, Caller, access_error};

/// One share.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareView {
    /// The doctor (their token's subject).
    doctor: String,
    /// Who shared (`role:subject`).
    shared_by: String,
    /// When, RFC 3339.
    shared_at: String,
}

/// The shares of an exam.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShareList {
    /// By doctor.
    items: Vec<ShareView>,
}

fn doctor_id(doctor: &str) -> Result<(), ApiError> {
    docstore::validate_id("doctor", doctor).map_err(|_| ApiError::NotFound { denied: false })
}

/// `PUT /v1/exams/{e}/shares/{doctor}`: idempotent.
#[utoipa::path(put, path = "/v1/exams/{e}/shares/{doctor}", operation_id = "share_exam", tag = "shares",
    params(("e" = String, Path, description = "Exam id"), ("doctor" = String, Path, description = "The doctor's subject")),
    responses((status = 204, description = "Shared"), crate::openapi::Problems))]
pub async fn share(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((exam, doctor)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.audit.about_exam(Action::Share, &exam);
    state
        .authorize_exam(&caller.principal, Action::Share, &exam)
        .await?;
    doctor_id(&doctor)?;
    let by = caller.principal.identity().subject;
    state
        .access
        .share(&exam, &doctor, &by)
        .await
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/exams/{e}/shares/{doctor}`.
#[utoipa::path(delete, path = "/v1/exams/{e}/shares/{doctor}", operation_id = "unshare_exam", tag = "shares",
    params(("e" = String, Path, description = "Exam id"), ("doctor" = String, Path, description = "The doctor's subject")),
    responses((status = 204, description = "No longer shared"), crate::openapi::Problems))]
pub async fn unshare(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((exam, doctor)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.audit.about_exam(Action::Share, &exam);
    state
        .authorize_exam(&caller.principal, Action::Share, &exam)
        .await?;
    doctor_id(&doctor)?;
    if state.access.unshare(&exam, &doctor).await.map_err(access_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound { denied: false })
    }
}

/// `GET /v1/exams/{e}/shares`.
#[utoipa::path(get, path = "/v1/exams/{e}/shares", operation_id = "list_shares", tag = "shares",
    params(("e" = String, Path, description = "Exam id")),
    responses((status = 200, description = "The exam's shares", body = ShareList), crate::openapi::Problems))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(exam): Path<String>,
) -> Result<Json<ShareList>, ApiError> {
    caller.audit.about_exam(Action::Share, &exam);
    state
        .authorize_exam(&caller.principal, Action::Share, &exam)
        .await?;
    let items = state
        .access
        .shares_of(&exam)
        .await
        .map_err(access_error)?
        .into_iter()
        .map(|s| ShareView {
            doctor: s.doctor,
            shared_by: s.shared_by,
            shared_at: s.shared_at.to_rfc3339(),
        })
        .collect();
    Ok(Json(ShareList { items }))
}
