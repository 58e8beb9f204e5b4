//! # ticketing-http
//!
//! A thin axum server embedding [`ticketing_core`]: routes, extractors, one error mapping,
//! configuration and `main`. No business rule lives here; every handler calls one method of
//! [`ticketing_core::Ticketing`].
//!
//! ## Layout
//!
//! - [`config`]: flags and their `TICKETING_*` environment variables.
//! - [`auth`]: how a user proves who it is when asking for a queue token.
//! - [`routes`]: the handlers and extractors; [`dto`]: the JSON bodies.
//! - [`error`]: [`error::ApiError`] and its one mapping to statuses and problem documents.
//! - this module: [`AppState`], [`router`], the background tasks, [`serve`] and [`run`].

pub mod auth;
pub mod backends;
pub mod config;
pub mod dto;
pub mod error;
pub mod routes;
pub mod shed;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
use ticketing_core::ids::{ConcertId, Points};
use ticketing_core::limits;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Clock, SystemClock, Ticketing};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use crate::auth::AuthMode;
use crate::config::Config;
use crate::error::ApiError;

/// The largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// What every handler shares.
pub struct AppState<Q, B, C> {
    /// The service.
    pub service: Ticketing<Q, B, C>,
    /// How identity is proven.
    pub auth: AuthMode,
    /// The admin key; admin routes are off without one.
    pub admin_key: Option<String>,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// Every request is answered within this.
    pub request_timeout: Duration,
    /// Seat lists as JSON, from fragments kept per seat map.
    pub seat_lists: dto::SeatListJson,
    /// How [`serve`] bounds connections.
    pub connections: ConnectionLimits,
    /// The places for requests in flight.
    pub shedder: shed::Shedder,
    /// The last readiness answer and when it was found ([`limits::READINESS_CACHE_MS`]).
    pub readiness: tokio::sync::Mutex<Option<(tokio::time::Instant, error::StoreHealth)>>,
    /// The header a trusted proxy writes the client's address into; `None`: the connection's
    /// address ([`AppState::client_address`]).
    pub client_address_header: Option<axum::http::HeaderName>,
}

/// How [`serve`] bounds its connections, so that clients cannot hoard them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a request's head, counted from when its connection opens or
    /// its previous response went out: a connection that sends its headers too slowly, or sits
    /// idle between requests for this long, is closed.
    pub header_read_timeout: Duration,
    /// At most this many connections are open at once; past it, new connections wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(limits::HEADER_READ_TIMEOUT_MS_DEFAULT),
            max_connections: limits::CONNECTIONS_MAX_DEFAULT,
        }
    }
}

