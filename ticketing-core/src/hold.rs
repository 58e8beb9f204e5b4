//! The seat-hold (reservation) state machine. Pure: no I/O, `now` passed in.
//!
//! Seat: AVAILABLE -> HELD -> BOOKED on payment; HELD -> AVAILABLE on expiry or release.
//! Reservation: HELD -> CONFIRMED | EXPIRED | RELEASED.
//!
//! Every change of a seat raises its [`Fence`]. A reservation remembers the fence its hold was
//! granted with, and every plan here names the fence it expects the seat to have; stores write
//! only if the seat still has it. So a holder whose hold lapsed and was taken over by someone
//! else can never confirm or release the new holder's hold.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{SeatRecord, SeatState, SeatStatus};
use crate::error::DomainError;
use crate::ids::{ConcertId, Fence, Points, QueueToken, ReservationId, ScheduleId, SeatId, UserId};

/// The stored status of a reservation; see [`Reservation::status_at`] for what it is at a given
/// instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// The seat is held for the user until `expires_at`.
    Held,
    /// Paid; the seat is booked.
    Confirmed,
    /// The hold lapsed.
    Expired,
    /// The user let the seat go.
    Released,
    /// Paid, then cancelled and refunded: the seat is sellable again.
    Cancelled,
}

/// One hold of one seat by one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Its id.
    pub id: ReservationId,
    /// Who holds the seat.
    pub user_id: UserId,
    /// The queue token it was made with (open holds are counted per token).
    pub token: QueueToken,
    /// The seat.
    pub seat_id: SeatId,
    /// The seat's schedule.
    pub schedule_id: ScheduleId,
    /// The seat's concert.
    pub concert_id: ConcertId,
    /// The seat's price when the hold was granted.
    pub price: Points,
    /// The seat's fence when the hold was granted.
    pub fence: Fence,
    /// The stored status.
    pub status: ReservationStatus,
    /// When the hold was granted.
    pub held_at: DateTime<Utc>,
    /// When the hold lapses unless paid.
    pub expires_at: DateTime<Utc>,
}

impl Reservation {
    /// The status at `now`: a held reservation past its deadline is expired whether or not a
    /// sweeper has tidied it.
    #[must_use]
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        match self.status {
            ReservationStatus::Held if self.expires_at <= now => ReservationStatus::Expired,
            status => status,
        }
    }

    /// Whether the reservation counts against its token's hold limit at `now`.
    #[must_use]
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status_at(now), ReservationStatus::Held | ReservationStatus::Confirmed)
    }
}

/// Who asks for a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The user.
    pub user_id: UserId,
    /// The user's active queue token.
    pub token: QueueToken,
}

/// A hold to write: the seat goes from `expected_fence` to `reservation.fence` and becomes held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldPlan {
    /// The new reservation.
    pub reservation: Reservation,
    /// The seat's fence as read; the store writes only if it is unchanged.
    pub expected_fence: Fence,
    /// The seat's new state.
    pub seat_state: SeatState,
    /// A lapsed hold this one takes over; the store marks it EXPIRED in the same step.
    pub supersedes: Option<ReservationId>,
    /// The token may have at most this many open holds, counting this one.
    pub holds_per_token: u32,
    /// The instant of the hold (what "open" means for the limit is decided at it).
    pub now: DateTime<Utc>,
}

