//! The write steps of the SQL backends, stated once for PostgreSQL and MySQL / MariaDB.
//!
//! Each write step is one routine in the database (a PL/pgSQL function on PostgreSQL, a stored
//! procedure on MySQL; the migrations `…_one_round_trip_steps` of each), with the same
//! arguments in the same order, so that a step is one statement and one network round trip:
//!
//! | step | routine | arguments |
//! |---|---|---:|
//! | [`BookingStore::claim_seat`](crate::store::BookingStore::claim_seat) | `ticketing_claim_seat` | 22 |
//! | [`BookingStore::commit_payment`](crate::store::BookingStore::commit_payment) | `ticketing_commit_payment` | 26 |
//! | [`BookingStore::release_seat`](crate::store::BookingStore::release_seat) | `ticketing_release_seat` | 3 |
//! | [`WalletStore::apply_charge`](crate::store::WalletStore::apply_charge) | `ticketing_apply_charge` | 16 |
//! | [`WalletStore::save_outcome`](crate::store::WalletStore::save_outcome) | `ticketing_save_outcome` | 6 |
//!
//! What differs by dialect is only how a routine is called ([`Dialect::call`]) and how a driver
//! error is named ([`routine_error`] reads the SQLSTATE both raise). The arguments are bound by
//! the macros below, which expand to the same `.bind(…)` chain on either driver's query.
//!
//! The routines decide nothing: the service's pure rules planned the write; a routine writes the
//! plan only where what it was planned from is unchanged, and raises SQLSTATE `TKCNF` (a
//! compare-and-set lost; the message names what) or `TKLIM` (the per-token hold limit).

use crate::error::StoreError;

/// How a SQL dialect calls a step's routine.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    /// `SELECT routine($1, …, $n)`.
    Postgres,
    /// `CALL routine(?, …, ?)`.
    MySql,
}

impl Dialect {
    /// The statement that calls `routine` with `args` arguments.
    pub(crate) fn call(self, routine: &str, args: usize) -> String {
        let placeholders: Vec<String> = match self {
            Self::Postgres => (1..=args).map(|i| format!("${i}")).collect(),
            Self::MySql => vec!["?".to_owned(); args],
        };
        let verb = match self {
            Self::Postgres => "SELECT",
            Self::MySql => "CALL",
        };
        format!("{verb} {routine}({})", placeholders.join(", "))
    }
}

/// The statements of the steps in one dialect, built once per process.
#[derive(Debug)]
pub(crate) struct Steps {
    pub claim_seat: String,
    pub commit_payment: String,
    pub release_seat: String,
    pub apply_charge: String,
    pub save_outcome: String,
}

impl Steps {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            claim_seat: dialect.call("ticketing_claim_seat", 22),
            commit_payment: dialect.call("ticketing_commit_payment", 26),
            release_seat: dialect.call("ticketing_release_seat", 3),
            apply_charge: dialect.call("ticketing_apply_charge", 16),
            save_outcome: dialect.call("ticketing_save_outcome", 6),
        }
    }
}

/// What a step routine's own SQLSTATE means, if it is one of theirs.
pub(crate) fn routine_error(code: Option<&str>, message: &str) -> Option<StoreError> {
    match code? {
        "TKCNF" => Some(StoreError::Conflict(
            ["seat", "reservation", "wallet", "idempotency key"]
                .into_iter()
                .find(|what| *what == message)
                .unwrap_or("store step"),
        )),
        "TKLIM" => Some(StoreError::HoldLimitReached),
        _ => None,
    }
}

/// Binds an idempotency record's six columns (user, key, fingerprint, outcome, created, expires;
/// all `NULL` without a record: nothing is stored).
macro_rules! bind_key {
    ($query:expr, $record:expr) => {{
        let record: Option<&$crate::idempotency::IdempotencyRecord> = $record;
        $query
            .bind(record.map(|r| r.user_id.as_str()))
            .bind(record.map(|r| r.key.as_str()))
            .bind(record.map(|r| r.fingerprint.as_str()))
            .bind(record.map(|r| r.outcome.as_str()))
            .bind(record.map(|r| r.created_at))
            .bind(record.map(|r| r.expires_at))
    }};
}

