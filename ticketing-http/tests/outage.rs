//! A store outage, end to end: PostgreSQL (the booking store) is taken away behind a proxy and
//! brought back. While it is away, requests that need it answer 503 `unavailable` with
//! `Retry-After` (never 500), requests that do not (a queue poll) are answered, and `/readyz`
//! says which store is down; once it is back, the same server answers again by itself.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use ticketing_core::catalog::QueueSettings;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_store_outage_answers_503_and_the_server_recovers_by_itself() {
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
    let state = Arc::new(AppState::new(service, AuthMode::None, None, Duration::from_secs(10)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ticketing_http::serve(listener, Arc::clone(&state), std::future::pending()));
    let client = Client::new();

    let joined = client
        .post(format!("{base}/api/v1/queue/tokens"))
        .json(&json!({"userId": "alice", "concertId": concert.to_string()}))
        .send()
        .await
        .unwrap();
    let token = json_of(joined).await.3["token"].as_str().unwrap().to_owned();
    state.service.admission_tick(concert).await.unwrap();
    let schedules = json_of(
        client
            .get(format!("{base}/api/v1/concerts/{concert}/schedules"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(schedules.0, 200, "{schedules:?}");
    let seats_url =
        format!("{base}/api/v1/schedules/{}/seats", schedules.3[0]["scheduleId"].as_str().unwrap());
    let seats = || async { json_of(client.get(&seats_url).bearer_auth(&token).send().await.unwrap()).await };
    let poll = || async {
        json_of(
            client
                .get(format!("{base}/api/v1/queue/tokens/current"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let ready = || async { json_of(client.get(format!("{base}/readyz")).send().await.unwrap()).await };

    assert_eq!(seats().await.0, 200);
    let up = ready().await;
    assert_eq!((up.0, &up.3), (200, &json!({"status": "ready", "stores": {"queue": "up", "booking": "up"}})));

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
    let down = ready().await;
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
