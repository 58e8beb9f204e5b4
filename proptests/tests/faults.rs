//! Faults: writes fail before their effect, or after it with the answer lost. A client that
//! retries with the same idempotency key converges to exactly one effect; a client that crashes
//! between hold and payment leaves nothing half-done.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::OnceLock;

use chrono::Duration;
use proptest::prelude::*;
use proptests::faults::{Fault, Faulty};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings, SeatStatus};
use ticketing_core::hold::ReservationStatus;
use ticketing_core::ids::{IdempotencyKey, Points, QueueToken, UserId};
use ticketing_core::payment::LedgerKind;
use ticketing_core::queue::TokenStatus;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{BookingStore, CatalogStore, WalletStore};
use ticketing_core::{Clock, Config, Error, ManualClock, StoreError, Ticketing};
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    })
}

const PRICE: i64 = 700;
/// A client retries at most this often before giving up (the plan has fewer faults).
const ATTEMPTS: usize = 32;

fn faults() -> impl Strategy<Value = Vec<Fault>> {
    proptest::collection::vec(
        prop_oneof![2 => Just(Fault::None), 1 => Just(Fault::Before), 1 => Just(Fault::AfterLost)],
        0..12,
    )
}

/// Where a crashing client stops for good.
#[derive(Debug, Clone, Copy)]
enum Crash {
    Never,
    AfterHold,
    AfterPay,
}

fn crashes() -> impl Strategy<Value = Crash> {
    prop_oneof![2 => Just(Crash::Never), 1 => Just(Crash::AfterHold), 1 => Just(Crash::AfterPay)]
}

/// Retries `step` with the same request (and key) while the store fails.
async fn retry<T, F, Fut>(mut step: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    for _ in 0..ATTEMPTS {
        match step().await {
            Ok(value) => return Ok(value),
            Err(Error::Store(StoreError::Backend { .. }) | Error::Contention) => {}
            Err(other) => return Err(format!("{other:?}")),
        }
    }
    Err("never succeeded".into())
}

