//! The pages' sign-in with an OIDC provider (Amazon Cognito in production): the
//! authorization-code flow with PKCE, a `state` and a `nonce`, through the `openidconnect` crate.
//! The provider's ID token is verified by that crate (signature against the provider's JWKS,
//! issuer, audience = our client id, expiry, nonce); its claims then map to a principal exactly as
//! a bearer token's do ([`ClaimMapping::principal`]).

use std::collections::BTreeMap;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;
use tower_sessions::Session;

use crate::auth::ClaimMapping;
use crate::policy::Principal;
use crate::problem::ApiError;

/// How the pages sign in with an OIDC provider.
#[derive(Clone)]
pub struct PagesOidc {
    /// The issuer URL (its `/.well-known/openid-configuration` is read on first use).
    pub issuer: String,
    /// This application's client id at the provider.
    pub client_id: String,
    /// The client secret, for a confidential client (Cognito app clients with a secret).
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back: this service's `/entrar/retorno`.
    pub redirect_url: String,
    /// Which claims name the role and the patient.
    pub claims: ClaimMapping,
}

impl std::fmt::Debug for PagesOidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client secret.
        f.debug_struct("PagesOidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

/// Every claim of the ID token beyond the standard ones (the role and patient claims among them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Extra {
    #[serde(flatten)]
    claims: BTreeMap<String, serde_json::Value>,
}

impl AdditionalClaims for Extra {}

type Fields = IdTokenFields<
    Extra,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcClient = Client<
    Extra,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    StandardTokenResponse<Fields, CoreTokenType>,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What the session keeps between the redirect to the provider and its answer.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
}

const PENDING: &str = "oidc_pending";

/// The sign-in flow, with the provider's metadata read once (and again after a failure).
pub struct OidcLogin {
    config: PagesOidc,
    http: reqwest::Client,
    client: OnceCell<OidcClient>,
}

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogin")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &'static str) -> impl FnOnce(String) -> ApiError {
    move |e| {
        tracing::warn!(error = %e, "OIDC sign-in: {what}");
        ApiError::Unavailable
    }
}

fn refused(why: &'static str) -> ApiError {
    tracing::warn!("OIDC sign-in refused: {why}");
    ApiError::Unauthenticated(why)
}

impl OidcLogin {
    /// A flow for `config` (nothing is fetched yet).
    pub fn new(config: PagesOidc) -> Result<Self, reqwest::Error> {
        // The provider's redirects are not followed: a token endpoint that redirects is refused.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(OidcLogin {
            config,
            http,
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&OidcClient, ApiError> {
        self.client
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.config.issuer.clone())
                    .map_err(|e| unavailable("issuer URL")(e.to_string()))?;
                let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| unavailable("discovery")(e.to_string()))?;
                let redirect = RedirectUrl::new(self.config.redirect_url.clone())
                    .map_err(|e| unavailable("redirect URL")(e.to_string()))?;
                Ok(OidcClient::from_provider_metadata(
                    meta,
                    ClientId::new(self.config.client_id.clone()),
                    self.config.client_secret.clone().map(ClientSecret::new),
                )
                .set_redirect_uri(redirect))
            })
            .await
    }

    /// Starts a sign-in: the provider's authorization URL, with the PKCE challenge, `state` and
    /// `nonce` kept in the (pre-sign-in) session.
    pub async fn begin(&self, session: &Session) -> Result<String, ApiError> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("openid".into()))
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        };
        session
            .insert(PENDING, pending)
            .await
            .map_err(|e| unavailable("session")(e.to_string()))?;
        Ok(url.to_string())
    }

    /// Ends a sign-in: checks `state` against the session's (once: it is removed), redeems the
    /// code with the PKCE verifier, verifies the ID token, and maps its claims.
    pub async fn finish(&self, session: &Session, code: &str, state: &str) -> Result<Principal, ApiError> {
        let pending: Pending = session
            .remove(PENDING)
            .await
            .map_err(|e| unavailable("session")(e.to_string()))?
            .ok_or_else(|| refused("no sign-in in progress"))?;
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(refused("state"));
        }
        let client = self.client().await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| unavailable("token endpoint")(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                // The provider's error code and description; never the code or a token.
                tracing::warn!(error = %e, "OIDC code redemption failed");
                refused("code")
            })?;
        let id_token = response.id_token().ok_or_else(|| refused("no ID token"))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| {
                tracing::warn!(error = %e, "OIDC ID token refused");
                refused("ID token")
            })?;
        let mut all = serde_json::Map::new();
        for (k, v) in &claims.additional_claims().claims {
            all.insert(k.clone(), v.clone());
        }
        all.insert("sub".into(), claims.subject().as_str().into());
        self.config
            .claims
            .principal(&serde_json::Value::Object(all))
            .map_err(ApiError::from)
    }
}
