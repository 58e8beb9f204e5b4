//! How simulated users prove who they are when they ask for a queue token: the same modes as
//! the server's `TICKETING_AUTH`.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// A client's side of the server's auth mode.
#[derive(Clone)]
pub enum ClientAuth {
    /// `none`: the user id in the body is enough.
    None,
    /// `header`: send `X-User-Id`, as a trusted gateway would.
    Header,
    /// `jwt-hs256:<secret>`: send `X-User-Token`, a JWT signed with the server's secret.
    JwtHs256(EncodingKey),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Header => "header",
            Self::JwtHs256(_) => "jwt-hs256:<secret>",
        })
    }
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "header" => Ok(Self::Header),
            _ => match text.strip_prefix("jwt-hs256:") {
                Some(secret) if !secret.is_empty() => {
                    Ok(Self::JwtHs256(EncodingKey::from_secret(secret.as_bytes())))
                }
                _ => Err("expected none, header or jwt-hs256:<secret>".to_owned()),
            },
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
}

impl ClientAuth {
    /// Adds `user`'s proof of identity to a token request.
    pub fn sign(&self, request: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Header => request.header("X-User-Id", user),
            Self::JwtHs256(key) => {
                let claims = Claims { sub: user, exp: chrono::Utc::now().timestamp() + 3_600 };
                match jsonwebtoken::encode(&Header::default(), &claims, key) {
                    Ok(jwt) => request.header("X-User-Token", jwt),
                    // Encoding HS256 with a valid key does not fail; if it did, the server's
                    // 401 would say so.
                    Err(_) => request,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_syntax() {
        assert!(matches!("none".parse::<ClientAuth>(), Ok(ClientAuth::None)));
        assert!(matches!("header".parse::<ClientAuth>(), Ok(ClientAuth::Header)));
        assert!(matches!("jwt-hs256:abc".parse::<ClientAuth>(), Ok(ClientAuth::JwtHs256(_))));
        assert!("jwt-hs256:".parse::<ClientAuth>().is_err());
        assert!("basic".parse::<ClientAuth>().is_err());
    }
}
