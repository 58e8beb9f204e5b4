//! Network round trips per service call on the SQL backends, counted on the wire.
//!
//! The store talks to the database through a TCP proxy (`testing::TcpProxy`) that counts the
//! client's turns: each time the client sends after the database has answered is one round trip. The queue is the
//! in-memory store, so every turn counted is the booking store's. These are the figures of the
//! README's round-trip table ("What a call costs in round trips"); a statement that costs a
//! second round trip (a ping when the connection goes back to the pool, a `BEGIN` of its own)
//! fails here.

#![cfg(all(feature = "testing", feature = "memory", any(feature = "postgres", feature = "mysql")))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;

use chrono::DateTime;

use ticketing_core::catalog::{ConcertPlan, NewConcert, NewSchedule, QueueSettings};
use ticketing_core::ids::{Points, QueueToken, UserId};
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{BookingStore, ClaimStrategy};
use ticketing_core::testing::{TcpProxy, resolve};
use ticketing_core::{Config, ManualClock, Ticketing};

/// The round trips `call` costs on `store`'s one connection, counted once whatever it set off
/// in the background (a connection checked as it is given back) is done: a readiness ping (one
/// round trip, not counted) waits for the connection before the count is read.
async fn round_trips<T, B: BookingStore>(
    proxy: &TcpProxy,
    store: &B,
    call: impl Future<Output = T>,
) -> (T, u64) {
    let before = proxy.turns();
    let out = call.await;
    store.ping_catalog().await.unwrap();
    (out, proxy.turns() - before - 1)
}

fn concert() -> NewConcert {
    NewConcert {
        title: "Round trips".into(),
        schedules: vec![NewSchedule {
            starts_at: DateTime::from_timestamp(1_950_000_000, 0).unwrap(),
            seat_count: 10,
            price: Points::new(10).unwrap(),
        }],
        queue: QueueSettings {
            max_active: 10,
            admit_batch: 10,
            admit_interval_ms: 1_000,
            waiting_idle_secs: 60,
            active_ttl_secs: 600,
        },
        max_seats_per_buyer: None,
        holds_per_token: None,
        cancel_until_secs_before_start: None,
        sales_open_at: None,
        pre_queue: Default::default(),
    }
}

/// Runs a purchase for each of two buyers on `store` (one connection, reached through
/// `proxy`) and checks the second buyer's calls, once every statement has
/// been prepared on the connection by the first.
async fn each_call_costs_its_round_trips<B: BookingStore>(store: B, proxy: &TcpProxy, hold_trips: u64) {
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let service = Ticketing::new(MemoryStore::new(), store, clock, Config::default());
    let plan: ConcertPlan = service.create_concert(&concert()).await.unwrap();
    let schedule = plan.schedules[0].id;
    let mut tokens: Vec<QueueToken> = Vec::new();
    for user in ["first", "second"] {
        let user = UserId::parse(user).unwrap();
        tokens.push(service.issue_token(&user, plan.concert.id).await.unwrap().record.token);
    }
    service.admission_tick(plan.concert.id).await.unwrap();

    // The first buyer prepares every statement on the connection.
    let first = &tokens[0];
    service.booking_store().ping_catalog().await.unwrap();
    service.charge(first, 100, None).await.unwrap();
    service.balance(first).await.unwrap();
    // A process's first list of a schedule reads its seats whole; later ones the occupied seats.
    service.seats(first, schedule).await.unwrap();
    service.seats(first, schedule).await.unwrap();
    let held = service.hold(first, plan.seats[0].id, None).await.unwrap();
    service.pay(first, held.id, None).await.unwrap();

    let second = &tokens[1];
    let (_, trips) = round_trips(proxy, service.booking_store(), service.charge(second, 100, None)).await;
    assert_eq!(trips, 2, "a charge: one read of its inputs, one call of its step");
    let (_, trips) = round_trips(proxy, service.booking_store(), service.balance(second)).await;
    assert_eq!(trips, 1, "a balance: one read");
    let (list, trips) = round_trips(proxy, service.booking_store(), service.seats(second, schedule)).await;
    assert_eq!(
        trips, 1,
        "a seat list: one read of what changed (PostgreSQL) or of the occupied seats (MySQL)"
    );
    assert_eq!(list.unwrap().seats.len(), 10);
    let (held, trips) =
        round_trips(proxy, service.booking_store(), service.hold(second, plan.seats[1].id, None)).await;
    assert_eq!(trips, hold_trips, "a hold");
    let (_, trips) =
        round_trips(proxy, service.booking_store(), service.pay(second, held.unwrap().id, None)).await;
    assert_eq!(trips, 2, "a payment: one read of its inputs, one call of its step");
}

/// A store over one connection to a fresh database, reached through a new proxy: the store, the
/// proxy and the database's guard.
macro_rules! proxied_store {
    ($fresh:path, $options:ty, $pool:ty, $store:path, $strategy:expr) => {{
        let database = $fresh().await;
        let options = <$options>::from_str(&database.url).unwrap();
        let proxy = TcpProxy::start(resolve(options.get_host(), options.get_port()).await).await;
        let pool = <$pool>::new()
            .max_connections(1)
            .connect_with(options.host("127.0.0.1").port(proxy.address.port()))
            .await
            .unwrap();
        ($store(pool, $strategy), proxy, database)
    }};
}

