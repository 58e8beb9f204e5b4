//! The catalog: concerts, their schedules (performance dates) and seats, and the pure validation
//! that turns a request for a new concert into records.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{ConcertId, Fence, Points, ReservationId, ScheduleId, SeatId, UserId};
use crate::limits::{
    ACTIVE_TTL_SECS_DEFAULT, ADMIT_BATCH_DEFAULT, ADMIT_BATCH_LIMIT, ADMIT_INTERVAL_MS_DEFAULT,
    ADMIT_INTERVAL_MS_MIN, CANCEL_UNTIL_SECS_MAX, DURATION_SECS_MAX, HOLDS_PER_TOKEN_MAX, MAX_ACTIVE_DEFAULT,
    MAX_ACTIVE_LIMIT, MAX_SEATS_PER_BUYER_LIMIT, PRICE_MAX_POINTS, SCHEDULES_PER_CONCERT_MAX,
    SEAT_STATES_WHOLE_READ_SECS, SEATS_PER_SCHEDULE_MAX, STARTS_AT_YEAR_MAX, STARTS_AT_YEAR_MIN,
    TITLE_MAX_LEN, WAITING_IDLE_SECS_DEFAULT,
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
    /// Whether an operator paused admission (the line keeps its places; nobody is admitted).
    pub paused: bool,
    /// The version of its settings: 0 at creation, one more with every operator change, which
    /// names the version it was decided from (see [`plan_sale_change`]).
    pub version: u64,
    /// The most seats one user may buy of this concert, across tokens and retries (`None`: no
    /// cap beyond the holds a token may have). Set at creation.
    #[serde(default)]
    pub max_seats_per_buyer: Option<u32>,
    /// How many open holds (held or paid) one of its tokens may have, so a buyer can hold
    /// seats for family and friends and pay them in one payment (`None`: the deployment's
    /// [`Config::holds_per_token`](crate::Config::holds_per_token)); never more than
    /// `max_seats_per_buyer` (nobody holds seats they may not buy). Set at creation.
    #[serde(default)]
    pub holds_per_token: Option<u32>,
    /// Until how long before a performance its buyers may cancel a booking of it and get their
    /// points back (`None`: buyers may not cancel; an operator always may). Set at creation.
    #[serde(default)]
    pub cancel_until_secs_before_start: Option<u64>,
    /// When its sale opens (`None`: at once). Buyers may join before: they wait in a pre-queue
    /// and nobody is admitted until the opening is recorded ([`Concert::opened`]). Set at creation.
    #[serde(default)]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// How the pre-queue is ordered at the opening.
    #[serde(default)]
    pub pre_queue: PreQueue,
    /// The opening, once the booking store recorded it: from then on the line may be admitted
    /// from. `None` before the opening, and always for a concert without `sales_open_at`.
    #[serde(default)]
    pub opened: Option<Opening>,
}

impl Concert {
    /// Whether this concert's sale waits for an opening that has not been recorded yet.
    #[must_use]
    pub fn before_opening(&self) -> bool {
        self.sales_open_at.is_some() && self.opened.is_none()
    }
}

/// How a concert's pre-queue (the buyers who joined before its sale opened) is ordered at the
/// opening. Everyone who joins after the opening is behind the whole pre-queue, first come first
/// served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreQueue {
    /// Drawn once at the opening: every place of the pre-queue is given by the opening's seed
    /// ([`crate::queue::draw_pre_queue`]), so joining early is no advantage over joining on time.
    #[default]
    Random,
    /// First come, first served, as after the opening.
    Fifo,
}

impl PreQueue {
    /// Its name: `random` or `fifo`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Fifo => "fifo",
        }
    }

    /// The pre-queue order of this name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Random, Self::Fifo].into_iter().find(|order| order.as_str() == name)
    }
}

/// A concert's recorded opening: when, and the seed of the pre-queue's draw. Recorded once, by
/// the booking store's decision that its own clock has reached `sales_open_at`
/// ([`crate::store::CatalogStore::change_sale`]), with an entry in the concert's audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Opening {
    /// When the opening was recorded.
    pub at: DateTime<Utc>,
    /// The seed of the pre-queue's draw: below 2^53, so that every JSON reader keeps it exact.
    pub seed: u64,
}

