//! Download and print links: `POST /v1/documents/{id}/versions/{n}/links` makes one (a patient
//! for their own released result, to hand to a doctor; staff for anyone), `GET
//! /v1/documents/{id}/links` lists them, `DELETE /v1/links/{link_id}` revokes one, and `GET
//! /v1/links/{token}` is the link itself: no bearer token, the link is the capability.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use docstore::Timestamp;
use serde::{Deserialize, Serialize};

use crate::access::LinkRecord;
use crate::auth::LinkClaims;
use crate::policy::{Action, Condition, grant};
use crate::problem::ApiError;
use crate::routes::documents::{ContentQuery, respond_content};
use crate::state::{AppState, AuditSlot, Caller, access_error};

/// Longest link lifetime: 30 days.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Most uses of one link.
const MAX_USES: u64 = 100;

/// Body of `POST …/links`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// Lifetime, seconds (60 …= 30 days; default 7 days).
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// Uses allowed (1 …= 100; default 10). A use is a read from the start (a viewer's further
    /// range requests of the same read are not counted).
    #[serde(default)]
    max_uses: Option<u64>,
    /// For whom (shown in the list; at most 100 characters).
    #[serde(default)]
    label: Option<String>,
}

/// A created link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedLink {
    /// The link's record.
    #[serde(flatten)]
    pub link: LinkView,
    /// The path to hand out (relative to the service's base URL). Shown once: only its id is
    /// stored.
    pub url: String,
}

/// What a list shows of a link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkView {
    link_id: String,
    document_id: String,
    version: u64,
    created_by: String,
    label: Option<String>,
    created_at: String,
    expires_at: String,
    max_uses: u64,
    uses: u64,
    revoked_at: Option<String>,
}

impl From<&LinkRecord> for LinkView {
    fn from(l: &LinkRecord) -> Self {
        LinkView {
            link_id: l.link_id.clone(),
            document_id: l.document_id.clone(),
            version: l.version,
            created_by: l.created_by.clone(),
            label: l.label.clone(),
            created_at: Timestamp(l.created_at).to_rfc3339(),
            expires_at: Timestamp(l.expires_at).to_rfc3339(),
            max_uses: l.max_uses,
            uses: l.uses,
            revoked_at: l.revoked_at.map(|t| Timestamp(t).to_rfc3339()),
        }
    }
}

/// The links of a document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkList {
    /// Newest first.
    items: Vec<LinkView>,
}

/// `POST /v1/documents/{id}/versions/{n}/links`.
#[utoipa::path(post, path = "/v1/documents/{id}/versions/{n}/links", operation_id = "create_link", tag = "links",
    params(("id" = String, Path, description = "Document id"), ("n" = u64, Path, description = "Version")),
    request_body(content = Option<LinkBody>),
    responses((status = 201, description = "The link (its URL is shown only here)", body = CreatedLink), crate::openapi::Problems))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, n)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or(ApiError::NotFound { denied: false })?;
    caller.about(Action::Share, Some(&id), Some(n));
    let doc = state.authorize(&caller.principal, Action::Share, &id).await?;
    if doc.deleted_at.is_some() || n > doc.latest_version {
        return Err(ApiError::NotFound { denied: false });
    }
    let b: LinkBody = if body.is_empty() {
        LinkBody::default()
    } else {
        crate::routes::json_body(&state, &body)?
    };
    let ttl = b.ttl_seconds.unwrap_or(7 * 24 * 3600);
    let max_uses = b.max_uses.unwrap_or(10);
    if !(60..=MAX_TTL_SECS).contains(&ttl) || !(1..=MAX_USES).contains(&max_uses) {
        return Err(ApiError::BadRequest(format!(
            "ttl_seconds must be 60..={MAX_TTL_SECS} and max_uses 1..={MAX_USES}"
        )));
    }
    if b.label.as_ref().is_some_and(|l| l.chars().count() > 100) {
        return Err(ApiError::BadRequest("label longer than 100 characters".into()));
    }
    let now = Timestamp::now();
    let link = LinkRecord {
        link_id: uuid::Uuid::new_v4().simple().to_string(),
        document_id: id.clone(),
        version: n,
        created_by: caller.principal.identity().subject,
        label: b.label,
        created_at: now.0,
        expires_at: now.plus(std::time::Duration::from_secs(ttl)).0,
        max_uses,
        uses: 0,
        revoked_at: None,
    };
    state.access.create_link(&link).await.map_err(access_error)?;
    let token = state.links.sign(&LinkClaims {
        lid: link.link_id.clone(),
        doc: id,
        v: n,
        exp: link.expires_at,
    });
    let created = CreatedLink {
        link: LinkView::from(&link),
        url: format!("/v1/links/{token}"),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Whether the caller sees every link of a document, or only the ones they made.
fn sees_all_links(caller: &Caller) -> bool {
    grant(caller.role(), Action::Share) == Some(Condition::Always)
}

/// `GET /v1/documents/{id}/links`.
#[utoipa::path(get, path = "/v1/documents/{id}/links", operation_id = "list_links", tag = "links",
    params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "The links (a patient: those they made)", body = LinkList), crate::openapi::Problems))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LinkList>, ApiError> {
    caller.about(Action::Share, Some(&id), None);
    state.authorize(&caller.principal, Action::Share, &id).await?;
    let me = caller.principal.identity().subject;
    let links: Vec<LinkView> = state
        .access
        .links_of(&id)
        .await
        .map_err(access_error)?
        .iter()
        .filter(|l| sees_all_links(&caller) || l.created_by == me)
        .map(LinkView::from)
        .collect();
    Ok(Json(LinkList { items: links }))
}

