//! Kill the server with SIGKILL in the middle of a flow and start it again: every confirmed
//! payment, balance and hold is still there, holds still expire on time, tokens still work.
//!
//! Runs the real binary against PostgreSQL (booking) and Redis (queue).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const HOLD_TTL_SECS: u64 = 6;

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(database: &str, prefix: &str, listen: &str) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_ticketing-http"))
        .env("TICKETING_LISTEN", listen)
        .env("TICKETING_STORE", database)
        .env("TICKETING_QUEUE", ticketing_core::testing::redis_url())
        .env("TICKETING_REDIS_PREFIX", prefix)
        .env("TICKETING_HOLD_TTL_SECS", HOLD_TTL_SECS.to_string())
        .env("TICKETING_ADMIT_INTERVAL_MS", "50")
        .env("TICKETING_TICK_MS", "10")
        .env("TICKETING_SWEEP_MS", "200")
        // The demo identity mode on a durable store must be asked for by name.
        .env("TICKETING_INSECURE_DEMO_AUTH", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server binary");
    Server { child }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn wait_healthy(&self) {
        for _ in 0..200 {
            if let Ok(response) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not come up");
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, key: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, key, Some(body)).await
    }

    async fn concert(&self) -> String {
        let (_, concerts) = self.call(reqwest::Method::GET, "/api/v1/concerts", None, None, None).await;
        concerts[0]["concertId"].as_str().unwrap().to_owned()
    }

    /// A token for `user`, polled until admitted (bounded).
    async fn admitted(&self, user: &str) -> String {
        let concert = self.concert().await;
        let (_, body) = self
            .post("/api/v1/queue/tokens", None, None, json!({"userId": user, "concertId": concert}))
            .await;
        let token = body["token"].as_str().unwrap().to_owned();
        for _ in 0..200 {
            let (_, status) = self.get("/api/v1/queue/tokens/current", &token).await;
            if status["status"] == "ACTIVE" {
                return token;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{user} was never admitted");
    }

    async fn seat(&self, token: &str, index: usize) -> String {
        let concert = self.concert().await;
        let (_, schedules) = self.get(&format!("/api/v1/concerts/{concert}/schedules"), token).await;
        let schedule = schedules[0]["scheduleId"].as_str().unwrap().to_owned();
        let (_, seats) = self.get(&format!("/api/v1/schedules/{schedule}/seats"), token).await;
        seats[index]["seatId"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_nothing_and_holds_still_expire() {
    let database = ticketing_core::testing::fresh_postgres().await;
    let prefix = ticketing_core::testing::fresh_redis_prefix();
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let client = Client { http: reqwest::Client::new(), base: format!("http://{listen}") };

    let mut server = start(&database.url, &prefix, &listen);
    client.wait_healthy().await;
    let concert = client.concert().await;

    // Alice buys a seat; Bob holds one; Carol waits with a key-charged balance.
    let alice = client.admitted("alice").await;
    let seat_a = client.seat(&alice, 0).await;
    let (status, held) =
        client.post("/api/v1/reservations", Some(&alice), None, json!({"seatId": seat_a})).await;
    assert_eq!(status, 201, "{held}");
    let paid_reservation = held["reservationId"].as_str().unwrap().to_owned();
    assert_eq!(
        client.post("/api/v1/balance/charges", Some(&alice), Some("c-1"), json!({"amount": 80_000})).await.0,
        200
    );
    let (status, paid) = client
        .post("/api/v1/payments", Some(&alice), Some("p-1"), json!({"reservationId": paid_reservation}))
        .await;
    assert_eq!(status, 201, "{paid}");

    let bob = client.admitted("bob").await;
    let seat_b = client.seat(&bob, 1).await;
    let (status, bob_hold) =
        client.post("/api/v1/reservations", Some(&bob), None, json!({"seatId": seat_b})).await;
    assert_eq!(status, 201);
    let bob_reservation = bob_hold["reservationId"].as_str().unwrap().to_owned();
    assert_eq!(
        client.post("/api/v1/balance/charges", Some(&bob), None, json!({"amount": 1_234})).await.0,
        200
    );

    // SIGKILL: no shutdown, no flush, nothing.
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    let _server = start(&database.url, &prefix, &listen);
    client.wait_healthy().await;

    assert_eq!(client.concert().await, concert, "the catalog survived and was not seeded again");
    let (status, confirmed) = client.get(&format!("/api/v1/reservations/{paid_reservation}"), &alice).await;
    assert_eq!((status, confirmed["status"].as_str()), (200, Some("CONFIRMED")));
    let (status, replay) = client
        .post("/api/v1/payments", Some(&alice), Some("p-1"), json!({"reservationId": paid_reservation}))
        .await;
    assert_eq!((status, &replay), (201, &paid), "the payment's answer survived");
    let (status, recharge) =
        client.post("/api/v1/balance/charges", Some(&bob), Some("c-1"), json!({"amount": 1})).await;
    assert_eq!(status, 200, "bob's token still works after the restart: {recharge}");

    let (status, bob_status) = client.get("/api/v1/queue/tokens/current", &bob).await;
    assert_eq!((status, bob_status["status"].as_str()), (200, Some("ACTIVE")));
    let (_, balance) = client.get("/api/v1/balance", &bob).await;
    assert_eq!(balance["balance"], 1_235);
    let (_, hold) = client.get(&format!("/api/v1/reservations/{bob_reservation}"), &bob).await;
    assert_eq!(hold["status"], "HELD", "the hold survived");

    // Alice's balance, through a new token (her old one expired when she paid).
    let alice_again = client.admitted("alice").await;
    let (_, balance) = client.get("/api/v1/balance", &alice_again).await;
    assert_eq!(balance["balance"], 30_000);

    // The hold still lapses on time, and frees the seat, with nobody re-holding it.
    let mut status = String::new();
    for _ in 0..(HOLD_TTL_SECS * 20 + 100) {
        let (_, hold) = client.get(&format!("/api/v1/reservations/{bob_reservation}"), &bob).await;
        status = hold["status"].as_str().unwrap_or_default().to_owned();
        if status == "EXPIRED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "EXPIRED");
    let schedule_seats = {
        let (_, schedules) = client.get(&format!("/api/v1/concerts/{concert}/schedules"), &bob).await;
        let schedule = schedules[0]["scheduleId"].as_str().unwrap().to_owned();
        client.get(&format!("/api/v1/schedules/{schedule}/seats"), &bob).await.1
    };
    assert_eq!(schedule_seats[0]["status"], "BOOKED");
    assert_eq!(schedule_seats[1]["status"], "AVAILABLE");
}
