//! The web pages (`docs/pages.md`): staff search, document, upload; patients' "Meus exames";
//! sign-in. Server-rendered (askama templates under `templates/`, escaped by default), with one
//! small script and one style sheet of our own, embedded in the binary.
//!
//! ## Layout
//! | file | what |
//! | --- | --- |
//! | `sessions.rs` | the session stores (bounded in memory, or shared in PostgreSQL), the signed-in user, CSRF tokens |
//! | `oidc.rs` | sign-in with an OIDC provider: authorization code, PKCE, state, nonce |
//! | `i18n.rs` | the pages' words, pt-BR and English |
//! | `pages.rs` | the handlers and their templates' data |
//! | `mod.rs` | routes, security headers, the [`PageUser`] extractor, error pages, assets |
//!
//! Pages reuse the API's handlers' logic and its `GET` routes (content, thumbnails) with the
//! session standing for the bearer token; an unsafe API request from a session also needs the
//! session's CSRF token in `X-CSRF-Token`, and a form post the same token in its `csrf` field.

pub mod i18n;
pub mod oidc;
mod pages;
pub mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use crate::policy::{Principal, Role};
use crate::problem::ApiError;
use crate::state::{AppState, AuditSlot};
use i18n::Text;
use sessions::SessionBackend;

/// The pages' Content-Security-Policy: our own script and style only, no inline script, no
/// framing, forms post only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_CSS: &str = include_str!("../../static/app.css");
const APP_JS: &str = include_str!("../../static/app.js");

/// The session layer: cookie `docstore_session`, HttpOnly, SameSite=Lax, Secure over TLS, ended
/// after [`sessions::IDLE`] without a request, its record in `store`.
pub fn session_layer(tls: bool, store: SessionBackend) -> SessionManagerLayer<SessionBackend> {
    SessionManagerLayer::new(store)
        .with_name(sessions::COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(tls)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(sessions::IDLE))
}

fn safe_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD)
}

/// The session's principal for an API request without a bearer token: `None` without a
/// signed-in session; unsafe methods also need the session's CSRF token in `X-CSRF-Token`.
pub(crate) async fn session_caller(parts: &Parts) -> Result<Option<Principal>, ApiError> {
    let Some(session) = parts.extensions.get::<Session>() else {
        return Ok(None);
    };
    let Some(who) = sessions::signed_in(session).await.map_err(session_error)? else {
        return Ok(None);
    };
    if !safe_method(&parts.method) {
        let given = parts
            .headers
            .get(sessions::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !sessions::csrf_matches(session, given).await {
            return Err(ApiError::Status(
                StatusCode::FORBIDDEN,
                "a session's unsafe request needs its CSRF token",
            ));
        }
    }
    Ok(Some(who))
}

fn session_error(e: sessions::SessionError) -> ApiError {
    tracing::error!(error = %e, "session store");
    ApiError::Internal("session")
}

/// What every page's frame shows: words, who is signed in, the dev banner, the CSRF token.
#[derive(Debug)]
pub(crate) struct Chrome {
    pub t: &'static Text,
    pub user: Option<NavUser>,
    pub dev: bool,
    pub csrf: String,
}

/// The signed-in user, as the navigation shows them.
#[derive(Debug)]
pub(crate) struct NavUser {
    pub subject: String,
    pub role: &'static str,
    pub staff: bool,
    pub patient: bool,
}

impl NavUser {
    fn of(p: &Principal) -> Self {
        NavUser {
            subject: p.subject.clone(),
            role: p.role.as_str(),
            staff: matches!(p.role, Role::Staff | Role::Admin),
            patient: p.role == Role::Patient,
        }
    }
}

/// A signed-in page visitor (others are sent to the sign-in page).
pub(crate) struct PageUser {
    pub principal: Principal,
    pub audit: AuditSlot,
    pub session: Session,
    pub chrome: Chrome,
}

impl PageUser {
    /// The API's caller for the same request (same audit record).
    pub(crate) fn caller(&self) -> crate::state::Caller {
        crate::state::Caller {
            principal: self.principal.clone(),
            audit: self.audit.clone(),
        }
    }

    /// Refuses a form whose CSRF token is not the session's.
    pub(crate) async fn check_csrf(&self, given: &str) -> Result<(), ApiError> {
        if sessions::csrf_matches(&self.session, given).await {
            Ok(())
        } else {
            Err(ApiError::Status(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong",
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Response> {
        let t = i18n::negotiate(&parts.headers);
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| error_page(t, state.dev_sign_in, ApiError::Internal("session layer")))?;
        let who = sessions::signed_in(&session)
            .await
            .map_err(|e| error_page(t, state.dev_sign_in, session_error(e)))?;
        let Some(principal) = who else {
            return Err(Redirect::to("/entrar").into_response());
        };
        let csrf = sessions::csrf_token(&session)
            .await
            .map_err(|e| error_page(t, state.dev_sign_in, session_error(e)))?;
        let audit = parts.extensions.get::<AuditSlot>().cloned().unwrap_or_default();
        audit.as_principal(&principal);
        Ok(PageUser {
            chrome: Chrome {
                t,
                user: Some(NavUser::of(&principal)),
                dev: state.dev_sign_in,
                csrf,
            },
            principal,
            audit,
            session,
        })
    }
}

/// An HTML page for an API error: the same status (and audit outcome), the page's words, never
/// the problem's detail for a 404 (a hidden document reads like a missing one).
pub(crate) fn error_page(t: &'static Text, dev: bool, e: ApiError) -> Response {
    let (status, detail) = e.status_and_detail();
    let api = e.into_response();
    let (mut parts, _) = api.into_parts();
    let page = pages::ErrorPage {
        chrome: Chrome {
            t,
            user: None,
            dev,
            csrf: String::new(),
        },
        status: status.as_u16(),
        title: if status == StatusCode::NOT_FOUND {
            t.not_found
        } else {
            t.error
        },
        detail: if status == StatusCode::NOT_FOUND {
            t.not_found_help.to_owned()
        } else {
            detail
        },
    };
    parts.headers.remove(header::WWW_AUTHENTICATE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = pages::render(&page);
    let mut resp = Response::from_parts(parts, axum::body::Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Middleware on the pages: the security headers, and no caching of patient data.
async fn page_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if is_asset {
            "public, max-age=300"
        } else {
            "no-store"
        }),
    );
    resp
}

fn asset(body: &'static str, media_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, media_type)], body).into_response()
}

/// The page routes (mounted beside `/v1` by [`crate::routes::router`]).
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(pages::home))
        .route("/entrar", get(pages::sign_in_form).post(pages::sign_in))
        .route("/entrar/oidc", get(pages::oidc_begin))
        .route("/entrar/retorno", get(pages::oidc_return))
        .route("/sair", post(pages::sign_out))
        .route("/busca", get(pages::search))
        .route("/enviar", get(pages::upload))
        .route("/documentos/{id}", get(pages::document))
        .route("/documentos/{id}/links", post(pages::create_link))
        .route("/links/{link_id}/revogar", post(pages::revoke_link))
        .route("/meus-exames", get(pages::my_exams))
        .route("/meus-exames/acessos", get(pages::who_accessed))
        .route(
            "/static/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/static/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .layer(axum::middleware::from_fn(page_headers))
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_pages_md_prints_the_csp() {
        let doc = include_str!("../../../../docs/pages.md");
        let line = doc
            .lines()
            .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
            .expect("the CSP line in docs/pages.md");
        assert_eq!(line, super::CSP);
    }
}
