//! The JSON bodies of the API: camelCase, RFC 3339 UTC times, points as integers.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use std::sync::Arc;

use ticketing_core::catalog::{
    Concert, ConcertPlan, Opening, PreQueue, QueuePatch, QueueSettings, SaleAction, SaleState,
    ScheduleAvailability, Seat, SeatList, SeatStatus,
};
use ticketing_core::hold::Reservation;
use ticketing_core::ids::ScheduleId;
use ticketing_core::payment::{LedgerEntry, PaymentReceipt, RefundReceipt, Wallet};
use ticketing_core::{Account, SaleFigures, ScheduleSales, SeatSale, TokenView};
use utoipa::ToSchema;
use uuid::Uuid;

/// Times are written as RFC 3339 in UTC with millisecond precision (`2026-11-21T06:00:00.000Z`).
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// [`rfc3339`] for an optional time (`null` when absent).
#[allow(clippy::ref_option)] // serde's `serialize_with` hands over `&Option<_>`
fn rfc3339_opt<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// An integer as JSON may spell it: JSON Schema's `integer` admits a number with a zero fraction
/// (`5.0`), so the server does too.
fn integral<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let out_of_range = || D::Error::custom(format!("{number} is out of range"));
    if let Some(n) = number.as_i64() {
        return T::try_from(n).map_err(|_| out_of_range());
    }
    if let Some(n) = number.as_u64() {
        return T::try_from(n).map_err(|_| out_of_range());
    }
    match number.as_f64() {
        #[allow(clippy::cast_possible_truncation)] // Whole and within i64's range: exact.
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => T::try_from(f as i64).map_err(|_| out_of_range()),
        _ => Err(D::Error::custom(format!("expected an integer, got {number}"))),
    }
}

/// A JSON object only (serde would also build a struct from an array of its fields in order,
/// which the schema does not allow).
fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(deserializer)? {
        value @ serde_json::Value::Object(_) => serde_json::from_value(value).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("expected an object, got {other}"))),
    }
}

/// [`integral`] for a field that may be left out.
fn integral_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Wrapped<T: TryFrom<i64> + TryFrom<u64>>(#[serde(deserialize_with = "integral")] T);
    Ok(Option::<Wrapped<T>>::deserialize(deserializer)?.map(|Wrapped(value)| value))
}

/// `POST /api/v1/queue/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// Who asks. Taken at its word only with `TICKETING_AUTH=none`; with the other modes it may
    /// be left out, and must match the proven identity when given. 1 to 64 letters, digits and
    /// `. _ - @ :`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@:-]+$")]
    pub user_id: Option<String>,
    /// The concert to queue for.
    #[schema(value_type = Uuid)]
    pub concert_id: String,
}

/// A queue token as its holder sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBody {
    /// The credential: send it as `Authorization: Bearer <token>`, whole. Its first 72
    /// characters name the token; the signed claim after the `.` lets any node give back your
    /// place in line, or your admission, if the server's queue store loses its data.
    #[schema(max_length = 512)]
    pub token: String,
    /// The user it is bound to.
    pub user_id: String,
    /// The concert it is bound to.
    pub concert_id: Uuid,
    /// `WAITING`, `ACTIVE` or `EXPIRED`.
    pub status: String,
    /// 1-based place in line, while waiting; `null` in a pre-queue drawn at random until the
    /// opening's draw gives it a place (`salesOpenAt` is then given).
    pub position: Option<u64>,
    /// Estimated seconds until admission, while waiting; `null` when no honest estimate is at
    /// most a day (86,400 s), and while the sale is paused. Derived from the measured admission rate, never faster than the
    /// rate cap and never slower than capacity allows (`maxActive` per active time); before the
    /// opening it counts from `salesOpenAt` (in a drawn pre-queue it is the time to the opening).
    pub eta_seconds: Option<u64>,
    /// The token's number in its concert's line, while waiting (with `position`): fixed for the
    /// life of the wait, except that the opening's draw deals a random pre-queue's numbers out
    /// again, once; smaller is earlier; admission follows it. (`position` is how many are ahead
    /// now.) After the draw the answer's `token` carries a claim of the new number: use it.
    pub line_number: Option<u64>,
    /// The concert is sold out (every seat sold): a waiting token need not poll any more (its
    /// answer has no `Retry-After`), and nobody more may join.
    pub sold_out: bool,
    /// When the sale opens, while the token waits in its pre-queue (before the opening nobody
    /// is admitted; `etaSeconds` counts from it). Absent otherwise.
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// When the token was admitted, while active.
    #[serde(serialize_with = "rfc3339_opt")]
    pub admitted_at: Option<DateTime<Utc>>,
    /// When the token stops being valid unless polled (waiting) or at all (active).
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

