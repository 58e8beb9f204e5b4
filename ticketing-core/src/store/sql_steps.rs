//! The write steps of the SQL backends, stated once for PostgreSQL and MySQL / MariaDB.
//!
//! Each write step is one routine in the database (a PL/pgSQL function on PostgreSQL, a stored
//! procedure on MySQL; the migrations `…_one_round_trip_steps` of each), with the same
//! arguments in the same order, so that a step is one statement and one network round trip:
//!
//! | step | routine | arguments |
//! |---|---|---:|
//! | [`BookingStore::claim_seat`](crate::store::BookingStore::claim_seat) | `ticketing_claim_seat` | 22 |
//! | [`BookingStore::commit_payment`](crate::store::BookingStore::commit_payment) | `ticketing_pay` | 12 |
//! | [`BookingStore::cancel_booking`](crate::store::BookingStore::cancel_booking) | `ticketing_cancel_booking` | 19 |
//! | [`BookingStore::release_seat`](crate::store::BookingStore::release_seat) | `ticketing_release_seat` | 3 |
//! | [`WalletStore::apply_charge`](crate::store::WalletStore::apply_charge) | `ticketing_apply_charge` | 16 |
//! | [`WalletStore::save_outcome`](crate::store::WalletStore::save_outcome) | `ticketing_save_outcome` | 6 |
//!
//! What differs by dialect is only how a routine is called ([`Dialect::call`]) and how a driver
//! error is named ([`routine_error`] reads the SQLSTATE both raise). The arguments are bound by
//! the macros below, which expand to the same `.bind(…)` chain on either driver's query.
//!
//! The reads both dialects state alike are here too, written once in MySQL's spelling (`?`
//! placeholders, `` `key` `` quoted) and turned into PostgreSQL's by [`Dialect::sql`]; the
//! macros `catalog_reads!`, `wallet_steps!` and `booking_steps!` expand to those trait
//! methods in each backend's `impl` (which must have a `db(what)` error mapper, a `STEPS:
//! Steps` of its dialect and a `pool` field).
//!
//! The routines decide nothing: the service's pure rules planned the write; a routine writes the
//! plan only where what it was planned from is unchanged, and raises SQLSTATE `TKCNF` (a
//! compare-and-set lost; the message names what) or `TKLIM` (the per-token hold limit).

use crate::error::StoreError;
use crate::store::sql_rows::{
    key_input_columns, payment_input_columns, reservation_input_columns, seat_input_columns,
    wallet_input_columns,
};

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

    /// A table `x` of the ids bound to one placeholder as their simple hex forms joined by
    /// commas ([`id_list`]), with columns `n` (the place in the list, from 1) and `id`; and the
    /// expression that compares `x.id` with a stored id.
    fn id_table(self) -> (&'static str, &'static str) {
        match self {
            Self::Postgres => ("unnest(string_to_array(?, ',')::uuid[]) WITH ORDINALITY AS x(id, n)", "x.id"),
            Self::MySql => (
                "JSON_TABLE(CONCAT('[\"', REPLACE(?, ',', '\",\"'), '\"]'), '$[*]'
                    COLUMNS (n FOR ORDINALITY, id CHAR(32) CHARACTER SET ascii PATH '$')) x",
                "UNHEX(x.id)",
            ),
        }
    }

    /// A condition that `b.id` is none of the ids bound to one placeholder as [`id_list`] joins
    /// them (an empty list: always true).
    fn not_among(self) -> &'static str {
        match self {
            Self::Postgres => "b.id <> ALL (string_to_array(?, ',')::uuid[])",
            Self::MySql => {
                "b.id NOT IN (SELECT UNHEX(y.id) FROM JSON_TABLE(CONCAT('[\"', REPLACE(?, ',', '\",\"'), '\"]'), '$[*]'
                    COLUMNS (id CHAR(32) CHARACTER SET ascii PATH '$')) y)"
            }
        }
    }

    /// `template`, written in MySQL's spelling (`?` placeholders, `` `key` `` quoted), in this
    /// dialect: PostgreSQL numbers the placeholders (`$1`, `$2`, …) and needs no quotes around
    /// `key`. Templates hold no string literal with a `?` or a backquote.
    pub(crate) fn sql(self, template: &str) -> String {
        match self {
            Self::MySql => template.to_owned(),
            Self::Postgres => {
                let mut out = String::with_capacity(template.len() + 16);
                let mut n = 0;
                for c in template.chars() {
                    match c {
                        '?' => {
                            n += 1;
                            out.push('$');
                            out.push_str(&n.to_string());
                        }
                        '`' => {}
                        c => out.push(c),
                    }
                }
                out
            }
        }
    }
}

/// A step's inputs: the seat and what is stored under the request's key.
const HOLD_INPUTS: &str = concat!(
    "SELECT ",
    seat_input_columns!(),
    ", ",
    key_input_columns!(),
    ", (SELECT COUNT(*) FROM reservations b
         WHERE b.user_id = ? AND b.concert_id = s.concert_id AND b.status = 'CONFIRMED') AS bought",
    " FROM (SELECT 1) one
       LEFT JOIN seats s ON s.id = ?
       LEFT JOIN idempotency_keys k ON k.user_id = ? AND k.`key` = ?"
);

