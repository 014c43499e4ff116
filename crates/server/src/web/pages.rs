//! The page handlers. Each one decides through the same policy calls as the API (and leaves the
//! same audit record), then fills a template; an error becomes an HTML page with the API's
//! status, a hidden document the same "not found" as a missing one.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use docstore::Timestamp;
use docstore_search::HitSnippet;
use serde::Deserialize;
use tower_sessions::Session;

use super::i18n;
use super::{Chrome, PageUser, error_page, sessions};
use crate::policy::{Action, Principal, Role, grant};
use crate::problem::ApiError;
use crate::routes::links::{LinkBody, LinkView};
use crate::routes::search::{SearchParams, thumbnail_path};
use crate::state::AppState;

/// Renders a template; a template that cannot render (a bug) is a plain 500 text.
pub(super) fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        String::from("internal error")
    })
}

fn page(t: &impl Template) -> Response {
    Html(render(t)).into_response()
}

fn date(t: Timestamp) -> String {
    // `2026-12-05T10:30:00.000Z` → `2026-12-05 10:30 UTC`.
    let s = t.to_rfc3339();
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h} UTC"),
        _ => s,
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0} kB", b as f64 / (1 << 10) as f64),
        b => format!("{b} B"),
    }
}

/// The error page of a template for the API error `e`.
#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
}

/// `GET /`: where each role starts.
pub(super) async fn home(user: PageUser) -> Redirect {
    match user.principal.role {
        Role::Patient => Redirect::to("/meus-exames"),
        _ => Redirect::to("/busca"),
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    chrome: Chrome,
    roles: Vec<&'static str>,
    refused: bool,
    oidc: bool,
}

/// `GET /entrar`: the development sign-in (embedded local issuer only).
pub(super) async fn sign_in_form(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let t = i18n::negotiate(&headers);
    let dev = state.dev_sign_in;
    let csrf = match sessions::csrf_token(&session).await {
        Ok(c) => c,
        Err(e) => return error_page(t, dev, super::session_error(e)),
    };
    page(&SignInPage {
        chrome: Chrome {
            t,
            user: None,
            dev: state.dev_sign_in,
            csrf,
        },
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
        refused: false,
        oidc: state.oidc_login.is_some(),
    })
}

/// `GET /entrar/oidc`: to the provider's sign-in.
pub(super) async fn oidc_begin(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let t = i18n::negotiate(&headers);
    let dev = state.dev_sign_in;
    let Some(login) = &state.oidc_login else {
        return error_page(
            t,
            dev,
            ApiError::Status(StatusCode::NOT_FOUND, "no OIDC sign-in here"),
        );
    };
    match login.begin(&session).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => error_page(t, dev, e),
    }
}

/// The provider's answer.
#[derive(Debug, Deserialize)]
pub(super) struct OidcReturn {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
}

/// `GET /entrar/retorno`: the provider sends the browser back here with a code.
pub(super) async fn oidc_return(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    audit: axum::Extension<crate::state::AuditSlot>,
    q: Result<Query<OidcReturn>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = i18n::negotiate(&headers);
    let dev = state.dev_sign_in;
    let Some(login) = &state.oidc_login else {
        return error_page(
            t,
            dev,
            ApiError::Status(StatusCode::NOT_FOUND, "no OIDC sign-in here"),
        );
    };
    let Ok(Query(q)) = q else {
        return error_page(
            t,
            dev,
            ApiError::BadRequest("the provider's answer does not parse".into()),
        );
    };
    let code = match (q.code, q.error) {
        (Some(c), None) => c,
        _ => {
            return error_page(
                t,
                dev,
                ApiError::Unauthenticated("the provider refused the sign-in"),
            );
        }
    };
    let who = match login.finish(&session, &code, &q.state).await {
        Ok(p) => p,
        Err(e) => return error_page(t, dev, e),
    };
    audit.as_principal(&who);
    if let Err(e) = sessions::sign_in(&session, &who).await {
        return error_page(t, dev, super::session_error(e));
    }
    Redirect::to("/").into_response()
}

/// The development sign-in form.
#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    patient: String,
}