impl From<&TokenView> for TokenBody {
    fn from(view: &TokenView) -> Self {
        Self {
            token: view.record.token.credential().to_owned(),
            user_id: view.record.user_id.to_string(),
            concert_id: view.record.concert_id.as_uuid(),
            status: screaming(&view.status),
            position: view.position,
            eta_seconds: view.eta_secs,
            // Hidden with the position (a pre-queue drawn at the opening has no place before it).
            line_number: view.position.and(view.record.seq()),
            sold_out: view.sold_out,
            sales_open_at: view.opens_at,
            admitted_at: view.record.admitted_at(),
            expires_at: view.expires_at(),
        }
    }
}

/// Serializes a unit-like enum to its SCREAMING_SNAKE_CASE name.
fn screaming<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One concert in the list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcertBody {
    /// Its id.
    pub concert_id: Uuid,
    /// Its title.
    pub title: String,
    /// The most seats one buyer may buy of it; absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seats_per_buyer: Option<u32>,
    /// How many seats one token may hold at once (and pay in one payment); absent: the
    /// server's setting (`TICKETING_HOLDS_PER_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds_per_token: Option<u32>,
    /// Until how many seconds before a performance its buyers may cancel a booking; absent:
    /// they may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_until_secs_before_start: Option<u64>,
    /// When its sale opens; absent: it is open. Buyers may join before and wait in a pre-queue.
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// How its pre-queue is ordered at the opening: `random` (drawn once) or `fifo`.
    pub pre_queue: String,
    /// Whether its sale is open (always, for a concert without `salesOpenAt`).
    pub open: bool,
    /// Its opening, once recorded: when, and the seed its pre-queue was drawn with (anyone in
    /// the pre-queue can check the draw). Absent before the opening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened: Option<OpeningBody>,
}

impl From<&Concert> for ConcertBody {
    fn from(c: &Concert) -> Self {
        Self {
            concert_id: c.id.as_uuid(),
            title: c.title.clone(),
            max_seats_per_buyer: c.max_seats_per_buyer,
            holds_per_token: c.holds_per_token,
            cancel_until_secs_before_start: c.cancel_until_secs_before_start,
            sales_open_at: c.sales_open_at,
            pre_queue: c.pre_queue.as_str().to_owned(),
            open: !c.before_opening(),
            opened: c.opened.map(OpeningBody::from),
        }
    }
}

/// One schedule with its available seats.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleBody {
    /// Its id.
    pub schedule_id: Uuid,
    /// When the performance starts.
    #[serde(serialize_with = "rfc3339")]
    pub starts_at: DateTime<Utc>,
    /// Seats that can be held right now.
    pub available_seats: u32,
}

impl From<&ScheduleAvailability> for ScheduleBody {
    fn from(s: &ScheduleAvailability) -> Self {
        Self {
            schedule_id: s.schedule.id.as_uuid(),
            starts_at: s.schedule.starts_at,
            available_seats: s.available_seats,
        }
    }
}

/// One seat with its live status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatBody {
    /// Its id.
    pub seat_id: Uuid,
    /// Its number within the schedule.
    pub number: u32,
    /// Its price in points.
    pub price: i64,
    /// `AVAILABLE`, `HELD` or `BOOKED`.
    #[schema(value_type = String)]
    pub status: SeatStatus,
}

impl From<(&Seat, SeatStatus)> for SeatBody {
    fn from((seat, status): (&Seat, SeatStatus)) -> Self {
        Self { seat_id: seat.id.as_uuid(), number: seat.number, price: seat.price.get(), status }
    }
}

/// Seat lists as JSON, written from each seat's JSON kept up to its status: a schedule's seats
/// never change, so what [`SeatBody`]'s serializer writes for a seat before the status value is
/// written once per seat map and copied afterwards; only the status is new in each list. The
/// bytes are exactly what serializing `Vec<SeatBody>` writes (a test checks it); should the two
/// ever disagree on a seat, the list is serialized as a whole instead.
#[derive(Debug, Default)]
pub struct SeatListJson {
    /// Per schedule: the seat map the fragments were made for, and the fragments.
    cache: std::sync::RwLock<std::collections::HashMap<ScheduleId, SeatFragments>>,
}

/// A seat map and the JSON of each of its seats up to the status value.
#[derive(Debug, Clone)]
struct SeatFragments {
    seats: Arc<[Seat]>,
    fragments: Arc<[Box<str>]>,
    /// The fragments' total length.
    bytes: usize,
}

