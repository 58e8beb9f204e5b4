//! The MySQL 8 / MariaDB 10.11 backend: every storage trait, in the SQL both accept (no
//! `UPDATE … RETURNING`, no partial indexes, no sequences).
//!
//! # How it keeps the contract under REPEATABLE READ
//!
//! MySQL's default isolation lets a plain `SELECT` inside a transaction read an old snapshot,
//! so a read-modify-write built on it can lose an update. Nothing here is built that way:
//! every write is a compare-and-set (`UPDATE … WHERE fence = ?` / `WHERE version = ?`), which
//! InnoDB evaluates against the latest committed row whatever the snapshot, and a read that
//! decides something inside a transaction is either a locking read (`FOR UPDATE`), which also
//! reads the latest committed row, or a plain read whose snapshot is taken after the lock that
//! serialises what it counts (a hold's count of its token's open holds, after the token's row
//! lock; see migration `20261203000004`, which also says why a locking read there deadlocked
//! buyers against each other). The conformance suite runs
//! in the default isolation, and `tests/conformance` shows the lost update a naive
//! read-modify-write would suffer.
//!
//! Each write step is one `CALL` of a stored procedure (migration `…_one_round_trip_steps`),
//! with the arguments PostgreSQL's functions take, bound by `store/sql_steps.rs`: the
//! procedure runs the step's statements in its own transaction and rolls back on any error.
//!
//! As in PostgreSQL: one transaction per method; the seat's fence decides the one winner; no row
//! shared by every buyer in a purchase; row locks in the order seat → reservation → wallet; a
//! bounded pool; `now` from the caller.

mod queue;

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySql, QueryBuilder};

use crate::catalog::{ConcertPlan, OccupiedSeat, Schedule, ScheduleAvailability};
use crate::error::StoreError;
use crate::hold::HoldPlan;
use crate::idempotency::IdempotencyRecord;
use crate::ids::{ConcertId, ScheduleId, SeatId};
use crate::store::sql_rows::{self as rows, ScheduleRow, i64_of};
use crate::store::sql_steps::{self, Dialect, Steps};
use crate::store::{
    AdmissionLog, BookingStore, CatalogStore, SqlConn, SqlPool, SqlTx, StoreResult, WalletStore,
};

use crate::limits::SEAT_INSERT_CHUNK;
pub use crate::limits::{ACQUIRE_TIMEOUT_MS, NAMED_LOCK_WAIT_SECS};
pub use crate::store::ClaimStrategy;

/// The MySQL / MariaDB store. Clones share one pool.
#[derive(Debug, Clone)]
pub struct MyStore {
    pool: SqlPool<MySql>,
    strategy: ClaimStrategy,
}

/// Maps a driver error: a duplicate key, a deadlock or a lock wait timeout lost a race
/// ([`StoreError::Conflict`]), as does a step procedure's `TKCNF`; its `TKLIM` is
/// [`StoreError::HoldLimitReached`]; anything else is the backend failing.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let sqlx::Error::Database(db) = &error {
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                if matches!(mysql.number(), 1062 | 1213 | 1205) {
                    return StoreError::Conflict(what);
                }
                if let Some(error) = sql_steps::routine_error(mysql.code(), mysql.message()) {
                    return error;
                }
            }
        }
        StoreError::Backend { message: format!("mysql: {what}"), source: Some(Box::new(error)) }
    }
}

/// Zero rows written by a conditional statement means the compare-and-set lost (sqlx counts
/// matched rows: it connects with `CLIENT_FOUND_ROWS`).
fn one_row(result: sqlx::mysql::MySqlQueryResult, what: &'static str) -> StoreResult<()> {
    if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Conflict(what)) }
}

impl MyStore {
    /// Connects with a pool of at most `max_connections`. A connection is pinged neither when it
    /// is taken nor when it is given back after its statement completed ([`SqlPool`]): a store
    /// step costs its own round trips and no more. After the database restarts, each stale
    /// pooled connection fails one call ([`StoreError::Backend`]) and is dropped.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached.
    pub async fn connect(url: &str, max_connections: u32, strategy: ClaimStrategy) -> StoreResult<Self> {
        let options = MySqlPoolOptions::new()
            .max_connections(max_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS));
        Self::connect_with(url, options, strategy).await
    }

    /// Connects with the given pool options.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached.
    pub async fn connect_with(
        url: &str,
        options: MySqlPoolOptions,
        strategy: ClaimStrategy,
    ) -> StoreResult<Self> {
        let pool = options.connect(url).await.map_err(db("connect"))?;
        Ok(Self { pool: SqlPool::new(pool), strategy })
    }

    /// A store over an existing pool.
    #[must_use]
    pub fn from_pool(pool: sqlx::MySqlPool, strategy: ClaimStrategy) -> Self {
        Self { pool: SqlPool::new(pool), strategy }
    }

    /// Applies the migrations in `migrations/mysql`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.pool
            .migrate(&migrations::MYSQL)
            .await
            .map_err(|e| StoreError::Backend { message: "mysql: migrate".into(), source: Some(Box::new(e)) })
    }

    /// The pool: `&store.pool()` runs a statement on the store's connections (a connection
    /// that finished its statement is reused without sqlx's ping; see [`SqlPool`]).
    #[must_use]
    pub fn pool(&self) -> &SqlPool<MySql> {
        &self.pool
    }

    /// The seat-claim strategy.
    #[must_use]
    pub fn strategy(&self) -> &ClaimStrategy {
        &self.strategy
    }

    async fn begin(&self) -> StoreResult<SqlTx<MySql>> {
        self.pool.begin().await.map_err(db("begin"))
    }
}

