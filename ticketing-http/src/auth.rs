//! How a user proves who it is when asking for a queue token (`TICKETING_AUTH`). After that
//! one request, the queue token is the credential.

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use ticketing_core::ids::UserId;

use crate::error::ApiError;

/// The header a trusted gateway sets in `header` mode.
pub const USER_ID_HEADER: &str = "x-user-id";
/// The header carrying a JWT in `jwt-hs256` mode.
pub const USER_TOKEN_HEADER: &str = "x-user-token";

/// The shortest HS256 secret accepted: 256 bits.
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// How identity is proven.
#[derive(Clone)]
pub enum AuthMode {
    /// `none`: `userId` from the body is taken at its word. For demos only.
    None,
    /// `header`: a gateway in front sets `X-User-Id`, and it is trusted.
    Header,
    /// `jwt-hs256:<secret>`: `X-User-Token` carries a JWT signed with HS256; its signature and
    /// `exp` are verified and `sub` is the user.
    JwtHs256(DecodingKey),
}

impl fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Header => "header",
            Self::JwtHs256(_) => "jwt-hs256:<secret>",
        })
    }
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "header" => Ok(Self::Header),
            _ => match text.strip_prefix("jwt-hs256:") {
                Some(secret) if secret.len() >= JWT_SECRET_MIN_BYTES => {
                    Ok(Self::JwtHs256(DecodingKey::from_secret(secret.as_bytes())))
                }
                Some(_) => Err(format!("the jwt-hs256 secret must be at least {JWT_SECRET_MIN_BYTES} bytes")),
                None => Err("expected none, header or jwt-hs256:<secret>".to_owned()),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

impl AuthMode {
    /// The proven user of a token request. `claimed` is the `userId` of the body: required in
    /// `none` mode, and when given in the other modes it must be the proven user.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] when the proof is missing or invalid,
    /// [`ApiError::IdentityMismatch`] when `claimed` differs, [`ApiError::InvalidInput`] for a
    /// malformed user id.
    pub fn identify(&self, headers: &HeaderMap, claimed: Option<&str>) -> Result<UserId, ApiError> {
        let proven = match self {
            Self::None => {
                let claimed = claimed.ok_or_else(|| ApiError::InvalidInput("userId is required".into()))?;
                return UserId::parse(claimed).map_err(|e| ApiError::InvalidInput(e.to_string()));
            }
            Self::Header => {
                let value = header(headers, USER_ID_HEADER)?;
                UserId::parse(value).map_err(|e| ApiError::Unauthenticated(e.to_string()))?
            }
            Self::JwtHs256(key) => {
                let jwt = header(headers, USER_TOKEN_HEADER)?;
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_required_spec_claims(&["exp", "sub"]);
                validation.leeway = 0;
                let data = jsonwebtoken::decode::<Claims>(jwt, key, &validation)
                    .map_err(|e| ApiError::Unauthenticated(format!("invalid user token: {e}")))?;
                UserId::parse(&data.claims.sub).map_err(|e| ApiError::Unauthenticated(e.to_string()))?
            }
        };
        match claimed {
            Some(claimed) if claimed != proven.as_str() => Err(ApiError::IdentityMismatch),
            _ => Ok(proven),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| ApiError::Unauthenticated(format!("the {name} header is required")))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated(format!("the {name} header is not text")))
}