/// Seats whose fragments (about 100 bytes each) one process keeps, over all schedules, as the
/// core bounds its seat maps ([`ticketing_core::limits::SEAT_MAP_CACHE_SEATS_MAX`]).
const SEAT_LIST_JSON_CACHE_SEATS_MAX: usize = ticketing_core::limits::SEAT_MAP_CACHE_SEATS_MAX;

impl SeatListJson {
    /// `list` (of `schedule`) as a JSON array of [`SeatBody`].
    #[must_use]
    pub fn render(&self, schedule: ScheduleId, list: &SeatList) -> Vec<u8> {
        let Some(kept) = self.fragments(schedule, &list.seats) else {
            return serde_json::to_vec(&list.iter().map(SeatBody::from).collect::<Vec<_>>())
                .unwrap_or_default();
        };
        // Each seat adds its status (at most 11 bytes with quotes), `}` and `,`.
        let mut out = Vec::with_capacity(kept.bytes + list.len() * 13 + 2);
        out.push(b'[');
        for (i, (fragment, status)) in kept.fragments.iter().zip(list.statuses.iter()).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(fragment.as_bytes());
            out.extend_from_slice(status_json(*status).as_bytes());
            out.push(b'}');
        }
        out.push(b']');
        out
    }

    /// The seats' fragments, made once per seat map; `None` if a seat's JSON does not have the
    /// expected shape.
    fn fragments(&self, schedule: ScheduleId, seats: &Arc<[Seat]>) -> Option<SeatFragments> {
        let read = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(kept) = read.get(&schedule) {
            if Arc::ptr_eq(&kept.seats, seats) {
                return Some(kept.clone());
            }
        }
        drop(read);
        let fragments: Arc<[Box<str>]> = seats.iter().map(fragment).collect::<Option<_>>()?;
        let bytes = fragments.iter().map(|f| f.len()).sum();
        let kept = SeatFragments { seats: Arc::clone(seats), fragments, bytes };
        let mut cache = self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.values().map(|k| k.seats.len()).sum::<usize>() + seats.len() > SEAT_LIST_JSON_CACHE_SEATS_MAX
        {
            cache.clear();
        }
        cache.insert(schedule, kept.clone());
        Some(kept)
    }
}

/// What [`SeatBody`]'s serializer writes for `seat` up to its status value: the body as
/// serialized with any status, cut before that status's JSON string (`None` if it does not end
/// with it).
fn fragment(seat: &Seat) -> Option<Box<str>> {
    let status = SeatStatus::Available;
    let json = serde_json::to_string(&SeatBody::from((seat, status))).ok()?;
    json.strip_suffix(&format!("{}}}", status_json(status))).map(Into::into)
}

/// A status as its JSON string, quotes included (`SeatStatus`'s serde names; the seat-list test
/// compares the whole output with serde's).
fn status_json(status: SeatStatus) -> &'static str {
    match status {
        SeatStatus::Available => "\"AVAILABLE\"",
        SeatStatus::Held => "\"HELD\"",
        SeatStatus::Booked => "\"BOOKED\"",
    }
}

/// `POST /api/v1/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HoldRequest {
    /// The seat to hold.
    #[schema(value_type = Uuid)]
    pub seat_id: String,
}

/// A reservation (a hold of one seat).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationBody {
    /// Its id.
    pub reservation_id: Uuid,
    /// The seat.
    pub seat_id: Uuid,
    /// The seat's schedule.
    pub schedule_id: Uuid,
    /// `HELD`, `CONFIRMED`, `EXPIRED`, `RELEASED` or `CANCELLED` (paid, then cancelled and
    /// refunded).
    pub status: String,
    /// The price in points.
    pub price: i64,
    /// When the hold lapses unless paid.
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

impl From<&Reservation> for ReservationBody {
    fn from(r: &Reservation) -> Self {
        Self {
            reservation_id: r.id.as_uuid(),
            seat_id: r.seat_id.as_uuid(),
            schedule_id: r.schedule_id.as_uuid(),
            status: screaming(&r.status),
            price: r.price.get(),
            expires_at: r.expires_at,
        }
    }
}

/// `POST /api/v1/payments`: exactly one of `reservationId` (one hold) and `reservationIds`
/// (several holds, paid together: all or none).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentRequest {
    /// The held reservation to pay for.
    #[schema(value_type = Option<Uuid>)]
    #[serde(default)]
    pub reservation_id: Option<String>,
    /// The held reservations to pay for in one payment (1 to 100, none twice): one debit of
    /// their sum; if any one cannot be paid, none is, and the others stay held.
    #[schema(value_type = Option<std::collections::BTreeSet<Uuid>>, min_items = 1, max_items = 100)]
    #[serde(default)]
    pub reservation_ids: Option<Vec<String>>,
}

