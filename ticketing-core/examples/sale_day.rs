//! A small sale day on the in-memory store: 500 buyers race for 50 seats through the waiting
//! room, then the sale is audited (no seat sold twice, every point accounted for).
//!
//! `cargo run --release -p ticketing-core --example sale_day`

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings, SeatStatus};
use ticketing_core::ids::{Points, UserId};
use ticketing_core::queue::TokenStatus;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{CatalogStore, WalletStore};
use ticketing_core::{Config, DomainError, Error, SystemClock, Ticketing};

const BUYERS: usize = 500;
const PRICE: i64 = 50_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let service = Arc::new(Ticketing::new(store.clone(), store, SystemClock, Config::default()));
    let concert = service
        .create_concert(&NewConcert {
            title: "Sale day".into(),
            schedules: vec![NewSchedule {
                starts_at: Utc::now() + Duration::days(30),
                seat_count: 50,
                price: Points::new(PRICE)?,
            }],
            // A short active time: a buyer who finds nothing left keeps its place of
            // `max_active` until its token times out.
            queue: QueueSettings {
                max_active: 100,
                admit_batch: 50,
                admit_interval_ms: 20,
                active_ttl_secs: 1,
                ..Default::default()
            },
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await?;
    let concert_id = concert.concert.id;
    let schedule_id = concert.schedules[0].id;

    // The admission ticker every node runs.
    let ticker = {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            loop {
                service.admission_tick(concert_id).await.ok();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };

    let buyers: Vec<_> = (0..BUYERS)
        .map(|i| {
            let service = Arc::clone(&service);
            tokio::spawn(async move { buy(&service, &format!("buyer-{i}"), concert_id, schedule_id).await })
        })
        .collect();
    let mut bought = 0;
    for buyer in buyers {
        bought += usize::from(buyer.await??);
    }
    ticker.abort();

    // The audit.
    let booking = service.booking_store();
    let seats = booking.seats(schedule_id).await?;
    let booked = seats.iter().filter(|s| s.status_at(Utc::now()) == SeatStatus::Booked).count();
    let mut paid_reservations = HashSet::new();
    let mut points_left = 0;
    for i in 0..BUYERS {
        let user = UserId::parse(&format!("buyer-{i}"))?;
        let ledger = booking.ledger(&user).await?;
        let balance = booking.wallet(&user).await?.balance.get();
        assert_eq!(ledger.iter().map(|e| e.signed_amount()).sum::<i64>(), balance);
        points_left += balance;
        paid_reservations.extend(ledger.iter().filter_map(|e| e.payment_id));
    }
    let charged = i64::try_from(bought)? * PRICE + points_left;
    println!("buyers: {BUYERS}, purchases: {bought}, seats booked: {booked}/{}", seats.len());
    println!("points charged: {charged}, spent: {}, left: {points_left}", i64::try_from(bought)? * PRICE);
    let ok = bought == booked && paid_reservations.len() == bought;
    println!("audit: {}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// One buyer: queue, wait for admission, hold any available seat, charge, pay. Returns whether
/// it bought a seat.
async fn buy(
    service: &Ticketing<MemoryStore, MemoryStore, SystemClock>,
    name: &str,
    concert: ticketing_core::ids::ConcertId,
    schedule: ticketing_core::ids::ScheduleId,
) -> Result<bool, Error> {
    let user = UserId::parse(name).map_err(DomainError::from)?;
    let token = service.issue_token(&user, concert).await?.record.token;
    loop {
        match service.token_status(&token).await?.status {
            TokenStatus::Active => break,
            TokenStatus::Waiting => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            TokenStatus::Expired => return Ok(false),
        }
    }
    let seats = service.seats(&token, schedule).await?;
    for (seat, status) in seats.iter() {
        if status != SeatStatus::Available {
            continue;
        }
        match service.hold(&token, seat.id, None).await {
            Ok(hold) => {
                service.charge(&token, PRICE, None).await?;
                service.pay(&token, hold.id, None).await?;
                return Ok(true);
            }
            Err(Error::Domain(DomainError::SeatUnavailable)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(false)
}