/// The largest opening seed plus one: seeds are below 2^53 (exact in any JSON number).
pub const OPENING_SEED_BOUND: u64 = 1 << 53;

/// What a concert's seats add up to at an instant, for operators: how many there are, how many
/// are held (holds not lapsed) and sold, and what the sold ones brought in (the sum of their
/// prices, in points).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatTally {
    /// Seats in all of the concert's schedules.
    pub seats: u64,
    /// Held, by holds that have not lapsed.
    pub held: u64,
    /// Sold (booked).
    pub sold: u64,
    /// The prices of the sold seats, summed.
    pub revenue: i64,
}

impl SeatTally {
    /// Whether no seat can become available again: every seat sold (none held, none free). Only
    /// a refund could bring one back.
    #[must_use]
    pub fn sold_out(&self) -> bool {
        self.seats > 0 && self.sold == self.seats
    }

    /// Adds `count` seats at `price`, of which `held` are held and `sold` sold.
    #[must_use]
    pub fn with(self, price: i64, count: u64, held: u64, sold: u64) -> Self {
        let sold_at = i64::try_from(sold).unwrap_or(i64::MAX).saturating_mul(price);
        Self {
            seats: self.seats + count,
            held: self.held + held,
            sold: self.sold + sold,
            revenue: self.revenue.saturating_add(sold_at),
        }
    }
}

/// An operator's change to a concert's sale, decided by [`plan_sale_change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleChange {
    /// Stop admitting: waiting buyers keep their places, admitted ones keep their time.
    Pause,
    /// Admit again.
    Resume,
    /// New waiting-room settings: the fields the patch names, applied to the current ones.
    Queue(QueuePatch),
    /// The sale opens at `at` (at or after the concert's `sales_open_at`), its pre-queue drawn
    /// with `seed`. Made by the admission ticker, once; a concert already open is left as it is.
    Open {
        /// When.
        at: DateTime<Utc>,
        /// The draw's seed, below [`OPENING_SEED_BOUND`].
        seed: u64,
    },
}

impl SaleChange {
    /// What the audit trail calls it.
    #[must_use]
    pub fn kind(&self) -> SaleActionKind {
        match self {
            Self::Pause => SaleActionKind::Pause,
            Self::Resume => SaleActionKind::Resume,
            Self::Queue(_) => SaleActionKind::Queue,
            Self::Open { .. } => SaleActionKind::Open,
        }
    }
}

/// The kind of an operator's change, as the audit trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaleActionKind {
    /// Admission paused.
    Pause,
    /// Admission resumed.
    Resume,
    /// Waiting-room settings changed.
    Queue,
    /// The sale opened (its pre-queue drawn).
    Open,
    /// A buyer's token was revoked (the entry's `subject`).
    Revoke,
}

impl SaleActionKind {
    /// Its name: `pause`, `resume`, `queue`, `open` or `revoke`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Queue => "queue",
            Self::Open => "open",
            Self::Revoke => "revoke",
        }
    }

    /// The kind of this name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pause, Self::Resume, Self::Queue, Self::Open, Self::Revoke]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// A concert's sale settings at one version, as the audit trail keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaleState {
    /// Whether admission was paused.
    pub paused: bool,
    /// The settings' version.
    pub version: u64,
    /// The waiting-room settings.
    pub queue: QueueSettings,
    /// The opening, once recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened: Option<Opening>,
}

impl From<&Concert> for SaleState {
    fn from(concert: &Concert) -> Self {
        Self {
            paused: concert.paused,
            version: concert.version,
            queue: concert.queue,
            opened: concert.opened,
        }
    }
}

/// One entry of a concert's audit trail: who changed its sale, how, when, and its state before
/// and after. Written in the same store step as the change
/// ([`crate::store::CatalogStore::change_sale`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaleAction {
    /// The concert.
    pub concert_id: ConcertId,
    /// Who: the operator's name.
    pub operator: UserId,
    /// What.
    pub kind: SaleActionKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The sale before (its version is the one the change was decided from).
    pub before: SaleState,
    /// The sale after.
    pub after: SaleState,
    /// Whom it concerned, for an action on one buyer (a revocation): the buyer's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<UserId>,
}

