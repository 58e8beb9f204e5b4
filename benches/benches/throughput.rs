//! Throughput: a full purchase (hold + pay) per booking backend; token issue and an admission
//! tick per queue backend; the in-memory store's uncontended hold + release.
//!
//! `cargo bench -p benches --bench throughput` (memory only), or with the
//! `TICKETING_BENCH_*` variables set (see the crate docs).
//!
//! # Expected, written before measuring (2 cores, servers on loopback)
//!
//! - purchase: memory ~10–20 µs (the service's reads plus two atomic steps); PostgreSQL and
//!   MySQL ~2–5 ms (about ten round trips: token, reservation, seat, wallet, key, commit…).
//! - token issue: memory ~5–10 µs; Redis ~0.3–0.6 ms (index write plus one script); SQL
//!   ~1–2 ms.
//! - admission tick admitting 100 of 1,000 waiting: memory ~0.1 ms; Redis ~1–3 ms (one script
//!   plus reading back 100 records); SQL ~5–15 ms.
//! - memory hold + release, uncontended: ~5–10 µs.

#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumentable items.

use std::time::{Duration, Instant};

use benches::{Booking, bookings, redis_queue};
use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
use ticketing_core::ids::{ConcertId, Points, UserId};
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Clock, Config, ManualClock, Ticketing};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn user(n: u64) -> UserId {
    UserId::parse(&format!("t{n}-{}", &benches::random_hex()[..8])).expect("valid")
}

async fn concert<Q: QueueStore, B: BookingStore>(
    svc: &Ticketing<Q, B, ManualClock>,
    seats: u32,
    batch: u32,
) -> (ConcertId, Vec<ticketing_core::ids::SeatId>) {
    let plan = svc
        .create_concert(&NewConcert {
            title: "throughput".into(),
            schedules: vec![NewSchedule {
                starts_at: svc.clock().now() + chrono::Duration::days(1),
                seat_count: seats.max(1),
                price: Points::new(100).expect("positive"),
            }],
            queue: QueueSettings {
                max_active: 1_000_000,
                admit_batch: batch,
                waiting_idle_secs: 3_600,
                ..QueueSettings::default()
            },
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .expect("concert");
    (plan.concert.id, plan.seats.iter().map(|s| s.id).collect())
}

/// `iters` purchases, each by its own admitted, charged buyer; only hold + pay are timed.
async fn purchases<B: BookingStore + Clone>(booking: &B, iters: u64) -> Duration {
    let svc =
        Ticketing::new(MemoryStore::new(), booking.clone(), ManualClock::new(Utc::now()), Config::default());
    let (concert, seats) = concert(&svc, u32::try_from(iters).unwrap_or(u32::MAX), 100_000).await;
    let mut tokens = Vec::new();
    for n in 0..iters {
        let token = svc.issue_token(&user(n), concert).await.expect("token").record.token;
        tokens.push(token);
    }
    svc.admission_tick(concert).await.expect("tick");
    for token in &tokens {
        svc.charge(token, 100, None).await.expect("charge");
    }
    let started = Instant::now();
    for (token, seat) in tokens.iter().zip(&seats) {
        let hold = svc.hold(token, *seat, None).await.expect("hold");
        svc.pay(token, hold.id, None).await.expect("pay");
    }
    started.elapsed()
}

fn purchase(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("purchase");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    for (name, booking) in rt.block_on(bookings()) {
        // One strategy per database is enough here: purchases do not contend.
        if name.ends_with("for-update") || name.ends_with("advisory") || name.ends_with("redis-lock") {
            continue;
        }
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter_custom(|iters| match &booking {
                Booking::Memory(s) => rt.block_on(purchases(s, iters)),
                Booking::Postgres(s) => rt.block_on(purchases(s, iters)),
                Booking::Mysql(s) => rt.block_on(purchases(s, iters)),
            });
        });
    }
    group.finish();
}

