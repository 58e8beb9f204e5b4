//! Redis: the queue store ([`RedisQueueStore`]) and a fenced seat lock ([`RedisSeatLock`]) that
//! a SQL store can put in front of its seat writes.
//!
//! Every atomic step is one Lua script. Keys carry a configurable prefix (tests use one per test)
//! and a hash tag per concert (`…c:{<concert>}:…`), so a script only touches keys of one hash
//! slot and the same scripts run on Redis Cluster. A queue token carries its concert, so no
//! index from token to concert is needed. The one key outside every concert's slot is the set
//! of concerts the sweeper walks, registered idempotently before a concert's first token is
//! inserted and never inside a script.

mod lock;
mod queue;

pub use self::lock::{LOCK_RETRY_MS, LOCK_TTL_MS, LOCK_WAIT_MS, LockGuard, RedisSeatLock};
pub use self::queue::{CONCERT_REGISTRATION_REFRESH_SECS, REGISTERED_CONCERTS_MAX, RedisQueueStore};

use redis::aio::ConnectionManager;

use crate::error::StoreError;
use crate::store::StoreResult;

/// Maps a Redis error to the backend failing.
pub(crate) fn backend(what: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |error| StoreError::Backend { message: format!("redis: {what}"), source: Some(Box::new(error)) }
}

/// Connects a managed (auto-reconnecting) connection.
///
/// # Errors
/// [`StoreError::Backend`] when the URL is invalid or the server cannot be reached.
pub async fn connect(url: &str) -> StoreResult<ConnectionManager> {
    let client = redis::Client::open(url).map_err(backend("open"))?;
    ConnectionManager::new(client).await.map_err(backend("connect"))
}