impl<Q: QueueStore, B: BookingStore, C: Clock> AppState<Q, B, C> {
    /// State over a service, with the process-wide metrics recorder.
    pub fn new(
        service: Ticketing<Q, B, C>,
        auth: AuthMode,
        admin_key: Option<String>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            service,
            auth,
            admin_key,
            metrics: metrics_handle(),
            request_timeout,
            seat_lists: dto::SeatListJson::default(),
            connections: ConnectionLimits::default(),
            shedder: shed::Shedder::default(),
            readiness: tokio::sync::Mutex::new(None),
            client_address_header: None,
        }
    }

    /// The same state taking the client's address from `header`, which a trusted proxy writes.
    #[must_use]
    pub fn with_client_address_header(mut self, header: Option<axum::http::HeaderName>) -> Self {
        self.client_address_header = header;
        self
    }

    /// The address of the client of a request with `headers` over a connection from `peer`.
    /// With a configured header: the last entry of its last value (what the nearest trusted
    /// proxy wrote), an address with or without a port (`192.0.2.1`, `192.0.2.1:4711`,
    /// `2001:db8::1`, `[2001:db8::1]:443`); `None` when it is missing or holds no address, so
    /// that such requests are not all counted as the proxy's own. Without one: the connection's.
    #[must_use]
    pub fn client_address(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> Option<std::net::IpAddr> {
        let Some(name) = &self.client_address_header else { return peer };
        let entry = headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .map(str::trim)
            .unwrap_or_default();
        let address = entry
            .parse::<std::net::IpAddr>()
            .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip()))
            .ok();
        if address.is_none() {
            tracing::debug!(header = %name, "no client address in the configured header: not counted");
        }
        address
    }

    /// The same state with another bound on requests in flight ([`shed`]).
    #[must_use]
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.shedder = shed::Shedder::new(max_in_flight);
        self
    }

    /// The same state with other connection limits.
    #[must_use]
    pub fn with_connection_limits(mut self, connections: ConnectionLimits) -> Self {
        self.connections = connections;
        self
    }

    /// A concert's queue settings.
    ///
    /// # Errors
    /// `concert_not_found`; store errors.
    pub async fn queue_settings(&self, concert: ConcertId) -> Result<QueueSettings, ApiError> {
        Ok(self.service.concert(concert).await?.queue)
    }

    /// Checks `X-Admin-Key` in constant time.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when no admin key is configured (the routes are off),
    /// [`ApiError::AdminKey`] when the header is missing or wrong.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let expected = self.admin_key.as_deref().ok_or(ApiError::NotFound)?;
        let given = headers.get(routes::ADMIN_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if constant_time_eq::constant_time_eq(given, expected.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::AdminKey)
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use (tests start many servers in
/// one process; they share it).
///
/// # Panics
/// When another metrics recorder was installed first, which this binary never does.
#[must_use]
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const BUCKETS: [f64; 12] =
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
            PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("the bucket list is not empty")
                // A gauge nobody set for a while (a concert whose line emptied) leaves the
                // output, so the series do not grow with every concert ever sold.
                .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(QUEUE_GAUGE_IDLE))
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The OpenAPI 3.1 description, generated from the handlers and bodies.
#[derive(OpenApi)]
#[openapi(
    info(title = "ticketing", description = "Virtual waiting room, seat holds and point payments for concert sale days."),
    paths(
        routes::issue_token, routes::current_token, routes::leave, routes::concerts, routes::schedules, routes::seats,
        routes::hold, routes::reservation, routes::release, routes::pay, routes::balance, routes::charge,
        routes::my_reservations, routes::my_ledger, routes::cancel, routes::cancel_by_operator,
        routes::create_concert, routes::pause, routes::resume, routes::change_queue, routes::revoke, routes::sale_actions, routes::figures, routes::sales, routes::account, routes::healthz, routes::readyz, routes::metrics,
    ),
    components(schemas(error::Problem, error::StoreHealth, error::Health, routes::ReadyBody)),
    modifiers(&BearerScheme, &ServiceUnavailable, &ProblemResponses),
)]
pub struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "queueToken",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every operation of a path item.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten()
}

/// Documents the 503 every API operation may answer, with its `Retry-After`.
struct ServiceUnavailable;

impl utoipa::Modify for ServiceUnavailable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description(
                "the server cannot answer now: `unavailable` (a store is down or lost data), `overloaded` \
                 (at capacity), `timeout` or `contention`; retry after `Retry-After` seconds",
            )
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("seconds to wait before retrying"))
                    .build(),
            )
            .build();
        for (path, item) in &mut openapi.paths.paths {
            if !path.starts_with("/api/") {
                continue;
            }
            for operation in operations(item) {
                operation
                    .responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| response.clone().into());
            }
        }
    }
}

/// Says what every error answer really is: a problem document is `application/problem+json`
/// (utoipa writes `application/json` for a `body = Problem`), and every operation that reads a
/// JSON body may answer 400 `malformed_json`, 413 `payload_too_large`, 415
/// `unsupported_media_type` and 422 `invalid_input` before its own rules run.
struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                )
                .build()
        };
        let body_errors = [
            ("400", "malformed_json: the body is not JSON"),
            ("413", "payload_too_large: the body is over the limit"),
            ("415", "unsupported_media_type: the body is not `application/json`"),
            ("422", "invalid_input: the body does not have the fields and values this operation takes"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else { continue };
                    if let Some(content) = response.content.shift_remove("application/json") {
                        let is_problem = matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"));
                        let media = if is_problem { "application/problem+json" } else { "application/json" };
                        response.content.insert(media.to_owned(), content);
                    }
                }
                if operation.request_body.is_some() {
                    for (status, description) in body_errors {
                        operation
                            .responses
                            .responses
                            .entry(status.to_owned())
                            .or_insert_with(|| problem(description).into());
                    }
                }
            }
        }
    }
}

