//! The conformance suite: every clause of the storage contract (`ticketing_core::store`), as
//! generic cases written once in `cases.rs` and stamped out here for every backend.
//!
//! A backend plugs in with one line: `conformance!(name, async { Stores { queue, booking } })`,
//! where the expression builds fresh, empty stores for one test (a fresh database or key
//! prefix), so tests run in parallel. A backend whose server is unreachable must panic with what
//! to start, never pass.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cases;

pub use cases::Stores;

/// Stamps out one `#[tokio::test]` per case for a backend; `store_clock: [...]` adds the cases
/// of a booking store that keeps its own clock (SQL: it decides a sale's opening by it, so a node
/// whose clock runs ahead cannot open a sale early), which the memory store, whose clock is the
/// service's, cannot show.
macro_rules! conformance {
    ($backend:ident, $fresh:expr $(, store_clock: [$($extra:ident),* $(,)?])?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            conformance!(@cases $fresh; $($($extra,)*)?);
            conformance!(@cases $fresh;
                a_scheduled_sale_opens_once_and_draws_its_pre_queue,
                a_first_come_pre_queue_keeps_its_order,
                an_operator_revokes_a_token_and_its_holds_are_released,
                issuing_twice_returns_the_same_token_and_place,
                positions_follow_arrival_order,
                an_idle_waiting_token_loses_its_place,
                admission_respects_capacity_and_rate_together,
                a_sale_is_paused_changed_and_resumed_by_version,
                a_concerts_figures_add_up,
                a_sold_out_concert_says_so_and_takes_nobody_more,
                a_buyer_buys_no_more_than_the_concerts_cap_across_tokens_and_retries,
                racing_payments_of_one_buyer_stay_within_the_cap,
                admission_is_first_in_first_out,
                a_waiting_buyer_leaves_and_everyone_behind_moves_up,
                a_record_read_before_its_admission_has_place_zero,
                a_poll_refreshes_and_places_a_waiting_token_in_one_step,
                admission_skips_idle_tokens_at_the_head,
                active_tokens_expire_after_their_time_and_free_capacity,
                concurrent_admission_ticks_never_exceed_the_caps,
                concurrent_token_requests_of_one_user_yield_one_token,
                token_writes_compare_versions,
                a_user_has_one_token_per_concert_in_the_store,
                only_active_tokens_of_the_concert_may_browse_and_hold,
                seats_and_schedules_show_live_status,
                seat_changes_bring_every_seat_written_since_their_horizon,
                a_seat_cannot_be_held_twice,
                a_hold_lasts_its_whole_time_and_its_token_may_pay_it,
                a_token_acts_only_for_its_own_concert,
                every_hold_of_a_token_can_be_paid,
                several_holds_are_paid_in_one_payment_all_or_none,
                a_payment_of_several_seats_counts_them_all_against_the_cap,
                racing_payments_of_one_capped_hold_lose_as_already_paid,
                racing_payments_of_overlapping_holds_book_each_seat_once,
                a_payment_of_several_seats_writes_all_or_nothing_in_the_store,
                a_buyer_reads_their_own_reservations_and_ledger,
                a_booking_is_cancelled_refunded_and_sold_again,
                racing_cancellations_of_one_booking_refund_it_once,
                a_stale_cancellation_writes_nothing,
                racing_payments_of_one_hold_lose_as_already_paid,
                the_eta_stays_bounded_while_admission_waits_on_capacity,
                a_thousand_concurrent_holds_of_one_seat_have_one_winner,
                an_expired_hold_is_reholdable_and_the_first_holders_payment_is_refused,
                a_stale_fence_never_writes,
                a_token_holds_at_most_its_limit,
                releasing_frees_the_seat_and_only_the_owner_may,
                the_sweeper_frees_lapsed_holds_but_nothing_waits_for_it,
                a_payment_books_debits_records_and_expires_the_token,
                a_payment_without_enough_points_changes_nothing,
                a_hundred_concurrent_payments_of_one_reservation_make_one_payment,
                nobody_pays_for_or_reads_someone_elses_reservation,
                a_charge_replayed_with_its_key_takes_effect_once,
                concurrent_charges_with_one_key_make_one_ledger_entry,
                a_key_reused_for_another_request_is_refused,
                a_write_under_a_live_key_writes_nothing,
                a_refusal_is_replayed_under_its_key,
                a_payment_replayed_after_its_token_expired_returns_the_receipt,
                a_hold_replayed_with_its_key_holds_once,
                keys_are_scoped_to_the_user,
                charges_are_bounded,
                the_balance_needs_an_unexpired_token,
                concerts_are_validated_and_listed,
                the_admission_log_records_who_was_admitted_and_who_paid_with_it,
                a_store_gives_back_what_it_has_and_writes_nothing_it_did_not_lose,
                a_concert_may_start_in_any_year_the_rules_allow,
            );
        }
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                crate::cases::$case($fresh).await;
            }
        )*
    };
}

