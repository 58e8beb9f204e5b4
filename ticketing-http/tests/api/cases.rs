//! The HTTP cases: every route, every status of the contract table (status and `code`), the
//! whole flow, replays, each auth mode, and a race over HTTP.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use ticketing_core::queue::TokenStatus;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_http::auth::AuthMode;

use crate::harness::{ADMIN_KEY, open_queue, spawn, spawn_node};

fn none() -> AuthMode {
    AuthMode::None
}

pub async fn the_whole_flow_from_token_to_payment<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let first = server.ask("alice").await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["status"], "WAITING");
    assert_eq!(first.body["position"], 1);
    assert_eq!(first.body["userId"], "alice");
    assert!(first.body["etaSeconds"].is_u64());
    assert!(first.body["expiresAt"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC");
    let token = first.body["token"].as_str().unwrap().to_owned();
    let again = server.ask("alice").await;
    assert_eq!((again.status.as_u16(), again.body["token"].as_str()), (200, Some(token.as_str())));

    let polled = server.get("/api/v1/queue/tokens/current", Some(&token)).await;
    assert_eq!((polled.status.as_u16(), polled.body["status"].as_str()), (200, Some("WAITING")));
    let retry: u64 = polled.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry));

    server.tick().await;
    let active = server.get("/api/v1/queue/tokens/current", Some(&token)).await;
    assert_eq!(active.body["status"], "ACTIVE");
    assert!(active.headers.get("retry-after").is_none());

    let concerts = server.get("/api/v1/concerts", None).await;
    assert_eq!(concerts.body[0]["concertId"], server.demo.to_string());
    assert_eq!(concerts.body[0]["title"], "Demo Concert");
    let schedules = server.get(&format!("/api/v1/concerts/{}/schedules", server.demo), Some(&token)).await;
    assert_eq!(schedules.body.as_array().unwrap().len(), 3);
    assert_eq!(schedules.body[0]["availableSeats"], 50);
    let seats = server.seats(&token).await;
    assert_eq!(seats.len(), 50);
    assert_eq!(
        (seats[0]["number"].as_u64(), seats[0]["price"].as_i64(), seats[0]["status"].as_str()),
        (Some(1), Some(50_000), Some("AVAILABLE"))
    );

    let seat = seats[4]["seatId"].as_str().unwrap();
    let held = server.hold(&token, seat).await;
    assert_eq!(held.status, 201, "{held:?}");
    assert_eq!((held.body["status"].as_str(), held.body["price"].as_i64()), (Some("HELD"), Some(50_000)));
    assert_eq!(held.body["seatId"], seat);
    let reservation = held.body["reservationId"].as_str().unwrap().to_owned();
    assert_eq!(server.seats(&token).await[4]["status"], "HELD", "live, no stale cache");
    let read = server.get(&format!("/api/v1/reservations/{reservation}"), Some(&token)).await;
    assert_eq!(read.body["status"], "HELD");

    let charged = server.charge(&token, 60_000).await;
    assert_eq!(
        (charged.status.as_u16(), charged.body["balance"].as_i64(), charged.body["userId"].as_str()),
        (200, Some(60_000), Some("alice"))
    );
    let paid = server.pay(&token, &reservation).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    assert_eq!(
        (paid.body["amount"].as_i64(), paid.body["balance"].as_i64(), paid.body["status"].as_str()),
        (Some(50_000), Some(10_000), Some("COMPLETED"))
    );
    assert_eq!(paid.body["reservationId"], reservation.as_str());

    server.get("/api/v1/queue/tokens/current", Some(&token)).await.assert_problem(401, "token_expired");
    let confirmed = server.get(&format!("/api/v1/reservations/{reservation}"), Some(&token)).await;
    assert_eq!((confirmed.status.as_u16(), confirmed.body["status"].as_str()), (200, Some("CONFIRMED")));
    let stored = server
        .state
        .service
        .authenticate(&ticketing_core::ids::QueueToken::parse(&token).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.status_at(ticketing_core::Clock::now(&server.clock)), TokenStatus::Expired);
}

pub async fn token_requests_are_validated<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let path = "/api/v1/queue/tokens";
    server
        .post(path, None, json!({"userId": "alice", "concertId": uuid::Uuid::new_v4().to_string()}))
        .await
        .assert_problem(404, "concert_not_found");
    server
        .post(path, None, json!({"userId": "has space", "concertId": server.demo.to_string()}))
        .await
        .assert_problem(422, "invalid_input");
    server
        .post(path, None, json!({"userId": "", "concertId": server.demo.to_string()}))
        .await
        .assert_problem(422, "invalid_input");
    server
        .post(path, None, json!({"concertId": server.demo.to_string()}))
        .await
        .assert_problem(422, "invalid_input");
    server
        .post(path, None, json!({"userId": "alice", "concertId": "nope"}))
        .await
        .assert_problem(422, "invalid_input");
}

pub async fn the_token_is_the_credential<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let path = "/api/v1/queue/tokens/current";
    server.get(path, None).await.assert_problem(401, "missing_token");
    server.get(path, Some("garbage")).await.assert_problem(401, "invalid_token");
    server
        .get(
            path,
            Some(
                ticketing_core::ids::QueueToken::generate(ticketing_core::ids::ConcertId::random()).as_str(),
            ),
        )
        .await
        .assert_problem(401, "invalid_token");
    let basic = server.call(Method::GET, path, None, &[("Authorization", "Basic YWxpY2U6eA==")], None).await;
    basic.assert_problem(401, "invalid_token");
    let token = server.ask("alice").await.body["token"].as_str().unwrap().to_owned();
    server.clock.advance_secs(60);
    server.get(path, Some(&token)).await.assert_problem(401, "token_expired");
}

pub async fn browsing_needs_an_active_token_of_the_concert<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let queue = ticketing_core::catalog::QueueSettings { admit_batch: 1, ..open_queue() };
    let server = spawn(fresh().await, none(), queue).await;
    let active = server.admitted("first").await;
    let waiting = server.ask("second").await.body["token"].as_str().unwrap().to_owned();
    let schedules = format!("/api/v1/concerts/{}/schedules", server.demo);
    let not_admitted = server.get(&schedules, Some(&waiting)).await;
    not_admitted.assert_problem(403, "not_admitted");
    assert_eq!(not_admitted.body["position"], 1);
    server.get(&schedules, None).await.assert_problem(401, "missing_token");
    server
        .get(&format!("/api/v1/concerts/{}/schedules", uuid::Uuid::new_v4()), Some(&active))
        .await
        .assert_problem(404, "concert_not_found");
    server
        .get("/api/v1/concerts/not-a-uuid/schedules", Some(&active))
        .await
        .assert_problem(404, "concert_not_found");
    server
        .get(&format!("/api/v1/schedules/{}/seats", uuid::Uuid::new_v4()), Some(&active))
        .await
        .assert_problem(404, "schedule_not_found");
    let schedule =
        server.get(&schedules, Some(&active)).await.body[0]["scheduleId"].as_str().unwrap().to_owned();
    server
        .get(&format!("/api/v1/schedules/{schedule}/seats"), Some(&waiting))
        .await
        .assert_problem(403, "not_admitted");

    // A token of another concert is forbidden here.
    let other = server
        .call(Method::POST, "/api/v1/admin/concerts", None, &[("X-Admin-Key", ADMIN_KEY)], Some(json!({
            "title": "Other", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 2, "price": 10}],
        })))
        .await;
    let other_id = other.body["concertId"].as_str().unwrap();
    server
        .get(&format!("/api/v1/concerts/{other_id}/schedules"), Some(&active))
        .await
        .assert_problem(403, "wrong_concert");
    let other_schedule = other.body["schedules"][0]["scheduleId"].as_str().unwrap();
    server
        .get(&format!("/api/v1/schedules/{other_schedule}/seats"), Some(&active))
        .await
        .assert_problem(403, "wrong_concert");
}

pub async fn holds_answer_with_the_documented_statuses<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let queue = ticketing_core::catalog::QueueSettings { admit_batch: 2, ..open_queue() };
    let server = spawn(fresh().await, none(), queue).await;
    let alice = server.admitted("alice").await;
    let bob = server.admitted("bob").await;
    let seat = server.seat_id(&alice, 0).await;
    assert_eq!(server.hold(&alice, &seat).await.status, 201);
    server.hold(&bob, &seat).await.assert_problem(409, "seat_unavailable");
    let other_seat = server.seat_id(&alice, 1).await;
    server.hold(&alice, &other_seat).await.assert_problem(409, "hold_limit");
    server.hold(&bob, &uuid::Uuid::new_v4().to_string()).await.assert_problem(404, "seat_not_found");
    server.hold(&bob, "seat-1").await.assert_problem(422, "invalid_input");
    let waiting = server.ask("carol").await.body["token"].as_str().unwrap().to_owned();
    server.hold(&waiting, &other_seat).await.assert_problem(403, "not_admitted");
    server
        .post("/api/v1/reservations", None, json!({"seatId": other_seat}))
        .await
        .assert_problem(401, "missing_token");
}

pub async fn reservations_are_private_to_their_owner<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let alice = server.admitted("alice").await;
    let bob = server.admitted("bob").await;
    let seat = server.seat_id(&alice, 0).await;
    let id = server.hold(&alice, &seat).await.body["reservationId"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/reservations/{id}");
    server.get(&path, Some(&bob)).await.assert_problem(404, "reservation_not_found");
    server.delete(&path, &bob).await.assert_problem(404, "reservation_not_found");
    server.charge(&bob, 100_000).await;
    server.pay(&bob, &id).await.assert_problem(404, "reservation_not_found");
    server
        .get(&format!("/api/v1/reservations/{}", uuid::Uuid::new_v4()), Some(&alice))
        .await
        .assert_problem(404, "reservation_not_found");
    server.get("/api/v1/reservations/xyz", Some(&alice)).await.assert_problem(404, "reservation_not_found");
    assert_eq!(server.get(&path, Some(&alice)).await.body["status"], "HELD");
}

pub async fn releasing_frees_the_seat<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let alice = server.admitted("alice").await;
    let seat = server.seat_id(&alice, 0).await;
    let id = server.hold(&alice, &seat).await.body["reservationId"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/reservations/{id}");
    let released = server.delete(&path, &alice).await;
    assert_eq!((released.status.as_u16(), &released.body), (204, &serde_json::Value::Null));
    assert_eq!(server.seats(&alice).await[0]["status"], "AVAILABLE");
    assert_eq!(server.get(&path, Some(&alice)).await.body["status"], "RELEASED");
    assert_eq!(server.delete(&path, &alice).await.status, 204, "harmless twice");
    server.pay(&alice, &id).await.assert_problem(410, "hold_released");
    let again = server.hold(&alice, &seat).await.body["reservationId"].as_str().unwrap().to_owned();
    server.charge(&alice, 50_000).await;
    assert_eq!(server.pay(&alice, &again).await.status, 201);
    server.delete(&format!("/api/v1/reservations/{again}"), &alice).await.assert_problem(409, "already_paid");
}

