//! Configuration: every setting is a flag with an environment variable. The variable names are
//! part of the contract; operators script them.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::http::HeaderName;

use clap::builder::{RangedU64ValueParser, StyledStr, TypedValueParser};
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use ticketing_core::catalog::{Concert, QueueSettings};
use ticketing_core::door::DoorBudget;
use ticketing_core::limits::{
    ACTIVE_TTL_SECS_DEFAULT, ADMIT_BATCH_DEFAULT, ADMIT_BATCH_LIMIT, ADMIT_INTERVAL_MS_DEFAULT,
    ADMIT_INTERVAL_MS_MIN, CONNECTIONS_MAX_DEFAULT, DURATION_SECS_MAX, HEADER_READ_TIMEOUT_MS_DEFAULT,
    HOLD_TTL_SECS_DEFAULT, HOLDS_PER_TOKEN_DEFAULT, IN_FLIGHT_MAX_DEFAULT, MAX_ACTIVE_DEFAULT,
    MAX_ACTIVE_LIMIT, WAITING_IDLE_SECS_DEFAULT,
};

use crate::auth::AuthMode;

// The bounds of the deployment-wide settings. The demo concert's queue settings use the
// catalog's own bounds (`ticketing_core::limits`), so a value clap accepts is one
// `QueueSettings::validate` accepts too.

