//! The PostgreSQL backend: every storage trait, so one database is a complete deployment.
//!
//! # How it keeps the contract
//!
//! - Each method is one transaction (or one statement), committed before it returns.
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

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::catalog::{Concert, ConcertPlan, Schedule, ScheduleAvailability, SeatRecord};
use crate::error::StoreError;
use crate::hold::{HoldPlan, ReleasePlan, Reservation};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{ConcertId, IdempotencyKey, QueueToken, ReservationId, ScheduleId, SeatId, UserId};
use crate::payment::{ChargePlan, LedgerEntry, Payment, PaymentPlan, Wallet};
use crate::store::sql_rows::{
    self as rows, LedgerRow, PaymentRow, ReservationRow, ScheduleRow, SeatRow, WalletRow, i64_of,
};
use crate::store::{BookingStore, CatalogStore, StoreResult, WalletStore};

/// How long a caller waits for a pooled connection before the store reports the backend busy.
pub const ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// The pool size when none is given.
pub const POOL_SIZE_DEFAULT: u32 = 16;

/// What runs in front of the seat's compare-and-set write when a hold claims a seat. Every
/// strategy ends in the same conditional write, so none of them is needed for safety; they
/// differ in how losers wait.
#[derive(Debug, Clone, Default)]
pub enum ClaimStrategy {
    /// Just the conditional `UPDATE … WHERE fence = $expected` (the default): a loser waits only
    /// for the winner's commit, then matches no row.
    #[default]
    ConditionalUpdate,
    /// `SELECT … FOR UPDATE` of the seat row first, then the write.
    ForUpdate,
    /// `pg_advisory_xact_lock` on the seat first, then the write.
    AdvisoryLock,
    /// A Redis lock with a fencing number in front of the database: losers wait in Redis (bounded)
    /// instead of on the seat's row; the winner's write also requires the Redis fence to be newer than any that wrote the seat
    /// before, so a holder whose lock lapsed while it was paused can never write.
    #[cfg(feature = "redis")]
    RedisLock(crate::store::redis::RedisSeatLock),
}

impl ClaimStrategy {
    /// The strategy's name as configured (`conditional`, `for-update`, `advisory`,
    /// `redis-lock`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConditionalUpdate => "conditional",
            Self::ForUpdate => "for-update",
            Self::AdvisoryLock => "advisory",
            #[cfg(feature = "redis")]
            Self::RedisLock(_) => "redis-lock",
        }
    }
}

/// The PostgreSQL store. Clones share one pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    strategy: ClaimStrategy,
}

/// Maps a driver error: a unique violation, a serialization failure or a deadlock lost a race
/// ([`StoreError::Conflict`]); anything else is the backend failing.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let sqlx::Error::Database(db) = &error {
            if matches!(db.code().as_deref(), Some("23505" | "40001" | "40P01")) {
                return StoreError::Conflict(what);
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
    /// [`ACQUIRE_TIMEOUT_MS`]).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached.
    pub async fn connect(url: &str, max_connections: u32, strategy: ClaimStrategy) -> StoreResult<Self> {
        let options = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
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
        Ok(Self { pool, strategy })
    }

    /// A store over an existing pool.
    #[must_use]
    pub fn from_pool(pool: PgPool, strategy: ClaimStrategy) -> Self {
        Self { pool, strategy }
    }

    /// Applies the migrations in `migrations/postgres`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn migrate(&self) -> StoreResult<()> {
        migrations::POSTGRES.run(&self.pool).await.map_err(|e| StoreError::Backend {
            message: "postgres: migrate".into(),
            source: Some(Box::new(e)),
        })
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The seat-claim strategy.
    #[must_use]
    pub fn strategy(&self) -> &ClaimStrategy {
        &self.strategy
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db("begin"))
    }
}

/// Stores an idempotency record in `tx`, unless a live one exists for the key
/// ([`StoreError::Conflict`]); a record past its lifetime is replaced.
async fn put_key(tx: &mut Transaction<'_, Postgres>, record: Option<&IdempotencyRecord>) -> StoreResult<()> {
    let Some(r) = record else { return Ok(()) };
    let result = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, outcome, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id, key) DO UPDATE
           SET fingerprint = EXCLUDED.fingerprint, outcome = EXCLUDED.outcome,
               created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
         WHERE idempotency_keys.expires_at <= EXCLUDED.created_at",
    )
    .bind(r.user_id.as_str())
    .bind(r.key.as_str())
    .bind(&r.fingerprint)
    .bind(&r.outcome)
    .bind(r.created_at)
    .bind(r.expires_at)
    .execute(&mut **tx)
    .await
    .map_err(db("idempotency key"))?;
    one_row(result, "idempotency key")
}