async fn purchase<B: BookingStore + Clone>(booking: B, plan: Vec<Fault>, crash: Crash) -> Result<(), String> {
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let queue = MemoryStore::new();
    let svc = Ticketing::new(queue.clone(), booking.clone(), clock.clone(), Config::default());
    let concert = svc
        .create_concert(&NewConcert {
            title: "faults".into(),
            schedules: vec![NewSchedule {
                starts_at: clock.now() + Duration::days(2),
                seat_count: 1,
                price: Points::new(PRICE).unwrap(),
            }],
            queue: QueueSettings::default(),
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let seat = concert.seats[0].id;
    let user = UserId::parse(&format!(
        "f-{}",
        &QueueToken::generate(ticketing_core::ids::ConcertId::random()).to_string()[..12]
    ))
    .unwrap();
    let token = svc.issue_token(&user, concert.concert.id).await.map_err(|e| e.to_string())?.record.token;
    svc.admission_tick(concert.concert.id).await.map_err(|e| e.to_string())?;
    // From here on, every write of the booking store follows the plan.
    let svc = Ticketing::new(queue, Faulty::new(booking, plan), clock.clone(), Config::default());
    let key = |k: &str| Some(IdempotencyKey::parse(k).unwrap());

    retry(|| svc.charge(&token, PRICE, key("charge"))).await.map_err(|e| format!("charge: {e}"))?;
    let first_hold = svc.hold(&token, seat, key("hold")).await;
    if matches!(crash, Crash::AfterHold) && first_hold.is_err() {
        // The client is gone. Whatever the hold did, nothing is half-done: once its deadline
        // passes, the seat is free and no point moved.
        clock.advance_secs(3_600);
        svc.sweep().await.map_err(|e| e.to_string())?;
        let record = svc.booking_store().seat(seat).await.map_err(|e| e.to_string())?.ok_or("seat")?;
        if record.status_at(clock.now()) != SeatStatus::Available {
            return Err("a crashed hold kept its seat past its deadline".into());
        }
        return expect_ledger(svc.booking_store(), &user, 1, 0, PRICE).await;
    }
    let reservation = match first_hold {
        Ok(reservation) => reservation,
        Err(_) => retry(|| svc.hold(&token, seat, key("hold"))).await.map_err(|e| format!("hold: {e}"))?,
    };
    let first_pay = svc.pay(&token, reservation.id, key("pay")).await;
    if matches!(crash, Crash::AfterPay) && first_pay.is_err() {
        // Gone after asking to pay: either all of the payment happened or none of it did.
        let paid = svc.booking_store().payment_of(reservation.id).await.map_err(|e| e.to_string())?.is_some();
        let stored = svc
            .booking_store()
            .reservation(reservation.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("reservation")?;
        let seat_record = svc.booking_store().seat(seat).await.map_err(|e| e.to_string())?.ok_or("seat")?;
        let confirmed = stored.status == ReservationStatus::Confirmed;
        let booked = seat_record.status_at(clock.now()) == SeatStatus::Booked;
        if paid != confirmed || paid != booked {
            return Err(format!("half-done: payment {paid}, confirmed {confirmed}, booked {booked}"));
        }
        return expect_ledger(svc.booking_store(), &user, 1, usize::from(paid), if paid { 0 } else { PRICE })
            .await;
    }
    let receipt = match first_pay {
        Ok(receipt) => receipt,
        Err(_) => {
            retry(|| svc.pay(&token, reservation.id, key("pay"))).await.map_err(|e| format!("pay: {e}"))?
        }
    };
    if receipt.balance.get() != 0 {
        return Err(format!("balance after paying {}", receipt.balance));
    }
    let replay =
        retry(|| svc.pay(&token, reservation.id, key("pay"))).await.map_err(|e| format!("replay: {e}"))?;
    if replay != receipt {
        return Err("a replay answered differently".into());
    }
    let status = svc.authenticate(&token).await.map_err(|e| e.to_string())?.status_at(clock.now());
    if status != TokenStatus::Expired {
        return Err("the paid token is not expired".into());
    }
    expect_ledger(svc.booking_store(), &user, 1, 1, 0).await
}

async fn expect_ledger<B: WalletStore + CatalogStore>(
    store: &B,
    user: &UserId,
    charges: usize,
    payments: usize,
    balance: i64,
) -> Result<(), String> {
    let ledger = store.ledger(user).await.map_err(|e| e.to_string())?;
    let count = |kind| ledger.iter().filter(|e| e.kind == kind).count();
    let wallet = store.wallet(user).await.map_err(|e| e.to_string())?;
    if count(LedgerKind::Charge) != charges
        || count(LedgerKind::Payment) != payments
        || wallet.balance.get() != balance
    {
        return Err(format!(
            "ledger has {} charges and {} payments, balance {}; expected {charges}, {payments}, {balance}",
            count(LedgerKind::Charge),
            count(LedgerKind::Payment),
            wallet.balance
        ));
    }
    Ok(())
}

type Pg = (ticketing_core::store::postgres::PgStore, ticketing_core::testing::FreshDatabase);

fn postgres() -> &'static Pg {
    static STORES: OnceLock<Pg> = OnceLock::new();
    STORES.get_or_init(|| runtime().block_on(ticketing_core::testing::fresh_pg_store(Default::default())))
}

proptest! {
    #![proptest_config(proptests::config(128, "proptest-regressions/faults.txt"))]

    #[test]
    fn retries_with_keys_converge_to_one_effect_on_memory(plan in faults(), crash in crashes()) {
        let outcome = runtime().block_on(purchase(MemoryStore::new(), plan, crash));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}

proptest! {
    #![proptest_config(proptests::config(16, "proptest-regressions/faults.txt"))]

    #[test]
    fn retries_with_keys_converge_to_one_effect_on_postgres(plan in faults(), crash in crashes()) {
        let outcome = runtime().block_on(purchase(postgres().0.clone(), plan, crash));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}