pub async fn payments_answer_with_the_documented_statuses<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    // Tokens outlive holds here, so the balance can be read after the hold lapsed.
    let queue = ticketing_core::catalog::QueueSettings { active_ttl_secs: 600, ..open_queue() };
    let server = spawn(fresh().await, none(), queue).await;
    let alice = server.admitted("alice").await;
    let seat = server.seat_id(&alice, 0).await;
    let id = server.hold(&alice, &seat).await.body["reservationId"].as_str().unwrap().to_owned();
    let broke = server.pay(&alice, &id).await;
    broke.assert_problem(402, "insufficient_balance");
    assert_eq!((broke.body["balance"].as_i64(), broke.body["required"].as_i64()), (Some(0), Some(50_000)));
    server.pay(&alice, &uuid::Uuid::new_v4().to_string()).await.assert_problem(404, "reservation_not_found");
    server.pay(&alice, "r-1").await.assert_problem(422, "invalid_input");
    server.charge(&alice, 50_000).await;
    server.clock.advance_secs(300);
    server.pay(&alice, &id).await.assert_problem(410, "hold_expired");
    assert_eq!(server.get("/api/v1/balance", Some(&alice)).await.body["balance"], 50_000, "nothing debited");

    let bob = server.admitted("bob").await;
    let id = server.hold(&bob, &seat).await.body["reservationId"].as_str().unwrap().to_owned();
    server.charge(&bob, 50_000).await;
    assert_eq!(server.pay(&bob, &id).await.status, 201);
    server.pay(&bob, &id).await.assert_problem(409, "already_paid");
}

pub async fn balances_and_charges<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let waiting = server.ask("alice").await.body["token"].as_str().unwrap().to_owned();
    let balance = server.get("/api/v1/balance", Some(&waiting)).await;
    assert_eq!(
        (balance.status.as_u16(), balance.body["balance"].as_i64(), balance.body["userId"].as_str()),
        (200, Some(0), Some("alice"))
    );
    server.charge(&waiting, 0).await.assert_problem(422, "invalid_amount");
    server.charge(&waiting, -10).await.assert_problem(422, "invalid_amount");
    server
        .charge(&waiting, ticketing_core::limits::CHARGE_MAX_POINTS + 1)
        .await
        .assert_problem(422, "invalid_amount");
    assert_eq!(server.charge(&waiting, 1_000).await.body["balance"], 1_000);
    server
        .post("/api/v1/balance/charges", Some(&waiting), json!({"amount": "ten"}))
        .await
        .assert_problem(422, "invalid_input");
    server.get("/api/v1/balance", None).await.assert_problem(401, "missing_token");
    server.clock.advance_secs(60);
    server.get("/api/v1/balance", Some(&waiting)).await.assert_problem(401, "token_expired");
}

pub async fn idempotent_replays_return_the_original_status_and_body<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let alice = server.admitted("alice").await;
    let seat = server.seat_id(&alice, 0).await;
    let held = server.post_keyed("/api/v1/reservations", &alice, "hold-1", json!({"seatId": seat})).await;
    let replay = server.post_keyed("/api/v1/reservations", &alice, "hold-1", json!({"seatId": seat})).await;
    assert_eq!((held.status, &held.body), (replay.status, &replay.body));
    assert_eq!(held.status, 201);
    let other = server.seat_id(&alice, 1).await;
    server
        .post_keyed("/api/v1/reservations", &alice, "hold-1", json!({"seatId": other}))
        .await
        .assert_problem(422, "idempotency_key_reused");

    let charged =
        server.post_keyed("/api/v1/balance/charges", &alice, "charge-1", json!({"amount": 50_000})).await;
    let replay =
        server.post_keyed("/api/v1/balance/charges", &alice, "charge-1", json!({"amount": 50_000})).await;
    assert_eq!((charged.status, &charged.body), (replay.status, &replay.body));
    server
        .post_keyed("/api/v1/balance/charges", &alice, "charge-1", json!({"amount": 7}))
        .await
        .assert_problem(422, "idempotency_key_reused");
    assert_eq!(server.get("/api/v1/balance", Some(&alice)).await.body["balance"], 50_000, "charged once");

    let id = held.body["reservationId"].as_str().unwrap();
    let paid = server.post_keyed("/api/v1/payments", &alice, "pay-1", json!({"reservationId": id})).await;
    assert_eq!(paid.status, 201);
    let replay = server.post_keyed("/api/v1/payments", &alice, "pay-1", json!({"reservationId": id})).await;
    assert_eq!(
        (paid.status, &paid.body),
        (replay.status, &replay.body),
        "the answer survives the token's expiry"
    );
    let bad_key = server
        .call(
            Method::POST,
            "/api/v1/payments",
            Some(&alice),
            &[("Idempotency-Key", "has space")],
            Some(json!({"reservationId": id})),
        )
        .await;
    bad_key.assert_problem(422, "invalid_input");
}

pub async fn header_auth_trusts_the_gateway_header_only<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, AuthMode::Header, open_queue()).await;
    let path = "/api/v1/queue/tokens";
    let body = json!({"concertId": server.demo.to_string()});
    server
        .post(path, None, json!({"userId": "alice", "concertId": server.demo.to_string()}))
        .await
        .assert_problem(401, "unauthenticated");
    let ok = server.call(Method::POST, path, None, &[("X-User-Id", "alice")], Some(body.clone())).await;
    assert_eq!((ok.status.as_u16(), ok.body["userId"].as_str()), (201, Some("alice")));
    let claimed = json!({"userId": "mallory", "concertId": server.demo.to_string()});
    server
        .call(Method::POST, path, None, &[("X-User-Id", "alice")], Some(claimed))
        .await
        .assert_problem(403, "identity_mismatch");
    server
        .call(Method::POST, path, None, &[("X-User-Id", "bad id")], Some(body))
        .await
        .assert_problem(401, "unauthenticated");
}

pub async fn jwt_auth_verifies_signature_and_expiry<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let secret = "a-secret-of-at-least-thirty-two-bytes!";
    let mode: AuthMode = format!("jwt-hs256:{secret}").parse().unwrap();
    assert!("jwt-hs256:short".parse::<AuthMode>().is_err(), "weak secrets are refused");
    let server = spawn(fresh().await, mode, open_queue()).await;
    let now = chrono::Utc::now().timestamp();
    let sign = |sub: &str, exp: i64, key: &str| {
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": exp}),
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let path = "/api/v1/queue/tokens";
    let body = json!({"concertId": server.demo.to_string()});
    let valid = sign("alice", now + 600, secret);
    let ok =
        server.call(Method::POST, path, None, &[("X-User-Token", valid.as_str())], Some(body.clone())).await;
    assert_eq!((ok.status.as_u16(), ok.body["userId"].as_str()), (201, Some("alice")));
    let forged = sign("alice", now + 600, "another-secret-of-at-least-32-bytes!!");
    server
        .call(Method::POST, path, None, &[("X-User-Token", forged.as_str())], Some(body.clone()))
        .await
        .assert_problem(401, "unauthenticated");
    let expired = sign("alice", now - 600, secret);
    server
        .call(Method::POST, path, None, &[("X-User-Token", expired.as_str())], Some(body.clone()))
        .await
        .assert_problem(401, "unauthenticated");
    let mut tampered = valid.clone();
    tampered.insert(tampered.find('.').unwrap() + 1, 'x');
    server
        .call(Method::POST, path, None, &[("X-User-Token", tampered.as_str())], Some(body.clone()))
        .await
        .assert_problem(401, "unauthenticated");
    server
        .post(path, None, json!({"userId": "alice", "concertId": server.demo.to_string()}))
        .await
        .assert_problem(401, "unauthenticated");
    let claimed = json!({"userId": "mallory", "concertId": server.demo.to_string()});
    server
        .call(Method::POST, path, None, &[("X-User-Token", valid.as_str())], Some(claimed))
        .await
        .assert_problem(403, "identity_mismatch");
}

pub async fn admin_routes_need_the_key_and_are_off_without_one<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let path = "/api/v1/admin/concerts";
    let body = json!({
        "title": "Night Show",
        "schedules": [{"startsAt": "2031-05-01T19:00:00Z", "seatCount": 10, "price": 1_000}],
        "queue": {"maxActive": 5, "admitBatch": 2, "admitIntervalMs": 500},
    });
    server.post(path, None, body.clone()).await.assert_problem(401, "admin_key_required");
    server
        .call(Method::POST, path, None, &[("X-Admin-Key", "wrong")], Some(body.clone()))
        .await
        .assert_problem(401, "admin_key_required");
    let created = server.call(Method::POST, path, None, &[("X-Admin-Key", ADMIN_KEY)], Some(body)).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["title"], "Night Show");
    assert_eq!(created.body["schedules"][0]["seatCount"], 10);
    assert_eq!(created.body["schedules"][0]["price"], 1_000);
    assert_eq!(created.body["schedules"][0]["startsAt"], "2031-05-01T19:00:00.000Z");
    assert_eq!(
        (created.body["queue"]["maxActive"].as_u64(), created.body["queue"]["activeTtlSecs"].as_u64()),
        (Some(5), Some(300))
    );
    let listed = server.get("/api/v1/concerts", None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 2);
    let invalid = json!({"title": "", "schedules": []});
    server
        .call(Method::POST, path, None, &[("X-Admin-Key", ADMIN_KEY)], Some(invalid))
        .await
        .assert_problem(422, "invalid_input");
    let negative = json!({"title": "x", "schedules": [{"startsAt": "2031-05-01T19:00:00Z", "seatCount": 1, "price": -1}]});
    server
        .call(Method::POST, path, None, &[("X-Admin-Key", ADMIN_KEY)], Some(negative))
        .await
        .assert_problem(422, "invalid_input");

    // Without a configured key the admin routes do not exist.
    let stores = fresh().await;
    let service = ticketing_core::Ticketing::new(
        stores.0,
        stores.1,
        ticketing_core::SystemClock,
        ticketing_core::Config::default(),
    );
    let state = ticketing_http::AppState::new(service, none(), None, std::time::Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(ticketing_http::serve(listener, Arc::new(state), std::future::pending()));
    let answer = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    task.abort();
}