/// `DELETE /v1/links/{link_id}`.
#[utoipa::path(delete, path = "/v1/links/{link_id}", operation_id = "revoke_link", tag = "links",
    params(("link_id" = String, Path, description = "Link id")),
    responses((status = 204, description = "Revoked"), crate::openapi::Problems))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(link_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.about(Action::Share, None, None);
    let link = state
        .access
        .link(&link_id)
        .await
        .map_err(access_error)?
        .ok_or(ApiError::NotFound { denied: false })?;
    caller.about(Action::Share, Some(&link.document_id), Some(link.version));
    state
        .authorize(&caller.principal, Action::Share, &link.document_id)
        .await?;
    if !sees_all_links(&caller) && link.created_by != caller.principal.identity().subject {
        return Err(ApiError::denied());
    }
    state
        .access
        .revoke_link(&link_id, Timestamp::now().0)
        .await
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether a request reads from the start (a use), rather than a viewer's later range.
fn is_a_use(headers: &HeaderMap) -> bool {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|r| r.trim().starts_with("bytes=0-"))
}

/// `GET /v1/links/{token}`: the version the link names, if the link is valid, unexpired,
/// unrevoked and under its use limit. Every refusal is the same 404, and every use is audited.
#[utoipa::path(get, path = "/v1/links/{token}", operation_id = "open_link", tag = "links", security(()),
    params(("token" = String, Path, description = "The link token"), ContentQuery),
    responses((status = 200, description = "The version's content", content_type = "*/*"),
        (status = 206, description = "One range of it", content_type = "*/*"), (status = 304, description = "Not modified"),
        crate::openapi::Problems))]
pub async fn open(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ContentQuery>,
    axum::Extension(audit): axum::Extension<AuditSlot>,
) -> Result<Response, ApiError> {
    let refused = || ApiError::denied();
    let claims = state.links.verify(&token).ok_or_else(refused)?;
    audit.as_actor(&format!("link:{}", claims.lid));
    audit.about(Action::Read, Some(&claims.doc), Some(claims.v));
    let now = Timestamp::now().0;
    if claims.exp <= now {
        return Err(refused());
    }
    let link = state
        .access
        .link(&claims.lid)
        .await
        .map_err(access_error)?
        .ok_or_else(refused)?;
    if link.document_id != claims.doc || link.version != claims.v {
        return Err(refused());
    }
    let counted = if is_a_use(&headers) {
        state
            .access
            .use_link(&link.link_id, now)
            .await
            .map_err(access_error)?
    } else {
        link.revoked_at.is_none() && link.expires_at > now && link.uses >= 1
    };
    if !counted {
        return Err(refused());
    }
    let who = docstore::Identity::new(format!("link:{}", link.link_id));
    let doc = state.store.document(&who, &link.document_id).await?;
    if doc.deleted_at.is_some() {
        return Err(ApiError::NotFound { denied: false });
    }
    let record = state
        .store
        .versions(&who, &link.document_id)
        .await?
        .into_iter()
        .find(|v| v.version == link.version)
        .ok_or(ApiError::NotFound { denied: false })?;
    respond_content(&state, who, record, &headers, &q).await
}
