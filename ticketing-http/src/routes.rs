//! The handlers. Each one reads the request, calls one service method and renders the answer;
//! no business rule lives here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde::de::DeserializeOwned;
use ticketing_core::StoreError;
use ticketing_core::catalog::{NewConcert, NewSchedule, SaleChange};
use ticketing_core::ids::{
    ConcertId, IdempotencyKey, Points, QueueToken, ReservationId, ScheduleId, SeatId, UserId,
};
use ticketing_core::queue::{self, TokenStatus};
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Clock, DomainError, TokenView};

use crate::AppState;
use crate::dto::{
    AccountBody, BalanceBody, ChargeRequest, ConcertBody, CreatedConcertBody, FiguresBody, HoldRequest,
    IssueTokenRequest, NewConcertRequest, PaymentBody, PaymentRequest, QueueRequest, RefundBody,
    ReservationBody, RevokedBody, SaleActionBody, SaleBody, SalesBody, ScheduleBody, SeatBody, TokenBody,
};
use crate::error::{ApiError, Health, Problem, StoreHealth};

/// The header carrying an idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The header carrying the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-admin-key";

/// The header naming the operator behind an admin change, for the audit trail.
pub const OPERATOR_HEADER: &str = "x-operator";

/// Who an admin change is recorded as: `X-Operator` (a name like a `userId`), or `admin`.
fn operator(headers: &HeaderMap) -> Result<UserId, ApiError> {
    let name = match headers.get(OPERATOR_HEADER) {
        None => "admin",
        Some(value) => value.to_str().map_err(|_| {
            ApiError::InvalidInput("X-Operator must be 1 to 64 letters, digits and . _ - @ :".into())
        })?,
    };
    UserId::parse(name).map_err(|e| ApiError::InvalidInput(format!("X-Operator: {e}")))
}

type St<Q, B, C> = State<Arc<AppState<Q, B, C>>>;

/// The queue token from `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct Bearer(pub QueueToken);

impl Bearer {
    /// The token of these headers.
    ///
    /// # Errors
    /// [`ApiError::MissingToken`], [`ApiError::MalformedToken`].
    pub fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        let value = headers.get(header::AUTHORIZATION).ok_or(ApiError::MissingToken)?;
        let text = value.to_str().map_err(|_| ApiError::MalformedToken)?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or(ApiError::MalformedToken)?;
        QueueToken::parse(token.trim()).map(Self).map_err(|_| ApiError::MalformedToken)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::of(&parts.headers)
    }
}

/// The optional `Idempotency-Key` header.
#[derive(Debug)]
pub struct IdemKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY_HEADER) else { return Ok(Self(None)) };
        let text =
            value.to_str().map_err(|_| ApiError::InvalidInput("Idempotency-Key must be ASCII".into()))?;
        IdempotencyKey::parse(text).map(|k| Self(Some(k))).map_err(|e| ApiError::InvalidInput(e.to_string()))
    }
}

/// A JSON body whose rejections are problem documents.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(request, state).await.map(|Json(value)| Self(value)).map_err(ApiError::from)
    }
}

/// An id in the path: a malformed one names nothing, so it is a 404.
fn path_id<T>(
    text: &str,
    parse: fn(&str) -> Result<T, ticketing_core::ids::ParseError>,
    missing: DomainError,
) -> Result<T, ApiError> {
    parse(text).map_err(|_| ApiError::from(missing))
}

/// An id in the body: a malformed one is a 422.
fn body_id<T>(
    text: &str,
    parse: fn(&str) -> Result<T, ticketing_core::ids::ParseError>,
) -> Result<T, ApiError> {
    parse(text).map_err(|e| ApiError::InvalidInput(e.to_string()))
}

