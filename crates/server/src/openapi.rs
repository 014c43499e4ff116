//! The OpenAPI 3.1 document, generated from the handlers' annotations (`utoipa`), served at
//! `/v1/openapi.json`. Nothing in it is written by hand apart from the descriptions.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes;

/// An RFC 9457 problem: every error answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// `urn:docstore:problem:<kind>`.
    r#type: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong, safe to show (never internal detail).
    detail: String,
}

/// Raw bytes (an upload's body).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(Vec<u8>);

/// The errors every route may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Problems {
    /// A malformed parameter, body or media type.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// No valid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem),
    /// A valid token that may not use this route.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such document, or one the caller may not see.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Refused by a hold or retention.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The version was crypto-shredded.
    #[response(status = 410, content_type = "application/problem+json")]
    Gone(Problem),
    /// `If-Match` names a version that is no longer the latest.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
    /// Body over the limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Range outside the content.
    #[response(status = 416, content_type = "application/problem+json")]
    RangeNotSatisfiable(Problem),
    /// Too many downloads.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// A backend is down; retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An OIDC access token (docs/access.md)"))
                    .build(),
            ),
        );
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "docstore",
        description = "The clinic's File Management Service: versioned, envelope-encrypted exam documents (docs/api.md).",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::documents::create,
        routes::documents::add_version,
        routes::documents::get_latest,
        routes::documents::get_version,
        routes::documents::versions,
        routes::documents::rendition,
        routes::documents::delete,
        routes::documents::restore,
        routes::documents::hold,
        routes::documents::purge,
        routes::documents::shred,
        routes::lists::of_patient,
        routes::lists::of_exam,
        routes::lists::exam,
        routes::lists::release,
        routes::shares::share,
        routes::shares::unshare,
        routes::shares::list,
        routes::links::create,
        routes::links::list,
        routes::links::revoke,
        routes::links::open,
        routes::search::search,
        routes::audit,
        routes::history,
    ),
    components(schemas(Problem, Binary)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "documents"), (name = "lists"), (name = "links"), (name = "shares"), (name = "search"), (name = "audit"))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_json().unwrap_or_default()
}
