//! What every handler shares, the [`Caller`] extractor (authentication on every route that needs
//! it), the per-request audit record written by [`audit_requests`], and the policy check on one
//! document ([`AppState::authorize`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use docstore::audit::AuditRecord;
use docstore::{DocStore, DocumentRecord, Timestamp};
use docstore_search::SearchIndex;

use crate::access::{AccessError, AccessStore};
use crate::auth::{TokenVerifier, bearer};
use crate::metrics::HttpMetrics;
use crate::policy::{Action, Condition, Facts, Principal, Role, allows, grant};
use crate::problem::{ApiError, AuthFailure, Denied};

/// Limits that bound what one client can cost (see `docs/api.md`, "Limits").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload body, bytes (413 past it; nothing is stored).
    pub max_upload: u64,
    /// Largest JSON request body, bytes.
    pub max_json: usize,
    /// Time allowed to send the request head.
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Downloads (content and renditions) per identity per minute (429 past it).
    pub downloads_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload: 256 * 1024 * 1024,
            max_json: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            downloads_per_minute: 600,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    /// The document store.
    pub store: Arc<DocStore>,
    /// The search index, when this node serves search.
    pub index: Option<Arc<SearchIndex>>,
    /// Exam releases and doctor assignments.
    pub access: AccessStore,
    /// Bearer-token verification.
    pub verifier: Arc<TokenVerifier>,
    /// Request limits.
    pub limits: Limits,
    /// Request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// Per-identity download limiter.
    pub downloads: crate::ratelimit::DownloadLimiter,
    /// Signs and verifies download links.
    pub links: crate::auth::LinkSigner,
    /// Whether the pages offer the development sign-in (the embedded local issuer only).
    pub dev_sign_in: bool,
    /// Whether the service is served over TLS (session cookies are then `Secure`).
    pub tls: bool,
    /// Where page sessions live.
    pub sessions: crate::web::sessions::SessionBackend,
    /// The pages' sign-in with an OIDC provider, when configured.
    pub oidc_login: Option<crate::web::oidc::OidcLogin>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

pub(crate) fn access_error(e: AccessError) -> ApiError {
    tracing::warn!(error = %e, "access store");
    if e.is_transient() {
        ApiError::Unavailable
    } else {
        ApiError::Internal("access")
    }
}

impl AppState {
    /// The policy's facts about `doc` for `who` (only those its role's rule looks at).
    pub async fn facts(
        &self,
        who: &Principal,
        action: Action,
        doc: &DocumentRecord,
    ) -> Result<Facts, ApiError> {
        let mut facts = Facts {
            patient_id: doc.patient_id.clone(),
            ..Facts::default()
        };
        match grant(who.role, action) {
            Some(Condition::OwnReleased) => {
                let exam = self.access.exam(&doc.exam_id).await.map_err(access_error)?;
                facts.released =
                    exam.is_some_and(|e| e.released_at.is_some() && e.patient_id == doc.patient_id);
            }
            Some(Condition::Assigned) => {
                facts.assigned = self
                    .access
                    .is_assigned(&doc.exam_id, &who.subject)
                    .await
                    .map_err(access_error)?;
            }
            Some(Condition::Always) | None => {}
        }
        Ok(facts)
    }

    /// Loads an exam's access facts and checks `action` on it. An exam the access database does
    /// not know yet is learned from its documents (one patient) when the caller may act on any
    /// exam; unknown and forbidden exams answer alike (404), the denial audited.
    pub async fn authorize_exam(
        &self,
        who: &Principal,
        action: Action,
        exam_id: &str,
    ) -> Result<crate::access::ExamAccess, ApiError> {
        let Some(condition) = grant(who.role, action) else {
            return Err(ApiError::denied());
        };
        if docstore::validate_id("exam", exam_id).is_err() {
            return Err(ApiError::NotFound { denied: false });
        }
        let exam = match self.access.exam(exam_id).await.map_err(access_error)? {
            Some(e) => e,
            None if condition == Condition::Always => {
                let patient = self.exam_patient(who, exam_id).await?;
                self.access
                    .record_exam(exam_id, &patient)
                    .await
                    .map_err(access_error)?
            }
            None => return Err(ApiError::denied()),
        };
        let facts = Facts {
            patient_id: exam.patient_id.clone(),
            released: exam.released_at.is_some(),
            assigned: condition == Condition::Assigned
                && self
                    .access
                    .is_assigned(exam_id, &who.subject)
                    .await
                    .map_err(access_error)?,
        };
        if !allows(who, action, &facts) {
            return Err(ApiError::denied());
        }
        Ok(exam)
    }