fn token_response(
    view: &TokenView,
    status: StatusCode,
    settings: &ticketing_core::catalog::QueueSettings,
) -> Response {
    let mut response = (status, Json(TokenBody::from(view))).into_response();
    // A sold-out concert's line no longer moves: waiting buyers are not asked to come back.
    if view.status == TokenStatus::Waiting && !view.sold_out {
        let after = queue::poll_after_secs(view.eta_secs, settings);
        if let Ok(value) = HeaderValue::from_str(&after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// Ask for a queue token. A waiting token comes back with its place kept and its idle deadline
/// extended; an active one comes back unchanged (never extended); otherwise a new token joins
/// the back of the line.
#[utoipa::path(post, path = "/api/v1/queue/tokens", tag = "queue", request_body = IssueTokenRequest,
    responses(
        (status = 201, description = "a new token", body = TokenBody),
        (status = 200, description = "your existing token", body = TokenBody),
        (status = 401, description = "identity not proven", body = Problem),
        (status = 403, description = "userId is not the proven user", body = Problem),
        (status = 404, description = "unknown concert", body = Problem),
        (status = 409, description = "the concert is sold out (`sold_out`)", body = Problem),
        (status = 422, description = "bad userId or concertId", body = Problem),
        (status = 429, description = "`rate_limited`: this client address or this user asked for tokens too often \
            (`TICKETING_JOINS_PER_ADDRESS`, `TICKETING_JOINS_PER_USER`); retry after `Retry-After` seconds",
            body = Problem, headers(("Retry-After" = u64, description = "seconds until the budget allows another request"))),
    ))]
pub async fn issue_token<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<IssueTokenRequest>,
) -> Result<Response, ApiError> {
    let address = state.client_address(&headers, connection.map(|Extension(ConnectInfo(peer))| peer.ip()));
    let user = state.auth.identify(&headers, request.user_id.as_deref())?;
    let concert_id = body_id(&request.concert_id, ConcertId::parse)?;
    let view = state.service.issue_token_from(&user, concert_id, address).await?;
    let settings = state.queue_settings(concert_id).await?;
    let status = if view.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(token_response(&view, status, &settings))
}

/// Poll your token: status, place in line and ETA. Polling keeps a waiting token's place.
#[utoipa::path(get, path = "/api/v1/queue/tokens/current", tag = "queue", security(("queueToken" = [])),
    responses(
        (status = 200, description = "the token; Retry-After suggests the next poll", body = TokenBody),
        (status = 401, description = "missing, unknown, expired (`token_expired`) or revoked (`token_revoked`) token", body = Problem),
    ))]
pub async fn current_token<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
) -> Result<Response, ApiError> {
    let view = state.service.token_status(&token).await?;
    let settings = state.queue_settings(view.record.concert_id).await?;
    Ok(token_response(&view, StatusCode::OK, &settings))
}

/// Leave the line: your waiting token expires at once and everyone behind you moves up. To come
/// back, ask for a token again (a new place at the back).
#[utoipa::path(delete, path = "/api/v1/queue/tokens/current", tag = "queue", security(("queueToken" = [])),
    responses(
        (status = 204, description = "you left the line"),
        (status = 401, description = "missing, unknown, expired or revoked token (leaving twice: `token_expired`)", body = Problem),
        (status = 409, description = "`already_admitted`: the token is admitted, there is no place in line to give up", body = Problem),
    ))]
pub async fn leave<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
) -> Result<StatusCode, ApiError> {
    state.service.leave(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The concerts on sale.
#[utoipa::path(get, path = "/api/v1/concerts", tag = "catalog",
    responses((status = 200, body = [ConcertBody])))]
pub async fn concerts<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
) -> Result<Json<Vec<ConcertBody>>, ApiError> {
    let concerts = state.service.concerts().await?;
    Ok(Json(concerts.into_iter().map(|c| ConcertBody::from(&c)).collect()))
}

/// A concert's schedules with their available seats. Needs an ACTIVE token of that concert.
#[utoipa::path(get, path = "/api/v1/concerts/{concertId}/schedules", tag = "catalog", security(("queueToken" = [])),
    params(("concertId" = Uuid, Path, description = "the concert")),
    responses(
        (status = 200, body = [ScheduleBody]),
        (status = 401, body = Problem), (status = 403, description = "not admitted yet (with position) or another concert", body = Problem),
        (status = 404, body = Problem),
    ))]
pub async fn schedules<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    Path(concert_id): Path<String>,
) -> Result<Json<Vec<ScheduleBody>>, ApiError> {
    let concert_id = path_id(&concert_id, ConcertId::parse, DomainError::ConcertNotFound)?;
    let schedules = state.service.schedules(&token, concert_id).await?;
    Ok(Json(schedules.iter().map(ScheduleBody::from).collect()))
}

