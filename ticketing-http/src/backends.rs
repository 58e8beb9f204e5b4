//! Chooses the stores from the configuration, once, at start-up. Any mix of memory, PostgreSQL
//! (booking and/or queue) and Redis (queue) works; each combination is a concrete type, so the
//! server is statically dispatched.

use ticketing_core::store::ClaimStrategy;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::mysql::{self, MyStore};
use ticketing_core::store::postgres::PgStore;
use ticketing_core::store::redis::{LOCK_TTL_MS, RedisQueueStore, RedisSeatLock};

use crate::config::Config;

/// Where booking lives.
#[derive(Debug)]
pub enum BookingBackend {
    /// In this process.
    Memory(MemoryStore),
    /// PostgreSQL.
    Postgres(PgStore),
    /// MySQL / MariaDB.
    Mysql(MyStore),
}

/// Where the queue lives.
#[derive(Debug)]
pub enum QueueBackend {
    /// In this process.
    Memory(MemoryStore),
    /// PostgreSQL.
    Postgres(PgStore),
    /// MySQL / MariaDB.
    Mysql(MyStore),
    /// Redis.
    Redis(RedisQueueStore),
}

/// A configuration mistake or an unreachable backend.
pub type SetupError = Box<dyn std::error::Error + Send + Sync>;

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn is_mysql(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

fn is_redis(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}

async fn redis_lock(config: &Config) -> Result<RedisSeatLock, SetupError> {
    let url =
        config.lock_redis.clone().or_else(|| is_redis(&config.queue).then(|| config.queue.clone())).ok_or(
            "TICKETING_SEAT_CLAIM=redis-lock needs TICKETING_LOCK_REDIS (or a Redis TICKETING_QUEUE)",
        )?;
    let conn = ticketing_core::store::redis::connect(&url).await?;
    Ok(RedisSeatLock::new(conn, format!("{}lock:", config.redis_prefix), LOCK_TTL_MS))
}

fn unknown_strategy(name: &str, known: &str) -> SetupError {
    format!("unknown TICKETING_SEAT_CLAIM {name:?}: {known}").into()
}

/// The configured seat-claim strategy (every one works on both SQL dialects).
async fn strategy(config: &Config) -> Result<ClaimStrategy, SetupError> {
    if config.seat_claim == "redis-lock" {
        return Ok(ClaimStrategy::RedisLock(redis_lock(config).await?));
    }
    ClaimStrategy::from_name(&config.seat_claim).ok_or_else(|| {
        unknown_strategy(
            &config.seat_claim,
            "conditional, for-update, advisory (or named-lock) or redis-lock",
        )
    })
}

/// Connects the booking store and applies its migrations.
///
/// # Errors
/// An unknown store, an unreachable database, a failed migration.
pub async fn booking(config: &Config) -> Result<BookingBackend, SetupError> {
    if config.store == "memory" {
        return Ok(BookingBackend::Memory(MemoryStore::new()));
    }
    if is_postgres(&config.store) {
        let store = PgStore::connect(&config.store, config.db_pool, strategy(config).await?).await?;
        store.migrate().await?;
        return Ok(BookingBackend::Postgres(store));
    }
    if is_mysql(&config.store) {
        let store = MyStore::connect(&config.store, config.db_pool, strategy(config).await?).await?;
        store.migrate().await?;
        return Ok(BookingBackend::Mysql(store));
    }
    Err(format!("unknown TICKETING_STORE {:?}: memory, postgres://… or mysql://…", config.store).into())
}

/// Connects the queue store (reusing the booking store's pool when both name the same
/// database) and applies its migrations.
///
/// # Errors
/// An unknown queue, an unreachable server, a failed migration.
pub async fn queue(config: &Config, booking: &BookingBackend) -> Result<QueueBackend, SetupError> {
    if config.queue == "memory" {
        return Ok(QueueBackend::Memory(MemoryStore::new()));
    }
    if is_postgres(&config.queue) {
        if let BookingBackend::Postgres(store) = booking {
            if config.queue == config.store {
                return Ok(QueueBackend::Postgres(store.clone()));
            }
        }
        let store = PgStore::connect(&config.queue, config.db_pool, ClaimStrategy::ConditionalUpdate).await?;
        store.migrate().await?;
        return Ok(QueueBackend::Postgres(store));
    }
    if is_mysql(&config.queue) {
        if let BookingBackend::Mysql(store) = booking {
            if config.queue == config.store {
                return Ok(QueueBackend::Mysql(store.clone()));
            }
        }
        let store =
            MyStore::connect(&config.queue, config.db_pool, mysql::ClaimStrategy::ConditionalUpdate).await?;
        store.migrate().await?;
        return Ok(QueueBackend::Mysql(store));
    }
    if is_redis(&config.queue) {
        let store = RedisQueueStore::connect(&config.queue, format!("{}q:", config.redis_prefix)).await?;
        return Ok(QueueBackend::Redis(store));
    }
    Err(format!("unknown TICKETING_QUEUE {:?}: memory, postgres://…, mysql://… or redis://…", config.queue)
        .into())
}

/// Applies the migrations of every SQL store configured, then returns.
///
/// # Errors
/// As [`booking`] and [`queue`].
pub async fn migrate(config: &Config) -> Result<(), SetupError> {
    let booking = booking(config).await?;
    queue(config, &booking).await?;
    Ok(())
}
