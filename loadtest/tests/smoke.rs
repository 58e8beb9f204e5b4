//! The CI smoke run: the real `loadtest` binary drives a few hundred simulated users for a few
//! seconds against the real server (started in this process on 127.0.0.1:0, with its admission
//! ticker and sweeper), once over the in-memory stores and once over PostgreSQL + Redis, and the
//! audit must PASS. Correctness only: nothing here asserts a speed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Config, SystemClock, Ticketing};
use ticketing_http::AppState;
use ticketing_http::auth::AuthMode;
use tokio::sync::watch;

const ADMIN_KEY: &str = "smoke-admin-key";
const SEATS: u64 = 120;

/// A running server; it stops when dropped.
struct Server {
    base: String,
    stop: watch::Sender<bool>,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn start<Q: QueueStore, B: BookingStore>(
    queue: Q,
    booking: B,
    guard: Option<Box<dyn std::any::Any + Send + Sync>>,
) -> Server {
    let service = Ticketing::new(queue, booking, SystemClock, Config::default());
    let state =
        Arc::new(AppState::new(service, AuthMode::None, Some(ADMIN_KEY.to_owned()), Duration::from_secs(30)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    ticketing_http::spawn_background(
        Arc::clone(&state),
        Duration::from_millis(100),
        Duration::from_millis(500),
        stopped.clone(),
    );
    let mut stopping = stopped;
    tokio::spawn(ticketing_http::serve(listener, state, async move {
        let _ = stopping.changed().await;
    }));
    Server { base, stop, _guard: guard }
}

/// Runs the binary against `server`; returns whether it exited 0 and its JSON summary.
async fn loadtest(server: &Server, name: &str) -> (bool, Value) {
    loadtest_with(server, name, &[]).await
}

/// Runs the binary against `server` with some of the smoke run's flags given other values
/// (`overrides`: flag, value).
async fn loadtest_with(server: &Server, name: &str, overrides: &[(&str, &str)]) -> (bool, Value) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("loadtest-smoke-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let mut args: Vec<String> = [
        "--host",
        &server.base,
        "--users",
        "300",
        "--increase-rate",
        "300",
        "--run-time",
        "4s",
        "--seats",
        &SEATS.to_string(),
        "--admit-batch",
        "50",
        "--admit-interval-ms",
        "200",
        "--waiting-idle-secs",
        "6",
        "--out-dir",
        &out.display().to_string(),
        "--quiet",
        "--no-print-metrics",
    ]
    .map(str::to_owned)
    .to_vec();
    for (flag, value) in overrides {
        match args.iter().position(|a| a == flag) {
            Some(at) => args[at + 1] = (*value).to_owned(),
            None => args.extend([(*flag).to_owned(), (*value).to_owned()]),
        }
    }
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(&args)
            .env("TICKETING_ADMIN_KEY", ADMIN_KEY)
            .status()
            .expect("run loadtest")
    })
    .await
    .unwrap();
    let summary = std::fs::read_to_string(out.join("summary.json")).expect("the summary was written");
    assert!(out.join("report.html").exists(), "goose's HTML report was written");
    (status.success(), serde_json::from_str(&summary).unwrap())
}

/// The audit passed, the binary said so, something was sold, and every check of the audit
/// counts zero; answers the seats booked.
fn assert_audit_clean(passed: bool, summary: &Value) -> u64 {
    let audit = &summary["audit"];
    assert_eq!(summary["verdict"], "PASS", "{audit:#}");
    assert!(passed, "the binary exits 0 on PASS");
    let booked = audit["bookedSeats"].as_u64().unwrap();
    assert!(booked > 0, "{summary:#}");
    for check in [
        "seatsPaidTwice",
        "paymentsWithoutBookedSeat",
        "bookedSeatsWithoutOnePayment",
        "salesNoClientMade",
        "balanceMismatches",
        "fifoInversions",
        "contractViolations",
    ] {
        assert_eq!(audit[check], 0, "{check}: {audit:#}");
    }
    booked
}

