//! The catalog: concerts, their schedules (performance dates) and seats, and the pure validation
//! that turns a request for a new concert into records.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{ConcertId, Fence, Points, ReservationId, ScheduleId, SeatId, UserId};
use crate::limits::{
    ACTIVE_TTL_SECS_DEFAULT, ADMIT_BATCH_DEFAULT, ADMIT_BATCH_LIMIT, ADMIT_INTERVAL_MS_DEFAULT,
    ADMIT_INTERVAL_MS_MIN, DURATION_SECS_MAX, MAX_ACTIVE_DEFAULT, MAX_ACTIVE_LIMIT, PRICE_MAX_POINTS,
    SCHEDULES_PER_CONCERT_MAX, SEATS_PER_SCHEDULE_MAX, STARTS_AT_YEAR_MAX, STARTS_AT_YEAR_MIN, TITLE_MAX_LEN,
    WAITING_IDLE_SECS_DEFAULT,
};

/// How a concert's waiting room admits buyers. Both caps apply at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    /// At most this many ACTIVE tokens at once (capacity mode).
    pub max_active: u32,
    /// At most this many admitted per `admit_interval_ms` (the "n users every tick" mode).
    pub admit_batch: u32,
    /// The admission interval in milliseconds.
    pub admit_interval_ms: u64,
    /// A waiting token not polled for this long loses its place.
    pub waiting_idle_secs: u64,
    /// An admitted token expires this long after admission.
    pub active_ttl_secs: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_active: MAX_ACTIVE_DEFAULT,
            admit_batch: ADMIT_BATCH_DEFAULT,
            admit_interval_ms: ADMIT_INTERVAL_MS_DEFAULT,
            waiting_idle_secs: WAITING_IDLE_SECS_DEFAULT,
            active_ttl_secs: ACTIVE_TTL_SECS_DEFAULT,
        }
    }
}

impl QueueSettings {
    /// Checks every field against its bound.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), DomainError> {
        let invalid = |reason: String| Err(DomainError::InvalidInput { reason });
        if !(1..=MAX_ACTIVE_LIMIT).contains(&self.max_active) {
            return invalid(format!("maxActive must be 1 to {MAX_ACTIVE_LIMIT}"));
        }
        if !(1..=ADMIT_BATCH_LIMIT).contains(&self.admit_batch) {
            return invalid(format!("admitBatch must be 1 to {ADMIT_BATCH_LIMIT}"));
        }
        if !(ADMIT_INTERVAL_MS_MIN..=DURATION_SECS_MAX * 1_000).contains(&self.admit_interval_ms) {
            return invalid(format!(
                "admitIntervalMs must be {ADMIT_INTERVAL_MS_MIN} to {}",
                DURATION_SECS_MAX * 1_000
            ));
        }
        if !(1..=DURATION_SECS_MAX).contains(&self.waiting_idle_secs) {
            return invalid(format!("waitingIdleSecs must be 1 to {DURATION_SECS_MAX}"));
        }
        if !(1..=DURATION_SECS_MAX).contains(&self.active_ttl_secs) {
            return invalid(format!("activeTtlSecs must be 1 to {DURATION_SECS_MAX}"));
        }
        Ok(())
    }

    /// The admission interval as a duration.
    #[must_use]
    pub fn admit_interval(&self) -> Duration {
        Duration::milliseconds(i64::try_from(self.admit_interval_ms).unwrap_or(i64::MAX))
    }

    /// The idle timeout of waiting tokens as a duration.
    #[must_use]
    pub fn waiting_idle(&self) -> Duration {
        secs(self.waiting_idle_secs)
    }

    /// The active time of admitted tokens as a duration.
    #[must_use]
    pub fn active_ttl(&self) -> Duration {
        secs(self.active_ttl_secs)
    }
}

/// Whole seconds as a duration, saturating far beyond any configurable bound.
pub(crate) fn secs(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX / 1_000_000))
}