/// A completed payment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentBody {
    /// The id of its first seat's payment (its only one's, for a payment of one hold).
    pub payment_id: Uuid,
    /// The reservation of its first seat.
    pub reservation_id: Uuid,
    /// Points paid: the sum over its seats.
    pub amount: i64,
    /// The balance right after.
    pub balance: i64,
    /// Always `COMPLETED`.
    pub status: String,
    /// Each seat's payment (each with its own PAYMENT ledger entry), in the order of their seat
    /// ids.
    pub payments: Vec<PaidSeatBody>,
}

/// One seat of a completed payment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaidSeatBody {
    /// The payment's id.
    pub payment_id: Uuid,
    /// The reservation it confirmed.
    pub reservation_id: Uuid,
    /// The seat it booked.
    pub seat_id: Uuid,
    /// Points paid for it.
    pub amount: i64,
}

impl From<&PaymentReceipt> for PaymentBody {
    fn from(r: &PaymentReceipt) -> Self {
        let payments: Vec<PaidSeatBody> = r
            .payments
            .iter()
            .map(|p| PaidSeatBody {
                payment_id: p.id.as_uuid(),
                reservation_id: p.reservation_id.as_uuid(),
                seat_id: p.seat_id.as_uuid(),
                amount: p.amount.get(),
            })
            .collect();
        Self {
            payment_id: payments.first().map_or_else(Uuid::nil, |p| p.payment_id),
            reservation_id: payments.first().map_or_else(Uuid::nil, |p| p.reservation_id),
            amount: r.total().get(),
            balance: r.balance.get(),
            status: "COMPLETED".to_owned(),
            payments,
        }
    }
}

/// A cancelled booking (`POST /api/v1/reservations/{reservationId}/cancel`, or an operator's).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundBody {
    /// The booking, now `CANCELLED`.
    pub reservation_id: Uuid,
    /// The payment refunded.
    pub payment_id: Uuid,
    /// The seat, available again.
    pub seat_id: Uuid,
    /// Whose points came back.
    pub user_id: String,
    /// How many.
    pub amount: i64,
    /// The buyer's balance right after.
    pub balance: i64,
    /// When (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub refunded_at: DateTime<Utc>,
    /// Always `CANCELLED`.
    pub status: String,
}

impl From<&RefundReceipt> for RefundBody {
    fn from(r: &RefundReceipt) -> Self {
        Self {
            reservation_id: r.reservation_id.as_uuid(),
            payment_id: r.payment_id.as_uuid(),
            seat_id: r.seat_id.as_uuid(),
            user_id: r.user_id.to_string(),
            amount: r.amount.get(),
            balance: r.balance.get(),
            refunded_at: r.at,
            status: "CANCELLED".to_owned(),
        }
    }
}

/// `POST /api/v1/balance/charges`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChargeRequest {
    /// Points to add: 1 to `CHARGE_MAX_POINTS`.
    #[schema(minimum = 1, maximum = 10_000_000)]
    #[serde(deserialize_with = "integral")]
    pub amount: i64,
}

/// A balance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceBody {
    /// Whose.
    pub user_id: String,
    /// Points.
    pub balance: i64,
}

impl From<&Wallet> for BalanceBody {
    fn from(w: &Wallet) -> Self {
        Self { user_id: w.user_id.to_string(), balance: w.balance.get() }
    }
}

/// `POST /api/v1/admin/concerts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewConcertRequest {
    /// The title: 1 to 200 characters once trimmed.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: String,
    /// The performance dates.
    #[schema(min_items = 1, max_items = 100)]
    pub schedules: Vec<NewScheduleRequest>,
    /// Waiting-room caps; defaults apply to what is left out.
    #[serde(default, deserialize_with = "object")]
    pub queue: QueueRequest,
    /// The most seats one user may buy of this concert, across tokens and retries (a payment
    /// past it is refused 409 `buyer_limit`); left out: no cap beyond the holds a token may have.
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub max_seats_per_buyer: Option<u32>,
    /// How many seats one token may hold at once, to pay them in one payment (1 to 100; never
    /// more than `maxSeatsPerBuyer`); left out: the server's setting (`TICKETING_HOLDS_PER_TOKEN`,
    /// 1 by default).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub holds_per_token: Option<u32>,
    /// Until how many seconds before a performance its buyers may cancel a booking and get
    /// their points back (0 to 31,622,400, a year); left out: buyers may not cancel (an operator
    /// always may).
    #[schema(minimum = 0, maximum = 31_622_400)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub cancel_until_secs_before_start: Option<u64>,
    /// When the sale opens (RFC 3339, in the years 1900 to 8999); left out: at once. Buyers may
    /// join before: they wait in a pre-queue, and nobody is admitted until the opening.
    #[schema(pattern = "^(19|[2-8][0-9])[0-9]{2}-")]
    #[serde(default)]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// How the pre-queue is ordered at the opening: `random` (the default: drawn once, with a
    /// seed the audit trail records) or `fifo` (as buyers came).
    #[schema(value_type = Option<PreQueueName>)]
    #[serde(default, deserialize_with = "pre_queue_opt")]
    pub pre_queue: Option<PreQueue>,
}