/// A schedule's seats with their live status. Needs an ACTIVE token of its concert.
#[utoipa::path(get, path = "/api/v1/schedules/{scheduleId}/seats", tag = "catalog", security(("queueToken" = [])),
    params(("scheduleId" = Uuid, Path, description = "the schedule")),
    responses((status = 200, body = [SeatBody]), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn seats<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    Path(schedule_id): Path<String>,
) -> Result<Response, ApiError> {
    let schedule_id = path_id(&schedule_id, ScheduleId::parse, DomainError::ScheduleNotFound)?;
    let seats = state.service.seats(&token, schedule_id).await?;
    let body = state.seat_lists.render(schedule_id, &seats);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// Hold a seat for `TICKETING_HOLD_TTL_SECS` (the whole time, whenever the token's active time
/// ends: the token that made a hold may pay it until the hold's deadline). Needs an ACTIVE token
/// of the seat's concert (403 `wrong_concert` otherwise). Safe to retry with an
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/reservations", tag = "booking", security(("queueToken" = [])), request_body = HoldRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry: 1 to 128 visible ASCII characters",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses(
        (status = 201, body = ReservationBody),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "`seat_unavailable`, `hold_limit`, or `buyer_limit`: you already bought the concert's `maxSeatsPerBuyer` seats", body = Problem),
        (status = 422, body = Problem),
    ))]
pub async fn hold<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    IdemKey(key): IdemKey,
    ApiJson(request): ApiJson<HoldRequest>,
) -> Result<(StatusCode, Json<ReservationBody>), ApiError> {
    let seat_id = body_id(&request.seat_id, SeatId::parse)?;
    let reservation = state.service.hold(&token, seat_id, key).await?;
    metrics::counter!("ticketing_holds_total").increment(1);
    Ok((StatusCode::CREATED, Json(ReservationBody::from(&reservation))))
}

/// One of your reservations, read with a token of its concert that is valid, expired by your
/// payment, or admitted and ended less than `TICKETING_HOLD_TTL_SECS` ago.
#[utoipa::path(get, path = "/api/v1/reservations/{reservationId}", tag = "booking", security(("queueToken" = [])),
    params(("reservationId" = Uuid, Path, description = "the reservation")),
    responses((status = 200, body = ReservationBody), (status = 401, body = Problem),
        (status = 403, description = "wrong_concert: a token of another concert", body = Problem),
        (status = 404, description = "no such reservation of yours", body = Problem)))]
pub async fn reservation<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    Path(id): Path<String>,
) -> Result<Json<ReservationBody>, ApiError> {
    let id = path_id(&id, ReservationId::parse, DomainError::ReservationNotFound)?;
    let reservation = state.service.reservation(&token, id).await?;
    Ok(Json(ReservationBody::from(&reservation)))
}

/// Let a held seat go (with a token of its concert, as for reading it).
#[utoipa::path(delete, path = "/api/v1/reservations/{reservationId}", tag = "booking", security(("queueToken" = [])),
    params(("reservationId" = Uuid, Path, description = "the reservation")),
    responses((status = 204, description = "released; the seat is available"), (status = 401, body = Problem),
        (status = 403, description = "wrong_concert: a token of another concert", body = Problem),
        (status = 404, body = Problem), (status = 409, description = "already paid", body = Problem)))]
pub async fn release<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(&id, ReservationId::parse, DomainError::ReservationNotFound)?;
    state.service.release(&token, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel one of your bookings and get its points back: the seat is available again (and may be
/// sold again), the reservation reads `CANCELLED`, a `REFUND` entry joins your ledger. Only within
/// the concert's cancellation window (`cancelUntilSecsBeforeStart` before the performance; a
/// concert without one lets only operators cancel), with a token of its concert that may read the
/// reservation. Safe to retry with an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/reservations/{reservationId}/cancel", tag = "booking", security(("queueToken" = [])),
    params(("reservationId" = Uuid, Path, description = "the booking"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry: 1 to 128 visible ASCII characters",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses((status = 200, body = RefundBody), (status = 401, body = Problem),
        (status = 403, description = "wrong_concert: a token of another concert", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "`not_paid` (a hold, not a booking), `already_cancelled`, or `cancellation_closed` (past the concert's window, or it has none)", body = Problem),
        (status = 422, body = Problem)))]
pub async fn cancel<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
) -> Result<Json<RefundBody>, ApiError> {
    let id = path_id(&id, ReservationId::parse, DomainError::ReservationNotFound)?;
    let refund = state.service.cancel(&token, id, key).await?;
    metrics::counter!("ticketing_refunds_total").increment(1);
    Ok(Json(RefundBody::from(&refund)))
}

