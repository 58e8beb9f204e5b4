//! Network round trips per service call on the SQL backends, counted on the wire.
//!
//! The store talks to the database through a TCP proxy that counts the client's turns: each
//! time the client sends after the database has answered is one round trip. The queue is the
//! in-memory store, so every turn counted is the booking store's. These are the figures of the
//! README's round-trip table ("What a call costs in round trips"); a statement that costs a
//! second round trip (a ping when the connection goes back to the pool, a `BEGIN` of its own)
//! fails here.

#![cfg(any(feature = "postgres", feature = "mysql"))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::DateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use ticketing_core::catalog::{ConcertPlan, NewConcert, NewSchedule, QueueSettings};
use ticketing_core::ids::{Points, QueueToken, UserId};
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{BookingStore, ClaimStrategy};
use ticketing_core::{Config, ManualClock, Ticketing};

/// A proxy to `upstream` that counts the turns of its clients.
async fn turn_counting_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let turns = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&turns);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let client_talking = Arc::new(AtomicBool::new(false));
            let (talking, turns) = (Arc::clone(&client_talking), Arc::clone(&counted));
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    if !talking.swap(true, Ordering::SeqCst) {
                        turns.fetch_add(1, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                    client_talking.store(false, Ordering::SeqCst);
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (address, turns)
}

/// The round trips `call` costs, counted once whatever it set off in the background (a
/// connection given back to a pool) has had time to happen.
async fn round_trips<T>(turns: &AtomicU64, call: impl Future<Output = T>) -> (T, u64) {
    let before = turns.load(Ordering::SeqCst);
    let out = call.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (out, turns.load(Ordering::SeqCst) - before)
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
    }
}

/// Runs a purchase for each of two buyers on `store` (one connection, reached through the
/// proxy whose turns are `turns`) and checks the second buyer's calls, once every statement has
/// been prepared on the connection by the first.
async fn each_call_costs_its_round_trips<B: BookingStore>(store: B, turns: &AtomicU64, hold_trips: u64) {
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
    service.charge(first, 100, None).await.unwrap();
    service.balance(first).await.unwrap();
    // A process's first list of a schedule reads its seats whole; later ones the occupied seats.
    service.seats(first, schedule).await.unwrap();
    service.seats(first, schedule).await.unwrap();
    let held = service.hold(first, plan.seats[0].id, None).await.unwrap();
    service.pay(first, held.id, None).await.unwrap();

    let second = &tokens[1];
    let (_, trips) = round_trips(turns, service.charge(second, 100, None)).await;
    assert_eq!(trips, 2, "a charge: one read of its inputs, one call of its step");
    let (_, trips) = round_trips(turns, service.balance(second)).await;
    assert_eq!(trips, 1, "a balance: one read");
    let (list, trips) = round_trips(turns, service.seats(second, schedule)).await;
    assert_eq!(trips, 1, "a seat list: one read of the occupied seats");
    assert_eq!(list.unwrap().seats.len(), 10);
    let (held, trips) = round_trips(turns, service.hold(second, plan.seats[1].id, None)).await;
    assert_eq!(trips, hold_trips, "a hold");
    let (_, trips) = round_trips(turns, service.pay(second, held.unwrap().id, None)).await;
    assert_eq!(trips, 2, "a payment: one read of its inputs, one call of its step");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_calls_cost_their_round_trips_and_no_ping() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    for (strategy, hold_trips) in [(ClaimStrategy::ConditionalUpdate, 2), (ClaimStrategy::AdvisoryLock, 2)] {
        let database = ticketing_core::testing::fresh_postgres().await;
        let options = PgConnectOptions::from_str(&database.url).unwrap();
        let upstream =
            tokio::net::lookup_host((options.get_host(), options.get_port())).await.unwrap().next().unwrap();
        let (proxy, turns) = turn_counting_proxy(upstream).await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.host("127.0.0.1").port(proxy.port()))
            .await
            .unwrap();
        let store = ticketing_core::store::postgres::PgStore::from_pool(pool, strategy);
        each_call_costs_its_round_trips(store, &turns, hold_trips).await;
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_calls_cost_their_round_trips_and_no_ping() {
    use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    // The advisory strategy takes and releases a named lock around the claim: two more.
    for (strategy, hold_trips) in [(ClaimStrategy::ConditionalUpdate, 2), (ClaimStrategy::AdvisoryLock, 4)] {
        let database = ticketing_core::testing::fresh_mysql().await;
        let options = MySqlConnectOptions::from_str(&database.url).unwrap();
        let upstream =
            tokio::net::lookup_host((options.get_host(), options.get_port())).await.unwrap().next().unwrap();
        let (proxy, turns) = turn_counting_proxy(upstream).await;
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options.host("127.0.0.1").port(proxy.port()))
            .await
            .unwrap();
        let store = ticketing_core::store::mysql::MyStore::from_pool(pool, strategy);
        each_call_costs_its_round_trips(store, &turns, hold_trips).await;
    }
}
