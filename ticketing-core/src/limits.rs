//! Every bound of the system as a named constant, units last.
//!
//! Defaults can be overridden per deployment through [`crate::Config`] and per concert through
//! [`crate::catalog::QueueSettings`]; the hard limits here cannot.

/// How long a hold keeps its seat before it expires, unless configured otherwise.
pub const HOLD_TTL_SECS_DEFAULT: u64 = 300;
/// How many open holds (held or confirmed reservations) one queue token may have.
pub const HOLDS_PER_TOKEN_DEFAULT: u32 = 1;
/// The most holds a token may have open at once, for the server and for any concert.
pub const HOLDS_PER_TOKEN_MAX: u32 = 100;
/// The most reservations a buyer's own view lists (newest first).
pub const RESERVATIONS_PER_USER_READ: usize = 1_000;
/// The longest a concert's buyers may be allowed to cancel before a performance: a year.
pub const CANCEL_UNTIL_SECS_MAX: u64 = 366 * 86_400;
/// The most reservations one payment may name.
pub const RESERVATIONS_PER_PAYMENT_MAX: usize = HOLDS_PER_TOKEN_MAX as usize;
/// How long a waiting token keeps its place without being polled.
pub const WAITING_IDLE_SECS_DEFAULT: u64 = 60;
/// How long an admitted token stays active.
pub const ACTIVE_TTL_SECS_DEFAULT: u64 = 300;
/// At most this many tokens are active at once per concert, unless configured otherwise.
pub const MAX_ACTIVE_DEFAULT: u32 = 100;
/// At most this many tokens are admitted per admission interval, unless configured otherwise.
pub const ADMIT_BATCH_DEFAULT: u32 = 10;
/// The admission interval ("tick"), unless configured otherwise.
pub const ADMIT_INTERVAL_MS_DEFAULT: u64 = 1_000;

/// The largest `max_active` a concert may ask for.
pub const MAX_ACTIVE_LIMIT: u32 = 1_000_000;
/// The largest `admit_batch` a concert may ask for.
pub const ADMIT_BATCH_LIMIT: u32 = 100_000;
/// The shortest admission interval a concert may ask for.
pub const ADMIT_INTERVAL_MS_MIN: u64 = 10;
/// The longest of any configurable duration (one day).
pub const DURATION_SECS_MAX: u64 = 86_400;

/// The largest per-buyer seat cap a concert may set.
pub const MAX_SEATS_PER_BUYER_LIMIT: u32 = 10_000;

/// The largest single charge.
pub const CHARGE_MAX_POINTS: i64 = 10_000_000;
/// The largest balance a wallet may reach through charges.
pub const BALANCE_MAX_POINTS: i64 = 100_000_000;
/// The largest price of one seat.
pub const PRICE_MAX_POINTS: i64 = 10_000_000;

/// Idempotency keys are kept at least this long after their first use.
pub const IDEMPOTENCY_TTL_SECS: u64 = 86_400;
/// Expired queue tokens are kept this long so that a payment retried after the answer was lost
/// can still authenticate and be answered from its idempotency key.
pub const TOKEN_RETENTION_SECS: u64 = 86_400;

/// How often the service re-reads and retries an atomic step that lost a compare-and-set race
/// before it reports contention.
pub const CAS_RETRIES: u32 = 8;
/// At most this many records one sweep call tidies per store, so a sweep never stalls a store.
pub const SWEEP_BATCH: usize = 10_000;

/// The longest user id.
pub const USER_ID_MAX_LEN: usize = 64;
/// The longest idempotency key.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 128;
/// The longest concert title.
pub const TITLE_MAX_LEN: usize = 200;
/// At most this many schedules per concert.
pub const SCHEDULES_PER_CONCERT_MAX: usize = 100;
/// At most this many seats per schedule.
pub const SEATS_PER_SCHEDULE_MAX: u32 = 100_000;
/// A schedule starts in the years `STARTS_AT_YEAR_MIN` to `STARTS_AT_YEAR_MAX` of its own time
/// zone (so within a day of them in UTC): every backend stores those (MySQL's `DATETIME` only
/// years 1000 to 9999), and a sale for another age is a client's mistake.
pub const STARTS_AT_YEAR_MIN: i32 = 1900;
/// See [`STARTS_AT_YEAR_MIN`].
pub const STARTS_AT_YEAR_MAX: i32 = 8999;

/// The weight, in eighths, that the newest sample gets in the admission-rate moving average.
pub const ADMIT_RATE_EWMA_EIGHTHS: u32 = 2;
/// The longest wait the service estimates for a place in line (one day). Past it, the ETA is
/// reported as unknown rather than as a number nobody should plan on.
pub const ETA_MAX_SECS: u64 = 86_400;
/// At most this many concerts (and, apart, schedules) a service keeps in its catalog cache.
pub const CATALOG_CACHE_MAX: usize = 10_000;