pub async fn admin_reports_list_sales_and_accounts<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let alice = server.ask("alice").await;
    let bob = server.ask("bob").await;
    let (alice_line, bob_line) = (alice.body["lineNumber"].as_u64(), bob.body["lineNumber"].as_u64());
    assert!(alice_line.is_some() && alice_line < bob_line, "line numbers follow arrival: {alice:?} {bob:?}");
    assert!(alice.body["admittedAt"].is_null());
    let alice = alice.body["token"].as_str().unwrap().to_owned();
    let bob = bob.body["token"].as_str().unwrap().to_owned();
    server.tick().await;
    let active = server.get("/api/v1/queue/tokens/current", Some(&alice)).await;
    assert!(active.body["lineNumber"].is_null());
    let admitted_at = active.body["admittedAt"].as_str().unwrap().to_owned();
    assert!(admitted_at.ends_with('Z'), "{active:?}");

    let seats = server.seats(&alice).await;
    let (sold, held) = (seats[4]["seatId"].as_str().unwrap(), seats[5]["seatId"].as_str().unwrap());
    let reservation = server.hold(&alice, sold).await.body["reservationId"].as_str().unwrap().to_owned();
    assert_eq!(server.hold(&bob, held).await.status, 201);
    assert_eq!(server.charge(&alice, 60_000).await.status, 200);
    let paid = server.pay(&alice, &reservation).await;
    assert_eq!(paid.status, 201, "{paid:?}");

    let path = format!("/api/v1/admin/concerts/{}/sales", server.demo);
    server.get(&path, None).await.assert_problem(401, "admin_key_required");
    let sales = server.call(Method::GET, &path, None, &admin, None).await;
    assert_eq!(sales.status, 200, "{sales:?}");
    assert_eq!(sales.body["concertId"], server.demo.to_string());
    let schedules = sales.body["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 3);
    let first = schedules[0]["seats"].as_array().unwrap();
    assert_eq!(first.len(), 50);
    let booked = &first[4];
    assert_eq!((booked["seatId"].as_str(), booked["status"].as_str()), (Some(sold), Some("BOOKED")));
    assert_eq!(booked["reservationId"], reservation.as_str());
    assert_eq!(booked["paymentId"], paid.body["paymentId"]);
    assert_eq!((booked["userId"].as_str(), booked["paidBy"].as_str()), (Some("alice"), Some("alice")));
    assert_eq!(booked["amount"], 50_000);
    assert!(booked["paidAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!((first[5]["status"].as_str(), first[5]["paymentId"].is_null()), (Some("HELD"), true));
    assert_eq!((first[0]["status"].as_str(), first[0]["reservationId"].is_null()), (Some("AVAILABLE"), true));
    let booked_anywhere = schedules
        .iter()
        .flat_map(|s| s["seats"].as_array().unwrap())
        .filter(|seat| seat["status"] == "BOOKED")
        .count();
    assert_eq!(booked_anywhere, 1);

    let figures = format!("/api/v1/admin/concerts/{}/figures", server.demo);
    server.get(&figures, None).await.assert_problem(401, "admin_key_required");
    let figures = server.call(Method::GET, &figures, None, &admin, None).await;
    assert_eq!(figures.status, 200, "{figures:?}");
    let count = |name: &str| figures.body[name].as_i64();
    assert_eq!(
        [count("seats"), count("held"), count("sold"), count("available"), count("revenue")],
        [Some(150), Some(1), Some(1), Some(148), Some(50_000)],
        "{figures:?}"
    );
    assert_eq!(
        (count("waiting"), count("active")),
        (Some(0), Some(1)),
        "alice's token expired with her payment"
    );
    assert_eq!(figures.body["paused"], false);
    let unknown = format!("/api/v1/admin/concerts/{}/figures", uuid::Uuid::new_v4());
    server.call(Method::GET, &unknown, None, &admin, None).await.assert_problem(404, "concert_not_found");
    let unknown = format!("/api/v1/admin/concerts/{}/sales", uuid::Uuid::new_v4());
    server.call(Method::GET, &unknown, None, &admin, None).await.assert_problem(404, "concert_not_found");

    let account = server.call(Method::GET, "/api/v1/admin/users/alice/account", None, &admin, None).await;
    assert_eq!(
        (account.status.as_u16(), account.body["balance"].as_i64()),
        (200, Some(10_000)),
        "{account:?}"
    );
    let ledger = account.body["ledger"].as_array().unwrap();
    assert_eq!(ledger.len(), 2);
    assert_eq!((ledger[0]["kind"].as_str(), ledger[0]["amount"].as_i64()), (Some("CHARGE"), Some(60_000)));
    assert_eq!(
        (ledger[1]["kind"].as_str(), ledger[1]["balanceAfter"].as_i64()),
        (Some("PAYMENT"), Some(10_000))
    );
    assert_eq!(ledger[1]["paymentId"], paid.body["paymentId"]);
    let nobody = server.call(Method::GET, "/api/v1/admin/users/nobody/account", None, &admin, None).await;
    assert_eq!(
        (nobody.body["balance"].as_i64(), nobody.body["ledger"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    let long = format!("/api/v1/admin/users/{}/account", "x".repeat(300));
    server.call(Method::GET, &long, None, &admin, None).await.assert_problem(422, "invalid_input");
    server.get("/api/v1/admin/users/alice/account", None).await.assert_problem(401, "admin_key_required");
}

pub async fn operations_routes_answer<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    assert_eq!(server.get("/healthz", None).await.status, 200);
    assert_eq!(server.get("/readyz", None).await.status, 200);
    let alice = server.admitted("alice").await;
    let seat = server.seat_id(&alice, 0).await;
    server.hold(&alice, &seat).await;
    let metrics = server.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    for name in [
        "ticketing_http_requests_total",
        "ticketing_http_request_duration_seconds_bucket",
        "ticketing_holds_total",
    ] {
        assert!(text.contains(name), "{name} in /metrics");
    }
    assert!(text.contains("route=\"/api/v1/reservations\""), "requests are labelled by route");
    let openapi = server.get("/openapi.json", None).await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/queue/tokens",
        "/api/v1/payments",
        "/api/v1/reservations/{reservationId}",
        "/api/v1/admin/concerts",
    ] {
        assert!(openapi.body["paths"][path].is_object(), "{path} documented");
    }
    // The request schemas state the limits the server applies (from the same constants).
    {
        use ticketing_core::limits::{
            ADMIT_BATCH_LIMIT, ADMIT_INTERVAL_MS_MIN, CHARGE_MAX_POINTS, DURATION_SECS_MAX, MAX_ACTIVE_LIMIT,
            MAX_SEATS_PER_BUYER_LIMIT, PRICE_MAX_POINTS, SCHEDULES_PER_CONCERT_MAX, SEATS_PER_SCHEDULE_MAX,
            TITLE_MAX_LEN, USER_ID_MAX_LEN,
        };
        let schemas = &openapi.body["components"]["schemas"];
        let field = |schema: &str, name: &str, key: &str| schemas[schema]["properties"][name][key].clone();
        let limits: [(&str, &str, &str, serde_json::Value); 17] = [
            ("ChargeRequest", "amount", "minimum", 1.into()),
            ("ChargeRequest", "amount", "maximum", CHARGE_MAX_POINTS.into()),
            ("NewScheduleRequest", "seatCount", "maximum", SEATS_PER_SCHEDULE_MAX.into()),
            ("NewScheduleRequest", "price", "maximum", PRICE_MAX_POINTS.into()),
            ("NewConcertRequest", "schedules", "minItems", 1.into()),
            ("NewConcertRequest", "schedules", "maxItems", SCHEDULES_PER_CONCERT_MAX.into()),
            ("NewConcertRequest", "title", "maxLength", TITLE_MAX_LEN.into()),
            ("IssueTokenRequest", "userId", "maxLength", USER_ID_MAX_LEN.into()),
            ("IssueTokenRequest", "concertId", "format", "uuid".into()),
            ("HoldRequest", "seatId", "format", "uuid".into()),
            ("PaymentRequest", "reservationId", "format", "uuid".into()),
            ("QueueRequest", "maxActive", "maximum", MAX_ACTIVE_LIMIT.into()),
            ("QueueRequest", "admitBatch", "maximum", ADMIT_BATCH_LIMIT.into()),
            ("NewConcertRequest", "maxSeatsPerBuyer", "maximum", MAX_SEATS_PER_BUYER_LIMIT.into()),
            ("NewConcertRequest", "maxSeatsPerBuyer", "minimum", 1.into()),
            ("QueueRequest", "admitIntervalMs", "minimum", ADMIT_INTERVAL_MS_MIN.into()),
            ("QueueRequest", "waitingIdleSecs", "maximum", DURATION_SECS_MAX.into()),
        ];
        for (schema, name, key, value) in limits {
            assert_eq!(field(schema, name, key), value, "{schema}.{name}.{key}");
        }
        let interval_max = field("QueueRequest", "admitIntervalMs", "maximum");
        assert_eq!(interval_max, serde_json::Value::from(DURATION_SECS_MAX * 1_000));
    }
    // The door's 429 and leaving the line are documented.
    let tokens = &openapi.body["paths"]["/api/v1/queue/tokens"]["post"]["responses"]["429"];
    assert!(
        tokens["content"]["application/problem+json"].is_object()
            && tokens["headers"]["Retry-After"].is_object(),
        "429 documented with Retry-After: {tokens}"
    );
    let leave = &openapi.body["paths"]["/api/v1/queue/tokens/current"]["delete"]["responses"];
    assert!(leave["204"].is_object() && leave["409"].is_object(), "{leave}");
    // Every API operation documents the 503 it may answer, as a problem with Retry-After.
    let paths = openapi.body["paths"].as_object().unwrap();
    for (path, item) in paths.iter().filter(|(path, _)| path.starts_with("/api/")) {
        for (method, operation) in item.as_object().unwrap() {
            let unavailable = &operation["responses"]["503"];
            assert!(
                unavailable["content"]["application/problem+json"].is_object()
                    && unavailable["headers"]["Retry-After"].is_object(),
                "{method} {path} documents its 503: {unavailable}"
            );
            // A problem is documented as what it is; an operation that reads a body documents
            // what a wrong body gets.
            for (status, response) in operation["responses"].as_object().unwrap() {
                let content = response["content"].as_object().cloned().unwrap_or_default();
                for (media, body) in &content {
                    let problem = body["schema"]["$ref"].as_str().is_some_and(|r| r.ends_with("/Problem"));
                    assert_eq!(
                        problem,
                        media == "application/problem+json",
                        "{method} {path} {status}: {media} with {body}"
                    );
                }
            }
            if operation["requestBody"].is_object() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        operation["responses"][status]["content"]["application/problem+json"].is_object(),
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
    }
}

pub async fn client_mistakes_are_never_server_errors<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let url = format!("{}/api/v1/queue/tokens", server.base);
    let client = &server.client;
    let malformed =
        client.post(&url).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.json::<serde_json::Value>().await.unwrap()["code"], "malformed_json");
    let untyped = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(untyped.status(), 415);
    let huge =
        format!("{{\"userId\": \"{}\", \"concertId\": \"x\"}}", "a".repeat(ticketing_http::BODY_LIMIT_BYTES));
    let too_large =
        client.post(&url).header("content-type", "application/json").body(huge).send().await.unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(too_large.json::<serde_json::Value>().await.unwrap()["code"], "payload_too_large");
    let unknown_field = json!({"userId": "a", "concertId": server.demo.to_string(), "vip": true});
    server.post("/api/v1/queue/tokens", None, unknown_field).await.assert_problem(422, "invalid_input");
    server.get("/api/v1/nowhere", None).await.assert_problem(404, "not_found");
    server
        .call(Method::PUT, "/api/v1/concerts", None, &[], None)
        .await
        .assert_problem(405, "method_not_allowed");
}

pub async fn two_hundred_concurrent_holds_of_one_seat_have_one_winner<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = Arc::new(spawn(fresh().await, none(), open_queue()).await);
    let mut tokens = Vec::new();
    for i in 0..200 {
        tokens.push(server.ask(&format!("buyer{i}")).await.body["token"].as_str().unwrap().to_owned());
    }
    server.tick().await;
    let seat = server.seat_id(&tokens[0], 7).await;
    let attempts: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let server = Arc::clone(&server);
            let seat = seat.clone();
            tokio::spawn(async move { server.hold(&token, &seat).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        let answer = attempt.await.unwrap();
        if answer.status != 201 {
            answer.assert_problem(409, "seat_unavailable");
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1);
    let distinct: HashSet<u16> = statuses.into_iter().collect();
    assert_eq!(distinct, HashSet::from([201, 409]));
}

pub async fn background_tasks_admit_and_stop_on_shutdown<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks = ticketing_http::spawn_background(
        Arc::clone(&server.state),
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(5),
        stopped,
    );
    let token = server.ask("alice").await.body["token"].as_str().unwrap().to_owned();
    let mut status = String::new();
    // Bounded: the ticker runs every 5 ms; a few hundred polls is far more than it needs.
    for _ in 0..400 {
        status = server.get("/api/v1/queue/tokens/current", Some(&token)).await.body["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if status == "ACTIVE" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(status, "ACTIVE", "the ticker admitted the token");
    stop.send(true).unwrap();
    for task in tasks {
        task.await.expect("background task stops cleanly");
    }
}

pub async fn a_token_acts_only_for_its_own_concert<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let other = server
        .state
        .service
        .create_concert(&ticketing_core::catalog::NewConcert {
            title: "Other".into(),
            schedules: vec![ticketing_core::catalog::NewSchedule {
                starts_at: chrono::DateTime::from_timestamp(1_960_000_000, 0).unwrap(),
                seat_count: 1,
                price: ticketing_core::ids::Points::new(5).unwrap(),
            }],
            queue: open_queue(),
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .unwrap();
    let here = server.admitted("alice").await;
    let asked = server
        .post(
            "/api/v1/queue/tokens",
            None,
            json!({"userId": "alice", "concertId": other.concert.id.to_string()}),
        )
        .await;
    let there = asked.body["token"].as_str().unwrap().to_owned();
    server.state.service.admission_tick(other.concert.id).await.unwrap();
    server.charge(&here, 50_000).await;
    let seat = server.seat_id(&here, 0).await;
    let id = server.hold(&here, &seat).await.body["reservationId"].as_str().unwrap().to_owned();

    server.pay(&there, &id).await.assert_problem(403, "wrong_concert");
    server
        .get(&format!("/api/v1/reservations/{id}"), Some(&there))
        .await
        .assert_problem(403, "wrong_concert");
    server.delete(&format!("/api/v1/reservations/{id}"), &there).await.assert_problem(403, "wrong_concert");
    let status = server.get("/api/v1/queue/tokens/current", Some(&there)).await;
    assert_eq!(status.body["status"], "ACTIVE", "the other concert's token is untouched: {status:?}");
    assert_eq!(server.get("/api/v1/balance", Some(&here)).await.body["balance"], 50_000, "nothing paid");
    assert_eq!(server.pay(&here, &id).await.status, 201, "the concert's own token pays");
}

pub async fn a_held_seat_can_be_paid_for_its_whole_hold_time<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let queue = ticketing_core::catalog::QueueSettings { active_ttl_secs: 100, ..open_queue() };
    let server = spawn(fresh().await, none(), queue).await;
    let alice = server.admitted("alice").await;
    let seat = server.seat_id(&alice, 0).await;
    server.clock.advance_secs(60);
    let held = server.hold(&alice, &seat).await;
    assert_eq!(held.status, 201, "{held:?}");
    let expires: chrono::DateTime<chrono::Utc> = held.body["expiresAt"].as_str().unwrap().parse().unwrap();
    let now = ticketing_core::Clock::now(&server.clock);
    assert_eq!(expires - now, chrono::Duration::seconds(300), "five minutes, not forty seconds");
    let id = held.body["reservationId"].as_str().unwrap().to_owned();
    // Past the token's active time (100 s), within the hold's.
    server.clock.advance_secs(200);
    server.hold(&alice, &seat).await.assert_problem(401, "token_expired");
    assert_eq!(server.get(&format!("/api/v1/reservations/{id}"), Some(&alice)).await.body["status"], "HELD");
    assert_eq!(server.charge(&alice, 50_000).await.status, 200);
    let paid = server.pay(&alice, &id).await;
    assert_eq!(paid.status, 201, "{paid:?}");
}

pub async fn every_hold_of_a_token_can_be_paid<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let config = ticketing_core::Config { holds_per_token: 2, ..ticketing_core::Config::default() };
    let server = crate::harness::spawn_with(fresh().await, none(), open_queue(), config).await;
    let alice = server.admitted("alice").await;
    server.charge(&alice, 100_000).await;
    let mut ids = Vec::new();
    for index in 0..2 {
        let seat = server.seat_id(&alice, index).await;
        ids.push(server.hold(&alice, &seat).await.body["reservationId"].as_str().unwrap().to_owned());
    }
    assert_eq!(server.pay(&alice, &ids[0]).await.status, 201);
    let status = server.get("/api/v1/queue/tokens/current", Some(&alice)).await;
    assert_eq!(status.body["status"], "ACTIVE", "a hold is left to pay: {status:?}");
    let second = server.pay(&alice, &ids[1]).await;
    assert_eq!((second.status.as_u16(), second.body["balance"].as_i64()), (201, Some(0)), "{second:?}");
    server.get("/api/v1/queue/tokens/current", Some(&alice)).await.assert_problem(401, "token_expired");
}

pub async fn racing_payments_of_one_hold_lose_as_already_paid<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = Arc::new(spawn(fresh().await, none(), open_queue()).await);
    let alice = server.admitted("alice").await;
    server.charge(&alice, 50_000).await; // Enough for one.
    let seat = server.seat_id(&alice, 0).await;
    let id = server.hold(&alice, &seat).await.body["reservationId"].as_str().unwrap().to_owned();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let (server, barrier, alice, id) =
                (Arc::clone(&server), Arc::clone(&barrier), alice.clone(), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let key = format!("race-{i}");
                let answer =
                    server.post_keyed("/api/v1/payments", &alice, &key, json!({"reservationId": id})).await;
                (key, answer)
            })
        })
        .collect();
    let mut paid = 0;
    for racer in racers {
        let (key, answer) = racer.await.unwrap();
        if answer.status == 201 {
            paid += 1;
            continue;
        }
        answer.assert_problem(409, "already_paid");
        let replay = server.post_keyed("/api/v1/payments", &alice, &key, json!({"reservationId": id})).await;
        replay.assert_problem(409, "already_paid");
    }
    assert_eq!(paid, 1);
}

