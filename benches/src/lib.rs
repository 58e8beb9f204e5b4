//! Shared code of the benchmarks: which backends are available, and the claim path.
//!
//! Server backends come from environment variables and are skipped with a printed notice when
//! a variable is absent (benchmarks are not tests):
//! - `TICKETING_BENCH_POSTGRES_URL` (PostgreSQL: conditional, FOR UPDATE, advisory strategies)
//! - `TICKETING_BENCH_MYSQL_URL` (MySQL / MariaDB: conditional, FOR UPDATE, GET_LOCK)
//! - `TICKETING_BENCH_REDIS_URL` (with PostgreSQL: the Redis fenced lock in front of it; and the
//!   Redis queue for the queue benchmarks)
//!
//! Point them at scratch databases: each run creates fresh concerts there.

use chrono::{DateTime, Duration, Utc};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
use ticketing_core::hold::{Holder, plan_hold};
use ticketing_core::ids::{ConcertId, Points, QueueToken, ReservationId, SeatId, UserId};
use ticketing_core::limits::CAS_RETRIES;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::mysql::{self, MyStore};
use ticketing_core::store::postgres::{ClaimStrategy, PgStore};
use ticketing_core::store::redis::{LOCK_TTL_MS, RedisQueueStore, RedisSeatLock};
use ticketing_core::store::{BookingStore, StoreResult};
use ticketing_core::{Config, ManualClock, StoreError, Ticketing};

/// The environment variable naming the PostgreSQL database for benchmarks.
pub const POSTGRES_ENV: &str = "TICKETING_BENCH_POSTGRES_URL";
/// The environment variable naming the MySQL / MariaDB database for benchmarks.
pub const MYSQL_ENV: &str = "TICKETING_BENCH_MYSQL_URL";
/// The environment variable naming the Redis server for benchmarks.
pub const REDIS_ENV: &str = "TICKETING_BENCH_REDIS_URL";
/// Connections per SQL pool in the benchmarks: what a server node would have.
pub const POOL: u32 = 16;

/// A booking backend under benchmark.
#[derive(Debug, Clone)]
pub enum Booking {
    /// The in-memory store.
    Memory(MemoryStore),
    /// PostgreSQL with a strategy.
    Postgres(PgStore),
    /// MySQL / MariaDB with a strategy.
    Mysql(MyStore),
}

fn env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        println!("notice: {name} is not set; skipping the backends that need it");
    }
    value
}

/// Every booking backend and strategy the environment allows, named for the report.
///
/// # Panics
/// When a configured server cannot be reached or migrated (a typo should not look like a skip).
pub async fn bookings() -> Vec<(String, Booking)> {
    let mut all = vec![("memory".to_owned(), Booking::Memory(MemoryStore::new()))];
    let redis = env(REDIS_ENV);
    if let Some(url) = env(POSTGRES_ENV) {
        let mut strategies =
            vec![ClaimStrategy::ConditionalUpdate, ClaimStrategy::ForUpdate, ClaimStrategy::AdvisoryLock];
        if let Some(redis) = &redis {
            let conn = ticketing_core::store::redis::connect(redis).await.expect("connect to Redis");
            let prefix = format!("bench:{}:", random_hex());
            strategies.push(ClaimStrategy::RedisLock(RedisSeatLock::new(conn, prefix, LOCK_TTL_MS)));
        }
        for strategy in strategies {
            let name = format!("postgres/{}", strategy.name());
            let store = PgStore::connect(&url, POOL, strategy).await.expect("connect to PostgreSQL");
            store.migrate().await.expect("migrate PostgreSQL");
            all.push((name, Booking::Postgres(store)));
        }
    }
    if let Some(url) = env(MYSQL_ENV) {
        for strategy in [
            mysql::ClaimStrategy::ConditionalUpdate,
            mysql::ClaimStrategy::ForUpdate,
            mysql::ClaimStrategy::AdvisoryLock,
        ] {
            let name = format!("mysql/{}", strategy.name());
            let store = MyStore::connect(&url, POOL, strategy).await.expect("connect to MySQL");
            store.migrate().await.expect("migrate MySQL");
            all.push((name, Booking::Mysql(store)));
        }
    }
    all
}

