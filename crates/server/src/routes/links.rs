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

use crate::access::{LinkRecord, MAX_FACTOR_FAILURES};
use crate::auth::LinkClaims;
use crate::policy::{Action, Condition, grant};
use crate::problem::ApiError;
use crate::routes::documents::{ContentQuery, respond_content};
use crate::state::{AppState, AuditSlot, Caller, access_error};

/// Longest link lifetime: 7 days.
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// Default link lifetime: 3 days.
const DEFAULT_TTL_SECS: u64 = 3 * 24 * 3600;
/// The request header that carries a link's second-factor answer (never a query parameter, so
/// it stays out of access logs and browser history).
pub const FACTOR_HEADER: &str = "docstore-link-factor";
/// Most uses of one link.
const MAX_USES: u64 = 100;

/// Body of `POST …/links`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// Lifetime, seconds (60 …= 7 days; default 3 days).
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// Uses allowed (1 …= 100; default 10). A use is a read from the start (a viewer's further
    /// range requests of the same read are not counted).
    #[serde(default)]
    max_uses: Option<u64>,
    /// For whom (shown in the list; at most 100 characters).
    #[serde(default)]
    label: Option<String>,
    /// A second factor every use must present in the `Docstore-Link-Factor` header. Five wrong
    /// answers lock the link for good.
    #[serde(default)]
    second_factor: Option<SecondFactor>,
}

/// A link's second factor.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecondFactor {
    /// The patient's date of birth, `YYYY-MM-DD`, which the opener must give.
    DateOfBirth(String),
    /// A random 8-digit code, returned once in the answer, to hand over apart from the link.
    OneTimeCode,
}

/// Which second factor a link asks for; its name is what the access database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FactorKind {
    DateOfBirth,
    OneTimeCode,
}

impl FactorKind {
    fn as_str(self) -> &'static str {
        match self {
            FactorKind::DateOfBirth => "date_of_birth",
            FactorKind::OneTimeCode => "one_time_code",
        }
    }

    fn parse(stored: &str) -> Option<Self> {
        [FactorKind::DateOfBirth, FactorKind::OneTimeCode]
            .into_iter()
            .find(|k| k.as_str() == stored)
    }
}

impl SecondFactor {
    fn kind(&self) -> FactorKind {
        match self {
            SecondFactor::DateOfBirth(_) => FactorKind::DateOfBirth,
            SecondFactor::OneTimeCode => FactorKind::OneTimeCode,
        }
    }
}

/// The canonical form of a second-factor answer, or `None` if it cannot be one.
fn normalize_answer(kind: FactorKind, answer: &str) -> Option<String> {
    let a = answer.trim();
    match kind {
        FactorKind::DateOfBirth => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(a, &fmt)
                .ok()
                .map(|d| d.format(&fmt).unwrap_or_default())
        }
        FactorKind::OneTimeCode => {
            let digits: String = a.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
            (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
        }
    }
}

/// A uniformly random 8-digit code.
fn one_time_code() -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    loop {
        let mut b = [0u8; 4];
        // The system generator does not fail on Linux; if it did, no link beats a weak code.
        SystemRandom::new().fill(&mut b).expect("system random generator");
        let n = u32::from_le_bytes(b);
        // Rejection sampling: no bias towards low codes.
        if n < 4_200_000_000 {
            return format!("{:08}", n % 100_000_000);
        }
    }
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
    /// The one-time code, when the link asks for one. Shown once: only its HMAC is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_code: Option<String>,
}

/// What a list shows of a link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkView {
    pub(crate) link_id: String,
    pub(crate) document_id: String,
    pub(crate) version: u64,
    pub(crate) created_by: String,
    pub(crate) label: Option<String>,
    pub(crate) created_at: String,
    pub(crate) expires_at: String,
    pub(crate) max_uses: u64,
    pub(crate) uses: u64,
    pub(crate) revoked_at: Option<String>,
    /// `date_of_birth` or `one_time_code`, when a second factor is required.
    pub(crate) second_factor: Option<String>,
    /// Locked after five wrong second-factor answers.
    pub(crate) locked: bool,
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
            second_factor: l.factor_kind.clone(),
            locked: l.failures >= MAX_FACTOR_FAILURES,
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
    let b: Option<LinkBody> = if body.is_empty() {
        None
    } else {
        Some(crate::routes::json_body(&state, &body)?)
    };
    let created = make(&state, &caller, &id, n, b).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

impl LinkBody {
    /// A link for `label`, valid `ttl_seconds`, with the default use limit and no second factor.
    pub(crate) fn labelled(label: Option<String>, ttl_seconds: u64) -> Self {
        LinkBody {
            ttl_seconds: Some(ttl_seconds),
            label,
            ..LinkBody::default()
        }
    }
}