/// The statements calling the step procedures.
static STEPS: LazyLock<Steps> = LazyLock::new(|| Steps::new(Dialect::MySql));

impl CatalogStore for MyStore {
    sql_steps::catalog_reads!();

    async fn create_concert(&self, plan: &ConcertPlan) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let c = &plan.concert;
        let q = c.queue;
        sqlx::query(
            "INSERT INTO concerts (id, title, max_active, admit_batch, admit_interval_ms, waiting_idle_secs, active_ttl_secs,
                                   max_seats_per_buyer, sales_open_at, pre_queue, holds_per_token, cancel_until_secs_before_start)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.as_uuid())
        .bind(&c.title)
        .bind(rows::i32_of(q.max_active)?)
        .bind(rows::i32_of(q.admit_batch)?)
        .bind(i64_of(q.admit_interval_ms)?)
        .bind(i64_of(q.waiting_idle_secs)?)
        .bind(i64_of(q.active_ttl_secs)?)
        .bind(c.max_seats_per_buyer.map(rows::i32_of).transpose()?)
        // As a DATETIME, like a schedule's start (a TIMESTAMP ends in 2038).
        .bind(c.sales_open_at.map(|at| at.naive_utc()))
        .bind(c.pre_queue.as_str())
        .bind(c.holds_per_token.map(rows::i32_of).transpose()?)
        .bind(c.cancel_until_secs_before_start.map(i64_of).transpose()?)
        .execute(&mut *tx)
        .await
        .map_err(db("concert id"))?;
        for s in &plan.schedules {
            sqlx::query("INSERT INTO schedules (id, concert_id, starts_at, seat_count) VALUES (?, ?, ?, ?)")
                .bind(s.id.as_uuid())
                .bind(s.concert_id.as_uuid())
                // As a DATETIME: a `DateTime<Utc>` is sent as a TIMESTAMP, which MySQL keeps only
                // to 2038 (a later start was stored as NULL and the insert failed).
                .bind(s.starts_at.naive_utc())
                .bind(rows::seat_count(plan, s.id)?)
                .execute(&mut *tx)
                .await
                .map_err(db("schedule"))?;
        }
        for chunk in plan.seats.chunks(SEAT_INSERT_CHUNK) {
            let mut insert =
                QueryBuilder::<MySql>::new("INSERT INTO seats (id, schedule_id, concert_id, number, price) ");
            let mut numbers = Vec::with_capacity(chunk.len());
            for seat in chunk {
                numbers.push(rows::i32_of(seat.number)?);
            }
            insert.push_values(chunk.iter().zip(numbers), |mut row, (seat, number)| {
                row.push_bind(seat.id.as_uuid())
                    .push_bind(seat.schedule_id.as_uuid())
                    .push_bind(seat.concert_id.as_uuid())
                    .push_bind(number)
                    .push_bind(seat.price.get());
            });
            insert.build().execute(&mut *tx).await.map_err(db("seats"))?;
        }
        tx.commit().await.map_err(db("commit"))
    }

    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<Schedule>> {
        let row: Option<ScheduleRow> = sqlx::query_as(
            "SELECT id, concert_id, starts_at, CAST(0 AS SIGNED) AS available FROM schedules WHERE id = ?",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("schedule"))?;
        Ok(row.map(|r| r.into_availability().schedule))
    }

    async fn schedules(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ScheduleAvailability>> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(
            // A seat is taken at the first `?` when it is booked (no deadline) or held past it:
            // the rest of the schedule's seats are available (a lapsed hold counts as available).
            "SELECT s.id, s.concert_id, s.starts_at,
                    CAST(s.seat_count - (SELECT count(*) FROM seats o
                                         WHERE o.schedule_id = s.id AND o.state <> 'AVAILABLE'
                                           AND (o.hold_expires_at IS NULL OR o.hold_expires_at > ?))
                         AS SIGNED) AS available
             FROM schedules s
             WHERE s.concert_id = ?
             ORDER BY s.starts_at",
        )
        .bind(now)
        .bind(concert.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db("schedules"))?;
        Ok(rows.into_iter().map(ScheduleRow::into_availability).collect())
    }

    async fn occupied_seats(&self, schedule: ScheduleId) -> StoreResult<Vec<OccupiedSeat>> {
        let rows: Vec<(i32, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT number, hold_expires_at FROM seats WHERE schedule_id = ? AND state <> 'AVAILABLE'",
        )
        .bind(schedule.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db("occupied seats"))?;
        rows::occupied(rows)
    }
}