/// Every route, with the request timeout, body limit and metrics.
pub fn router<Q: QueueStore, B: BookingStore, C: Clock>(state: Arc<AppState<Q, B, C>>) -> Router {
    let api = Router::new()
        .route("/api/v1/queue/tokens", post(routes::issue_token::<Q, B, C>))
        .route(
            "/api/v1/queue/tokens/current",
            get(routes::current_token::<Q, B, C>).merge(delete(routes::leave::<Q, B, C>)),
        )
        .route("/api/v1/concerts", get(routes::concerts::<Q, B, C>))
        .route("/api/v1/concerts/{concert_id}/schedules", get(routes::schedules::<Q, B, C>))
        .route("/api/v1/schedules/{schedule_id}/seats", get(routes::seats::<Q, B, C>))
        .route("/api/v1/reservations", post(routes::hold::<Q, B, C>))
        .route(
            "/api/v1/reservations/{reservation_id}",
            get(routes::reservation::<Q, B, C>).merge(delete(routes::release::<Q, B, C>)),
        )
        .route("/api/v1/payments", post(routes::pay::<Q, B, C>))
        .route("/api/v1/balance", get(routes::balance::<Q, B, C>))
        .route("/api/v1/me/reservations", get(routes::my_reservations::<Q, B, C>))
        .route("/api/v1/reservations/{reservation_id}/cancel", post(routes::cancel::<Q, B, C>))
        .route("/api/v1/me/ledger", get(routes::my_ledger::<Q, B, C>))
        .route("/api/v1/balance/charges", post(routes::charge::<Q, B, C>))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz::<Q, B, C>))
        .route("/metrics", get(routes::metrics::<Q, B, C>))
        .route("/openapi.json", get(openapi_route(&state.auth)));
    // Admin routes exist only with a configured key, and the key is checked before the body is
    // read, so a caller without it learns nothing about what the route accepts.
    let api = if state.admin_key.is_some() {
        api.merge(
            Router::new()
                .route("/api/v1/admin/concerts", post(routes::create_concert::<Q, B, C>))
                .route("/api/v1/admin/concerts/{concert_id}/pause", post(routes::pause::<Q, B, C>))
                .route("/api/v1/admin/concerts/{concert_id}/resume", post(routes::resume::<Q, B, C>))
                .route("/api/v1/admin/concerts/{concert_id}/queue", patch(routes::change_queue::<Q, B, C>))
                .route("/api/v1/admin/concerts/{concert_id}/actions", get(routes::sale_actions::<Q, B, C>))
                .route(
                    "/api/v1/admin/concerts/{concert_id}/users/{user_id}/revoke",
                    post(routes::revoke::<Q, B, C>),
                )
                .route("/api/v1/admin/concerts/{concert_id}/figures", get(routes::figures::<Q, B, C>))
                .route("/api/v1/admin/concerts/{concert_id}/sales", get(routes::sales::<Q, B, C>))
                .route("/api/v1/admin/users/{user_id}/account", get(routes::account::<Q, B, C>))
                .route(
                    "/api/v1/admin/reservations/{reservation_id}/cancel",
                    post(routes::cancel_by_operator::<Q, B, C>),
                )
                .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_admin::<Q, B, C>)),
        )
    } else {
        api
    };
    let api = api
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(state.shedder.clone(), shed))
        .layer(middleware::from_fn(read_body))
        .layer(middleware::from_fn_with_state(state.request_timeout, timeout))
        .layer(middleware::from_fn(track));
    api.with_state(state)
}