/// The audit entry of `change` by `operator` at `now`, taking the concert from `before` to
/// `after` (as [`plan_sale_change`] decided).
#[must_use]
pub fn sale_action(
    before: &Concert,
    after: &Concert,
    change: SaleChange,
    operator: &UserId,
    now: DateTime<Utc>,
) -> SaleAction {
    SaleAction {
        concert_id: before.id,
        operator: operator.clone(),
        kind: change.kind(),
        at: now,
        before: SaleState::from(before),
        after: SaleState::from(after),
        subject: None,
    }
}

/// Some of a concert's waiting-room settings; what it leaves out stays as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuePatch {
    /// A new [`QueueSettings::max_active`].
    pub max_active: Option<u32>,
    /// A new [`QueueSettings::admit_batch`].
    pub admit_batch: Option<u32>,
    /// A new [`QueueSettings::admit_interval_ms`].
    pub admit_interval_ms: Option<u64>,
    /// A new [`QueueSettings::waiting_idle_secs`].
    pub waiting_idle_secs: Option<u64>,
    /// A new [`QueueSettings::active_ttl_secs`].
    pub active_ttl_secs: Option<u64>,
}

impl QueuePatch {
    /// `current` with the fields this patch names replaced (not yet validated).
    #[must_use]
    pub fn apply(&self, current: QueueSettings) -> QueueSettings {
        QueueSettings {
            max_active: self.max_active.unwrap_or(current.max_active),
            admit_batch: self.admit_batch.unwrap_or(current.admit_batch),
            admit_interval_ms: self.admit_interval_ms.unwrap_or(current.admit_interval_ms),
            waiting_idle_secs: self.waiting_idle_secs.unwrap_or(current.waiting_idle_secs),
            active_ttl_secs: self.active_ttl_secs.unwrap_or(current.active_ttl_secs),
        }
    }
}

/// The concert after `change`, one version on from `current`; `None` when the change changes
/// nothing (pausing a paused sale, the same settings again), so a repeated request writes
/// nothing and answers the same.
///
/// # Errors
/// [`DomainError::InvalidInput`] for settings out of range, and for an opening of a concert
/// without `sales_open_at`, before it, or with a seed of 2^53 or more.
pub fn plan_sale_change(current: &Concert, change: SaleChange) -> Result<Option<Concert>, DomainError> {
    let mut next = current.clone();
    match change {
        SaleChange::Pause => next.paused = true,
        SaleChange::Resume => next.paused = false,
        SaleChange::Queue(patch) => {
            next.queue = patch.apply(current.queue);
            next.queue.validate()?;
        }
        SaleChange::Open { at, seed } => {
            let invalid = |reason: &str| Err(DomainError::InvalidInput { reason: reason.into() });
            let Some(opens_at) = current.sales_open_at else {
                return invalid("this concert's sale has no scheduled opening");
            };
            if at < opens_at {
                return invalid("the sale does not open yet");
            }
            if seed >= OPENING_SEED_BOUND {
                return invalid("an opening seed is below 2^53");
            }
            if current.opened.is_none() {
                next.opened = Some(Opening { at, seed });
            }
        }
    }
    if next == *current {
        return Ok(None);
    }
    next.version = current.version + 1;
    Ok(Some(next))
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

/// Where seat `number` sits in a schedule's seats by number (seats are numbered 1..=n in order,
/// `plan_concert`); `None` for 0.
fn seat_index(number: u32) -> Option<usize> {
    usize::try_from(number).ok().and_then(|n| n.checked_sub(1))
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
            let index = seat_index(o.number);
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

/// A seat's stored state as a change read reports it
/// ([`crate::store::CatalogStore::seat_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatChange {
    /// The seat's schedule.
    pub schedule_id: ScheduleId,
    /// The seat's number within its schedule.
    pub number: u32,
    /// The seat's fence as read (raised by every change, so of two reads of one seat the one
    /// with the higher fence is the newer).
    pub fence: Fence,
    /// Held until when, or booked; `None`: AVAILABLE.
    pub occupancy: Option<Occupancy>,
}

/// What one read of a concert's seat changes returned: the seats whose state may have changed
/// since the horizon it was asked from (every seat when asked from none), and the horizon to ask
/// from next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeatChanges {
    /// Every change made by a writer at or after this horizon may be missing from the read; every
    /// change made before it is in the read or in the reads before it. Opaque to the service
    /// (PostgreSQL: the oldest transaction still running when the read was taken).
    pub horizon: u64,
    /// Which history of the store the horizon belongs to (PostgreSQL: when its server started).
    /// A store that fails over to a replica or is restored from a backup may hand out again
    /// horizons it had given before; its epoch changes with it, and the states start again.
    pub epoch: u64,
    /// The seats, each as stored at the read.
    pub seats: Vec<SeatChange>,
}