/// The most open holds one queue token may be allowed (the catalog's bound).
pub use ticketing_core::limits::HOLDS_PER_TOKEN_MAX;
/// The largest SQL pool: beyond it a pool only queues on the database's own connection limit.
pub const DB_POOL_MAX: u32 = 1_000;
/// The slowest admission ticker: one minute, so no admission window opens later than that.
pub const TICK_MS_MAX: u64 = 60_000;
/// The slowest sweeper: one hour.
pub const SWEEP_MS_MAX: u64 = 3_600_000;
/// The shortest request timeout: below it a healthy store round trip would already time out.
pub const REQUEST_TIMEOUT_MS_MIN: u64 = 100;
/// The longest request timeout: ten minutes.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;
/// The shortest header-read timeout.
pub const HEADER_READ_TIMEOUT_MS_MIN: u64 = 100;
/// The longest header-read timeout: ten minutes.
pub const HEADER_READ_TIMEOUT_MS_MAX: u64 = 600_000;
/// The most connections one server may be configured to keep open.
pub const CONNECTIONS_MAX: u64 = 1_000_000;
/// The most requests one server may be configured to work on at once.
pub const IN_FLIGHT_MAX: u64 = 1_000_000;

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
    /// (SELECT … FOR UPDATE first), `advisory` or its other name `named-lock` (a database lock
    /// keyed by the seat first: pg_advisory_xact_lock on PostgreSQL, GET_LOCK on MySQL) or
    /// `redis-lock` (a fenced Redis lock first, at `TICKETING_LOCK_REDIS`). The database decides
    /// the winner under every one of them.
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
    #[arg(long, env = "TICKETING_DB_POOL", default_value_t = 16,
        value_parser = bounded::<u32>(1, DB_POOL_MAX.into()))]
    pub db_pool: u32,

    /// The secret (at least 32 bytes) every node of a deployment signs its queue tokens'
    /// claims with, so that any node can give back a buyer's place or admission after the queue
    /// store lost its data. Unset: a random key per process, which only that process can check
    /// (the server warns when the queue is in Redis).
    #[arg(long, env = "TICKETING_TOKEN_SECRET", hide_env_values = true, value_parser = token_secret)]
    pub token_secret: Option<String>,

    /// Key for the admin routes (`X-Admin-Key`); the admin routes are off when unset.
    #[arg(long, env = "TICKETING_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// How a user proves who it is when asking for a queue token: `none` (demo: userId from
    /// the body is believed), `header` (trust X-User-Id from a gateway), or
    /// `jwt-hs256:<secret>` (X-User-Token carries an HS256 JWT; `sub` is the user).
    #[arg(long, env = "TICKETING_AUTH", default_value = "none", hide_env_values = true)]
    pub auth: AuthMode,

    /// Allow `TICKETING_AUTH=none` on a durable store or a non-loopback address. Without it the
    /// server refuses to start there: in `none` mode anyone who names a user gets that user's
    /// live token.
    #[arg(long, env = "TICKETING_INSECURE_DEMO_AUTH", action = clap::ArgAction::SetTrue)]
    pub insecure_demo_auth: bool,

    /// How long a hold keeps its seat, in seconds.
    #[arg(long, env = "TICKETING_HOLD_TTL_SECS", default_value_t = HOLD_TTL_SECS_DEFAULT,
        value_parser = bounded::<u64>(1, DURATION_SECS_MAX))]
    pub hold_ttl_secs: u64,

    /// How many open holds one queue token may have.
    #[arg(long, env = "TICKETING_HOLDS_PER_TOKEN", default_value_t = HOLDS_PER_TOKEN_DEFAULT,
        value_parser = bounded::<u32>(1, HOLDS_PER_TOKEN_MAX.into()))]
    pub holds_per_token: u32,

    /// Create a demo concert (3 schedules x 50 seats at 50,000 points) at start.
    #[arg(long, env = "TICKETING_DEMO_SEED", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_seed: bool,

    /// Demo concert: at most this many active tokens at once.
    #[arg(long, env = "TICKETING_MAX_ACTIVE", default_value_t = MAX_ACTIVE_DEFAULT,
        value_parser = bounded::<u32>(1, MAX_ACTIVE_LIMIT.into()))]
    pub max_active: u32,

    /// Demo concert: at most this many admitted per admission interval.
    #[arg(long, env = "TICKETING_ADMIT_BATCH", default_value_t = ADMIT_BATCH_DEFAULT,
        value_parser = bounded::<u32>(1, ADMIT_BATCH_LIMIT.into()))]
    pub admit_batch: u32,

    /// Demo concert: the admission interval in milliseconds.
    #[arg(long, env = "TICKETING_ADMIT_INTERVAL_MS", default_value_t = ADMIT_INTERVAL_MS_DEFAULT,
        value_parser = bounded::<u64>(ADMIT_INTERVAL_MS_MIN, DURATION_SECS_MAX * 1_000))]
    pub admit_interval_ms: u64,

    /// Demo concert: a waiting token not polled for this many seconds loses its place.
    #[arg(long, env = "TICKETING_WAITING_IDLE_SECS", default_value_t = WAITING_IDLE_SECS_DEFAULT,
        value_parser = bounded::<u64>(1, DURATION_SECS_MAX))]
    pub waiting_idle_secs: u64,

    /// Demo concert: an admitted token expires this many seconds after admission.
    #[arg(long, env = "TICKETING_ACTIVE_TTL_SECS", default_value_t = ACTIVE_TTL_SECS_DEFAULT,
        value_parser = bounded::<u64>(1, DURATION_SECS_MAX))]
    pub active_ttl_secs: u64,

    /// How often the admission ticker runs, in milliseconds. Each concert's own interval caps
    /// how many it admits; this only bounds how late a window opens.
    #[arg(long, env = "TICKETING_TICK_MS", default_value_t = 50,
        value_parser = bounded::<u64>(1, TICK_MS_MAX))]
    pub tick_ms: u64,

    /// How often the sweeper tidies lapsed holds and expired tokens, in milliseconds.
    #[arg(long, env = "TICKETING_SWEEP_MS", default_value_t = 1_000,
        value_parser = bounded::<u64>(1, SWEEP_MS_MAX))]
    pub sweep_ms: u64,

    /// Every request is answered within this many milliseconds (503 `timeout` otherwise).
    #[arg(long, env = "TICKETING_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
        value_parser = bounded::<u64>(REQUEST_TIMEOUT_MS_MIN, REQUEST_TIMEOUT_MS_MAX))]
    pub request_timeout_ms: u64,

    /// A client has this many milliseconds to send a request's head (request line and
    /// headers), counted from when its connection opens or its previous response went out; a
    /// connection slower than that, or idle that long between requests, is closed.
    #[arg(long, env = "TICKETING_HEADER_READ_TIMEOUT_MS", default_value_t = HEADER_READ_TIMEOUT_MS_DEFAULT,
        value_parser = bounded::<u64>(HEADER_READ_TIMEOUT_MS_MIN, HEADER_READ_TIMEOUT_MS_MAX))]
    pub header_read_timeout_ms: u64,

    /// At most this many connections are open at once; past it, new ones wait in the listen
    /// backlog until one closes.
    #[arg(long, env = "TICKETING_MAX_CONNECTIONS", default_value_t = CONNECTIONS_MAX_DEFAULT,
        value_parser = bounded::<usize>(1, CONNECTIONS_MAX))]
    pub max_connections: usize,

    /// At most this many requests are worked on at once; past it, new ones are answered 503
    /// `overloaded` with Retry-After (a quarter of the places is kept for buyers paying).
    #[arg(long, env = "TICKETING_MAX_IN_FLIGHT", default_value_t = IN_FLIGHT_MAX_DEFAULT,
        value_parser = bounded::<usize>(1, IN_FLIGHT_MAX))]
    pub max_in_flight: usize,

    /// How many queue tokens one client address may ask for per minute: that many at once,
    /// then one every 60/N seconds; past it, 429 `rate_limited` with Retry-After. An IPv6
    /// client counts by its /64. `off` for no limit (a load test from one machine). Each server
    /// counts on its own.
    #[arg(long, env = "TICKETING_JOINS_PER_ADDRESS", default_value = "300", value_parser = per_minute)]
    pub joins_per_address: Budget,

    /// How many queue tokens one user may ask for per minute (as `TICKETING_JOINS_PER_ADDRESS`).
    #[arg(long, env = "TICKETING_JOINS_PER_USER", default_value = "10", value_parser = per_minute)]
    pub joins_per_user: Budget,

    /// The request header a trusted proxy in front writes the client's address into (for
    /// example `x-forwarded-for` or `x-real-ip`); its last entry is taken. Unset: the address of
    /// the connection. Set it only when every request reaches the server through that proxy: a
    /// client that reaches the server directly can write any address there.
    #[arg(long, env = "TICKETING_CLIENT_ADDRESS_HEADER", value_parser = header_name)]
    pub client_address_header: Option<HeaderName>,

    /// The ids of the demo concert's queue settings given on the command line or in the
    /// environment (not defaulted); filled by [`Config::try_parse_args`].
    #[arg(skip)]
    pub given: Vec<&'static str>,
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
    /// Parses `args` (the program name first) and the `TICKETING_*` environment, and records
    /// which demo-queue settings were given rather than defaulted (see [`Config::given`]).
    ///
    /// # Errors
    /// clap's error, formatted for printing: an unknown flag, a malformed value, or a number out
    /// of its range (the error names the flag, the environment variable and the range).
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut config = Self::from_arg_matches(&matches).map_err(|e| e.format(&mut Self::command()))?;
        config.given = demo_queue_fields(&config.demo_queue())
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| {
                matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
            })
            .collect();
        Ok(config)
    }

    /// Whether the identity mode suits where this server runs. `TICKETING_AUTH=none` believes
    /// whatever `userId` a client names and hands it that user's live token, so it is allowed
    /// without `TICKETING_INSECURE_DEMO_AUTH` only for the in-memory demo on a loopback address.
    ///
    /// # Errors
    /// Why `none` is refused here and what to set instead.
    pub fn check_demo_auth(&self) -> Result<(), String> {
        if !matches!(self.auth, AuthMode::None) || self.insecure_demo_auth {
            return Ok(());
        }
        let mut reasons = Vec::new();
        if self.store != "memory" || self.queue != "memory" {
            reasons.push(
                "keeps users' data in a durable store (TICKETING_STORE or TICKETING_QUEUE is not `memory`)"
                    .to_owned(),
            );
        }
        if !self.listen.ip().is_loopback() {
            reasons.push(format!(
                "listens on {}, which is not a loopback address (TICKETING_LISTEN)",
                self.listen
            ));
        }
        if reasons.is_empty() {
            return Ok(());
        }
        Err(format!(
            "refusing to start with TICKETING_AUTH=none: in that mode anyone who names a user gets \
             that user's live queue token, which is acceptable only for the in-memory demo on a \
             loopback address, but this server {}. Set TICKETING_AUTH=header or \
             TICKETING_AUTH=jwt-hs256:<secret>, or set TICKETING_INSECURE_DEMO_AUTH=true \
             (--insecure-demo-auth) to run the demo there anyway",
            reasons.join(" and ")
        ))
    }

    /// The warning to log when demo-queue settings of this start are not applied, naming each
    /// ignored variable and why; `None` when every one applies (or none matters).
    /// `catalog_is_empty` and `stored_demo` (the concert an earlier start seeded, if any) describe
    /// the catalog found at start: a durable store is seeded only when its catalog is empty, and
    /// a concert's queue settings are fixed when it is created.
    #[must_use]
    pub fn ignored_demo_queue(
        &self,
        catalog_is_empty: bool,
        stored_demo: Option<&Concert>,
    ) -> Option<String> {
        let configured = demo_queue_fields(&self.demo_queue());
        let given = |id: &str| self.given.contains(&id);
        let given_only = || -> Vec<String> {
            configured.iter().filter(|f| given(f.0)).map(|(_, env, value)| format!("{env}={value}")).collect()
        };
        let (ignored, why) = if !self.demo_seed {
            (given_only(), "TICKETING_DEMO_SEED=false, so no demo concert is created".to_owned())
        } else if catalog_is_empty {
            return None;
        } else if let Some(concert) = stored_demo {
            let differing = configured
                .iter()
                .zip(demo_queue_fields(&concert.queue))
                .filter(|(ours, stored)| ours.2 != stored.2)
                .map(|((id, env, value), (_, _, stored))| {
                    let source = if given(id) { "" } else { " (default)" };
                    format!("{env}={value}{source} (the stored concert has {stored})")
                })
                .collect();
            let why = format!(
                "the demo concert {} already exists and keeps the queue settings it has (settings \
                 are not taken from the environment once a concert is created; change them with \
                 PATCH /api/v1/admin/concerts/{{concertId}}/queue)",
                concert.id
            );
            (differing, why)
        } else {
            let why = "the catalog already has concerts, so no demo concert is created (only an \
                       empty catalog is seeded)";
            (given_only(), why.to_owned())
        };
        (!ignored.is_empty()).then(|| format!("demo concert settings ignored: {}; {why}", ignored.join(", ")))
    }

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

    /// The key the service signs its tokens' claims with, when one is configured.
    #[must_use]
    pub fn token_key(&self) -> Option<ticketing_core::claim::TokenKey> {
        self.token_secret
            .as_deref()
            .and_then(|secret| ticketing_core::claim::TokenKey::from_secret(secret).ok())
    }

    /// The limits on token requests.
    #[must_use]
    pub fn door(&self) -> DoorBudget {
        DoorBudget { per_address: self.joins_per_address.0, per_user: self.joins_per_user.0 }
    }

    /// The service configuration.
    #[must_use]
    pub fn service(&self) -> ticketing_core::Config {
        ticketing_core::Config { hold_ttl_secs: self.hold_ttl_secs, holds_per_token: self.holds_per_token }
    }
}