/// `POST /entrar`.
pub(super) async fn sign_in(
    State(state): State<Arc<AppState>>,
    session: Session,
    headers: HeaderMap,
    audit: axum::Extension<crate::state::AuditSlot>,
    Form(f): Form<SignInForm>,
) -> Response {
    let t = i18n::negotiate(&headers);
    let dev = state.dev_sign_in;
    if !state.dev_sign_in {
        return error_page(
            t,
            dev,
            ApiError::Status(StatusCode::NOT_FOUND, "no development sign-in here"),
        );
    }
    if !sessions::csrf_matches(&session, &f.csrf).await {
        return error_page(
            t,
            dev,
            ApiError::Status(StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong"),
        );
    }
    let subject = f.subject.trim();
    let role = Role::parse(f.role.trim());
    let patient = f.patient.trim();
    let subject_ok = !subject.is_empty()
        && subject.len() <= 128
        && subject
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    let patient_id = match role {
        Some(Role::Patient) if docstore::validate_id("patient", patient).is_ok() => Some(patient.to_owned()),
        Some(Role::Patient) => None,
        _ => Some(String::new()),
    };
    let (Some(role), Some(patient_id), true) = (role, patient_id, subject_ok) else {
        let csrf = sessions::csrf_token(&session).await.unwrap_or_default();
        let mut resp = page(&SignInPage {
            chrome: Chrome {
                t,
                user: None,
                dev: true,
                csrf,
            },
            roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
            refused: true,
            oidc: false,
        });
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let who = Principal {
        subject: subject.to_owned(),
        role,
        patient_id: (!patient_id.is_empty()).then_some(patient_id),
    };
    audit.as_principal(&who);
    if let Err(e) = sessions::sign_in(&session, &who).await {
        return error_page(t, dev, super::session_error(e));
    }
    Redirect::to("/").into_response()
}

/// A form with only its CSRF token.
#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sair`: ends the session (its record is deleted: the old cookie opens nothing).
pub(super) async fn sign_out(user: PageUser, Form(f): Form<CsrfForm>) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    if let Err(e) = user.check_csrf(&f.csrf).await {
        return error_page(t, dev, e);
    }
    if let Err(e) = sessions::sign_out(&user.session).await {
        return error_page(t, dev, super::session_error(e));
    }
    Redirect::to("/entrar").into_response()
}

/// A piece of a snippet: matched (highlighted) or not.
struct Segment {
    text: String,
    mark: bool,
}

fn segments(s: &HitSnippet) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = 0;
    let text = |r: &str| r.replace(['\n', '\u{c}'], " ");
    for r in &s.highlights {
        if r.start < at
            || r.end > s.fragment.len()
            || !s.fragment.is_char_boundary(r.start)
            || !s.fragment.is_char_boundary(r.end)
        {
            continue;
        }
        if r.start > at {
            out.push(Segment {
                text: text(&s.fragment[at..r.start]),
                mark: false,
            });
        }
        out.push(Segment {
            text: text(&s.fragment[r.clone()]),
            mark: true,
        });
        at = r.end;
    }
    if at < s.fragment.len() {
        out.push(Segment {
            text: text(&s.fragment[at..]),
            mark: false,
        });
    }
    out
}

struct HitRow {
    document_id: String,
    version: u64,
    patient_id: String,
    exam_id: String,
    kind: &'static str,
    created: String,
    segments: Vec<Segment>,
    thumbnail: String,
}

struct KindCount {
    name: &'static str,
    count: u64,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    chrome: Chrome,
    q: String,
    patient: String,
    exam: String,
    kind: String,
    from: String,
    until: String,
    fuzzy: bool,
    newest: bool,
    searched: bool,
    total: usize,
    by_kind: Vec<KindCount>,
    hits: Vec<HitRow>,
    page: usize,
    previous: Option<String>,
    next: Option<String>,
}

fn search_link(p: &SearchParams, page: usize) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("q", &p.q);
    for (k, v) in [
        ("patient", &p.patient),
        ("exam", &p.exam),
        ("kind", &p.kind),
        ("from", &p.from),
        ("until", &p.until),
        ("sort", &p.sort),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    if p.fuzzy {
        q.append_pair("fuzzy", "true");
    }
    q.append_pair("page", &page.to_string());
    format!("/busca?{}", q.finish())
}

