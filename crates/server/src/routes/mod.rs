//! The `/v1` REST API: one module per resource, thin handlers over the library, every one behind
//! the policy.

pub mod documents;
pub mod links;
pub mod lists;
pub mod search;
pub mod shares;
pub mod views;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use crate::policy::{Action, grant};
use crate::problem::ApiError;
use crate::state::{AppState, Caller, audit_requests};

/// Decodes a JSON request body within the configured size.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.len() > state.limits.max_json {
        return Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "JSON body too large",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("the body is not the JSON this route takes".into()))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this document's records.
    #[serde(default)]
    document: Option<String>,
    /// Newest N records, 1–1000 (default 100).
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/audit`: the newest audit records (auditors).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Records, oldest first", body = Object), crate::openapi::Problems))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.about(Action::AuditRead, q.document.as_deref(), None);
    if grant(caller.role(), Action::AuditRead).is_none() {
        return Err(ApiError::Status(
            StatusCode::FORBIDDEN,
            "this role may not read the audit log",
        ));
    }
    if let Some(d) = &q.document {
        docstore::validate_id("document", d)?;
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1..=1000".into()));
    }
    let records = state
        .store
        .audit_log(&caller.principal.identity(), q.document.as_deref(), limit)
        .await?;
    Ok(Json(json!({ "items": records })))
}

/// Query of `GET /v1/documents/{id}/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Newest N records, 1–1000 (default 200).
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/documents/{id}/history`: the document's audit trail (who read, downloaded, shared or
/// changed it, and when), for those who may read it: staff, and its patient once released.
#[utoipa::path(get, path = "/v1/documents/{id}/history", tag = "audit",
    params(("id" = String, Path, description = "Document id"), HistoryQuery),
    responses((status = 200, description = "Records, oldest first", body = Object), crate::openapi::Problems))]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1..=1000".into()));
    }
    let records = document_history(&state, &caller, &id, limit).await?;
    Ok(Json(json!({ "items": records })))
}

/// The newest `limit` audit records about document `id`, if `caller` may see its history.
pub(crate) async fn document_history(
    state: &AppState,
    caller: &Caller,
    id: &str,
    limit: usize,
) -> Result<Vec<docstore::audit::AuditRecord>, ApiError> {
    caller.about(Action::History, Some(id), None);
    state.authorize(&caller.principal, Action::History, id).await?;
    Ok(state
        .store
        .audit_log(&caller.principal.identity(), Some(id), limit)
        .await?)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.access.ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "access database unavailable").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound { denied: false }
}

/// The whole router, with the audit middleware on every route.
pub fn router(state: Arc<AppState>) -> Router {
    use documents as d;
    let body_timeout = state.limits.body_timeout;
    Router::new()
        .route("/v1/documents", post(d::create))
        .route("/v1/documents/{id}", get(d::get_latest).delete(d::delete))
        .route(
            "/v1/documents/{id}/versions",
            get(d::versions).post(d::add_version),
        )
        .route("/v1/documents/{id}/versions/{n}", get(d::get_version))
        .route(
            "/v1/documents/{id}/versions/{n}/renditions/{stage}",
            get(d::rendition),
        )
        .route("/v1/documents/{id}/versions/{n}/shred", post(d::shred))
        .route("/v1/documents/{id}/versions/{n}/links", post(links::create))
        .route("/v1/documents/{id}/links", get(links::list))
        .route("/v1/links/{token}", get(links::open).delete(links::revoke))
        .route("/v1/documents/{id}/restore", post(d::restore))
        .route("/v1/documents/{id}/hold", put(d::hold))
        .route("/v1/documents/{id}/purge", post(d::purge))
        .route("/v1/patients/{p}/documents", get(lists::of_patient))
        .route("/v1/exams/{e}", get(lists::exam))
        .route("/v1/exams/{e}/documents", get(lists::of_exam))
        .route("/v1/exams/{e}/release", post(lists::release))
        .route("/v1/exams/{e}/shares", get(shares::list))
        .route(
            "/v1/exams/{e}/shares/{doctor}",
            put(shares::share).delete(shares::unshare),
        )
        .route("/v1/search", get(search::search))
        .route("/v1/documents/{id}/history", get(history))
        .route("/v1/audit", get(audit))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_requests,
        ))
        .layer(crate::web::session_layer(state.tls, state.sessions.clone()))
        // A slow body (one byte now and then) is cut; the upload then stores nothing.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_timeout))
        .with_state(state)
}
