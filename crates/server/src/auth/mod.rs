//! Who the caller is: bearer tokens verified against the issuer's keys ([`jwt`]), and the
//! embedded default's local issuer ([`local_issuer`]). What the caller may do is
//! [`crate::policy`]'s question, kept apart.

pub mod jwt;
pub mod keyfile;
pub mod links;
pub mod local_issuer;

pub use jwt::{AuthError, ClaimMapping, KeySource, TokenVerifier, VerifierConfig};
pub use links::{LinkClaims, LinkSigner};
pub use local_issuer::{LocalIssuer, TokenRequest};

/// The token of an `Authorization: Bearer …` header, if the request has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    if value.len() > jwt::MAX_TOKEN_BYTES + 16 {
        return Err(AuthError::TooLarge);
    }
    let value = value.to_str().map_err(|_| AuthError::NotAccepted("header"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotAccepted("header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::NotAccepted("scheme"));
    }
    Ok(token.trim())
}
