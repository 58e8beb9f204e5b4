//! One error type for every handler, rendered as `application/problem+json` with a stable
//! snake_case `code`.
//!
//! The mapping from domain errors to statuses is one exhaustive `match` with no catch-all arm:
//! a new domain error does not compile until someone decides its status here. 5xx bodies are
//! opaque; their cause is logged.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use ticketing_core::{DomainError, Error, StoreError};
use utoipa::ToSchema;

/// What went wrong in a request.
#[derive(Debug)]
pub enum ApiError {
    /// The service refused or failed.
    Core(Error),
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A bearer token that is not a token at all.
    MalformedToken,
    /// The identity proof the configured auth mode needs is missing or invalid.
    Unauthenticated(String),
    /// The `userId` in the body is not the proven identity.
    IdentityMismatch,
    /// Admin routes without the right `X-Admin-Key`.
    AdminKey,
    /// The body could not be read as the JSON the route takes.
    Json(JsonRejection),
    /// A value in the request is malformed.
    InvalidInput(String),
    /// No such route or resource.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The handler ran past its timeout.
    Timeout,
    /// `/readyz`: a store does not answer.
    NotReady(StoreHealth),
    /// The server is at its bound of requests in flight.
    Overloaded,
    /// The request's body is larger than the server accepts.
    BodyTooLarge,
    /// The request's body could not be read (the client went away while sending it).
    BodyUnreadable,
}

/// Whether each store answered a readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct StoreHealth {
    /// The queue store (tokens, the line, admission).
    pub queue: Health,
    /// The booking store (catalog, holds, balances, payments).
    pub booking: Health,
}

impl StoreHealth {
    /// Both stores answered.
    #[must_use]
    pub fn ready(self) -> bool {
        self.queue == Health::Up && self.booking == Health::Up
    }
}

/// Whether a store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// It answered.
    Up,
    /// It failed or did not answer in time.
    Down,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self::Core(error)
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        Self::Core(Error::Domain(error))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::Json(rejection)
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this instance.
    pub detail: String,
    /// A stable snake_case code to branch on.
    pub code: String,
    /// For `not_admitted`: the place in line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// For `insufficient_balance`: the balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// For `insufficient_balance`: the price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<i64>,
    /// For `not_ready`: which store answered and which did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stores: Option<StoreHealth>,
}

fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
    Problem {
        kind: format!("urn:ticketing:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.into(),
        code: code.to_owned(),
        position: None,
        balance: None,
        required: None,
        stores: None,
    }
}

