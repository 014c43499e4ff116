//! `/v1/documents`: create, add versions, read (with the headers a browser's PDF viewer needs:
//! `ETag`, `Last-Modified`, `Range`, `If-None-Match`, `If-Range`, `Content-Disposition`),
//! renditions, soft delete, restore, hold, purge, shred.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use docstore::meta::HoldChange;
use docstore::{DocumentId, DocumentRecord, ExamId, Kind, PatientId, PutRequest, Timestamp, VersionRecord};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio_util::io::StreamReader;

use crate::policy::Action;
use crate::problem::ApiError;
use crate::routes::views::{DocumentView, Page, VersionView};
use crate::state::{AppState, Caller};

/// Query of `POST /v1/documents`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Patient id (1–128 of `[A-Za-z0-9._:-]`).
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    patient: String,
    /// Exam id.
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    exam: String,
    /// `report` (default), `image` or `attachment`.
    #[serde(default)]
    #[param(pattern = "^(report|image|attachment)$")]
    kind: Option<String>,
}

/// Query of content reads.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// `attachment` to download; inline otherwise.
    #[serde(default)]
    pub(crate) disposition: Option<String>,
}

/// Parses a version number from the path; anything else reads as a missing version.
fn version_number(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or(ApiError::NotFound { denied: false })
}

fn media_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("Content-Type (the document's media type) is required".into()))?;
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = essence.len() <= 127
        && essence.split_once('/').is_some_and(|(t, s)| {
            let token = |x: &str| {
                !x.is_empty()
                    && x.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            token(t) && token(s)
        });
    if !ok {
        return Err(ApiError::BadRequest("Content-Type is not a media type".into()));
    }
    Ok(essence)
}

/// Streams the request body into the store, cut at `max` bytes. Returns the record, or 413 when
/// the body was too large (nothing is committed: the store aborts the upload).
async fn store_body(
    state: &AppState,
    caller: &Caller,
    req: PutRequest,
    headers: &HeaderMap,
    body: Body,
) -> Result<VersionRecord, ApiError> {
    let max = state.limits.max_upload;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload larger than the limit",
        ));
    }
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let mut seen = 0u64;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > max {
            flag.store(true, Ordering::Relaxed);
            return Err(io::Error::other("upload larger than the limit"));
        }
        Ok::<Bytes, io::Error>(chunk)
    });
    let reader = StreamReader::new(stream);
    match state.store.put(&caller.principal.identity(), req, reader).await {
        Ok(v) => Ok(v),
        Err(_) if too_large.load(Ordering::Relaxed) => Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload larger than the limit",
        )),
        Err(docstore::Error::Io { .. }) => Err(ApiError::BadRequest("the upload was interrupted".into())),
        Err(e) => Err(e.into()),
    }
}

fn etag(v: &VersionRecord) -> String {
    format!("\"{}\"", v.version_id)
}

fn created(v: VersionRecord) -> Response {
    let location = format!("/v1/documents/{}/versions/{}", v.document_id, v.version);
    let tag = etag(&v);
    let mut resp = (StatusCode::CREATED, Json(VersionView::from(&v))).into_response();
    let h = resp.headers_mut();
    if let Ok(l) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, l);
    }
    if let Ok(t) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, t);
    }
    resp
}

/// `POST /v1/documents?patient=P&exam=E&kind=report`: the body is the content.
#[utoipa::path(post, path = "/v1/documents", tag = "documents", params(CreateQuery),
    request_body(content = crate::openapi::Binary, content_type = "application/octet-stream", description = "The document's bytes; Content-Type is its media type"),
    responses((status = 201, description = "Created: the version record", body = VersionView), crate::openapi::Problems))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<CreateQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.about(Action::Create, None, None);
    if !crate::policy::allows(&caller.principal, Action::Create, &Default::default()) {
        return Err(ApiError::Status(
            StatusCode::FORBIDDEN,
            "this role may not upload",
        ));
    }
    let kind: Kind = q.kind.as_deref().unwrap_or("report").parse()?;
    let req = PutRequest::new(PatientId::new(q.patient)?, ExamId::new(q.exam)?)
        .kind(kind)
        .media_type(media_type(&headers)?)
        .expected_version(0);
    let v = store_body(&state, &caller, req, &headers, body).await?;
    caller.about(Action::Create, Some(&v.document_id), Some(v.version));
    Ok(created(v))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().trim_start_matches("W/").to_owned())
}