    /// The one patient an exam's documents name (404 with none; 400 with several).
    pub async fn exam_patient(&self, who: &Principal, exam_id: &str) -> Result<String, ApiError> {
        let docs = self.store.documents_of_exam(&who.identity(), exam_id).await?;
        let mut patients: Vec<&str> = docs.iter().map(|d| d.patient_id.as_str()).collect();
        patients.sort_unstable();
        patients.dedup();
        match patients.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(ApiError::NotFound { denied: false }),
            _ => Err(ApiError::BadRequest(
                "the exam's documents name several patients: give patient_id".into(),
            )),
        }
    }

    /// Loads a document and checks `action` on it. Unknown, malformed and forbidden ids answer
    /// alike (404); the denial is marked for the audit record.
    pub async fn authorize(
        &self,
        who: &Principal,
        action: Action,
        document_id: &str,
    ) -> Result<DocumentRecord, ApiError> {
        if grant(who.role, action).is_none() {
            return Err(ApiError::denied());
        }
        if docstore::validate_id("document", document_id).is_err() {
            return Err(ApiError::NotFound { denied: false });
        }
        let doc = self.store.document(&who.identity(), document_id).await?;
        let facts = self.facts(who, action, &doc).await?;
        if !allows(who, action, &facts) {
            return Err(ApiError::denied());
        }
        Ok(doc)
    }

    /// The exams a caller's lists and searches are narrowed to: `None` for roles that see all.
    pub async fn visible_exams(
        &self,
        who: &Principal,
        action: Action,
    ) -> Result<Option<Vec<String>>, ApiError> {
        match grant(who.role, action) {
            None => Err(ApiError::denied()),
            Some(Condition::Always) => Ok(None),
            Some(Condition::OwnReleased) => {
                let patient = who.patient_id.as_deref().ok_or_else(ApiError::denied)?;
                Ok(Some(
                    self.access.released_exams(patient).await.map_err(access_error)?,
                ))
            }
            Some(Condition::Assigned) => Ok(Some(
                self.access
                    .assigned_exams(&who.subject)
                    .await
                    .map_err(access_error)?,
            )),
        }
    }
}

/// What the audit record of a request says beyond the route and status; handlers fill it.
#[derive(Debug, Default)]
pub struct AuditNote {
    principal: Option<Principal>,
    actor: Option<String>,
    action: Option<Action>,
    document: Option<String>,
    version: Option<u64>,
    exam: Option<String>,
}

/// The request's audit note, shared between the middleware and the handler.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditNote>>);

impl AuditSlot {
    fn with<T>(&self, f: impl FnOnce(&mut AuditNote) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Names the authenticated principal of a request.
    pub fn as_principal(&self, who: &Principal) {
        self.with(|n| n.principal = Some(who.clone()));
    }

    /// Names the actor of a request without a bearer token (a download link).
    pub fn as_actor(&self, actor: &str) {
        self.with(|n| n.actor = Some(actor.to_owned()));
    }

    /// Names the action and the exam the request is about (a release, a share).
    pub fn about_exam(&self, action: Action, exam: &str) {
        self.with(|n| {
            n.action = Some(action);
            n.exam = Some(exam.to_owned());
        });
    }

    /// Names the action and the document (and version) the request is about.
    pub fn about(&self, action: Action, document: Option<&str>, version: Option<u64>) {
        self.with(|n| {
            n.action = Some(action);
            n.document = document.map(str::to_owned);
            n.version = version;
        });
    }
}

/// The authenticated caller of a request (401/403 problem otherwise).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The request's audit note.
    pub audit: AuditSlot,
}

