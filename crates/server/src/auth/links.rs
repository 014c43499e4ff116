//! Download and print links: capabilities, not sessions. A link token names one version of one
//! document and an expiry, and is signed with HMAC-SHA-256 under the service's link key
//! (`DATA_DIR/server/link-key`, 0600; from configuration when several servers share links). The
//! signature is checked in constant time before anything in the token is read; revocation and
//! the use limit live in the access database (`access.rs`), so a valid signature alone is not
//! enough.

use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyfile::{self, KeyFileError};

/// Tokens longer than this are refused unread.
const MAX_LINK_TOKEN: usize = 512;
const PREFIX: &str = "l1.";

/// What a link grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// Link id (its record in the access database).
    pub lid: String,
    /// Document.
    pub doc: String,
    /// Version.
    pub v: u64,
    /// Expiry, ms since the epoch.
    pub exp: i64,
}

/// Signs and verifies link tokens.
pub struct LinkSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// The key file under a data directory.
    pub fn key_path(data_dir: &Path) -> PathBuf {
        data_dir.join("server").join("link-key")
    }

    /// Opens `path`, creating a random 256-bit key there on first use.
    pub fn open_or_create(path: &Path) -> Result<Self, KeyFileError> {
        let secret = keyfile::open_or_create(path, || {
            let mut k = Zeroizing::new(vec![0u8; 32]);
            // The system generator does not fail on Linux; if it ever did, no key beats a weak one.
            SystemRandom::new().fill(&mut k).expect("system random generator");
            k
        })?;
        Ok(Self::from_secret(&secret))
    }

    /// A signer over `secret` (at least 32 bytes from a real random source).
    pub fn from_secret(secret: &[u8]) -> Self {
        LinkSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The token for `claims`.
    pub fn sign(&self, claims: &LinkClaims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{PREFIX}{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The tag stored for a link's second-factor answer: HMAC over the link id and the
    /// normalized answer, so the database never holds the answer and a tag cannot be moved to
    /// another link.
    pub fn factor_tag(&self, link_id: &str, answer: &str) -> String {
        hex::encode(hmac::sign(&self.key, &factor_message(link_id, answer)).as_ref())
    }

    /// Whether `answer` is the one `tag` was made from (constant-time comparison).
    pub fn factor_matches(&self, link_id: &str, answer: &str, tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        hmac::verify(&self.key, &factor_message(link_id, answer), &tag).is_ok()
    }

    /// The claims of a token whose signature verifies; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<LinkClaims> {
        if token.len() > MAX_LINK_TOKEN {
            return None;
        }
        let rest = token.strip_prefix(PREFIX)?;
        let (payload, tag) = rest.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant-time comparison inside aws-lc.
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

/// Domain-separated from link tokens (which sign base64 text, never a NUL).
fn factor_message(link_id: &str, answer: &str) -> Vec<u8> {
    [
        b"factor\0".as_slice(),
        link_id.as_bytes(),
        b"\0",
        answer.as_bytes(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_unchanged_and_under_their_key() {
        let s = LinkSigner::from_secret(&[7u8; 32]);
        let c = LinkClaims {
            lid: "l".into(),
            doc: "d".into(),
            v: 2,
            exp: 99,
        };
        let t = s.sign(&c);
        assert_eq!(s.verify(&t), Some(c.clone()));
        assert_eq!(LinkSigner::from_secret(&[8u8; 32]).verify(&t), None);
        let mut forged = c;
        forged.v = 1;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tag = t.rsplit_once('.').unwrap().1;
        assert_eq!(s.verify(&format!("{PREFIX}{payload}.{tag}")), None);
        assert_eq!(s.verify("l1.x.y"), None);
        assert_eq!(s.verify(&"a".repeat(600)), None);
    }
}