/// `POST /v1/documents/{id}/versions`: the next version; `If-Match: <ETag of the latest>` makes
/// it a compare-and-swap (412 when another version came first).
#[utoipa::path(post, path = "/v1/documents/{id}/versions", tag = "documents",
    params(("id" = String, Path, description = "Document id"), ("If-Match" = Option<String>, Header, description = "ETag of the latest version (compare-and-swap)")),
    request_body(content = crate::openapi::Binary, content_type = "application/octet-stream"),
    responses((status = 201, description = "Created: the version record", body = VersionView), crate::openapi::Problems))]
pub async fn add_version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.about(Action::AddVersion, Some(&id), None);
    let doc = state
        .authorize(&caller.principal, Action::AddVersion, &id)
        .await?;
    if doc.deleted_at.is_some() {
        return Err(ApiError::NotFound { denied: false });
    }
    let expected = match if_match(&headers) {
        None => None,
        Some(tag) => {
            let latest = state
                .store
                .versions(&caller.principal.identity(), &id)
                .await?
                .pop()
                .ok_or(ApiError::NotFound { denied: false })?;
            if tag != "*" && tag != etag(&latest) {
                return Err(ApiError::Status(
                    StatusCode::PRECONDITION_FAILED,
                    "If-Match does not name the latest version",
                ));
            }
            Some(latest.version)
        }
    };
    let mut req = PutRequest::new(PatientId::new(doc.patient_id)?, ExamId::new(doc.exam_id)?)
        .document(DocumentId::new(id)?)
        .kind(doc.kind)
        .media_type(media_type(&headers)?);
    req.expected_version = expected;
    let v = store_body(&state, &caller, req, &headers, body).await?;
    caller.about(Action::AddVersion, Some(&v.document_id), Some(v.version));
    Ok(created(v))
}

/// A single byte range of a representation of `size` bytes: `None` means "serve it whole"
/// (no header, or a form this server does not do, such as several ranges).
fn parse_range(value: &str, size: u64) -> Result<Option<Range<u64>>, ApiError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(ApiError::RangeNotSatisfiable(size))?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().map_err(|_| ApiError::RangeNotSatisfiable(size));
    let range = if a.is_empty() {
        let n = num(b)?;
        if n == 0 {
            return Err(ApiError::RangeNotSatisfiable(size));
        }
        size.saturating_sub(n)..size
    } else {
        let start = num(a)?;
        let end = if b.is_empty() {
            size
        } else {
            num(b)?.saturating_add(1).min(size)
        };
        start..end
    };
    if range.start >= size || range.start >= range.end {
        return Err(ApiError::RangeNotSatisfiable(size));
    }
    Ok(Some(range))
}

/// Ranges past this are read in pieces of this size, so memory stays bounded.
const RANGE_PIECE: u64 = 8 * 1024 * 1024;

fn content_headers(resp: &mut Response, v: &VersionRecord, media_type: &str, q: &ContentQuery) {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(h, header::CONTENT_TYPE, media_type.to_owned());
    set(h, header::ETAG, etag(v));
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.created_at.0.max(0) as u64);
    set(h, header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Patient data: browsers may keep it for revalidation, shared caches never.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Inline only for types a browser shows without running anything: a stored HTML or SVG
    // page would otherwise run its scripts on this origin, beside the pages' session cookie.
    let viewable = matches!(
        media_type,
        "application/pdf" | "image/png" | "image/jpeg" | "image/webp" | "image/gif" | "text/plain"
    );
    let disposition = if q.disposition.as_deref() == Some("attachment") || !viewable {
        "attachment"
    } else {
        "inline"
    };
    let ext = match media_type {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/tiff" => "tiff",
        "image/webp" => "webp",
        "text/plain" => "txt",
        _ => "bin",
    };
    // Ids are [A-Za-z0-9._:-]: safe inside a quoted filename.
    set(
        h,
        header::CONTENT_DISPOSITION,
        format!(
            "{disposition}; filename=\"{}-v{}.{ext}\"",
            v.document_id, v.version
        ),
    );
}