pub async fn the_eta_stays_bounded_while_the_line_waits_on_capacity<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let queue = ticketing_core::catalog::QueueSettings { max_active: 3, admit_batch: 1, ..open_queue() };
    let server = spawn(fresh().await, none(), queue).await;
    let mut tokens = Vec::new();
    for user in ["a", "b", "c", "d", "e"] {
        tokens.push(server.ask(user).await.body["token"].as_str().unwrap().to_owned());
    }
    // One a second is measured while a, b and c are admitted; then capacity is full and nobody
    // leaves. Three places free at least every 300 s (the active time), so d and e wait at most
    // that long, however long the measured rate has been falling.
    server.tick().await;
    for _ in 0..2 {
        server.clock.advance_secs(1);
        server.tick().await;
    }
    for _ in 0..40 {
        server.clock.advance_secs(1);
        server.tick().await;
        for (place, token) in tokens[3..].iter().enumerate() {
            let status = server.get("/api/v1/queue/tokens/current", Some(token)).await;
            assert_eq!(status.body["status"], "WAITING", "{status:?}");
            assert_eq!(status.body["position"].as_u64(), Some(place as u64 + 1));
            let eta = status.body["etaSeconds"].as_u64().expect("an estimate");
            assert!((1..=300).contains(&eta), "eta {eta} s at place {}", place + 1);
            let after: u64 = status.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=20).contains(&after), "Retry-After {after}");
        }
    }
}

/// The store calls each request makes, once the process has cached the concert: (queue store,
/// booking store). The README's round-trip table states the same numbers.
pub const CALL_BUDGET: &[(&str, u64, u64)] = &[
    ("join (new token)", 1, 0),
    ("join again while waiting", 1, 0),
    ("poll while waiting", 1, 0),
    ("poll while active", 1, 0),
    ("schedules", 1, 1),
    ("seat list", 1, 1),
    ("hold", 1, 1),
    ("balance", 1, 1),
    ("charge", 1, 1),
    ("pay", 2, 1),
    ("hold with a key", 1, 1),
    ("charge with a key", 1, 1),
    ("pay with a key", 2, 1),
    ("pay replayed with its key", 1, 1),
    ("leave the line", 2, 1),
];

