//! Bearer-token verification: OIDC access tokens (JWTs) checked against the issuer's JWKS.
//!
//! The JOSE work is `jsonwebtoken`'s; this module decides which keys and algorithms are trusted:
//! only RS256, ES256 and EdDSA, each key pinned to the one algorithm its JWK names (or its key
//! type implies), symmetric keys never. A token naming an unknown `kid` triggers one JWKS refresh,
//! at most once per `refresh_interval`, so a flood of made-up `kid`s cannot hammer the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::Digest;
use tokio::sync::Mutex;

use crate::policy::{Principal, Role};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;

/// Why a request is not authenticated (401) or carries no usable role (403).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// The header is not a JWT header, or names an algorithm or key that is not trusted.
    #[error("token not accepted: {0}")]
    NotAccepted(&'static str),
    /// Signature, expiry, issuer, audience … (the library's verdict).
    #[error("token rejected")]
    Rejected(#[source] jsonwebtoken::errors::Error),
    /// The JWKS could not be fetched or read.
    #[error("issuer keys unavailable")]
    Jwks(#[source] JwksError),
    /// The token is valid but maps to no single docstore role, or a patient without a binding.
    #[error("token grants no docstore role: {0}")]
    NoRole(&'static str),
}

impl AuthError {
    /// Whether this is a 403 (authenticated, but no usable role) rather than a 401.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::NoRole(_))
    }

    /// A stable name for audit records.
    pub fn class(&self) -> &'static str {
        match self {
            AuthError::Missing => "no_token",
            AuthError::TooLarge => "token_too_large",
            AuthError::NotAccepted(_) => "token_not_accepted",
            AuthError::Rejected(_) => "token_rejected",
            AuthError::Jwks(_) => "jwks_unavailable",
            AuthError::NoRole(_) => "no_role",
        }
    }
}

/// Why a JWKS could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Fetching failed.
    #[error("fetching {url}")]
    Fetch {
        /// The URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The document is not a JWKS (or an OIDC discovery document without `jwks_uri`).
    #[error("{url} is not a usable key set: {why}")]
    Format {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Plain HTTP to a host other than loopback.
    #[error("{0}: issuer keys must come over https (http only on loopback)")]
    Insecure(String),
}

/// Which claims carry the role and the patient binding (Amazon Cognito: `cognito:groups`, plus a
/// `patient_id` claim added by a pre-token-generation trigger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// Claim holding the role: a string or an array of strings (group names).
    pub roles: String,
    /// Claim holding the patient id of a patient.
    pub patient: String,
}

impl ClaimMapping {
    /// The principal verified claims name: `sub`, exactly one docstore role, and for a patient
    /// a valid patient binding. Shared by bearer tokens and the pages' OIDC sign-in.
    pub fn principal(&self, claims: &Value) -> Result<Principal, AuthError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| docstore::validate_id("subject", s).is_ok())
            .ok_or(AuthError::NotAccepted("sub"))?
            .to_owned();
        let named: Vec<&str> = match claims.get(&self.roles) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = named.into_iter().filter_map(Role::parse).collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        let role = match roles.as_slice() {
            [one] => *one,
            [] => return Err(AuthError::NoRole("no docstore role")),
            _ => return Err(AuthError::NoRole("more than one docstore role")),
        };
        let patient_id = claims
            .get(&self.patient)
            .and_then(Value::as_str)
            .filter(|p| docstore::validate_id("patient", p).is_ok())
            .map(str::to_owned);
        if role == Role::Patient && patient_id.is_none() {
            return Err(AuthError::NoRole("patient without a patient binding"));
        }
        Ok(Principal {
            subject,
            role,
            patient_id: if role == Role::Patient { patient_id } else { None },
        })
    }
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            roles: "cognito:groups".into(),
            patient: "patient_id".into(),
        }
    }
}

/// Where the issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A fixed key set (the embedded local issuer).
    Static(JwkSet),
    /// A JWKS URL.
    Jwks(String),
    /// OIDC discovery: `<issuer>/.well-known/openid-configuration` names the JWKS.
    Discovery(String),
}