/// A concert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Concert {
    /// Its id.
    pub id: ConcertId,
    /// Its title.
    pub title: String,
    /// How its waiting room admits buyers.
    pub queue: QueueSettings,
}

/// One performance date of a concert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Its id.
    pub id: ScheduleId,
    /// The concert it belongs to.
    pub concert_id: ConcertId,
    /// When the performance starts.
    pub starts_at: DateTime<Utc>,
}

/// The fixed facts about one seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seat {
    /// Its id.
    pub id: SeatId,
    /// The schedule it belongs to.
    pub schedule_id: ScheduleId,
    /// The concert it belongs to.
    pub concert_id: ConcertId,
    /// Its number within the schedule, from 1.
    pub number: u32,
    /// Its price.
    pub price: Points,
}

/// The stored state of a seat. Whether a hold is still live depends on `now`: see
/// [`SeatRecord::status_at`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatState {
    /// Nobody holds it.
    Available,
    /// Held by one reservation until `expires_at`.
    Held {
        /// The reservation holding it.
        reservation: ReservationId,
        /// Who holds it.
        user: UserId,
        /// When the hold lapses.
        expires_at: DateTime<Utc>,
    },
    /// Paid for. Final.
    Booked {
        /// The confirmed reservation.
        reservation: ReservationId,
    },
}

/// What a buyer sees of a seat at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatus {
    /// Can be held.
    Available,
    /// Held by a live hold.
    Held,
    /// Sold.
    Booked,
}

/// A seat with its current state and fence, as a store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatRecord {
    /// The fixed facts.
    pub seat: Seat,
    /// The stored state.
    pub state: SeatState,
    /// Raised by every change of `state`.
    pub fence: Fence,
}

impl SeatRecord {
    /// The seat's status at `now`: a hold past its deadline counts as available whether or not a
    /// sweeper has tidied it yet.
    #[must_use]
    pub fn status_at(&self, now: DateTime<Utc>) -> SeatStatus {
        Occupancy::status_at(self.state.occupancy(), now)
    }
}

impl SeatState {
    /// What a seat list needs of this state: nothing when the seat is AVAILABLE.
    #[must_use]
    pub fn occupancy(&self) -> Option<Occupancy> {
        match self {
            Self::Available => None,
            Self::Held { expires_at, .. } => Some(Occupancy::Held { expires_at: *expires_at }),
            Self::Booked { .. } => Some(Occupancy::Booked),
        }
    }
}

/// What a seat list needs of a seat's stored state, when the seat is not AVAILABLE: held until
/// when, or booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// Held until `expires_at`.
    Held {
        /// When the hold lapses.
        expires_at: DateTime<Utc>,
    },
    /// Paid for.
    Booked,
}

impl Occupancy {
    /// The status at `now` of a seat with this occupancy (`None`: stored AVAILABLE). A hold past
    /// its deadline counts as available whether or not a sweeper has tidied it yet.
    #[must_use]
    pub fn status_at(occupancy: Option<Self>, now: DateTime<Utc>) -> SeatStatus {
        match occupancy {
            None => SeatStatus::Available,
            Some(Self::Held { expires_at }) if expires_at <= now => SeatStatus::Available,
            Some(Self::Held { .. }) => SeatStatus::Held,
            Some(Self::Booked) => SeatStatus::Booked,
        }
    }
}

/// A seat of a schedule that is not AVAILABLE as stored, by its number
/// ([`crate::store::CatalogStore::occupied_seats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OccupiedSeat {
    /// The seat's number within its schedule.
    pub number: u32,
    /// Held until when, or booked.
    pub occupancy: Occupancy,
}

impl OccupiedSeat {
    /// `record` as an occupied seat, unless it is stored AVAILABLE.
    #[must_use]
    pub fn of(record: &SeatRecord) -> Option<Self> {
        record.state.occupancy().map(|occupancy| Self { number: record.seat.number, occupancy })
    }
}

