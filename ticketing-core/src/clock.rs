//! Where time comes from.
//!
//! Every business decision takes `now` as an argument; the service reads it from a [`Clock`] once
//! per call. Production uses [`SystemClock`]; tests use [`ManualClock`] and move time by hand, so
//! expiry is tested without sleeping.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share one time.
///
/// ```
/// use ticketing_core::{Clock, ManualClock};
/// let clock = ManualClock::at_epoch_secs(1_000);
/// clock.advance_secs(5);
/// assert_eq!(clock.now().timestamp(), 1_005);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `now`.
    #[must_use]
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(now)) }
    }

    /// A clock standing at `secs` seconds after the Unix epoch.
    ///
    /// # Panics
    /// When `secs` is outside chrono's range (about 262,000 years either way).
    #[must_use]
    pub fn at_epoch_secs(secs: i64) -> Self {
        Self::new(DateTime::from_timestamp(secs, 0).expect("timestamp within chrono's range"))
    }

    /// Moves the clock forward (or back, for a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.advance(Duration::seconds(secs));
    }

    /// Moves the clock forward by milliseconds.
    pub fn advance_millis(&self, millis: i64) {
        self.advance(Duration::milliseconds(millis));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `instant` rounded down to whole milliseconds.
///
/// Every backend stores times with at least millisecond precision (Redis keeps epoch
/// milliseconds), so the service works in milliseconds throughout and a time read back from any
/// store equals the time written.
#[must_use]
pub fn truncate_to_millis(instant: DateTime<Utc>) -> DateTime<Utc> {
    instant.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(instant)
}
