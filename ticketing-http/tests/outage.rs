//! A store outage, end to end: PostgreSQL (the booking store) is taken away behind a proxy and
//! brought back. While it is away, requests that need it answer 503 `unavailable` with
//! `Retry-After` (never 500), requests that do not (a queue poll) are answered, and `/readyz`
//! says which store is down; once it is back, the same server answers again by itself. And a
//! full server (its store hanging) sheds new work at once while a payment is served.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use ticketing_core::catalog::QueueSettings;
use ticketing_core::ids::{ConcertId, QueueToken};
use ticketing_core::store::ClaimStrategy;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::postgres::PgStore;
use ticketing_core::testing::{TcpProxy, resolve};
use ticketing_core::{Config, ManualClock, Ticketing};
use ticketing_http::AppState;
use ticketing_http::auth::AuthMode;

/// How long the test waits for the server to recover before calling it a failure (a bound on
/// liveness, far above what it takes).
const LIVENESS: Duration = Duration::from_secs(60);

async fn json_of(response: Response) -> (u16, Option<String>, Option<String>, Value) {
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, retry_after) = (header("content-type"), header("retry-after"));
    (status, content_type, retry_after, response.json().await.unwrap_or(Value::Null))
}

/// A server over PostgreSQL (the booking store, reached through a proxy) and the in-memory
/// queue, on the demo concert.
struct Deployment {
    base: String,
    state: Arc<AppState<MemoryStore, PgStore, ManualClock>>,
    proxy: TcpProxy,
    concert: ConcertId,
    _database: ticketing_core::testing::FreshDatabase,
}

async fn deployment(max_in_flight: usize) -> Deployment {
    let database = ticketing_core::testing::fresh_postgres().await;
    let options = sqlx::postgres::PgConnectOptions::from_str(&database.url).unwrap();
    let proxy = TcpProxy::start(resolve(options.get_host(), options.get_port()).await).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(options.host("127.0.0.1").port(proxy.address.port()))
        .await
        .unwrap();
    let booking = PgStore::from_pool(pool, ClaimStrategy::ConditionalUpdate);
    let service = Ticketing::new(
        MemoryStore::new(),
        booking,
        ManualClock::at_epoch_secs(1_900_000_000),
        Config::default(),
    );
    let queue = QueueSettings {
        max_active: 100,
        admit_batch: 100,
        admit_interval_ms: 1_000,
        waiting_idle_secs: 600,
        active_ttl_secs: 600,
    };
    let concert = ticketing_http::seed_demo(&service, queue).await.unwrap();
    let state = Arc::new(
        AppState::new(service, AuthMode::None, None, Duration::from_secs(10))
            .with_max_in_flight(max_in_flight),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ticketing_http::serve(listener, Arc::clone(&state), std::future::pending()));
    Deployment { base, state, proxy, concert, _database: database }
}

/// A poll of `token`'s status.
async fn poll(client: &Client, base: &str, token: &str) -> (u16, Option<String>, Option<String>, Value) {
    json_of(
        client.get(format!("{base}/api/v1/queue/tokens/current")).bearer_auth(token).send().await.unwrap(),
    )
    .await
}