/// Settings of a [`TokenVerifier`].
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (Cognito access tokens carry `client_id` instead; see docs/access.md).
    pub audience: String,
    /// The keys.
    pub keys: KeySource,
    /// Claim names.
    pub claims: ClaimMapping,
    /// Least time between two JWKS fetches triggered by unknown `kid`s.
    pub refresh_interval: Duration,
}

struct Trusted {
    key: DecodingKey,
    alg: Algorithm,
}

struct KeyCache {
    keys: HashMap<String, Arc<Trusted>>,
    fetched_at: Option<Instant>,
}

/// Tokens already verified, by the SHA-256 of their text: a client sends the same token on every
/// request, and a signature check (50 µs for Ed25519, more for RSA) was the largest cost of a
/// metadata read. An entry holds only what verification proved, lasts until the token's own
/// expiry, and every entry is dropped when the JWKS is fetched again, so a key the issuer
/// withdrew stops working at the first refresh.
#[derive(Default)]
struct Verified {
    entries: HashMap<[u8; 32], (Principal, u64)>,
}

/// Bound on [`Verified`]: at the cap, expired entries go, and if none has, all of them.
const MAX_VERIFIED: usize = 16 * 1024;

impl Verified {
    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let (p, exp) = self.entries.get(digest)?;
        // The same test `jsonwebtoken` applies to `exp`, with the same leeway.
        (now <= exp.saturating_add(LEEWAY_SECS)).then(|| p.clone())
    }

    fn insert(&mut self, digest: [u8; 32], principal: Principal, exp: u64, now: u64) {
        if self.entries.len() >= MAX_VERIFIED {
            self.entries
                .retain(|_, (_, e)| now <= e.saturating_add(LEEWAY_SECS));
            if self.entries.len() >= MAX_VERIFIED {
                self.entries.clear();
            }
        }
        self.entries.insert(digest, (principal, exp));
    }
}

/// Verifies bearer tokens and maps their claims to a [`Principal`].
pub struct TokenVerifier {
    config: VerifierConfig,
    http: reqwest::Client,
    cache: Mutex<KeyCache>,
    verified: std::sync::Mutex<Verified>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

/// The one algorithm a JWK may verify, or `None` if the key is not one we trust.
fn pinned_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        // Symmetric keys (and other curves) are never trusted: an HS* token "signed" with a
        // public key must not verify.
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDSA => Some(by_type),
        Some(_) => None,
    }
}

fn trusted_keys(set: &JwkSet) -> HashMap<String, Arc<Trusted>> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let alg = pinned_algorithm(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Arc::new(Trusted { key, alg })))
        })
        .collect()
}

fn check_transport(url: &str) -> Result<(), JwksError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| JwksError::Format {
        url: url.into(),
        why: e.to_string(),
    })?;
    let loopback = matches!(
        parsed.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || parsed.host_str() == Some("localhost");
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(JwksError::Insecure(url.into())),
    }
}