/// A schedule's seats with their status at one instant, as a seat list shows them: the seats
/// themselves (which never change once created, so a process keeps them) and each one's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatList {
    /// The schedule's seats by number.
    pub seats: std::sync::Arc<[Seat]>,
    /// The status of `seats[i]` at the instant of the list.
    pub statuses: Vec<SeatStatus>,
}

impl SeatList {
    /// `seats` at `now`, given those of them not AVAILABLE as stored (in any order; a number
    /// that names no seat of the list is ignored).
    #[must_use]
    pub fn at(seats: std::sync::Arc<[Seat]>, occupied: &[OccupiedSeat], now: DateTime<Utc>) -> Self {
        let mut statuses = vec![SeatStatus::Available; seats.len()];
        for o in occupied {
            // Seats are numbered 1..=n in order (`plan_concert`); look the number up in case a
            // store's list has gaps.
            let index = usize::try_from(o.number).ok().and_then(|n| n.checked_sub(1));
            let index = match index {
                Some(i) if seats.get(i).is_some_and(|s| s.number == o.number) => Some(i),
                _ => seats.iter().position(|s| s.number == o.number),
            };
            if let Some(i) = index {
                statuses[i] = Occupancy::status_at(Some(o.occupancy), now);
            }
        }
        Self { seats, statuses }
    }

    /// Each seat with its status, by number.
    pub fn iter(&self) -> impl Iterator<Item = (&Seat, SeatStatus)> {
        self.seats.iter().zip(self.statuses.iter().copied())
    }

    /// The `index`th seat (by number, from 0) with its status.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<(&Seat, SeatStatus)> {
        Some((self.seats.get(index)?, *self.statuses.get(index)?))
    }

    /// How many seats the list has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seats.len()
    }

    /// Whether the list has no seat.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }
}

/// A schedule with its number of seats available at the time it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleAvailability {
    /// The schedule.
    pub schedule: Schedule,
    /// Seats that could be held right now.
    pub available_seats: u32,
}

/// A request to create a concert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewConcert {
    /// Its title.
    pub title: String,
    /// Its performance dates.
    pub schedules: Vec<NewSchedule>,
    /// How its waiting room admits buyers.
    #[serde(default)]
    pub queue: QueueSettings,
}

/// One performance date in a [`NewConcert`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSchedule {
    /// When the performance starts.
    pub starts_at: DateTime<Utc>,
    /// How many seats it has, numbered from 1.
    pub seat_count: u32,
    /// The price of each seat.
    pub price: Points,
}

/// Everything a store writes to create one concert, in one atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcertPlan {
    /// The concert.
    pub concert: Concert,
    /// Its schedules.
    pub schedules: Vec<Schedule>,
    /// Every seat of every schedule, all available with the initial fence.
    pub seats: Vec<Seat>,
}