/// How a pre-queue is ordered at the opening (the schema of `preQueue`).
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PreQueueName {
    /// Drawn once at the opening.
    Random,
    /// First come, first served.
    Fifo,
}

/// `preQueue`: `random` or `fifo`; anything else is a mistake in the request (422), not in its
/// JSON.
fn pre_queue_opt<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<PreQueue>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(serde_json::Value::String(name)) if PreQueue::parse(&name).is_some() => {
            Ok(PreQueue::parse(&name))
        }
        Some(other) => Err(D::Error::custom(format!("preQueue must be \"random\" or \"fifo\", got {other}"))),
    }
}

/// One performance date of a new concert.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewScheduleRequest {
    /// When it starts (RFC 3339), in the years 1900 to 8999.
    #[schema(pattern = "^(19|[2-8][0-9])[0-9]{2}-")]
    pub starts_at: DateTime<Utc>,
    /// How many seats, numbered from 1.
    #[schema(minimum = 1, maximum = 100_000)]
    #[serde(deserialize_with = "integral")]
    pub seat_count: u32,
    /// The price of each seat in points.
    #[schema(minimum = 1, maximum = 10_000_000)]
    #[serde(deserialize_with = "integral")]
    pub price: i64,
}

/// Waiting-room settings: of a new concert (what is left out gets the default), or a change to a
/// concert's (`PATCH /api/v1/admin/concerts/{concertId}/queue`: what is left out stays).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueRequest {
    /// At most this many active at once.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub max_active: Option<u32>,
    /// At most this many admitted per interval.
    #[schema(minimum = 1, maximum = 100_000)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub admit_batch: Option<u32>,
    /// The admission interval in milliseconds.
    #[schema(minimum = 10, maximum = 86_400_000)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub admit_interval_ms: Option<u64>,
    /// A waiting token not polled for this long loses its place.
    #[schema(minimum = 1, maximum = 86_400)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub waiting_idle_secs: Option<u64>,
    /// An admitted token expires this long after admission.
    #[schema(minimum = 1, maximum = 86_400)]
    #[serde(default, deserialize_with = "integral_opt")]
    pub active_ttl_secs: Option<u64>,
}

impl QueueRequest {
    /// The fields given, as a patch.
    #[must_use]
    pub fn patch(&self) -> QueuePatch {
        QueuePatch {
            max_active: self.max_active,
            admit_batch: self.admit_batch,
            admit_interval_ms: self.admit_interval_ms,
            waiting_idle_secs: self.waiting_idle_secs,
            active_ttl_secs: self.active_ttl_secs,
        }
    }

    /// The settings, with `defaults` for what is left out.
    #[must_use]
    pub fn with_defaults(&self, defaults: QueueSettings) -> QueueSettings {
        self.patch().apply(defaults)
    }
}

/// A created concert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedConcertBody {
    /// Its id.
    pub concert_id: Uuid,
    /// Its title.
    pub title: String,
    /// Its schedules.
    pub schedules: Vec<CreatedScheduleBody>,
    /// Its waiting-room settings.
    pub queue: QueueBody,
    /// The most seats one user may buy of it; absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seats_per_buyer: Option<u32>,
    /// How many seats one token may hold at once; absent: the server's setting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds_per_token: Option<u32>,
    /// Until how many seconds before a performance its buyers may cancel; absent: they may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_until_secs_before_start: Option<u64>,
    /// When its sale opens; absent: at once.
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// How its pre-queue is ordered at the opening.
    pub pre_queue: String,
}

/// A created schedule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedScheduleBody {
    /// Its id.
    pub schedule_id: Uuid,
    /// When it starts.
    #[serde(serialize_with = "rfc3339")]
    pub starts_at: DateTime<Utc>,
    /// How many seats.
    pub seat_count: u32,
    /// The price of each seat.
    pub price: i64,
}