/// What a process knows of a concert's seats' states, kept current by merging change reads
/// ([`crate::store::CatalogStore::seat_changes`]): the first read of a concert is whole, each
/// later one brings only the seats that may have changed since the horizon of the reads before
/// it. Reads may be merged in any order: of two states of one seat the higher fence wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatStates {
    /// The horizon every merged read covers; `None` until a whole read is merged.
    horizon: Option<u64>,
    /// The epoch of the reads merged.
    epoch: u64,
    /// When the last whole read was merged: past [`SEAT_STATES_WHOLE_READ_SECS`] the next read
    /// is whole again, so whatever these states could have missed (a store rewritten behind its
    /// writers' backs) lasts no longer than that.
    whole_at: Option<DateTime<Utc>>,
    /// Each schedule's seats by number (index `number - 1`): fence and occupancy.
    schedules: std::collections::HashMap<ScheduleId, Vec<(Fence, Option<Occupancy>)>>,
}

/// What [`SeatStates::merge`] made of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The read is in the states; they cover every change made before [`SeatStates::horizon`].
    Current,
    /// The read cannot be used: it was asked from a horizon these states no longer cover (they
    /// were forgotten meanwhile), or its horizon is older than the one it was asked from (the
    /// store went back in time: a restored database). The states are now empty; read the
    /// concert whole.
    Reread,
}

impl SeatStates {
    /// The horizon every merged read covers: `None` when nothing is known.
    #[must_use]
    pub fn horizon(&self) -> Option<u64> {
        self.horizon
    }

    /// The horizon to ask the next read from at `now`: `None` (read the concert whole) when
    /// nothing is known or the last whole read is [`SEAT_STATES_WHOLE_READ_SECS`] old.
    #[must_use]
    pub fn since(&self, now: DateTime<Utc>) -> Option<u64> {
        let fresh = self.whole_at.is_some_and(|at| now < at + Duration::seconds(SEAT_STATES_WHOLE_READ_SECS));
        self.horizon.filter(|_| fresh)
    }

    /// How many seats are known.
    #[must_use]
    pub fn seat_count(&self) -> usize {
        self.schedules.values().map(Vec::len).sum()
    }

    /// Merges `read`, asked from `since` (`None`: the whole concert) at `now`.
    pub fn merge(&mut self, since: Option<u64>, read: &SeatChanges, now: DateTime<Utc>) -> Merged {
        let covered = match (since, self.horizon) {
            (None, _) => true,
            (Some(since), Some(horizon)) => {
                since <= horizon && read.horizon >= since && read.epoch == self.epoch
            }
            (Some(_), None) => false,
        };
        if !covered {
            *self = Self::default();
            return Merged::Reread;
        }
        if since.is_none() {
            if self.horizon.is_some() && read.epoch != self.epoch {
                *self = Self::default();
            }
            self.epoch = read.epoch;
            self.whole_at = Some(self.whole_at.map_or(now, |at| at.max(now)));
        }
        for change in &read.seats {
            let Some(index) = seat_index(change.number) else {
                continue;
            };
            let seats = self.schedules.entry(change.schedule_id).or_default();
            if seats.len() <= index {
                seats.resize(index + 1, (Fence::new(0), None));
            }
            if change.fence >= seats[index].0 {
                seats[index] = (change.fence, change.occupancy);
            }
        }
        self.horizon = Some(self.horizon.map_or(read.horizon, |h| h.max(read.horizon)));
        Merged::Current
    }

