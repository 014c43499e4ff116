//! `GET /v1/search`: the CLI's query language and filters, with snippets. The policy narrows the
//! query itself (patients: their released exams; doctors: their exams), so totals, counts by
//! kind and snippets never count a document the caller may not see.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use docstore::Timestamp;
use docstore_search::{SearchError, SearchQuery, SearchResults, Sort};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::policy::{Action, Role};
use crate::problem::ApiError;
use crate::state::{AppState, Caller};

/// Query string of `GET /v1/search`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Query text (empty: filters only).
    #[serde(default)]
    pub(crate) q: String,
    /// Only this patient's documents.
    #[serde(default)]
    pub(crate) patient: Option<String>,
    /// Only this exam's.
    #[serde(default)]
    pub(crate) exam: Option<String>,
    /// Only this kind.
    #[serde(default)]
    pub(crate) kind: Option<String>,
    /// Created at or after (`2026-01-31` or RFC 3339).
    #[serde(default)]
    pub(crate) from: Option<String>,
    /// Created before.
    #[serde(default)]
    pub(crate) until: Option<String>,
    /// Terms match within one edit.
    #[serde(default)]
    pub(crate) fuzzy: bool,
    /// Every version, not only the latest.
    #[serde(default)]
    pub(crate) all_versions: bool,
    /// `relevance` (default) or `newest`.
    #[serde(default)]
    pub(crate) sort: Option<String>,
    /// 1-based page.
    #[serde(default)]
    pub(crate) page: Option<usize>,
    /// Hits per page, 1–100 (default 10).
    #[serde(default)]
    pub(crate) per_page: Option<usize>,
}

/// One hit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct HitView {
    document_id: String,
    version: u64,
    patient_id: String,
    exam_id: String,
    kind: String,
    created_at: String,
    score: Option<f32>,
    #[schema(value_type = Option<Object>)]
    snippet: Option<serde_json::Value>,
    thumbnail: String,
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchPage {
    /// Hits in all pages.
    total: usize,
    /// Hits by document kind.
    by_kind: std::collections::BTreeMap<String, u64>,
    /// This page's hits.
    hits: Vec<HitView>,
    /// Page number.
    page: usize,
    /// Hits per page.
    per_page: usize,
}

/// `GET /v1/search`.
#[utoipa::path(get, path = "/v1/search", tag = "search", params(SearchParams),
    responses((status = 200, description = "Hits, narrowed by the access policy", body = SearchPage), crate::openapi::Problems))]
pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<SearchParams>,
) -> Result<Json<SearchPage>, ApiError> {
    let found = run(&state, &caller, p).await?;
    let hits: Vec<HitView> = found
        .results
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
            thumbnail: thumbnail_path(&h.version.document_id, h.version.version),
        })
        .collect();
    Ok(Json(SearchPage {
        total: found.results.total,
        by_kind: found.results.by_kind,
        hits,
        page: found.page,
        per_page: found.per_page,
    }))
}

/// The API path of a version's thumbnail.
pub(crate) fn thumbnail_path(document_id: &str, version: u64) -> String {
    format!("/v1/documents/{document_id}/versions/{version}/renditions/thumbnail")
}

/// One page of a search, as the policy narrows it.
pub(crate) struct Found {
    pub results: SearchResults,
    pub page: usize,
    pub per_page: usize,
}

impl SearchParams {
    /// Whether the search asks for anything (text or a filter).
    pub(crate) fn is_empty(&self) -> bool {
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        self.q.trim().is_empty()
            && blank(&self.patient)
            && blank(&self.exam)
            && blank(&self.kind)
            && blank(&self.from)
            && blank(&self.until)
    }
}

/// A search by `caller` (the API's and the search page's): the policy narrows the query, the
/// library audits it. Empty filter values (as a form sends them) are no filter.
pub(crate) async fn run(state: &AppState, caller: &Caller, mut p: SearchParams) -> Result<Found, ApiError> {
    caller.about(Action::Search, None, None);
    for f in [
        &mut p.patient,
        &mut p.exam,
        &mut p.kind,
        &mut p.from,
        &mut p.until,
        &mut p.sort,
    ] {
        if f.as_deref().is_some_and(|s| s.trim().is_empty()) {
            *f = None;
        }
    }
    let index = state.index.clone().ok_or(ApiError::Status(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "this node serves no search",
    ))?;
    let exams = state.visible_exams(&caller.principal, Action::Search).await?;
    let per_page = p.per_page.unwrap_or(10);
    if !(1..=100).contains(&per_page) {
        return Err(ApiError::BadRequest("per_page out of range".into()));
    }
    let page = p.page.unwrap_or(1).max(1);
    let offset = (page - 1).saturating_mul(per_page);
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
    // The library's limits (length, nesting, terms, offset), before anything else answers: the
    // message names the limit, never the query.
    q.check_limits().map_err(search_error)?;
    if q.exams.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Found {
            results: SearchResults::default(),
            page,
            per_page,
        });
    }
    let results = docstore_search::search(&state.store, &index, &caller.principal.identity(), q)
        .await
        .map_err(search_error)?;
    Ok(Found {
        results,
        page,
        per_page,
    })
}

/// A search failure over HTTP. The parser's message could quote the query, which can name a
/// patient: it is not echoed; a limit's says only which limit.
fn search_error(e: SearchError) -> ApiError {
    match e {
        SearchError::Query(_) => ApiError::BadRequest("the query does not parse".into()),
        SearchError::Limit(what) => ApiError::BadRequest(format!("query over a limit: {what}")),
        other => {
            tracing::warn!(error = %other, "search failed");
            ApiError::Unavailable
        }
    }
}
