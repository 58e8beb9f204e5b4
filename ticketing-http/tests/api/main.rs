//! HTTP tests: the real server on 127.0.0.1:0, driven by a real HTTP client.
//!
//! Cases are written once in `cases.rs` and stamped out per backend here, like the core
//! conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cases;
mod harness;

macro_rules! api_suite {
    ($backend:ident, $fresh:expr) => {
        mod $backend {
            api_suite!(@cases $fresh;
                the_whole_flow_from_token_to_payment,
                token_requests_are_validated,
                the_token_is_the_credential,
                browsing_needs_an_active_token_of_the_concert,
                holds_answer_with_the_documented_statuses,
                reservations_are_private_to_their_owner,
                releasing_frees_the_seat,
                payments_answer_with_the_documented_statuses,
                requests_keep_to_their_store_call_budget,
                a_token_acts_only_for_its_own_concert,
                a_held_seat_can_be_paid_for_its_whole_hold_time,
                every_hold_of_a_token_can_be_paid,
                racing_payments_of_one_hold_lose_as_already_paid,
                the_eta_stays_bounded_while_the_line_waits_on_capacity,
                balances_and_charges,
                idempotent_replays_return_the_original_status_and_body,
                header_auth_trusts_the_gateway_header_only,
                jwt_auth_verifies_signature_and_expiry,
                admin_routes_need_the_key_and_are_off_without_one,
                admin_reports_list_sales_and_accounts,
                operations_routes_answer,
                client_mistakes_are_never_server_errors,
                two_hundred_concurrent_holds_of_one_seat_have_one_winner,
                background_tasks_admit_and_stop_on_shutdown,
                a_seat_list_is_fresh_on_every_node,
                a_seat_list_is_fresh_on_every_node_while_holds_race,
                an_operator_pauses_changes_and_resumes_the_sale_on_every_node,
                a_sold_out_concert_says_so,
                token_requests_past_a_budget_are_refused_429_with_retry_after,
                a_concerts_seat_cap_per_buyer_refuses_the_hold_past_it,
                a_buyer_holds_several_seats_and_pays_them_in_one_payment,
                a_booking_is_cancelled_by_its_buyer_or_an_operator_and_sold_again,
                a_buyer_leaves_the_line,
                a_scheduled_sale_keeps_a_pre_queue_until_it_opens,
                an_operator_revokes_a_token_on_every_node,
            );
        }
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                crate::cases::$case(|| $fresh).await;
            }
        )*
    };
}

api_suite!(memory, async {
    let store = ticketing_core::store::memory::MemoryStore::new();
    (store.clone(), store, None)
});

api_suite!(postgres, async {
    use ticketing_core::store::postgres::ClaimStrategy;
    let (store, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let guard: crate::harness::Guard = Some(Box::new(database));
    (store.clone(), store, guard)
});

api_suite!(mysql, async {
    use ticketing_core::store::mysql::ClaimStrategy;
    let (store, database) = ticketing_core::testing::fresh_my_store(ClaimStrategy::ConditionalUpdate).await;
    let guard: crate::harness::Guard = Some(Box::new(database));
    (store.clone(), store, guard)
});

api_suite!(redis_queue_postgres_booking, async {
    use ticketing_core::store::postgres::ClaimStrategy;
    let (booking, database) = ticketing_core::testing::fresh_pg_store(ClaimStrategy::ConditionalUpdate).await;
    let queue = ticketing_core::store::redis::RedisQueueStore::new(
        ticketing_core::testing::redis_connection().await,
        ticketing_core::testing::fresh_redis_prefix(),
    );
    let guard: crate::harness::Guard = Some(Box::new(database));
    (queue, booking, guard)
});

/// The opening itself, on the store whose clock is the server's: a SQL store decides the opening
/// by its own clock, which the test cannot move (the core conformance suite covers both).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_sale_opens_and_the_admin_api_shows_it() {
    cases::a_scheduled_sale_opens_and_the_admin_api_shows_it(|| async {
        let store = ticketing_core::store::memory::MemoryStore::new();
        (store.clone(), store, None)
    })
    .await;
}