impl WalletStore for MyStore {
    sql_steps::wallet_steps!();
}

/// A pooled connection holding a named lock. Until [`NamedLock::release`] succeeds, the
/// connection is closed rather than reused when it is given back (the caller's future was
/// cancelled, say), which releases the lock: a session lock must never ride back into the pool.
struct NamedLock {
    conn: SqlConn<MySql>,
    name: String,
}

impl NamedLock {
    async fn acquire(pool: &SqlPool<MySql>, seat: SeatId) -> StoreResult<Option<Self>> {
        let mut conn = pool.get().await.map_err(db("connection"))?;
        let name = format!("ticketing:seat:{seat}");
        // Cancelled before its answer is read, `GET_LOCK` may still take the lock.
        conn.close_unless_settled();
        let got: Result<Option<i64>, _> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&name)
            .bind(NAMED_LOCK_WAIT_SECS)
            .fetch_one(&mut *conn)
            .await;
        if matches!(got, Ok(Some(1))) {
            return Ok(Some(Self { conn, name }));
        }
        conn.settle(&got);
        got.map_err(db("named lock"))?;
        Ok(None)
    }

    async fn release(mut self) {
        let released: Result<Option<i64>, _> =
            sqlx::query_scalar("SELECT RELEASE_LOCK(?)").bind(&self.name).fetch_one(&mut *self.conn).await;
        match released {
            Ok(_) => self.conn.settle(&released),
            Err(error) => tracing::warn!(%error, "could not release a named lock; closing its connection"),
        }
    }
}

impl MyStore {
    /// Claims a seat with the fence of an external lock, as
    /// [`crate::store::postgres::PgStore::claim_seat_fenced`] does. `lock_fence` 0 means no
    /// external lock.
    ///
    /// # Errors
    /// As [`BookingStore::claim_seat`].
    pub async fn claim_seat_fenced(
        &self,
        plan: &HoldPlan,
        idempotency: Option<&IdempotencyRecord>,
        lock_fence: u64,
    ) -> StoreResult<()> {
        sql_steps::claim_seat_args!(
            sqlx::query(&STEPS.claim_seat),
            self.strategy.name(),
            plan,
            i64_of(lock_fence)?,
            idempotency
        )?
        .execute(&self.pool)
        .await
        .map_err(db("seat"))?;
        Ok(())
    }

    /// The named-lock strategy: lock, claim (`ticketing_claim_seat`, its own transaction) on the
    /// same connection, then release whatever happened.
    async fn claim_with_named_lock(
        &self,
        plan: &HoldPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let Some(mut lock) = NamedLock::acquire(&self.pool, plan.reservation.seat_id).await? else {
            return Err(StoreError::Conflict("seat lock"));
        };
        let result = async {
            sql_steps::claim_seat_args!(
                sqlx::query(&STEPS.claim_seat),
                self.strategy.name(),
                plan,
                0_i64,
                idempotency
            )?
            .execute(&mut *lock.conn)
            .await
            .map_err(db("seat"))?;
            Ok(())
        }
        .await;
        lock.release().await;
        result
    }
}

impl AdmissionLog for MyStore {
    sql_steps::admission_log!();
}

impl BookingStore for MyStore {
    sql_steps::booking_steps!();

    async fn claim_seat(&self, plan: &HoldPlan, idempotency: Option<&IdempotencyRecord>) -> StoreResult<()> {
        match &self.strategy {
            ClaimStrategy::AdvisoryLock => self.claim_with_named_lock(plan, idempotency).await,
            #[cfg(feature = "redis")]
            ClaimStrategy::RedisLock(lock) => {
                let seat = plan.reservation.seat_id;
                let Some(guard) = lock.acquire_waiting(seat, plan.now).await? else {
                    return Err(StoreError::Conflict("seat lock"));
                };
                let result = self.claim_seat_fenced(plan, idempotency, guard.fence).await;
                lock.release(seat, &guard).await;
                result
            }
            ClaimStrategy::ConditionalUpdate | ClaimStrategy::ForUpdate => {
                self.claim_seat_fenced(plan, idempotency, 0).await
            }
        }
    }

    async fn sweep_holds(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        // Seats first, then reservations: the lock order of every other transaction.
        let freed = sqlx::query(
            "UPDATE seats SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL, hold_expires_at = NULL,
                              fence = fence + 1
             WHERE state = 'HELD' AND hold_expires_at <= ? ORDER BY hold_expires_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(db("sweep seats"))?;
        sqlx::query("UPDATE reservations SET status = 'EXPIRED' WHERE status = 'HELD' AND expires_at <= ? ORDER BY expires_at LIMIT ?")
            .bind(now)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db("sweep reservations"))?;
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ? ORDER BY expires_at LIMIT ?")
            .bind(now)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(db("sweep keys"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(usize::try_from(freed.rows_affected()).unwrap_or(usize::MAX))
    }
}