/// A payment's inputs, a row per reservation named in the order named: the wallet, the
/// reservation, its seat, whether its token was revoked, the key's record and how many seats of
/// the concert the reservation's user has bought, the named ones left out (`{not_named}`,
/// [`Dialect::not_among`], the first placeholder). `{ids}` is the dialect's table of the named
/// ids ([`Dialect::id_table`]: columns `n`, the place in the list, and `id`, joined by `{id}`);
/// it takes the second. Both are bound to [`id_list`].
const PAYMENT_INPUTS: &str = concat!(
    "SELECT ",
    wallet_input_columns!(),
    ", ",
    reservation_input_columns!(),
    ", ",
    seat_input_columns!(),
    ", ",
    key_input_columns!(),
    ", (SELECT COUNT(*) FROM reservations b
         WHERE b.user_id = r.user_id AND b.concert_id = r.concert_id AND b.status = 'CONFIRMED'
           AND {not_named}) AS bought,
       (SELECT COUNT(*) FROM ended_tokens v WHERE v.token = r.token AND v.reason = 'REVOKED') AS r_revoked",
    " FROM {ids}
       LEFT JOIN wallets w ON w.user_id = ?
       LEFT JOIN reservations r ON r.id = {id}
       LEFT JOIN seats s ON s.id = r.seat_id
       LEFT JOIN idempotency_keys k ON k.user_id = ? AND k.`key` = ?
      ORDER BY x.n"
);

/// A cancellation's inputs: the reservation, its seat, its payment, its buyer's wallet and what
/// is stored under the key for that buyer.
const REFUND_INPUTS: &str = concat!(
    "SELECT ",
    wallet_input_columns!(),
    ", ",
    reservation_input_columns!(),
    ", ",
    seat_input_columns!(),
    ", ",
    payment_input_columns!(),
    ", ",
    key_input_columns!(),
    " FROM (SELECT 1) one
       LEFT JOIN reservations r ON r.id = ?
       LEFT JOIN wallets w ON w.user_id = r.user_id
       LEFT JOIN seats s ON s.id = r.seat_id
       LEFT JOIN payments p ON p.reservation_id = r.id
       LEFT JOIN idempotency_keys k ON k.user_id = r.user_id AND k.`key` = ?"
);

/// A charge's inputs: the wallet and the key's record.
const CHARGE_INPUTS: &str = concat!(
    "SELECT ",
    wallet_input_columns!(),
    ", ",
    key_input_columns!(),
    " FROM (SELECT 1) one
       LEFT JOIN wallets w ON w.user_id = ?
       LEFT JOIN idempotency_keys k ON k.user_id = ? AND k.`key` = ?"
);

/// A token's admission-log row (nulls when it has none), when a payment was made with it (a
/// booking cancelled since was paid all the same: its token stays expired), and when it was
/// revoked or left the line.
const TOKEN_HISTORY: &str =
    "SELECT a.token, a.user_id, a.concert_id, a.issued_at, a.admitted_at, a.expires_at,
       a.version,
       (SELECT MIN(p.at) FROM reservations r JOIN payments p ON p.reservation_id = r.id
         WHERE r.token = ? AND r.status IN ('CONFIRMED', 'CANCELLED')) AS paid_at,
       (SELECT v.at FROM ended_tokens v WHERE v.token = ? AND v.reason = 'REVOKED') AS revoked_at,
       (SELECT v.at FROM ended_tokens v WHERE v.token = ? AND v.reason = 'LEFT') AS left_at
  FROM (SELECT 1) one LEFT JOIN queue_admissions a ON a.token = ?";

/// A concert's admissions open at an instant: not ended, not paid with, not revoked (a leave that
/// lost its race to the admission does not count: the admission stands).
const OPEN_ADMISSIONS: &str =
    "SELECT a.token, a.user_id, a.concert_id, a.issued_at, a.admitted_at, a.expires_at,
       a.version
  FROM queue_admissions a
 WHERE a.concert_id = ? AND a.expires_at > ?
   AND NOT EXISTS (SELECT 1 FROM reservations r
                    WHERE r.token = a.token AND r.status IN ('CONFIRMED', 'CANCELLED'))
   AND NOT EXISTS (SELECT 1 FROM ended_tokens v WHERE v.token = a.token AND v.reason = 'REVOKED')";

/// A concert's seats counted by price (a handful of rows): how many, how many held by a hold
/// not lapsed at the bound time, how many sold. Through the schedules, so each dialect's index
/// on a schedule's seats serves it.
const SEAT_TALLY: &str = "SELECT price, COUNT(*) AS seats,
        COUNT(CASE WHEN state = 'HELD' AND hold_expires_at > ? THEN 1 END) AS held,
        COUNT(CASE WHEN state = 'BOOKED' THEN 1 END) AS sold
   FROM seats WHERE schedule_id IN (SELECT id FROM schedules WHERE concert_id = ?)
  GROUP BY price";

