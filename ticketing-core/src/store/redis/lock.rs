//! A Redis seat lock with a fencing number: `SET NX PX` plus an `INCR`'d fence, in one script.
//!
//! The lock only reduces contention: losers wait in Redis (bounded by [`LOCK_WAIT_MS`]) instead
//! of queueing on the seat's row. Safety stays with the database, which checks the fence on write, so a holder
//! whose lock lapsed while it was paused can never write after a newer holder has.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use super::backend;
use crate::ids::SeatId;
use crate::store::StoreResult;

/// How long a seat lock lives if its holder never releases it.
pub const LOCK_TTL_MS: u64 = 2_000;
/// How long a claimer waits for a held seat lock before reporting a conflict.
pub const LOCK_WAIT_MS: u64 = 1_000;
/// How long a waiting claimer sleeps between tries (plus up to as much again of jitter).
pub const LOCK_RETRY_MS: u64 = 5;

/// Acquires a lock and returns its fence, or 0 when someone else holds it. A fence counter that
/// does not exist (a new seat, or a Redis that lost its data) starts from the caller's clock in
/// milliseconds times 1024, so fences stay above every fence handed out before.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end
  return redis.call('INCR', KEYS[2])
end
return 0
";

/// Deletes the lock only if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A held seat lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    /// The fencing number: larger than that of every earlier holder of this seat's lock.
    pub fence: u64,
    value: String,
}

/// Fenced seat locks in Redis.
#[derive(Clone)]
pub struct RedisSeatLock {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
}

impl std::fmt::Debug for RedisSeatLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSeatLock").field("prefix", &self.prefix).field("ttl_ms", &self.ttl_ms).finish()
    }
}

impl RedisSeatLock {
    /// Locks under `prefix`, each living at most `ttl_ms`.
    #[must_use]
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>, ttl_ms: u64) -> Self {
        Self { conn, prefix: prefix.into(), ttl_ms }
    }

    fn keys(&self, seat: SeatId) -> (String, String) {
        let base = format!("{}seat:{{{seat}}}:", self.prefix);
        (format!("{base}lock"), format!("{base}fence"))
    }

    /// Tries to take the seat's lock; `None` when someone else holds it.
    ///
    /// # Errors
    /// [`crate::StoreError::Backend`] when Redis fails.
    pub async fn acquire(&self, seat: SeatId, now: DateTime<Utc>) -> StoreResult<Option<LockGuard>> {
        let (lock, fence) = self.keys(seat);
        // Unique per acquisition, so a release never deletes a later holder's lock.
        let value = uuid::Uuid::new_v4().simple().to_string();
        let floor = u64::try_from(now.timestamp_millis()).unwrap_or(0).saturating_mul(1024);
        let got: u64 = redis::Script::new(ACQUIRE)
            .key(lock)
            .key(fence)
            .arg(&value)
            .arg(self.ttl_ms)
            .arg(floor)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend("acquire seat lock"))?;
        Ok((got > 0).then_some(LockGuard { fence: got, value }))
    }

    /// Takes the seat's lock, waiting up to [`LOCK_WAIT_MS`] while someone else holds it (the
    /// holder's transaction is short); `None` if it is still held then. Waiting here is what
    /// the lock is for: losers queue in Redis instead of on the seat's row.
    ///
    /// # Errors
    /// [`crate::StoreError::Backend`] when Redis fails.
    pub async fn acquire_waiting(&self, seat: SeatId, now: DateTime<Utc>) -> StoreResult<Option<LockGuard>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS);
        loop {
            if let Some(guard) = self.acquire(seat, now).await? {
                return Ok(Some(guard));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            let mut jitter = [0_u8; 1];
            let _ = getrandom::fill(&mut jitter);
            let pause = LOCK_RETRY_MS + u64::from(jitter[0]) % (LOCK_RETRY_MS + 1);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
    }

    /// Releases the lock if it is still `guard`'s. Failing to release is only logged: the lock
    /// lapses after its TTL and the fence protects the seat either way.
    pub async fn release(&self, seat: SeatId, guard: &LockGuard) {
        let (lock, _) = self.keys(seat);
        let result: Result<u64, _> = redis::Script::new(RELEASE)
            .key(lock)
            .arg(&guard.value)
            .invoke_async(&mut self.conn.clone())
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, %seat, "could not release a seat lock; it lapses on its own");
        }
    }

    /// Deletes the seat's lock whoever holds it, as if it had lapsed. For tests of fencing.
    ///
    /// # Errors
    /// [`crate::StoreError::Backend`] when Redis fails.
    pub async fn force_expire(&self, seat: SeatId) -> StoreResult<()> {
        let (lock, _) = self.keys(seat);
        redis::cmd("DEL")
            .arg(lock)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend("expire lock"))
    }
}
