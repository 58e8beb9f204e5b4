//! What the simulated clients saw, recorded as it happens.
//!
//! Every simulated person has one [`UserRecord`], updated at each answer (not at the end of its
//! story), so a run stopped mid-flow still leaves an exact account of what each client knows,
//! including requests whose answer never came (`*_unknown`): the audit must not blame the server
//! for those, nor trust them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Which scenario a simulated person runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Joins, waits, holds, charges, pays.
    Buyer,
    /// Joins, polls a little, walks away.
    Browser,
}

/// How a simulated person's story ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Still going (or stopped without an ending: the run was interrupted).
    InProgress,
    /// Paid and read the confirmed reservation back.
    Bought,
    /// Every seat was booked.
    SoldOut,
    /// No seat was available now (others held them).
    NoSeat,
    /// Every hold attempt met a conflict.
    GaveUpOnConflicts,
    /// The hold lapsed before the payment (`410 hold_expired`).
    HoldLapsed,
    /// The token expired mid-way (`401 token_expired`).
    TokenExpired,
    /// A browser walked away from the line on purpose.
    Abandoned,
    /// A browser left the line (`DELETE /api/v1/queue/tokens/current`), and its token then
    /// answered `401 token_expired`.
    Left,
    /// An operator revoked the person's token (`401 token_revoked`).
    Revoked,
    /// Bought, then cancelled the booking and got the points back (`--cancel-share`).
    Cancelled,
    /// Bought as many seats as the concert lets one buyer (`409 buyer_limit`), having bought at
    /// least one.
    AtCap,
    /// The run's time ended while waiting.
    RunEnded,
    /// A response was wrong or the server failed; see the errors.
    Failed,
}

/// A cancellation a client saw answered `200`: the payment refunded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenRefund {
    /// The refunded payment.
    pub payment_id: Uuid,
    /// The cancelled booking.
    pub reservation_id: Uuid,
    /// Its seat.
    pub seat_id: Uuid,
    /// Points back.
    pub amount: i64,
}

/// A payment a client saw answered `201`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenPayment {
    /// The payment.
    pub payment_id: Uuid,
    /// The reservation it confirmed.
    pub reservation_id: Uuid,
    /// The seat that reservation held.
    pub seat_id: Uuid,
    /// Points paid.
    pub amount: i64,
}

/// Everything one simulated person saw.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    /// The user id it acted as.
    pub user_id: String,
    /// Its scenario.
    pub role: Role,
    /// The server it talked to.
    pub host: String,
    /// When it joined, in ms since the attack started (client clock).
    pub joined_ms: u64,
    /// Its (last) token's number in line.
    pub line_number: Option<u64>,
    /// How often the number in line it saw changed (the opening's draw changes it once).
    pub line_changes: u32,
    /// It waited in the sale's pre-queue (an answer said when the sale opens).
    pub pre_queue: bool,
    /// Its number in line as first seen after the opening, for one that waited in the pre-queue.
    pub drawn_number: Option<u64>,
    /// Its token's identity (the credential's first 72 characters).
    pub token: Option<String>,
    /// When the run's operator revoked the person's token, as the server answered.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the server says it was admitted.
    pub admitted_at: Option<DateTime<Utc>>,
    /// When it first saw itself ACTIVE, in ms since the attack started.
    pub active_seen_ms: Option<u64>,
    /// Points added by charges answered `200`.
    pub charged: i64,
    /// Charges sent whose answer never came, even after retries with the same key.
    pub charges_unknown: u32,
    /// Payments answered `201`.
    pub payments: Vec<SeenPayment>,
    /// Reservations whose payment was sent but never answered.
    pub payments_unknown: Vec<Uuid>,
    /// Cancellations answered `200`.
    pub refunds: Vec<SeenRefund>,
    /// Bookings whose cancellation was sent but never answered.
    pub refunds_unknown: Vec<Uuid>,
    /// Payments answered `201` that paid several seats at once (`--pair-share`).
    pub paid_together: u32,
    /// Holds tried.
    pub hold_attempts: u32,
    /// Holds answered `409 seat_unavailable`.
    pub hold_conflicts: u32,
    /// How it ended.
    pub outcome: Outcome,
}

impl UserRecord {
    /// A record of someone who just joined: nothing seen yet.
    #[must_use]
    pub fn new(user_id: &str, role: Role, host: &str, joined_ms: u64) -> Self {
        Self {
            user_id: user_id.to_owned(),
            role,
            host: host.to_owned(),
            joined_ms,
            line_number: None,
            line_changes: 0,
            pre_queue: false,
            drawn_number: None,
            token: None,
            revoked_at: None,
            admitted_at: None,
            active_seen_ms: None,
            charged: 0,
            charges_unknown: 0,
            payments: Vec::new(),
            payments_unknown: Vec::new(),
            paid_together: 0,
            refunds: Vec::new(),
            refunds_unknown: Vec::new(),
            hold_attempts: 0,
            hold_conflicts: 0,
            outcome: Outcome::InProgress,
        }
    }

    /// Whether every money-moving request of this person got an answer.
    #[must_use]
    pub fn is_determinate(&self) -> bool {
        self.charges_unknown == 0 && self.payments_unknown.is_empty() && self.refunds_unknown.is_empty()
    }

    /// Points the client knows came back.
    #[must_use]
    pub fn refunded(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    /// Points the client knows it paid.
    #[must_use]
    pub fn paid(&self) -> i64 {
        self.payments.iter().map(|p| p.amount).sum()
    }
}

/// The shared notebook of every simulated person, plus run-wide counters.
#[derive(Debug, Default)]
pub struct Observations {
    users: Mutex<HashMap<String, UserRecord>>,
    contract_violations: AtomicU64,
    server_errors: AtomicU64,
    shed: AtomicU64,
    failovers: AtomicU64,
}

impl Observations {
    /// Opens a record.
    pub fn start(&self, user_id: &str, role: Role, host: &str, joined_ms: u64) {
        let record = UserRecord::new(user_id, role, host, joined_ms);
        self.lock().insert(user_id.to_owned(), record);
    }

    /// Changes a record (no-op for an unknown user).
    pub fn update(&self, user_id: &str, change: impl FnOnce(&mut UserRecord)) {
        if let Some(record) = self.lock().get_mut(user_id) {
            change(record);
        }
    }

    /// Counts a response that broke the contract (wrong status or body).
    pub fn contract_violation(&self) {
        self.contract_violations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a 5xx answer or a request with no answer.
    pub fn server_error(&self) {
        self.server_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request the server shed (503 `overloaded` with Retry-After) or rate limited (429
    /// `rate_limited`), retried after the pause it asked for.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request sent again to another server because its server did not answer (the
    /// connection failed): a node that died.
    pub fn failover(&self) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent again to another server so far.
    #[must_use]
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Requests shed by the server so far.
    #[must_use]
    pub fn sheds(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Responses that broke the contract so far.
    #[must_use]
    pub fn contract_violations(&self) -> u64 {
        self.contract_violations.load(Ordering::Relaxed)
    }

    /// 5xx answers and unanswered requests so far.
    #[must_use]
    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    /// Whether the run's operator revoked `user_id`'s token.
    #[must_use]
    pub fn revoked(&self, user_id: &str) -> bool {
        self.lock().get(user_id).is_some_and(|r| r.revoked_at.is_some())
    }

    /// A copy of every record, by user id.
    #[must_use]
    pub fn snapshot(&self) -> Vec<UserRecord> {
        let mut records: Vec<UserRecord> = self.lock().values().cloned().collect();
        records.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        records
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserRecord>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