/// The statements of one dialect, built once per process.
#[derive(Debug)]
pub(crate) struct Steps {
    pub claim_seat: String,
    pub commit_payment: String,
    pub release_seat: String,
    pub apply_charge: String,
    pub save_outcome: String,
    pub hold_inputs: String,
    pub payment_inputs: String,
    pub cancel_booking: String,
    pub refund_inputs: String,
    pub charge_inputs: String,
    pub concerts: String,
    pub concert: String,
    pub change_sale: String,
    pub sale_actions: String,
    pub seat_tally: String,
    pub seats: String,
    pub seat: String,
    pub wallet: String,
    pub ledger: String,
    pub idempotency: String,
    pub reservation: String,
    pub reservations_of_token: String,
    pub reservations_of_user: String,
    pub seats_bought: String,
    pub payment_of: String,
    pub token_history: String,
    pub record_leave: String,
    pub waiting_line: String,
    pub revoke_token: String,
    pub open_admissions: String,
    pub generations: String,
    dialect: Dialect,
}

impl Steps {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            claim_seat: dialect.call("ticketing_claim_seat", 22),
            commit_payment: dialect.call("ticketing_pay", 12),
            release_seat: dialect.call("ticketing_release_seat", 3),
            apply_charge: dialect.call("ticketing_apply_charge", 16),
            save_outcome: dialect.call("ticketing_save_outcome", 6),
            hold_inputs: dialect.sql(HOLD_INPUTS),
            cancel_booking: dialect.call("ticketing_cancel_booking", 19),
            refund_inputs: dialect.sql(REFUND_INPUTS),
            payment_inputs: {
                let (ids, id) = dialect.id_table();
                let template = PAYMENT_INPUTS.replace("{not_named}", dialect.not_among());
                dialect.sql(&template.replace("{ids}", ids).replace("{id}", id))
            },
            charge_inputs: dialect.sql(CHARGE_INPUTS),
            concerts: dialect.sql("SELECT * FROM concerts ORDER BY created"),
            concert: dialect.sql("SELECT * FROM concerts WHERE id = ?"),
            change_sale: dialect.call("ticketing_update_concert", 16),
            sale_actions: dialect.sql("SELECT * FROM sale_actions WHERE concert_id = ? ORDER BY seq"),
            seat_tally: dialect.sql(SEAT_TALLY),
            seats: dialect.sql("SELECT * FROM seats WHERE schedule_id = ? ORDER BY number"),
            seat: dialect.sql("SELECT * FROM seats WHERE id = ?"),
            wallet: dialect.sql("SELECT * FROM wallets WHERE user_id = ?"),
            ledger: dialect.sql("SELECT * FROM ledger WHERE user_id = ? ORDER BY seq"),
            idempotency: dialect.sql("SELECT * FROM idempotency_keys WHERE user_id = ? AND `key` = ?"),
            reservation: dialect.sql("SELECT * FROM reservations WHERE id = ?"),
            reservations_of_token: dialect.sql("SELECT * FROM reservations WHERE token = ?"),
            reservations_of_user: dialect.sql(&format!(
                "SELECT * FROM reservations WHERE user_id = ? ORDER BY held_at DESC, id DESC LIMIT {}",
                crate::limits::RESERVATIONS_PER_USER_READ
            )),
            seats_bought: dialect.sql(&format!(
                "SELECT COUNT(*) FROM reservations b
                  WHERE b.user_id = ? AND b.concert_id = ? AND b.status = 'CONFIRMED' AND {}",
                dialect.not_among()
            )),
            payment_of: dialect.sql("SELECT * FROM payments WHERE reservation_id = ?"),
            token_history: dialect.sql(TOKEN_HISTORY),
            waiting_line: dialect.sql(
                "SELECT seq, token FROM queue_tokens WHERE concert_id = ? AND status = 'WAITING' ORDER BY seq LIMIT ?",
            ),
            record_leave: dialect.sql(&format!(
                "INSERT INTO ended_tokens (token, concert_id, user_id, at, reason) VALUES (?, ?, ?, ?, 'LEFT') {}",
                match dialect {
                    Dialect::Postgres => "ON CONFLICT (token) DO NOTHING",
                    Dialect::MySql => "ON DUPLICATE KEY UPDATE token = token",
                }
            )),
            revoke_token: dialect.call("ticketing_revoke_token", 7),
            open_admissions: dialect.sql(OPEN_ADMISSIONS),
            generations: dialect
                .sql("SELECT MIN(generation), MAX(generation) FROM queue_admissions WHERE concert_id = ?"),
            dialect,
        }
    }

    /// The insert of `rows` admissions into the log, keeping a token's first row: its eight
    /// columns per row are bound by [`admission_log!`]'s `log_admissions`.
    pub(crate) fn log_admissions(&self, rows: usize) -> String {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
        let keep = match self.dialect {
            Dialect::Postgres => "ON CONFLICT (token) DO NOTHING",
            Dialect::MySql => "ON DUPLICATE KEY UPDATE token = token",
        };
        self.dialect.sql(&format!(
            "INSERT INTO queue_admissions
               (token, user_id, concert_id, issued_at, admitted_at, expires_at, generation, version)
             VALUES {values} {keep}"
        ))
    }
}