/// `iters` token requests from new users.
async fn issues<Q: QueueStore + Clone>(queue: &Q, iters: u64) -> Duration {
    let svc =
        Ticketing::new(queue.clone(), MemoryStore::new(), ManualClock::new(Utc::now()), Config::default());
    let (concert, _) = concert(&svc, 1, 100).await;
    let users: Vec<UserId> = (0..iters).map(user).collect();
    let started = Instant::now();
    for user in &users {
        svc.issue_token(user, concert).await.expect("token");
    }
    started.elapsed()
}

/// `iters` admission ticks, each admitting 100 from a line of at least 1,000.
async fn ticks<Q: QueueStore + Clone>(queue: &Q, iters: u64) -> Duration {
    let clock = ManualClock::new(Utc::now());
    let svc = Ticketing::new(queue.clone(), MemoryStore::new(), clock.clone(), Config::default());
    let (concert, _) = concert(&svc, 1, 100).await;
    for n in 0..(1_000 + iters * 100) {
        svc.issue_token(&user(n), concert).await.expect("token");
    }
    let started = Instant::now();
    for _ in 0..iters {
        clock.advance_secs(1);
        svc.admission_tick(concert).await.expect("tick");
    }
    started.elapsed()
}

/// Runs `iters` token issues (or, with `true`, admission ticks) on one queue backend.
type QueueRun = Box<dyn Fn(u64, bool) -> Duration>;

fn queue(c: &mut Criterion) {
    let rt = runtime();
    let mut queues: Vec<(String, QueueRun)> = Vec::new();
    let memory = MemoryStore::new();
    let handle = rt.handle().clone();
    queues.push((
        "memory".into(),
        Box::new(move |iters, tick| {
            handle.block_on(async {
                if tick { ticks(&memory, iters).await } else { issues(&memory, iters).await }
            })
        }),
    ));
    if let Some(redis) = rt.block_on(redis_queue()) {
        let handle = rt.handle().clone();
        queues.push((
            "redis".into(),
            Box::new(move |iters, tick| {
                handle.block_on(async {
                    if tick { ticks(&redis, iters).await } else { issues(&redis, iters).await }
                })
            }),
        ));
    }
    for (name, booking) in rt.block_on(bookings()) {
        let handle = rt.handle().clone();
        match booking {
            Booking::Postgres(store) if name.ends_with("conditional") => queues.push((
                "postgres".into(),
                Box::new(move |iters, tick| {
                    handle.block_on(async {
                        if tick { ticks(&store, iters).await } else { issues(&store, iters).await }
                    })
                }),
            )),
            Booking::Mysql(store) if name.ends_with("conditional") => queues.push((
                "mysql".into(),
                Box::new(move |iters, tick| {
                    handle.block_on(async {
                        if tick { ticks(&store, iters).await } else { issues(&store, iters).await }
                    })
                }),
            )),
            _ => {}
        }
    }
    let mut group = c.benchmark_group("queue");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    for (name, run) in &queues {
        group.bench_function(BenchmarkId::new("token-issue", name), |b| {
            b.iter_custom(|iters| run(iters, false))
        });
        group.bench_function(BenchmarkId::new("admission-tick-100", name), |b| {
            b.iter_custom(|iters| run(iters, true))
        });
    }
    group.finish();
}

fn memory_hold_release(c: &mut Criterion) {
    let rt = runtime();
    let store = MemoryStore::new();
    let svc = Ticketing::new(store.clone(), store, ManualClock::new(Utc::now()), Config::default());
    let (token, seat) = rt.block_on(async {
        let (concert, seats) = concert(&svc, 1, 10).await;
        let token = svc.issue_token(&user(0), concert).await.expect("token").record.token;
        svc.admission_tick(concert).await.expect("tick");
        (token, seats[0])
    });
    c.bench_function("memory/hold+release", |b| {
        b.iter(|| {
            rt.block_on(async {
                let hold = svc.hold(&token, seat, None).await.expect("hold");
                svc.release(&token, hold.id).await.expect("release");
            });
        });
    });
}

criterion_group!(throughput, purchase, queue, memory_hold_release);
criterion_main!(throughput);