/// Cancel any booking as an operator, at any time, and give its buyer the points back (as a
/// buyer's cancellation, without the window). Safe to retry with an `Idempotency-Key`. Needs
/// `X-Admin-Key`.
#[utoipa::path(post, path = "/api/v1/admin/reservations/{reservationId}/cancel", tag = "admin",
    params(("reservationId" = Uuid, Path, description = "the booking"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry: 1 to 128 visible ASCII characters",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses((status = 200, body = RefundBody), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "`not_paid` or `already_cancelled`", body = Problem),
        (status = 422, body = Problem)))]
pub async fn cancel_by_operator<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
) -> Result<Json<RefundBody>, ApiError> {
    let id = path_id(&id, ReservationId::parse, DomainError::ReservationNotFound)?;
    let refund = state.service.cancel_by_operator(id, key).await?;
    metrics::counter!("ticketing_refunds_total").increment(1);
    Ok(Json(RefundBody::from(&refund)))
}

/// Pay for a held seat, or for several at once (`reservationIds`: one debit of their sum, all or
/// none; a refusal of one leaves the others held), from your balance, with your ACTIVE token of
/// the holds' concert or with the token that made the hold (until the hold's deadline, whenever
/// that token's active time ended). The token expires once nothing it holds is left to pay. Racing payments of one hold: one
/// 201, the others 409 `already_paid`. Safe to retry with an `Idempotency-Key`, even after the
/// token expired.
#[utoipa::path(post, path = "/api/v1/payments", tag = "booking", security(("queueToken" = [])), request_body = PaymentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry: 1 to 128 visible ASCII characters",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses(
        (status = 201, body = PaymentBody),
        (status = 401, body = Problem), (status = 402, description = "insufficient_balance", body = Problem),
        (status = 403, description = "wrong_concert: a token of another concert; not_admitted", body = Problem),
        (status = 404, body = Problem), (status = 409, description = "`already_paid`, `already_cancelled`, or `buyer_limit`: the seats you bought and these would pass the concert's `maxSeatsPerBuyer`", body = Problem),
        (status = 410, description = "hold_expired or hold_released", body = Problem), (status = 422, body = Problem),
    ))]
pub async fn pay<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    IdemKey(key): IdemKey,
    ApiJson(request): ApiJson<PaymentRequest>,
) -> Result<(StatusCode, Json<PaymentBody>), ApiError> {
    let ids = match (&request.reservation_id, &request.reservation_ids) {
        (Some(one), None) => vec![body_id(one, ReservationId::parse)?],
        (None, Some(several)) => {
            several.iter().map(|id| body_id(id, ReservationId::parse)).collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            return Err(ApiError::InvalidInput(
                "name the holds to pay with exactly one of reservationId and reservationIds".into(),
            ));
        }
    };
    let receipt = state.service.pay_order(&token, &ids, key).await?;
    metrics::counter!("ticketing_purchases_total").increment(receipt.payments.len() as u64);
    Ok((StatusCode::CREATED, Json(PaymentBody::from(&receipt))))
}

/// Your own reservations, of every concert, newest first (at most 1,000): holds with their
/// deadlines, bookings, and what lapsed or was released, each with its status now. Read with a
/// token that is valid, expired by your payment, or admitted and ended less than
/// `TICKETING_HOLD_TTL_SECS` ago.
#[utoipa::path(get, path = "/api/v1/me/reservations", tag = "booking", security(("queueToken" = [])),
    responses((status = 200, body = [ReservationBody]), (status = 401, body = Problem)))]
pub async fn my_reservations<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
) -> Result<Json<Vec<ReservationBody>>, ApiError> {
    let reservations = state.service.my_reservations(&token).await?;
    Ok(Json(reservations.iter().map(ReservationBody::from).collect()))
}