/// The demo concert's queue settings as (argument id, environment variable, value).
fn demo_queue_fields(queue: &QueueSettings) -> [(&'static str, &'static str, u64); 5] {
    [
        ("max_active", "TICKETING_MAX_ACTIVE", queue.max_active.into()),
        ("admit_batch", "TICKETING_ADMIT_BATCH", queue.admit_batch.into()),
        ("admit_interval_ms", "TICKETING_ADMIT_INTERVAL_MS", queue.admit_interval_ms),
        ("waiting_idle_secs", "TICKETING_WAITING_IDLE_SECS", queue.waiting_idle_secs),
        ("active_ttl_secs", "TICKETING_ACTIVE_TTL_SECS", queue.active_ttl_secs),
    ]
}

/// A whole number in `min..=max`, checked by clap's own ranged parser. A refused value's error
/// adds a tip naming the environment variable and the range, so an operator who set the
/// variable (not the flag) reads its name.
#[derive(Debug, Clone)]
pub struct Bounded<T: TryFrom<u64>> {
    inner: RangedU64ValueParser<T>,
    min: u64,
    max: u64,
}

/// The most token requests per minute a budget may allow.
pub const JOINS_PER_MINUTE_MAX: u32 = 1_000_000;

/// A number of requests per minute, or none (`off`): no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(pub Option<NonZeroU32>);

