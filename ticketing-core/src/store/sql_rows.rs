//! Rows as the SQL backends return them (the `FromRow` derives are generic over the database),
//! and their conversion into domain records. Every conversion checks what the database cannot
//! (an unknown status, a negative number where the domain has none) and reports
//! [`StoreError::Corrupt`] rather than guessing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::catalog::{Concert, QueueSettings, Schedule, ScheduleAvailability, Seat, SeatRecord, SeatState};
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
            ..AdmissionSnapshot::default()
        },
        None => AdmissionSnapshot::default(),
    };
    snapshot.active = u32::try_from(active).unwrap_or(u32::MAX);
    snapshot.waiting = u64_of(waiting)?;
    Ok(snapshot)
}