async fn require_admin<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): State<Arc<AppState<Q, B, C>>>,
    request: Request,
    next: Next,
) -> Response {
    match state.check_admin(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// The handler of `/openapi.json`: the document rendered once, for the server's identity mode.
fn openapi_route(
    auth: &AuthMode,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    static DEMO: OnceLock<axum::body::Bytes> = OnceLock::new();
    static PROVEN: OnceLock<axum::body::Bytes> = OnceLock::new();
    let demo = matches!(auth, AuthMode::None);
    let cell = if demo { &DEMO } else { &PROVEN };
    // `Bytes` clones share the one rendering: a request copies nothing.
    let document = cell.get_or_init(|| openapi_document(demo).into()).clone();
    move || {
        std::future::ready(
            ([(axum::http::header::CONTENT_TYPE, "application/json")], document.clone()).into_response(),
        )
    }
}

/// The OpenAPI document. With `demo` (`TICKETING_AUTH=none`, where the body's `userId` is who
/// asks) `userId` is required; with a proven identity it may be left out.
#[must_use]
pub fn openapi_document(demo: bool) -> String {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    let mut document = ApiDoc::openapi();
    if demo {
        let request = document.components.as_mut().and_then(|c| c.schemas.get_mut("IssueTokenRequest"));
        if let Some(RefOr::T(Schema::Object(request))) = request {
            if let Some(RefOr::T(Schema::Object(user))) = request.properties.get_mut("userId") {
                user.schema_type = SchemaType::Type(Type::String);
            }
            if !request.required.iter().any(|r| r == "userId") {
                request.required.push("userId".to_owned());
            }
        }
    }
    document.to_pretty_json().unwrap_or_default()
}

/// Answers 503 `timeout` when a handler runs longer than the configured timeout.
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Reads a request's body whole (at most [`BODY_LIMIT_BYTES`]), within the request timeout,
/// before the request may take a place in the server ([`shed`]): a client sending its body
/// slowly holds its own connection, never a place others need.
async fn read_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, BODY_LIMIT_BYTES).await {
        Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large { ApiError::BodyTooLarge } else { ApiError::BodyUnreadable }.into_response()
        }
    }
}

/// Sheds a request the server has no place for ([`shed`]), before any work is done for it.
async fn shed(State(shedder): State<shed::Shedder>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or(shed::UNMATCHED, MatchedPath::as_str);
    let token = routes::Bearer::of(request.headers()).is_ok();
    let class = shed::Class::of(request.method(), route, token);
    match shedder.admit(class).await {
        Ok(place) => {
            let response = next.run(request).await;
            drop(place);
            response
        }
        Err(error) => {
            metrics::counter!("ticketing_http_shed_total", "class" => class.name()).increment(1);
            error.into_response()
        }
    }
}

/// Counts requests by route, method and status, and times them.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| shed::UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    tracing::debug!(%method, %route, %status, elapsed_ms = elapsed * 1_000.0, "request");
    metrics::counter!("ticketing_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ticketing_http_request_duration_seconds", "route" => route, "method" => method)
        .record(elapsed);
    response
}

