//! Rows as the SQL backends return them (the `FromRow` derives are generic over the database),
//! and their conversion into domain records. Every conversion checks what the database cannot
//! (an unknown status, a negative number where the domain has none) and reports
//! [`StoreError::Corrupt`] rather than guessing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::catalog::{
    Concert, ConcertPlan, Occupancy, OccupiedSeat, Opening, PreQueue, QueueSettings, SaleAction,
    SaleActionKind, SaleState, Schedule, ScheduleAvailability, Seat, SeatChange, SeatRecord, SeatState,
};
use crate::error::StoreError;
use crate::hold::Reservation;
use crate::idempotency::IdempotencyRecord;
use crate::ids::{
    ConcertId, Fence, IdempotencyKey, LedgerEntryId, PaymentId, Points, QueueToken, ReservationId,
    ScheduleId, SeatId, UserId,
};
use crate::payment::{LedgerEntry, Payment, Wallet};
use crate::queue::{AdmissionSnapshot, TokenRecord, TokenState};
use crate::store::StoreResult;

/// The SCREAMING_SNAKE_CASE name of a unit enum variant, as stored.
pub(crate) fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A unit enum variant from its stored name.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("unknown stored value {text:?}")))
}

pub(crate) fn i64_of(value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} does not fit a bigint")))
}

pub(crate) fn i32_of(value: u32) -> StoreResult<i32> {
    i32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} does not fit an integer")))
}

pub(crate) fn u64_of(value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative stored count {value}")))
}

fn u32_of(value: i32) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative stored number {value}")))
}

