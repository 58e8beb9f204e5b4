//! Errors, named for what happened.
//!
//! [`DomainError`] is what a rule refused; it is serializable because an idempotent replay must
//! return the very outcome the first attempt had, errors included. [`StoreError`] is what a
//! backend reported, the same enum for every backend. [`Error`] is what the service returns.

use serde::{Deserialize, Serialize};

use crate::door::DoorScope;
use crate::ids::{ParseError, Points};

/// A business rule refused the request. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum DomainError {
    /// No concert has that id.
    #[error("concert not found")]
    ConcertNotFound,
    /// Every seat of the concert is sold: nobody more joins its line.
    #[error("the concert is sold out")]
    SoldOut,
    /// No schedule has that id.
    #[error("schedule not found")]
    ScheduleNotFound,
    /// No seat has that id.
    #[error("seat not found")]
    SeatNotFound,
    /// No reservation has that id.
    #[error("reservation not found")]
    ReservationNotFound,
    /// The reservation belongs to another user.
    #[error("the reservation belongs to another user")]
    NotOwner,
    /// The queue token is unknown.
    #[error("unknown queue token")]
    TokenNotFound,
    /// The queue token has expired (idle in the line, past its active time, or used to pay).
    #[error("the queue token has expired")]
    TokenExpired,
    /// An operator revoked the queue token: it acts for nobody any more.
    #[error("the queue token was revoked")]
    TokenRevoked,
    /// The token is still waiting in line.
    #[error("not admitted yet: position {position} in line")]
    NotAdmitted {
        /// 1-based place among the concert's waiting tokens.
        position: u64,
    },
    /// The token was admitted already: there is no line left to leave.
    #[error("the token is admitted already: it has no place in line to give up")]
    AlreadyAdmitted,
    /// The token belongs to another concert than the one asked about.
    #[error("the queue token is for another concert")]
    WrongConcert,
    /// The seat is held by someone else or already booked.
    #[error("the seat is not available")]
    SeatUnavailable,
    /// The token already has as many open holds as it may.
    #[error("the token already holds {limit} seat(s)")]
    HoldLimitReached {
        /// The configured number of open holds per token.
        limit: u32,
    },
    /// The user already bought as many seats of the concert as it allows.
    #[error("you already bought {limit} seat(s) of this concert, its most per buyer")]
    BuyerLimitReached {
        /// The concert's `max_seats_per_buyer`.
        limit: u32,
    },
    /// The hold's deadline passed (or it was superseded after expiring): the seat is not yours.
    #[error("the hold has expired")]
    HoldExpired,
    /// The reservation is already paid for.
    #[error("the reservation is already paid")]
    AlreadyPaid,
    /// The reservation was released by its owner.
    #[error("the reservation was released")]
    HoldReleased,
    /// Only a paid booking can be cancelled: this reservation was never paid.
    #[error("the reservation is not paid: only a booking can be cancelled")]
    NotPaid,
    /// The booking was cancelled (and refunded) already.
    #[error("the booking was already cancelled")]
    AlreadyCancelled,
    /// The concert's buyers may no longer cancel this booking (or may not cancel at all; an
    /// operator still may).
    #[error("this booking can no longer be cancelled by its buyer")]
    CancellationClosed,
    /// The balance does not cover the price.
    #[error("insufficient balance: {balance} points, {required} required")]
    InsufficientBalance {
        /// The balance at the time of the attempt.
        balance: Points,
        /// The price that had to be paid.
        required: Points,
    },
    /// A charge amount outside `1..=CHARGE_MAX_POINTS`.
    #[error("invalid amount: {reason}")]
    InvalidAmount {
        /// What is wrong with it.
        reason: String,
    },
    /// The charge would take the balance above `BALANCE_MAX_POINTS`.
    #[error("the balance may not exceed {max} points")]
    BalanceLimitExceeded {
        /// The largest balance allowed.
        max: Points,
    },
    /// The idempotency key was first used with a different request.
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// Too many token requests from one client address or by one user ([`crate::door`]).
    #[error("too many token requests from this {scope}: try again in {retry_after_secs} s")]
    RateLimited {
        /// Whose budget is spent.
        scope: DoorScope,
        /// Whole seconds until the budget allows another request.
        retry_after_secs: u64,
    },
    /// A value in the request is malformed or out of range.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong, in words a client can act on.
        reason: String,
    },
}

impl From<ParseError> for DomainError {
    fn from(error: ParseError) -> Self {
        Self::InvalidInput { reason: error.to_string() }
    }
}

/// A boxed error from a backend's driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a storage backend reported. The same enum for every backend, so the service branches on
/// it the same way whichever backend ran.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set lost: the record named changed since it was read, or a uniqueness
    /// constraint on it was already taken. Nothing was written.
    #[error("conflict on {0}: it changed since it was read")]
    Conflict(&'static str),
    /// A hold would exceed the number of open holds allowed per token. Nothing was written.
    #[error("the token has reached its open-hold limit")]
    HoldLimitReached,
    /// A record the step refers to does not exist.
    #[error("{0} not found")]
    Missing(&'static str),
    /// The backend failed or could not be reached; the step may or may not have taken effect
    /// only if the backend says so in the source.
    #[error("storage backend failed: {message}")]
    Backend {
        /// What was being done.
        message: String,
        /// The driver's own error.
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What the service returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule refused the request; nothing changed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The step lost its compare-and-set race `CAS_RETRIES` times in a row; nothing changed and
    /// the caller may retry.
    #[error("too much contention, try again")]
    Contention,
}

impl From<ParseError> for Error {
    fn from(error: ParseError) -> Self {
        Self::Domain(error.into())
    }
}

impl Error {
    /// The domain error, if this is one.
    #[must_use]
    pub fn domain(&self) -> Option<&DomainError> {
        match self {
            Self::Domain(error) => Some(error),
            Self::Store(_) | Self::Contention => None,
        }
    }
}