/// Serves `router(state)` over HTTP/1.1 on `listener` until `shutdown` completes, then finishes
/// the requests in flight. Connections are bounded by `state.connections` ([`ConnectionLimits`]): at most
/// `max_connections` open (the listener waits for one to close before accepting another), and
/// each closed when a request's head takes longer than `header_read_timeout` to arrive (idle
/// keep-alive connections included).
///
/// # Errors
/// None at present: a failed `accept` is logged and retried (the `Result` leaves room for
/// errors of setting up).
pub async fn serve<Q: QueueStore, B: BookingStore, C: Clock>(
    listener: TcpListener,
    state: Arc<AppState<Q, B, C>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let limits = state.connections;
    let open = Arc::new(tokio::sync::Semaphore::new(
        limits.max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: its header-read timer runs from the connection's first moment. (Telling
    // HTTP/2 apart first reads the connection's opening bytes with no timeout at all, so a client
    // that sends nothing, or its preface a byte at a time, would hold the connection forever.)
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = async {
                let permit = Arc::clone(&open).acquire_owned().await.expect("the semaphore is never closed");
                (permit, listener.accept().await)
            } => accepted,
        };
        let (permit, stream, peer) = match accepted {
            (permit, Ok((stream, peer))) => (permit, stream, peer),
            (_, Err(error)) => {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = accept_error(error) => continue,
                }
            }
        };
        // Each request carries its connection's address, as axum's `ConnectInfo`.
        let service = TowerToHyperService::new(app.clone().map_request(
            move |request: Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What the accept loop does with a failed `accept`: a connection that failed before it was
/// accepted is skipped; anything else (out of file descriptors, say) is logged and waited out
/// for a moment, as hyper's own server did.
async fn accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Starts the admission ticker and the sweeper; both stop when `stop` changes.
pub fn spawn_background<Q: QueueStore, B: BookingStore, C: Clock>(
    state: Arc<AppState<Q, B, C>>,
    tick: Duration,
    sweep: Duration,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let ticker = {
        let state = Arc::clone(&state);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = interval.tick() => {}
                }
                match state.service.admission_tick_all().await {
                    Ok(admitted) => {
                        metrics::counter!("ticketing_admissions_total").increment(admitted as u64)
                    }
                    Err(error) => tracing::warn!(%error, "admission tick failed"),
                }
            }
        })
    };
    let sweeper = {
        let mut stop = stop;
        tokio::spawn(async move {
            let mut live = std::collections::HashSet::new();
            let mut interval = tokio::time::interval(sweep);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = interval.tick() => {}
                }
                match state.service.sweep().await {
                    Ok(report) => tracing::debug!(?report, "swept"),
                    Err(error) => tracing::warn!(%error, "sweep failed"),
                }
                record_sale_gauges(&state, &mut live).await;
            }
        })
    };
    vec![ticker, sweeper]
}

/// How long a concert's queue gauges stay in `/metrics` once its line is empty (nobody waiting or
/// active): then they leave the output until someone joins again. Longer than twice the longest
/// sweep interval (`TICKETING_SWEEP_MS`, which sets them), so a busy line's gauges never lapse
/// between two rounds.
pub const QUEUE_GAUGE_IDLE: Duration = Duration::from_millis(2 * config::SWEEP_MS_MAX + 60_000);

/// Sets each concert's queue gauges (waiting, active, the admission rate per minute) and, from
/// one more booking-store read, its seat gauges (held, sold, revenue). A line found empty has its
/// gauges set once more (`live` holds the concerts whose line was not empty last time) and then
/// no more, so they leave the output after [`QUEUE_GAUGE_IDLE`]. The tally read also keeps the
/// service's knowledge of sold-out concerts fresh (`Ticketing::seat_tally`), for busy lines and
/// for concerts found sold out.
async fn record_sale_gauges<Q: QueueStore, B: BookingStore, C: Clock>(
    state: &AppState<Q, B, C>,
    live: &mut std::collections::HashSet<ConcertId>,
) {
    let Ok(concerts) = state.service.concerts().await else { return };
    let now = state.service.clock().now();
    for concert in concerts {
        if let Ok(snapshot) = state.service.queue_store().admission_snapshot(concert.id, now).await {
            let set = gauges_to_set(live, concert.id, snapshot.waiting == 0 && snapshot.active == 0);
            let id = concert.id.to_string();
            if set {
                let (pre_queue, waiting) = snapshot.pre_queue_and_waiting(concert.sales_open_at.is_some());
                #[allow(clippy::cast_precision_loss)] // Gauges are f64; counts far below 2^52.
                {
                    metrics::gauge!("ticketing_queue_waiting", "concert" => id.clone()).set(waiting as f64);
                    metrics::gauge!("ticketing_queue_pre_queue", "concert" => id.clone())
                        .set(pre_queue as f64);
                }
                metrics::gauge!("ticketing_queue_active", "concert" => id.clone())
                    .set(f64::from(snapshot.active));
                metrics::gauge!("ticketing_admitted_per_minute", "concert" => id.clone())
                    .set(snapshot.admitted_per_minute());
            }
            // The tally also tells the service whether the concert is sold out: read for every
            // busy line, and for a concert found sold out (until a tally says otherwise).
            if !set && !state.service.sold_out(concert.id) {
                continue;
            }
            if let Ok(seats) = state.service.seat_tally(concert.id).await {
                if set {
                    #[allow(clippy::cast_precision_loss)] // Gauges are f64; counts far below 2^52.
                    {
                        metrics::gauge!("ticketing_seats_held", "concert" => id.clone())
                            .set(seats.held as f64);
                        metrics::gauge!("ticketing_seats_sold", "concert" => id.clone())
                            .set(seats.sold as f64);
                        metrics::gauge!("ticketing_revenue_points", "concert" => id)
                            .set(seats.revenue as f64);
                    }
                }
            }
        }
    }
}