/// `GET /busca`: the staff search (the API's search, rendered).
pub(super) async fn search(
    State(state): State<Arc<AppState>>,
    user: PageUser,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    let Ok(Query(p)) = params else {
        return error_page(
            t,
            dev,
            ApiError::BadRequest("the search form's fields do not parse".into()),
        );
    };
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let mut view = SearchPage {
        q: p.q.clone(),
        patient: opt(&p.patient),
        exam: opt(&p.exam),
        kind: opt(&p.kind),
        from: opt(&p.from),
        until: opt(&p.until),
        fuzzy: p.fuzzy,
        newest: p.sort.as_deref() == Some("newest"),
        searched: false,
        total: 0,
        by_kind: Vec::new(),
        hits: Vec::new(),
        page: 1,
        previous: None,
        next: None,
        chrome: Chrome {
            t,
            user: None,
            dev: false,
            csrf: String::new(),
        },
    };
    let caller = user.caller();
    view.chrome = user.chrome;
    if p.is_empty() {
        caller.about(Action::Search, None, None);
        if grant(caller.role(), Action::Search).is_none() {
            return error_page(
                t,
                dev,
                ApiError::Status(StatusCode::FORBIDDEN, "this role may not search"),
            );
        }
        return page(&view);
    }
    let found = match crate::routes::search::run(&state, &caller, p.clone()).await {
        Ok(f) => f,
        Err(e) => return error_page(t, dev, e),
    };
    view.searched = true;
    view.total = found.results.total;
    view.page = found.page;
    view.by_kind = found
        .results
        .by_kind
        .iter()
        .map(|(k, n)| KindCount {
            name: t.kind_name(k),
            count: *n,
        })
        .collect();
    view.hits = found
        .results
        .hits
        .iter()
        .map(|h| HitRow {
            document_id: h.version.document_id.clone(),
            version: h.version.version,
            patient_id: h.version.patient_id.clone(),
            exam_id: h.version.exam_id.clone(),
            kind: t.kind_name(&h.version.kind),
            created: date(h.version.created_at),
            segments: h.snippet.as_ref().map(segments).unwrap_or_default(),
            thumbnail: thumbnail_path(&h.version.document_id, h.version.version),
        })
        .collect();
    if found.page > 1 {
        view.previous = Some(search_link(&p, found.page - 1));
    }
    if found.page * found.per_page < found.results.total {
        view.next = Some(search_link(&p, found.page + 1));
    }
    page(&view)
}

struct VersionRow {
    version: u64,
    created: String,
    created_by: String,
    size: String,
    media_type: String,
    state: String,
    renditions: String,
    content: String,
    thumbnail: Option<String>,
    shredded: bool,
}

struct AuditRow {
    when: String,
    who: String,
    what: &'static str,
    version: String,
    outcome: String,
}

struct LinkRow {
    link_id: String,
    version: u64,
    label: String,
    expires: String,
    uses: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "document.html")]
struct DocumentPage {
    chrome: Chrome,
    document_id: String,
    patient_id: String,
    exam_id: String,
    kind: &'static str,
    created: String,
    latest: u64,
    versions: Vec<VersionRow>,
    audit: Option<Vec<AuditRow>>,
    can_share: bool,
    links: Vec<LinkRow>,
}

/// The requests among a document's audit records (the library's records of each step inside a
/// request are left out), newest first.
fn audit_rows(t: &i18n::Text, records: Vec<docstore::audit::AuditRecord>) -> Vec<AuditRow> {
    records
        .into_iter()
        .rev()
        .filter_map(|r| {
            let what = i18n::describe(t, &r.action, r.detail.as_deref())?;
            Some(AuditRow {
                when: date(r.at),
                who: r.actor,
                what,
                version: r.version.map(|v| v.to_string()).unwrap_or_default(),
                outcome: r.outcome,
            })
        })
        .collect()
}

fn link_rows(links: Vec<LinkView>) -> Vec<LinkRow> {
    links
        .into_iter()
        .map(|l| LinkRow {
            link_id: l.link_id,
            version: l.version,
            label: l.label.unwrap_or_default(),
            expires: l.expires_at.get(..16).unwrap_or(&l.expires_at).replace('T', " "),
            uses: format!("{}/{}", l.uses, l.max_uses),
            revoked: l.revoked_at.is_some(),
        })
        .collect()
}

