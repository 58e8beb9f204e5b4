//! Concurrency properties: random schedules of real tasks on a multi-threaded runtime. Buyers
//! race for few seats, send the same charge and the same payment twice at once, while several
//! "nodes" run admission ticks. Afterwards the invariants are checked on the final state and on
//! the history of answers (no two successful payments of one seat).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chrono::Duration;
use proptest::prelude::*;
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings, SeatState, SeatStatus};
use ticketing_core::ids::{IdempotencyKey, Points, QueueToken, SeatId, UserId};
use ticketing_core::payment::LedgerKind;
use ticketing_core::queue::TokenStatus;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Clock, Config, DomainError, Error, ManualClock, Ticketing};
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
    })
}

#[derive(Debug, Clone)]
struct Scenario {
    users: usize,
    seats: u32,
    nodes: usize,
    double_charge: bool,
    double_pay: bool,
}

fn scenarios() -> impl Strategy<Value = Scenario> {
    (2_usize..12, 1_u32..4, 1_usize..4, any::<bool>(), any::<bool>()).prop_map(
        |(users, seats, nodes, double_charge, double_pay)| Scenario {
            users,
            seats,
            nodes,
            double_charge,
            double_pay,
        },
    )
}

const PRICE: i64 = 100;

/// What one buyer saw.
#[derive(Debug, Default)]
struct History {
    paid: Vec<SeatId>,
    charges_ok: usize,
}

type Service<Q, B> = Arc<Ticketing<Q, B, ManualClock>>;

/// Retries a step that answered "too much contention": an honest try-again, never a lost write.
async fn patiently<T, F, Fut>(mut step: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    loop {
        match step().await {
            Err(Error::Contention) => tokio::task::yield_now().await,
            other => return other,
        }
    }
}

