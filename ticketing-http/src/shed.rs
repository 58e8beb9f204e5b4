//! Overload is shed, not suffered: at most `max_in_flight` requests are worked on at once, and
//! past that a new one is answered 503 `overloaded` with `Retry-After` at once, before latency
//! grows for everyone, rather than queued.
//!
//! A quarter of the places is kept for buyers who already hold a seat (a payment is worth more
//! than a poll): a [`Class::Priority`] request (paying, charging, reading the balance, reading
//! or releasing a reservation, with a well-formed queue token) may take any place and waits up
//! to [`PRIORITY_WAIT_MS`] for one;
//! a [`Class::Normal`] request (joining, polling, browsing, holding) only finds a place while
//! more than the kept quarter is free, and never waits. Operations routes are never shed.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

pub use ticketing_core::limits::{IN_FLIGHT_MAX_DEFAULT, PRIORITY_WAIT_MS};

/// What the router's middleware calls the route of a request that matched none.
pub const UNMATCHED: &str = "unmatched";

/// How a request is treated when the server is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Operations (health, readiness, metrics, the description) and requests matching no route:
    /// never shed, not counted.
    Exempt,
    /// A buyer holding a seat finishing the purchase: may use every place, waits briefly.
    Priority,
    /// Everything else: only while more than the kept places are free; never waits.
    Normal,
}

impl Class {
    /// The class of a request to `route` (the matched route pattern) with `method`; `token`
    /// says whether it carries a well-formed queue token (only such a request can be a buyer's
    /// finishing a purchase).
    #[must_use]
    pub fn of(method: &Method, route: &str, token: bool) -> Self {
        match (method.as_str(), route) {
            // Operations, and requests that match no route (a 404 or 405 costs nothing).
            (_, "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | UNMATCHED) => Self::Exempt,
            ("POST", "/api/v1/payments" | "/api/v1/balance/charges")
            | ("GET", "/api/v1/balance")
            | ("GET" | "DELETE", "/api/v1/reservations/{reservation_id}")
                if token =>
            {
                Self::Priority
            }
            _ => Self::Normal,
        }
    }

    /// The class's name in metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Exempt => "exempt",
            Self::Priority => "priority",
            Self::Normal => "normal",
        }
    }
}

/// The places for requests in flight: a shared pool every class may use, and the kept places
/// only [`Class::Priority`] may use, so the quarter is kept exactly.
#[derive(Debug, Clone)]
pub struct Shedder {
    shared: Arc<Semaphore>,
    kept: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Shedder {
    /// At most `max_in_flight` requests at once (at least one), a quarter of them kept for
    /// [`Class::Priority`].
    #[must_use]
    pub fn new(max_in_flight: usize) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let kept = max_in_flight / 4;
        Self {
            shared: Arc::new(Semaphore::new(max_in_flight - kept)),
            kept: Arc::new(Semaphore::new(kept)),
            max_in_flight,
        }
    }

    /// The bound on requests in flight.
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// A place for a request of `class`, held until the handler has answered (`None` for
    /// [`Class::Exempt`]).
    ///
    /// # Errors
    /// [`ApiError::Overloaded`] when the class finds no place.
    pub async fn admit(&self, class: Class) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        match class {
            Class::Exempt => Ok(None),
            Class::Normal => {
                Arc::clone(&self.shared).try_acquire_owned().map(Some).map_err(|_| ApiError::Overloaded)
            }
            Class::Priority => {
                if let Ok(place) = Arc::clone(&self.shared).try_acquire_owned() {
                    return Ok(Some(place));
                }
                let wait = Duration::from_millis(PRIORITY_WAIT_MS);
                let either = async {
                    tokio::select! {
                        place = Arc::clone(&self.kept).acquire_owned() => place,
                        place = Arc::clone(&self.shared).acquire_owned() => place,
                    }
                };
                match tokio::time::timeout(wait, either).await {
                    Ok(Ok(place)) => Ok(Some(place)),
                    Ok(Err(_)) | Err(_) => Err(ApiError::Overloaded),
                }
            }
        }
    }
}

impl Default for Shedder {
    fn default() -> Self {
        Self::new(IN_FLIGHT_MAX_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn buyers_finishing_a_purchase_are_priority_and_operations_are_never_shed() {
        assert_eq!(Class::of(&Method::POST, "/api/v1/payments", true), Class::Priority);
        assert_eq!(Class::of(&Method::POST, "/api/v1/balance/charges", true), Class::Priority);
        assert_eq!(Class::of(&Method::GET, "/api/v1/balance", true), Class::Priority);
        assert_eq!(
            Class::of(&Method::DELETE, "/api/v1/reservations/{reservation_id}", true),
            Class::Priority
        );
        assert_eq!(Class::of(&Method::GET, "/api/v1/reservations/{reservation_id}", true), Class::Priority);
        assert_eq!(
            Class::of(&Method::POST, "/api/v1/payments", false),
            Class::Normal,
            "no token, no priority"
        );
        assert_eq!(
            Class::of(&Method::GET, "/api/v1/payments", true),
            Class::Normal,
            "a 405 is not a payment"
        );
        assert_eq!(Class::of(&Method::POST, "/api/v1/reservations", true), Class::Normal);
        assert_eq!(Class::of(&Method::GET, "/api/v1/queue/tokens/current", true), Class::Normal);
        assert_eq!(Class::of(&Method::GET, "/api/v1/schedules/{schedule_id}/seats", true), Class::Normal);
        assert_eq!(Class::of(&Method::GET, "/readyz", false), Class::Exempt);
        assert_eq!(Class::of(&Method::GET, "/healthz", false), Class::Exempt);
        assert_eq!(Class::of(&Method::GET, UNMATCHED, false), Class::Exempt, "a wrong URL is a 404");
    }

    #[tokio::test]
    async fn normal_requests_leave_a_quarter_of_the_places_to_priority_ones() {
        let shedder = Shedder::new(4);
        let first = shedder.admit(Class::Normal).await.unwrap();
        let second = shedder.admit(Class::Normal).await.unwrap();
        let third = shedder.admit(Class::Normal).await.unwrap();
        assert!(matches!(shedder.admit(Class::Normal).await, Err(ApiError::Overloaded)), "the kept place");
        let priority = shedder.admit(Class::Priority).await.unwrap();
        assert!(priority.is_some(), "a payment takes the kept place");
        assert!(matches!(shedder.admit(Class::Priority).await, Err(ApiError::Overloaded)), "none left");
        assert!(shedder.admit(Class::Exempt).await.unwrap().is_none(), "readiness is never shed");
        drop((first, second));
        assert!(shedder.admit(Class::Normal).await.is_ok(), "places come back when answers are written");
        drop((third, priority));
    }
}
