//! Bearer tokens (CONTRACT section 7): checking them on requests, and minting dev tokens for
//! `shop token`. The user id always comes from the token's `sub`, never from a body; admin
//! routes need `role: "admin"`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shop_contracts::UserId;
use thiserror::Error;

use crate::problem::Problem;
use crate::settings::{AuthSettings, Secret, TokenAlgorithm};

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, a decimal string.
    pub sub: String,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The caller a valid token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub admin: bool,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("gateway.auth.hs256_secret is not set (HS256 needs a secret from config)")]
    NoSecret,
    #[error("gateway.auth.public_key_pem or public_key_file must be set for {0:?}")]
    NoPublicKey(TokenAlgorithm),
    #[error("could not read the public key file {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("the public key is not a valid PEM for {algorithm:?}: {source}")]
    BadKey {
        algorithm: TokenAlgorithm,
        source: jsonwebtoken::errors::Error,
    },
}

/// Checks tokens with the one key and algorithm of the config.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn from_settings(settings: &AuthSettings) -> Result<Verifier, KeyError> {
        let (key, algorithm) = match settings.algorithm {
            TokenAlgorithm::Hs256 => {
                let secret = settings.hs256_secret.as_ref().ok_or(KeyError::NoSecret)?;
                (
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                    Algorithm::HS256,
                )
            }
            algorithm @ (TokenAlgorithm::Rs256 | TokenAlgorithm::Eddsa) => {
                let pem = match (&settings.public_key_pem, &settings.public_key_file) {
                    (Some(pem), _) => pem.clone(),
                    (None, Some(path)) => {
                        std::fs::read_to_string(path).map_err(|source| KeyError::ReadKey {
                            path: path.display().to_string(),
                            source,
                        })?
                    }
                    (None, None) => return Err(KeyError::NoPublicKey(algorithm)),
                };
                let bad = |source| KeyError::BadKey { algorithm, source };
                if algorithm == TokenAlgorithm::Rs256 {
                    (
                        DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(bad)?,
                        Algorithm::RS256,
                    )
                } else {
                    (
                        DecodingKey::from_ed_pem(pem.as_bytes()).map_err(bad)?,
                        Algorithm::EdDSA,
                    )
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Clocks of issuer and gateway differ a little; a minute is the library's default.
        validation.leeway = 30;
        Ok(Verifier { key, validation })
    }

    /// The caller of a valid token; otherwise a 401 whose message names what is wrong
    /// (never the key).
    pub fn verify(&self, token: &str) -> Result<Caller, Problem> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                    ErrorKind::MissingRequiredClaim(_) => "the token must have sub and exp",
                    _ => "the token is malformed",
                };
                Problem::unauthorized(why)
            })?;
        let user_id = data
            .claims
            .sub
            .parse::<i64>()
            .ok()
            .and_then(|id| UserId::new(id).ok())
            .ok_or_else(|| Problem::unauthorized("the token's sub must be a user id"))?;
        Ok(Caller {
            user_id,
            admin: data.claims.role.as_deref() == Some("admin"),
        })
    }
}

/// A dev token for `shop token`: HS256 with the configured secret.
pub fn mint_hs256(
    secret: &Secret,
    user_id: UserId,
    admin: bool,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        sub: user_id.to_string(),
        exp: (now + ttl).as_secs(),
        role: admin.then(|| "admin".to_owned()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
}

/// A signed-in user (any role). Rejects with 401.
pub struct User(pub Caller);

/// An operator (`role: "admin"`). Rejects with 401, or 403 for a valid non-admin token.
pub struct Admin(pub Caller);

/// The extractors need only the verifier: any state that can hand one out (`FromRef`) will
/// do, so this module never names the application's state.
fn caller(parts: &Parts, verifier: &Verifier) -> Result<Caller, Problem> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(Problem::unauthorized(
            "Authorization: Bearer <token> is required",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Problem::unauthorized("Authorization must be Bearer <token>"))?;
    verifier.verify(token)
}

impl<S> FromRequestParts<S> for User
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        caller(parts, &Arc::<Verifier>::from_ref(state)).map(User)
    }
}

impl<S> FromRequestParts<S> for Admin
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let caller = caller(parts, &Arc::<Verifier>::from_ref(state))?;
        if !caller.admin {
            return Err(Problem::forbidden("this route needs an admin token"));
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secret: &str) -> Verifier {
        Verifier::from_settings(&AuthSettings {
            hs256_secret: Some(Secret::new(secret)),
            ..AuthSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn a_minted_token_verifies_and_a_foreign_one_does_not() {
        let secret = Secret::new("s3cret");
        let user = UserId::new(7).unwrap();
        let token = mint_hs256(&secret, user, true, Duration::from_secs(60)).unwrap();
        let caller = verifier("s3cret").verify(&token).unwrap();
        assert_eq!(
            caller,
            Caller {
                user_id: user,
                admin: true
            }
        );
        let refused = verifier("other").verify(&token).unwrap_err();
        assert_eq!(refused.detail, "the token's signature is not valid");
        assert!(verifier("s3cret").verify("not.a.token").is_err());
    }

    #[test]
    fn hs256_without_a_secret_is_a_config_error() {
        assert!(matches!(
            Verifier::from_settings(&AuthSettings::default()),
            Err(KeyError::NoSecret)
        ));
    }
}