fn points(value: i64) -> StoreResult<Points> {
    Points::new(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn user(text: &str) -> StoreResult<UserId> {
    UserId::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn token(text: &str) -> StoreResult<QueueToken> {
    QueueToken::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn missing(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} is missing"))
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConcertRow {
    id: Uuid,
    title: String,
    max_active: i32,
    admit_batch: i32,
    admit_interval_ms: i64,
    waiting_idle_secs: i64,
    active_ttl_secs: i64,
    paused: bool,
    version: i64,
    max_seats_per_buyer: Option<i32>,
    holds_per_token: Option<i32>,
    cancel_until_secs_before_start: Option<i64>,
    sales_open_at: Option<DateTime<Utc>>,
    pre_queue: String,
    opened_at: Option<DateTime<Utc>>,
    opening_seed: Option<i64>,
}

impl TryFrom<ConcertRow> for Concert {
    type Error = StoreError;
    fn try_from(r: ConcertRow) -> StoreResult<Self> {
        Ok(Self {
            id: ConcertId::from_uuid(r.id),
            title: r.title,
            queue: queue_settings(
                r.max_active,
                r.admit_batch,
                r.admit_interval_ms,
                r.waiting_idle_secs,
                r.active_ttl_secs,
            )?,
            paused: r.paused,
            version: u64_of(r.version)?,
            max_seats_per_buyer: r
                .max_seats_per_buyer
                .map(u32::try_from)
                .transpose()
                .map_err(|_| StoreError::Corrupt("negative max_seats_per_buyer".into()))?,
            holds_per_token: r
                .holds_per_token
                .map(u32::try_from)
                .transpose()
                .map_err(|_| StoreError::Corrupt("negative holds_per_token".into()))?,
            cancel_until_secs_before_start: r.cancel_until_secs_before_start.map(u64_of).transpose()?,
            sales_open_at: r.sales_open_at,
            pre_queue: PreQueue::parse(&r.pre_queue)
                .ok_or_else(|| StoreError::Corrupt(format!("pre-queue order {:?}", r.pre_queue)))?,
            opened: match (r.opened_at, r.opening_seed) {
                (Some(at), Some(seed)) => Some(Opening { at, seed: u64_of(seed)? }),
                (None, None) => None,
                _ => return Err(StoreError::Corrupt("an opening without its time or its seed".into())),
            },
        })
    }
}

/// A concert's sale state as its audit trail stores it (JSON).
pub(crate) fn sale_state_json(state: &SaleState) -> StoreResult<String> {
    serde_json::to_string(state).map_err(|e| StoreError::Corrupt(format!("sale state: {e}")))
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SaleActionRow {
    concert_id: Uuid,
    operator: String,
    action: String,
    at: DateTime<Utc>,
    before_state: String,
    after_state: String,
    #[sqlx(default)]
    subject: Option<String>,
}

impl TryFrom<SaleActionRow> for SaleAction {
    type Error = StoreError;
    fn try_from(r: SaleActionRow) -> StoreResult<Self> {
        let state = |json: &str| {
            serde_json::from_str::<SaleState>(json)
                .map_err(|e| StoreError::Corrupt(format!("sale state: {e}")))
        };
        Ok(Self {
            concert_id: ConcertId::from_uuid(r.concert_id),
            operator: user(&r.operator)?,
            kind: SaleActionKind::parse(&r.action)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown sale action {:?}", r.action)))?,
            at: r.at,
            before: state(&r.before_state)?,
            after: state(&r.after_state)?,
            subject: r.subject.as_deref().map(user).transpose()?,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    id: Uuid,
    concert_id: Uuid,
    starts_at: DateTime<Utc>,
    available: i64,
}

impl ScheduleRow {
    pub(crate) fn into_availability(self) -> ScheduleAvailability {
        ScheduleAvailability {
            schedule: Schedule {
                id: ScheduleId::from_uuid(self.id),
                concert_id: ConcertId::from_uuid(self.concert_id),
                starts_at: self.starts_at,
            },
            available_seats: u32::try_from(self.available).unwrap_or(0),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SeatRow {
    id: Uuid,
    schedule_id: Uuid,
    concert_id: Uuid,
    number: i32,
    price: i64,
    state: String,
    reservation_id: Option<Uuid>,
    holder: Option<String>,
    hold_expires_at: Option<DateTime<Utc>>,
    fence: i64,
}

impl TryFrom<SeatRow> for SeatRecord {
    type Error = StoreError;
    fn try_from(r: SeatRow) -> StoreResult<Self> {
        let state = match r.state.as_str() {
            "AVAILABLE" => SeatState::Available,
            "HELD" => SeatState::Held {
                reservation: ReservationId::from_uuid(
                    r.reservation_id.ok_or_else(|| missing("held seat's reservation"))?,
                ),
                user: user(r.holder.as_deref().ok_or_else(|| missing("held seat's holder"))?)?,
                expires_at: r.hold_expires_at.ok_or_else(|| missing("held seat's deadline"))?,
            },
            "BOOKED" => SeatState::Booked {
                reservation: ReservationId::from_uuid(
                    r.reservation_id.ok_or_else(|| missing("booked seat's reservation"))?,
                ),
            },
            other => return Err(StoreError::Corrupt(format!("unknown seat state {other:?}"))),
        };
        Ok(Self {
            seat: Seat {
                id: SeatId::from_uuid(r.id),
                schedule_id: ScheduleId::from_uuid(r.schedule_id),
                concert_id: ConcertId::from_uuid(r.concert_id),
                number: u32_of(r.number)?,
                price: points(r.price)?,
            },
            state,
            fence: Fence::new(u64_of(r.fence)?),
        })
    }
}

/// How many of `plan`'s seats belong to `schedule` (stored with the schedule).
pub(crate) fn seat_count(plan: &ConcertPlan, schedule: ScheduleId) -> StoreResult<i32> {
    let count = plan.seats.iter().filter(|s| s.schedule_id == schedule).count();
    i32::try_from(count).map_err(|_| StoreError::Corrupt(format!("{count} seats do not fit an integer")))
}

/// Occupied seats from their numbers and hold deadlines (`None`: booked).
pub(crate) fn occupied(
    rows: impl IntoIterator<Item = (i32, Option<DateTime<Utc>>)>,
) -> StoreResult<Vec<OccupiedSeat>> {
    rows.into_iter()
        .map(|(number, deadline)| {
            Ok(OccupiedSeat {
                number: u32_of(number)?,
                occupancy: deadline.map_or(Occupancy::Booked, |expires_at| Occupancy::Held { expires_at }),
            })
        })
        .collect()
}

/// A seat's state as a change read returns it: booked, held until a deadline, or available.
pub(crate) fn seat_change(
    schedule: Uuid,
    number: i32,
    fence: i64,
    booked: bool,
    deadline: Option<DateTime<Utc>>,
) -> StoreResult<SeatChange> {
    let occupancy = match (booked, deadline) {
        (true, _) => Some(Occupancy::Booked),
        (false, Some(expires_at)) => Some(Occupancy::Held { expires_at }),
        (false, None) => None,
    };
    Ok(SeatChange {
        schedule_id: ScheduleId::from_uuid(schedule),
        number: u32_of(number)?,
        fence: Fence::new(u64_of(fence)?),
        occupancy,
    })
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ReservationRow {
    id: Uuid,
    user_id: String,
    token: String,
    seat_id: Uuid,
    schedule_id: Uuid,
    concert_id: Uuid,
    price: i64,
    fence: i64,
    status: String,
    held_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl TryFrom<ReservationRow> for Reservation {
    type Error = StoreError;
    fn try_from(r: ReservationRow) -> StoreResult<Self> {
        Ok(Self {
            id: ReservationId::from_uuid(r.id),
            user_id: user(&r.user_id)?,
            token: token(&r.token)?,
            seat_id: SeatId::from_uuid(r.seat_id),
            schedule_id: ScheduleId::from_uuid(r.schedule_id),
            concert_id: ConcertId::from_uuid(r.concert_id),
            price: points(r.price)?,
            fence: Fence::new(u64_of(r.fence)?),
            status: parse(&r.status)?,
            held_at: r.held_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct WalletRow {
    user_id: String,
    balance: i64,
    version: i64,
}

impl TryFrom<WalletRow> for Wallet {
    type Error = StoreError;
    fn try_from(r: WalletRow) -> StoreResult<Self> {
        Ok(Self { user_id: user(&r.user_id)?, balance: points(r.balance)?, version: u64_of(r.version)? })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LedgerRow {
    id: Uuid,
    user_id: String,
    kind: String,
    amount: i64,
    balance_after: i64,
    at: DateTime<Utc>,
    payment_id: Option<Uuid>,
}

impl TryFrom<LedgerRow> for LedgerEntry {
    type Error = StoreError;
    fn try_from(r: LedgerRow) -> StoreResult<Self> {
        Ok(Self {
            id: LedgerEntryId::from_uuid(r.id),
            user_id: user(&r.user_id)?,
            kind: parse(&r.kind)?,
            amount: points(r.amount)?,
            balance_after: points(r.balance_after)?,
            at: r.at,
            payment_id: r.payment_id.map(PaymentId::from_uuid),
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PaymentRow {
    id: Uuid,
    reservation_id: Uuid,
    seat_id: Uuid,
    user_id: String,
    amount: i64,
    at: DateTime<Utc>,
    refunded_at: Option<DateTime<Utc>>,
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;
    fn try_from(r: PaymentRow) -> StoreResult<Self> {
        Ok(Self {
            id: PaymentId::from_uuid(r.id),
            reservation_id: ReservationId::from_uuid(r.reservation_id),
            seat_id: SeatId::from_uuid(r.seat_id),
            user_id: user(&r.user_id)?,
            amount: points(r.amount)?,
            at: r.at,
            refunded_at: r.refunded_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyRow {
    user_id: String,
    key: String,
    fingerprint: String,
    outcome: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl TryFrom<KeyRow> for IdempotencyRecord {
    type Error = StoreError;
    fn try_from(r: KeyRow) -> StoreResult<Self> {
        Ok(Self {
            user_id: user(&r.user_id)?,
            key: IdempotencyKey::parse(&r.key).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            fingerprint: r.fingerprint,
            outcome: r.outcome,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TokenRow {
    token: String,
    user_id: String,
    concert_id: Uuid,
    issued_at: DateTime<Utc>,
    version: i64,
    status: String,
    seq: Option<i64>,
    admitted_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    expired_reason: Option<String>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;
    fn try_from(r: TokenRow) -> StoreResult<Self> {
        let state = match r.status.as_str() {
            "WAITING" => TokenState::Waiting {
                seq: u64_of(r.seq.ok_or_else(|| missing("waiting token's seq"))?)?,
                expires_at: r.expires_at,
            },
            "ACTIVE" => TokenState::Active {
                admitted_at: r.admitted_at.ok_or_else(|| missing("active token's admission"))?,
                expires_at: r.expires_at,
            },
            "EXPIRED" => TokenState::Expired {
                at: r.expires_at,
                reason: parse(r.expired_reason.as_deref().ok_or_else(|| missing("expiry reason"))?)?,
            },
            other => return Err(StoreError::Corrupt(format!("unknown token status {other:?}"))),
        };
        Ok(Self {
            token: token(&r.token)?,
            user_id: user(&r.user_id)?,
            concert_id: ConcertId::from_uuid(r.concert_id),
            issued_at: r.issued_at,
            version: u64_of(r.version)?,
            state,
        })
    }
}

/// The columns a token state is stored in: status, seq, admitted_at, expires_at, reason.
pub(crate) struct TokenColumns {
    pub status: &'static str,
    pub seq: Option<i64>,
    pub admitted_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub reason: Option<String>,
}

impl TokenColumns {
    pub(crate) fn of(state: &TokenState) -> StoreResult<Self> {
        Ok(match state {
            TokenState::Waiting { seq, expires_at } => Self {
                status: "WAITING",
                seq: Some(i64_of(*seq)?),
                admitted_at: None,
                expires_at: *expires_at,
                reason: None,
            },
            TokenState::Active { admitted_at, expires_at } => Self {
                status: "ACTIVE",
                seq: None,
                admitted_at: Some(*admitted_at),
                expires_at: *expires_at,
                reason: None,
            },
            TokenState::Expired { at, reason } => Self {
                status: "EXPIRED",
                seq: None,
                admitted_at: None,
                expires_at: *at,
                reason: Some(name(reason)),
            },
        })
    }
}

/// Queue settings from their stored columns.
fn queue_settings(
    max_active: i32,
    admit_batch: i32,
    admit_interval_ms: i64,
    waiting_idle_secs: i64,
    active_ttl_secs: i64,
) -> StoreResult<QueueSettings> {
    let corrupt = |_| StoreError::Corrupt("negative queue setting".into());
    Ok(QueueSettings {
        max_active: u32::try_from(max_active).map_err(corrupt)?,
        admit_batch: u32::try_from(admit_batch).map_err(corrupt)?,
        admit_interval_ms: u64::try_from(admit_interval_ms).map_err(corrupt)?,
        waiting_idle_secs: u64::try_from(waiting_idle_secs).map_err(corrupt)?,
        active_ttl_secs: u64::try_from(active_ttl_secs).map_err(corrupt)?,
    })
}

/// A concert's stored admission state.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AdmissionRow {
    version: i64,
    window_started_at: Option<DateTime<Utc>>,
    admitted_in_window: i32,
    rate_per_sec: f64,
    opened: bool,
}

/// A snapshot from the stored admission state (none before the first tick) and the counts.
pub(crate) fn admission_snapshot(
    state: Option<AdmissionRow>,
    active: i64,
    waiting: i64,
) -> StoreResult<AdmissionSnapshot> {
    let mut snapshot = match state {
        Some(s) => AdmissionSnapshot {
            version: u64_of(s.version)?,
            window_started_at: s.window_started_at,
            admitted_in_window: u32::try_from(s.admitted_in_window).unwrap_or(0),
            rate_per_sec: s.rate_per_sec,
            opened: s.opened,
            ..AdmissionSnapshot::default()
        },
        None => AdmissionSnapshot::default(),
    };
    snapshot.active = u32::try_from(active).unwrap_or(u32::MAX);
    snapshot.waiting = u64_of(waiting)?;
    Ok(snapshot)
}

/// The columns of a step's inputs read in one statement, every table of them `LEFT JOIN`ed to
/// `(SELECT 1) one` under a prefix (`s_` seat, `r_` reservation, `w_` wallet, `k_` the
/// idempotency key): `seat_input_columns!()` and its siblings name them, and a statement names
/// only those it reads (the others default to absent). One statement sees one snapshot, so what
/// the step decides from is consistent.
#[derive(Debug, Default, sqlx::FromRow)]
#[sqlx(default)]
pub(crate) struct InputsRow {
    s_id: Option<Uuid>,
    s_schedule_id: Option<Uuid>,
    s_concert_id: Option<Uuid>,
    s_number: Option<i32>,
    s_price: Option<i64>,
    s_state: Option<String>,
    s_reservation_id: Option<Uuid>,
    s_holder: Option<String>,
    s_hold_expires_at: Option<DateTime<Utc>>,
    s_fence: Option<i64>,
    r_id: Option<Uuid>,
    r_user_id: Option<String>,
    r_token: Option<String>,
    r_seat_id: Option<Uuid>,
    r_schedule_id: Option<Uuid>,
    r_concert_id: Option<Uuid>,
    r_price: Option<i64>,
    r_fence: Option<i64>,
    r_status: Option<String>,
    r_held_at: Option<DateTime<Utc>>,
    r_expires_at: Option<DateTime<Utc>>,
    w_user_id: Option<String>,
    w_balance: Option<i64>,
    w_version: Option<i64>,
    k_user_id: Option<String>,
    k_key: Option<String>,
    k_fingerprint: Option<String>,
    k_outcome: Option<String>,
    k_created_at: Option<DateTime<Utc>>,
    k_expires_at: Option<DateTime<Utc>>,
    /// A hold's and a payment's inputs have it (a charge's do not).
    #[sqlx(default)]
    bought: Option<i64>,
    /// A payment's inputs have it: whether the reservation's token was revoked.
    #[sqlx(default)]
    r_revoked: Option<i64>,
    p_id: Option<Uuid>,
    p_reservation_id: Option<Uuid>,
    p_seat_id: Option<Uuid>,
    p_user_id: Option<String>,
    p_amount: Option<i64>,
    p_at: Option<DateTime<Utc>>,
    p_refunded_at: Option<DateTime<Utc>>,
}

/// A stored count.
pub(crate) fn count(value: i64) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("count {value} out of range")))
}

/// A column of a row the join found (its key is present) that is null: the row is corrupt.
fn present<T>(value: Option<T>, what: &str) -> StoreResult<T> {
    value.ok_or_else(|| missing(what))
}

impl InputsRow {
    /// How many seats the user bought of the seat's or reservation's concert.
    pub(crate) fn bought(&self) -> StoreResult<u32> {
        count(self.bought.unwrap_or(0))
    }

    /// Whether the reservation's token was revoked.
    pub(crate) fn hold_revoked(&self) -> bool {
        self.r_revoked.unwrap_or(0) > 0
    }

    /// The seat, if the join found it.
    pub(crate) fn seat(&mut self) -> StoreResult<Option<SeatRecord>> {
        let Some(id) = self.s_id else { return Ok(None) };
        SeatRow {
            id,
            schedule_id: present(self.s_schedule_id, "seat's schedule")?,
            concert_id: present(self.s_concert_id, "seat's concert")?,
            number: present(self.s_number, "seat's number")?,
            price: present(self.s_price, "seat's price")?,
            state: present(self.s_state.take(), "seat's state")?,
            reservation_id: self.s_reservation_id,
            holder: self.s_holder.take(),
            hold_expires_at: self.s_hold_expires_at,
            fence: present(self.s_fence, "seat's fence")?,
        }
        .try_into()
        .map(Some)
    }

    /// The reservation, if the join found it.
    pub(crate) fn reservation(&mut self) -> StoreResult<Option<Reservation>> {
        let Some(id) = self.r_id else { return Ok(None) };
        ReservationRow {
            id,
            user_id: present(self.r_user_id.take(), "reservation's user")?,
            token: present(self.r_token.take(), "reservation's token")?,
            seat_id: present(self.r_seat_id, "reservation's seat")?,
            schedule_id: present(self.r_schedule_id, "reservation's schedule")?,
            concert_id: present(self.r_concert_id, "reservation's concert")?,
            price: present(self.r_price, "reservation's price")?,
            fence: present(self.r_fence, "reservation's fence")?,
            status: present(self.r_status.take(), "reservation's status")?,
            held_at: present(self.r_held_at, "reservation's time")?,
            expires_at: present(self.r_expires_at, "reservation's deadline")?,
        }
        .try_into()
        .map(Some)
    }

    /// The payment, if the join found it (a cancellation's inputs have it).
    pub(crate) fn payment(&mut self) -> StoreResult<Option<Payment>> {
        let Some(id) = self.p_id else { return Ok(None) };
        PaymentRow {
            id,
            reservation_id: present(self.p_reservation_id, "payment's reservation")?,
            seat_id: present(self.p_seat_id, "payment's seat")?,
            user_id: present(self.p_user_id.take(), "payment's user")?,
            amount: present(self.p_amount, "payment's amount")?,
            at: present(self.p_at, "payment's time")?,
            refunded_at: self.p_refunded_at,
        }
        .try_into()
        .map(Some)
    }

    /// The wallet of `user` ([`Wallet::empty`] when it has no row).
    pub(crate) fn wallet(&mut self, user: &UserId) -> StoreResult<Wallet> {
        let Some(user_id) = self.w_user_id.take() else { return Ok(Wallet::empty(user.clone())) };
        WalletRow {
            user_id,
            balance: present(self.w_balance, "wallet's balance")?,
            version: present(self.w_version, "wallet's version")?,
        }
        .try_into()
    }

    /// The idempotency record, if the join found one.
    pub(crate) fn key(&mut self) -> StoreResult<Option<IdempotencyRecord>> {
        let Some(user_id) = self.k_user_id.take() else { return Ok(None) };
        KeyRow {
            user_id,
            key: present(self.k_key.take(), "key")?,
            fingerprint: present(self.k_fingerprint.take(), "key's fingerprint")?,
            outcome: present(self.k_outcome.take(), "key's outcome")?,
            created_at: present(self.k_created_at, "key's time")?,
            expires_at: present(self.k_expires_at, "key's deadline")?,
        }
        .try_into()
        .map(Some)
    }
}

/// A payment's inputs from its rows, one per id of `reservations` in that order (the wallet and
/// the key repeat on each; the count of seats bought is the first found reservation's).
pub(crate) fn payment_inputs(
    user: &UserId,
    reservations: &[crate::ids::ReservationId],
    rows: Vec<InputsRow>,
) -> StoreResult<crate::store::PaymentInputs> {
    if rows.len() != reservations.len() {
        return Err(StoreError::Corrupt(format!(
            "{} rows of payment inputs for {} reservations",
            rows.len(),
            reservations.len()
        )));
    }
    let mut rows = rows.into_iter();
    let Some(mut first) = rows.next() else {
        return Ok(crate::store::PaymentInputs {
            wallet: Wallet::empty(user.clone()),
            holds: Vec::new(),
            key: None,
            bought: 0,
        });
    };
    let (wallet, key) = (first.wallet(user)?, first.key()?);
    let mut bought = None;
    let mut holds = Vec::with_capacity(reservations.len());
    for (&id, mut row) in reservations.iter().zip(std::iter::once(first).chain(rows)) {
        let reservation = row.reservation()?;
        if reservation.is_some() && bought.is_none() {
            bought = Some(row.bought()?);
        }
        holds.push(crate::store::HoldToPay {
            id,
            seat: row.seat()?,
            hold_revoked: row.hold_revoked(),
            reservation,
        });
    }
    Ok(crate::store::PaymentInputs { wallet, holds, key, bought: bought.unwrap_or(0) })
}

/// The seat's columns of an [`InputsRow`] (table alias `s`).
macro_rules! seat_input_columns {
    () => {
        "s.id AS s_id, s.schedule_id AS s_schedule_id, s.concert_id AS s_concert_id, s.number AS s_number,
         s.price AS s_price, s.state AS s_state, s.reservation_id AS s_reservation_id, s.holder AS s_holder,
         s.hold_expires_at AS s_hold_expires_at, s.fence AS s_fence"
    };
}

/// The reservation's columns of an [`InputsRow`] (table alias `r`).
macro_rules! reservation_input_columns {
    () => {
        "r.id AS r_id, r.user_id AS r_user_id, r.token AS r_token, r.seat_id AS r_seat_id,
         r.schedule_id AS r_schedule_id, r.concert_id AS r_concert_id, r.price AS r_price, r.fence AS r_fence,
         r.status AS r_status, r.held_at AS r_held_at, r.expires_at AS r_expires_at"
    };
}

/// The payment's columns of an [`InputsRow`] (table alias `p`).
macro_rules! payment_input_columns {
    () => {
        "p.id AS p_id, p.reservation_id AS p_reservation_id, p.seat_id AS p_seat_id, p.user_id AS p_user_id,
         p.amount AS p_amount, p.at AS p_at, p.refunded_at AS p_refunded_at"
    };
}

/// The wallet's columns of an [`InputsRow`] (table alias `w`).
macro_rules! wallet_input_columns {
    () => {
        "w.user_id AS w_user_id, w.balance AS w_balance, w.version AS w_version"
    };
}

/// The idempotency key's columns of an [`InputsRow`] (table alias `k`), in MySQL's spelling
/// (`` `key` `` quoted; see `sql_steps::Dialect::sql`).
macro_rules! key_input_columns {
    () => {
        "k.user_id AS k_user_id, k.`key` AS k_key, k.fingerprint AS k_fingerprint, k.outcome AS k_outcome,
         k.created_at AS k_created_at, k.expires_at AS k_expires_at"
    };
}

pub(crate) use {
    key_input_columns, payment_input_columns, reservation_input_columns, seat_input_columns,
    wallet_input_columns,
};

/// A row of the admission log.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AdmissionLogRow {
    token: String,
    user_id: String,
    concert_id: Uuid,
    issued_at: DateTime<Utc>,
    admitted_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    version: i64,
}

impl TryFrom<AdmissionLogRow> for crate::queue::TokenRecord {
    type Error = StoreError;
    fn try_from(r: AdmissionLogRow) -> StoreResult<Self> {
        Ok(Self {
            token: token(&r.token)?,
            user_id: user(&r.user_id)?,
            concert_id: crate::ids::ConcertId::from_uuid(r.concert_id),
            issued_at: r.issued_at,
            version: u64_of(r.version)?,
            state: crate::queue::TokenState::Active { admitted_at: r.admitted_at, expires_at: r.expires_at },
        })
    }
}

/// A token's history: its admission-log row, if any (every column null otherwise), and when a
/// payment was made with it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TokenHistoryRow {
    token: Option<String>,
    user_id: Option<String>,
    concert_id: Option<Uuid>,
    issued_at: Option<DateTime<Utc>>,
    admitted_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    version: Option<i64>,
    paid_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenHistoryRow> for crate::store::TokenHistory {
    type Error = StoreError;
    fn try_from(r: TokenHistoryRow) -> StoreResult<Self> {
        let admitted =
            match (r.token, r.user_id, r.concert_id, r.issued_at, r.admitted_at, r.expires_at, r.version) {
                (
                    Some(token),
                    Some(user_id),
                    Some(concert_id),
                    Some(issued_at),
                    Some(admitted_at),
                    Some(expires_at),
                    Some(version),
                ) => Some(
                    AdmissionLogRow {
                        token,
                        user_id,
                        concert_id,
                        issued_at,
                        admitted_at,
                        expires_at,
                        version,
                    }
                    .try_into()?,
                ),
                (None, ..) => None,
                _ => return Err(missing("a column of the admission log")),
            };
        Ok(Self { admitted, paid_at: r.paid_at, revoked_at: r.revoked_at, left_at: r.left_at })
    }
}