/// Decides a hold of `seat` for `holder`, lasting the whole `hold_ttl` whenever the holder's
/// token's active time ends: the hold itself is what entitles its token to pay it (see
/// [`crate::payment::require_payer`]), so the buyer keeps the five minutes the design promises.
///
/// # Errors
/// [`DomainError::SeatUnavailable`] when the seat is held by a live hold or booked.
pub fn plan_hold(
    seat: &SeatRecord,
    holder: Holder,
    reservation_id: ReservationId,
    hold_ttl: Duration,
    holds_per_token: u32,
    now: DateTime<Utc>,
) -> Result<HoldPlan, DomainError> {
    if seat.status_at(now) != SeatStatus::Available {
        return Err(DomainError::SeatUnavailable);
    }
    let supersedes = match &seat.state {
        SeatState::Held { reservation, .. } => Some(*reservation),
        SeatState::Available | SeatState::Booked { .. } => None,
    };
    let expires_at = now + hold_ttl;
    let reservation = Reservation {
        id: reservation_id,
        user_id: holder.user_id.clone(),
        token: holder.token,
        seat_id: seat.seat.id,
        schedule_id: seat.seat.schedule_id,
        concert_id: seat.seat.concert_id,
        price: seat.seat.price,
        fence: seat.fence.next(),
        status: ReservationStatus::Held,
        held_at: now,
        expires_at,
    };
    Ok(HoldPlan {
        seat_state: SeatState::Held { reservation: reservation_id, user: holder.user_id, expires_at },
        reservation,
        expected_fence: seat.fence,
        supersedes,
        holds_per_token,
        now,
    })
}

/// A release to write: the seat goes from `expected_fence` to the next fence and becomes
/// available; the reservation becomes RELEASED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePlan {
    /// The reservation being released.
    pub reservation_id: ReservationId,
    /// The seat.
    pub seat_id: SeatId,
    /// The fence the hold was granted with; the seat must still have it.
    pub expected_fence: Fence,
    /// When it was released.
    pub now: DateTime<Utc>,
}

/// What releasing a reservation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Free the seat.
    Write(ReleasePlan),
    /// The hold is already over (released before, or lapsed): nothing to write, and the caller
    /// gets success, so a retried release is harmless.
    AlreadyOver,
}

/// Decides a release of `reservation` by `user_id`; `seat` is the reservation's seat as read.
///
/// # Errors
/// [`DomainError::NotOwner`] for someone else's reservation, [`DomainError::AlreadyPaid`] for a
/// confirmed one.
pub fn plan_release(
    reservation: &Reservation,
    seat: &SeatRecord,
    user_id: &UserId,
    now: DateTime<Utc>,
) -> Result<Release, DomainError> {
    if &reservation.user_id != user_id {
        return Err(DomainError::NotOwner);
    }
    if booked_by(seat, reservation) {
        return Err(DomainError::AlreadyPaid);
    }
    match reservation.status_at(now) {
        ReservationStatus::Confirmed => Err(DomainError::AlreadyPaid),
        ReservationStatus::Released | ReservationStatus::Expired | ReservationStatus::Cancelled => {
            Ok(Release::AlreadyOver)
        }
        ReservationStatus::Held if seat.fence != reservation.fence => Ok(Release::AlreadyOver),
        ReservationStatus::Held => Ok(Release::Write(ReleasePlan {
            reservation_id: reservation.id,
            seat_id: reservation.seat_id,
            expected_fence: reservation.fence,
            now,
        })),
    }
}

/// Checks that `reservation` is one a token of `user_id` for `concert_id` may act on: its
/// user's own, of its own concert (a token acts only for its own concert, on every route).
///
/// # Errors
/// [`DomainError::NotOwner`], [`DomainError::WrongConcert`].
pub fn require_own(
    reservation: &Reservation,
    user_id: &UserId,
    concert_id: ConcertId,
) -> Result<(), DomainError> {
    if &reservation.user_id != user_id {
        return Err(DomainError::NotOwner);
    }
    if reservation.concert_id != concert_id {
        return Err(DomainError::WrongConcert);
    }
    Ok(())
}

/// Whether `seat` is booked by `reservation`. A reservation read just before a concurrent
/// payment of it committed still says HELD while the seat, read just after, says BOOKED by it:
/// the truth is "already paid", not "expired" (which the moved fence alone would suggest).
fn booked_by(seat: &SeatRecord, reservation: &Reservation) -> bool {
    matches!(&seat.state, SeatState::Booked { reservation: r } if *r == reservation.id)
}