/// `GET /documentos/{id}`: versions, renditions, open inline, download, share links, and the
/// document's audit trail.
pub(super) async fn document(
    State(state): State<Arc<AppState>>,
    user: PageUser,
    Path(id): Path<String>,
) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    let caller = user.caller();
    caller.about(Action::Read, Some(&id), None);
    let doc = match state.authorize(&user.principal, Action::Read, &id).await {
        Ok(d) if d.deleted_at.is_none() => d,
        Ok(_) => return error_page(t, dev, ApiError::NotFound { denied: false }),
        Err(e) => return error_page(t, dev, e),
    };
    let who = user.principal.identity();
    let versions = match state.store.versions(&who, &id).await {
        Ok(v) => v,
        Err(e) => return error_page(t, dev, e.into()),
    };
    let rows = versions
        .iter()
        .rev()
        .map(|v| VersionRow {
            version: v.version,
            created: date(v.created_at),
            created_by: v.created_by.clone(),
            size: size(v.size),
            media_type: v.media_type.clone(),
            state: format!("{:?}", v.state).to_lowercase(),
            renditions: v
                .renditions
                .iter()
                .map(|r| r.stage.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            content: format!("/v1/documents/{}/versions/{}", v.document_id, v.version),
            thumbnail: v
                .renditions
                .iter()
                .any(|r| r.stage == "thumbnail")
                .then(|| thumbnail_path(&v.document_id, v.version)),
            shredded: v.key_block.is_empty(),
        })
        .collect();
    let audit = if grant(user.principal.role, Action::History).is_some() {
        match crate::routes::document_history(&state, &caller, &id, 200).await {
            Ok(r) => Some(audit_rows(t, r)),
            Err(e) => return error_page(t, dev, e),
        }
    } else {
        None
    };
    let can_share = grant(user.principal.role, Action::Share).is_some();
    let links = if can_share {
        match crate::routes::links::links_of(&state, &caller, &id).await {
            Ok(l) => link_rows(l),
            Err(e) => return error_page(t, dev, e),
        }
    } else {
        Vec::new()
    };
    // The page is a read of the document: the audit record says so, last.
    caller.about(Action::Read, Some(&id), Some(doc.latest_version));
    page(&DocumentPage {
        chrome: user.chrome,
        document_id: doc.document_id,
        patient_id: doc.patient_id,
        exam_id: doc.exam_id,
        kind: t.kind_name(doc.kind.as_str()),
        created: date(doc.created_at),
        latest: doc.latest_version,
        versions: rows,
        audit,
        can_share,
        links,
    })
}

/// The share form.
#[derive(Debug, Deserialize)]
pub(super) struct ShareForm {
    #[serde(default)]
    csrf: String,
    version: u64,
    #[serde(default)]
    label: String,
    #[serde(default)]
    days: Option<u64>,
}

#[derive(Template)]
#[template(path = "link_created.html")]
struct LinkCreatedPage {
    chrome: Chrome,
    document_id: String,
    url: String,
    expires: String,
}

/// `POST /documentos/{id}/links`: a share link, shown once.
pub(super) async fn create_link(
    State(state): State<Arc<AppState>>,
    user: PageUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ShareForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    let Ok(Form(f)) = form else {
        return error_page(
            t,
            dev,
            ApiError::BadRequest("the share form's fields do not parse".into()),
        );
    };
    if let Err(e) = user.check_csrf(&f.csrf).await {
        return error_page(t, dev, e);
    }
    let days = f.days.unwrap_or(3);
    if !(1..=7).contains(&days) {
        return error_page(t, dev, ApiError::BadRequest("a link lasts 1 to 7 days".into()));
    }
    let label = Some(f.label.trim().to_owned()).filter(|l| !l.is_empty());
    let body = LinkBody::labelled(label, days * 24 * 3600);
    let created = match crate::routes::links::make(&state, &user.caller(), &id, f.version, Some(body)).await {
        Ok(c) => c,
        Err(e) => return error_page(t, dev, e),
    };
    // An absolute URL to hand over, on the host the patient reached us by.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if state.tls { "https" } else { "http" };
    page(&LinkCreatedPage {
        chrome: user.chrome,
        document_id: id,
        url: format!("{scheme}://{host}{}", created.url),
        expires: created
            .link
            .expires_at
            .get(..16)
            .unwrap_or_default()
            .replace('T', " "),
    })
}

/// `POST /links/{link_id}/revogar`.
pub(super) async fn revoke_link(
    State(state): State<Arc<AppState>>,
    user: PageUser,
    Path(link_id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    if let Err(e) = user.check_csrf(&f.csrf).await {
        return error_page(t, dev, e);
    }
    match crate::routes::links::revoke_link(&state, &user.caller(), &link_id).await {
        Ok(doc) => Redirect::to(&format!("/documentos/{doc}")).into_response(),
        Err(e) => error_page(t, dev, e),
    }
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    chrome: Chrome,
}

/// `GET /enviar`: the upload page (its script posts each file to `POST /v1/documents`).
pub(super) async fn upload(user: PageUser) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    user.caller().about(Action::Create, None, None);
    if grant(user.principal.role, Action::Create).is_none() {
        return error_page(
            t,
            dev,
            ApiError::Status(StatusCode::FORBIDDEN, "this role may not upload"),
        );
    }
    page(&UploadPage { chrome: user.chrome })
}