/// How long a process merges only what changed into a concert's seat states before it reads the
/// concert whole again (`catalog::SeatStates::since`): what a change read could have missed
/// (a database rewritten behind its writers' backs) lasts no longer than this.
pub const SEAT_STATES_WHOLE_READ_SECS: i64 = 60;

/// Seats whose seat maps (each seat's id, number and price, about 64 bytes) one process keeps,
/// over all schedules; past it the cache starts again. A million seats are about 64 MB.
pub const SEAT_MAP_CACHE_SEATS_MAX: usize = 1_000_000;

/// How long a SQL store's caller waits for a pooled connection before the store reports the
/// backend busy.
pub const ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// How long a SQL store keeps a connection that finished its statement for reuse without a
/// check; past it, the connection is pinged before it is reused (`store::SqlPool`).
pub const HOT_CONNECTION_IDLE_MS: u64 = 30_000;
/// A SQL store's pool size when none is given.
pub const POOL_SIZE_DEFAULT: u32 = 16;
/// How long MySQL's `GET_LOCK` waits for a seat's named lock (the advisory claim strategy), in
/// seconds.
pub const NAMED_LOCK_WAIT_SECS: u32 = 5;
/// Seats inserted per statement when a MySQL store creates a concert.
pub const SEAT_INSERT_CHUNK: usize = 1_000;

/// How long an HTTP client has to send a request's head (its request line and headers), counted
/// from when its connection opens or its previous response went out, unless configured
/// otherwise: it cuts off clients that send headers a byte at a time and connections left idle.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// At most this many HTTP connections are open at once per server, unless configured otherwise;
/// past it, new connections wait in the listen backlog until one closes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// At most this many HTTP requests are worked on at once per server, unless configured
/// otherwise; past it, new ones are answered 503 `overloaded` (a quarter of the places is kept
/// for buyers finishing a purchase).
pub const IN_FLIGHT_MAX_DEFAULT: usize = 1_024;
/// How long a buyer finishing a purchase (paying, charging) waits for a place in a full server
/// before being answered 503 `overloaded`.
pub const PRIORITY_WAIT_MS: u64 = 1_000;
/// A readiness answer (`/readyz`, which pings every store) is reused for this long, and
/// concurrent checks wait for one another, so a flood of probes costs the stores one ping each
/// per interval.
pub const READINESS_CACHE_MS: u64 = 1_000;

/// The longest wait between two attempts to reconnect to Redis (the wait starts at 1 s and
/// doubles), in milliseconds.
pub const REDIS_RECONNECT_MAX_DELAY_MS: u64 = 2_000;
/// Attempts to reconnect to Redis before a command fails (the next command starts again).
pub const REDIS_RECONNECT_RETRIES: usize = 4;
/// How long one attempt to connect to Redis may take.
pub const REDIS_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// How long a Redis command may wait for its answer before it fails (the store reports the
/// backend failing: 503, never a hung request).
pub const REDIS_RESPONSE_TIMEOUT_MS: u64 = 2_000;

/// Most admissions one statement writes to the admission log (a tick's admissions are written
/// in statements of at most this many rows).
pub const ADMISSION_LOG_BATCH: usize = 500;

/// Seconds added to the longest pause a waiting client is told to keep between polls, to give the
/// time admission waits after a line began again with tokens lost (see
/// [`crate::Ticketing::admission_tick`]): long enough for every waiting buyer who obeys
/// `Retry-After` to come back with its place before anyone is admitted past it.
pub const LINE_REBUILD_MARGIN_SECS: u64 = 2;

/// Most admissions a process keeps in memory while the admission log's store fails (written on
/// a later tick; past this the oldest are dropped, and those tokens, if the queue store also
/// loses its data, come back in line at their place instead of admitted).
pub const UNLOGGED_ADMISSIONS_MAX: usize = 100_000;

/// At most this many waiting tokens are drawn at a sale's opening (the pre-queue); the draw reads
/// and rewrites them in one step, once per sale.
pub const PRE_QUEUE_DRAW_MAX: usize = 1_000_000;

/// The moves of a pre-queue's draw written per statement (SQL) or per script (Redis, which
/// answers nobody else while a script runs): a large pre-queue is dealt out in several.
pub const PRE_QUEUE_DRAW_CHUNK: usize = 5_000;

/// Who the audit trail names for the opening of a sale: the admission ticker, not a person.
pub const OPENER: &str = "admission-ticker";