fn matches_etag(value: Option<&HeaderValue>, tag: &str) -> bool {
    value.and_then(|v| v.to_str().ok()).is_some_and(|s| {
        s.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == tag)
    })
}

async fn serve_content(
    state: Arc<AppState>,
    caller: Caller,
    id: String,
    version: Option<u64>,
    headers: HeaderMap,
    q: ContentQuery,
) -> Result<Response, ApiError> {
    caller.about(Action::Read, Some(&id), version);
    let doc = state.authorize(&caller.principal, Action::Read, &id).await?;
    if doc.deleted_at.is_some() {
        return Err(ApiError::NotFound { denied: false });
    }
    let who = caller.principal.identity();
    // One statement for the version: the document record from the access check is reused.
    let n = version.unwrap_or(doc.latest_version);
    let record = state.store.version(&who, &id, n).await?;
    caller.about(Action::Read, Some(&id), Some(record.version));
    respond_content(&state, who, &doc, record, &headers, &q).await
}

/// The content of `record` as `who` reads it: 304 on a matching `If-None-Match`, one `Range`
/// (206; only the frames that cover it are decrypted), or the whole stream, with the headers a
/// browser's viewer needs. Shared by authenticated reads and download links.
pub(crate) async fn respond_content(
    state: &Arc<AppState>,
    who: docstore::Identity,
    doc: &DocumentRecord,
    record: VersionRecord,
    headers: &HeaderMap,
    q: &ContentQuery,
) -> Result<Response, ApiError> {
    let id = record.document_id.clone();
    let tag = etag(&record);
    if matches_etag(headers.get(header::IF_NONE_MATCH), &tag) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(t) = HeaderValue::from_str(&tag) {
            resp.headers_mut().insert(header::ETAG, t);
        }
        return Ok(resp);
    }
    state.downloads.check(&who.subject)?;
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|s| s.trim() == tag));
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_ok => parse_range(r, record.size)?,
        _ => None,
    };
    let media_type = record.media_type.clone();
    let mut resp = match range {
        Some(r) => {
            let total = record.size;
            let len = r.end - r.start;
            let body = if len <= RANGE_PIECE {
                Body::from(
                    state
                        .store
                        .get_range(&who, &id, Some(record.version), r.clone())
                        .await?,
                )
            } else {
                // Each piece decrypts only its own frames.
                let store = state.store.clone();
                let (doc_id, n) = (id.clone(), record.version);
                let pieces = futures::stream::iter(
                    (r.start..r.end)
                        .step_by(RANGE_PIECE as usize)
                        .map(move |s| s..(s + RANGE_PIECE).min(r.end)),
                )
                .then(move |piece| {
                    let (store, who, doc_id) = (store.clone(), who.clone(), doc_id.clone());
                    async move { store.get_range(&who, &doc_id, Some(n), piece).await }
                })
                .map_err(io::Error::other);
                Body::from_stream(pieces)
            };
            let mut resp = (StatusCode::PARTIAL_CONTENT, body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{total}", r.start, r.end - 1)) {
                h.insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        None => {
            let document = state.store.open(&who, doc, record.clone()).await?;
            // A frame failing mid-stream ends the body with an error: the client sees a cut
            // connection, never unverified bytes.
            let body = Body::from_stream(document.into_stream().map_err(io::Error::other));
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(record.size));
            resp
        }
    };
    content_headers(&mut resp, &record, &media_type, q);
    Ok(resp)
}