/// An admitted token of a new user, and the URL of the first schedule's seat list.
async fn admitted(client: &Client, deployment: &Deployment, user: &str) -> (String, String) {
    let base = &deployment.base;
    let joined = client
        .post(format!("{base}/api/v1/queue/tokens"))
        .json(&json!({"userId": user, "concertId": deployment.concert.to_string()}))
        .send()
        .await
        .unwrap();
    let token = json_of(joined).await.3["token"].as_str().unwrap().to_owned();
    deployment.state.service.admission_tick(deployment.concert).await.unwrap();
    let schedules = json_of(
        client
            .get(format!("{base}/api/v1/concerts/{}/schedules", deployment.concert))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(schedules.0, 200, "{schedules:?}");
    let seats_url =
        format!("{base}/api/v1/schedules/{}/seats", schedules.3[0]["scheduleId"].as_str().unwrap());
    (token, seats_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_store_outage_answers_503_and_the_server_recovers_by_itself() {
    let deployment = deployment(ticketing_http::shed::IN_FLIGHT_MAX_DEFAULT).await;
    let (base, proxy) = (&deployment.base, &deployment.proxy);
    let client = Client::new();
    let (token, seats_url) = admitted(&client, &deployment, "alice").await;
    let seats = || async { json_of(client.get(&seats_url).bearer_auth(&token).send().await.unwrap()).await };
    let poll = || poll(&client, base, &token);
    let ready = || async { json_of(client.get(format!("{base}/readyz")).send().await.unwrap()).await };

    assert_eq!(seats().await.0, 200);
    let up = ready().await;
    assert_eq!((up.0, &up.3), (200, &json!({"status": "ready", "stores": {"queue": "up", "booking": "up"}})));
    // A burst of probes reuses the answer: at most one more ping of the database (two round
    // trips if its statement is new to the connection), not one per probe.
    let before = proxy.turns();
    for _ in 0..20 {
        assert_eq!(ready().await.0, 200);
    }
    assert!(proxy.turns() - before <= 2, "{} round trips for 20 probes", proxy.turns() - before);

    // PostgreSQL goes away: open connections are cut, new ones refused.
    proxy.set_up(false);
    for _ in 0..3 {
        let (status, content_type, retry_after, body) = seats().await;
        assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")), "{body}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    let polled = poll().await;
    assert_eq!(
        (polled.0, polled.3["status"].as_str()),
        (200, Some("ACTIVE")),
        "the queue does not need the database"
    );
    // Nor does admission: a buyer who joins now is admitted by the ticker's round, with the
    // concert's settings as this process last read them.
    let joined = client
        .post(format!("{base}/api/v1/queue/tokens"))
        .json(&json!({"userId": "bob", "concertId": deployment.concert.to_string()}))
        .send()
        .await
        .unwrap();
    let bob = json_of(joined).await;
    assert_eq!((bob.0, bob.3["status"].as_str()), (201, Some("WAITING")), "{bob:?}");
    assert_eq!(deployment.state.service.admission_tick_all().await.unwrap(), 1, "admitted while away");
    let bob = crate::poll(&client, base, bob.3["token"].as_str().unwrap()).await;
    assert_eq!(bob.3["status"], "ACTIVE", "{bob:?}");
    // Readiness is re-checked at most once a second: it reports the outage within that.
    let down = tokio::time::timeout(LIVENESS, async {
        loop {
            let answer = ready().await;
            if answer.0 != 200 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("readiness reports the outage");
    assert_eq!(
        (down.0, down.2.as_deref(), down.3["code"].as_str()),
        (503, Some("1"), Some("not_ready")),
        "{down:?}"
    );
    assert_eq!(down.3["stores"], json!({"queue": "up", "booking": "down"}));

    // It comes back: the same server answers again, with no restart.
    proxy.set_up(true);
    let recovered = tokio::time::timeout(LIVENESS, async {
        loop {
            if ready().await.0 == 200 && seats().await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(recovered.is_ok(), "the server answers again once the database is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_sheds_new_work_at_once_but_keeps_room_for_buyers_paying() {
    // Four places, one kept for buyers finishing a purchase.
    let deployment = deployment(4).await;
    let (base, proxy) = (&deployment.base, &deployment.proxy);
    let client = Client::new();
    let (token, seats_url) = admitted(&client, &deployment, "alice").await;

    // The database hangs: three seat lists wait on it, holding three places.
    proxy.set_stalled(true);
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let (client, url, token) = (client.clone(), seats_url.clone(), token.clone());
            tokio::spawn(async move {
                client.get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    let poll = || poll(&client, base, &token);
    // New work (a poll, which needs no database) is shed at once …
    let shed = tokio::time::timeout(LIVENESS, async {
        loop {
            let answer = poll().await;
            if answer.0 == 503 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a poll is shed while the server is full");
    assert_eq!(
        (shed.1.as_deref(), shed.2.as_deref(), shed.3["code"].as_str()),
        (Some("application/problem+json"), Some("1"), Some("overloaded"))
    );
    // … a buyer paying gets the kept place (here to learn its token is unknown: no database) …
    let stranger = QueueToken::generate(deployment.concert);
    let paying = client
        .post(format!("{base}/api/v1/payments"))
        .bearer_auth(stranger.as_str())
        .json(&json!({"reservationId": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(paying.status(), 401, "a payment is not shed");
    // … operations are never shed …
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    // … and once the database answers, the waiting lists and new work are answered.
    proxy.set_stalled(false);
    for list in waiting {
        assert_eq!(tokio::time::timeout(LIVENESS, list).await.unwrap().unwrap().unwrap(), 200);
    }
    assert_eq!(poll().await.0, 200);
}
