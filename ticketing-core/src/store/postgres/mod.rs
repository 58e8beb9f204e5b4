//! The PostgreSQL backend: every storage trait, so one database is a complete deployment.
//!
//! # How it keeps the contract
//!
//! - Each method is one transaction (or one statement), committed before it returns. Each write
//!   step is one statement calling a PL/pgSQL function (migration `…_one_round_trip_steps`),
//!   bound by `store/sql_steps.rs`, so it costs one round trip.
//! - The database decides the one winner of a seat: the write is
//!   `UPDATE seats … WHERE id = $1 AND fence = $2`, and a loser matches no row. The
//!   [`ClaimStrategy`] only chooses what runs in front of that write to reduce contention.
//! - No row shared by every buyer is touched in a purchase: a hold writes its seat, its
//!   reservation and (for the per-token limit) takes a transaction lock keyed by the token; a
//!   payment writes its seat, its reservation and the buyer's own wallet.
//! - Every transaction takes row locks in one order — seat, reservation, wallet — so holds,
//!   releases, payments and the sweeper cannot deadlock one another.
//! - `now` always comes from the caller; no statement uses the database's clock.
//! - The pool is bounded ([`PgStore::connect`]).

mod queue;

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::catalog::{ConcertPlan, OccupiedSeat, Schedule, ScheduleAvailability, SeatChanges};
use crate::error::StoreError;
use crate::hold::HoldPlan;
use crate::idempotency::IdempotencyRecord;
use crate::ids::{ConcertId, ScheduleId};
use crate::store::sql_rows::{self as rows, ScheduleRow, i64_of};
use crate::store::sql_steps::{self, Dialect, Steps};
use crate::store::{AdmissionLog, BookingStore, CatalogStore, SqlPool, SqlTx, StoreResult, WalletStore};

pub use crate::limits::{ACQUIRE_TIMEOUT_MS, POOL_SIZE_DEFAULT};
pub use crate::store::ClaimStrategy;

/// The PostgreSQL store. Clones share one pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: SqlPool<Postgres>,
    strategy: ClaimStrategy,
}

/// Maps a driver error: a unique violation, a serialization failure or a deadlock lost a race
/// ([`StoreError::Conflict`]), as does a step function's `TKCNF`; its `TKLIM` is
/// [`StoreError::HoldLimitReached`]; anything else is the backend failing.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let sqlx::Error::Database(db) = &error {
            if matches!(db.code().as_deref(), Some("23505" | "40001" | "40P01")) {
                return StoreError::Conflict(what);
            }
            if let Some(error) = sql_steps::routine_error(db.code().as_deref(), db.message()) {
                return error;
            }
        }
        StoreError::Backend { message: format!("postgres: {what}"), source: Some(Box::new(error)) }
    }
}

/// Zero rows written by a conditional statement means the compare-and-set lost.
fn one_row(result: sqlx::postgres::PgQueryResult, what: &'static str) -> StoreResult<()> {
    if result.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Conflict(what)) }
}

impl PgStore {
    /// Connects with a pool of at most `max_connections` (acquiring waits at most
    /// [`ACQUIRE_TIMEOUT_MS`]). A connection is pinged neither when it is taken nor when it is
    /// given back after its statement completed ([`SqlPool`]): a statement costs its own round
    /// trip and no more. After the database restarts, each stale pooled connection fails one call
    /// ([`StoreError::Backend`]) and is dropped.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached.
    pub async fn connect(url: &str, max_connections: u32, strategy: ClaimStrategy) -> StoreResult<Self> {
        let options = PgPoolOptions::new()
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
        options: PgPoolOptions,
        strategy: ClaimStrategy,
    ) -> StoreResult<Self> {
        let pool = options.connect(url).await.map_err(db("connect"))?;
        Ok(Self { pool: SqlPool::new(pool), strategy })
    }

    /// A store over an existing pool.
    #[must_use]
    pub fn from_pool(pool: PgPool, strategy: ClaimStrategy) -> Self {
        Self { pool: SqlPool::new(pool), strategy }
    }

    /// Applies the migrations in `migrations/postgres`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.pool.migrate(&migrations::POSTGRES).await.map_err(|e| StoreError::Backend {
            message: "postgres: migrate".into(),
            source: Some(Box::new(e)),
        })
    }

    /// The pool: `&store.pool()` runs a statement on the store's connections (a connection
    /// that finished its statement is reused without sqlx's ping; see [`SqlPool`]).
    #[must_use]
    pub fn pool(&self) -> &SqlPool<Postgres> {
        &self.pool
    }

    /// The seat-claim strategy.
    #[must_use]
    pub fn strategy(&self) -> &ClaimStrategy {
        &self.strategy
    }

    async fn begin(&self) -> StoreResult<SqlTx<Postgres>> {
        self.pool.begin().await.map_err(db("begin"))
    }
}

