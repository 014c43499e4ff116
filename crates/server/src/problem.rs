//! Errors as RFC 9457 `application/problem+json`: one type with a status and a safe message.
//! Internal detail (backend errors, ids the caller did not send) goes to the logs, never to the
//! response; a document the caller may not see answers exactly like a missing one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Marks a response whose request the policy denied (audited as `denied`, whatever its status).
#[derive(Debug, Clone, Copy)]
pub struct Denied;

/// An API error: what the caller is told.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// 400.
    BadRequest(String),
    /// 401, with the audit class of the failure.
    Unauthenticated(&'static str),
    /// 403: a valid token that grants no usable role.
    Forbidden(&'static str),
    /// 404. `denied` marks a policy denial dressed as a missing document.
    NotFound {
        /// Whether the policy denied it.
        denied: bool,
    },
    /// 405/409/412/413/416/429 and the like, with a fixed message.
    Status(StatusCode, &'static str),
    /// 416 with the representation's size (`Content-Range: bytes */size`).
    RangeNotSatisfiable(u64),
    /// 429 with `Retry-After` seconds.
    TooManyRequests(u64),
    /// 401 from a download link that asks for a second factor (`date_of_birth` or
    /// `one_time_code`, named in the problem's `second_factor` member).
    FactorRequired(&'static str),
    /// 401: a wrong second-factor answer (audited as denied).
    WrongFactor,
    /// 503: a backend is down; retry.
    Unavailable,
    /// 500: logged with its class, told as nothing.
    Internal(&'static str),
}

impl ApiError {
    /// A policy denial, which reads as a missing document.
    pub fn denied() -> Self {
        ApiError::NotFound { denied: true }
    }

    /// The status and the safe message a caller may see.
    pub(crate) fn status_and_detail(&self) -> (StatusCode, String) {
        let (status, _, detail) = self.parts();
        (status, detail)
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad-request", m.clone()),
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required".into(),
            ),
            ApiError::Forbidden(why) => (StatusCode::FORBIDDEN, "forbidden", (*why).into()),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found", "no such document".into()),
            ApiError::Status(s, m) => (*s, "request-refused", (*m).into()),
            ApiError::RangeNotSatisfiable(_) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "the range is outside the document".into(),
            ),
            ApiError::FactorRequired(_) => (
                StatusCode::UNAUTHORIZED,
                "second-factor-required",
                "this link asks for a second factor in the Docstore-Link-Factor header".into(),
            ),
            ApiError::WrongFactor => (
                StatusCode::UNAUTHORIZED,
                "second-factor-wrong",
                "wrong second-factor answer; five lock the link".into(),
            ),
            ApiError::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many downloads; retry later".into(),
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a backend is unavailable; retry".into(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            ),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NoRole(why) => ApiError::Forbidden(why),
            AuthError::Jwks(_) => ApiError::Unavailable,
            other => ApiError::Unauthenticated(other.class()),
        }
    }
}

impl From<docstore::Error> for ApiError {
    fn from(e: docstore::Error) -> Self {
        use docstore::Error as E;
        match &e {
            E::NotFound { .. } | E::Deleted { .. } => ApiError::NotFound { denied: false },
            E::Shredded { .. } => ApiError::Status(StatusCode::GONE, "this version was crypto-shredded"),
            E::Conflict { .. } => ApiError::Status(
                StatusCode::PRECONDITION_FAILED,
                "the document has a newer version",
            ),
            E::Refused { .. } => ApiError::Status(
                StatusCode::CONFLICT,
                "refused by a legal hold, a retention date or a missing prior step",
            ),
            // The library's wording names only ids the caller sent, or limits.
            E::InvalidInput(why) => ApiError::BadRequest(why.clone()),
            _ if e.is_transient() => {
                tracing::warn!(class = e.class(), "backend unavailable");
                ApiError::Unavailable
            }
            _ => {
                tracing::error!(class = e.class(), "request failed");
                ApiError::Internal(e.class())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, detail) = self.parts();
        let mut body = json!({
            "type": format!("urn:docstore:problem:{kind}"),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let ApiError::FactorRequired(factor) = &self {
            body["second_factor"] = json!(factor);
        }
        let mut resp = (status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthenticated(_) => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RangeNotSatisfiable(size) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::TooManyRequests(secs) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ => {}
        }
        if matches!(self, ApiError::NotFound { denied: true } | ApiError::WrongFactor) {
            resp.extensions_mut().insert(Denied);
        }
        if let ApiError::Unauthenticated(class) = self {
            resp.extensions_mut().insert(AuthFailure(class));
        }
        resp
    }
}

/// Marks a response refused for want of a valid token, with the failure's class.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailure(pub &'static str);
