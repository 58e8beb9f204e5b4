//! Idempotency keys: the rule for replays. Pure.
//!
//! A hold, payment or charge may carry a key chosen by the client, scoped to the user. The first
//! request with a key stores its outcome (success or refusal) in the same atomic step as its
//! effect; a replay with the same key and the same request gets that outcome back and changes
//! nothing; the same key with a different request is refused.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::secs;
use crate::error::DomainError;
use crate::ids::{IdempotencyKey, UserId};
use crate::limits::IDEMPOTENCY_TTL_SECS;

/// A stored outcome of a request made with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyRecord {
    /// Whose key.
    pub user_id: UserId,
    /// The key.
    pub key: IdempotencyKey,
    /// What was asked, e.g. `pay:<reservation id>`; a replay must ask the same.
    pub fingerprint: String,
    /// The outcome as JSON: `{"Ok": …}` or `{"Err": …}`.
    pub outcome: String,
    /// When the key was first used.
    pub created_at: DateTime<Utc>,
    /// The key may be forgotten after this instant (at least `IDEMPOTENCY_TTL_SECS` on).
    pub expires_at: DateTime<Utc>,
}

/// What a request with a key should do, given what is stored for the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck<T> {
    /// Nothing stored (or only a record past its lifetime): go ahead and store the outcome.
    Fresh,
    /// The same request was made before: return its outcome.
    Replay(Result<T, DomainError>),
}

/// Compares a stored record with a new request.
///
/// # Errors
/// [`DomainError::IdempotencyKeyReused`] when the key was used for a different request.
pub fn check<T: serde::de::DeserializeOwned>(
    stored: Option<&IdempotencyRecord>,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<KeyCheck<T>, CheckError> {
    let Some(record) = stored.filter(|r| r.expires_at > now) else { return Ok(KeyCheck::Fresh) };
    if record.fingerprint != fingerprint {
        return Err(CheckError::Reused);
    }
    serde_json::from_str(&record.outcome)
        .map(KeyCheck::Replay)
        .map_err(|e| CheckError::Corrupt(e.to_string()))
}

/// Why a stored key cannot answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Same key, different request.
    Reused,
    /// The stored outcome does not decode.
    Corrupt(String),
}

/// The record to store for the outcome of a request with a key.
///
/// # Errors
/// A message when the outcome does not serialize, which the types here never cause.
pub fn record<T: Serialize>(
    user_id: &UserId,
    key: &IdempotencyKey,
    fingerprint: String,
    outcome: &Result<T, DomainError>,
    now: DateTime<Utc>,
) -> Result<IdempotencyRecord, String> {
    Ok(IdempotencyRecord {
        user_id: user_id.clone(),
        key: key.clone(),
        fingerprint,
        outcome: serde_json::to_string(outcome).map_err(|e| e.to_string())?,
        created_at: now,
        expires_at: now + secs(IDEMPOTENCY_TTL_SECS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(4_000_000 + secs, 0).expect("valid")
    }

    fn stored(outcome: &Result<u32, DomainError>) -> IdempotencyRecord {
        record(
            &UserId::parse("alice").expect("valid"),
            &IdempotencyKey::parse("k1").expect("valid"),
            "charge:5".into(),
            outcome,
            t(0),
        )
        .expect("serializes")
    }

    #[test]
    fn a_new_key_is_fresh() {
        assert_eq!(check::<u32>(None, "charge:5", t(0)), Ok(KeyCheck::Fresh));
    }

    #[test]
    fn a_replay_returns_the_first_outcome_error_or_not() {
        let ok = stored(&Ok(7));
        assert_eq!(check::<u32>(Some(&ok), "charge:5", t(1)), Ok(KeyCheck::Replay(Ok(7))));
        let refused = stored(&Err(DomainError::SeatUnavailable));
        assert_eq!(
            check::<u32>(Some(&refused), "charge:5", t(1)),
            Ok(KeyCheck::Replay(Err(DomainError::SeatUnavailable)))
        );
    }

    #[test]
    fn the_same_key_for_another_request_is_refused() {
        assert_eq!(check::<u32>(Some(&stored(&Ok(7))), "charge:6", t(1)), Err(CheckError::Reused));
    }

    #[test]
    fn keys_live_at_least_a_day() {
        let ok = stored(&Ok(7));
        assert!(ok.expires_at - ok.created_at >= chrono::Duration::hours(24));
        assert_eq!(check::<u32>(Some(&ok), "charge:6", ok.expires_at), Ok(KeyCheck::Fresh));
    }
}
