//! The claim a queue token's credential carries, so that a queue store that lost its data can be
//! given the token back.
//!
//! When the service hands out a token it appends, after the token's identity, a claim of what
//! the queue store knows of it at issue: its place in line (`seq`), when it was issued and its
//! user, with an HMAC-SHA-256 over the identity and those fields under the deployment's
//! [`TokenKey`]. The claim grants nothing (the identity alone names the record that acts); it
//! only lets [`crate::Ticketing`] rebuild the record of a token the queue store no longer has
//! ([`crate::store::QueueStore::restore`]) without trusting the client: a claim that does not
//! verify is as good as none.
//!
//! ```
//! use chrono::DateTime;
//! use ticketing_core::claim::{Claim, TokenKey, TokenSigner};
//! use ticketing_core::ids::{ConcertId, QueueToken, UserId};
//!
//! let signer = TokenSigner::new(TokenKey::random());
//! let token = QueueToken::generate(ConcertId::random());
//! let claim = Claim {
//!     seq: 42,
//!     issued_at: DateTime::from_timestamp_millis(1_800_000_000_000).unwrap(),
//!     user: UserId::parse("alice").unwrap(),
//! };
//! let credential = signer.sign(&token, &claim);
//! assert_eq!(credential, token, "the same token: equality is the identity's");
//! assert_eq!(signer.verify(&credential), Some(claim));
//! assert_eq!(TokenSigner::new(TokenKey::random()).verify(&credential), None, "another key");
//! ```

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::{QueueToken, UserId};

/// Bytes of the MAC kept in a claim (128 bits).
const MAC_BYTES: usize = 16;

/// The secret a deployment signs its tokens' claims with. Every node of a deployment must use
/// the same key for a node to give back a token another node issued.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// A key from the operating system's random source: right for one process alone.
    ///
    /// # Panics
    /// When the operating system has no random source, which no supported platform lacks.
    #[must_use]
    pub fn random() -> Self {
        let mut key = [0_u8; 32];
        getrandom::fill(&mut key).expect("the operating system provides a random source");
        Self(key)
    }

    /// A key from a configured secret: at least 32 bytes of text, hashed to the key.
    ///
    /// # Errors
    /// A message when the secret is shorter than 32 bytes.
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        use sha2::Digest;
        if secret.len() < 32 {
            return Err(format!("a token secret needs at least 32 bytes, got {}", secret.len()));
        }
        Ok(Self(Sha256::digest(secret.as_bytes()).into()))
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

/// What a token's credential claims of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Its place in its concert's line when issued; 0 when it was not handed out waiting (an
    /// admitted token given back to its user), which places it before everyone.
    pub seq: u64,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Its user.
    pub user: UserId,
}

/// Signs and checks claims under one [`TokenKey`].
#[derive(Clone)]
pub struct TokenSigner {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner(…)")
    }
}

impl TokenSigner {
    /// A signer with `key`.
    #[must_use]
    pub fn new(key: TokenKey) -> Self {
        Self { mac: Hmac::new_from_slice(&key.0).expect("HMAC takes a key of any length") }
    }

    fn tag(&self, identity: &str, payload: &str) -> [u8; MAC_BYTES] {
        let mut mac = self.mac.clone();
        mac.update(identity.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0_u8; MAC_BYTES];
        tag.copy_from_slice(&full[..MAC_BYTES]);
        tag
    }

    /// `token`'s identity with `claim` signed after it: the credential to hand out.
    #[must_use]
    pub fn sign(&self, token: &QueueToken, claim: &Claim) -> QueueToken {
        let mut bytes = Vec::with_capacity(16 + claim.user.as_str().len());
        bytes.extend_from_slice(&claim.seq.to_be_bytes());
        bytes.extend_from_slice(&claim.issued_at.timestamp_millis().to_be_bytes());
        bytes.extend_from_slice(claim.user.as_str().as_bytes());
        let payload = URL_SAFE_NO_PAD.encode(bytes);
        let tag = URL_SAFE_NO_PAD.encode(self.tag(token.as_str(), &payload));
        token.with_claim(&format!("{payload}.{tag}"))
    }

    /// The claim `token`'s credential carries, if it has one signed with this key.
    #[must_use]
    pub fn verify(&self, token: &QueueToken) -> Option<Claim> {
        let (payload, tag) = token.claim()?.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != MAC_BYTES {
            return None;
        }
        let mut mac = self.mac.clone();
        mac.update(token.as_str().as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let issued = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let user = UserId::parse(std::str::from_utf8(bytes.get(16..)?).ok()?).ok()?;
        Some(Claim { seq, issued_at: DateTime::from_timestamp_millis(issued)?, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConcertId;

    fn claim() -> Claim {
        Claim {
            seq: 1_796_000_000_000_123,
            issued_at: DateTime::from_timestamp_millis(1_796_000_000_000).expect("valid"),
            user: UserId::parse("alice@example.com").expect("valid"),
        }
    }

    #[test]
    fn a_signed_claim_verifies_and_parses_back() {
        let signer = TokenSigner::new(TokenKey::random());
        let token = QueueToken::generate(ConcertId::random());
        let credential = signer.sign(&token, &claim());
        assert_eq!(signer.verify(&credential), Some(claim()));
        let parsed = QueueToken::parse(credential.credential()).expect("a credential parses");
        assert_eq!(parsed.credential(), credential.credential());
        assert_eq!(parsed.as_str(), token.as_str());
        assert_eq!(signer.sign(&token, &claim()).credential(), credential.credential(), "deterministic");
    }

    #[test]
    fn a_claim_that_was_altered_or_moved_does_not_verify() {
        let signer = TokenSigner::new(TokenKey::random());
        let token = QueueToken::generate(ConcertId::random());
        let credential = signer.sign(&token, &claim());
        let (payload, tag) = credential.claim().expect("signed").split_once('.').expect("two parts");
        // Another seq, same tag.
        let forged = Claim { seq: 1, ..claim() };
        let other = signer.sign(&token, &forged);
        let (other_payload, _) = other.claim().expect("signed").split_once('.').expect("two parts");
        assert_eq!(signer.verify(&token.with_claim(&format!("{other_payload}.{tag}"))), None);
        // The same claim on another token.
        let elsewhere = QueueToken::generate(ConcertId::random());
        assert_eq!(signer.verify(&elsewhere.with_claim(&format!("{payload}.{tag}"))), None);
        // A shortened tag, no tag, no claim.
        assert_eq!(signer.verify(&token.with_claim(&format!("{payload}.{}", &tag[..10]))), None);
        assert_eq!(signer.verify(&token.with_claim(payload)), None);
        assert_eq!(signer.verify(&token), None);
    }

    #[test]
    fn secrets_shorter_than_32_bytes_are_refused() {
        assert!(TokenKey::from_secret("short").is_err());
        let a = TokenKey::from_secret(&"s".repeat(32)).expect("long enough");
        assert_eq!(a, TokenKey::from_secret(&"s".repeat(32)).expect("long enough"));
        assert_ne!(a, TokenKey::from_secret(&"t".repeat(32)).expect("long enough"));
    }
}
