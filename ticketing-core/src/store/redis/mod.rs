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
use crate::limits::{
    REDIS_CONNECT_TIMEOUT_MS, REDIS_RECONNECT_MAX_DELAY_MS, REDIS_RECONNECT_RETRIES,
    REDIS_RESPONSE_TIMEOUT_MS,
};
use crate::store::StoreResult;

/// Maps a Redis error to the backend failing.
pub(crate) fn backend(what: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |error| StoreError::Backend { message: format!("redis: {what}"), source: Some(Box::new(error)) }
}

/// Connects a managed (auto-reconnecting) connection that recovers within seconds of the
/// server coming back, and fails a command rather than hang on a server that does not answer.
///
/// redis-rs's defaults do neither: no response or connect timeout, and a reconnect backoff
/// (backon's, from 1 s, multiplied by the configured factor of 100 per retry) whose second wait
/// is already at backon's 60 s cap, so a Redis restart of two seconds left every request of the
/// process hanging on the reconnect for a minute (found by `scripts/drill.sh redis-restart`).
/// Here the wait doubles from 1 s up to [`REDIS_RECONNECT_MAX_DELAY_MS`]
/// ([`crate::limits`]), and each command and connection attempt has its own deadline.
///
/// # Errors
/// [`StoreError::Backend`] when the URL is invalid or the server cannot be reached.
pub async fn connect(url: &str) -> StoreResult<ConnectionManager> {
    let client = redis::Client::open(url).map_err(backend("open"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(REDIS_RECONNECT_MAX_DELAY_MS)
        .set_number_of_retries(REDIS_RECONNECT_RETRIES)
        .set_connection_timeout(std::time::Duration::from_millis(REDIS_CONNECT_TIMEOUT_MS))
        .set_response_timeout(std::time::Duration::from_millis(REDIS_RESPONSE_TIMEOUT_MS));
    ConnectionManager::new_with_config(client, config).await.map_err(backend("connect"))
}