pub async fn requests_keep_to_their_store_call_budget<
    Q: QueueStore + Clone,
    B: BookingStore + Clone,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    use ticketing_core::store::counting::Counting;
    let (queue, booking, guard) = fresh().await;
    let (queue, booking) = (Counting::new(queue), Counting::new(booking));
    let server = spawn((queue.clone(), booking.clone(), guard), none(), open_queue()).await;
    // Warm the process's catalog cache: the first request for a concert reads it once (its
    // schedules, a schedule's seat map, and where the store keeps seat changes, every seat's
    // state; where it keeps none, the first read learns so).
    let warm = server.admitted("warm-up").await;
    server.seats(&warm).await;
    server.seats(&warm).await;
    let mut seen = Vec::new();
    let mut measure = |name: &'static str| {
        let (q, b) = (queue.take(), booking.take());
        seen.push((name, q.total(), b.total(), format!("{:?} / {:?}", q.by_method(), b.by_method())));
    };
    queue.take();
    booking.take();
    let alice = server.ask("alice").await.body["token"].as_str().unwrap().to_owned();
    measure("join (new token)");
    server.ask("alice").await;
    measure("join again while waiting");
    server.get("/api/v1/queue/tokens/current", Some(&alice)).await;
    measure("poll while waiting");
    server.tick().await;
    queue.take();
    booking.take();
    server.get("/api/v1/queue/tokens/current", Some(&alice)).await;
    measure("poll while active");
    let schedules = server.get(&format!("/api/v1/concerts/{}/schedules", server.demo), Some(&alice)).await;
    measure("schedules");
    let schedule = schedules.body[0]["scheduleId"].as_str().unwrap().to_owned();
    let seats = server.get(&format!("/api/v1/schedules/{schedule}/seats"), Some(&alice)).await;
    measure("seat list");
    let seat = seats.body[0]["seatId"].as_str().unwrap().to_owned();
    let held = server.hold(&alice, &seat).await;
    assert_eq!(held.status, 201);
    measure("hold");
    server.get("/api/v1/balance", Some(&alice)).await;
    measure("balance");
    server.charge(&alice, 50_000).await;
    measure("charge");
    let paid = server.pay(&alice, held.body["reservationId"].as_str().unwrap()).await;
    assert_eq!(paid.status, 201);
    measure("pay");
    // A key costs nothing more: the step reads what is stored under it with its other inputs.
    let bob = server.admitted("bob").await;
    queue.take();
    booking.take();
    let seat = seats.body[1]["seatId"].as_str().unwrap().to_owned();
    let held = server.post_keyed("/api/v1/reservations", &bob, "hold-1", json!({"seatId": seat})).await;
    assert_eq!(held.status, 201);
    measure("hold with a key");
    let charged =
        server.post_keyed("/api/v1/balance/charges", &bob, "charge-1", json!({"amount": 50_000})).await;
    assert_eq!(charged.status, 200, "{:?}", charged.body);
    measure("charge with a key");
    let body = json!({"reservationId": held.body["reservationId"]});
    let paid = server.post_keyed("/api/v1/payments", &bob, "pay-1", body.clone()).await;
    assert_eq!(paid.status, 201);
    measure("pay with a key");
    let replayed = server.post_keyed("/api/v1/payments", &bob, "pay-1", body).await;
    assert_eq!(replayed.body, paid.body);
    measure("pay replayed with its key");
    let carol = server.ask("carol").await.body["token"].as_str().unwrap().to_owned();
    queue.take();
    booking.take();
    assert_eq!(server.delete("/api/v1/queue/tokens/current", &carol).await.status, 204);
    measure("leave the line");
    let expected: Vec<_> = CALL_BUDGET.iter().map(|&(name, q, b)| (name, q, b)).collect();
    let actual: Vec<_> = seen.iter().map(|(name, q, b, _)| (*name, *q, *b)).collect();
    assert_eq!(
        actual,
        expected,
        "calls by method: {:#?}",
        seen.iter().map(|s| (s.0, &s.3)).collect::<Vec<_>>()
    );
}

/// Two servers on one database (each with its own caches): whatever one answered, a hold, a
/// payment or a release, the other's next seat list shows.
pub async fn a_seat_list_is_fresh_on_every_node<
    Q: QueueStore + Clone,
    B: BookingStore + Clone,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let one = spawn(fresh().await, none(), open_queue()).await;
    let two = spawn_node(&one).await;
    let alice = one.admitted("alice").await;
    let bob = one.admitted("bob").await;
    let status = |seats: &[serde_json::Value], i: usize| seats[i]["status"].as_str().unwrap().to_owned();
    // Both nodes have listed (and keep the seat map) before anything is held.
    for node in [&one, &two] {
        assert!(node.seats(&alice).await.iter().all(|s| s["status"] == "AVAILABLE"));
    }

    async fn available<Q: QueueStore, B: BookingStore>(
        node: &crate::harness::Server<Q, B>,
        token: &str,
    ) -> u64 {
        let path = format!("/api/v1/concerts/{}/schedules", node.demo);
        node.get(&path, Some(token)).await.body[0]["availableSeats"].as_u64().unwrap()
    }
    let before = available(&two, &bob).await;

    let seat = one.seat_id(&alice, 3).await;
    let held = one.hold(&alice, &seat).await;
    assert_eq!(held.status, 201, "{held:?}");
    assert_eq!(status(&two.seats(&bob).await, 3), "HELD", "a hold answered by one node shows on the other");
    assert_eq!(available(&two, &bob).await, before - 1, "and in its schedule's availability");

    let reservation = held.body["reservationId"].as_str().unwrap().to_owned();
    assert_eq!(two.charge(&alice, 50_000).await.status, 200);
    let paid = two.pay(&alice, &reservation).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    assert_eq!(
        status(&one.seats(&bob).await, 3),
        "BOOKED",
        "a payment answered by the other shows on the first"
    );

    let other = two.seat_id(&bob, 7).await;
    let held = two.hold(&bob, &other).await;
    assert_eq!(held.status, 201, "{held:?}");
    assert_eq!(status(&one.seats(&bob).await, 7), "HELD");
    let released = two
        .delete(&format!("/api/v1/reservations/{}", held.body["reservationId"].as_str().unwrap()), &bob)
        .await;
    assert_eq!(released.status, 204, "{released:?}");
    let seats = one.seats(&bob).await;
    assert_eq!((status(&seats, 7), status(&seats, 3)), ("AVAILABLE".to_owned(), "BOOKED".to_owned()));
    assert_eq!((available(&one, &bob).await, available(&two, &bob).await), (before - 1, before - 1));
}

/// Buyers hold and release at once on one node while the other lists: each answered hold shows
/// in the holder's next list from the other node, and each answered release too, however that
/// node's reads of what changed interleave with the writes and with each other.
pub async fn a_seat_list_is_fresh_on_every_node_while_holds_race<
    Q: QueueStore + Clone,
    B: BookingStore + Clone,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    const BUYERS: usize = 16;
    const ROUNDS: usize = 5;
    let one = Arc::new(spawn(fresh().await, none(), open_queue()).await);
    let two = Arc::new(spawn_node(&one).await);
    let mut tokens = Vec::new();
    for i in 0..BUYERS {
        tokens.push(one.ask(&format!("buyer{i}")).await.body["token"].as_str().unwrap().to_owned());
    }
    one.tick().await;
    let seats = two.seats(&tokens[0]).await;
    assert!(seats.len() >= BUYERS, "the demo schedule has a seat for every buyer");
    let buyers: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let (one, two) = (Arc::clone(&one), Arc::clone(&two));
            let seat = seats[i]["seatId"].as_str().unwrap().to_owned();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let held = one.hold(&token, &seat).await;
                    assert_eq!(held.status, 201, "{held:?}");
                    let seen = two.seats(&token).await;
                    assert_eq!(
                        seen[i]["status"], "HELD",
                        "buyer {i}, round {round}: the hold shows on the other node"
                    );
                    let reservation = held.body["reservationId"].as_str().unwrap();
                    let released = one.delete(&format!("/api/v1/reservations/{reservation}"), &token).await;
                    assert_eq!(released.status, 204, "{released:?}");
                    let seen = two.seats(&token).await;
                    assert_eq!(
                        seen[i]["status"], "AVAILABLE",
                        "buyer {i}, round {round}: the release shows too"
                    );
                }
            })
        })
        .collect();
    for buyer in buyers {
        buyer.await.unwrap();
    }
}

