//! How the in-memory queue behaves with a very long line: issues N tokens into one concert, then
//! times polls at the back of the line and admission ticks at the head.
//!
//! `cargo run --release -p ticketing-core --example queue_scale -- 1000000`

use std::time::Instant;

use chrono::{Duration, Utc};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
use ticketing_core::ids::{Points, UserId};
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::{Config, ManualClock, Ticketing};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(1_000_000), |a| a.parse())?;
    let store = MemoryStore::new();
    let clock = ManualClock::new(Utc::now());
    let service = Ticketing::new(store.clone(), store, clock.clone(), Config::default());
    let queue = QueueSettings {
        max_active: 1_000_000,
        admit_batch: 1_000,
        waiting_idle_secs: 3_600,
        ..Default::default()
    };
    let concert = service
        .create_concert(&NewConcert {
            title: "Scale".into(),
            schedules: vec![NewSchedule {
                starts_at: Utc::now() + Duration::days(1),
                seat_count: 1,
                price: Points::new(1)?,
            }],
            queue,
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await?
        .concert
        .id;

    let started = Instant::now();
    let mut last = None;
    for i in 0..n {
        last = Some(service.issue_token(&UserId::parse(&format!("u{i}"))?, concert).await?.record.token);
    }
    let issue = started.elapsed();
    println!("issued {n} tokens: {:.2} µs per token", issue.as_secs_f64() * 1e6 / n as f64);

    let last = last.ok_or("no tokens")?;
    let polls = 10_000;
    let started = Instant::now();
    let mut position = 0;
    for _ in 0..polls {
        position = service.token_status(&last).await?.position.unwrap_or(0);
    }
    println!(
        "poll at position {position}: {:.2} µs per poll",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(polls)
    );

    let ticks = 100;
    let started = Instant::now();
    let mut admitted = 0;
    for _ in 0..ticks {
        clock.advance_secs(1);
        admitted += service.admission_tick(concert).await?.len();
    }
    println!(
        "{ticks} admission ticks admitting {admitted}: {:.2} µs per tick ({:.2} µs per admitted token)",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(ticks),
        started.elapsed().as_secs_f64() * 1e6 / admitted.max(1) as f64
    );
    Ok(())
}
