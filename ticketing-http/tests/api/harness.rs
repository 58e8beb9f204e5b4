//! Starts the real server on 127.0.0.1:0 over given stores and a manual clock, and talks to it
//! with a real HTTP client.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use ticketing_core::catalog::QueueSettings;
use ticketing_core::door::DoorBudget;
use ticketing_core::ids::ConcertId;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Config, ManualClock, Ticketing};
use ticketing_http::AppState;
use ticketing_http::auth::AuthMode;
use tokio::sync::oneshot;

pub const ADMIN_KEY: &str = "test-admin-key";

/// A running server.
pub struct Server<Q, B> {
    _guard: Guard,
    pub base: String,
    pub client: reqwest::Client,
    pub state: Arc<AppState<Q, B, ManualClock>>,
    pub clock: ManualClock,
    pub demo: ConcertId,
    stop: Option<oneshot::Sender<()>>,
}

/// An answer: status, headers, JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The problem `code`, asserting the problem+json content type.
    pub fn code(&self) -> &str {
        assert_eq!(
            self.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "errors are problem documents: {self:?}"
        );
        self.body["code"].as_str().unwrap_or_default()
    }

    /// Asserts status and problem code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!((self.status.as_u16(), self.code()), (status, code), "{self:?}");
    }
}

/// Settings that admit everyone at once unless a test says otherwise.
pub fn open_queue() -> QueueSettings {
    QueueSettings {
        max_active: 10_000,
        admit_batch: 10_000,
        admit_interval_ms: 1_000,
        waiting_idle_secs: 60,
        active_ttl_secs: 300,
    }
}

/// Whatever must live as long as a server (a fresh database is dropped with its guard).
pub type Guard = Option<Box<dyn std::any::Any + Send + Sync>>;

pub async fn spawn<Q: QueueStore, B: BookingStore>(
    stores: (Q, B, Guard),
    auth: AuthMode,
    queue: QueueSettings,
) -> Server<Q, B> {
    spawn_with(stores, auth, queue, Config::default()).await
}

/// [`spawn`] with a service configuration of the test's choosing.
pub async fn spawn_with<Q: QueueStore, B: BookingStore>(
    stores: (Q, B, Guard),
    auth: AuthMode,
    queue: QueueSettings,
    config: Config,
) -> Server<Q, B> {
    spawn_at_door(stores, auth, queue, config, DoorBudget::default(), None).await
}

/// [`spawn_with`] limiting token requests to `door`, with client addresses from `header` when
/// one is given.
pub async fn spawn_at_door<Q: QueueStore, B: BookingStore>(
    stores: (Q, B, Guard),
    auth: AuthMode,
    queue: QueueSettings,
    config: Config,
    door: DoorBudget,
    header: Option<&'static str>,
) -> Server<Q, B> {
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let service = Ticketing::new(stores.0, stores.1, clock.clone(), config).with_door(door);
    let demo = ticketing_http::seed_demo(&service, queue).await.expect("seed");
    let state = Arc::new(
        AppState::new(service, auth, Some(ADMIN_KEY.to_owned()), Duration::from_secs(10))
            .with_client_address_header(header.map(axum::http::HeaderName::from_static)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(ticketing_http::serve(listener, Arc::clone(&state), async {
        let _ = stopped.await;
    }));
    Server { _guard: stores.2, base, client: reqwest::Client::new(), state, clock, demo, stop: Some(stop) }
}

/// A second server (another node) over the same stores as `first`, with its own service (and
/// so its own catalog and seat-map caches), clones of the stores' handles and the
/// same clock; it serves `first`'s demo concert.
pub async fn spawn_node<Q: QueueStore + Clone, B: BookingStore + Clone>(
    first: &Server<Q, B>,
) -> Server<Q, B> {
    let service = Ticketing::new(
        first.state.service.queue_store().clone(),
        first.state.service.booking_store().clone(),
        first.clock.clone(),
        *first.state.service.config(),
    );
    let state =
        Arc::new(AppState::new(service, AuthMode::None, Some(ADMIN_KEY.to_owned()), Duration::from_secs(10)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(ticketing_http::serve(listener, Arc::clone(&state), async {
        let _ = stopped.await;
    }));
    Server {
        _guard: None,
        base,
        client: reqwest::Client::new(),
        state,
        clock: first.clock.clone(),
        demo: first.demo,
        stop: Some(stop),
    }
}

impl<Q, B> Drop for Server<Q, B> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl<Q: QueueStore, B: BookingStore> Server<Q, B> {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, &[], None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.call(Method::POST, path, token, &[], Some(body)).await
    }

    pub async fn post_keyed(&self, path: &str, token: &str, key: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), &[("Idempotency-Key", key)], Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), &[], None).await
    }

    /// Asks for a token as `user` (auth mode `none`).
    pub async fn ask(&self, user: &str) -> Answer {
        self.post("/api/v1/queue/tokens", None, json!({"userId": user, "concertId": self.demo.to_string()}))
            .await
    }

    /// A token for `user`, admitted.
    pub async fn admitted(&self, user: &str) -> String {
        let answer = self.ask(user).await;
        assert!(answer.status.is_success(), "{answer:?}");
        self.tick().await;
        answer.body["token"].as_str().unwrap().to_owned()
    }

    pub async fn tick(&self) {
        self.state.service.admission_tick(self.demo).await.expect("tick");
    }

    /// The demo concert's schedules and the first schedule's seats, seen with `token`.
    pub async fn seats(&self, token: &str) -> Vec<Value> {
        let schedules = self.get(&format!("/api/v1/concerts/{}/schedules", self.demo), Some(token)).await;
        assert_eq!(schedules.status, 200, "{schedules:?}");
        let schedule = schedules.body[0]["scheduleId"].as_str().unwrap().to_owned();
        let seats = self.get(&format!("/api/v1/schedules/{schedule}/seats"), Some(token)).await;
        assert_eq!(seats.status, 200, "{seats:?}");
        seats.body.as_array().unwrap().clone()
    }

    pub async fn seat_id(&self, token: &str, index: usize) -> String {
        self.seats(token).await[index]["seatId"].as_str().unwrap().to_owned()
    }

    pub async fn hold(&self, token: &str, seat: &str) -> Answer {
        self.post("/api/v1/reservations", Some(token), json!({"seatId": seat})).await
    }

    pub async fn charge(&self, token: &str, amount: i64) -> Answer {
        self.post("/api/v1/balance/charges", Some(token), json!({"amount": amount})).await
    }

    pub async fn pay(&self, token: &str, reservation: &str) -> Answer {
        self.post("/api/v1/payments", Some(token), json!({"reservationId": reservation})).await
    }
}