/// An operator pauses the sale on one node, changes its settings and resumes it on the other:
/// while paused no node admits anybody and the line keeps its places; each change answers the
/// sale with its version; bad changes are refused and change nothing; the audit trail names who
/// made each change.
pub async fn an_operator_pauses_changes_and_resumes_the_sale_on_every_node<
    Q: QueueStore + Clone,
    B: BookingStore + Clone,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let one = spawn(fresh().await, none(), open_queue()).await;
    let two = spawn_node(&one).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let sale = |action: &str| format!("/api/v1/admin/concerts/{}/{action}", one.demo);
    // Node two knows the concert, unpaused, before the pause: only its tick's read can tell it.
    assert!(!two.state.service.concert(one.demo).await.unwrap().paused);
    async fn status<Q: QueueStore, B: BookingStore>(
        node: &crate::harness::Server<Q, B>,
        token: &str,
    ) -> String {
        node.get("/api/v1/queue/tokens/current", Some(token)).await.body["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    one.post(&sale("pause"), None, json!({})).await.assert_problem(401, "admin_key_required");
    let as_ops = [("X-Admin-Key", ADMIN_KEY), ("X-Operator", "ops")];
    let unnamed = [("X-Admin-Key", ADMIN_KEY), ("X-Operator", "ops desk")];
    one.call(Method::POST, &sale("pause"), None, &unnamed, None).await.assert_problem(422, "invalid_input");
    let paused = one.call(Method::POST, &sale("pause"), None, &as_ops, None).await;
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!((paused.body["paused"].as_bool(), paused.body["version"].as_u64()), (Some(true), Some(1)));
    assert_eq!(paused.body["concertId"], one.demo.to_string());
    let again = one.call(Method::POST, &sale("pause"), None, &admin, None).await;
    assert_eq!((again.status.as_u16(), again.body["version"].as_u64()), (200, Some(1)), "no change");

    let alice = two.ask("alice").await.body["token"].as_str().unwrap().to_owned();
    let bob = two.ask("bob").await.body["token"].as_str().unwrap().to_owned();
    two.tick().await;
    one.tick().await;
    assert_eq!(status(&two, &alice).await, "WAITING", "paused on the other node too");
    let polled = one.get("/api/v1/queue/tokens/current", Some(&bob)).await;
    assert_eq!(polled.body["position"], 2, "places kept: {polled:?}");
    assert!(polled.body["etaSeconds"].is_null(), "no estimate while paused: {polled:?}");

    let queue = sale("queue");
    let patch = |body: serde_json::Value| one.call(Method::PATCH, &queue, None, &admin, Some(body));
    let changed = patch(json!({"maxActive": 1})).await;
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(changed.body["queue"]["maxActive"], 1);
    assert_eq!(changed.body["queue"]["admitBatch"], open_queue().admit_batch, "the rest stays");
    assert_eq!((changed.body["paused"].as_bool(), changed.body["version"].as_u64()), (Some(true), Some(2)));
    patch(json!({"maxActive": 0})).await.assert_problem(422, "invalid_input");
    patch(json!({"maxSeats": 3})).await.assert_problem(422, "invalid_input");
    let unknown = format!("/api/v1/admin/concerts/{}/resume", uuid::Uuid::new_v4());
    two.call(Method::POST, &unknown, None, &admin, None).await.assert_problem(404, "concert_not_found");

    let as_lead = [("X-Admin-Key", ADMIN_KEY), ("X-Operator", "lead@ops")];
    let resumed = two.call(Method::POST, &sale("resume"), None, &as_lead, None).await;
    assert_eq!(resumed.status, 200, "{resumed:?}");
    assert_eq!((resumed.body["paused"].as_bool(), resumed.body["version"].as_u64()), (Some(false), Some(3)));
    assert_eq!(resumed.body["queue"]["maxActive"], 1, "the change made on the other node");
    one.tick().await;
    assert_eq!(status(&one, &alice).await, "ACTIVE");
    assert_eq!(status(&two, &bob).await, "WAITING", "the new capacity, one");

    one.get(&sale("actions"), None).await.assert_problem(401, "admin_key_required");
    let trail = two.call(Method::GET, &sale("actions"), None, &admin, None).await;
    assert_eq!(trail.status, 200, "{trail:?}");
    let seen: Vec<_> = trail
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let field = |name: &str| a[name].as_str().unwrap().to_owned();
            (
                field("operator"),
                field("action"),
                a["before"]["version"].as_u64(),
                a["after"]["version"].as_u64(),
            )
        })
        .collect();
    let expected = [("ops", "pause", 0, 1), ("admin", "queue", 1, 2), ("lead@ops", "resume", 2, 3)];
    let expected: Vec<_> =
        expected.iter().map(|(o, a, b, c)| ((*o).to_owned(), (*a).to_owned(), Some(*b), Some(*c))).collect();
    assert_eq!(seen, expected);
    let queue_change = &trail.body[1];
    assert_eq!(
        (
            queue_change["before"]["queue"]["maxActive"].as_u64(),
            queue_change["after"]["queue"]["maxActive"].as_u64()
        ),
        (Some(u64::from(open_queue().max_active)), Some(1))
    );
    assert!(queue_change["at"].as_str().unwrap().ends_with('Z'));
    two.call(Method::GET, &unknown.replace("resume", "actions"), None, &admin, None)
        .await
        .assert_problem(404, "concert_not_found");
}

/// A concert whose every seat is sold says so once the server has read its tally (the figures
/// route reads it; the sweeper does every round): a waiting token answers `soldOut` without
/// `Retry-After`, and a new join is refused with 409 `sold_out`.
pub async fn a_sold_out_concert_says_so<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let created = server
        .call(Method::POST, "/api/v1/admin/concerts", None, &admin, Some(json!({
            "title": "Tiny", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 1, "price": 10}],
            "queue": {"maxActive": 1},
        })))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let concert = created.body["concertId"].as_str().unwrap().to_owned();
    let ask = |user: &'static str| {
        server.post("/api/v1/queue/tokens", None, json!({"userId": user, "concertId": concert.clone()}))
    };
    let alice = ask("alice").await.body["token"].as_str().unwrap().to_owned();
    let bob = ask("bob").await.body["token"].as_str().unwrap().to_owned();
    let id = ticketing_core::ids::ConcertId::parse(&concert).unwrap();
    server.state.service.admission_tick(id).await.unwrap();
    let schedule = created.body["schedules"][0]["scheduleId"].as_str().unwrap();
    let seats = server.get(&format!("/api/v1/schedules/{schedule}/seats"), Some(&alice)).await;
    let seat = seats.body[0]["seatId"].as_str().unwrap();
    let held = server.hold(&alice, seat).await;
    assert_eq!(held.status, 201, "{held:?}");
    assert_eq!(server.charge(&alice, 10).await.status, 200);
    let paid = server.pay(&alice, held.body["reservationId"].as_str().unwrap()).await;
    assert_eq!(paid.status, 201, "{paid:?}");

    let waiting = server.get("/api/v1/queue/tokens/current", Some(&bob)).await;
    assert_eq!(
        (waiting.body["soldOut"].as_bool(), waiting.headers.contains_key("retry-after")),
        (Some(false), true)
    );
    let figures = server
        .call(Method::GET, &format!("/api/v1/admin/concerts/{concert}/figures"), None, &admin, None)
        .await;
    assert_eq!((figures.body["sold"].as_u64(), figures.body["seats"].as_u64()), (Some(1), Some(1)));
    let waiting = server.get("/api/v1/queue/tokens/current", Some(&bob)).await;
    assert_eq!(waiting.body["status"], "WAITING");
    assert_eq!(waiting.body["soldOut"], true, "{waiting:?}");
    assert!(!waiting.headers.contains_key("retry-after"), "not asked to poll again: {waiting:?}");
    ask("carol").await.assert_problem(409, "sold_out");
    let demo = server.ask("carol").await;
    assert_eq!(
        (demo.status.as_u16(), demo.body["soldOut"].as_bool()),
        (201, Some(false)),
        "other concerts sell on"
    );
}

pub async fn token_requests_past_a_budget_are_refused_429_with_retry_after<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    use std::num::NonZeroU32;
    use ticketing_core::door::DoorBudget;
    // Three requests a minute per address (then one every 20 s), two per user (one every 30 s).
    let door = DoorBudget { per_address: NonZeroU32::new(3), per_user: NonZeroU32::new(2) };
    let config = ticketing_core::Config::default();
    let server = crate::harness::spawn_at_door(
        fresh().await,
        none(),
        open_queue(),
        config,
        door,
        Some("x-forwarded-for"),
    )
    .await;
    let concert = server.demo.to_string();
    let server = &server;
    let ask = |user: &'static str, from: &'static str| {
        let body = json!({"userId": user, "concertId": concert.clone()});
        async move {
            server
                .call(Method::POST, "/api/v1/queue/tokens", None, &[("X-Forwarded-For", from)], Some(body))
                .await
        }
    };
    let here = "203.0.113.9";
    let first = ask("alice", here).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(ask("alice", here).await.status, 200, "asking again is counted too");
    let refused = ask("alice", here).await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("30"), "{refused:?}");
    assert!(refused.body["detail"].as_str().unwrap().contains("user"), "{refused:?}");
    // Alice's refusal spent nothing of the address: bob, behind it too, takes its third request.
    let bob = ask("bob", here).await;
    assert_eq!((bob.status.as_u16(), bob.body["position"].as_u64()), (201, Some(2)), "{bob:?}");
    let behind = ask("carol", here).await;
    behind.assert_problem(429, "rate_limited");
    assert_eq!(behind.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("20"), "{behind:?}");
    assert!(behind.body["detail"].as_str().unwrap().contains("address"), "{behind:?}");
    // The last entry of the header is the client (what the nearest proxy wrote); an entry a
    // client wrote before it is not.
    let elsewhere = ask("carol", "203.0.113.9, 198.51.100.4").await;
    assert_eq!(elsewhere.status, 201, "{elsewhere:?}");
    assert_eq!(elsewhere.body["position"], 3, "the refused request took no place in line");
    // A header without an address is not counted as the proxy's (the connection's) address.
    for user in ["dave", "erin", "frank", "gina"] {
        assert_eq!(ask(user, "unknown").await.status, 201);
    }
    // Refusals lose nothing: alice's place is kept and her token works.
    let polled = server.get("/api/v1/queue/tokens/current", first.body["token"].as_str()).await;
    assert_eq!((polled.status.as_u16(), polled.body["position"].as_u64()), (200, Some(1)), "{polled:?}");
    // Polling is not limited by the door.
    for _ in 0..5 {
        assert_eq!(
            server.get("/api/v1/queue/tokens/current", first.body["token"].as_str()).await.status,
            200
        );
    }
    // Without a configured header the connection's address counts.
    let door = DoorBudget { per_address: NonZeroU32::new(1), per_user: None };
    let direct = crate::harness::spawn_at_door(
        fresh().await,
        none(),
        open_queue(),
        ticketing_core::Config::default(),
        door,
        None,
    )
    .await;
    assert_eq!(direct.ask("alice").await.status, 201);
    direct.ask("bob").await.assert_problem(429, "rate_limited");
}

pub async fn a_concerts_seat_cap_per_buyer_refuses_the_hold_past_it<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let create = |cap: serde_json::Value| {
        let body = json!({
            "title": "Capped", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 3, "price": 10}],
            "maxSeatsPerBuyer": cap,
        });
        let server = &server;
        async move { server.call(Method::POST, "/api/v1/admin/concerts", None, &admin, Some(body)).await }
    };
    for bad in [json!(0), json!(10_001), json!(-1), json!(1.5), json!("2")] {
        create(bad.clone()).await.assert_problem(422, "invalid_input");
    }
    let created = create(json!(1)).await;
    assert_eq!(
        (created.status.as_u16(), created.body["maxSeatsPerBuyer"].as_u64()),
        (201, Some(1)),
        "{created:?}"
    );
    let concert = created.body["concertId"].as_str().unwrap().to_owned();
    let listed = server.get("/api/v1/concerts", None).await;
    let listed =
        listed.body.as_array().unwrap().iter().find(|c| c["concertId"] == concert.as_str()).unwrap().clone();
    assert_eq!(listed["maxSeatsPerBuyer"], 1, "buyers can read the cap: {listed:?}");
    let id = ticketing_core::ids::ConcertId::parse(&concert).unwrap();
    let seats: Vec<String> = {
        let schedule = created.body["schedules"][0]["scheduleId"].as_str().unwrap().to_owned();
        let token = server
            .post("/api/v1/queue/tokens", None, json!({"userId": "alice", "concertId": concert.clone()}))
            .await
            .body["token"]
            .as_str()
            .unwrap()
            .to_owned();
        server.state.service.admission_tick(id).await.unwrap();
        let list = server.get(&format!("/api/v1/schedules/{schedule}/seats"), Some(&token)).await;
        list.body.as_array().unwrap().iter().map(|s| s["seatId"].as_str().unwrap().to_owned()).collect()
    };
    let mut answers = Vec::new();
    for seat in &seats[..2] {
        let joined = server
            .post("/api/v1/queue/tokens", None, json!({"userId": "alice", "concertId": concert.clone()}))
            .await;
        let token = joined.body["token"].as_str().unwrap().to_owned();
        server.state.service.admission_tick(id).await.unwrap();
        assert_eq!(server.charge(&token, 10).await.status, 200);
        let held = server.hold(&token, seat).await;
        if held.status == 201 {
            assert_eq!(server.pay(&token, held.body["reservationId"].as_str().unwrap()).await.status, 201);
        }
        answers.push((token, held));
    }
    assert_eq!(answers[0].1.status, 201, "{:?}", answers[0].1);
    answers[1].1.assert_problem(409, "buyer_limit");
    let balance = server.get("/api/v1/balance", Some(&answers[1].0)).await;
    assert_eq!(balance.body["balance"], 10, "the refused hold took nothing: {balance:?}");
}

