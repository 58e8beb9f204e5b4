//! The bodies of the ticketing API as a client reads them.
//!
//! The load test speaks HTTP only, so it keeps its own copy of the contract instead of linking
//! the server's types: a body that does not parse into these (a missing field, a wrong type, an
//! unknown status) is a broken response and counts as an error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A queue token's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenStatus {
    /// In line.
    Waiting,
    /// Admitted.
    Active,
    /// Over.
    Expired,
}

/// `POST /api/v1/queue/tokens` and `GET /api/v1/queue/tokens/current`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// The credential.
    pub token: String,
    /// Whose.
    pub user_id: String,
    /// For which concert.
    pub concert_id: Uuid,
    /// Its status.
    pub status: TokenStatus,
    /// Place in line, while waiting.
    pub position: Option<u64>,
    /// Estimated seconds to admission, while waiting.
    pub eta_seconds: Option<u64>,
    /// Number in line, while waiting (older servers leave it out).
    #[serde(default)]
    pub line_number: Option<u64>,
    /// When it was admitted, while active (older servers leave it out).
    #[serde(default)]
    pub admitted_at: Option<DateTime<Utc>>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// The concert is sold out: a waiting token need not poll any more (older servers leave it
    /// out).
    #[serde(default)]
    pub sold_out: bool,
    /// When the sale opens, while the token waits in its pre-queue (older servers leave it out).
    #[serde(default)]
    pub sales_open_at: Option<DateTime<Utc>>,
}

impl Token {
    /// The token's identity: its credential's first 72 characters (the rest is a claim the
    /// server may sign again, after the opening's draw).
    #[must_use]
    pub fn identity(&self) -> &str {
        identity(&self.token)
    }
}

/// The identity part of a credential.
#[must_use]
pub fn identity(credential: &str) -> &str {
    credential.get(..72).unwrap_or(credential)
}

/// One concert of `GET /api/v1/concerts`, as far as the audit reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedConcert {
    /// Its id.
    pub concert_id: Uuid,
    /// When its sale opens, if it is scheduled.
    #[serde(default)]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// `random` or `fifo` (older servers leave it out).
    #[serde(default)]
    pub pre_queue: Option<String>,
    /// Its recorded opening.
    #[serde(default)]
    pub opened: Option<Opening>,
    /// The most seats one buyer may buy of it.
    #[serde(default)]
    pub max_seats_per_buyer: Option<u32>,
}

/// A sale's recorded opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Opening {
    /// When.
    pub at: DateTime<Utc>,
    /// The seed of the pre-queue's draw.
    pub seed: u64,
}

/// One schedule with its available seats.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Its id.
    pub schedule_id: Uuid,
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// Seats that can be held now.
    pub available_seats: u32,
}

/// A seat's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatus {
    /// Can be held.
    Available,
    /// Held.
    Held,
    /// Paid for.
    Booked,
}

/// One seat.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seat {
    /// Its id.
    pub seat_id: Uuid,
    /// Its number.
    pub number: u32,
    /// Its price.
    pub price: i64,
    /// Its status now.
    pub status: SeatStatus,
}

/// A reservation's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// Holding its seat.
    Held,
    /// Paid.
    Confirmed,
    /// Lapsed.
    Expired,
    /// Given back.
    Released,
}

/// A reservation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Its id.
    pub reservation_id: Uuid,
    /// The seat.
    pub seat_id: Uuid,
    /// The seat's schedule.
    pub schedule_id: Uuid,
    /// Its status.
    pub status: ReservationStatus,
    /// The price.
    pub price: i64,
    /// When the hold lapses.
    pub expires_at: DateTime<Utc>,
}

/// A completed payment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// Its first seat's payment id.
    pub payment_id: Uuid,
    /// Its first seat's reservation.
    pub reservation_id: Uuid,
    /// Points paid, over all its seats.
    pub amount: i64,
    /// The balance right after.
    pub balance: i64,
    /// `COMPLETED`.
    pub status: String,
    /// Each seat's payment (older servers leave it out: one seat, the fields above).
    #[serde(default)]
    pub payments: Vec<PaidSeat>,
}