macro_rules! postgres_store {
    ($strategy:expr) => {
        proxied_store!(
            ticketing_core::testing::fresh_postgres,
            sqlx::postgres::PgConnectOptions,
            sqlx::postgres::PgPoolOptions,
            ticketing_core::store::postgres::PgStore::from_pool,
            $strategy
        )
    };
}

macro_rules! mysql_store {
    ($strategy:expr) => {
        proxied_store!(
            ticketing_core::testing::fresh_mysql,
            sqlx::mysql::MySqlConnectOptions,
            sqlx::mysql::MySqlPoolOptions,
            ticketing_core::store::mysql::MyStore::from_pool,
            $strategy
        )
    };
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_calls_cost_their_round_trips_and_no_ping() {
    for (strategy, hold_trips) in [(ClaimStrategy::ConditionalUpdate, 2), (ClaimStrategy::AdvisoryLock, 2)] {
        let (store, proxy, _database) = postgres_store!(strategy);
        each_call_costs_its_round_trips(store, &proxy, hold_trips).await;
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_calls_cost_their_round_trips_and_no_ping() {
    // The advisory strategy takes and releases a named lock around the claim: two more.
    for (strategy, hold_trips) in [(ClaimStrategy::ConditionalUpdate, 2), (ClaimStrategy::AdvisoryLock, 4)] {
        let (store, proxy, _database) = mysql_store!(strategy);
        each_call_costs_its_round_trips(store, &proxy, hold_trips).await;
    }
}

/// After a statement whose future was dropped half-way, and after one the database refused, the
/// one connection answers the next statement correctly; after the refusal, in one round trip.
macro_rules! a_cancelled_or_refused_statement_leaves_the_connection_clean {
    ($name:ident, $feature:literal, $store:ident, $sleep:literal, $seven:literal) => {
        #[cfg(feature = $feature)]
        #[tokio::test]
        async fn $name() {
            let (store, proxy, _database) = $store!(ClaimStrategy::ConditionalUpdate);
            let seven =
                || async { sqlx::query_scalar::<_, i64>($seven).fetch_one(store.pool()).await.unwrap() };
            assert_eq!(seven().await, 7);

            let cancelled = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                sqlx::query($sleep).execute(store.pool()),
            )
            .await;
            assert!(cancelled.is_err(), "the sleep was cut off");
            assert_eq!(seven().await, 7, "the connection answers its next statement, not the cancelled one");

            let refused = sqlx::query("SELECT * FROM no_such_table").execute(store.pool()).await;
            assert!(matches!(refused, Err(sqlx::Error::Database(_))), "{refused:?}");
            let before = proxy.turns();
            assert_eq!(seven().await, 7);
            assert_eq!(proxy.turns() - before, 1, "a refused statement leaves its connection ready");
        }
    };
}

a_cancelled_or_refused_statement_leaves_the_connection_clean!(
    postgres_connection_is_clean_after_a_cancelled_or_refused_statement,
    "postgres",
    postgres_store,
    "SELECT pg_sleep(1)",
    "SELECT CAST(7 AS BIGINT)"
);

a_cancelled_or_refused_statement_leaves_the_connection_clean!(
    mysql_connection_is_clean_after_a_cancelled_or_refused_statement,
    "mysql",
    mysql_store,
    "SELECT SLEEP(1)",
    "SELECT CAST(7 AS SIGNED)"
);

/// The horizon of a PostgreSQL seat-change read, made deterministic: a seat written by a
/// transaction that was open (uncommitted) while a read was taken must be in the next read asked
/// from that read's horizon. (A horizon taken from the snapshot's xmax, or the read's own time,
/// would put it behind the horizon and miss it for good.)
#[tokio::test]
async fn a_seat_written_by_a_transaction_open_during_a_read_is_in_the_next_read() {
    use ticketing_core::Clock;
    use ticketing_core::catalog::{Occupancy, SeatStates};
    use ticketing_core::store::CatalogStore;
    let (store, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let service = Ticketing::new(MemoryStore::new(), store.clone(), clock.clone(), Config::default());
    let plan: ConcertPlan = service.create_concert(&concert()).await.unwrap();
    let seat = &plan.seats[4];

    let mut writer = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut writer).await.unwrap();
    // The writer takes its transaction id before the read, and writes the seat.
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut writer).await.unwrap();
    sqlx::query("UPDATE seats SET state = 'BOOKED', reservation_id = gen_random_uuid(), fence = fence + 1 WHERE id = $1")
        .bind(seat.id.as_uuid())
        .execute(&mut writer)
        .await
        .unwrap();
    // A later transaction completes meanwhile, so the open one is neither the newest nor the
    // oldest the read's snapshot knows of.
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut other).await.unwrap();
    let whole =
        store.seat_changes(plan.concert.id, None).await.unwrap().expect("PostgreSQL keeps seat changes");
    let mut states = SeatStates::default();
    states.merge(None, &whole, clock.now());
    assert_eq!(states.available(plan.schedules[0].id, clock.now()), 10, "the write is not committed yet");
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();

    let next = store.seat_changes(plan.concert.id, states.horizon()).await.unwrap().unwrap();
    let change = next.seats.iter().find(|c| c.number == seat.number).expect("the seat is in the next read");
    assert_eq!(change.occupancy, Some(Occupancy::Booked));
    states.merge(states.horizon(), &next, clock.now());
    assert_eq!(states.available(plan.schedules[0].id, clock.now()), 9);
}