conformance!(memory, async {
    let store = ticketing_core::store::memory::MemoryStore::new();
    Stores { queue: store.clone(), booking: store, guard: None }
});

/// One PostgreSQL database as the whole deployment, with a seat-claim strategy.
#[cfg(feature = "postgres")]
macro_rules! postgres {
    ($strategy:expr) => {
        async {
            let (store, database) = ticketing_core::testing::fresh_pg_store($strategy).await;
            Stores { queue: store.clone(), booking: store, guard: Some(Box::new(database)) }
        }
    };
}

#[cfg(feature = "postgres")]
conformance!(
    postgres_conditional,
    postgres!(ticketing_core::store::postgres::ClaimStrategy::ConditionalUpdate),
    store_clock: [a_node_whose_clock_runs_ahead_opens_no_sale_early]
);
#[cfg(feature = "postgres")]
conformance!(postgres_for_update, postgres!(ticketing_core::store::postgres::ClaimStrategy::ForUpdate));
#[cfg(feature = "postgres")]
conformance!(postgres_advisory, postgres!(ticketing_core::store::postgres::ClaimStrategy::AdvisoryLock));
#[cfg(all(feature = "postgres", feature = "redis"))]
conformance!(
    postgres_redis_lock,
    postgres!(ticketing_core::store::postgres::ClaimStrategy::RedisLock(
        ticketing_core::store::redis::RedisSeatLock::new(
            ticketing_core::testing::redis_connection().await,
            ticketing_core::testing::fresh_redis_prefix(),
            ticketing_core::store::redis::LOCK_TTL_MS,
        )
    ))
);

/// One MySQL / MariaDB database as the whole deployment, with a seat-claim strategy.
#[cfg(feature = "mysql")]
macro_rules! mysql {
    ($strategy:expr) => {
        async {
            let (store, database) = ticketing_core::testing::fresh_my_store($strategy).await;
            Stores { queue: store.clone(), booking: store, guard: Some(Box::new(database)) }
        }
    };
}

#[cfg(feature = "mysql")]
conformance!(
    mysql_conditional,
    mysql!(ticketing_core::store::mysql::ClaimStrategy::ConditionalUpdate),
    store_clock: [a_node_whose_clock_runs_ahead_opens_no_sale_early]
);
#[cfg(feature = "mysql")]
conformance!(mysql_for_update, mysql!(ticketing_core::store::mysql::ClaimStrategy::ForUpdate));
#[cfg(feature = "mysql")]
conformance!(mysql_named_lock, mysql!(ticketing_core::store::mysql::ClaimStrategy::AdvisoryLock));
#[cfg(all(feature = "mysql", feature = "redis"))]
conformance!(
    mysql_redis_lock,
    mysql!(ticketing_core::store::mysql::ClaimStrategy::RedisLock(
        ticketing_core::store::redis::RedisSeatLock::new(
            ticketing_core::testing::redis_connection().await,
            ticketing_core::testing::fresh_redis_prefix(),
            ticketing_core::store::redis::LOCK_TTL_MS,
        )
    ))
);