/// A concert's sale as an operator sees it: whether admission is paused, its waiting-room
/// settings and their version (one more with every change).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaleBody {
    /// The concert.
    pub concert_id: Uuid,
    /// Its title.
    pub title: String,
    /// Whether admission is paused (the line keeps its places; nobody is admitted).
    pub paused: bool,
    /// The version of these settings: 0 at creation, one more with every change.
    pub version: u64,
    /// Its waiting-room settings.
    pub queue: QueueBody,
    /// The most seats one buyer may buy of it (set at creation); absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seats_per_buyer: Option<u32>,
    /// How many seats one token may hold at once (set at creation); absent: the server's setting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds_per_token: Option<u32>,
    /// Until how many seconds before a performance its buyers may cancel (set at creation);
    /// absent: they may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_until_secs_before_start: Option<u64>,
    /// When its sale opens (set at creation); absent: at once.
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub sales_open_at: Option<DateTime<Utc>>,
    /// How its pre-queue is ordered at the opening.
    pub pre_queue: String,
    /// The opening, once recorded; absent before it and for a sale without `salesOpenAt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened: Option<OpeningBody>,
}

/// A revoked token (`POST /api/v1/admin/concerts/{concertId}/users/{userId}/revoke`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokedBody {
    /// Whose token.
    pub user_id: String,
    /// Of which concert.
    pub concert_id: Uuid,
    /// When it was revoked (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub revoked_at: DateTime<Utc>,
    /// How many of its live holds were released by this call (0 when revoked again).
    pub released_holds: usize,
}

impl From<&ticketing_core::Revoked> for RevokedBody {
    fn from(revoked: &ticketing_core::Revoked) -> Self {
        Self {
            user_id: revoked.record.user_id.to_string(),
            concert_id: revoked.record.concert_id.as_uuid(),
            revoked_at: revoked.record.expires_at(),
            released_holds: revoked.released,
        }
    }
}

/// A sale's recorded opening.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpeningBody {
    /// When it was recorded (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// The seed of the pre-queue's draw: each token's place is given by SHA-256 of the seed (8
    /// bytes, big-endian) and the token's 72 characters, smallest first.
    pub seed: u64,
}

impl From<Opening> for OpeningBody {
    fn from(opening: Opening) -> Self {
        Self { at: opening.at, seed: opening.seed }
    }
}

impl From<&Concert> for SaleBody {
    fn from(concert: &Concert) -> Self {
        Self {
            concert_id: concert.id.as_uuid(),
            title: concert.title.clone(),
            paused: concert.paused,
            version: concert.version,
            queue: QueueBody::from(concert.queue),
            max_seats_per_buyer: concert.max_seats_per_buyer,
            holds_per_token: concert.holds_per_token,
            cancel_until_secs_before_start: concert.cancel_until_secs_before_start,
            sales_open_at: concert.sales_open_at,
            pre_queue: concert.pre_queue.as_str().to_owned(),
            opened: concert.opened.map(OpeningBody::from),
        }
    }
}

/// `GET /api/v1/admin/concerts/{concertId}/figures`: a concert's live figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiguresBody {
    /// The concert.
    pub concert_id: Uuid,
    /// Whether admission is paused.
    pub paused: bool,
    /// Tokens waiting in line after the opening (possibly counting some gone idle and not swept
    /// yet).
    pub waiting: u64,
    /// Tokens waiting in the pre-queue, before a scheduled sale's line opens.
    pub pre_queue: u64,
    /// Tokens active (admitted, not expired).
    pub active: u32,
    /// The measured admission rate per minute (a moving average over the admission windows in
    /// which people were waiting).
    pub admitted_per_minute: f64,
    /// Seats in all of the concert's schedules.
    pub seats: u64,
    /// Seats held by holds that have not lapsed.
    pub held: u64,
    /// Seats sold.
    pub sold: u64,
    /// Seats neither held nor sold.
    pub available: u64,
    /// The prices of the sold seats, summed, in points.
    pub revenue: i64,
}

impl From<&SaleFigures> for FiguresBody {
    fn from(f: &SaleFigures) -> Self {
        Self {
            concert_id: f.concert.id.as_uuid(),
            paused: f.concert.paused,
            waiting: f.waiting,
            pre_queue: f.pre_queue,
            active: f.active,
            admitted_per_minute: f.admitted_per_minute,
            seats: f.seats.seats,
            held: f.seats.held,
            sold: f.seats.sold,
            available: f.seats.seats.saturating_sub(f.seats.held + f.seats.sold),
            revenue: f.seats.revenue,
        }
    }
}

/// A concert's sale at one version, in its audit trail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaleStateBody {
    /// Whether admission was paused.
    pub paused: bool,
    /// The settings' version.
    pub version: u64,
    /// The waiting-room settings.
    pub queue: QueueBody,
    /// The opening, once recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened: Option<OpeningBody>,
}

impl From<SaleState> for SaleStateBody {
    fn from(state: SaleState) -> Self {
        Self {
            paused: state.paused,
            version: state.version,
            queue: QueueBody::from(state.queue),
            opened: state.opened.map(OpeningBody::from),
        }
    }
}