/// `GET /v1/documents/{id}`: the latest version's content.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "documents", params(("id" = String, Path, description = "Document id"), ContentQuery),
    responses((status = 200, description = "The content", content_type = "*/*"), (status = 206, description = "One range of it", content_type = "*/*"), (status = 304, description = "Not modified"), crate::openapi::Problems))]
pub async fn get_latest(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ContentQuery>,
) -> Result<Response, ApiError> {
    serve_content(state, caller, id, None, headers, q).await
}

/// `GET /v1/documents/{id}/versions/{n}`: version N's content.
#[utoipa::path(get, path = "/v1/documents/{id}/versions/{n}", tag = "documents", params(("id" = String, Path, description = "Document id"), ("n" = u64, Path, description = "Version number, from 1"), ContentQuery),
    responses((status = 200, description = "The content", content_type = "*/*"), (status = 206, description = "One range of it", content_type = "*/*"), (status = 304, description = "Not modified"), crate::openapi::Problems))]
pub async fn get_version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, n)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<ContentQuery>,
) -> Result<Response, ApiError> {
    let n = version_number(&n)?;
    serve_content(state, caller, id, Some(n), headers, q).await
}

/// `GET /v1/documents/{id}/versions`: every version's record, oldest first, paginated.
#[utoipa::path(get, path = "/v1/documents/{id}/versions", tag = "documents", params(("id" = String, Path, description = "Document id"), crate::routes::views::PageQuery),
    responses((status = 200, description = "Versions, oldest first", body = Page<VersionView>), crate::openapi::Problems))]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<crate::routes::views::PageQuery>,
) -> Result<Json<Page<VersionView>>, ApiError> {
    caller.about(Action::Read, Some(&id), None);
    let doc = state.authorize(&caller.principal, Action::Read, &id).await?;
    if doc.deleted_at.is_some() {
        return Err(ApiError::NotFound { denied: false });
    }
    let versions = state.store.versions(&caller.principal.identity(), &id).await?;
    let views: Vec<VersionView> = versions.iter().map(VersionView::from).collect();
    Ok(Json(Page::of(views, &page, |v| format!("{:020}", v.version))?))
}

/// `GET /v1/documents/{id}/versions/{n}/renditions/{stage}`: a rendition's content.
#[utoipa::path(get, path = "/v1/documents/{id}/versions/{n}/renditions/{stage}", tag = "documents",
    params(("id" = String, Path, description = "Document id"), ("n" = u64, Path, description = "Version number, from 1"), ("stage" = String, Path, description = "thumbnail, stamp or text"), ContentQuery),
    responses((status = 200, description = "The rendition", content_type = "*/*"), crate::openapi::Problems))]
pub async fn rendition(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, n, stage)): Path<(String, String, String)>,
    Query(q): Query<ContentQuery>,
) -> Result<Response, ApiError> {
    let n = version_number(&n)?;
    caller.about(Action::Read, Some(&id), Some(n));
    let doc = state.authorize(&caller.principal, Action::Read, &id).await?;
    if doc.deleted_at.is_some() || docstore::validate_id("stage", &stage).is_err() {
        return Err(ApiError::NotFound { denied: false });
    }
    let who = caller.principal.identity();
    state.downloads.check(&who.subject)?;
    let document = state.store.get_rendition(&who, &id, n, &stage).await?;
    let record = document.record.clone();
    let r = record
        .renditions
        .iter()
        .find(|r| r.stage == stage)
        .cloned()
        .ok_or(ApiError::NotFound { denied: false })?;
    let body = Body::from_stream(document.into_stream().map_err(io::Error::other));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(r.size));
    let mut tagged = record.clone();
    tagged.version_id = record.version_id.rendition(&r.stage, r.stage_version)?;
    content_headers(&mut resp, &tagged, &r.media_type, &q);
    resp.headers_mut().remove(header::ACCEPT_RANGES);
    Ok(resp)
}