pub async fn a_buyer_holds_several_seats_and_pays_them_in_one_payment<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let create = |holds: serde_json::Value| {
        let body = json!({
            "title": "Family", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 4, "price": 10}],
            "holdsPerToken": holds,
        });
        let server = &server;
        async move { server.call(Method::POST, "/api/v1/admin/concerts", None, &admin, Some(body)).await }
    };
    for bad in [json!(0), json!(101), json!(-1), json!(1.5), json!("2")] {
        create(bad.clone()).await.assert_problem(422, "invalid_input");
    }
    let created = create(json!(3)).await;
    assert_eq!(
        (created.status.as_u16(), created.body["holdsPerToken"].as_u64()),
        (201, Some(3)),
        "{created:?}"
    );
    let concert = created.body["concertId"].as_str().unwrap().to_owned();
    let listed = server.get("/api/v1/concerts", None).await;
    let listed =
        listed.body.as_array().unwrap().iter().find(|c| c["concertId"] == concert.as_str()).unwrap().clone();
    assert_eq!(listed["holdsPerToken"], 3, "buyers can read it: {listed:?}");
    let id = ticketing_core::ids::ConcertId::parse(&concert).unwrap();
    let schedule = created.body["schedules"][0]["scheduleId"].as_str().unwrap().to_owned();
    let token = server
        .post("/api/v1/queue/tokens", None, json!({"userId": "alice", "concertId": concert.clone()}))
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    server.state.service.admission_tick(id).await.unwrap();
    let list = server.get(&format!("/api/v1/schedules/{schedule}/seats"), Some(&token)).await;
    let seats: Vec<String> =
        list.body.as_array().unwrap().iter().map(|s| s["seatId"].as_str().unwrap().to_owned()).collect();
    let mut held = Vec::new();
    for seat in &seats[..3] {
        let answer = server.hold(&token, seat).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        held.push(answer.body["reservationId"].as_str().unwrap().to_owned());
    }
    server.hold(&token, &seats[3]).await.assert_problem(409, "hold_limit");
    assert_eq!(server.charge(&token, 25).await.status, 200);
    let pay = |body: serde_json::Value| server.post("/api/v1/payments", Some(&token), body);
    for bad in [
        json!({}),
        json!({"reservationId": held[0], "reservationIds": [held[1]]}),
        json!({"reservationIds": []}),
        json!({"reservationIds": [held[0], held[0]]}),
        json!({"reservationIds": [held[0], "not-a-uuid"]}),
        json!({"reservationIds": held[0]}),
    ] {
        pay(bad.clone()).await.assert_problem(422, "invalid_input");
    }
    // 25 points do not cover 30: nothing is paid, and every seat stays held.
    pay(json!({"reservationIds": held})).await.assert_problem(402, "insufficient_balance");
    assert_eq!(server.charge(&token, 5).await.status, 200);
    let paid = pay(json!({"reservationIds": held})).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    assert_eq!((paid.body["amount"].as_i64(), paid.body["balance"].as_i64()), (Some(30), Some(0)));
    let payments = paid.body["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 3, "{paid:?}");
    for reservation in &held {
        assert!(payments.iter().any(|p| p["reservationId"] == reservation.as_str()), "{reservation} paid");
        let read = server.get(&format!("/api/v1/reservations/{reservation}"), Some(&token)).await;
        assert_eq!(read.body["status"], "CONFIRMED", "{read:?}");
    }
    assert_eq!(paid.body["paymentId"], payments[0]["paymentId"], "the first seat's, as for one");
    let alice = ticketing_core::ids::UserId::parse("alice").unwrap();
    let ledger = server.state.service.booking_store().ledger(&alice).await.unwrap();
    assert_eq!(
        ledger.iter().filter(|e| e.kind == ticketing_core::payment::LedgerKind::Payment).count(),
        3,
        "a ledger entry per seat"
    );
    // The buyer's own view, with the token the payment expired.
    let mine = server.get("/api/v1/me/reservations", Some(&token)).await;
    assert_eq!(mine.status, 200, "{mine:?}");
    let mine = mine.body.as_array().unwrap();
    assert_eq!(mine.len(), 3);
    assert!(mine.iter().all(|r| r["status"] == "CONFIRMED"), "{mine:?}");
    let ledger = server.get("/api/v1/me/ledger", Some(&token)).await;
    assert_eq!(ledger.status, 200, "{ledger:?}");
    assert_eq!(ledger.body["balance"], 0, "{ledger:?}");
    assert_eq!(
        ledger.body["ledger"].as_array().map(Vec::len),
        Some(5),
        "two charges, three payments: {ledger:?}"
    );
    assert_eq!(server.get("/api/v1/me/reservations", None).await.status, 401);
    assert_eq!(server.get("/api/v1/me/ledger", Some("not-a-token")).await.status, 401);
}

pub async fn a_booking_is_cancelled_by_its_buyer_or_an_operator_and_sold_again<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let create = |window: serde_json::Value| {
        let body = json!({
            "title": "Refundable", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 2, "price": 10}],
            "cancelUntilSecsBeforeStart": window,
        });
        let server = &server;
        async move { server.call(Method::POST, "/api/v1/admin/concerts", None, &admin, Some(body)).await }
    };
    for bad in [json!(-1), json!(31_622_401), json!(1.5), json!("2")] {
        create(bad.clone()).await.assert_problem(422, "invalid_input");
    }
    let created = create(json!(86_400)).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["cancelUntilSecsBeforeStart"], 86_400);
    let concert = created.body["concertId"].as_str().unwrap().to_owned();
    let id = ticketing_core::ids::ConcertId::parse(&concert).unwrap();
    let schedule = created.body["schedules"][0]["scheduleId"].as_str().unwrap().to_owned();
    let join = |user: &'static str| {
        let (server, concert) = (&server, concert.clone());
        async move {
            let token = server
                .post("/api/v1/queue/tokens", None, json!({"userId": user, "concertId": concert}))
                .await
                .body["token"]
                .as_str()
                .unwrap()
                .to_owned();
            server.state.service.admission_tick(id).await.unwrap();
            token
        }
    };
    let alice = join("alice").await;
    let list = server.get(&format!("/api/v1/schedules/{schedule}/seats"), Some(&alice)).await;
    let seat = list.body[0]["seatId"].as_str().unwrap().to_owned();
    let held = server.hold(&alice, &seat).await;
    let reservation = held.body["reservationId"].as_str().unwrap().to_owned();
    let cancel = format!("/api/v1/reservations/{reservation}/cancel");
    server.post(&cancel, Some(&alice), json!({})).await.assert_problem(409, "not_paid");
    assert_eq!(server.charge(&alice, 10).await.status, 200);
    assert_eq!(server.pay(&alice, &reservation).await.status, 201);
    let refunded = server.post_keyed(&cancel, &alice, "cancel-1", json!({})).await;
    assert_eq!(refunded.status, 200, "{refunded:?}");
    assert_eq!((refunded.body["amount"].as_i64(), refunded.body["balance"].as_i64()), (Some(10), Some(10)));
    assert_eq!(refunded.body["status"], "CANCELLED");
    let replay = server.post_keyed(&cancel, &alice, "cancel-1", json!({})).await;
    assert_eq!((replay.status.as_u16(), &replay.body), (200, &refunded.body), "replayed");
    server.post(&cancel, Some(&alice), json!({})).await.assert_problem(409, "already_cancelled");
    let read = server.get(&format!("/api/v1/reservations/{reservation}"), Some(&alice)).await;
    assert_eq!(read.body["status"], "CANCELLED", "{read:?}");
    let ledger = server.get("/api/v1/me/ledger", Some(&alice)).await;
    let kinds: Vec<_> = ledger.body["ledger"].as_array().unwrap().iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, vec![json!("CHARGE"), json!("PAYMENT"), json!("REFUND")], "{ledger:?}");
    assert_eq!(
        server.post("/api/v1/reservations/not-a-uuid/cancel", Some(&alice), json!({})).await.status,
        404
    );

    // Sold again to bob; an operator cancels his booking.
    let bob = join("bob").await;
    let again = server.hold(&bob, &seat).await;
    assert_eq!(again.status, 201, "the seat is sellable again: {again:?}");
    let again = again.body["reservationId"].as_str().unwrap().to_owned();
    assert_eq!(server.charge(&bob, 10).await.status, 200);
    assert_eq!(server.pay(&bob, &again).await.status, 201);
    server
        .post(&format!("/api/v1/reservations/{again}/cancel"), Some(&alice), json!({}))
        .await
        .assert_problem(404, "reservation_not_found");
    let by_operator = format!("/api/v1/admin/reservations/{again}/cancel");
    assert_eq!(
        server.call(Method::POST, &by_operator, None, &[], None).await.status,
        401,
        "needs the admin key"
    );
    let cancelled = server.call(Method::POST, &by_operator, None, &admin, None).await;
    assert_eq!(
        (cancelled.status.as_u16(), cancelled.body["userId"].as_str()),
        (200, Some("bob")),
        "{cancelled:?}"
    );
    let balance = server.get("/api/v1/balance", Some(&bob)).await;
    assert_eq!(balance.body["balance"], 10, "{balance:?}");
}