/// Accepts `off` or a whole number of requests per minute, 1 to [`JOINS_PER_MINUTE_MAX`].
fn per_minute(text: &str) -> Result<Budget, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Budget(None));
    }
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=JOINS_PER_MINUTE_MAX).contains(n))
        .and_then(NonZeroU32::new)
        .map(|n| Budget(Some(n)))
        .ok_or_else(|| format!("expected `off` or requests per minute, 1 to {JOINS_PER_MINUTE_MAX}"))
}

/// Accepts an HTTP header name.
fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(text).map_err(|e| format!("not a header name: {e}"))
}

/// Accepts a token secret of at least 32 bytes.
fn token_secret(text: &str) -> Result<String, String> {
    ticketing_core::claim::TokenKey::from_secret(text).map(|_| text.to_owned())
}

/// The parser of a setting that accepts `min..=max`.
#[must_use]
pub fn bounded<T: TryFrom<u64>>(min: u64, max: u64) -> Bounded<T> {
    Bounded { inner: RangedU64ValueParser::new().range(min..=max), min, max }
}

impl<T> TypedValueParser for Bounded<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: Send + Sync + 'static + std::error::Error + ToString,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        self.inner.parse_ref(cmd, arg, value).map_err(|mut error| {
            let name = arg.and_then(clap::Arg::get_env).map_or_else(
                || arg.map_or_else(String::new, |a| a.get_id().to_string()),
                |env| env.to_string_lossy().into_owned(),
            );
            let tip = format!("{name} must be {} to {}", self.min, self.max);
            error.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![StyledStr::from(tip)]));
            error
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ticketing_core::ids::ConcertId;

    use super::*;

    /// Every numeric setting: its flag, its environment variable and the range it accepts.
    const RANGES: [(&str, &str, u64, u64); 14] = [
        ("--hold-ttl-secs", "TICKETING_HOLD_TTL_SECS", 1, DURATION_SECS_MAX),
        ("--holds-per-token", "TICKETING_HOLDS_PER_TOKEN", 1, HOLDS_PER_TOKEN_MAX as u64),
        ("--max-active", "TICKETING_MAX_ACTIVE", 1, MAX_ACTIVE_LIMIT as u64),
        ("--admit-batch", "TICKETING_ADMIT_BATCH", 1, ADMIT_BATCH_LIMIT as u64),
        (
            "--admit-interval-ms",
            "TICKETING_ADMIT_INTERVAL_MS",
            ADMIT_INTERVAL_MS_MIN,
            DURATION_SECS_MAX * 1_000,
        ),
        ("--waiting-idle-secs", "TICKETING_WAITING_IDLE_SECS", 1, DURATION_SECS_MAX),
        ("--active-ttl-secs", "TICKETING_ACTIVE_TTL_SECS", 1, DURATION_SECS_MAX),
        ("--tick-ms", "TICKETING_TICK_MS", 1, TICK_MS_MAX),
        ("--sweep-ms", "TICKETING_SWEEP_MS", 1, SWEEP_MS_MAX),
        (
            "--request-timeout-ms",
            "TICKETING_REQUEST_TIMEOUT_MS",
            REQUEST_TIMEOUT_MS_MIN,
            REQUEST_TIMEOUT_MS_MAX,
        ),
        ("--db-pool", "TICKETING_DB_POOL", 1, DB_POOL_MAX as u64),
        (
            "--header-read-timeout-ms",
            "TICKETING_HEADER_READ_TIMEOUT_MS",
            HEADER_READ_TIMEOUT_MS_MIN,
            HEADER_READ_TIMEOUT_MS_MAX,
        ),
        ("--max-connections", "TICKETING_MAX_CONNECTIONS", 1, CONNECTIONS_MAX),
        ("--max-in-flight", "TICKETING_MAX_IN_FLIGHT", 1, IN_FLIGHT_MAX),
    ];

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_args(std::iter::once("ticketing-http").chain(args.iter().copied()))
    }

    #[test]
    fn every_numeric_setting_accepts_its_bounds_and_refuses_beyond_them_naming_the_variable() {
        for (flag, env, min, max) in RANGES {
            for good in [min, max] {
                assert!(parse(&[flag, &good.to_string()]).is_ok(), "{flag} {good}");
            }
            for bad in [min - 1, max + 1] {
                let error = parse(&[flag, &bad.to_string()]).unwrap_err().to_string();
                assert!(error.contains(env), "{flag} {bad}: {error}");
                assert!(error.contains(&format!("{min} to {max}")), "{flag} {bad}: {error}");
            }
        }
    }

    #[test]
    fn the_range_table_names_every_numeric_setting_with_its_variable() {
        let command = Config::command();
        for (flag, env, _, _) in RANGES {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == flag.strip_prefix("--"))
                .unwrap_or_else(|| panic!("{flag} exists"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env));
        }
        // Only text settings take "0"; a numeric setting added without a range would show here.
        let takes_zero: Vec<_> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|long| parse(&[&format!("--{long}"), "0"]).is_ok())
            .collect();
        assert_eq!(
            takes_zero,
            [
                "store",
                "queue",
                "seat-claim",
                "lock-redis",
                "redis-prefix",
                "admin-key",
                "client-address-header"
            ]
        );
    }

    #[test]
    fn join_budgets_are_on_by_default_take_off_and_refuse_nonsense_naming_the_variable() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(
            defaults.door(),
            DoorBudget { per_address: NonZeroU32::new(300), per_user: NonZeroU32::new(10) }
        );
        assert_eq!(defaults.client_address_header, None);
        let off = parse(&["--joins-per-address", "off", "--joins-per-user", "OFF"]).unwrap();
        assert_eq!(off.door(), DoorBudget::default());
        let set =
            parse(&["--joins-per-user", "1000000", "--client-address-header", "X-Forwarded-For"]).unwrap();
        assert_eq!(set.door().per_user, NonZeroU32::new(1_000_000));
        assert_eq!(set.client_address_header, Some(HeaderName::from_static("x-forwarded-for")));
        for bad in ["0", "1000001", "-1", "ten", ""] {
            let error = parse(&[&format!("--joins-per-user={bad}")]).unwrap_err().to_string();
            assert!(
                error.contains("TICKETING_JOINS_PER_USER") || error.contains("--joins-per-user"),
                "{bad}: {error}"
            );
            assert!(error.contains("`off` or requests per minute"), "{bad}: {error}");
        }
        assert!(parse(&["--client-address-header", "not a header"]).is_err());
    }

    #[test]
    fn the_demo_concert_accepts_what_the_catalog_accepts() {
        let extremes = |pick: fn(u64, u64) -> u64| {
            let args: Vec<String> = RANGES[2..7]
                .iter()
                .flat_map(|(flag, _, min, max)| [(*flag).to_owned(), pick(*min, *max).to_string()])
                .collect();
            parse(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap().demo_queue()
        };
        for queue in [extremes(|min, _| min), extremes(|_, max| max)] {
            assert_eq!(queue.validate(), Ok(()), "{queue:?}");
        }
        assert_eq!(parse(&[]).unwrap().demo_queue(), QueueSettings::default());
    }

    #[test]
    fn demo_auth_is_allowed_only_for_the_in_memory_demo_on_loopback_unless_insisted() {
        assert_eq!(parse(&[]).unwrap().check_demo_auth(), Ok(()));
        assert_eq!(parse(&["--listen", "[::1]:8080"]).unwrap().check_demo_auth(), Ok(()));
        let refused = [
            vec!["--store", "postgres://db/t"],
            vec!["--queue", "redis://cache"],
            vec!["--listen", "0.0.0.0:8080"],
            vec!["--listen", "192.0.2.1:8080", "--store", "mysql://db/t"],
        ];
        for args in refused {
            let error = parse(&args).unwrap().check_demo_auth().unwrap_err();
            assert!(error.contains("TICKETING_INSECURE_DEMO_AUTH"), "{args:?}: {error}");
            assert!(error.contains("live"), "{args:?} says why: {error}");
            let insisted = [args.clone(), vec!["--insecure-demo-auth"]].concat();
            assert_eq!(parse(&insisted).unwrap().check_demo_auth(), Ok(()), "{args:?}");
        }
        let proven = ["--store", "postgres://db/t", "--listen", "0.0.0.0:80", "--auth", "header"];
        assert_eq!(parse(&proven).unwrap().check_demo_auth(), Ok(()));
    }

    fn stored_demo(max_active: u32) -> Concert {
        let queue = QueueSettings { max_active, ..QueueSettings::default() };
        Concert {
            id: ConcertId::random(),
            title: crate::DEMO_TITLE.into(),
            queue,
            paused: false,
            version: 0,
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
            opened: None,
        }
    }

    #[test]
    fn demo_settings_apply_silently_when_the_demo_concert_is_seeded_or_unchanged() {
        let config = parse(&["--max-active", "7"]).unwrap();
        assert_eq!(config.given, vec!["max_active"]);
        assert_eq!(config.ignored_demo_queue(true, None), None);
        assert_eq!(config.ignored_demo_queue(false, Some(&stored_demo(7))), None);
        assert_eq!(parse(&[]).unwrap().ignored_demo_queue(false, None), None, "nothing given");
    }

    #[test]
    fn demo_settings_a_stored_demo_concert_overrides_are_reported_with_both_values() {
        let stored = stored_demo(100);
        let config = parse(&["--max-active", "7", "--admit-batch", "10"]).unwrap();
        let warning = config.ignored_demo_queue(false, Some(&stored)).unwrap();
        assert!(warning.contains("TICKETING_MAX_ACTIVE=7 (the stored concert has 100)"), "{warning}");
        assert!(!warning.contains("TICKETING_ADMIT_BATCH"), "equal, so not ignored: {warning}");
        assert!(
            warning.contains(&stored.id.to_string()) && warning.contains("PATCH /api/v1/admin/concerts/"),
            "{warning}"
        );
        // A default that differs from the stored concert is reported as a default.
        let warning = parse(&[]).unwrap().ignored_demo_queue(false, Some(&stored_demo(5))).unwrap();
        assert!(
            warning.contains("TICKETING_MAX_ACTIVE=100 (default) (the stored concert has 5)"),
            "{warning}"
        );
    }

    #[test]
    fn demo_settings_given_when_no_demo_concert_is_created_are_reported() {
        let config = parse(&["--waiting-idle-secs", "30"]).unwrap();
        let warning = config.ignored_demo_queue(false, None).unwrap();
        assert!(
            warning.contains("TICKETING_WAITING_IDLE_SECS=30") && warning.contains("already has concerts")
        );
        let unseeded = parse(&["--waiting-idle-secs", "30", "--demo-seed", "false"]).unwrap();
        let warning = unseeded.ignored_demo_queue(true, None).unwrap();
        assert!(
            warning.contains("TICKETING_WAITING_IDLE_SECS=30")
                && warning.contains("TICKETING_DEMO_SEED=false")
        );
    }
}