/// The status and code of every domain error. Exhaustive on purpose: no `_` arm.
fn domain_problem(error: &DomainError) -> Problem {
    use DomainError as D;
    let (status, code) = match error {
        D::ConcertNotFound => (StatusCode::NOT_FOUND, "concert_not_found"),
        D::SoldOut => (StatusCode::CONFLICT, "sold_out"),
        D::ScheduleNotFound => (StatusCode::NOT_FOUND, "schedule_not_found"),
        D::SeatNotFound => (StatusCode::NOT_FOUND, "seat_not_found"),
        // Someone else's reservation is indistinguishable from none at all.
        D::ReservationNotFound | D::NotOwner => (StatusCode::NOT_FOUND, "reservation_not_found"),
        D::TokenNotFound => (StatusCode::UNAUTHORIZED, "invalid_token"),
        D::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
        D::TokenRevoked => (StatusCode::UNAUTHORIZED, "token_revoked"),
        D::NotAdmitted { .. } => (StatusCode::FORBIDDEN, "not_admitted"),
        D::WrongConcert => (StatusCode::FORBIDDEN, "wrong_concert"),
        D::AlreadyAdmitted => (StatusCode::CONFLICT, "already_admitted"),
        D::SeatUnavailable => (StatusCode::CONFLICT, "seat_unavailable"),
        D::HoldLimitReached { .. } => (StatusCode::CONFLICT, "hold_limit"),
        D::BuyerLimitReached { .. } => (StatusCode::CONFLICT, "buyer_limit"),
        D::HoldExpired => (StatusCode::GONE, "hold_expired"),
        D::AlreadyPaid => (StatusCode::CONFLICT, "already_paid"),
        D::HoldReleased => (StatusCode::GONE, "hold_released"),
        D::NotPaid => (StatusCode::CONFLICT, "not_paid"),
        D::AlreadyCancelled => (StatusCode::CONFLICT, "already_cancelled"),
        D::CancellationClosed => (StatusCode::CONFLICT, "cancellation_closed"),
        D::InsufficientBalance { .. } => (StatusCode::PAYMENT_REQUIRED, "insufficient_balance"),
        D::InvalidAmount { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        D::BalanceLimitExceeded { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "balance_limit_exceeded"),
        D::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        D::InvalidInput { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        D::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
    };
    let detail = match error {
        D::NotOwner => D::ReservationNotFound.to_string(),
        other => other.to_string(),
    };
    let mut body = problem(status, code, detail);
    match error {
        D::NotAdmitted { position } => body.position = Some(*position),
        D::InsufficientBalance { balance, required } => {
            body.balance = Some(balance.get());
            body.required = Some(required.get());
        }
        _ => {}
    }
    body
}

impl ApiError {
    /// The problem document, and whether the response needs `Retry-After: 1`.
    fn problem(&self) -> (Problem, bool) {
        let internal = || problem(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error");
        match self {
            Self::Core(Error::Domain(error)) => (domain_problem(error), false),
            Self::Core(Error::Contention) => (
                problem(StatusCode::SERVICE_UNAVAILABLE, "contention", "too much contention, try again"),
                true,
            ),
            // A store down, or a record it gave a moment ago gone (its data lost or being
            // restored): an outage, not a fault of the request or of this code.
            Self::Core(Error::Store(StoreError::Backend { .. } | StoreError::Missing(_))) => {
                (problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "service unavailable"), true)
            }
            Self::Core(Error::Store(
                StoreError::Conflict(_) | StoreError::HoldLimitReached | StoreError::Corrupt(_),
            )) => (internal(), false),
            Self::MissingToken => (
                problem(StatusCode::UNAUTHORIZED, "missing_token", "send Authorization: Bearer <token>"),
                false,
            ),
            Self::MalformedToken => {
                (problem(StatusCode::UNAUTHORIZED, "invalid_token", "the bearer token is malformed"), false)
            }
            Self::Unauthenticated(detail) => {
                (problem(StatusCode::UNAUTHORIZED, "unauthenticated", detail.clone()), false)
            }
            Self::IdentityMismatch => (
                problem(StatusCode::FORBIDDEN, "identity_mismatch", "userId is not the authenticated user"),
                false,
            ),
            Self::AdminKey => (
                problem(StatusCode::UNAUTHORIZED, "admin_key_required", "a valid X-Admin-Key is required"),
                false,
            ),
            Self::Json(rejection) => (json_problem(rejection), false),
            Self::InvalidInput(detail) => {
                (problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", detail.clone()), false)
            }
            Self::NotFound => (problem(StatusCode::NOT_FOUND, "not_found", "no such resource"), false),
            Self::MethodNotAllowed => (
                problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here"),
                false,
            ),
            Self::Timeout => {
                (problem(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long"), true)
            }
            Self::BodyTooLarge => (
                problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large"),
                false,
            ),
            Self::BodyUnreadable => (
                problem(StatusCode::BAD_REQUEST, "unreadable_body", "the request body could not be read"),
                false,
            ),
            Self::Overloaded => (
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the server is at capacity, try again",
                ),
                true,
            ),
            Self::NotReady(stores) => {
                let mut body =
                    problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "a store does not answer");
                body.stores = Some(*stores);
                (body, true)
            }
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let status = rejection.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "malformed_json",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_input",
    };
    problem(status, code, rejection.body_text())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (body, retry) = self.problem();
        if body.status >= 500 {
            match &self {
                Self::Core(error) => {
                    tracing::error!(error = %error_chain(error), code = %body.code, "request failed")
                }
                // Shedding and readiness answer by design, often under load: counted, not logged.
                Self::Overloaded | Self::NotReady(_) => {}
                other => tracing::warn!(?other, code = %body.code, "request failed"),
            }
        }
        let status = StatusCode::from_u16(body.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        let retry_after = match &self {
            Self::Core(Error::Domain(DomainError::RateLimited { retry_after_secs, .. })) => {
                Some(*retry_after_secs)
            }
            _ => retry.then_some(1),
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An error and all its sources, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