/// One entry of a concert's audit trail: who changed its sale, how, when, before and after.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaleActionBody {
    /// Who: the `X-Operator` the change was made with (`admin` when none was given), or
    /// `admission-ticker` for the opening.
    pub operator: String,
    /// What: `pause`, `resume`, `queue`, `open` (the sale opened and its pre-queue was drawn) or
    /// `revoke` (a buyer's token was revoked: `subject`).
    pub action: String,
    /// Whose token was revoked, for a `revoke`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// The sale before.
    pub before: SaleStateBody,
    /// The sale after.
    pub after: SaleStateBody,
}

impl From<&SaleAction> for SaleActionBody {
    fn from(action: &SaleAction) -> Self {
        Self {
            operator: action.operator.as_str().to_owned(),
            action: action.kind.as_str().to_owned(),
            subject: action.subject.as_ref().map(ToString::to_string),
            at: action.at,
            before: SaleStateBody::from(action.before),
            after: SaleStateBody::from(action.after),
        }
    }
}

impl From<QueueSettings> for QueueBody {
    fn from(q: QueueSettings) -> Self {
        Self {
            max_active: q.max_active,
            admit_batch: q.admit_batch,
            admit_interval_ms: q.admit_interval_ms,
            waiting_idle_secs: q.waiting_idle_secs,
            active_ttl_secs: q.active_ttl_secs,
        }
    }
}

/// Waiting-room settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueBody {
    /// At most this many active at once.
    pub max_active: u32,
    /// At most this many admitted per interval.
    pub admit_batch: u32,
    /// The admission interval in milliseconds.
    pub admit_interval_ms: u64,
    /// A waiting token not polled for this long loses its place.
    pub waiting_idle_secs: u64,
    /// An admitted token expires this long after admission.
    pub active_ttl_secs: u64,
}

impl From<&ConcertPlan> for CreatedConcertBody {
    fn from(plan: &ConcertPlan) -> Self {
        let q = plan.concert.queue;
        Self {
            concert_id: plan.concert.id.as_uuid(),
            title: plan.concert.title.clone(),
            schedules: plan
                .schedules
                .iter()
                .map(|s| {
                    let seats: Vec<_> = plan.seats.iter().filter(|seat| seat.schedule_id == s.id).collect();
                    CreatedScheduleBody {
                        schedule_id: s.id.as_uuid(),
                        starts_at: s.starts_at,
                        seat_count: u32::try_from(seats.len()).unwrap_or(u32::MAX),
                        price: seats.first().map_or(0, |seat| seat.price.get()),
                    }
                })
                .collect(),
            queue: QueueBody::from(q),
            max_seats_per_buyer: plan.concert.max_seats_per_buyer,
            holds_per_token: plan.concert.holds_per_token,
            cancel_until_secs_before_start: plan.concert.cancel_until_secs_before_start,
            sales_open_at: plan.concert.sales_open_at,
            pre_queue: plan.concert.pre_queue.as_str().to_owned(),
        }
    }
}

/// `GET /api/v1/admin/concerts/{concertId}/sales`: what a concert sold, seat by seat.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesBody {
    /// The concert.
    pub concert_id: Uuid,
    /// Its schedules by start time.
    pub schedules: Vec<ScheduleSalesBody>,
}

/// One schedule of a [`SalesBody`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSalesBody {
    /// Its id.
    pub schedule_id: Uuid,
    /// Its seats by number.
    pub seats: Vec<SeatSaleBody>,
}

/// One seat of a [`SalesBody`]; the sale fields are set for `BOOKED` seats only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatSaleBody {
    /// Its id.
    pub seat_id: Uuid,
    /// Its number within the schedule.
    pub number: u32,
    /// `AVAILABLE`, `HELD` or `BOOKED`.
    pub status: String,
    /// The confirmed reservation.
    pub reservation_id: Option<Uuid>,
    /// The buyer, as the reservation records it.
    pub user_id: Option<String>,
    /// The payment that booked it.
    pub payment_id: Option<Uuid>,
    /// The buyer, as the payment records it.
    pub paid_by: Option<String>,
    /// Points paid.
    pub amount: Option<i64>,
    /// When it was paid.
    #[serde(serialize_with = "rfc3339_opt")]
    pub paid_at: Option<DateTime<Utc>>,
}

impl SalesBody {
    /// The body for `concert_id`'s report.
    #[must_use]
    pub fn new(concert_id: Uuid, report: &[ScheduleSales]) -> Self {
        Self {
            concert_id,
            schedules: report
                .iter()
                .map(|s| ScheduleSalesBody {
                    schedule_id: s.schedule.id.as_uuid(),
                    seats: s.seats.iter().map(SeatSaleBody::from).collect(),
                })
                .collect(),
        }
    }
}