struct ExamCard {
    document_id: String,
    version: u64,
    exam_id: String,
    kind: &'static str,
    created: String,
    content: String,
    thumbnail: String,
}

#[derive(Template)]
#[template(path = "my_exams.html")]
struct MyExamsPage {
    chrome: Chrome,
    exams: Vec<ExamCard>,
}

/// The documents a patient sees: their own, of released exams, not deleted; newest first.
async fn released_documents(
    state: &AppState,
    user: &PageUser,
) -> Result<Vec<docstore::DocumentRecord>, ApiError> {
    let caller = user.caller();
    caller.about(Action::ListPatient, None, None);
    let patient = user.principal.patient_id.clone().ok_or_else(ApiError::denied)?;
    let Some(mut exams) = state.visible_exams(&user.principal, Action::ListPatient).await? else {
        return Err(ApiError::Status(
            StatusCode::FORBIDDEN,
            "this page lists a patient's own results",
        ));
    };
    exams.sort();
    let mut docs: Vec<docstore::DocumentRecord> = state
        .store
        .documents_of_patient(&user.principal.identity(), &patient)
        .await?
        .into_iter()
        .filter(|d| d.deleted_at.is_none() && exams.binary_search(&d.exam_id).is_ok())
        .collect();
    docs.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.document_id.cmp(&b.document_id))
    });
    Ok(docs)
}

/// `GET /meus-exames`: a patient's released results, newest first.
pub(super) async fn my_exams(State(state): State<Arc<AppState>>, user: PageUser) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    if user.principal.role != Role::Patient {
        return Redirect::to("/busca").into_response();
    }
    let docs = match released_documents(&state, &user).await {
        Ok(d) => d,
        Err(e) => return error_page(t, dev, e),
    };
    let exams = docs
        .into_iter()
        .map(|d| ExamCard {
            content: format!("/v1/documents/{}/versions/{}", d.document_id, d.latest_version),
            thumbnail: thumbnail_path(&d.document_id, d.latest_version),
            version: d.latest_version,
            kind: t.kind_name(d.kind.as_str()),
            created: date(d.created_at),
            exam_id: d.exam_id,
            document_id: d.document_id,
        })
        .collect();
    page(&MyExamsPage {
        chrome: user.chrome,
        exams,
    })
}

struct AccessRow {
    document_id: String,
    exam_id: String,
    when: String,
    who: String,
    what: &'static str,
    outcome: String,
}

#[derive(Template)]
#[template(path = "who_accessed.html")]
struct WhoAccessedPage {
    chrome: Chrome,
    rows: Vec<AccessRow>,
}

/// `GET /meus-exames/acessos`: every access to the patient's released documents, newest first.
pub(super) async fn who_accessed(State(state): State<Arc<AppState>>, user: PageUser) -> Response {
    let t = user.chrome.t;
    let dev = user.chrome.dev;
    if user.principal.role != Role::Patient {
        return Redirect::to("/busca").into_response();
    }
    let docs = match released_documents(&state, &user).await {
        Ok(d) => d,
        Err(e) => return error_page(t, dev, e),
    };
    let caller = user.caller();
    let mut rows = Vec::new();
    for d in &docs {
        let records = match crate::routes::document_history(&state, &caller, &d.document_id, 200).await {
            Ok(r) => r,
            Err(e) => return error_page(t, dev, e),
        };
        rows.extend(records.into_iter().filter_map(|r| {
            let what = i18n::describe(t, &r.action, r.detail.as_deref())?;
            Some((
                r.at,
                AccessRow {
                    document_id: d.document_id.clone(),
                    exam_id: d.exam_id.clone(),
                    when: date(r.at),
                    who: r.actor,
                    what,
                    outcome: r.outcome,
                },
            ))
        }));
    }
    caller.about(Action::History, None, None);
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    page(&WhoAccessedPage {
        chrome: user.chrome,
        rows: rows.into_iter().map(|(_, r)| r).collect(),
    })
}