// The deployment the design draws: the queue in Redis, booking in PostgreSQL.
#[cfg(all(feature = "postgres", feature = "redis"))]
conformance!(redis_queue_postgres_booking, async {
    use ticketing_core::store::postgres::ClaimStrategy;
    let (booking, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let queue = ticketing_core::store::redis::RedisQueueStore::new(
        ticketing_core::testing::redis_connection().await,
        ticketing_core::testing::fresh_redis_prefix(),
    );
    Stores { queue, booking, guard: Some(Box::new(database)) }
}, store_clock: [a_node_whose_clock_runs_ahead_opens_no_sale_early]);

/// The Redis lock strategy's own promise: a holder whose lock lapsed while it was paused can
/// never write after a newer holder has — even with a fresh read of the seat, its old fence is
/// refused by the database.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_redis_lock_holder_never_writes_after_a_newer_one() {
    use chrono::Duration;
    use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings, plan_concert};
    use ticketing_core::hold::{self, Holder};
    use ticketing_core::ids::{Points, QueueToken, ReservationId, UserId};
    use ticketing_core::store::postgres::ClaimStrategy;
    use ticketing_core::store::redis::{LOCK_TTL_MS, RedisSeatLock};
    use ticketing_core::store::{BookingStore, CatalogStore};
    use ticketing_core::{Clock, ManualClock, StoreError};

    let lock = RedisSeatLock::new(
        ticketing_core::testing::redis_connection().await,
        ticketing_core::testing::fresh_redis_prefix(),
        LOCK_TTL_MS,
    );
    let (store, _database) =
        ticketing_core::testing::fresh_pg_store(ClaimStrategy::RedisLock(lock.clone())).await;
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let now = clock.now();
    let concert = plan_concert(&NewConcert {
        title: "Fenced".into(),
        schedules: vec![NewSchedule {
            starts_at: now + Duration::days(9),
            seat_count: 1,
            price: Points::new(10).unwrap(),
        }],
        queue: QueueSettings::default(),
        max_seats_per_buyer: None,
        holds_per_token: None,
        cancel_until_secs_before_start: None,
        sales_open_at: None,
        pre_queue: Default::default(),
    })
    .unwrap();
    store.create_concert(&concert).await.unwrap();
    let seat = concert.seats[0].id;
    let plan = |record: &ticketing_core::catalog::SeatRecord, name: &str| {
        let holder =
            Holder { user_id: UserId::parse(name).unwrap(), token: QueueToken::generate(concert.concert.id) };
        hold::plan_hold(record, holder, ReservationId::random(), Duration::seconds(300), 1, now).unwrap()
    };

    // A takes the lock, then pauses long enough for it to lapse; B takes it with a newer fence.
    let a = lock.acquire(seat, now).await.unwrap().expect("free");
    assert!(lock.acquire(seat, now).await.unwrap().is_none(), "held");
    lock.force_expire(seat).await.unwrap();
    let b = lock.acquire(seat, now).await.unwrap().expect("lapsed");
    assert!(b.fence > a.fence);
    let plan_b = plan(&store.seat(seat).await.unwrap().unwrap(), "bob");
    store.claim_seat_fenced(&plan_b, None, b.fence).await.expect("the newer holder writes");
    lock.release(seat, &b).await;
    let hold::Release::Write(release) = hold::plan_release(
        &plan_b.reservation,
        &store.seat(seat).await.unwrap().unwrap(),
        &plan_b.reservation.user_id,
        now,
    )
    .unwrap() else {
        panic!("bob's hold is live")
    };
    store.release_seat(&release).await.unwrap();

    // A wakes up, reads the seat afresh (available), and tries with its lapsed fence: refused.
    let plan_a = plan(&store.seat(seat).await.unwrap().unwrap(), "alice");
    assert!(matches!(store.claim_seat_fenced(&plan_a, None, a.fence).await, Err(StoreError::Conflict(_))));
    assert!(store.reservation(plan_a.reservation.id).await.unwrap().is_none(), "nothing written");
    // With a lock of its own, taken now, it may.
    let fresh = lock.acquire(seat, now).await.unwrap().expect("free");
    store.claim_seat_fenced(&plan_a, None, fresh.fence).await.expect("a current fence writes");
}

