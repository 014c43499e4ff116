//! `GET /v1/search`: the CLI's query language and filters, with snippets. The policy narrows the
//! query itself (patients: their released exams; doctors: their exams), so totals, counts by
//! kind and snippets never count a document the caller may not see.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use docstore::Timestamp;
use docstore_pipeline::search::{SearchError, SearchQuery, Sort};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::policy::{Action, Role};
use crate::problem::ApiError;
use crate::state::{AppState, Caller};

/// Query string of `GET /v1/search`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Query text (empty: filters only).
    #[serde(default)]
    q: String,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default)]
    exam: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    fuzzy: bool,
    #[serde(default)]
    all_versions: bool,
    /// `relevance` (default) or `newest`.
    #[serde(default)]
    sort: Option<String>,
    /// 1-based page.
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
}

/// Longest query text accepted.
const MAX_QUERY: usize = 1024;
/// Deepest page reachable (offset cap).
const MAX_OFFSET: usize = 10_000;

#[derive(Debug, Serialize)]
struct HitView {
    document_id: String,
    version: u64,
    patient_id: String,
    exam_id: String,
    kind: String,
    created_at: String,
    score: Option<f32>,
    snippet: Option<serde_json::Value>,
    thumbnail: String,
}

/// `GET /v1/search`.
pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<SearchParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.about(Action::Search, None, None);
    let index = state.index.clone().ok_or(ApiError::Status(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "this node serves no search",
    ))?;
    let exams = state.visible_exams(&caller.principal, Action::Search).await?;
    if p.q.len() > MAX_QUERY {
        return Err(ApiError::BadRequest(format!(
            "query longer than {MAX_QUERY} bytes"
        )));
    }
    let per_page = p.per_page.unwrap_or(10);
    if !(1..=100).contains(&per_page) {
        return Err(ApiError::BadRequest("per_page out of range".into()));
    }
    let page = p.page.unwrap_or(1).max(1);
    let offset = (page - 1).saturating_mul(per_page);
    if offset > MAX_OFFSET {
        return Err(ApiError::BadRequest(format!(
            "pages past offset {MAX_OFFSET} are not served"
        )));
    }
    let time = |s: &Option<String>| s.as_deref().map(Timestamp::parse).transpose();
    let sort = match p.sort.as_deref() {
        None | Some("relevance") => Sort::Relevance,
        Some("newest") => Sort::Newest,
        Some(_) => return Err(ApiError::BadRequest("sort is relevance or newest".into())),
    };
    let mut patient = p.patient.clone();
    if caller.role() == Role::Patient {
        // A patient's search is about themself, whatever the parameters say.
        patient = caller.principal.patient_id.clone();
    }
    let empty = || Json(json!({"total": 0, "by_kind": {}, "hits": [], "page": page, "per_page": per_page}));
    if exams.as_ref().is_some_and(Vec::is_empty) {
        return Ok(empty());
    }
    let q = SearchQuery {
        text: p.q,
        fuzzy: p.fuzzy,
        patient,
        exam: p.exam,
        exams,
        kind: p.kind,
        from: time(&p.from)?,
        until: time(&p.until)?,
        all_versions: p.all_versions,
        offset,
        limit: per_page,
        sort,
        snippet_chars: 200,
        ..SearchQuery::default()
    };
    let results = docstore_pipeline::search::search(&state.store, &index, &caller.principal.identity(), q)
        .await
        .map_err(|e| match e {
            // The parser's message can quote the query, which can name a patient: not echoed.
            SearchError::Query(_) => ApiError::BadRequest("the query does not parse".into()),
            other => {
                tracing::warn!(error = %other, "search failed");
                ApiError::Unavailable
            }
        })?;
    let hits: Vec<HitView> = results
        .hits
        .iter()
        .map(|h| HitView {
            document_id: h.version.document_id.clone(),
            version: h.version.version,
            patient_id: h.version.patient_id.clone(),
            exam_id: h.version.exam_id.clone(),
            kind: h.version.kind.clone(),
            created_at: h.version.created_at.to_rfc3339(),
            score: h.score,
            snippet: h.snippet.as_ref().map(|s| {
                json!({
                    "fragment": s.fragment,
                    "highlights": s.highlights.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>(),
                })
            }),
            thumbnail: format!(
                "/v1/documents/{}/versions/{}/renditions/thumbnail",
                h.version.document_id, h.version.version
            ),
        })
        .collect();
    Ok(Json(json!({
        "total": results.total,
        "by_kind": results.by_kind,
        "hits": hits,
        "page": page,
        "per_page": per_page,
    })))
}