/// The statements calling the step functions.
static STEPS: LazyLock<Steps> = LazyLock::new(|| Steps::new(Dialect::Postgres));

impl CatalogStore for PgStore {
    sql_steps::catalog_reads!();

    async fn create_concert(&self, plan: &ConcertPlan) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let c = &plan.concert;
        let q = c.queue;
        sqlx::query(
            "INSERT INTO concerts (id, title, max_active, admit_batch, admit_interval_ms, waiting_idle_secs, active_ttl_secs,
                                   max_seats_per_buyer, sales_open_at, pre_queue, holds_per_token, cancel_until_secs_before_start)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(c.id.as_uuid())
        .bind(&c.title)
        .bind(rows::i32_of(q.max_active)?)
        .bind(rows::i32_of(q.admit_batch)?)
        .bind(i64_of(q.admit_interval_ms)?)
        .bind(i64_of(q.waiting_idle_secs)?)
        .bind(i64_of(q.active_ttl_secs)?)
        .bind(c.max_seats_per_buyer.map(rows::i32_of).transpose()?)
        .bind(c.sales_open_at)
        .bind(c.pre_queue.as_str())
        .bind(c.holds_per_token.map(rows::i32_of).transpose()?)
        .bind(c.cancel_until_secs_before_start.map(i64_of).transpose()?)
        .execute(&mut *tx)
        .await
        .map_err(db("concert id"))?;
        for s in &plan.schedules {
            sqlx::query(
                "INSERT INTO schedules (id, concert_id, starts_at, seat_count) VALUES ($1, $2, $3, $4)",
            )
            .bind(s.id.as_uuid())
            .bind(s.concert_id.as_uuid())
            .bind(s.starts_at)
            .bind(rows::seat_count(plan, s.id)?)
            .execute(&mut *tx)
            .await
            .map_err(db("schedule"))?;
        }
        let ids: Vec<_> = plan.seats.iter().map(|s| s.id.as_uuid()).collect();
        let schedules: Vec<_> = plan.seats.iter().map(|s| s.schedule_id.as_uuid()).collect();
        let concerts: Vec<_> = plan.seats.iter().map(|s| s.concert_id.as_uuid()).collect();
        let numbers = plan.seats.iter().map(|s| rows::i32_of(s.number)).collect::<StoreResult<Vec<_>>>()?;
        let prices: Vec<_> = plan.seats.iter().map(|s| s.price.get()).collect();
        sqlx::query(
            "INSERT INTO seats (id, schedule_id, concert_id, number, price)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::bigint[])",
        )
        .bind(&ids)
        .bind(&schedules)
        .bind(&concerts)
        .bind(&numbers)
        .bind(&prices)
        .execute(&mut *tx)
        .await
        .map_err(db("seats"))?;
        tx.commit().await.map_err(db("commit"))
    }

    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<Schedule>> {
        let row: Option<ScheduleRow> = sqlx::query_as(
            "SELECT id, concert_id, starts_at, 0::bigint AS available FROM schedules WHERE id = $1",
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
            // A seat is taken at $2 when it is booked (no deadline) or held past $2: the rest
            // of the schedule's seats are available (a lapsed hold counts as available).
            "SELECT s.id, s.concert_id, s.starts_at,
                    s.seat_count - (SELECT count(*) FROM seats o
                                    WHERE o.schedule_id = s.id AND o.state <> 'AVAILABLE'
                                      AND (o.hold_expires_at IS NULL OR o.hold_expires_at > $2)) AS available
             FROM schedules s
             WHERE s.concert_id = $1
             ORDER BY s.starts_at",
        )
        .bind(concert.as_uuid())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db("schedules"))?;
        Ok(rows.into_iter().map(ScheduleRow::into_availability).collect())
    }

    async fn occupied_seats(&self, schedule: ScheduleId) -> StoreResult<Vec<OccupiedSeat>> {
        // One row of two arrays rather than a row per seat: the numbers and the hold deadlines
        // (NULL for a booked seat), from the partial index `seats_occupied`.
        let (numbers, deadlines): (Vec<i32>, Vec<Option<DateTime<Utc>>>) = sqlx::query_as(
            "SELECT coalesce(array_agg(number), '{}'), coalesce(array_agg(hold_expires_at), '{}')
             FROM (SELECT number, hold_expires_at FROM seats
                   WHERE schedule_id = $1 AND state <> 'AVAILABLE') occupied",
        )
        .bind(schedule.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(db("occupied seats"))?;
        if numbers.len() != deadlines.len() {
            return Err(StoreError::Corrupt("occupied seats: numbers and deadlines differ in length".into()));
        }
        rows::occupied(numbers.into_iter().zip(deadlines))
    }

    async fn seat_changes(&self, concert: ConcertId, since: Option<u64>) -> StoreResult<Option<SeatChanges>> {
        // Every write of a seat stamps it with its transaction's id (the trigger of migration
        // `…_seat_changes`). A transaction older than the oldest one still running when a read
        // is taken (its snapshot's xmin) had committed or failed by then, so the read saw what
        // it wrote; the next read asks from that xmin and gets the rest, through the index
        // `seats_changes`. One row of arrays rather than a row per seat.
        // The epoch is when the server started: a failover or a restore (which may hand out
        // transaction ids again) restarts it, and the service then reads the concert whole.
        type Row = (i64, i64, Vec<uuid::Uuid>, Vec<i32>, Vec<i64>, Vec<bool>, Vec<Option<DateTime<Utc>>>);
        let since_xid = since.map_or(Ok(0), i64_of)?;
        let (horizon, epoch, schedules, numbers, fences, booked, deadlines): Row = sqlx::query_as(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
                    (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint,
                    coalesce(array_agg(schedule_id), '{}'), coalesce(array_agg(number), '{}'),
                    coalesce(array_agg(fence), '{}'), coalesce(array_agg(state = 'BOOKED'), '{}'),
                    coalesce(array_agg(hold_expires_at), '{}')
             FROM seats WHERE concert_id = $1 AND changed_xid >= $2::text::xid8",
        )
        .bind(concert.as_uuid())
        .bind(since_xid.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(db("seat changes"))?;
        let n = schedules.len();
        if [numbers.len(), fences.len(), booked.len(), deadlines.len()].iter().any(|&len| len != n) {
            return Err(StoreError::Corrupt("seat changes: columns differ in length".into()));
        }
        let seats = (0..n)
            .map(|i| rows::seat_change(schedules[i], numbers[i], fences[i], booked[i], deadlines[i]))
            .collect::<StoreResult<_>>()?;
        Ok(Some(SeatChanges { horizon: rows::u64_of(horizon)?, epoch: rows::u64_of(epoch)?, seats }))
    }
}

impl WalletStore for PgStore {
    sql_steps::wallet_steps!();
}

impl PgStore {
    /// Claims a seat as [`BookingStore::claim_seat`] does, with the fence of an external lock
    /// (the Redis strategy's, or a caller's own lock service): the write also requires the
    /// fence to be newer than every fence that wrote this seat before, so a holder whose lock
    /// lapsed while it was paused cannot write after a newer holder. `lock_fence` 0 means no
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
        self.claim(plan, idempotency, i64_of(lock_fence)?).await
    }

    /// The hold's one statement: `ticketing_claim_seat` (migration `…_one_round_trip_steps`)
    /// runs what the strategy puts in front of the seat's compare-and-set, the write, the
    /// per-token limit under a lock keyed by the token, the superseded hold, the reservation and
    /// the key, in the statement's own transaction.
    async fn claim(
        &self,
        plan: &HoldPlan,
        idempotency: Option<&IdempotencyRecord>,
        lock_fence: i64,
    ) -> StoreResult<()> {
        sql_steps::claim_seat_args!(
            sqlx::query(&STEPS.claim_seat),
            self.strategy.name(),
            plan,
            lock_fence,
            idempotency
        )?
        .execute(&self.pool)
        .await
        .map_err(db("seat"))?;
        Ok(())
    }
}

impl AdmissionLog for PgStore {
    sql_steps::admission_log!();
}

impl BookingStore for PgStore {
    sql_steps::booking_steps!();

    async fn claim_seat(&self, plan: &HoldPlan, idempotency: Option<&IdempotencyRecord>) -> StoreResult<()> {
        #[cfg(feature = "redis")]
        if let ClaimStrategy::RedisLock(lock) = &self.strategy {
            let seat = plan.reservation.seat_id;
            // Losers queue here, in Redis (bounded), rather than on the seat's row.
            let Some(guard) = lock.acquire_waiting(seat, plan.now).await? else {
                return Err(StoreError::Conflict("seat lock"));
            };
            let result = self.claim(plan, idempotency, i64_of(guard.fence)?).await;
            lock.release(seat, &guard).await;
            return result;
        }
        self.claim(plan, idempotency, 0).await
    }

    async fn sweep_holds(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        // Seats first, then reservations: the lock order of every other transaction.
        let freed: Vec<uuid::Uuid> = sqlx::query_scalar(
            "WITH due AS (SELECT id FROM seats WHERE state = 'HELD' AND hold_expires_at <= $1
                          ORDER BY hold_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE seats s SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL,
                                hold_expires_at = NULL, fence = s.fence + 1
             FROM due WHERE s.id = due.id
             RETURNING s.id",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("sweep seats"))?;
        sqlx::query(
            "UPDATE reservations SET status = 'EXPIRED'
             WHERE id IN (SELECT id FROM reservations WHERE status = 'HELD' AND expires_at <= $1
                          ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(db("sweep reservations"))?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN
               (SELECT user_id, key FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2)",
        )
        .bind(now)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(db("sweep keys"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(freed.len())
    }
}