/// Redis keeps nothing on disk here: after it loses its data, fences must still grow, or the
/// database would refuse every holder for ever.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_lock_fences_keep_growing_after_redis_loses_its_data() {
    use ticketing_core::Clock;
    use ticketing_core::store::redis::{LOCK_TTL_MS, RedisSeatLock};
    let conn = ticketing_core::testing::redis_connection().await;
    let prefix = ticketing_core::testing::fresh_redis_prefix();
    let lock = RedisSeatLock::new(conn.clone(), prefix.clone(), LOCK_TTL_MS);
    let seat = ticketing_core::ids::SeatId::random();
    let clock = ticketing_core::ManualClock::at_epoch_secs(1_900_000_000);
    let first = lock.acquire(seat, clock.now()).await.unwrap().unwrap();
    lock.release(seat, &first).await;
    let second = lock.acquire(seat, clock.now()).await.unwrap().unwrap();
    lock.release(seat, &second).await;
    assert!(second.fence > first.fence);
    // Everything under the prefix is lost, as after a Redis restart without persistence.
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn.clone()).await.unwrap();
    for key in keys {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn.clone()).await.unwrap();
    }
    clock.advance_millis(1);
    let after = lock.acquire(seat, clock.now()).await.unwrap().unwrap();
    assert!(after.fence > second.fence, "{} > {}", after.fence, second.fence);
}