    /// The status at `now` of each of `seats` (a schedule's seats, by number), as a seat list
    /// shows them. A seat these states do not know is AVAILABLE.
    #[must_use]
    pub fn list(&self, schedule: ScheduleId, seats: std::sync::Arc<[Seat]>, now: DateTime<Utc>) -> SeatList {
        let known = self.schedules.get(&schedule).map_or(&[][..], Vec::as_slice);
        let statuses = seats
            .iter()
            .map(|seat| {
                let occupancy = seat_index(seat.number).and_then(|i| known.get(i)).and_then(|&(_, o)| o);
                Occupancy::status_at(occupancy, now)
            })
            .collect();
        SeatList { seats, statuses }
    }

    /// How many of `schedule`'s seats are AVAILABLE at `now` (a lapsed hold counts as available),
    /// of the seats a read named (a whole read names every seat).
    #[must_use]
    pub fn available(&self, schedule: ScheduleId, now: DateTime<Utc>) -> u32 {
        let known = self.schedules.get(&schedule).map_or(&[][..], Vec::as_slice);
        let free = known
            .iter()
            .filter(|&&(_, occupancy)| Occupancy::status_at(occupancy, now) == SeatStatus::Available)
            .count();
        u32::try_from(free).unwrap_or(u32::MAX)
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
    /// The most seats one user may buy of it (`None`: no cap), 1 to
    /// [`MAX_SEATS_PER_BUYER_LIMIT`].
    #[serde(default)]
    pub max_seats_per_buyer: Option<u32>,
    /// How many open holds one token may have (`None`: the deployment's), 1 to
    /// [`HOLDS_PER_TOKEN_MAX`].
    #[serde(default)]
    pub holds_per_token: Option<u32>,
    /// Until how many seconds before a performance its buyers may cancel (`None`: they may
    /// not), 0 to [`CANCEL_UNTIL_SECS_MAX`].
    #[serde(default)]
    pub cancel_until_secs_before_start: Option<u64>,
    /// When its sale opens (`None`: at once); buyers who join before wait in a pre-queue.
    #[serde(default)]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// How the pre-queue is ordered at the opening (default: drawn at random).
    #[serde(default)]
    pub pre_queue: PreQueue,
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
/// outside the years `STARTS_AT_YEAR_MIN` to `STARTS_AT_YEAR_MAX`, queue settings out of
/// range, a `max_seats_per_buyer` of 0 or above `MAX_SEATS_PER_BUYER_LIMIT`, a
/// `holds_per_token` of 0 or above `HOLDS_PER_TOKEN_MAX`, a
/// `cancel_until_secs_before_start` above `CANCEL_UNTIL_SECS_MAX`, or a
/// `sales_open_at` outside the years allowed for a start.
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
    if request.max_seats_per_buyer.is_some_and(|cap| !(1..=MAX_SEATS_PER_BUYER_LIMIT).contains(&cap)) {
        return invalid(format!("maxSeatsPerBuyer must be 1 to {MAX_SEATS_PER_BUYER_LIMIT}"));
    }
    if request.cancel_until_secs_before_start.is_some_and(|secs| secs > CANCEL_UNTIL_SECS_MAX) {
        return invalid(format!("cancelUntilSecsBeforeStart must be 0 to {CANCEL_UNTIL_SECS_MAX}"));
    }
    if request.holds_per_token.is_some_and(|n| !(1..=HOLDS_PER_TOKEN_MAX).contains(&n)) {
        return invalid(format!("holdsPerToken must be 1 to {HOLDS_PER_TOKEN_MAX}"));
    }
    if request.sales_open_at.is_some_and(|at| !(STARTS_AT_YEAR_MIN..=STARTS_AT_YEAR_MAX).contains(&at.year()))
    {
        return invalid(format!(
            "salesOpenAt must be in the years {STARTS_AT_YEAR_MIN} to {STARTS_AT_YEAR_MAX}"
        ));
    }
    let concert = Concert {
        id: ConcertId::random(),
        title: title.to_owned(),
        queue: request.queue,
        paused: false,
        version: 0,
        max_seats_per_buyer: request.max_seats_per_buyer,
        holds_per_token: request.holds_per_token,
        cancel_until_secs_before_start: request.cancel_until_secs_before_start,
        sales_open_at: request.sales_open_at,
        pre_queue: request.pre_queue,
        opened: None,
    };
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
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        }
    }

    #[test]
    fn a_sale_opens_once_at_or_after_its_time() {
        let opens = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        let open = |at: DateTime<Utc>, seed: u64| SaleChange::Open { at, seed };
        let unscheduled = plan_concert(&request()).expect("valid").concert;
        let invalid = |result: Result<Option<Concert>, DomainError>| {
            matches!(result, Err(DomainError::InvalidInput { .. }))
        };
        assert!(invalid(plan_sale_change(&unscheduled, open(opens, 1))), "no opening to make");
        let scheduled =
            plan_concert(&NewConcert { sales_open_at: Some(opens), ..request() }).expect("valid").concert;
        assert!(scheduled.before_opening());
        assert!(
            invalid(plan_sale_change(&scheduled, open(opens - Duration::milliseconds(1), 1))),
            "too early"
        );
        assert!(invalid(plan_sale_change(&scheduled, open(opens, OPENING_SEED_BOUND))), "seed too large");
        let opened = plan_sale_change(&scheduled, open(opens, 7)).expect("valid").expect("a change");
        assert_eq!((opened.opened, opened.version), (Some(Opening { at: opens, seed: 7 }), 1));
        assert!(!opened.before_opening());
        let later = opens + Duration::seconds(1);
        assert_eq!(plan_sale_change(&opened, open(later, 8)), Ok(None), "opened once");
        let far = DateTime::from_timestamp(-3_000_000_000_000, 0).expect("valid");
        assert!(matches!(
            plan_concert(&NewConcert { sales_open_at: Some(far), ..request() }),
            Err(DomainError::InvalidInput { .. })
        ));
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

    fn change(schedule: ScheduleId, number: u32, fence: u64, occupancy: Option<Occupancy>) -> SeatChange {
        SeatChange { schedule_id: schedule, number, fence: Fence::new(fence), occupancy }
    }

    fn three_seats(schedule: ScheduleId) -> std::sync::Arc<[Seat]> {
        (1..=3)
            .map(|number| Seat {
                id: SeatId::random(),
                schedule_id: schedule,
                concert_id: ConcertId::random(),
                number,
                price: Points::new(100).expect("valid"),
            })
            .collect()
    }

    #[test]
    fn seat_states_merge_reads_in_any_order_and_keep_the_newest_state_of_each_seat() {
        let schedule = ScheduleId::random();
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let held = Some(Occupancy::Held { expires_at: now + Duration::seconds(60) });
        let whole = SeatChanges {
            horizon: 10,
            epoch: 1,
            seats: (1..=3).map(|n| change(schedule, n, 0, None)).collect(),
        };
        let mut states = SeatStates::default();
        assert_eq!(states.horizon(), None);
        assert_eq!(states.merge(None, &whole, now), Merged::Current);
        assert_eq!(
            (states.horizon(), states.seat_count(), states.available(schedule, now)),
            (Some(10), 3, 3)
        );
        // Two reads asked from 10, merged newest first: seat 2 held (fence 1), then booked
        // (fence 2); the older read (seat 2 held) must not undo the booking.
        let newer = SeatChanges {
            horizon: 14,
            epoch: 1,
            seats: vec![change(schedule, 2, 2, Some(Occupancy::Booked))],
        };
        let older = SeatChanges {
            horizon: 12,
            epoch: 1,
            seats: vec![change(schedule, 2, 1, held), change(schedule, 3, 1, held)],
        };
        assert_eq!(states.merge(Some(10), &newer, now), Merged::Current);
        assert_eq!(states.merge(Some(10), &older, now), Merged::Current);
        assert_eq!(states.horizon(), Some(14), "the horizon never goes back");
        let list = states.list(schedule, three_seats(schedule), now);
        assert_eq!(list.statuses, vec![SeatStatus::Available, SeatStatus::Booked, SeatStatus::Held]);
        assert_eq!(states.available(schedule, now), 1);
        // A hold that lapsed counts as available before any sweep says so.
        assert_eq!(states.available(schedule, now + Duration::seconds(60)), 2);
        // A schedule no read named has no seat known, so none available.
        assert_eq!(states.available(ScheduleId::random(), now), 0);
    }

    #[test]
    fn seat_states_refuse_a_read_they_cannot_place_and_start_again() {
        let schedule = ScheduleId::random();
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let booked = SeatChanges {
            horizon: 20,
            epoch: 1,
            seats: vec![change(schedule, 1, 2, Some(Occupancy::Booked))],
        };
        // A read asked from a horizon while nothing is known (the states were forgotten
        // meanwhile) is not a whole read.
        let mut states = SeatStates::default();
        assert_eq!(states.merge(Some(5), &booked, now), Merged::Reread);
        assert_eq!(states.horizon(), None);
        // A read whose horizon is older than the one it was asked from: the store went back in
        // time (a database restored); what is known cannot be trusted.
        assert_eq!(states.merge(None, &booked, now), Merged::Current);
        let back = SeatChanges { horizon: 3, epoch: 1, seats: vec![] };
        assert_eq!(states.merge(Some(20), &back, now), Merged::Reread);
        assert_eq!((states.horizon(), states.seat_count()), (None, 0));
        // A seat numbered 0 names no seat and is ignored.
        assert_eq!(
            states.merge(
                None,
                &SeatChanges { horizon: 1, epoch: 1, seats: vec![change(schedule, 0, 1, None)] },
                now
            ),
            Merged::Current
        );
        assert_eq!(states.seat_count(), 0);
    }

    #[test]
    fn seat_states_read_whole_again_after_a_while_or_when_the_store_has_another_history() {
        let schedule = ScheduleId::random();
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("valid");
        let whole = SeatChanges { horizon: 10, epoch: 1, seats: vec![change(schedule, 1, 0, None)] };
        let mut states = SeatStates::default();
        assert_eq!(states.since(now), None);
        assert_eq!(states.merge(None, &whole, now), Merged::Current);
        assert_eq!(states.since(now), Some(10));
        let later = now + Duration::seconds(SEAT_STATES_WHOLE_READ_SECS);
        assert_eq!(states.since(later - Duration::milliseconds(1)), Some(10));
        assert_eq!(states.since(later), None, "a whole read again, however many reads merged since");
        // A read of another epoch (the database failed over or was restored) is not merged
        // into what was known of the old one.
        let moved = SeatChanges { horizon: 12, epoch: 2, seats: vec![] };
        assert_eq!(states.merge(Some(10), &moved, now), Merged::Reread);
        assert_eq!(states.horizon(), None);
        let booked = SeatChanges {
            horizon: 4,
            epoch: 2,
            seats: vec![change(schedule, 1, 1, Some(Occupancy::Booked))],
        };
        assert_eq!(states.merge(None, &booked, now), Merged::Current);
        assert_eq!((states.horizon(), states.available(schedule, now)), (Some(4), 0));
    }

    #[test]
    fn a_sale_change_moves_the_version_on_once_and_a_repeated_one_writes_nothing() {
        let created = plan_concert(&request()).expect("valid").concert;
        assert_eq!((created.paused, created.version), (false, 0));
        let paused = plan_sale_change(&created, SaleChange::Pause).expect("valid").expect("a change");
        assert_eq!((paused.paused, paused.version), (true, 1));
        assert_eq!(plan_sale_change(&paused, SaleChange::Pause), Ok(None), "already paused");
        let resumed = plan_sale_change(&paused, SaleChange::Resume).expect("valid").expect("a change");
        assert_eq!((resumed.paused, resumed.version), (false, 2));
        let wider = QueuePatch { max_active: Some(7), ..QueuePatch::default() };
        let changed = plan_sale_change(&resumed, SaleChange::Queue(wider)).expect("valid").expect("a change");
        let expected = QueueSettings { max_active: 7, ..resumed.queue };
        assert_eq!((changed.queue, changed.version, changed.paused), (expected, 3, false));
        assert_eq!(plan_sale_change(&changed, SaleChange::Queue(wider)), Ok(None), "the same settings");
        let invalid = QueuePatch { admit_batch: Some(0), ..QueuePatch::default() };
        assert!(matches!(
            plan_sale_change(&changed, SaleChange::Queue(invalid)),
            Err(DomainError::InvalidInput { .. })
        ));
    }
}