/// Validates a new concert and lays out its records.
///
/// # Errors
/// [`DomainError::InvalidInput`] for an empty or over-long title, no schedules or too many, a
/// schedule without seats or with too many, a price of zero or above `PRICE_MAX_POINTS`, a start
/// outside the years `STARTS_AT_YEAR_MIN` to `STARTS_AT_YEAR_MAX`, or queue settings out of
/// range.
pub fn plan_concert(request: &NewConcert) -> Result<ConcertPlan, DomainError> {
    let invalid = |reason: String| Err(DomainError::InvalidInput { reason });
    let title = request.title.trim();
    if title.is_empty() || title.chars().count() > TITLE_MAX_LEN {
        return invalid(format!("title must be 1 to {TITLE_MAX_LEN} characters"));
    }
    if request.schedules.is_empty() || request.schedules.len() > SCHEDULES_PER_CONCERT_MAX {
        return invalid(format!("a concert needs 1 to {SCHEDULES_PER_CONCERT_MAX} schedules"));
    }
    request.queue.validate()?;
    let concert = Concert { id: ConcertId::random(), title: title.to_owned(), queue: request.queue };
    let mut schedules = Vec::with_capacity(request.schedules.len());
    let mut seats = Vec::new();
    for new in &request.schedules {
        if !(1..=SEATS_PER_SCHEDULE_MAX).contains(&new.seat_count) {
            return invalid(format!("seatCount must be 1 to {SEATS_PER_SCHEDULE_MAX}"));
        }
        if new.price.get() < 1 || new.price.get() > PRICE_MAX_POINTS {
            return invalid(format!("price must be 1 to {PRICE_MAX_POINTS} points"));
        }
        // In UTC, a day either side of the years allowed in the schedule's own time zone.
        if !(STARTS_AT_YEAR_MIN - 1..=STARTS_AT_YEAR_MAX + 1).contains(&new.starts_at.year()) {
            return invalid(format!(
                "startsAt must be in the years {STARTS_AT_YEAR_MIN} to {STARTS_AT_YEAR_MAX}"
            ));
        }
        let schedule =
            Schedule { id: ScheduleId::random(), concert_id: concert.id, starts_at: new.starts_at };
        seats.extend((1..=new.seat_count).map(|number| Seat {
            id: SeatId::random(),
            schedule_id: schedule.id,
            concert_id: concert.id,
            number,
            price: new.price,
        }));
        schedules.push(schedule);
    }
    Ok(ConcertPlan { concert, schedules, seats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NewConcert {
        NewConcert {
            title: "Aurora".into(),
            schedules: vec![NewSchedule {
                starts_at: DateTime::from_timestamp(1_900_000_000, 0).expect("valid"),
                seat_count: 3,
                price: Points::new(100).expect("valid"),
            }],
            queue: QueueSettings::default(),
        }
    }

    #[test]
    fn a_valid_concert_lays_out_numbered_seats() {
        let plan = plan_concert(&request()).expect("valid");
        assert_eq!(plan.schedules.len(), 1);
        let numbers: Vec<u32> = plan.seats.iter().map(|s| s.number).collect();
        assert_eq!(numbers, vec![1, 2, 3]);
        assert!(plan.seats.iter().all(|s| s.concert_id == plan.concert.id));
    }

    #[test]
    fn invalid_concerts_are_refused() {
        let mut no_title = request();
        no_title.title = "  ".into();
        let mut no_seats = request();
        no_seats.schedules[0].seat_count = 0;
        let mut free = request();
        free.schedules[0].price = Points::ZERO;
        let mut no_schedules = request();
        no_schedules.schedules.clear();
        let mut bad_queue = request();
        bad_queue.queue.max_active = 0;
        let mut medieval = request();
        medieval.schedules[0].starts_at = "0618-08-13T22:59:14Z".parse().expect("valid");
        let mut far = request();
        far.schedules[0].starts_at = "9001-01-02T00:00:00Z".parse().expect("valid");
        for bad in [no_title, no_seats, free, no_schedules, bad_queue, medieval, far] {
            assert!(matches!(plan_concert(&bad), Err(DomainError::InvalidInput { .. })), "{bad:?}");
        }
    }

    #[test]
    fn an_expired_hold_reads_as_available() {
        let now = DateTime::from_timestamp(1_000, 0).expect("valid");
        let plan = plan_concert(&request()).expect("valid");
        let mut record = SeatRecord {
            seat: plan.seats[0].clone(),
            state: SeatState::Held {
                reservation: ReservationId::random(),
                user: UserId::parse("u").expect("valid"),
                expires_at: now,
            },
            fence: Fence::INITIAL,
        };
        assert_eq!(record.status_at(now), SeatStatus::Available);
        assert_eq!(record.status_at(now - Duration::milliseconds(1)), SeatStatus::Held);
        record.state = SeatState::Booked { reservation: ReservationId::random() };
        assert_eq!(record.status_at(now), SeatStatus::Booked);
    }
}