/// `DELETE /v1/documents/{id}`: soft delete (tombstone).
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "documents", params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "Soft-deleted", body = DocumentView), crate::openapi::Problems))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    caller.about(Action::Delete, Some(&id), None);
    state.authorize(&caller.principal, Action::Delete, &id).await?;
    let doc = state.store.delete(&caller.principal.identity(), &id).await?;
    Ok(Json(DocumentView::from(&doc)))
}

/// `POST /v1/documents/{id}/restore`: undo a soft delete.
#[utoipa::path(post, path = "/v1/documents/{id}/restore", tag = "documents", params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "Restored", body = DocumentView), crate::openapi::Problems))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    caller.about(Action::Restore, Some(&id), None);
    state.authorize(&caller.principal, Action::Restore, &id).await?;
    let doc = state.store.restore(&caller.principal.identity(), &id).await?;
    Ok(Json(DocumentView::from(&doc)))
}

/// Body of `PUT /v1/documents/{id}/hold`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// Set or clear the legal hold; absent: unchanged.
    #[serde(default)]
    legal_hold: Option<bool>,
    /// A date (`2031-01-01` or RFC 3339) before which purge is refused; `null` clears it;
    /// absent: unchanged.
    #[serde(default, deserialize_with = "some_option")]
    #[schema(value_type = Option<String>)]
    retain_until: Option<Option<String>>,
}

fn some_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PUT /v1/documents/{id}/hold`: legal hold and retention (admin).
#[utoipa::path(put, path = "/v1/documents/{id}/hold", tag = "documents", params(("id" = String, Path, description = "Document id")), request_body = HoldBody,
    responses((status = 200, description = "Hold and retention set", body = DocumentView), crate::openapi::Problems))]
pub async fn hold(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DocumentView>, ApiError> {
    caller.about(Action::Hold, Some(&id), None);
    state.authorize(&caller.principal, Action::Hold, &id).await?;
    let b: HoldBody = crate::routes::json_body(&state, &body)?;
    let retain_until = match b.retain_until {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => Some(Some(Timestamp::parse(&s)?)),
    };
    let change = HoldChange {
        legal_hold: b.legal_hold,
        retain_until,
    };
    let doc = state
        .store
        .set_hold(&caller.principal.identity(), &id, change)
        .await?;
    Ok(Json(DocumentView::from(&doc)))
}

/// `POST /v1/documents/{id}/purge`: permanent removal of a deleted document (admin; refused
/// under a hold or retention).
#[utoipa::path(post, path = "/v1/documents/{id}/purge", tag = "documents", params(("id" = String, Path, description = "Document id")),
    responses((status = 204, description = "Purged"), crate::openapi::Problems))]
pub async fn purge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.about(Action::Purge, Some(&id), None);
    state.authorize(&caller.principal, Action::Purge, &id).await?;
    state.store.purge(&caller.principal.identity(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/documents/{id}/versions/{n}/shred`: crypto-shred one version (admin).
#[utoipa::path(post, path = "/v1/documents/{id}/versions/{n}/shred", tag = "documents", params(("id" = String, Path, description = "Document id"), ("n" = u64, Path, description = "Version number, from 1")),
    responses((status = 200, description = "Shredded", body = VersionView), crate::openapi::Problems))]
pub async fn shred(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, n)): Path<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    let n = version_number(&n)?;
    caller.about(Action::Shred, Some(&id), Some(n));
    state.authorize(&caller.principal, Action::Shred, &id).await?;
    let v = state.store.shred(&caller.principal.identity(), &id, n).await?;
    Ok(Json(VersionView::from(&v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some(0..100));
        assert_eq!(parse_range("bytes=50-5000", 100).unwrap(), Some(50..100));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        for bad in ["bytes=100-", "bytes=5-4", "bytes=-0", "bytes=x-1", "bytes=1"] {
            assert!(parse_range(bad, 100).is_err(), "{bad}");
        }
    }
}
