//! Model-based state-machine tests: generated sequences of commands from several users, every
//! answer compared with the reference model, the invariants checked after every step, on every
//! backend. Memory runs many cases; the server backends fewer (each case uses fresh concerts
//! and users in one shared database). `PROPTEST_CASES` raises every count.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::OnceLock;

use proptest::prelude::*;
use proptests::{commands, run};
use ticketing_core::store::memory::MemoryStore;
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    })
}

/// Builds a backend once per test binary, on the shared runtime, and keeps its guard alive.
macro_rules! shared {
    ($name:ident: $ty:ty = $init:expr) => {
        fn $name() -> &'static $ty {
            static STORES: OnceLock<$ty> = OnceLock::new();
            STORES.get_or_init(|| runtime().block_on($init))
        }
    };
}

type Pg = (ticketing_core::store::postgres::PgStore, ticketing_core::testing::FreshDatabase);
type My = (ticketing_core::store::mysql::MyStore, ticketing_core::testing::FreshMysql);
type RedisQueue = ticketing_core::store::redis::RedisQueueStore;

shared!(postgres: Pg = ticketing_core::testing::fresh_pg_store(Default::default()));
// Its own database: a sweep frees every lapsed hold of its database at the world's `now`, so two
// tests running at once on one database would free each other's holds (each world's clock starts
// at the same instant and moves on its own).
shared!(postgres_for_redis: Pg = ticketing_core::testing::fresh_pg_store(Default::default()));
shared!(mysql: My = ticketing_core::testing::fresh_my_store(Default::default()));
shared!(redis_queue: RedisQueue = async {
    ticketing_core::store::redis::RedisQueueStore::new(
        ticketing_core::testing::redis_connection().await,
        ticketing_core::testing::fresh_redis_prefix(),
    )
});