/// The Redis queue store, if the environment names a Redis server.
///
/// # Panics
/// When the configured server cannot be reached.
pub async fn redis_queue() -> Option<RedisQueueStore> {
    let url = env(REDIS_ENV)?;
    Some(RedisQueueStore::connect(&url, format!("bench:{}:", random_hex())).await.expect("connect to Redis"))
}

/// A fresh concert with one schedule of `seats` seats; returns its seats.
///
/// # Panics
/// When the store refuses (a benchmark cannot go on).
pub async fn fresh_seats<B: BookingStore + Clone>(store: &B, seats: u32, now: DateTime<Utc>) -> Vec<SeatId> {
    let svc = Ticketing::new(MemoryStore::new(), store.clone(), ManualClock::new(now), Config::default());
    let plan = svc
        .create_concert(&NewConcert {
            title: "bench".into(),
            schedules: vec![NewSchedule {
                starts_at: now + Duration::days(1),
                seat_count: seats,
                price: Points::new(100).expect("positive"),
            }],
            queue: QueueSettings { max_active: 1_000_000, admit_batch: 100_000, ..QueueSettings::default() },
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .expect("create a concert");
    plan.seats.iter().map(|s| s.id).collect()
}

/// 32 random hex digits, for key prefixes and user names that must not collide across runs.
#[must_use]
pub fn random_hex() -> String {
    ConcertId::random().as_uuid().simple().to_string()
}

/// A holder with a fresh user and token (of a concert of its own: the booking store does not
/// look at the token's concert).
#[must_use]
pub fn holder(n: usize) -> Holder {
    let token = QueueToken::generate(ConcertId::random());
    Holder { user_id: UserId::parse(&format!("b{n}-{}", &random_hex()[..8])).expect("valid"), token }
}

/// The service's claim path without the queue: read the seat, decide with the pure machine,
/// write with the store's compare-and-set, and on a lost race read again. `Ok(true)` when this
/// claim won the seat.
///
/// # Errors
/// The store failing.
pub async fn claim<B: BookingStore>(
    store: &B,
    seat: SeatId,
    holder: Holder,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    for _ in 0..CAS_RETRIES {
        let record = store.seat(seat).await?.ok_or(StoreError::Missing("seat"))?;
        let Ok(plan) =
            plan_hold(&record, holder.clone(), ReservationId::random(), Duration::minutes(5), 1, now)
        else {
            return Ok(false);
        };
        match store.claim_seat(&plan, None).await {
            Ok(()) => return Ok(true),
            Err(StoreError::Conflict(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

/// `K` concurrent claims over `seats` (task `i` claims seat `i mod S`). Returns how many won,
/// after checking that exactly `min(K, S)` did: a benchmark that double-books is broken, not
/// fast.
///
/// # Panics
/// When the number of winners is wrong, naming the backend.
pub async fn contend<B: BookingStore + Clone>(
    name: &str,
    store: &B,
    seats: &[SeatId],
    tasks: usize,
    now: DateTime<Utc>,
) -> usize {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let store = store.clone();
            let seat = seats[i % seats.len()];
            tokio::spawn(async move { claim(&store, seat, holder(i), now).await })
        })
        .collect();
    let mut won = 0;
    for handle in handles {
        if handle.await.expect("claim task").expect("claim") {
            won += 1;
        }
    }
    let expected = tasks.min(seats.len());
    assert_eq!(
        won,
        expected,
        "BROKEN: {name} with {tasks} tasks on {} seats: {won} claims won, expected {expected}",
        seats.len()
    );
    won
}