async fn buyer<Q: QueueStore, B: BookingStore>(
    svc: Service<Q, B>,
    user: UserId,
    concert: ticketing_core::ids::ConcertId,
    schedule: ticketing_core::ids::ScheduleId,
    scenario: Scenario,
) -> Result<History, String> {
    let mut history = History::default();
    let token = patiently(|| svc.issue_token(&user, concert))
        .await
        .map_err(|e| format!("issue: {e:?}"))?
        .record
        .token;
    let mut admitted = false;
    for _ in 0..300 {
        if patiently(|| svc.token_status(&token)).await.map_err(|e| format!("poll: {e:?}"))?.status
            == TokenStatus::Active
        {
            admitted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    if !admitted {
        return Ok(history);
    }
    let key = IdempotencyKey::parse("charge-1").unwrap();
    let copies = if scenario.double_charge { 2 } else { 1 };
    let charges: Vec<_> = (0..copies)
        .map(|_| {
            let (svc, token, key) = (Arc::clone(&svc), token.clone(), key.clone());
            tokio::spawn(async move { patiently(|| svc.charge(&token, PRICE, Some(key.clone()))).await })
        })
        .collect();
    for charge in charges {
        charge.await.map_err(|e| e.to_string())?.map_err(|e| format!("charge: {e:?}"))?;
        history.charges_ok += 1;
    }
    let seats = patiently(|| svc.seats(&token, schedule)).await.map_err(|e| format!("seats: {e:?}"))?;
    for (seat, _) in seats.iter().filter(|(_, status)| *status == SeatStatus::Available) {
        let hold = match patiently(|| svc.hold(&token, seat.id, None)).await {
            Ok(hold) => hold,
            Err(Error::Domain(DomainError::SeatUnavailable)) => continue,
            Err(other) => return Err(format!("hold: {other:?}")),
        };
        let copies = if scenario.double_pay { 2 } else { 1 };
        let pays: Vec<_> = (0..copies)
            .map(|i| {
                let (svc, token) = (Arc::clone(&svc), token.clone());
                // The second copy has its own key: it is a second payment attempt, not a replay.
                let key = IdempotencyKey::parse(&format!("pay-{i}")).unwrap();
                tokio::spawn(async move { patiently(|| svc.pay(&token, hold.id, Some(key.clone()))).await })
            })
            .collect();
        for pay in pays {
            match pay.await.map_err(|e| e.to_string())? {
                Ok(receipt) => history.paid.push(receipt.payments[0].seat_id),
                // The loser of two racing payments may read the hold before the winner commits and
                // the wallet after: "insufficient balance" is then the true answer. Double
                // spending is what the ledger and history checks below look for.
                Err(Error::Domain(
                    DomainError::AlreadyPaid
                    | DomainError::TokenExpired
                    | DomainError::InsufficientBalance { .. },
                )) => {}
                Err(other) => return Err(format!("pay: {other:?}")),
            }
        }
        break;
    }
    Ok(history)
}

async fn race<Q: QueueStore, B: BookingStore>(
    queue: Q,
    booking: B,
    scenario: Scenario,
) -> Result<(), String> {
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let svc = Arc::new(Ticketing::new(queue, booking, clock.clone(), Config::default()));
    let max_active = u32::try_from(scenario.users / 2).unwrap_or(1).max(1);
    let settings = QueueSettings {
        max_active,
        admit_batch: u32::try_from(scenario.users).unwrap_or(1),
        admit_interval_ms: 1_000,
        waiting_idle_secs: 3_600,
        active_ttl_secs: 3_600,
    };
    let plan = svc
        .create_concert(&NewConcert {
            title: "race".into(),
            schedules: vec![NewSchedule {
                starts_at: clock.now() + Duration::days(1),
                seat_count: scenario.seats,
                price: Points::new(PRICE).unwrap(),
            }],
            queue: settings,
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let (concert, schedule) = (plan.concert.id, plan.schedules[0].id);
    let case = QueueToken::generate(ticketing_core::ids::ConcertId::random()).to_string();
    let users: Vec<UserId> =
        (0..scenario.users).map(|u| UserId::parse(&format!("r{u}-{}", &case[..10])).unwrap()).collect();

    let nodes: Vec<_> = (0..scenario.nodes)
        .map(|_| {
            let svc = Arc::clone(&svc);
            tokio::spawn(async move {
                let mut admitted = Vec::new();
                for _ in 0..200 {
                    admitted.extend(svc.admission_tick(concert).await.map_err(|e| format!("tick: {e:?}"))?);
                    tokio::task::yield_now().await;
                }
                Ok::<_, String>(admitted)
            })
        })
        .collect();
    let buyers: Vec<_> = users
        .iter()
        .map(|user| tokio::spawn(buyer(Arc::clone(&svc), user.clone(), concert, schedule, scenario.clone())))
        .collect();

    let mut histories = Vec::new();
    for buyer in buyers {
        histories.push(buyer.await.map_err(|e| e.to_string())??);
    }
    let mut admitted = HashSet::new();
    for node in nodes {
        for record in node.await.map_err(|e| e.to_string())?? {
            if !admitted.insert(record.token) {
                return Err("a token was admitted twice".into());
            }
        }
    }

    // The history: no seat was answered "paid" twice.
    let mut paid_answers: HashMap<SeatId, usize> = HashMap::new();
    for seat in histories.iter().flat_map(|h| &h.paid) {
        *paid_answers.entry(*seat).or_default() += 1;
    }
    if let Some((seat, n)) = paid_answers.iter().find(|(_, n)| **n > 1) {
        return Err(format!("seat {seat} was answered paid {n} times"));
    }
    // The final state.
    let store = svc.booking_store();
    let booked: Vec<_> = store
        .seats(schedule)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| matches!(s.state, SeatState::Booked { .. }))
        .collect();
    if booked.len() != paid_answers.len() {
        return Err(format!("{} seats booked, {} answered paid", booked.len(), paid_answers.len()));
    }
    let (mut spent, mut balances) = (0, 0);
    for (user, history) in users.iter().zip(&histories) {
        let ledger = store.ledger(user).await.map_err(|e| e.to_string())?;
        let charges = ledger.iter().filter(|e| e.kind == LedgerKind::Charge).count();
        if charges != usize::from(history.charges_ok > 0) {
            return Err(format!("{user}: {charges} charges for one key"));
        }
        let payments = ledger.iter().filter(|e| e.kind == LedgerKind::Payment).count();
        if payments != history.paid.len() || payments > 1 {
            return Err(format!(
                "{user}: {payments} payments in the ledger, {} answered",
                history.paid.len()
            ));
        }
        let wallet = store.wallet(user).await.map_err(|e| e.to_string())?;
        let sum: i64 = ledger.iter().map(|e| e.signed_amount()).sum();
        if sum != wallet.balance.get() {
            return Err(format!("{user}: ledger {sum} != balance {}", wallet.balance));
        }
        spent += ledger.iter().filter(|e| e.kind == LedgerKind::Payment).map(|e| e.amount.get()).sum::<i64>();
        balances += wallet.balance.get();
    }
    let charged = i64::try_from(histories.iter().filter(|h| h.charges_ok > 0).count()).unwrap_or(0) * PRICE;
    if charged - spent != balances || spent != i64::try_from(booked.len()).unwrap_or(0) * PRICE {
        return Err(format!(
            "money: charged {charged}, spent {spent}, balances {balances}, {} booked",
            booked.len()
        ));
    }
    let snapshot =
        svc.queue_store().admission_snapshot(concert, clock.now()).await.map_err(|e| e.to_string())?;
    if snapshot.active > max_active {
        return Err(format!("{} active over {max_active}", snapshot.active));
    }
    Ok(())
}

type Pg = (ticketing_core::store::postgres::PgStore, ticketing_core::testing::FreshDatabase);
type My = (ticketing_core::store::mysql::MyStore, ticketing_core::testing::FreshMysql);

fn postgres() -> &'static Pg {
    static STORES: OnceLock<Pg> = OnceLock::new();
    STORES.get_or_init(|| runtime().block_on(ticketing_core::testing::fresh_pg_store(Default::default())))
}

fn mysql() -> &'static My {
    static STORES: OnceLock<My> = OnceLock::new();
    STORES.get_or_init(|| runtime().block_on(ticketing_core::testing::fresh_my_store(Default::default())))
}

proptest! {
    #![proptest_config(proptests::config(32, "proptest-regressions/concurrency.txt"))]

    #[test]
    fn racing_buyers_on_memory_keep_every_invariant(scenario in scenarios()) {
        let store = MemoryStore::new();
        let outcome = runtime().block_on(race(store.clone(), store, scenario));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}

proptest! {
    #![proptest_config(proptests::config(4, "proptest-regressions/concurrency.txt"))]

    #[test]
    fn racing_buyers_on_postgres_keep_every_invariant(scenario in scenarios()) {
        let (store, _) = postgres();
        let outcome = runtime().block_on(race(store.clone(), store.clone(), scenario));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }

    #[test]
    fn racing_buyers_on_mysql_keep_every_invariant(scenario in scenarios()) {
        let (store, _) = mysql();
        let outcome = runtime().block_on(race(store.clone(), store.clone(), scenario));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }

    #[test]
    fn racing_buyers_on_redis_and_postgres_keep_every_invariant(scenario in scenarios()) {
        let (booking, _) = postgres();
        let queue = runtime().block_on(async {
            ticketing_core::store::redis::RedisQueueStore::new(
                ticketing_core::testing::redis_connection().await,
                ticketing_core::testing::fresh_redis_prefix(),
            )
        });
        let outcome = runtime().block_on(race(queue, booking.clone(), scenario));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}