/// Makes a link to version `n` of `id` for `caller` (the API's and the pages').
pub(crate) async fn make(
    state: &AppState,
    caller: &Caller,
    id: &str,
    n: u64,
    body: Option<LinkBody>,
) -> Result<CreatedLink, ApiError> {
    caller.about(Action::Share, Some(id), Some(n));
    let doc = state.authorize(&caller.principal, Action::Share, id).await?;
    if doc.deleted_at.is_some() || n > doc.latest_version {
        return Err(ApiError::NotFound { denied: false });
    }
    let b = body.unwrap_or_default();
    let ttl = b.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    let max_uses = b.max_uses.unwrap_or(10);
    if !(60..=MAX_TTL_SECS).contains(&ttl) || !(1..=MAX_USES).contains(&max_uses) {
        return Err(ApiError::BadRequest(format!(
            "ttl_seconds must be 60..={MAX_TTL_SECS} and max_uses 1..={MAX_USES}"
        )));
    }
    if b.label.as_ref().is_some_and(|l| l.chars().count() > 100) {
        return Err(ApiError::BadRequest("label longer than 100 characters".into()));
    }
    let link_id = uuid::Uuid::new_v4().simple().to_string();
    let (factor_kind, factor_tag, code) = match &b.second_factor {
        None => (None, None, None),
        Some(f) => {
            let code = matches!(f, SecondFactor::OneTimeCode).then(one_time_code);
            let answer = match f {
                SecondFactor::DateOfBirth(dob) => dob.as_str(),
                SecondFactor::OneTimeCode => code.as_deref().unwrap_or_default(),
            };
            let answer = normalize_answer(f.kind(), answer)
                .ok_or_else(|| ApiError::BadRequest("date_of_birth must be a date, YYYY-MM-DD".into()))?;
            let tag = state.links.factor_tag(&link_id, &answer);
            (Some(f.kind().as_str().to_owned()), Some(tag), code)
        }
    };
    let now = Timestamp::now();
    let link = LinkRecord {
        link_id,
        document_id: id.to_owned(),
        version: n,
        created_by: caller.principal.identity().subject,
        label: b.label,
        created_at: now.0,
        expires_at: now.plus(std::time::Duration::from_secs(ttl)).0,
        max_uses,
        uses: 0,
        revoked_at: None,
        factor_kind,
        factor_tag,
        failures: 0,
    };
    state.access.create_link(&link).await.map_err(access_error)?;
    let token = state.links.sign(&LinkClaims {
        lid: link.link_id.clone(),
        doc: id.to_owned(),
        v: n,
        exp: link.expires_at,
    });
    Ok(CreatedLink {
        link: LinkView::from(&link),
        url: format!("/v1/links/{token}"),
        one_time_code: code,
    })
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
    Ok(Json(LinkList {
        items: links_of(&state, &caller, &id).await?,
    }))
}

/// The links of `id` that `caller` sees, newest first.
pub(crate) async fn links_of(state: &AppState, caller: &Caller, id: &str) -> Result<Vec<LinkView>, ApiError> {
    caller.about(Action::Share, Some(id), None);
    state.authorize(&caller.principal, Action::Share, id).await?;
    let me = caller.principal.identity().subject;
    Ok(state
        .access
        .links_of(id)
        .await
        .map_err(access_error)?
        .iter()
        .filter(|l| sees_all_links(caller) || l.created_by == me)
        .map(LinkView::from)
        .collect())
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
    revoke_link(&state, &caller, &link_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a link for `caller`; returns the document it was a link to.
pub(crate) async fn revoke_link(
    state: &AppState,
    caller: &Caller,
    link_id: &str,
) -> Result<String, ApiError> {
    caller.about(Action::Share, None, None);
    let link = state
        .access
        .link(link_id)
        .await
        .map_err(access_error)?
        .ok_or(ApiError::NotFound { denied: false })?;
    caller.about(Action::Share, Some(&link.document_id), Some(link.version));
    state
        .authorize(&caller.principal, Action::Share, &link.document_id)
        .await?;
    if !sees_all_links(caller) && link.created_by != caller.principal.identity().subject {
        return Err(ApiError::denied());
    }
    state
        .access
        .revoke_link(link_id, Timestamp::now().0)
        .await
        .map_err(access_error)?;
    Ok(link.document_id)
}

/// Checks the `Docstore-Link-Factor` answer of a link that asks for one. Each check takes one of
/// the link's five tries first (one conditional write), and a right answer gives it back, so
/// guessing in parallel gains nothing. Missing answer: 401 naming the factor, no try taken.
async fn check_second_factor(
    state: &AppState,
    link: &LinkRecord,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let (Some(kind), Some(tag)) = (link.factor_kind.as_deref(), link.factor_tag.as_deref()) else {
        return Ok(());
    };
    // A kind this build does not know cannot be answered: the link stays shut.
    let kind = FactorKind::parse(kind).ok_or(ApiError::Internal("link factor"))?;
    let locked = || {
        ApiError::Status(
            StatusCode::FORBIDDEN,
            "this link is locked after five wrong answers",
        )
    };
    if link.failures >= MAX_FACTOR_FAILURES {
        return Err(locked());
    }
    let Some(answer) = headers.get(FACTOR_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::FactorRequired(kind.as_str()));
    };
    if !state
        .access
        .take_factor_try(&link.link_id)
        .await
        .map_err(access_error)?
    {
        return Err(locked());
    }
    let right =
        normalize_answer(kind, answer).is_some_and(|a| state.links.factor_matches(&link.link_id, &a, tag));
    if !right {
        return Err(ApiError::WrongFactor);
    }
    state
        .access
        .return_factor_try(&link.link_id)
        .await
        .map_err(access_error)
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
    // Checked before the second factor (the use below checks it again), so answers to a
    // revoked link cost it no tries.
    if link.revoked_at.is_some() {
        return Err(refused());
    }
    check_second_factor(&state, &link, &headers).await?;
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
    let record = state.store.version(&who, &link.document_id, link.version).await?;
    respond_content(&state, who, &doc, record, &headers, &q).await
}
