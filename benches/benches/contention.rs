//! Lock contention: K concurrent tasks claiming from a pool of S seats, for every backend and
//! seat-claim strategy, and the one-seat stampede (10,000 claims on one seat).
//!
//! Each batch creates fresh seats (not timed), then times K concurrent claims; task `i` claims
//! seat `i mod S`, so S = 1 is one hot seat, S = 16 a few hot seats, S = 4,096 no contention.
//! Every batch checks that exactly min(K, S) claims won: a benchmark that double-books panics
//! as broken rather than reporting a time. Throughput is successful claims per second.
//!
//! `cargo bench -p benches --bench contention` (memory only), or with
//! `TICKETING_BENCH_POSTGRES_URL`, `TICKETING_BENCH_MYSQL_URL`, `TICKETING_BENCH_REDIS_URL` set.
//!
//! # Expected, written before measuring (2 cores, servers on loopback)
//!
//! - memory: a claim is a few lock operations, ~1–3 µs; K = 512 on 4,096 seats in ~1 ms,
//!   dominated by spawning tasks; one hot seat costs little more (losers read, see it taken).
//! - PostgreSQL conditional update: ~0.3–1 ms per claim round trip, 16 connections; K = 512
//!   without contention ~20–40 ms. On one hot seat losers wait only for the winner's commit,
//!   then read HELD and stop: similar to no contention.
//! - FOR UPDATE: like conditional (same row lock, one more statement), slightly slower.
//! - Advisory lock: one more round trip; similar.
//! - Redis lock in front: an extra Redis round trip per claim (~0.1 ms); on a hot seat, losers
//!   wait in Redis instead of on the row: slower than conditional on one seat (serialised lock
//!   hand-offs), similar elsewhere.
//! - MySQL: similar to PostgreSQL within 2×; GET_LOCK the slowest (extra connection-pinned
//!   statements).
//! - The 10,000-claim stampede: memory ~10–20 ms; SQL backends 1–3 s (10,000 reads + writes
//!   through 16 connections).

#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumentable items.

use std::time::{Duration, Instant};

use benches::{Booking, bookings, contend, fresh_seats};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ticketing_core::store::BookingStore;
use tokio::runtime::Runtime;

const TASKS: [usize; 4] = [1, 8, 64, 512];
const SEATS: [u32; 3] = [1, 16, 4_096];
const STAMPEDE: usize = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// Times `iters` batches of `tasks` claims on fresh seats.
fn batches<B: BookingStore + Clone>(
    rt: &Runtime,
    name: &str,
    store: &B,
    seats: u32,
    tasks: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let now = chrono::Utc::now();
        let pool = rt.block_on(fresh_seats(store, seats, now));
        let started = Instant::now();
        rt.block_on(contend(name, store, &pool, tasks, now));
        total += started.elapsed();
    }
    total
}

fn matrix(c: &mut Criterion) {
    let rt = runtime();
    for (name, booking) in rt.block_on(bookings()) {
        let mut group = c.benchmark_group(format!("contention/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for seats in SEATS {
            for tasks in TASKS {
                let winners = tasks.min(seats as usize) as u64;
                group.throughput(Throughput::Elements(winners));
                group.bench_with_input(
                    BenchmarkId::new(format!("S={seats}"), format!("K={tasks}")),
                    &tasks,
                    |b, &tasks| {
                        b.iter_custom(|iters| match &booking {
                            Booking::Memory(s) => batches(&rt, &name, s, seats, tasks, iters),
                            Booking::Postgres(s) => batches(&rt, &name, s, seats, tasks, iters),
                            Booking::Mysql(s) => batches(&rt, &name, s, seats, tasks, iters),
                        });
                    },
                );
            }
        }
        group.finish();
    }
}

fn stampede(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("stampede");
    group.sample_size(10).warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(5));
    for (name, booking) in rt.block_on(bookings()) {
        group.bench_function(BenchmarkId::new(&name, STAMPEDE), |b| {
            b.iter_custom(|iters| match &booking {
                Booking::Memory(s) => batches(&rt, &name, s, 1, STAMPEDE, iters),
                Booking::Postgres(s) => batches(&rt, &name, s, 1, STAMPEDE, iters),
                Booking::Mysql(s) => batches(&rt, &name, s, 1, STAMPEDE, iters),
            });
        });
    }
    group.finish();
}

criterion_group!(contention, matrix, stampede);
criterion_main!(contention);