/// Binds a wallet write and its ledger entry: user, expected version, balance, version, then the
/// entry's id, user, kind, amount, balance after and time. Evaluates to a `StoreResult`.
macro_rules! bind_wallet {
    ($query:expr, $expected:expr, $wallet:expr, $entry:expr) => {{
        let (wallet, entry): (&$crate::payment::Wallet, &$crate::payment::LedgerEntry) = ($wallet, $entry);
        (|| -> $crate::store::StoreResult<_> {
            Ok($query
                .bind(wallet.user_id.as_str())
                .bind($crate::store::sql_rows::i64_of($expected)?)
                .bind(wallet.balance.get())
                .bind($crate::store::sql_rows::i64_of(wallet.version)?)
                .bind(entry.id.as_uuid())
                .bind(entry.user_id.as_str())
                .bind($crate::store::sql_rows::name(&entry.kind))
                .bind(entry.amount.get())
                .bind(entry.balance_after.get())
                .bind(entry.at))
        })()
    }};
}

/// `ticketing_claim_seat`'s 22 arguments: the strategy's name, the seat, its expected fence, the
/// external lock's fence, the reservation's columns, the instant, the limit, the superseded hold
/// and the key. Evaluates to a `StoreResult`.
macro_rules! claim_seat_args {
    ($query:expr, $strategy:expr, $plan:expr, $lock_fence:expr, $idempotency:expr) => {{
        let plan: &$crate::hold::HoldPlan = $plan;
        let r = &plan.reservation;
        (|| -> $crate::store::StoreResult<_> {
            let query = $query
                .bind($strategy)
                .bind(r.seat_id.as_uuid())
                .bind($crate::store::sql_rows::i64_of(plan.expected_fence.get())?)
                .bind($lock_fence)
                .bind(r.id.as_uuid())
                .bind(r.user_id.as_str())
                .bind(r.token.as_str())
                .bind(r.schedule_id.as_uuid())
                .bind(r.concert_id.as_uuid())
                .bind(r.price.get())
                .bind($crate::store::sql_rows::i64_of(r.fence.get())?)
                .bind(r.held_at)
                .bind(r.expires_at)
                .bind(plan.now)
                .bind($crate::store::sql_rows::i32_of(plan.holds_per_token)?)
                .bind(plan.supersedes.map(|id| id.as_uuid()));
            Ok($crate::store::sql_steps::bind_key!(query, $idempotency))
        })()
    }};
}

/// `ticketing_commit_payment`'s 26 arguments: the seat, its expected fence, the reservation, the
/// seat's new fence, the wallet and entry ([`bind_wallet!`]), the payment's columns and the key.
/// Evaluates to a `StoreResult`.
macro_rules! commit_payment_args {
    ($query:expr, $plan:expr, $idempotency:expr) => {{
        let plan: &$crate::payment::PaymentPlan = $plan;
        let (r, p) = (&plan.reservation, &plan.payment);
        (|| -> $crate::store::StoreResult<_> {
            let query = $query
                .bind(r.seat_id.as_uuid())
                .bind($crate::store::sql_rows::i64_of(plan.expected_fence.get())?)
                .bind(r.id.as_uuid())
                .bind($crate::store::sql_rows::i64_of(plan.new_fence.get())?);
            let query = $crate::store::sql_steps::bind_wallet!(
                query,
                plan.expected_wallet_version,
                &plan.wallet,
                &plan.entry
            )?
            .bind(p.id.as_uuid())
            .bind(p.reservation_id.as_uuid())
            .bind(p.seat_id.as_uuid())
            .bind(p.user_id.as_str())
            .bind(p.amount.get())
            .bind(p.at);
            Ok($crate::store::sql_steps::bind_key!(query, $idempotency))
        })()
    }};
}

/// `ticketing_apply_charge`'s 16 arguments: the wallet and entry, then the key. Evaluates to a
/// `StoreResult`.
macro_rules! apply_charge_args {
    ($query:expr, $plan:expr, $idempotency:expr) => {{
        let plan: &$crate::payment::ChargePlan = $plan;
        $crate::store::sql_steps::bind_wallet!($query, plan.expected_version, &plan.wallet, &plan.entry)
            .map(|query| $crate::store::sql_steps::bind_key!(query, $idempotency))
    }};
}

/// `ticketing_release_seat`'s 3 arguments: the seat, its expected fence, the reservation.
/// Evaluates to a `StoreResult`.
macro_rules! release_seat_args {
    ($query:expr, $plan:expr) => {{
        let plan: &$crate::hold::ReleasePlan = $plan;
        $crate::store::sql_rows::i64_of(plan.expected_fence.get())
            .map(|fence| $query.bind(plan.seat_id.as_uuid()).bind(fence).bind(plan.reservation_id.as_uuid()))
    }};
}

pub(crate) use {
    apply_charge_args, bind_key, bind_wallet, claim_seat_args, commit_payment_args, release_seat_args,
};