fn assert_sound_sale((passed, summary): (bool, Value)) {
    let booked = assert_audit_clean(passed, &summary);
    let audit = &summary["audit"];
    assert_eq!(audit["seats"], SEATS);
    // Everything sold is accounted for, both ways.
    assert_eq!(summary["purchases"], booked);
    assert_eq!(
        audit["paymentsSeen"].as_u64().unwrap() + audit["paymentsUnanswered"].as_u64().unwrap(),
        booked
    );
    // A buyer (an account, an admission) buys a seat, or two paid together.
    let together = summary["paidTogether"].as_u64().unwrap_or(0);
    assert!(audit["accountsChecked"].as_u64().unwrap() + together >= booked);
    assert!(audit["admissionsObserved"].as_u64().unwrap() + together >= booked);
    assert_eq!(summary["errors"]["serverErrors"], 0, "{summary:#}");
    // Both scenarios ran and the steps were measured.
    assert!(summary["outcomes"]["buyer"]["bought"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["outcomes"]["browser"]["abandoned"].as_u64().unwrap() > 0, "{summary:#}");
    for step in
        ["POST join", "GET poll", "GET seats", "POST hold", "POST charge", "POST pay", "GET reservation"]
    {
        assert!(summary["steps"][step]["count"].as_u64().unwrap() > 0, "{step}: {summary:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_run_against_memory_passes_the_audit() {
    let store = ticketing_core::store::memory::MemoryStore::new();
    let server = start(store.clone(), store, None).await;
    assert_sound_sale(loadtest(&server, "memory").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_run_against_postgres_and_redis_passes_the_audit() {
    use ticketing_core::store::postgres::ClaimStrategy;
    use ticketing_core::store::redis::RedisQueueStore;
    let (booking, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let queue = RedisQueueStore::new(
        ticketing_core::testing::redis_connection().await,
        ticketing_core::testing::fresh_redis_prefix(),
    );
    let server = start(queue, booking, Some(Box::new(database))).await;
    // Half the buyers hold a second seat and pay both in one payment; a fifth cancel their
    // booking and get their points back (the seat is sold again).
    let overrides = [("--pair-share", "0.5"), ("--cancel-share", "0.2")];
    let (passed, summary) = loadtest_with(&server, "pg-redis", &overrides).await;
    assert!(summary["paidTogether"].as_u64().unwrap_or(0) > 0, "{summary:#}");
    assert!(summary["audit"]["refundsSeen"].as_u64().unwrap_or(0) > 0, "{summary:#}");
    assert_sound_sale((passed, summary));
}

/// A sale with the operator's controls, on PostgreSQL + Redis: its opening is scheduled two
/// seconds after the concert is made (PostgreSQL's clock decides it), so the first buyers wait in
/// a pre-queue, nobody is admitted before the opening, and the pre-queue is drawn once as the
/// recorded seed says; browsers leave the line; an operator revokes a buyer every 200 ms, and
/// nobody pays after their revocation; buyers try for a second seat of a concert that allows one
/// per buyer, and nobody owns two; the rest of the audit passes as in any sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_with_a_scheduled_opening_draws_its_pre_queue_once() {
    use ticketing_core::store::postgres::ClaimStrategy;
    use ticketing_core::store::redis::RedisQueueStore;
    let (booking, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let queue = RedisQueueStore::new(
        ticketing_core::testing::redis_connection().await,
        ticketing_core::testing::fresh_redis_prefix(),
    );
    let server = start(queue, booking, Some(Box::new(database))).await;
    let overrides = [
        ("--opens-in-secs", "2"),
        ("--run-time", "6s"),
        ("--revoke-every-ms", "200"),
        ("--max-seats-per-buyer", "1"),
        ("--seats-per-buyer", "2"),
    ];
    let (passed, summary) = loadtest_with(&server, "opening", &overrides).await;
    assert_audit_clean(passed, &summary);
    let opening = &summary["audit"]["opening"];
    assert_eq!(opening["opened"], true, "{opening:#}");
    assert!(opening["preQueue"].as_u64().unwrap() > 0, "{opening:#}");
    for check in ["admittedBeforeOpening", "drawInversions", "drawnMoreThanOnce"] {
        assert_eq!(opening[check], 0, "{check}: {opening:#}");
    }
    // Buyers try for a second seat of a concert that allows one: nobody owns two.
    assert_eq!(summary["audit"]["overCap"], 0, "{summary:#}");
    // An operator revokes a buyer now and then: they are told so, and nobody paid after.
    assert_eq!(summary["audit"]["paidAfterRevocation"], 0, "{summary:#}");
    assert!(summary["outcomes"]["buyer"]["revoked"].as_u64().unwrap_or(0) > 0, "{summary:#}");
    // Browsers that wait for the opening leave the line (half of them) and are told so after.
    assert!(summary["steps"]["DELETE leave"]["count"].as_u64().unwrap_or(0) > 0, "{summary:#}");
    assert!(summary["outcomes"]["browser"]["left"].as_u64().unwrap_or(0) > 0, "{summary:#}");
}

/// Deletes every key under `prefix` in one script, as a restart without persistence or a
/// failover to an empty replica loses them: at once. Answers how many there were.
async fn lose_keys(conn: &redis::aio::ConnectionManager, prefix: &str) -> i64 {
    redis::cmd("EVAL")
        .arg("local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n")
        .arg(0)
        .arg(format!("{prefix}*"))
        .query_async(&mut conn.clone())
        .await
        .unwrap()
}

/// The `redis-flush` drill, short: a sale over PostgreSQL + Redis whose Redis keys are all
/// deleted at once while buyers wait in line (few places, so most wait) and others are admitted.
/// Every buyer must keep their place and admission: the audit passes with no contract violation
/// (a poll answered 401 would be one) and no FIFO inversion, and no answer is a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_redis_loses_its_data_keeps_every_place_in_line() {
    use ticketing_core::store::postgres::ClaimStrategy;
    use ticketing_core::store::redis::RedisQueueStore;
    let (booking, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let conn = ticketing_core::testing::redis_connection().await;
    let prefix = ticketing_core::testing::fresh_redis_prefix();
    let server =
        start(RedisQueueStore::new(conn.clone(), prefix.clone()), booking, Some(Box::new(database))).await;
    let fault = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        lose_keys(&conn, &prefix).await
    });
    let run = loadtest_with(
        &server,
        "redis-loss",
        &[("--max-active", "30"), ("--admit-batch", "10"), ("--run-time", "14s")],
    )
    .await;
    let deleted = fault.await.unwrap();
    assert!(deleted > 10, "the line was there to lose: {deleted} keys");
    assert_sound_sale(run);
}

/// `url` (`scheme://[user@]host:port/...`) split into its host, its port, and itself pointed at
/// `127.0.0.1:port` instead.
fn redirected(url: &str, port: u16) -> (String, u16, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(user, rest)| (user, rest));
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, upstream) = authority.rsplit_once(':').expect("a port in the test URL");
    let at = if user.is_empty() { String::new() } else { format!("{user}@") };
    (host.to_owned(), upstream.parse().unwrap(), format!("{scheme}://{at}127.0.0.1:{port}/{path}"))
}

/// A smoke run with outages: the audit passes and everything sold is accounted for, and no
/// answer is a 500 (a 503 while a store is away is the contract).
fn assert_sound_sale_through_outage((passed, summary): (bool, Value)) {
    assert_audit_clean(passed, &summary);
    let errors = summary["errors"]["goose"].as_object().unwrap();
    assert!(!errors.keys().any(|k| k.contains("500")), "{errors:#?}");
}

/// The `redis-restart` and `postgres-restart` drills, short: each store behind a proxy goes away
/// for two seconds mid-sale, one after the other (Redis comes back empty, as a restart without
/// persistence does). The audit passes and no answer is a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_stores_restart_recovers_by_itself() {
    use ticketing_core::store::postgres::{ClaimStrategy, PgStore};
    use ticketing_core::store::redis::RedisQueueStore;
    use ticketing_core::testing::{TcpProxy, resolve};

    let database = ticketing_core::testing::fresh_postgres().await;
    let (host, port, _) = redirected(&database.url, 0);
    let pg_proxy = TcpProxy::start(resolve(&host, port).await).await;
    let (_, _, pg_url) = redirected(&database.url, pg_proxy.address.port());
    let booking = PgStore::connect(&pg_url, 8, ClaimStrategy::ConditionalUpdate).await.unwrap();

    let redis_url = ticketing_core::testing::redis_url();
    let (host, port, _) = redirected(&redis_url, 0);
    let redis_proxy = TcpProxy::start(resolve(&host, port).await).await;
    let (_, _, proxied) = redirected(&redis_url, redis_proxy.address.port());
    let prefix = ticketing_core::testing::fresh_redis_prefix();
    let queue = RedisQueueStore::connect(&proxied, prefix.clone()).await.unwrap();
    let server = start(queue, booking, Some(Box::new(database))).await;

    let direct = ticketing_core::testing::redis_connection().await;
    let faults = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        redis_proxy.set_up(false);
        let deleted = lose_keys(&direct, &prefix).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis_proxy.set_up(true);
        // The Redis connection takes a few seconds to come back: PostgreSQL goes away about
        // when it does, just as the buyers come back to be given their places (which reads
        // PostgreSQL). Admission must wait for them from when it can check the line again, not
        // from when the line began again (508 FIFO inversions when it did).
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg_proxy.set_up(false);
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg_proxy.set_up(true);
        (deleted, redis_proxy.turns(), pg_proxy.turns(), redis_proxy, pg_proxy)
    });
    let run = loadtest_with(
        &server,
        "restarts",
        &[("--max-active", "30"), ("--admit-batch", "10"), ("--run-time", "18s")],
    )
    .await;
    let (deleted, _, _, _redis_proxy, _pg_proxy) = faults.await.unwrap();
    assert!(deleted > 10, "the line was there to lose: {deleted} keys");
    assert_sound_sale_through_outage(run);
}