async fn insert_entry(tx: &mut Transaction<'_, Postgres>, entry: &LedgerEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ledger (id, user_id, kind, amount, balance_after, at, payment_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.id.as_uuid())
    .bind(entry.user_id.as_str())
    .bind(rows::name(&entry.kind))
    .bind(entry.amount.get())
    .bind(entry.balance_after.get())
    .bind(entry.at)
    .bind(entry.payment_id.map(|p| p.as_uuid()))
    .execute(&mut **tx)
    .await
    .map_err(db("ledger"))?;
    Ok(())
}

/// Writes a wallet if its version is still `expected` (a wallet never written has version 0
/// and no row).
async fn put_wallet(tx: &mut Transaction<'_, Postgres>, expected: u64, wallet: &Wallet) -> StoreResult<()> {
    let result = if expected == 0 {
        sqlx::query(
            "INSERT INTO wallets (user_id, balance, version) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(wallet.user_id.as_str())
        .bind(wallet.balance.get())
        .bind(i64_of(wallet.version)?)
        .execute(&mut **tx)
        .await
    } else {
        sqlx::query("UPDATE wallets SET balance = $2, version = $3 WHERE user_id = $1 AND version = $4")
            .bind(wallet.user_id.as_str())
            .bind(wallet.balance.get())
            .bind(i64_of(wallet.version)?)
            .bind(i64_of(expected)?)
            .execute(&mut **tx)
            .await
    };
    one_row(result.map_err(db("wallet"))?, "wallet")
}

impl CatalogStore for PgStore {
    async fn create_concert(&self, plan: &ConcertPlan) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let c = &plan.concert;
        let q = c.queue;
        sqlx::query(
            "INSERT INTO concerts (id, title, max_active, admit_batch, admit_interval_ms, waiting_idle_secs, active_ttl_secs)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(c.id.as_uuid())
        .bind(&c.title)
        .bind(rows::i32_of(q.max_active)?)
        .bind(rows::i32_of(q.admit_batch)?)
        .bind(i64_of(q.admit_interval_ms)?)
        .bind(i64_of(q.waiting_idle_secs)?)
        .bind(i64_of(q.active_ttl_secs)?)
        .execute(&mut *tx)
        .await
        .map_err(db("concert id"))?;
        for s in &plan.schedules {
            sqlx::query("INSERT INTO schedules (id, concert_id, starts_at) VALUES ($1, $2, $3)")
                .bind(s.id.as_uuid())
                .bind(s.concert_id.as_uuid())
                .bind(s.starts_at)
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

    async fn concerts(&self) -> StoreResult<Vec<Concert>> {
        let rows: Vec<rows::ConcertRow> = sqlx::query_as("SELECT * FROM concerts ORDER BY created")
            .fetch_all(&self.pool)
            .await
            .map_err(db("concerts"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn concert(&self, id: ConcertId) -> StoreResult<Option<Concert>> {
        let row: Option<rows::ConcertRow> = sqlx::query_as("SELECT * FROM concerts WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("concert"))?;
        row.map(TryInto::try_into).transpose()
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
            "SELECT s.id, s.concert_id, s.starts_at,
                    count(seat.id) FILTER (WHERE seat.state = 'AVAILABLE'
                                           OR (seat.state = 'HELD' AND seat.hold_expires_at <= $2)) AS available
             FROM schedules s LEFT JOIN seats seat ON seat.schedule_id = s.id
             WHERE s.concert_id = $1
             GROUP BY s.id ORDER BY s.starts_at",
        )
        .bind(concert.as_uuid())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db("schedules"))?;
        Ok(rows.into_iter().map(ScheduleRow::into_availability).collect())
    }

    async fn seats(&self, schedule: ScheduleId) -> StoreResult<Vec<SeatRecord>> {
        let rows: Vec<SeatRow> = sqlx::query_as("SELECT * FROM seats WHERE schedule_id = $1 ORDER BY number")
            .bind(schedule.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(db("seats"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn seat(&self, id: SeatId) -> StoreResult<Option<SeatRecord>> {
        let row: Option<SeatRow> = sqlx::query_as("SELECT * FROM seats WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("seat"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn ping_catalog(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db("ping"))?;
        Ok(())
    }
}

impl WalletStore for PgStore {
    async fn wallet(&self, user: &UserId) -> StoreResult<Wallet> {
        let row: Option<WalletRow> = sqlx::query_as("SELECT * FROM wallets WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("wallet"))?;
        row.map_or_else(|| Ok(Wallet::empty(user.clone())), TryInto::try_into)
    }

    async fn apply_charge(
        &self,
        plan: &ChargePlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        put_wallet(&mut tx, plan.expected_version, &plan.wallet).await?;
        insert_entry(&mut tx, &plan.entry).await?;
        put_key(&mut tx, idempotency).await?;
        tx.commit().await.map_err(db("commit"))
    }

    async fn ledger(&self, user: &UserId) -> StoreResult<Vec<LedgerEntry>> {
        let rows: Vec<LedgerRow> = sqlx::query_as("SELECT * FROM ledger WHERE user_id = $1 ORDER BY seq")
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db("ledger"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let row: Option<rows::KeyRow> =
            sqlx::query_as("SELECT * FROM idempotency_keys WHERE user_id = $1 AND key = $2")
                .bind(user.as_str())
                .bind(key.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("idempotency key"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn save_outcome(&self, record: &IdempotencyRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        put_key(&mut tx, Some(record)).await?;
        tx.commit().await.map_err(db("commit"))
    }
}

impl PgStore {
    /// The seat write of a hold, behind the configured strategy. `lock_fence` is the Redis
    /// lock's fence for the Redis strategy (0 otherwise).
    async fn write_hold(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        plan: &HoldPlan,
        lock_fence: i64,
    ) -> StoreResult<()> {
        let r = &plan.reservation;
        match &self.strategy {
            ClaimStrategy::ConditionalUpdate => {}
            #[cfg(feature = "redis")]
            ClaimStrategy::RedisLock(_) => {}
            ClaimStrategy::ForUpdate => {
                let fence: Option<i64> =
                    sqlx::query_scalar("SELECT fence FROM seats WHERE id = $1 FOR UPDATE")
                        .bind(r.seat_id.as_uuid())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db("seat"))?;
                if fence != Some(i64_of(plan.expected_fence.get())?) {
                    return Err(StoreError::Conflict("seat"));
                }
            }
            ClaimStrategy::AdvisoryLock => {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 1))")
                    .bind(r.seat_id.as_uuid())
                    .execute(&mut **tx)
                    .await
                    .map_err(db("seat lock"))?;
            }
        }
        let result = sqlx::query(
            "UPDATE seats SET state = 'HELD', reservation_id = $3, holder = $4, hold_expires_at = $5,
                              fence = $6, lock_fence = GREATEST(lock_fence, $7)
             WHERE id = $1 AND fence = $2 AND ($7 = 0 OR lock_fence < $7)",
        )
        .bind(r.seat_id.as_uuid())
        .bind(i64_of(plan.expected_fence.get())?)
        .bind(r.id.as_uuid())
        .bind(r.user_id.as_str())
        .bind(r.expires_at)
        .bind(i64_of(r.fence.get())?)
        .bind(lock_fence)
        .execute(&mut **tx)
        .await
        .map_err(db("seat"))?;
        one_row(result, "seat")
    }

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
        self.claim_in_tx(plan, idempotency, i64_of(lock_fence)?).await
    }

    async fn claim_in_tx(
        &self,
        plan: &HoldPlan,
        idempotency: Option<&IdempotencyRecord>,
        lock_fence: i64,
    ) -> StoreResult<()> {
        let r = &plan.reservation;
        let mut tx = self.begin().await?;
        self.write_hold(&mut tx, plan, lock_fence).await?;
        // Holds of one token are serialised by a lock keyed by the token (a per-buyer lock, not
        // a row every buyer shares), so the count below cannot be raced by the same token.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 2))")
            .bind(r.token.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db("token lock"))?;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reservations
             WHERE token = $1 AND (status = 'CONFIRMED' OR (status = 'HELD' AND expires_at > $2))",
        )
        .bind(r.token.as_str())
        .bind(plan.now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("open holds"))?;
        if open >= i64::from(plan.holds_per_token) {
            return Err(StoreError::HoldLimitReached);
        }
        if let Some(previous) = plan.supersedes {
            sqlx::query("UPDATE reservations SET status = 'EXPIRED' WHERE id = $1 AND status = 'HELD'")
                .bind(previous.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db("superseded reservation"))?;
        }
        sqlx::query(
            "INSERT INTO reservations (id, user_id, token, seat_id, schedule_id, concert_id, price, fence, status, held_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'HELD', $9, $10)",
        )
        .bind(r.id.as_uuid())
        .bind(r.user_id.as_str())
        .bind(r.token.as_str())
        .bind(r.seat_id.as_uuid())
        .bind(r.schedule_id.as_uuid())
        .bind(r.concert_id.as_uuid())
        .bind(r.price.get())
        .bind(i64_of(r.fence.get())?)
        .bind(r.held_at)
        .bind(r.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db("reservation"))?;
        put_key(&mut tx, idempotency).await?;
        tx.commit().await.map_err(db("commit"))
    }
}

impl BookingStore for PgStore {
    async fn reservation(&self, id: ReservationId) -> StoreResult<Option<Reservation>> {
        let row: Option<ReservationRow> = sqlx::query_as("SELECT * FROM reservations WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reservation"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn reservations_of_token(
        &self,
        _user: &UserId,
        token: &QueueToken,
    ) -> StoreResult<Vec<Reservation>> {
        let rows: Vec<ReservationRow> = sqlx::query_as("SELECT * FROM reservations WHERE token = $1")
            .bind(token.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db("reservations of token"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn claim_seat(&self, plan: &HoldPlan, idempotency: Option<&IdempotencyRecord>) -> StoreResult<()> {
        #[cfg(feature = "redis")]
        if let ClaimStrategy::RedisLock(lock) = &self.strategy {
            let seat = plan.reservation.seat_id;
            // Losers queue here, in Redis (bounded), rather than on the seat's row.
            let Some(guard) = lock.acquire_waiting(seat, plan.now).await? else {
                return Err(StoreError::Conflict("seat lock"));
            };
            let result = self.claim_in_tx(plan, idempotency, i64_of(guard.fence)?).await;
            lock.release(seat, &guard).await;
            return result;
        }
        self.claim_in_tx(plan, idempotency, 0).await
    }

    async fn release_seat(&self, plan: &ReleasePlan) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let freed = sqlx::query(
            "UPDATE seats SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL, hold_expires_at = NULL,
                              fence = fence + 1
             WHERE id = $1 AND fence = $2 AND reservation_id = $3 AND state = 'HELD'",
        )
        .bind(plan.seat_id.as_uuid())
        .bind(i64_of(plan.expected_fence.get())?)
        .bind(plan.reservation_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db("seat"))?;
        one_row(freed, "seat")?;
        let released =
            sqlx::query("UPDATE reservations SET status = 'RELEASED' WHERE id = $1 AND status = 'HELD'")
                .bind(plan.reservation_id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db("reservation"))?;
        one_row(released, "reservation")?;
        tx.commit().await.map_err(db("commit"))
    }

    async fn commit_payment(
        &self,
        plan: &PaymentPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let r = &plan.reservation;
        let mut tx = self.begin().await?;
        let booked = sqlx::query(
            "UPDATE seats SET state = 'BOOKED', holder = NULL, hold_expires_at = NULL, fence = $4
             WHERE id = $1 AND fence = $2 AND reservation_id = $3 AND state = 'HELD'",
        )
        .bind(r.seat_id.as_uuid())
        .bind(i64_of(plan.expected_fence.get())?)
        .bind(r.id.as_uuid())
        .bind(i64_of(plan.new_fence.get())?)
        .execute(&mut *tx)
        .await
        .map_err(db("seat"))?;
        one_row(booked, "seat")?;
        let confirmed =
            sqlx::query("UPDATE reservations SET status = 'CONFIRMED' WHERE id = $1 AND status = 'HELD'")
                .bind(r.id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db("reservation"))?;
        one_row(confirmed, "reservation")?;
        put_wallet(&mut tx, plan.expected_wallet_version, &plan.wallet).await?;
        insert_entry(&mut tx, &plan.entry).await?;
        let p = &plan.payment;
        sqlx::query(
            "INSERT INTO payments (id, reservation_id, seat_id, user_id, amount, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(p.id.as_uuid())
        .bind(p.reservation_id.as_uuid())
        .bind(p.seat_id.as_uuid())
        .bind(p.user_id.as_str())
        .bind(p.amount.get())
        .bind(p.at)
        .execute(&mut *tx)
        .await
        .map_err(db("payment"))?;
        put_key(&mut tx, idempotency).await?;
        tx.commit().await.map_err(db("commit"))
    }

    async fn payment_of(&self, reservation: ReservationId) -> StoreResult<Option<Payment>> {
        let row: Option<PaymentRow> = sqlx::query_as("SELECT * FROM payments WHERE reservation_id = $1")
            .bind(reservation.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("payment"))?;
        row.map(TryInto::try_into).transpose()
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