/// Your balance and ledger: every charge and payment, oldest first, each with the balance after
/// it. The same tokens as for your reservations.
#[utoipa::path(get, path = "/api/v1/me/ledger", tag = "balance", security(("queueToken" = [])),
    responses((status = 200, body = AccountBody), (status = 401, body = Problem)))]
pub async fn my_ledger<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
) -> Result<Json<AccountBody>, ApiError> {
    let account = state.service.my_account(&token).await?;
    Ok(Json(AccountBody::from(&account)))
}

/// Your balance, with a token that is valid or was admitted and ended less than
/// `TICKETING_HOLD_TTL_SECS` ago (so a buyer holding a seat can top up and pay).
#[utoipa::path(get, path = "/api/v1/balance", tag = "balance", security(("queueToken" = [])),
    responses((status = 200, body = BalanceBody), (status = 401, body = Problem)))]
pub async fn balance<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
) -> Result<Json<BalanceBody>, ApiError> {
    let wallet = state.service.balance(&token).await?;
    Ok(Json(BalanceBody::from(&wallet)))
}

/// Add points to your balance (the same tokens as for reading it). Safe to retry with an
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/balance/charges", tag = "balance", security(("queueToken" = [])), request_body = ChargeRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry: 1 to 128 visible ASCII characters",
        min_length = 1, max_length = 128, pattern = "^[!-~]+$")),
    responses((status = 200, body = BalanceBody), (status = 401, body = Problem), (status = 422, description = "amount out of range", body = Problem)))]
pub async fn charge<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Bearer(token): Bearer,
    IdemKey(key): IdemKey,
    ApiJson(request): ApiJson<ChargeRequest>,
) -> Result<Json<BalanceBody>, ApiError> {
    let wallet = state.service.charge(&token, request.amount, key).await?;
    Ok(Json(BalanceBody::from(&wallet)))
}