/// Checks that `reservation` is a live hold of `user_id` on `seat` at `now`, as paying requires.
///
/// # Errors
/// [`DomainError::NotOwner`], [`DomainError::AlreadyPaid`], [`DomainError::HoldReleased`], or
/// [`DomainError::HoldExpired`] when the deadline passed or the seat's fence has moved on.
pub fn require_live_hold(
    reservation: &Reservation,
    seat: &SeatRecord,
    user_id: &UserId,
    now: DateTime<Utc>,
) -> Result<(), DomainError> {
    if &reservation.user_id != user_id {
        return Err(DomainError::NotOwner);
    }
    if booked_by(seat, reservation) {
        return Err(DomainError::AlreadyPaid);
    }
    match reservation.status_at(now) {
        ReservationStatus::Confirmed => Err(DomainError::AlreadyPaid),
        ReservationStatus::Released => Err(DomainError::HoldReleased),
        ReservationStatus::Cancelled => Err(DomainError::AlreadyCancelled),
        ReservationStatus::Expired => Err(DomainError::HoldExpired),
        ReservationStatus::Held if seat.fence != reservation.fence => Err(DomainError::HoldExpired),
        ReservationStatus::Held => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Seat;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(2_000_000 + secs, 0).expect("valid")
    }

    fn alice() -> Holder {
        Holder {
            user_id: UserId::parse("alice").expect("valid"),
            token: QueueToken::generate(ConcertId::random()),
        }
    }

    fn seat(state: SeatState, fence: u64) -> SeatRecord {
        SeatRecord {
            seat: Seat {
                id: SeatId::random(),
                schedule_id: ScheduleId::random(),
                concert_id: ConcertId::random(),
                number: 1,
                price: Points::new(500).expect("valid"),
            },
            state,
            fence: Fence::new(fence),
        }
    }

    fn held_by(reservation: &Reservation) -> SeatState {
        SeatState::Held {
            reservation: reservation.id,
            user: reservation.user_id.clone(),
            expires_at: reservation.expires_at,
        }
    }

    fn hold(seat: &SeatRecord, now: DateTime<Utc>) -> Result<HoldPlan, DomainError> {
        plan_hold(seat, alice(), ReservationId::random(), Duration::seconds(300), 1, now)
    }

    #[test]
    fn a_hold_lasts_its_whole_time() {
        let plan = plan_hold(
            &seat(SeatState::Available, 0),
            alice(),
            ReservationId::random(),
            Duration::seconds(300),
            1,
            t(60),
        )
        .expect("available");
        assert_eq!(plan.reservation.expires_at, t(360));
        assert_eq!(
            plan.seat_state,
            SeatState::Held { reservation: plan.reservation.id, user: alice().user_id, expires_at: t(360) }
        );
    }

    #[test]
    fn an_available_seat_can_be_held_with_the_next_fence() {
        let available = seat(SeatState::Available, 4);
        let plan = hold(&available, t(0)).expect("available");
        assert_eq!(plan.expected_fence, Fence::new(4));
        assert_eq!(plan.reservation.fence, Fence::new(5));
        assert_eq!(plan.reservation.status, ReservationStatus::Held);
        assert_eq!(plan.reservation.expires_at, t(300));
        assert_eq!(plan.reservation.price, available.seat.price);
        assert_eq!(plan.supersedes, None);
    }

    #[test]
    fn a_live_hold_or_a_booking_makes_the_seat_unavailable() {
        let live = seat(
            SeatState::Held {
                reservation: ReservationId::random(),
                user: alice().user_id,
                expires_at: t(10),
            },
            1,
        );
        assert_eq!(hold(&live, t(9)), Err(DomainError::SeatUnavailable));
        let booked = seat(SeatState::Booked { reservation: ReservationId::random() }, 2);
        assert_eq!(hold(&booked, t(9)), Err(DomainError::SeatUnavailable));
    }

    #[test]
    fn a_lapsed_hold_is_taken_over_and_superseded() {
        let previous = ReservationId::random();
        let lapsed =
            seat(SeatState::Held { reservation: previous, user: alice().user_id, expires_at: t(10) }, 1);
        let plan = hold(&lapsed, t(10)).expect("lapsed at its deadline");
        assert_eq!(plan.supersedes, Some(previous));
        assert_eq!(plan.reservation.fence, Fence::new(2));
    }

    #[test]
    fn the_owner_releases_a_live_hold() {
        let plan = hold(&seat(SeatState::Available, 0), t(0)).expect("available");
        let held = seat(held_by(&plan.reservation), 1);
        let release = plan_release(&plan.reservation, &held, &plan.reservation.user_id, t(5));
        assert_eq!(
            release,
            Ok(Release::Write(ReleasePlan {
                reservation_id: plan.reservation.id,
                seat_id: plan.reservation.seat_id,
                expected_fence: Fence::new(1),
                now: t(5),
            }))
        );
    }

    #[test]
    fn release_refuses_strangers_and_paid_reservations_and_ignores_finished_ones() {
        let plan = hold(&seat(SeatState::Available, 0), t(0)).expect("available");
        let held = seat(held_by(&plan.reservation), 1);
        let bob = UserId::parse("bob").expect("valid");
        assert_eq!(plan_release(&plan.reservation, &held, &bob, t(1)), Err(DomainError::NotOwner));
        let owner = plan.reservation.user_id.clone();
        let mut confirmed = plan.reservation.clone();
        confirmed.status = ReservationStatus::Confirmed;
        assert_eq!(plan_release(&confirmed, &held, &owner, t(1)), Err(DomainError::AlreadyPaid));
        let mut released = plan.reservation.clone();
        released.status = ReservationStatus::Released;
        assert_eq!(plan_release(&released, &held, &owner, t(1)), Ok(Release::AlreadyOver));
        assert_eq!(plan_release(&plan.reservation, &held, &owner, t(300)), Ok(Release::AlreadyOver));
        let taken_over = seat(SeatState::Available, 3);
        assert_eq!(plan_release(&plan.reservation, &taken_over, &owner, t(1)), Ok(Release::AlreadyOver));
    }

    #[test]
    fn only_a_live_hold_of_the_payer_may_be_paid() {
        let plan = hold(&seat(SeatState::Available, 0), t(0)).expect("available");
        let r = &plan.reservation;
        let owner = r.user_id.clone();
        let held = seat(held_by(r), 1);
        assert_eq!(require_live_hold(r, &held, &owner, t(299)), Ok(()));
        assert_eq!(require_live_hold(r, &held, &owner, t(300)), Err(DomainError::HoldExpired));
        let bob = UserId::parse("bob").expect("valid");
        assert_eq!(require_live_hold(r, &held, &bob, t(1)), Err(DomainError::NotOwner));
        let stale = seat(SeatState::Available, 2);
        assert_eq!(require_live_hold(r, &stale, &owner, t(1)), Err(DomainError::HoldExpired));
        for (status, error) in [
            (ReservationStatus::Confirmed, DomainError::AlreadyPaid),
            (ReservationStatus::Released, DomainError::HoldReleased),
            (ReservationStatus::Expired, DomainError::HoldExpired),
        ] {
            let mut other = r.clone();
            other.status = status;
            assert_eq!(require_live_hold(&other, &held, &owner, t(1)), Err(error));
        }
    }

    #[test]
    fn a_stale_read_of_a_hold_paid_meanwhile_is_already_paid_not_expired() {
        let plan = hold(&seat(SeatState::Available, 0), t(0)).expect("available");
        let r = &plan.reservation;
        let booked = seat(SeatState::Booked { reservation: r.id }, 2);
        assert_eq!(require_live_hold(r, &booked, &r.user_id, t(1)), Err(DomainError::AlreadyPaid));
        assert_eq!(plan_release(r, &booked, &r.user_id, t(1)), Err(DomainError::AlreadyPaid));
        let booked_by_another = seat(SeatState::Booked { reservation: ReservationId::random() }, 2);
        assert_eq!(require_live_hold(r, &booked_by_another, &r.user_id, t(1)), Err(DomainError::HoldExpired));
    }

    #[test]
    fn open_means_held_and_live_or_confirmed() {
        let plan = hold(&seat(SeatState::Available, 0), t(0)).expect("available");
        let mut r = plan.reservation;
        assert!(r.is_open_at(t(1)));
        assert!(!r.is_open_at(t(300)));
        r.status = ReservationStatus::Confirmed;
        assert!(r.is_open_at(t(1_000)));
        r.status = ReservationStatus::Released;
        assert!(!r.is_open_at(t(1)));
    }
}