/// MySQL's default isolation, REPEATABLE READ, permits lost updates: a transaction that reads a
/// balance and writes back `read + amount` overwrites a concurrent charge. First the hazard is
/// shown on the real server with the very interleaving, then the store under the same
/// interleaving: its write names the version it read, and loses instead of overwriting.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_permits_lost_updates_and_the_mysql_store_is_safe_under_it() {
    use sqlx::{Connection, Executor, Row};
    use ticketing_core::ids::{LedgerEntryId, UserId};
    use ticketing_core::payment::plan_charge;
    use ticketing_core::store::WalletStore;
    use ticketing_core::store::mysql::ClaimStrategy;
    use ticketing_core::{Clock, ManualClock, StoreError};

    let (store, database) = ticketing_core::testing::fresh_my_store(ClaimStrategy::ConditionalUpdate).await;
    let mut one = sqlx::MySqlConnection::connect(&database.url).await.unwrap();
    let mut two = sqlx::MySqlConnection::connect(&database.url).await.unwrap();
    let isolation: String = match sqlx::query("SELECT @@transaction_isolation").fetch_one(&mut one).await {
        Ok(row) => row.get(0),
        Err(_) => sqlx::query("SELECT @@tx_isolation").fetch_one(&mut one).await.unwrap().get(0),
    };
    assert_eq!(isolation, "REPEATABLE-READ", "the server's default isolation");

    // The hazard: a naive read-modify-write under REPEATABLE READ.
    one.execute("INSERT INTO wallets (user_id, balance, version) VALUES ('naive', 100, 1)").await.unwrap();
    one.execute("START TRANSACTION").await.unwrap();
    let read_one: i64 = sqlx::query_scalar("SELECT balance FROM wallets WHERE user_id = 'naive'")
        .fetch_one(&mut one)
        .await
        .unwrap();
    two.execute("START TRANSACTION").await.unwrap();
    let read_two: i64 = sqlx::query_scalar("SELECT balance FROM wallets WHERE user_id = 'naive'")
        .fetch_one(&mut two)
        .await
        .unwrap();
    sqlx::query("UPDATE wallets SET balance = ? WHERE user_id = 'naive'")
        .bind(read_two + 10)
        .execute(&mut two)
        .await
        .unwrap();
    two.execute("COMMIT").await.unwrap();
    let still: i64 = sqlx::query_scalar("SELECT balance FROM wallets WHERE user_id = 'naive'")
        .fetch_one(&mut one)
        .await
        .unwrap();
    assert_eq!(still, 100, "the first transaction still reads its old snapshot");
    sqlx::query("UPDATE wallets SET balance = ? WHERE user_id = 'naive'")
        .bind(read_one + 20)
        .execute(&mut one)
        .await
        .unwrap();
    one.execute("COMMIT").await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT balance FROM wallets WHERE user_id = 'naive'")
        .fetch_one(&mut one)
        .await
        .unwrap();
    assert_eq!(after, 120, "REPEATABLE READ lost the +10 of the second transaction");

    // The store under the same interleaving: both read version N, one writes, the other loses.
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let user = UserId::parse("careful").unwrap();
    let seed =
        plan_charge(&store.wallet(&user).await.unwrap(), 100, LedgerEntryId::random(), clock.now()).unwrap();
    store.apply_charge(&seed, None).await.unwrap();
    let read_one = store.wallet(&user).await.unwrap();
    let read_two = store.wallet(&user).await.unwrap();
    let plus_ten = plan_charge(&read_two, 10, LedgerEntryId::random(), clock.now()).unwrap();
    store.apply_charge(&plus_ten, None).await.unwrap();
    let plus_twenty = plan_charge(&read_one, 20, LedgerEntryId::random(), clock.now()).unwrap();
    assert!(matches!(store.apply_charge(&plus_twenty, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.wallet(&user).await.unwrap().balance.get(), 110, "nothing lost, nothing doubled");
    let ledger = store.ledger(&user).await.unwrap();
    assert_eq!(ledger.iter().map(|e| e.signed_amount()).sum::<i64>(), 110);

    // And through the service, racing under the default isolation: every charge lands once.
    let service = std::sync::Arc::new(ticketing_core::Ticketing::new(
        store.clone(),
        store.clone(),
        clock.clone(),
        ticketing_core::Config::default(),
    ));
    let concert = service
        .create_concert(&ticketing_core::catalog::NewConcert {
            title: "Isolation".into(),
            schedules: vec![ticketing_core::catalog::NewSchedule {
                starts_at: clock.now() + chrono::Duration::days(3),
                seat_count: 1,
                price: ticketing_core::ids::Points::new(1).unwrap(),
            }],
            queue: ticketing_core::catalog::QueueSettings::default(),
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .unwrap();
    let token = service.issue_token(&user, concert.concert.id).await.unwrap().record.token;
    let charges: Vec<_> = (0..30)
        .map(|_| {
            let (service, token) = (std::sync::Arc::clone(&service), token.clone());
            tokio::spawn(async move {
                loop {
                    match service.charge(&token, 5, None).await {
                        Ok(_) => return,
                        // Contention is an honest "try again", never a lost or doubled charge.
                        Err(ticketing_core::Error::Contention) => tokio::task::yield_now().await,
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    for charge in charges {
        charge.await.unwrap();
    }
    assert_eq!(store.wallet(&user).await.unwrap().balance.get(), 110 + 30 * 5);
    let ledger = store.ledger(&user).await.unwrap();
    assert_eq!(ledger.len(), 2 + 30);
    assert_eq!(ledger.iter().map(|e| e.signed_amount()).sum::<i64>(), 110 + 30 * 5);
}

/// Storing a key's outcome locks no gap of the key index. Under REPEATABLE READ, a `DELETE`
/// that finds no row locks the gap where it would be; the first `ticketing_put_key` deleted an
/// expired record that way before inserting, so a request of the same user under a neighbouring
/// key waited to insert into that gap until the first transaction ended, and two such requests
/// deadlocked (the losers of racing payments, storing their refusals, did so in CI). Here one
/// transaction stores `race-1` and stays open while the store saves `race-10`: under a gap lock
/// that save waits for the server's lock timeout and fails as a lost race.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_a_key_locks_no_gap_a_neighbouring_key_must_wait_for() {
    use sqlx::{Connection, Executor};
    use ticketing_core::idempotency::IdempotencyRecord;
    use ticketing_core::ids::{IdempotencyKey, UserId};
    use ticketing_core::store::WalletStore;
    use ticketing_core::store::mysql::ClaimStrategy;

    let (store, database) = ticketing_core::testing::fresh_my_store(ClaimStrategy::ConditionalUpdate).await;
    let at = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let record = |key: &str| IdempotencyRecord {
        user_id: UserId::parse("alice").unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: "pay:x".to_owned(),
        outcome: "{\"Ok\":null}".to_owned(),
        created_at: at,
        expires_at: at + chrono::Duration::seconds(60),
    };
    let mut open = sqlx::MySqlConnection::connect(&database.url).await.unwrap();
    open.execute("START TRANSACTION").await.unwrap();
    sqlx::query("CALL ticketing_put_key('alice', 'race-1', 'pay:x', '{}', ?, ?)")
        .bind(at.naive_utc())
        .bind((at + chrono::Duration::seconds(60)).naive_utc())
        .execute(&mut open)
        .await
        .unwrap();
    let saved = store.save_outcome(&record("race-10")).await;
    assert!(saved.is_ok(), "a neighbouring key waited on the open transaction: {saved:?}");
    open.execute("COMMIT").await.unwrap();
    for key in ["race-1", "race-10"] {
        let user = UserId::parse("alice").unwrap();
        assert!(
            store.idempotency(&user, &IdempotencyKey::parse(key).unwrap()).await.unwrap().is_some(),
            "{key}"
        );
    }
}

/// A hold waits on no other buyer's reservation. The first `ticketing_claim_seat` counted the
/// token's open holds with a locking read, which InnoDB may answer from the index of every HELD
/// reservation by deadline, locking all of them and the gaps between: a buyer's hold then waited
/// for every other buyer's uncommitted hold, and two such holds deadlocked (sixteen buyers
/// holding different seats exhausted their retries in CI). Here another buyer's reservation is
/// inserted and left uncommitted while Alice holds another seat: her hold must complete. Bob's
/// token sorts after every real token, so his row is the one a locking read of Alice's holds
/// would lock next whichever index InnoDB reads it from. (The
/// timeout only turns such a wait, which would last as long as the open transaction, into a
/// failure; it is not a measure of speed.)
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_waits_on_no_other_buyers_uncommitted_hold() {
    use sqlx::{Connection, Executor};
    use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
    use ticketing_core::ids::{Points, ReservationId, UserId};
    use ticketing_core::store::memory::MemoryStore;
    use ticketing_core::store::mysql::ClaimStrategy;
    use ticketing_core::{Clock, Config, ManualClock, Ticketing};

    let (store, database) = ticketing_core::testing::fresh_my_store(ClaimStrategy::ConditionalUpdate).await;
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let service = Ticketing::new(MemoryStore::new(), store, clock.clone(), Config::default());
    let plan = service
        .create_concert(&NewConcert {
            title: "Uncommitted".into(),
            schedules: vec![NewSchedule {
                starts_at: chrono::DateTime::from_timestamp(1_950_000_000, 0).unwrap(),
                seat_count: 2,
                price: Points::new(10).unwrap(),
            }],
            queue: QueueSettings { max_active: 10, admit_batch: 10, ..QueueSettings::default() },
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .unwrap();
    let alice =
        service.issue_token(&UserId::parse("alice").unwrap(), plan.concert.id).await.unwrap().record.token;
    service.admission_tick(plan.concert.id).await.unwrap();

    let mut open = sqlx::MySqlConnection::connect(&database.url).await.unwrap();
    open.execute("START TRANSACTION").await.unwrap();
    let (bobs, now) = (&plan.seats[1], clock.now());
    sqlx::query(
        "INSERT INTO reservations (id, user_id, token, seat_id, schedule_id, concert_id, price, fence, status,
                                   held_at, expires_at)
         VALUES (?, 'bob', 'zzzz-bobs-token', ?, ?, ?, 10, 1, 'HELD', ?, ?)",
    )
    .bind(ReservationId::random().as_uuid())
    .bind(bobs.id.as_uuid())
    .bind(bobs.schedule_id.as_uuid())
    .bind(bobs.concert_id.as_uuid())
    .bind(now.naive_utc())
    .bind((now + chrono::Duration::minutes(5)).naive_utc())
    .execute(&mut open)
    .await
    .unwrap();
    let held = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        service.hold(&alice, plan.seats[0].id, None),
    )
    .await;
    assert!(matches!(held, Ok(Ok(_))), "Alice's hold waited on Bob's open transaction: {held:?}");
    open.execute("ROLLBACK").await.unwrap();
}