/// A cancelled booking.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    /// The booking.
    pub reservation_id: Uuid,
    /// The refunded payment.
    pub payment_id: Uuid,
    /// The seat, available again.
    pub seat_id: Uuid,
    /// Points back.
    pub amount: i64,
    /// The balance right after.
    pub balance: i64,
    /// `CANCELLED`.
    pub status: String,
}

/// One seat of a [`Payment`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaidSeat {
    /// Its payment's id.
    pub payment_id: Uuid,
    /// The reservation it confirmed.
    pub reservation_id: Uuid,
    /// The seat it booked.
    pub seat_id: Uuid,
    /// Points paid for it.
    pub amount: i64,
}

/// A balance.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// Whose.
    pub user_id: String,
    /// Points.
    pub balance: i64,
}

/// An error body (RFC 9457 problem details).
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    /// The stable code to branch on.
    pub code: String,
    /// What happened.
    #[serde(default)]
    pub detail: String,
}

/// `POST /api/v1/admin/concerts`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewConcert {
    /// The title.
    pub title: String,
    /// The dates.
    pub schedules: Vec<NewSchedule>,
    /// The waiting-room caps.
    pub queue: QueueSettings,
    /// When the sale opens (`None`: at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// `random` or `fifo`: how the pre-queue is ordered at the opening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_queue: Option<String>,
    /// The most seats one buyer may buy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seats_per_buyer: Option<u32>,
    /// How many seats one token may hold at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds_per_token: Option<u32>,
    /// Until how long before a performance its buyers may cancel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_until_secs_before_start: Option<u64>,
}

/// One date of a [`NewConcert`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSchedule {
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// How many seats.
    pub seat_count: u32,
    /// Each seat's price.
    pub price: i64,
}

/// Waiting-room caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    /// At most this many active at once.
    pub max_active: u32,
    /// At most this many admitted per interval.
    pub admit_batch: u32,
    /// The admission interval.
    pub admit_interval_ms: u64,
    /// A waiting token not polled this long loses its place.
    pub waiting_idle_secs: u64,
    /// An admitted token lasts this long.
    pub active_ttl_secs: u64,
}

/// The answer to [`NewConcert`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedConcert {
    /// Its id.
    pub concert_id: Uuid,
    /// Its dates.
    pub schedules: Vec<CreatedSchedule>,
    /// Its caps as stored.
    pub queue: QueueSettings,
}

/// One date of a [`CreatedConcert`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSchedule {
    /// Its id.
    pub schedule_id: Uuid,
    /// How many seats.
    pub seat_count: u32,
    /// Each seat's price.
    pub price: i64,
}

/// `GET /api/v1/admin/concerts/{id}/sales`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sales {
    /// The concert.
    pub concert_id: Uuid,
    /// Its dates.
    pub schedules: Vec<ScheduleSales>,
}

/// One date of [`Sales`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSales {
    /// Its id.
    pub schedule_id: Uuid,
    /// Its seats.
    pub seats: Vec<SeatSale>,
}

/// One seat of [`Sales`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatSale {
    /// Its id.
    pub seat_id: Uuid,
    /// Its number.
    pub number: u32,
    /// Its status.
    pub status: SeatStatus,
    /// For a booked seat, the confirmed reservation.
    pub reservation_id: Option<Uuid>,
    /// The reservation's user.
    pub user_id: Option<String>,
    /// The payment.
    pub payment_id: Option<Uuid>,
    /// The payment's user.
    pub paid_by: Option<String>,
    /// Points paid.
    pub amount: Option<i64>,
    /// When.
    pub paid_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/admin/users/{id}/account`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Whose.
    pub user_id: String,
    /// Points now.
    pub balance: i64,
    /// Every charge and payment.
    pub ledger: Vec<LedgerEntry>,
}

/// A ledger entry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerKind {
    /// Points in.
    Charge,
    /// Points out.
    Payment,
    /// Points back, for a cancelled booking.
    Refund,
}

/// One ledger entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Its kind.
    pub kind: LedgerKind,
    /// Points (positive).
    pub amount: i64,
    /// The balance after it.
    pub balance_after: i64,
    /// The payment, for a payment entry.
    pub payment_id: Option<Uuid>,
}