/// Create a concert with its schedules and seats. Needs `X-Admin-Key` (checked by the route
/// layer before this runs); the route exists only when an admin key is configured.
#[utoipa::path(post, path = "/api/v1/admin/concerts", tag = "admin", request_body = NewConcertRequest,
    params(("X-Admin-Key" = String, Header, description = "the configured admin key")),
    responses((status = 201, body = CreatedConcertBody), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn create_concert<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    ApiJson(request): ApiJson<NewConcertRequest>,
) -> Result<(StatusCode, Json<CreatedConcertBody>), ApiError> {
    let schedules = request
        .schedules
        .iter()
        .map(|s| {
            let price = Points::new(s.price).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
            Ok(NewSchedule { starts_at: s.starts_at, seat_count: s.seat_count, price })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let new = NewConcert {
        title: request.title,
        schedules,
        queue: request.queue.with_defaults(ticketing_core::catalog::QueueSettings::default()),
        max_seats_per_buyer: request.max_seats_per_buyer,
        holds_per_token: request.holds_per_token,
        cancel_until_secs_before_start: request.cancel_until_secs_before_start,
        sales_open_at: request.sales_open_at,
        pre_queue: request.pre_queue.unwrap_or_default(),
    };
    let plan = state.service.create_concert(&new).await?;
    Ok((StatusCode::CREATED, Json(CreatedConcertBody::from(&plan))))
}

/// Pauses a concert's admission: the line keeps its places and admitted buyers their time, but
/// nobody more is admitted until the sale resumes, on every node from its next admission tick.
/// Pausing a paused sale changes nothing. Needs `X-Admin-Key`.
#[utoipa::path(post, path = "/api/v1/admin/concerts/{concertId}/pause", tag = "admin",
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key"),
        ("X-Operator" = Option<String>, Header, description = "who makes the change, for the audit trail (default `admin`): 1 to 64 letters, digits and `. _ - @ :`",
            min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$")),
    responses((status = 200, body = SaleBody), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn pause<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(concert_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SaleBody>, ApiError> {
    change_sale(&state, &concert_id, SaleChange::Pause, &headers).await
}

/// Resumes a paused concert's admission (on every node from its next admission tick). Resuming
/// a running sale changes nothing. Needs `X-Admin-Key`.
#[utoipa::path(post, path = "/api/v1/admin/concerts/{concertId}/resume", tag = "admin",
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key"),
        ("X-Operator" = Option<String>, Header, description = "who makes the change, for the audit trail (default `admin`): 1 to 64 letters, digits and `. _ - @ :`",
            min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$")),
    responses((status = 200, body = SaleBody), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn resume<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(concert_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SaleBody>, ApiError> {
    change_sale(&state, &concert_id, SaleChange::Resume, &headers).await
}

/// Changes a running concert's waiting-room settings: the fields given replace the current ones
/// (what is left out stays), every node follows from its next admission tick, and the settings'
/// version moves on by one. Tokens already admitted keep the time they were given; waiting ones
/// get the new idle timeout at their next poll. Needs `X-Admin-Key`.
#[utoipa::path(patch, path = "/api/v1/admin/concerts/{concertId}/queue", tag = "admin", request_body = QueueRequest,
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key"),
        ("X-Operator" = Option<String>, Header, description = "who makes the change, for the audit trail (default `admin`): 1 to 64 letters, digits and `. _ - @ :`",
            min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$")),
    responses((status = 200, body = SaleBody), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn change_queue<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(concert_id): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<QueueRequest>,
) -> Result<Json<SaleBody>, ApiError> {
    change_sale(&state, &concert_id, SaleChange::Queue(request.patch()), &headers).await
}

async fn change_sale<Q: QueueStore, B: BookingStore, C: Clock>(
    state: &AppState<Q, B, C>,
    concert_id: &str,
    change: SaleChange,
    headers: &HeaderMap,
) -> Result<Json<SaleBody>, ApiError> {
    let concert_id = path_id(concert_id, ConcertId::parse, DomainError::ConcertNotFound)?;
    let operator = operator(headers)?;
    let concert = state.service.change_sale(concert_id, change, &operator).await?;
    Ok(Json(SaleBody::from(&concert)))
}

/// Revokes the user's token for the concert: the token answers 401 `token_revoked` from now
/// on, on every node; a waiting one gives up its place and an admitted one its admission; its
/// live holds are released (their seats free again); the revocation is kept where the money is,
/// so a queue store that loses its data gives the token back revoked; the audit trail gets a
/// `revoke` entry naming the user. Revoking again changes nothing more. The user may join the
/// line again, at the back. Needs `X-Admin-Key`.
#[utoipa::path(post, path = "/api/v1/admin/concerts/{concertId}/users/{userId}/revoke", tag = "admin",
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("userId" = String, Path, description = "whose token: 1 to 64 letters, digits and `. _ - @ :`",
            min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key"),
        ("X-Operator" = Option<String>, Header, description = "who revokes, for the audit trail (default `admin`): 1 to 64 letters, digits and `. _ - @ :`",
            min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$")),
    responses((status = 200, body = RevokedBody), (status = 401, body = Problem),
        (status = 404, description = "no such concert, or the user has no token for it", body = Problem),
        (status = 422, body = Problem)))]
pub async fn revoke<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path((concert_id, user_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<RevokedBody>, ApiError> {
    let concert_id = path_id(&concert_id, ConcertId::parse, DomainError::ConcertNotFound)?;
    let user = UserId::parse(&user_id).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let operator = operator(&headers)?;
    match state.service.revoke(concert_id, &user, &operator).await {
        Ok(revoked) => Ok(Json(RevokedBody::from(&revoked))),
        // The user's token, not the caller's: not a credential problem.
        Err(ticketing_core::Error::Domain(DomainError::TokenNotFound)) => Err(ApiError::NotFound),
        Err(error) => Err(error.into()),
    }
}

/// A concert's live figures: its line (waiting, active, the measured admission rate per minute)
/// and its seats (held, sold, available, revenue), read now. Needs `X-Admin-Key`.
#[utoipa::path(get, path = "/api/v1/admin/concerts/{concertId}/figures", tag = "admin",
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key")),
    responses((status = 200, body = FiguresBody), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn figures<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(concert_id): Path<String>,
) -> Result<Json<FiguresBody>, ApiError> {
    let concert_id = path_id(&concert_id, ConcertId::parse, DomainError::ConcertNotFound)?;
    let figures = state.service.figures(concert_id).await?;
    Ok(Json(FiguresBody::from(&figures)))
}

/// A concert's audit trail: every change of its sale (pause, resume, queue settings), oldest
/// first, with who made it, when, and the sale before and after. Needs `X-Admin-Key`.
#[utoipa::path(get, path = "/api/v1/admin/concerts/{concertId}/actions", tag = "admin",
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key")),
    responses((status = 200, body = [SaleActionBody]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn sale_actions<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(concert_id): Path<String>,
) -> Result<Json<Vec<SaleActionBody>>, ApiError> {
    let concert_id = path_id(&concert_id, ConcertId::parse, DomainError::ConcertNotFound)?;
    let actions = state.service.sale_actions(concert_id).await?;
    Ok(Json(actions.iter().map(SaleActionBody::from).collect()))
}

/// What a concert sold, seat by seat: each seat's status and, for booked seats, the reservation
/// and payment behind it. For operators and load-test audits. Needs `X-Admin-Key`.
#[utoipa::path(get, path = "/api/v1/admin/concerts/{concertId}/sales", tag = "admin",
    params(("concertId" = Uuid, Path, description = "the concert"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key")),
    responses((status = 200, body = SalesBody), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn sales<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(concert_id): Path<String>,
) -> Result<Json<SalesBody>, ApiError> {
    let concert_id = path_id(&concert_id, ConcertId::parse, DomainError::ConcertNotFound)?;
    let report = state.service.sales(concert_id).await?;
    Ok(Json(SalesBody::new(concert_id.as_uuid(), &report)))
}

/// A user's balance with its ledger (a user never charged has balance 0 and no entries). For
/// operators and load-test audits. Needs `X-Admin-Key`.
#[utoipa::path(get, path = "/api/v1/admin/users/{userId}/account", tag = "admin",
    params(("userId" = String, Path, description = "the user: 1 to 64 letters, digits and `. _ - @ :`",
        min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$"),
        ("X-Admin-Key" = String, Header, description = "the configured admin key")),
    responses((status = 200, body = AccountBody), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn account<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
    Path(user_id): Path<String>,
) -> Result<Json<AccountBody>, ApiError> {
    let user = UserId::parse(&user_id).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let account = state.service.account(&user).await?;
    Ok(Json(AccountBody::from(&account)))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: whether each store answers, both checked at once, each given half the request
/// timeout (so the answer can say which one did not). An answer is reused for
/// `READINESS_CACHE_MS`, and concurrent checks wait for the one running, so probes cannot flood
/// the stores.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "every store answers", body = ReadyBody),
        (status = 503, description = "a store does not answer (`not_ready`, with `stores`); Retry-After: 1",
            body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz<Q: QueueStore, B: BookingStore, C: Clock>(
    State(state): St<Q, B, C>,
) -> Result<Json<ReadyBody>, ApiError> {
    let mut last = state.readiness.lock().await;
    let fresh = std::time::Duration::from_millis(ticketing_core::limits::READINESS_CACHE_MS);
    let stores = match *last {
        Some((at, stores)) if at.elapsed() < fresh => stores,
        _ => {
            let stores = check_stores(&state).await;
            *last = Some((tokio::time::Instant::now(), stores));
            stores
        }
    };
    drop(last);
    if stores.ready() {
        Ok(Json(ReadyBody { status: "ready", stores }))
    } else {
        Err(ApiError::NotReady(stores))
    }
}

/// Pings both stores at once, each within half the request timeout.
async fn check_stores<Q: QueueStore, B: BookingStore, C: Clock>(state: &AppState<Q, B, C>) -> StoreHealth {
    let limit = state.request_timeout / 2;
    let health = |answer: Result<Result<(), StoreError>, tokio::time::error::Elapsed>| match answer {
        Ok(Ok(())) => Health::Up,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: a store does not answer");
            Health::Down
        }
        Err(_) => {
            tracing::warn!(?limit, "readiness: a store did not answer in time");
            Health::Down
        }
    };
    let (queue, booking) = tokio::join!(
        tokio::time::timeout(limit, state.service.queue_store().ping_queue()),
        tokio::time::timeout(limit, state.service.booking_store().ping_catalog())
    );
    StoreHealth { queue: health(queue), booking: health(booking) }
}

/// `/readyz` when every store answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadyBody {
    /// Always `ready`.
    pub status: &'static str,
    /// Each store: `up`.
    pub stores: StoreHealth,
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics<Q: QueueStore, B: BookingStore, C: Clock>(State(state): St<Q, B, C>) -> Response {
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