/// What a step routine's own SQLSTATE means, if it is one of theirs.
pub(crate) fn routine_error(code: Option<&str>, message: &str) -> Option<StoreError> {
    match code? {
        "TKCNF" => Some(StoreError::Conflict(
            ["seat", "reservation", "wallet", "payment", "idempotency key", "concert"]
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

/// `ticketing_pay`'s 12 arguments: the wallet (user, expected version, balance, version), the
/// instant, the seats as one JSON array ([`paid_seats_json`]) and the key. Evaluates to a
/// `StoreResult`.
macro_rules! commit_payment_args {
    ($query:expr, $plan:expr, $idempotency:expr) => {{
        let plan: &$crate::payment::PaymentPlan = $plan;
        (|| -> $crate::store::StoreResult<_> {
            let at = plan.seats.first().map(|s| s.payment.at);
            let query = $query
                .bind(plan.wallet.user_id.as_str())
                .bind($crate::store::sql_rows::i64_of(plan.expected_wallet_version)?)
                .bind(plan.wallet.balance.get())
                .bind($crate::store::sql_rows::i64_of(plan.wallet.version)?)
                .bind(at)
                .bind($crate::store::sql_steps::paid_seats_json(plan)?);
            Ok($crate::store::sql_steps::bind_key!(query, $idempotency))
        })()
    }};
}

/// A payment's seats as `ticketing_pay` reads them: a JSON array, in the plan's (seat id)
/// order, of objects with the seat, its expected fence, the reservation, the seat's new fence,
/// the ledger entry's id, the amount, the balance after the entry and the payment's id (ids in
/// their simple hex form, which both dialects read).
pub(crate) fn paid_seats_json(plan: &crate::payment::PaymentPlan) -> crate::store::StoreResult<String> {
    use crate::store::sql_rows::i64_of;
    let seats = plan
        .seats
        .iter()
        .map(|s| {
            Ok(serde_json::json!({
                "seat": s.reservation.seat_id.as_uuid().simple().to_string(),
                "fence": i64_of(s.expected_fence.get())?,
                "reservation": s.reservation.id.as_uuid().simple().to_string(),
                "newFence": i64_of(s.new_fence.get())?,
                "entry": s.entry.id.as_uuid().simple().to_string(),
                "amount": s.entry.amount.get(),
                "balanceAfter": s.entry.balance_after.get(),
                "payment": s.payment.id.as_uuid().simple().to_string(),
            }))
        })
        .collect::<crate::store::StoreResult<Vec<_>>>()?;
    Ok(serde_json::Value::Array(seats).to_string())
}

/// Reservation ids as one value for [`Dialect::id_table`]: their simple hex forms joined by
/// commas.
pub(crate) fn id_list(ids: &[crate::ids::ReservationId]) -> String {
    ids.iter().map(|id| id.as_uuid().simple().to_string()).collect::<Vec<_>>().join(",")
}

/// `ticketing_cancel_booking`'s 19 arguments: the seat, its expected and new fences, the
/// reservation, the payment, the wallet (user, expected version, balance, version), the REFUND
/// entry (id, amount, balance after), the instant and the key. Evaluates to a `StoreResult`.
macro_rules! cancel_booking_args {
    ($query:expr, $plan:expr, $idempotency:expr) => {{
        let plan: &$crate::payment::RefundPlan = $plan;
        (|| -> $crate::store::StoreResult<_> {
            let query = $query
                .bind(plan.reservation.seat_id.as_uuid())
                .bind($crate::store::sql_rows::i64_of(plan.expected_fence.get())?)
                .bind($crate::store::sql_rows::i64_of(plan.new_fence.get())?)
                .bind(plan.reservation.id.as_uuid())
                .bind(plan.payment.id.as_uuid())
                .bind(plan.wallet.user_id.as_str())
                .bind($crate::store::sql_rows::i64_of(plan.expected_wallet_version)?)
                .bind(plan.wallet.balance.get())
                .bind($crate::store::sql_rows::i64_of(plan.wallet.version)?)
                .bind(plan.entry.id.as_uuid())
                .bind(plan.entry.amount.get())
                .bind(plan.entry.balance_after.get())
                .bind(plan.entry.at);
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

/// The [`CatalogStore`](crate::store::CatalogStore) reads both dialects share: `concerts`,
/// `concert`, `seats`, `seat`, `ping_catalog`, `sale_actions`; and an operator's change,
/// `change_sale` (`ticketing_update_concert`, 16 arguments: the concert, its expected version,
/// the new settings, paused, version, the opening's time and seed, then the audit entry's
/// operator, kind, time and states).
macro_rules! catalog_reads {
    () => {
        async fn concerts(&self) -> $crate::store::StoreResult<Vec<$crate::catalog::Concert>> {
            let rows: Vec<$crate::store::sql_rows::ConcertRow> =
                sqlx::query_as(&STEPS.concerts).fetch_all(&self.pool).await.map_err(db("concerts"))?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn concert(
            &self,
            id: $crate::ids::ConcertId,
        ) -> $crate::store::StoreResult<Option<$crate::catalog::Concert>> {
            let row: Option<$crate::store::sql_rows::ConcertRow> = sqlx::query_as(&STEPS.concert)
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("concert"))?;
            row.map(TryInto::try_into).transpose()
        }

        async fn change_sale(&self, action: &$crate::catalog::SaleAction) -> $crate::store::StoreResult<()> {
            use $crate::store::sql_rows::{i32_of, i64_of, sale_state_json};
            let q = action.after.queue;
            sqlx::query(&STEPS.change_sale)
                .bind(action.concert_id.as_uuid())
                .bind(i64_of(action.before.version)?)
                .bind(i32_of(q.max_active)?)
                .bind(i32_of(q.admit_batch)?)
                .bind(i64_of(q.admit_interval_ms)?)
                .bind(i64_of(q.waiting_idle_secs)?)
                .bind(i64_of(q.active_ttl_secs)?)
                .bind(action.after.paused)
                .bind(i64_of(action.after.version)?)
                .bind(action.after.opened.map(|o| o.at))
                .bind(action.after.opened.map(|o| i64_of(o.seed)).transpose()?)
                .bind(action.operator.as_str())
                .bind(action.kind.as_str())
                .bind(action.at)
                .bind(sale_state_json(&action.before)?)
                .bind(sale_state_json(&action.after)?)
                .execute(&self.pool)
                .await
                .map_err(db("concert"))?;
            Ok(())
        }

        async fn seat_tally(
            &self,
            concert: $crate::ids::ConcertId,
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::StoreResult<$crate::catalog::SeatTally> {
            let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(&STEPS.seat_tally)
                .bind(now)
                .bind(concert.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(db("seat tally"))?;
            rows.into_iter().try_fold(
                $crate::catalog::SeatTally::default(),
                |tally, (price, seats, held, sold)| {
                    use $crate::store::sql_rows::u64_of;
                    Ok(tally.with(price, u64_of(seats)?, u64_of(held)?, u64_of(sold)?))
                },
            )
        }

        async fn sale_actions(
            &self,
            concert: $crate::ids::ConcertId,
        ) -> $crate::store::StoreResult<Vec<$crate::catalog::SaleAction>> {
            let rows: Vec<$crate::store::sql_rows::SaleActionRow> = sqlx::query_as(&STEPS.sale_actions)
                .bind(concert.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(db("sale actions"))?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn seats(
            &self,
            schedule: $crate::ids::ScheduleId,
        ) -> $crate::store::StoreResult<Vec<$crate::catalog::SeatRecord>> {
            let rows: Vec<$crate::store::sql_rows::SeatRow> = sqlx::query_as(&STEPS.seats)
                .bind(schedule.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(db("seats"))?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn seat(
            &self,
            id: $crate::ids::SeatId,
        ) -> $crate::store::StoreResult<Option<$crate::catalog::SeatRecord>> {
            let row: Option<$crate::store::sql_rows::SeatRow> = sqlx::query_as(&STEPS.seat)
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("seat"))?;
            row.map(TryInto::try_into).transpose()
        }

        async fn ping_catalog(&self) -> $crate::store::StoreResult<()> {
            sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db("ping"))?;
            Ok(())
        }
    };
}

/// The queue store's read of the line both dialects share: `waiting_line` (the pre-queue an
/// opening draws), one statement.
macro_rules! queue_line_reads {
    () => {
        async fn waiting_line(
            &self,
            concert: $crate::ids::ConcertId,
            limit: usize,
        ) -> $crate::store::StoreResult<Vec<(u64, $crate::ids::QueueToken)>> {
            let rows: Vec<(i64, String)> = sqlx::query_as(&super::STEPS.waiting_line)
                .bind(concert.as_uuid())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(db("line"))?;
            rows.into_iter()
                .map(|(seq, token)| {
                    let token = $crate::ids::QueueToken::parse(&token)
                        .map_err(|_| $crate::error::StoreError::Corrupt("line token".into()))?;
                    Ok(($crate::store::sql_rows::u64_of(seq)?, token))
                })
                .collect()
        }
    };
}

/// The [`AdmissionLog`](crate::store::AdmissionLog) of both dialects: one insert of a tick's
/// admissions (at most [`ADMISSION_LOG_BATCH`](crate::limits::ADMISSION_LOG_BATCH) rows a
/// statement), and the reads, each one statement (the open admissions two: the rows and the
/// oldest generation).
macro_rules! admission_log {
    () => {
        async fn log_admissions(
            &self,
            generation: u64,
            admitted: &[$crate::queue::TokenRecord],
        ) -> $crate::store::StoreResult<()> {
            let generation = $crate::store::sql_rows::i64_of(generation)?;
            for batch in admitted.chunks($crate::limits::ADMISSION_LOG_BATCH) {
                let sql = STEPS.log_admissions(batch.len());
                // Not prepared and kept: its text changes with the batch's size, and every size
                // would otherwise stay in each connection's statement cache (and the database's).
                let mut query = sqlx::query(&sql).persistent(false);
                for record in batch {
                    let (admitted_at, expires_at) = match record.state {
                        $crate::queue::TokenState::Active { admitted_at, expires_at } => {
                            (admitted_at, expires_at)
                        }
                        _ => {
                            return Err($crate::error::StoreError::Corrupt(
                                "only admitted tokens are logged".to_owned(),
                            ));
                        }
                    };
                    query = query
                        .bind(record.token.as_str().to_owned())
                        .bind(record.user_id.as_str().to_owned())
                        .bind(record.concert_id.as_uuid())
                        .bind(record.issued_at)
                        .bind(admitted_at)
                        .bind(expires_at)
                        .bind(generation)
                        .bind($crate::store::sql_rows::i64_of(record.version)?);
                }
                query.execute(&self.pool).await.map_err(db("log admissions"))?;
            }
            Ok(())
        }

        async fn history(
            &self,
            _user: &$crate::ids::UserId,
            token: &$crate::ids::QueueToken,
        ) -> $crate::store::StoreResult<$crate::store::TokenHistory> {
            let row: $crate::store::sql_rows::TokenHistoryRow = sqlx::query_as(&STEPS.token_history)
                .bind(token.as_str())
                .bind(token.as_str())
                .bind(token.as_str())
                .bind(token.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(db("token history"))?;
            row.try_into()
        }

        async fn record_leave(
            &self,
            token: &$crate::ids::QueueToken,
            user: &$crate::ids::UserId,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::StoreResult<()> {
            sqlx::query(&STEPS.record_leave)
                .bind(token.as_str())
                .bind(token.concert().as_uuid())
                .bind(user.as_str())
                .bind(at)
                .execute(&self.pool)
                .await
                .map_err(db("leaving"))?;
            Ok(())
        }

        async fn revoke_token(
            &self,
            revocation: &$crate::store::Revocation,
        ) -> $crate::store::StoreResult<()> {
            let action = &revocation.action;
            sqlx::query(&STEPS.revoke_token)
                .bind(revocation.token.as_str())
                .bind(action.concert_id.as_uuid())
                .bind(revocation.user_id.as_str())
                .bind(action.operator.as_str())
                .bind(action.at)
                .bind($crate::store::sql_rows::sale_state_json(&action.before)?)
                .bind($crate::store::sql_rows::sale_state_json(&action.after)?)
                .execute(&self.pool)
                .await
                .map_err(db("revocation"))?;
            Ok(())
        }

        async fn admissions(
            &self,
            concert: $crate::ids::ConcertId,
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::store::StoreResult<$crate::store::Admissions> {
            let rows: Vec<$crate::store::sql_rows::AdmissionLogRow> = sqlx::query_as(&STEPS.open_admissions)
                .bind(concert.as_uuid())
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(db("admissions"))?;
            let (first_generation, last_generation): (Option<i64>, Option<i64>) =
                sqlx::query_as(&STEPS.generations)
                    .bind(concert.as_uuid())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db("generations"))?;
            Ok($crate::store::Admissions {
                open: rows.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
                first_generation: first_generation.map($crate::store::sql_rows::u64_of).transpose()?,
                last_generation: last_generation.map($crate::store::sql_rows::u64_of).transpose()?,
            })
        }
    };
}

/// The [`WalletStore`](crate::store::WalletStore) methods both dialects share: the reads, the
/// charge's inputs in one statement, the charge and a refusal's outcome as one routine call.
macro_rules! wallet_steps {
    () => {
        async fn wallet(
            &self,
            user: &$crate::ids::UserId,
        ) -> $crate::store::StoreResult<$crate::payment::Wallet> {
            let row: Option<$crate::store::sql_rows::WalletRow> = sqlx::query_as(&STEPS.wallet)
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("wallet"))?;
            row.map_or_else(|| Ok($crate::payment::Wallet::empty(user.clone())), TryInto::try_into)
        }

        async fn apply_charge(
            &self,
            plan: &$crate::payment::ChargePlan,
            idempotency: Option<&$crate::idempotency::IdempotencyRecord>,
        ) -> $crate::store::StoreResult<()> {
            $crate::store::sql_steps::apply_charge_args!(
                sqlx::query(&STEPS.apply_charge),
                plan,
                idempotency
            )?
            .execute(&self.pool)
            .await
            .map_err(db("charge"))?;
            Ok(())
        }

        async fn charge_inputs(
            &self,
            user: &$crate::ids::UserId,
            key: Option<&$crate::ids::IdempotencyKey>,
        ) -> $crate::store::StoreResult<$crate::store::ChargeInputs> {
            let mut row: $crate::store::sql_rows::InputsRow = sqlx::query_as(&STEPS.charge_inputs)
                .bind(user.as_str())
                .bind(user.as_str())
                .bind(key.map($crate::ids::IdempotencyKey::as_str))
                .fetch_one(&self.pool)
                .await
                .map_err(db("charge inputs"))?;
            Ok($crate::store::ChargeInputs { wallet: row.wallet(user)?, key: row.key()? })
        }

        async fn ledger(
            &self,
            user: &$crate::ids::UserId,
        ) -> $crate::store::StoreResult<Vec<$crate::payment::LedgerEntry>> {
            let rows: Vec<$crate::store::sql_rows::LedgerRow> = sqlx::query_as(&STEPS.ledger)
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db("ledger"))?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn idempotency(
            &self,
            user: &$crate::ids::UserId,
            key: &$crate::ids::IdempotencyKey,
        ) -> $crate::store::StoreResult<Option<$crate::idempotency::IdempotencyRecord>> {
            let row: Option<$crate::store::sql_rows::KeyRow> = sqlx::query_as(&STEPS.idempotency)
                .bind(user.as_str())
                .bind(key.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("idempotency key"))?;
            row.map(TryInto::try_into).transpose()
        }

        async fn save_outcome(
            &self,
            record: &$crate::idempotency::IdempotencyRecord,
        ) -> $crate::store::StoreResult<()> {
            $crate::store::sql_steps::bind_key!(sqlx::query(&STEPS.save_outcome), Some(record))
                .execute(&self.pool)
                .await
                .map_err(db("idempotency key"))?;
            Ok(())
        }
    };
}

/// The [`BookingStore`](crate::store::BookingStore) methods both dialects share: the reads, the
/// inputs of a hold and of a payment in one statement each, the release and the payment as one
/// routine call each. (`claim_seat` differs by the strategies each dialect offers, and
/// `sweep_holds` by its SQL.)
macro_rules! booking_steps {
    () => {
        async fn reservation(
            &self,
            id: $crate::ids::ReservationId,
        ) -> $crate::store::StoreResult<Option<$crate::hold::Reservation>> {
            let row: Option<$crate::store::sql_rows::ReservationRow> = sqlx::query_as(&STEPS.reservation)
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reservation"))?;
            row.map(TryInto::try_into).transpose()
        }

        async fn seats_bought(
            &self,
            user: &$crate::ids::UserId,
            concert: $crate::ids::ConcertId,
            except: &[$crate::ids::ReservationId],
        ) -> $crate::store::StoreResult<u32> {
            let bought: i64 = sqlx::query_scalar(&STEPS.seats_bought)
                .bind(user.as_str())
                .bind(concert.as_uuid())
                .bind($crate::store::sql_steps::id_list(except))
                .fetch_one(&self.pool)
                .await
                .map_err(db("seats bought"))?;
            $crate::store::sql_rows::count(bought)
        }

        async fn reservations_of_user(
            &self,
            user: &$crate::ids::UserId,
        ) -> $crate::store::StoreResult<Vec<$crate::hold::Reservation>> {
            let rows: Vec<$crate::store::sql_rows::ReservationRow> =
                sqlx::query_as(&STEPS.reservations_of_user)
                    .bind(user.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("reservations of user"))?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn reservations_of_token(
            &self,
            _user: &$crate::ids::UserId,
            token: &$crate::ids::QueueToken,
        ) -> $crate::store::StoreResult<Vec<$crate::hold::Reservation>> {
            let rows: Vec<$crate::store::sql_rows::ReservationRow> =
                sqlx::query_as(&STEPS.reservations_of_token)
                    .bind(token.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("reservations of token"))?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn release_seat(&self, plan: &$crate::hold::ReleasePlan) -> $crate::store::StoreResult<()> {
            $crate::store::sql_steps::release_seat_args!(sqlx::query(&STEPS.release_seat), plan)?
                .execute(&self.pool)
                .await
                .map_err(db("seat"))?;
            Ok(())
        }

        async fn commit_payment(
            &self,
            plan: &$crate::payment::PaymentPlan,
            idempotency: Option<&$crate::idempotency::IdempotencyRecord>,
        ) -> $crate::store::StoreResult<()> {
            $crate::store::sql_steps::commit_payment_args!(
                sqlx::query(&STEPS.commit_payment),
                plan,
                idempotency
            )?
            .execute(&self.pool)
            .await
            .map_err(db("payment"))?;
            Ok(())
        }

        async fn hold_inputs(
            &self,
            seat: $crate::ids::SeatId,
            user: &$crate::ids::UserId,
            key: Option<&$crate::ids::IdempotencyKey>,
        ) -> $crate::store::StoreResult<$crate::store::HoldInputs> {
            let mut row: $crate::store::sql_rows::InputsRow = sqlx::query_as(&STEPS.hold_inputs)
                .bind(user.as_str())
                .bind(seat.as_uuid())
                .bind(user.as_str())
                .bind(key.map($crate::ids::IdempotencyKey::as_str))
                .fetch_one(&self.pool)
                .await
                .map_err(db("hold inputs"))?;
            Ok($crate::store::HoldInputs { seat: row.seat()?, key: row.key()?, bought: row.bought()? })
        }

        async fn payment_inputs(
            &self,
            user: &$crate::ids::UserId,
            reservations: &[$crate::ids::ReservationId],
            key: Option<&$crate::ids::IdempotencyKey>,
        ) -> $crate::store::StoreResult<$crate::store::PaymentInputs> {
            let named = $crate::store::sql_steps::id_list(reservations);
            let rows: Vec<$crate::store::sql_rows::InputsRow> = sqlx::query_as(&STEPS.payment_inputs)
                .bind(&named)
                .bind(&named)
                .bind(user.as_str())
                .bind(user.as_str())
                .bind(key.map($crate::ids::IdempotencyKey::as_str))
                .fetch_all(&self.pool)
                .await
                .map_err(db("payment inputs"))?;
            $crate::store::sql_rows::payment_inputs(user, reservations, rows)
        }

        async fn cancel_booking(
            &self,
            plan: &$crate::payment::RefundPlan,
            idempotency: Option<&$crate::idempotency::IdempotencyRecord>,
        ) -> $crate::store::StoreResult<()> {
            $crate::store::sql_steps::cancel_booking_args!(
                sqlx::query(&STEPS.cancel_booking),
                plan,
                idempotency
            )?
            .execute(&self.pool)
            .await
            .map_err(db("cancellation"))?;
            Ok(())
        }

        async fn refund_inputs(
            &self,
            reservation: $crate::ids::ReservationId,
            key: Option<&$crate::ids::IdempotencyKey>,
        ) -> $crate::store::StoreResult<$crate::store::RefundInputs> {
            let mut row: $crate::store::sql_rows::InputsRow = sqlx::query_as(&STEPS.refund_inputs)
                .bind(reservation.as_uuid())
                .bind(key.map($crate::ids::IdempotencyKey::as_str))
                .fetch_one(&self.pool)
                .await
                .map_err(db("cancellation inputs"))?;
            let found = row.reservation()?;
            let wallet = match &found {
                Some(r) => Some(row.wallet(&r.user_id)?),
                None => None,
            };
            Ok($crate::store::RefundInputs {
                seat: row.seat()?,
                payment: row.payment()?,
                key: row.key()?,
                reservation: found,
                wallet,
            })
        }

        async fn payment_of(
            &self,
            reservation: $crate::ids::ReservationId,
        ) -> $crate::store::StoreResult<Option<$crate::payment::Payment>> {
            let row: Option<$crate::store::sql_rows::PaymentRow> = sqlx::query_as(&STEPS.payment_of)
                .bind(reservation.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("payment"))?;
            row.map(TryInto::try_into).transpose()
        }
    };
}

pub(crate) use {admission_log, booking_steps, catalog_reads, queue_line_reads, wallet_steps};

pub(crate) use {
    apply_charge_args, bind_key, bind_wallet, cancel_booking_args, claim_seat_args, commit_payment_args,
    release_seat_args,
};

#[cfg(test)]
mod tests {
    use super::{Dialect, Steps};

    /// Each statement, in both dialects, with the number of values its callers bind.
    fn statements(steps: &Steps) -> Vec<(String, usize)> {
        let named: Vec<(&String, usize)> = vec![
            (&steps.claim_seat, 22),
            (&steps.commit_payment, 12),
            (&steps.release_seat, 3),
            (&steps.apply_charge, 16),
            (&steps.save_outcome, 6),
            (&steps.hold_inputs, 4),
            (&steps.payment_inputs, 5),
            (&steps.cancel_booking, 19),
            (&steps.refund_inputs, 2),
            (&steps.charge_inputs, 3),
            (&steps.concerts, 0),
            (&steps.concert, 1),
            (&steps.change_sale, 16),
            (&steps.sale_actions, 1),
            (&steps.seat_tally, 2),
            (&steps.seats, 1),
            (&steps.seat, 1),
            (&steps.wallet, 1),
            (&steps.ledger, 1),
            (&steps.idempotency, 2),
            (&steps.reservation, 1),
            (&steps.reservations_of_token, 1),
            (&steps.reservations_of_user, 1),
            (&steps.seats_bought, 3),
            (&steps.payment_of, 1),
            (&steps.token_history, 4),
            (&steps.record_leave, 4),
            (&steps.waiting_line, 2),
            (&steps.revoke_token, 7),
            (&steps.open_admissions, 2),
            (&steps.generations, 1),
        ];
        let mut all: Vec<(String, usize)> = named.into_iter().map(|(sql, n)| (sql.clone(), n)).collect();
        all.push((steps.log_admissions(1), 8));
        all.push((steps.log_admissions(3), 24));
        all
    }

    #[test]
    fn every_statement_has_as_many_placeholders_as_its_callers_bind() {
        for (sql, binds) in statements(&Steps::new(Dialect::MySql)) {
            let sql = sql.as_str();
            assert_eq!(sql.matches('?').count(), binds, "{sql}");
        }
        for (sql, binds) in statements(&Steps::new(Dialect::Postgres)) {
            let sql = sql.as_str();
            assert!(!sql.contains('?') && !sql.contains('`'), "{sql}");
            assert_eq!(sql.matches('$').count(), binds, "{sql}");
            if binds > 0 {
                assert!(
                    sql.contains(&format!("${binds}")) && !sql.contains(&format!("${}", binds + 1)),
                    "{sql}"
                );
            }
        }
    }
}