proptest! {
    #![proptest_config(proptests::config(256, "proptest-regressions/model.txt"))]

    #[test]
    fn memory_agrees_with_the_model(commands in commands(40)) {
        let store = MemoryStore::new();
        let outcome = runtime().block_on(run(store.clone(), store, &commands));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}

proptest! {
    #![proptest_config(proptests::config(12, "proptest-regressions/model.txt"))]

    #[test]
    fn postgres_agrees_with_the_model(commands in commands(30)) {
        let (store, _) = postgres();
        let outcome = runtime().block_on(run(store.clone(), store.clone(), &commands));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }

    #[test]
    fn mysql_agrees_with_the_model(commands in commands(30)) {
        let (store, _) = mysql();
        let outcome = runtime().block_on(run(store.clone(), store.clone(), &commands));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }

    #[test]
    fn redis_queue_with_postgres_booking_agrees_with_the_model(commands in commands(30)) {
        let (booking, _) = postgres_for_redis();
        let outcome = runtime().block_on(run(redis_queue().clone(), booking.clone(), &commands));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}

/// The generator must reach every interesting outcome, or the agreement above proves little.
/// Runs a fixed-seed batch of sequences on memory and checks what the model predicted.
#[test]
fn the_generated_sequences_reach_every_interesting_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2_000 {
        let commands = commands(40).new_tree(&mut runner).unwrap().current();
        let store = MemoryStore::new();
        seen.extend(runtime().block_on(run(store.clone(), store, &commands)).unwrap());
    }
    let required = [
        "issue:token(created=true,active=false)",
        "issue:token(created=false,active=false)",
        "issue:token(created=false,active=true)",
        "poll:token_expired",
        "tick:admitted(2)",
        "tick:admitted(0)",
        "tick:Opened",
        "revoke:Ok",
        "revoke:token_not_found",
        "poll:token_revoked",
        "hold:token_revoked",
        "pause:Ok",
        "seats:not_admitted",
        "seats:wrong_concert",
        "hold:Held",
        "hold:seat_unavailable",
        "hold:hold_limit_reached",
        "hold:not_admitted",
        "hold:token_expired",
        "hold:wrong_concert",
        "hold:idempotency_key_reused",
        "release:Ok",
        "release:not_owner",
        "charge:Balance",
        "charge:invalid_amount",
        "charge:idempotency_key_reused",
        "pay:Paid",
        "pay:insufficient_balance",
        "pay:hold_expired",
        "pay:not_owner",
        "pay_order:invalid_input",
        "cancel:not_paid",
        "cancel:not_owner",
    ];
    // `pay:already_paid` (paying one's paid hold again) needs a long run on one concert that
    // random sequences over three concerts reach too rarely: it is written out below, and so is
    // `pay:idempotency_key_reused` (a key of a payment of two holds reused for one of them), and
    // `cancel:cancellation_closed` (a paid booking of concert 0, which takes long runs).
    let missing: Vec<_> = required.iter().filter(|kind| !seen.contains(**kind)).collect();
    assert!(missing.is_empty(), "never reached: {missing:?}\nreached: {seen:?}");
}

/// A buyer of concert 1 (two holds per token) holds both its seats and pays them in one payment:
/// refused while the balance covers one, paid once it covers both, replayed under its key for
/// the same pair in the other order, refused for another set under that key, and each seat then
/// refused as already paid.
#[test]
fn the_model_and_the_service_agree_on_paying_two_holds_at_once() {
    use proptests::Cmd;
    let (user, concert) = (1, 1);
    let commands = vec![
        Cmd::Issue { user, concert },
        Cmd::Tick { concert },
        Cmd::Charge { user, concert, amount: 150, key: None },
        Cmd::Hold { user, concert, seat: 3, key: None },
        Cmd::Hold { user, concert, seat: 4, key: None },
        Cmd::PayOrder { user, concert, reservations: vec![0, 1], key: None },
        Cmd::Charge { user, concert, amount: 150, key: None },
        Cmd::PayOrder { user, concert, reservations: vec![0, 0], key: None },
        Cmd::PayOrder { user, concert, reservations: vec![0, 1], key: Some(1) },
        Cmd::PayOrder { user, concert, reservations: vec![1, 0], key: Some(1) },
        Cmd::Pay { user, concert, reservation: 1, key: Some(1) },
        Cmd::Pay { user, concert, reservation: 1, key: None },
    ];
    let store = MemoryStore::new();
    let seen = runtime().block_on(run(store.clone(), store, &commands)).unwrap();
    for kind in [
        "pay_order:insufficient_balance",
        "pay_order:invalid_input",
        "pay_order:Paid",
        "pay:idempotency_key_reused",
        "pay:already_paid",
    ] {
        assert!(seen.contains(kind), "{kind} not reached: {seen:?}");
    }
}

/// A buyer of concert 1 (whose buyers may cancel) pays a hold, cancels it (refunded), replays the
/// cancellation under its key, is told it is cancelled when cancelling or paying it again; the
/// seat is then held and bought by another buyer. A buyer of concert 0 (no window) may not
/// cancel. (Random sequences rarely pay on concert 0 and then cancel.)
#[test]
fn the_model_and_the_service_agree_on_cancelling_and_selling_again() {
    use proptests::Cmd;
    let concert = 1;
    let commands = vec![
        Cmd::Issue { user: 1, concert },
        Cmd::Tick { concert },
        Cmd::Charge { user: 1, concert, amount: 300, key: None },
        Cmd::Hold { user: 1, concert, seat: 3, key: None },
        Cmd::Cancel { user: 1, concert, reservation: 0, key: None },
        Cmd::Pay { user: 1, concert, reservation: 0, key: None },
        Cmd::Cancel { user: 1, concert, reservation: 0, key: Some(1) },
        Cmd::Cancel { user: 1, concert, reservation: 0, key: Some(1) },
        Cmd::Cancel { user: 1, concert, reservation: 0, key: None },
        Cmd::Pay { user: 1, concert, reservation: 0, key: None },
        Cmd::Issue { user: 2, concert },
        Cmd::Tick { concert },
        Cmd::Charge { user: 2, concert, amount: 300, key: None },
        Cmd::Hold { user: 2, concert, seat: 3, key: None },
        Cmd::Pay { user: 2, concert, reservation: 1, key: None },
        // Concert 0's buyers may not cancel.
        Cmd::Issue { user: 0, concert: 0 },
        Cmd::Tick { concert: 0 },
        Cmd::Charge { user: 0, concert: 0, amount: 300, key: None },
        Cmd::Hold { user: 0, concert: 0, seat: 0, key: None },
        Cmd::Pay { user: 0, concert: 0, reservation: 2, key: None },
        Cmd::Cancel { user: 0, concert: 0, reservation: 2, key: None },
    ];
    let store = MemoryStore::new();
    let seen = runtime().block_on(run(store.clone(), store, &commands)).unwrap();
    for kind in [
        "cancel:not_paid",
        "cancel:Refunded",
        "cancel:already_cancelled",
        "pay:already_cancelled",
        "pay:Paid",
    ] {
        assert!(seen.contains(kind), "{kind} not reached: {seen:?}");
    }
}

/// A buyer pays a hold, then pays it again (its token expired with the payment, and with a
/// new, admitted one): the model predicts `already_paid` both times and the service agrees.
#[test]
fn the_model_and_the_service_agree_on_paying_a_paid_hold_again() {
    use proptests::Cmd;
    let (user, concert) = (1, 1);
    let commands = vec![
        Cmd::Issue { user, concert },
        Cmd::Tick { concert },
        Cmd::Charge { user, concert, amount: 1_000, key: None },
        Cmd::Hold { user, concert, seat: 3, key: None },
        Cmd::Pay { user, concert, reservation: 0, key: None },
        Cmd::Pay { user, concert, reservation: 0, key: Some(2) },
        Cmd::Issue { user, concert },
        Cmd::Tick { concert },
        Cmd::Pay { user, concert, reservation: 0, key: None },
    ];
    let store = MemoryStore::new();
    let seen = runtime().block_on(run(store.clone(), store, &commands)).unwrap();
    assert!(seen.contains("pay:Paid") && seen.contains("pay:already_paid"), "{seen:?}");
}

/// Everyone in concert 2's pre-queue has no place until the opening's tick, which admits
/// nobody and draws them; the next tick admits them in the drawn order (the model draws from
/// the recorded seed by the draw's definition, not with the service's code). On every backend:
/// the SQL stores decide the opening by their own clock.
fn the_model_and_the_service_agree_on_a_drawn_pre_queue<Q, B>(queue: Q, booking: B)
where
    Q: ticketing_core::store::QueueStore,
    B: ticketing_core::store::BookingStore,
{
    use proptests::Cmd;
    assert!(proptests::SCHEDULED[2]);
    let concert = 2;
    let mut commands: Vec<Cmd> = (0..proptests::USERS).map(|user| Cmd::Issue { user, concert }).collect();
    commands.extend([
        Cmd::Poll { user: 0, concert },
        Cmd::Tick { concert },
        Cmd::Poll { user: 1, concert },
        Cmd::Issue { user: 2, concert },
        Cmd::Tick { concert },
        Cmd::Tick { concert },
    ]);
    let seen = runtime().block_on(run(queue, booking, &commands)).unwrap();
    assert!(seen.contains("tick:Opened") && seen.contains("tick:admitted(2)"), "{seen:?}");
}

#[test]
fn a_drawn_pre_queue_agrees_with_the_model_on_memory() {
    let store = MemoryStore::new();
    the_model_and_the_service_agree_on_a_drawn_pre_queue(store.clone(), store);
}

#[test]
fn a_drawn_pre_queue_agrees_with_the_model_on_postgres_and_redis() {
    let (booking, _) = postgres_for_redis();
    the_model_and_the_service_agree_on_a_drawn_pre_queue(redis_queue().clone(), booking.clone());
}

#[test]
fn a_drawn_pre_queue_agrees_with_the_model_on_mysql() {
    let (store, _) = mysql();
    the_model_and_the_service_agree_on_a_drawn_pre_queue(store.clone(), store.clone());
}

/// A buyer capped at one seat of concert 0 buys one, joins again and is refused a second hold
/// (twice, with a key): the model predicts `buyer_limit_reached` and the service agrees (random sequences rarely get that far, so
/// this one is written out).
#[test]
fn the_model_and_the_service_agree_on_the_seat_cap_per_buyer() {
    use proptests::Cmd;
    assert_eq!(proptests::CAPS[0], Some(1));
    let (user, concert) = (0, 0);
    let commands = vec![
        Cmd::Issue { user, concert },
        Cmd::Tick { concert },
        Cmd::Charge { user, concert, amount: 1_000, key: None },
        Cmd::Hold { user, concert, seat: 0, key: None },
        Cmd::Pay { user, concert, reservation: 0, key: None },
        Cmd::Issue { user, concert },
        Cmd::Tick { concert },
        Cmd::Hold { user, concert, seat: 1, key: Some(1) },
        Cmd::Hold { user, concert, seat: 1, key: Some(1) },
    ];
    let store = MemoryStore::new();
    let seen = runtime().block_on(run(store.clone(), store, &commands)).unwrap();
    assert!(seen.contains("pay:Paid") && seen.contains("hold:buyer_limit_reached"), "{seen:?}");
}
