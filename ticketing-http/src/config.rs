//! Configuration: every setting is a flag with an environment variable. The variable names are
//! part of the contract; operators script them.

use std::net::SocketAddr;

use clap::Parser;
use ticketing_core::catalog::QueueSettings;
use ticketing_core::limits::{
    ACTIVE_TTL_SECS_DEFAULT, ADMIT_BATCH_DEFAULT, ADMIT_INTERVAL_MS_DEFAULT, HOLD_TTL_SECS_DEFAULT,
    HOLDS_PER_TOKEN_DEFAULT, MAX_ACTIVE_DEFAULT, WAITING_IDLE_SECS_DEFAULT,
};

use crate::auth::AuthMode;

/// The ticketing server: a virtual waiting room, seat holds and point payments for concert
/// sale days.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "TICKETING_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where catalog, holds, balances and payments live: `memory`, `postgres://…` or
    /// `mysql://…` (MySQL 8 or MariaDB 10.11).
    #[arg(long, env = "TICKETING_STORE", default_value = "memory", hide_env_values = true)]
    pub store: String,

    /// Where queue tokens live: `memory`, `postgres://…`, `mysql://…` or `redis://…`.
    #[arg(long, env = "TICKETING_QUEUE", default_value = "memory", hide_env_values = true)]
    pub queue: String,

    /// How a SQL store claims a seat: `conditional` (a conditional UPDATE), `for-update`
    /// (SELECT … FOR UPDATE first), `advisory` (PostgreSQL: pg_advisory_xact_lock first),
    /// `named-lock` (MySQL: GET_LOCK first) or `redis-lock` (a fenced Redis lock first, at
    /// `TICKETING_LOCK_REDIS`). The database decides the winner under every one of them.
    #[arg(long, env = "TICKETING_SEAT_CLAIM", default_value = "conditional")]
    pub seat_claim: String,

    /// The Redis server of the `redis-lock` strategy (default: `TICKETING_QUEUE` when that is
    /// Redis).
    #[arg(long, env = "TICKETING_LOCK_REDIS", hide_env_values = true)]
    pub lock_redis: Option<String>,

    /// The prefix of every Redis key this deployment writes.
    #[arg(long, env = "TICKETING_REDIS_PREFIX", default_value = "ticketing:")]
    pub redis_prefix: String,

    /// At most this many connections in each SQL pool.
    #[arg(long, env = "TICKETING_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,

    /// Key for the admin routes (`X-Admin-Key`); the admin routes are off when unset.
    #[arg(long, env = "TICKETING_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// How a user proves who it is when asking for a queue token: `none` (demo: userId from
    /// the body is believed), `header` (trust X-User-Id from a gateway), or
    /// `jwt-hs256:<secret>` (X-User-Token carries an HS256 JWT; `sub` is the user).
    #[arg(long, env = "TICKETING_AUTH", default_value = "none", hide_env_values = true)]
    pub auth: AuthMode,

    /// How long a hold keeps its seat, in seconds.
    #[arg(long, env = "TICKETING_HOLD_TTL_SECS", default_value_t = HOLD_TTL_SECS_DEFAULT)]
    pub hold_ttl_secs: u64,

    /// How many open holds one queue token may have.
    #[arg(long, env = "TICKETING_HOLDS_PER_TOKEN", default_value_t = HOLDS_PER_TOKEN_DEFAULT)]
    pub holds_per_token: u32,

    /// Create a demo concert (3 schedules x 50 seats at 50,000 points) at start.
    #[arg(long, env = "TICKETING_DEMO_SEED", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_seed: bool,

    /// Demo concert: at most this many active tokens at once.
    #[arg(long, env = "TICKETING_MAX_ACTIVE", default_value_t = MAX_ACTIVE_DEFAULT)]
    pub max_active: u32,

    /// Demo concert: at most this many admitted per admission interval.
    #[arg(long, env = "TICKETING_ADMIT_BATCH", default_value_t = ADMIT_BATCH_DEFAULT)]
    pub admit_batch: u32,

    /// Demo concert: the admission interval in milliseconds.
    #[arg(long, env = "TICKETING_ADMIT_INTERVAL_MS", default_value_t = ADMIT_INTERVAL_MS_DEFAULT)]
    pub admit_interval_ms: u64,

    /// Demo concert: a waiting token not polled for this many seconds loses its place.
    #[arg(long, env = "TICKETING_WAITING_IDLE_SECS", default_value_t = WAITING_IDLE_SECS_DEFAULT)]
    pub waiting_idle_secs: u64,

    /// Demo concert: an admitted token expires this many seconds after admission.
    #[arg(long, env = "TICKETING_ACTIVE_TTL_SECS", default_value_t = ACTIVE_TTL_SECS_DEFAULT)]
    pub active_ttl_secs: u64,

    /// How often the admission ticker runs, in milliseconds. Each concert's own interval caps
    /// how many it admits; this only bounds how late a window opens.
    #[arg(long, env = "TICKETING_TICK_MS", default_value_t = 50)]
    pub tick_ms: u64,

    /// How often the sweeper tidies lapsed holds and expired tokens, in milliseconds.
    #[arg(long, env = "TICKETING_SWEEP_MS", default_value_t = 1_000)]
    pub sweep_ms: u64,

    /// Every request is answered within this many milliseconds (503 `timeout` otherwise).
    #[arg(long, env = "TICKETING_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the SQL migrations to `TICKETING_STORE` (and to `TICKETING_QUEUE` when it is SQL),
    /// then exit.
    Migrate,
}

impl Config {
    /// The demo concert's queue settings.
    #[must_use]
    pub fn demo_queue(&self) -> QueueSettings {
        QueueSettings {
            max_active: self.max_active,
            admit_batch: self.admit_batch,
            admit_interval_ms: self.admit_interval_ms,
            waiting_idle_secs: self.waiting_idle_secs,
            active_ttl_secs: self.active_ttl_secs,
        }
    }

    /// The service configuration.
    #[must_use]
    pub fn service(&self) -> ticketing_core::Config {
        ticketing_core::Config { hold_ttl_secs: self.hold_ttl_secs, holds_per_token: self.holds_per_token }
    }
}
