//! The embedded default's token issuer: an Ed25519 key in the data directory (0600), **not for
//! production**. `docstore serve` trusts it when no OIDC issuer is configured, and `docstore
//! token` mints tokens with it, so the embedded default needs no identity provider.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::jwt::{ClaimMapping, KeySource, VerifierConfig};
use crate::policy::Role;

/// `iss` of local tokens.
pub const LOCAL_ISSUER: &str = "urn:docstore:local-issuer";
/// `aud` of local tokens.
pub const LOCAL_AUDIENCE: &str = "docstore";

/// Why the local issuer could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// The key file.
    #[error("local issuer key")]
    KeyFile(#[from] super::keyfile::KeyFileError),
    /// The key file does not hold an Ed25519 PKCS#8 key.
    #[error("local issuer key {0} is not an Ed25519 key")]
    BadKey(PathBuf),
    /// Signing failed.
    #[error("signing a token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The local issuer's key.
pub struct LocalIssuer {
    pkcs8: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Subject.
    pub subject: String,
    /// Role.
    pub role: Role,
    /// Patient binding (patients).
    pub patient_id: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
}

impl LocalIssuer {
    /// The key file under a data directory.
    pub fn key_path(data_dir: &Path) -> PathBuf {
        data_dir.join("server").join("local-issuer-ed25519.pk8")
    }

    /// Opens the key under `data_dir`, creating it (0600, in a 0700 folder) on first use.
    pub fn open_or_create(data_dir: &Path) -> Result<Self, IssuerError> {
        let path = Self::key_path(data_dir);
        let pkcs8 = super::keyfile::open_or_create(&path, || {
            Zeroizing::new(
                Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map(|d| d.as_ref().to_vec())
                    .unwrap_or_default(),
            )
        })?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| IssuerError::BadKey(path.clone()))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex::encode(&Sha256::digest(&public)[..8]);
        Ok(LocalIssuer { pkcs8, public, kid })
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS.
    pub fn jwks(&self) -> JwkSet {
        serde_json::from_value(json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public),
        }]}))
        .expect("a well-formed OKP JWK")
    }

    /// A verifier configuration that trusts this issuer (claims mapped as by default).
    pub fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            issuer: LOCAL_ISSUER.into(),
            audience: LOCAL_AUDIENCE.into(),
            keys: KeySource::Static(self.jwks()),
            claims: ClaimMapping::default(),
            refresh_interval: Duration::from_secs(30),
        }
    }

    /// Signs a token for `req`.
    pub fn mint(&self, req: &TokenRequest) -> Result<String, IssuerError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = ClaimMapping::default();
        let mut body = serde_json::Map::new();
        body.insert("iss".into(), LOCAL_ISSUER.into());
        body.insert("aud".into(), LOCAL_AUDIENCE.into());
        body.insert("sub".into(), req.subject.clone().into());
        body.insert("iat".into(), now.into());
        body.insert("nbf".into(), now.into());
        body.insert("exp".into(), (now + req.ttl.as_secs()).into());
        body.insert("jti".into(), uuid::Uuid::new_v4().to_string().into());
        body.insert(claims.roles, json!([req.role.as_str()]));
        if let Some(p) = &req.patient_id {
            body.insert(claims.patient, p.clone().into());
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ed_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &body, &key).map_err(IssuerError::Sign)
    }
}