/// Keys and discovery documents are small; a larger answer is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl TokenVerifier {
    /// A verifier for `config`.
    pub fn new(config: VerifierConfig) -> Result<Self, JwksError> {
        let keys = match &config.keys {
            KeySource::Static(set) => trusted_keys(set),
            KeySource::Jwks(url) | KeySource::Discovery(url) => {
                check_transport(url)?;
                HashMap::new()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| JwksError::Fetch {
                url: String::new(),
                source: e,
            })?;
        Ok(TokenVerifier {
            config,
            http,
            cache: Mutex::new(KeyCache {
                keys,
                fetched_at: None,
            }),
            verified: Default::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    async fn get_json(&self, url: &str) -> Result<Value, JwksError> {
        check_transport(url)?;
        let fetch = |e| JwksError::Fetch {
            url: url.into(),
            source: e,
        };
        let resp = self.http.get(url).send().await.map_err(fetch)?;
        let resp = resp.error_for_status().map_err(fetch)?;
        let body = resp.bytes().await.map_err(fetch)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::Format {
                url: url.into(),
                why: "too large".into(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| JwksError::Format {
            url: url.into(),
            why: e.to_string(),
        })
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, Arc<Trusted>>, JwksError> {
        let jwks_url = match &self.config.keys {
            KeySource::Static(set) => return Ok(trusted_keys(set)),
            KeySource::Jwks(url) => url.clone(),
            KeySource::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc = self.get_json(&url).await?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| JwksError::Format {
                        url: url.clone(),
                        why: "no jwks_uri".into(),
                    })?
                    .to_owned()
            }
        };
        let doc = self.get_json(&jwks_url).await?;
        let set: JwkSet = serde_json::from_value(doc).map_err(|e| JwksError::Format {
            url: jwks_url,
            why: e.to_string(),
        })?;
        Ok(trusted_keys(&set))
    }

    async fn key_for(&self, kid: &str) -> Result<Option<Arc<Trusted>>, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(k) = cache.keys.get(kid) {
            return Ok(Some(k.clone()));
        }
        let due = cache
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.config.refresh_interval);
        if !due {
            return Ok(None);
        }
        cache.fetched_at = Some(Instant::now());
        let keys = self.fetch_keys().await.map_err(AuthError::Jwks);
        // Whatever the answer, tokens verified under the old set are checked again.
        self.verified_cache().entries.clear();
        cache.keys = keys?;
        Ok(cache.keys.get(kid).cloned())
    }

    /// Verifies `token` and maps it to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(p) = self.verified_cache().get(&digest, now) {
            return Ok(p);
        }
        let (principal, exp) = self.verify_uncached(token).await?;
        self.verified_cache().insert(digest, principal.clone(), exp, now);
        Ok(principal)
    }

    fn verified_cache(&self) -> std::sync::MutexGuard<'_, Verified> {
        // A panic while holding it leaves nothing half-written: the map is still valid.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signature and claim checks, and the token's `exp`.
    async fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::NotAccepted("malformed header"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(AuthError::NotAccepted("algorithm"));
        }
        let kid = header.kid.ok_or(AuthError::NotAccepted("no kid"))?;
        let trusted = self
            .key_for(&kid)
            .await?
            .ok_or(AuthError::NotAccepted("unknown kid"))?;
        if trusted.alg != header.alg {
            return Err(AuthError::NotAccepted("algorithm not pinned to this key"));
        }
        let mut validation = Validation::new(trusted.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Value>(token, &trusted.key, &validation).map_err(AuthError::Rejected)?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        let iat = claims.get("iat").and_then(Value::as_u64);
        if iat.is_none_or(|t| t > now + LEEWAY_SECS) {
            return Err(AuthError::NotAccepted("iat in the future"));
        }
        // Required above, so present; a non-integer one was refused by the library.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((self.config.claims.principal(&claims)?, exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            role: Role::Staff,
            patient_id: None,
        }
    }

    #[test]
    fn a_verified_token_expires_in_the_cache_as_it_would_unverified() {
        let mut v = Verified::default();
        v.insert([1; 32], staff("ana"), 1_000, 900);
        assert_eq!(v.get(&[1; 32], 1_000 + LEEWAY_SECS), Some(staff("ana")));
        assert_eq!(v.get(&[1; 32], 1_001 + LEEWAY_SECS), None);
        assert_eq!(v.get(&[2; 32], 900), None);
    }

    #[test]
    fn the_cache_stays_bounded_and_drops_expired_entries_first() {
        let mut v = Verified::default();
        for i in 0..MAX_VERIFIED {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_be_bytes());
            // Half of them long expired by `now` below.
            let exp = if i % 2 == 0 { 10 } else { 10_000 };
            v.insert(d, staff("x"), exp, 5);
        }
        v.insert([0xff; 32], staff("new"), 10_000, 5_000);
        assert_eq!(v.entries.len(), MAX_VERIFIED / 2 + 1);
        // With nothing expired, the cap clears the lot rather than grow.
        let mut full = Verified::default();
        for i in 0..MAX_VERIFIED {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_be_bytes());
            full.insert(d, staff("x"), 10_000, 5);
        }
        full.insert([0xff; 32], staff("new"), 10_000, 5);
        assert_eq!(full.entries.len(), 1);
    }
}