pub async fn a_buyer_leaves_the_line<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let token = |answer: &crate::harness::Answer| answer.body["token"].as_str().unwrap().to_owned();
    let (a, b, c) =
        (token(&server.ask("a").await), token(&server.ask("b").await), token(&server.ask("c").await));
    let current = "/api/v1/queue/tokens/current";
    server.call(Method::DELETE, current, None, &[], None).await.assert_problem(401, "missing_token");
    let left = server.delete(current, &b).await;
    assert_eq!((left.status.as_u16(), &left.body), (204, &serde_json::Value::Null), "{left:?}");
    server.get(current, Some(&b)).await.assert_problem(401, "token_expired");
    server.delete(current, &b).await.assert_problem(401, "token_expired");
    assert_eq!(server.get(current, Some(&c)).await.body["position"], 2, "everyone behind moved up");
    server.tick().await;
    assert_eq!(server.get(current, Some(&a)).await.body["status"], "ACTIVE");
    server.delete(current, &a).await.assert_problem(409, "already_admitted");
    let back = server.ask("b").await;
    assert_eq!(
        (back.status.as_u16(), back.body["status"].as_str(), back.body["position"].as_u64()),
        (201, Some("WAITING"), Some(1)),
        "a new place at the back: {back:?}"
    );
    assert_ne!(token(&back), b);
}

/// A concert with `salesOpenAt` keeps the buyers who join before it in a pre-queue: they are told
/// when it opens (a drawn pre-queue gives no place yet; a first-come one does), nobody is
/// admitted, and the concert says it is not open. Bad opening settings are refused whole.
pub async fn a_scheduled_sale_keeps_a_pre_queue_until_it_opens<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let opens_at = "2030-03-17T18:46:40.000Z"; // An hour after the server's clock.
    let create = |opening: serde_json::Value| {
        let mut body = json!({
            "title": "Scheduled", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 3, "price": 10}],
        });
        body.as_object_mut().unwrap().extend(opening.as_object().unwrap().clone());
        let server = &server;
        async move { server.call(Method::POST, "/api/v1/admin/concerts", None, &admin, Some(body)).await }
    };
    for bad in [
        json!({"salesOpenAt": "1800-01-01T00:00:00Z"}),
        json!({"salesOpenAt": "soon"}),
        json!({"salesOpenAt": opens_at, "preQueue": "lottery"}),
        json!({"salesOpenAt": opens_at, "preQueue": 1}),
    ] {
        create(bad.clone()).await.assert_problem(422, "invalid_input");
    }
    let created = create(json!({"salesOpenAt": opens_at})).await;
    assert_eq!(
        (created.status.as_u16(), created.body["salesOpenAt"].as_str(), created.body["preQueue"].as_str()),
        (201, Some(opens_at), Some("random")),
        "{created:?}"
    );
    let concert = created.body["concertId"].as_str().unwrap().to_owned();
    let listed = server.get("/api/v1/concerts", None).await;
    let listed =
        listed.body.as_array().unwrap().iter().find(|c| c["concertId"] == concert.as_str()).unwrap().clone();
    assert_eq!((listed["salesOpenAt"].as_str(), listed["open"].as_bool()), (Some(opens_at), Some(false)));
    let demo = server.get("/api/v1/concerts", None).await.body.as_array().unwrap()[0].clone();
    assert_eq!((demo["open"].as_bool(), demo.get("salesOpenAt")), (Some(true), None), "{demo:?}");

    let join = |user: &'static str, concert: String| {
        let server = &server;
        async move {
            server.post("/api/v1/queue/tokens", None, json!({"userId": user, "concertId": concert})).await
        }
    };
    let alice = join("alice", concert.clone()).await;
    assert_eq!(
        (alice.status.as_u16(), alice.body["status"].as_str(), alice.body["salesOpenAt"].as_str()),
        (201, Some("WAITING"), Some(opens_at)),
        "{alice:?}"
    );
    assert_eq!(alice.body["position"], serde_json::Value::Null, "a drawn pre-queue has no place yet");
    assert!(alice.body["etaSeconds"].as_u64().is_some_and(|eta| eta >= 3_600), "{alice:?}");
    let id = ticketing_core::ids::ConcertId::parse(&concert).unwrap();
    server.state.service.admission_tick(id).await.unwrap();
    let token = alice.body["token"].as_str().unwrap();
    let status = server.get("/api/v1/queue/tokens/current", Some(token)).await;
    assert_eq!(
        (status.body["status"].as_str(), status.body["salesOpenAt"].as_str()),
        (Some("WAITING"), Some(opens_at))
    );
    let sale = server
        .call(Method::POST, &format!("/api/v1/admin/concerts/{concert}/resume"), None, &admin, None)
        .await;
    assert_eq!((sale.status.as_u16(), sale.body.get("opened")), (200, None), "not opened: {sale:?}");
    assert_eq!(sale.body["salesOpenAt"].as_str(), Some(opens_at));

    let fifo = create(json!({"salesOpenAt": opens_at, "preQueue": "fifo"})).await;
    assert_eq!(fifo.body["preQueue"], "fifo");
    let fifo = fifo.body["concertId"].as_str().unwrap().to_owned();
    join("alice", fifo.clone()).await;
    let bob = join("bob", fifo).await;
    assert_eq!((bob.body["position"].as_u64(), bob.body["salesOpenAt"].as_str()), (Some(2), Some(opens_at)));
}

/// The opening of a scheduled sale as the admin API shows it, on a store whose clock is the
/// server's (memory): the sale says when it opened and the draw's seed, the audit trail has the
/// `open` entry, and the buyers in line get their places.
pub async fn a_scheduled_sale_opens_and_the_admin_api_shows_it<
    Q: QueueStore,
    B: BookingStore,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let server = spawn(fresh().await, none(), open_queue()).await;
    let admin = [("X-Admin-Key", ADMIN_KEY)];
    let body = json!({
        "title": "Scheduled", "schedules": [{"startsAt": "2031-01-01T19:00:00Z", "seatCount": 3, "price": 10}],
        "salesOpenAt": "2030-03-17T17:47:10Z",
    });
    let created = server.call(Method::POST, "/api/v1/admin/concerts", None, &admin, Some(body)).await;
    let concert = created.body["concertId"].as_str().unwrap().to_owned();
    let id = ticketing_core::ids::ConcertId::parse(&concert).unwrap();
    let join = |user: &'static str| {
        let server = &server;
        let concert = concert.clone();
        async move {
            server.post("/api/v1/queue/tokens", None, json!({"userId": user, "concertId": concert})).await
        }
    };
    let tokens = [join("a").await, join("b").await, join("c").await];
    assert!(tokens.iter().all(|answer| answer.status == 201), "{tokens:?}");
    server.clock.advance_secs(30); // The opening (within the tokens' idle time of 60 s).
    server.state.service.admission_tick(id).await.unwrap();
    let sale = server
        .call(Method::POST, &format!("/api/v1/admin/concerts/{concert}/resume"), None, &admin, None)
        .await;
    assert_eq!(sale.body["opened"]["at"], "2030-03-17T17:47:10.000Z", "{sale:?}");
    assert!(sale.body["opened"]["seed"].as_u64().is_some_and(|seed| seed < 1 << 53), "{sale:?}");
    let actions = server
        .call(Method::GET, &format!("/api/v1/admin/concerts/{concert}/actions"), None, &admin, None)
        .await;
    let open = &actions.body.as_array().unwrap()[0];
    assert_eq!(
        (open["action"].as_str(), open["operator"].as_str()),
        (Some("open"), Some("admission-ticker"))
    );
    assert_eq!(open["after"]["opened"], sale.body["opened"]);
    let mut positions = Vec::new();
    for token in &tokens {
        let status =
            server.get("/api/v1/queue/tokens/current", Some(token.body["token"].as_str().unwrap())).await;
        assert_eq!(status.body.get("salesOpenAt"), None, "open: {status:?}");
        positions.push(status.body["position"].as_u64().unwrap_or_else(|| panic!("{status:?}")));
    }
    positions.sort_unstable();
    assert_eq!(positions, [1, 2, 3], "everyone has a place, once drawn");
}

/// An operator revokes a buyer's token through one node: the buyer's next request on the other
/// node answers 401 `token_revoked`, its hold is released (another buyer sees the seat free),
/// the audit trail names the buyer; no token → 404; a bad user id → 422; no key → 401.
pub async fn an_operator_revokes_a_token_on_every_node<
    Q: QueueStore + Clone,
    B: BookingStore + Clone,
    Fut: Future<Output = (Q, B, crate::harness::Guard)>,
>(
    fresh: impl Fn() -> Fut,
) {
    let one = spawn(fresh().await, none(), open_queue()).await;
    let two = spawn_node(&one).await;
    let alice = one.admitted("alice").await;
    let bob = one.admitted("bob").await;
    let seat = one.seat_id(&alice, 0).await;
    assert_eq!(one.hold(&alice, &seat).await.status, 201);
    let revoke = |user: &str| format!("/api/v1/admin/concerts/{}/users/{user}/revoke", one.demo);
    let as_ops = [("X-Admin-Key", ADMIN_KEY), ("X-Operator", "ops")];
    two.call(Method::POST, &revoke("alice"), None, &[], None).await.assert_problem(401, "admin_key_required");
    two.call(Method::POST, &revoke("al ice"), None, &as_ops, None).await.assert_problem(422, "invalid_input");
    two.call(Method::POST, &revoke("nobody"), None, &as_ops, None).await.assert_problem(404, "not_found");

    let revoked = two.call(Method::POST, &revoke("alice"), None, &as_ops, None).await;
    assert_eq!(
        (revoked.status.as_u16(), revoked.body["userId"].as_str(), revoked.body["releasedHolds"].as_u64()),
        (200, Some("alice"), Some(1)),
        "{revoked:?}"
    );
    one.get("/api/v1/queue/tokens/current", Some(&alice)).await.assert_problem(401, "token_revoked");
    one.hold(&alice, &seat).await.assert_problem(401, "token_revoked");
    one.get("/api/v1/balance", Some(&alice)).await.assert_problem(401, "token_revoked");
    let seats = one.seats(&bob).await;
    let freed = seats.iter().find(|s| s["seatId"] == seat.as_str()).unwrap();
    assert_eq!(freed["status"], "AVAILABLE", "the hold was released: {freed:?}");
    let again = one.call(Method::POST, &revoke("alice"), None, &as_ops, None).await;
    assert_eq!((again.status.as_u16(), again.body["releasedHolds"].as_u64()), (200, Some(0)));

    let actions = one
        .call(Method::GET, &format!("/api/v1/admin/concerts/{}/actions", one.demo), None, &as_ops, None)
        .await;
    let entries = actions.body.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{actions:?}");
    assert_eq!(
        (entries[0]["action"].as_str(), entries[0]["operator"].as_str(), entries[0]["subject"].as_str()),
        (Some("revoke"), Some("ops"), Some("alice"))
    );
    // She may join again, at the back.
    let back = one.ask("alice").await;
    assert_eq!((back.status.as_u16(), back.body["status"].as_str()), (201, Some("WAITING")), "{back:?}");
}