/// Whether a concert's queue gauges are to be set now: always while its line is not empty, and
/// once more (to 0) when it empties; `live` remembers which lines were not empty.
fn gauges_to_set(live: &mut std::collections::HashSet<ConcertId>, concert: ConcertId, empty: bool) -> bool {
    if empty {
        return live.remove(&concert);
    }
    live.insert(concert);
    true
}

/// The demo concert's title; a start finds the concert an earlier start seeded by it.
pub const DEMO_TITLE: &str = "Demo Concert";

/// Creates the demo concert: 3 schedules x 50 seats at 50,000 points.
///
/// # Errors
/// Service errors (invalid queue settings among them).
pub async fn seed_demo<Q: QueueStore, B: BookingStore, C: Clock>(
    service: &Ticketing<Q, B, C>,
    queue: QueueSettings,
) -> Result<ConcertId, ticketing_core::Error> {
    let base = service.clock().now() + chrono::Duration::days(30);
    let schedules = (0..3)
        .map(|day| NewSchedule {
            starts_at: base + chrono::Duration::days(day),
            seat_count: 50,
            price: Points::new(50_000).expect("a positive literal"),
        })
        .collect();
    let plan = service
        .create_concert(&NewConcert {
            title: DEMO_TITLE.into(),
            schedules,
            queue,
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await?;
    Ok(plan.concert.id)
}

/// Runs the configured command: `migrate`, or (by default) the server until SIGINT or SIGTERM,
/// then drains: stops accepting, finishes the requests in flight, stops the background tasks.
///
/// # Errors
/// Configuration errors, unreachable backends, failed migrations, I/O errors of the listener.
pub async fn run(config: Config) -> Result<(), backends::SetupError> {
    use backends::{BookingBackend as Bk, QueueBackend as Qu};
    if matches!(config.command, Some(config::Command::Migrate)) {
        backends::migrate(&config).await?;
        println!("migrations applied");
        return Ok(());
    }
    config.check_demo_auth()?;
    let booking = backends::booking(&config).await?;
    let queue = backends::queue(&config, &booking).await?;
    // Every combination is its own concrete type: static dispatch, chosen here once.
    macro_rules! dispatch {
        ($($q:ident),*) => {
            match (queue, booking) {
                $(
                    (Qu::$q(q), Bk::Memory(b)) => serve_with(&config, q, b).await,
                    (Qu::$q(q), Bk::Postgres(b)) => serve_with(&config, q, b).await,
                    (Qu::$q(q), Bk::Mysql(b)) => serve_with(&config, q, b).await,
                )*
            }
        };
    }
    dispatch!(Memory, Postgres, Mysql, Redis)
}

async fn serve_with<Q: QueueStore, B: BookingStore>(
    config: &Config,
    queue: Q,
    booking: B,
) -> Result<(), backends::SetupError> {
    let mut service = Ticketing::new(queue, booking, SystemClock, config.service()).with_door(config.door());
    match config.token_key() {
        Some(key) => service = service.with_token_key(key),
        None if config.queue.starts_with("redis") => tracing::warn!(
            "TICKETING_TOKEN_SECRET is unset: if Redis loses its data, only this node can give \
             buyers back their places (set one secret on every node)"
        ),
        None => {}
    }
    if matches!(config.auth, AuthMode::None) {
        tracing::warn!(
            "TICKETING_AUTH=none: userId is taken at its word; anyone can act as anyone. Demo use only."
        );
        eprintln!(
            "WARNING: TICKETING_AUTH=none — any client can claim any userId. Never use this in production."
        );
    }
    seed_or_report(config, &service).await?;
    let state = Arc::new(
        AppState::new(
            service,
            config.auth.clone(),
            config.admin_key.clone(),
            Duration::from_millis(config.request_timeout_ms),
        )
        .with_max_in_flight(config.max_in_flight)
        .with_connection_limits(ConnectionLimits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_connections: config.max_connections,
        })
        .with_client_address_header(config.client_address_header.clone()),
    );
    let listener = TcpListener::bind(config.listen).await?;
    println!("ticketing listening on http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = spawn_background(
        Arc::clone(&state),
        Duration::from_millis(config.tick_ms.max(1)),
        Duration::from_millis(config.sweep_ms.max(1)),
        stop_rx,
    );
    serve(listener, state, shutdown_signal()).await?;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Seeds the demo concert into an empty catalog. A durable store keeps its catalog across
/// restarts and is not seeded again; demo-queue settings that therefore do not apply are logged
/// as a warning rather than silently dropped.
async fn seed_or_report<Q: QueueStore, B: BookingStore, C: Clock>(
    config: &Config,
    service: &Ticketing<Q, B, C>,
) -> Result<(), backends::SetupError> {
    let concerts = service.concerts().await?;
    if config.demo_seed {
        match concerts.first() {
            None => println!("demo concert: {}", seed_demo(service, config.demo_queue()).await?),
            Some(existing) => println!("catalog not empty; first concert: {}", existing.id),
        }
    }
    let stored_demo = concerts.iter().find(|c| c.title == DEMO_TITLE);
    if let Some(warning) = config.ignored_demo_queue(concerts.is_empty(), stored_demo) {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_client_address_is_the_trusted_headers_last_entry_with_or_without_a_port() {
        use ticketing_core::store::memory::MemoryStore;
        let store = MemoryStore::new();
        let service = Ticketing::new(store.clone(), store, SystemClock, ticketing_core::Config::default());
        let state = AppState::new(service, AuthMode::None, None, Duration::from_secs(1));
        let peer: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().unwrap());
            headers
        };
        assert_eq!(
            state.client_address(&headers("192.0.2.9"), Some(peer)),
            Some(peer),
            "no header configured"
        );
        let state =
            state.with_client_address_header(Some(axum::http::HeaderName::from_static("x-forwarded-for")));
        let cases = [
            ("192.0.2.9", Some("192.0.2.9")),
            ("198.51.100.1, 192.0.2.9", Some("192.0.2.9")),
            ("192.0.2.9:4711", Some("192.0.2.9")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("unknown", None),
            ("", None),
        ];
        for (value, expected) in cases {
            let expected = expected.map(|a| a.parse::<std::net::IpAddr>().unwrap());
            assert_eq!(state.client_address(&headers(value), Some(peer)), expected, "{value:?}");
        }
        assert_eq!(state.client_address(&HeaderMap::new(), Some(peer)), None, "missing: not the proxy's");
    }

    #[test]
    fn an_empty_lines_gauges_are_set_to_zero_once_then_left_to_lapse() {
        let mut live = std::collections::HashSet::new();
        let (a, b) = (ConcertId::random(), ConcertId::random());
        assert!(!gauges_to_set(&mut live, a, true), "a line never seen busy gets no gauges");
        assert!(gauges_to_set(&mut live, b, false));
        assert!(gauges_to_set(&mut live, b, false), "set on every round while busy");
        assert!(gauges_to_set(&mut live, b, true), "set to 0 when it empties");
        assert!(!gauges_to_set(&mut live, b, true), "and then no more");
        assert!(gauges_to_set(&mut live, b, false), "until someone joins again");
    }
}