impl Caller {
    /// Notes the action and document for the audit record.
    pub fn about(&self, action: Action, document: Option<&str>, version: Option<u64>) {
        self.audit.about(action, document, version);
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.principal.role
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let slot = parts.extensions.get::<AuditSlot>().cloned().unwrap_or_default();
        let principal = if parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
            state.verifier.verify(bearer(&parts.headers)?).await?
        } else {
            // The pages' scripts and images: a signed-in session stands for the token.
            crate::web::session_caller(parts)
                .await?
                .ok_or(crate::auth::AuthError::Missing)?
        };
        slot.as_principal(&principal);
        Ok(Caller {
            principal,
            audit: slot,
        })
    }
}

/// Errors the framework answers itself (an unparsable path or query, a wrong method) become
/// problem+json too, with a fixed message: the framework's own text can quote the request. The
/// pages' own error pages (HTML) stay as they are.
fn as_problem(resp: Response) -> Response {
    let is_problem = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes() == crate::problem::PROBLEM_JSON.as_bytes() || v.as_bytes().starts_with(b"text/html")
        });
    if is_problem {
        return resp;
    }
    let status = resp.status();
    let (parts, _) = resp.into_parts();
    let body = serde_json::json!({
        "type": "urn:docstore:problem:request-refused",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": "the request does not fit this route",
    });
    let mut out = Response::from_parts(parts, axum::body::Body::from(body.to_string()));
    out.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(crate::problem::PROBLEM_JSON),
    );
    out.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
    out
}

/// Routes that carry no patient data (probes, metrics, the pages' style and script): not
/// audited.
fn unaudited(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics") || route.starts_with("/static/")
}

/// Middleware: times and counts every request, and writes its audit record (subject, role,
/// route, action, document, outcome: allowed, denied, unauthenticated, rejected or failed). A
/// request whose audit record cannot be written answers 503 instead of its result.
pub async fn audit_requests(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    // The library's records of this request are queued, not waited for one by one: the
    // request's own record below, written and synced after them, covers them before the response
    // leaves (and a failure there answers 503).
    let mut resp = if unaudited(&route) {
        next.run(req).await
    } else {
        docstore::audit::deferred(next.run(req)).await
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        resp = as_problem(resp);
    }
    state
        .metrics
        .observe(method.as_str(), &route, status.as_u16(), started.elapsed(), &resp);
    if unaudited(&route) {
        return resp;
    }
    let outcome = if resp.extensions().get::<Denied>().is_some() || status.as_u16() == 403 {
        "denied"
    } else if resp.extensions().get::<AuthFailure>().is_some() {
        "unauthenticated"
    } else if status.is_server_error() {
        "failed"
    } else if status.is_client_error() {
        "rejected"
    } else {
        "allowed"
    };
    let (actor, role, action, document, version, exam) = slot.with(|n| {
        (
            n.principal.as_ref().map_or_else(
                || n.actor.clone().unwrap_or_else(|| "anonymous".to_owned()),
                |p| p.identity().subject,
            ),
            n.principal.as_ref().map(|p| p.role.as_str()),
            n.action,
            n.document.take(),
            n.version,
            n.exam.take(),
        )
    });
    let mut detail = format!("{method} {route} {}", status.as_u16());
    if let Some(r) = role {
        detail.push_str(&format!(" role={r}"));
    }
    if let Some(e) = exam {
        detail.push_str(&format!(" exam={e}"));
    }
    if let Some(AuthFailure(class)) = resp.extensions().get::<AuthFailure>() {
        detail.push_str(&format!(" auth={class}"));
    }
    let record = AuditRecord {
        at: Timestamp::now(),
        actor,
        action: action.map_or_else(|| "http".to_owned(), |a| format!("http.{}", a.as_str())),
        document,
        version,
        outcome: outcome.into(),
        detail: Some(detail),
    };
    match state.store.audit_sink().record(record).await {
        Ok(()) => resp,
        Err(e) => {
            tracing::error!(class = e.class(), "audit record not written; request refused");
            ApiError::Unavailable.into_response()
        }
    }
}