impl From<&SeatSale> for SeatSaleBody {
    fn from(sale: &SeatSale) -> Self {
        Self {
            seat_id: sale.seat.record.seat.id.as_uuid(),
            number: sale.seat.record.seat.number,
            status: screaming(&sale.seat.status),
            reservation_id: sale.reservation.as_ref().map(|r| r.id.as_uuid()),
            user_id: sale.reservation.as_ref().map(|r| r.user_id.to_string()),
            payment_id: sale.payment.as_ref().map(|p| p.id.as_uuid()),
            paid_by: sale.payment.as_ref().map(|p| p.user_id.to_string()),
            amount: sale.payment.as_ref().map(|p| p.amount.get()),
            paid_at: sale.payment.as_ref().map(|p| p.at),
        }
    }
}

/// `GET /api/v1/admin/users/{userId}/account` and `GET /api/v1/me/ledger`: a balance with its ledger.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBody {
    /// Whose.
    pub user_id: String,
    /// Points now.
    pub balance: i64,
    /// Every charge and payment, oldest first.
    pub ledger: Vec<LedgerEntryBody>,
}

/// One ledger entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryBody {
    /// `CHARGE`, `PAYMENT` or `REFUND`.
    pub kind: String,
    /// Points (always positive; `kind` gives the sign).
    pub amount: i64,
    /// The balance after it.
    pub balance_after: i64,
    /// The payment, for a `PAYMENT` entry and for the `REFUND` that answers it.
    pub payment_id: Option<Uuid>,
    /// When.
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
}

impl From<&Account> for AccountBody {
    fn from(account: &Account) -> Self {
        Self {
            user_id: account.wallet.user_id.to_string(),
            balance: account.wallet.balance.get(),
            ledger: account.ledger.iter().map(LedgerEntryBody::from).collect(),
        }
    }
}

impl From<&LedgerEntry> for LedgerEntryBody {
    fn from(entry: &LedgerEntry) -> Self {
        Self {
            kind: screaming(&entry.kind),
            amount: entry.amount.get(),
            balance_after: entry.balance_after.get(),
            payment_id: entry.payment_id.map(|id| id.as_uuid()),
            at: entry.at,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use chrono::DateTime;
    use ticketing_core::catalog::{Occupancy, OccupiedSeat, Seat, SeatList, SeatStatus};
    use ticketing_core::ids::{ConcertId, Points, ScheduleId, SeatId};

    use super::{SeatBody, SeatListJson};

    fn seats(schedule: ScheduleId, n: u32) -> Arc<[Seat]> {
        let concert = ConcertId::random();
        (1..=n)
            .map(|number| Seat {
                id: SeatId::random(),
                schedule_id: schedule,
                concert_id: concert,
                number,
                price: Points::new(i64::from(number) * 1_000 + 7).unwrap(),
            })
            .collect()
    }

    fn serde_json_of(list: &SeatList) -> Vec<u8> {
        serde_json::to_vec(&list.iter().map(SeatBody::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn seat_lists_are_written_as_serde_writes_them_from_cached_fragments() {
        let schedule = ScheduleId::random();
        let map = seats(schedule, 12);
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let occupied = [
            OccupiedSeat { number: 2, occupancy: Occupancy::Booked },
            OccupiedSeat {
                number: 5,
                occupancy: Occupancy::Held { expires_at: now + chrono::Duration::seconds(9) },
            },
            OccupiedSeat { number: 7, occupancy: Occupancy::Held { expires_at: now } },
        ];
        let list = SeatList::at(Arc::clone(&map), &occupied, now);
        assert_eq!(list.get(1).unwrap().1, SeatStatus::Booked);
        assert_eq!(list.get(4).unwrap().1, SeatStatus::Held);
        assert_eq!(list.get(6).unwrap().1, SeatStatus::Available, "a lapsed hold");
        let json = SeatListJson::default();
        assert_eq!(json.render(schedule, &list), serde_json_of(&list), "first list");
        let later = SeatList::at(Arc::clone(&map), &occupied[..1], now);
        assert_eq!(json.render(schedule, &later), serde_json_of(&later), "from the kept fragments");
        // Another seat map for the schedule (the core's cache started again): new fragments.
        let other = SeatList::at(seats(schedule, 3), &[], now);
        assert_eq!(json.render(schedule, &other), serde_json_of(&other));
        let empty = SeatList::at(seats(schedule, 0), &[], now);
        assert_eq!(json.render(schedule, &empty), b"[]".to_vec());
    }
}
