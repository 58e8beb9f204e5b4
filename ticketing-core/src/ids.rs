//! Newtypes for every identifier and quantity.
//!
//! Each type has private fields and a validating constructor, so a value of the type is always
//! well formed: a [`UserId`] is never empty, [`Points`] are never negative, a [`QueueToken`]
//! always carries its concert and 160 bits of randomness.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{IDEMPOTENCY_KEY_MAX_LEN, USER_ID_MAX_LEN};

/// A value could not be parsed into one of the identifier or quantity types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseError {
    /// Which kind of value was being parsed (`"user id"`, `"points"`, …).
    pub what: &'static str,
    /// Why it was refused, in words a client can act on.
    pub reason: String,
}

impl ParseError {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self { what, reason: reason.into() }
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random identifier.
            #[must_use]
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID (for example one read back from a database).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses the hyphenated UUID form.
            ///
            /// # Errors
            /// [`ParseError`] when the text is not a UUID.
            pub fn parse(text: &str) -> Result<Self, ParseError> {
                Uuid::parse_str(text)
                    .map(Self)
                    .map_err(|_| ParseError::new($what, "expected a UUID"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// A concert: the thing a queue is formed for.
    ConcertId,
    "concert id"
);
uuid_id!(
    /// One performance date of a concert.
    ScheduleId,
    "schedule id"
);
uuid_id!(
    /// One seat of one schedule.
    SeatId,
    "seat id"
);
uuid_id!(
    /// One hold of one seat by one user: the reservation.
    ReservationId,
    "reservation id"
);
uuid_id!(
    /// One completed payment.
    PaymentId,
    "payment id"
);
uuid_id!(
    /// One entry of a user's balance ledger.
    LedgerEntryId,
    "ledger entry id"
);

/// Who a buyer is: an opaque identifier from the identity provider in front of us.
///
/// 1 to [`USER_ID_MAX_LEN`] characters of `A-Z a-z 0-9 . _ - @ :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Validates a user id.
    ///
    /// # Errors
    /// [`ParseError`] when it is empty, too long, or has characters outside the allowed set.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "user id";
        if text.is_empty() {
            return Err(ParseError::new(WHAT, "must not be empty"));
        }
        if text.len() > USER_ID_MAX_LEN {
            return Err(ParseError::new(WHAT, format!("at most {USER_ID_MAX_LEN} characters")));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':');
        if !text.chars().all(allowed) {
            return Err(ParseError::new(WHAT, "only letters, digits and . _ - @ : are allowed"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UserId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

/// The queue token: the buyer's credential after it has proven who it is.
///
/// Its identity is 72 lowercase hex digits: the concert's UUID (32 digits, its `simple` form),
/// then 160 bits from the operating system's random source (40 digits), so it cannot be guessed.
/// The token carries its concert so that a store can find its record without an index from token
/// to concert (Redis keeps each concert's keys in one hash slot). It is bound to one user by the
/// record the queue store keeps for it; a token whose concert part was changed names no record.
///
/// The credential a client is given may go on after the identity with `.` and a claim: the
/// token's place in line, issue time and user, signed by the service
/// ([`crate::claim::TokenSigner`]), so that a queue store that lost its data can be given the
/// token back ([`crate::Ticketing`] does it on the token's next request). The identity alone
/// is what stores key on ([`QueueToken::as_str`]), what equality compares and what acts: the
/// claim adds no authority, it only lets a lost record be rebuilt.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueToken(String);

impl QueueToken {
    /// Hex digits of the concert part.
    const CONCERT_LEN: usize = 32;
    /// Random bytes after the concert part.
    const RANDOM_BYTES: usize = 20;
    /// Hex digits of a token's identity.
    const LEN: usize = Self::CONCERT_LEN + Self::RANDOM_BYTES * 2;
    /// The longest credential accepted: the identity, `.` and a claim.
    pub const CREDENTIAL_MAX_LEN: usize = 512;

    /// A new token of `concert`, its random part from the operating system's random source.
    ///
    /// # Panics
    /// When the operating system has no random source, which no supported platform lacks.
    #[must_use]
    pub fn generate(concert: ConcertId) -> Self {
        let mut bytes = [0_u8; Self::RANDOM_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system provides a random source");
        // The `simple` form is the UUID's 32 hex digits, lowercase.
        let mut text = concert.as_uuid().simple().to_string();
        text.reserve(Self::RANDOM_BYTES * 2);
        for byte in bytes {
            text.push_str(&format!("{byte:02x}"));
        }
        Self(text)
    }

    /// Checks the shape of a token presented by a client: the identity, then optionally `.`
    /// and a claim of URL-safe base64 characters and dots (whether the claim is genuine is
    /// [`crate::claim::TokenSigner::verify`]'s to say).
    ///
    /// # Errors
    /// [`ParseError`] when it is not 72 lowercase hex digits, optionally followed by `.` and a
    /// claim, [`QueueToken::CREDENTIAL_MAX_LEN`] characters in all at most.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let (id, claim) = match text.split_once('.') {
            Some((id, claim)) => (id, Some(claim)),
            None => (text, None),
        };
        let id_ok =
            id.len() == Self::LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let claim_ok = claim.is_none_or(|claim| {
            !claim.is_empty()
                && claim.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        if id_ok && claim_ok && text.len() <= Self::CREDENTIAL_MAX_LEN {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new(
                "queue token",
                "expected 72 lowercase hex digits (the concert id's 32, then 40 random), optionally \
                 followed by '.' and the claim the token was issued with",
            ))
        }
    }

    /// The concert the token was issued for (whether a record exists is the store's to say).
    #[must_use]
    pub fn concert(&self) -> ConcertId {
        let digits = &self.0[..Self::CONCERT_LEN];
        let uuid = u128::from_str_radix(digits, 16).expect("a token starts with 32 hex digits");
        ConcertId::from_uuid(Uuid::from_u128(uuid))
    }

    /// The token's identity: its 72 hex digits, what stores key on.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0[..Self::LEN]
    }

    /// The whole credential as given to the client: the identity and the claim, if any.
    #[must_use]
    pub fn credential(&self) -> &str {
        &self.0
    }

    /// The claim after the identity, if the credential has one.
    #[must_use]
    pub fn claim(&self) -> Option<&str> {
        self.0.get(Self::LEN + 1..)
    }

    /// This token's identity with `claim` after it.
    #[must_use]
    pub fn with_claim(&self, claim: &str) -> Self {
        Self(format!("{}.{claim}", self.as_str()))
    }

    /// This token's identity alone (what a store keeps).
    #[must_use]
    pub fn identity(&self) -> Self {
        Self(self.as_str().to_owned())
    }
}

impl PartialEq for QueueToken {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for QueueToken {}

impl std::hash::Hash for QueueToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for QueueToken {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueueToken {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for QueueToken {
    /// The concert part and four random digits only: tokens are credentials and must not end up
    /// whole in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (concert, random) = self.as_str().split_at(Self::CONCERT_LEN);
        write!(f, "QueueToken({concert}:{}…)", &random[..4])
    }
}

impl fmt::Display for QueueToken {
    /// The identity (what stores key on); [`QueueToken::credential`] is the whole credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for QueueToken {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<QueueToken> for String {
    fn from(value: QueueToken) -> Self {
        value.0
    }
}

/// An amount of points: the prepaid currency. Integer, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Points(i64);

impl Points {
    /// No points.
    pub const ZERO: Self = Self(0);

    /// Validates an amount.
    ///
    /// # Errors
    /// [`ParseError`] when the amount is negative.
    pub fn new(amount: i64) -> Result<Self, ParseError> {
        if amount < 0 {
            return Err(ParseError::new("points", "must not be negative"));
        }
        Ok(Self(amount))
    }

    /// The amount as an integer.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    #[must_use]
    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }

    /// `self - other`, or `None` when the result would be negative.
    #[must_use]
    pub const fn checked_sub(self, other: Self) -> Option<Self> {
        if other.0 > self.0 { None } else { Some(Self(self.0 - other.0)) }
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<i64> for Points {
    type Error = ParseError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Points> for i64 {
    fn from(value: Points) -> Self {
        value.0
    }
}

/// The fencing number of a seat: raised by every change of the seat's state.
///
/// A hold remembers the fence it was granted with; a write that presents an older fence than the
/// seat's current one is refused by every store, so a stale holder can never confirm or release
/// a hold that is no longer its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fence(u64);

impl Fence {
    /// The fence of a seat that has never changed.
    pub const INITIAL: Self = Self(0);

    /// Wraps a stored fence.
    #[must_use]
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The fence as an integer.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The fence the next change of the seat carries.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client-chosen key that makes a hold, payment or charge safe to retry. Scoped to the user.
///
/// 1 to [`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    ///
    /// # Errors
    /// [`ParseError`] when it is empty, too long, or not visible ASCII.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "idempotency key";
        if text.is_empty() || text.len() > IDEMPOTENCY_KEY_MAX_LEN {
            return Err(ParseError::new(WHAT, format!("must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} characters")));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::new(WHAT, "only visible ASCII characters are allowed"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_validated() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("has space").is_err());
        assert!(UserId::parse(&"x".repeat(USER_ID_MAX_LEN + 1)).is_err());
        assert!(UserId::parse(&"x".repeat(USER_ID_MAX_LEN)).is_ok());
    }

    #[test]
    fn generated_tokens_parse_and_differ() {
        let concert = ConcertId::random();
        let a = QueueToken::generate(concert);
        let b = QueueToken::generate(concert);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 72);
        assert_eq!(QueueToken::parse(a.as_str()), Ok(a.clone()));
        assert!(QueueToken::parse("not-a-token").is_err());
        assert!(QueueToken::parse(&a.as_str().to_uppercase()).is_err());
        assert!(QueueToken::parse(&a.as_str()[..71]).is_err());
        assert!(QueueToken::parse(&format!("{a}0")).is_err());
    }

    #[test]
    fn a_token_carries_its_concert() {
        let concert = ConcertId::random();
        let token = QueueToken::generate(concert);
        assert_eq!(token.concert(), concert);
        assert!(token.as_str().starts_with(&concert.as_uuid().simple().to_string()));
        let parsed = QueueToken::parse(token.as_str()).expect("well formed");
        assert_eq!(parsed.concert(), concert);
    }

    #[test]
    fn tokens_of_the_old_forty_digit_shape_are_refused() {
        assert!(QueueToken::parse(&"a".repeat(40)).is_err());
    }

    #[test]
    fn token_debug_does_not_print_the_whole_credential() {
        let token = QueueToken::generate(ConcertId::random());
        let debug = format!("{token:?}");
        assert!(!debug.contains(token.as_str()));
        assert!(!debug.contains(&token.as_str()[36..]));
        assert!(debug.contains(&token.concert().as_uuid().simple().to_string()));
    }

    #[test]
    fn points_are_never_negative() {
        assert!(Points::new(-1).is_err());
        let ten = Points::new(10).expect("non-negative");
        let three = Points::new(3).expect("non-negative");
        assert_eq!(ten.checked_sub(three).map(Points::get), Some(7));
        assert_eq!(three.checked_sub(ten), None);
        assert!(serde_json::from_str::<Points>("-5").is_err());
    }

    #[test]
    fn idempotency_keys_are_validated() {
        assert!(IdempotencyKey::parse("order-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("with space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(IDEMPOTENCY_KEY_MAX_LEN + 1)).is_err());
    }

    #[test]
    fn uuid_ids_round_trip_through_text() {
        let id = SeatId::random();
        assert_eq!(SeatId::parse(&id.to_string()), Ok(id));
        assert!(SeatId::parse("seat-1").is_err());
    }
}
