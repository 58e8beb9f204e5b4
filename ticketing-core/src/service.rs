//! The facade users call: [`Ticketing`]. Each method reads what it needs, asks a pure state
//! machine what may happen, and writes the answer in one atomic store step that a concurrent
//! change makes fail; then it reads again and re-decides, at most `CAS_RETRIES` times.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use chrono::{DateTime, Duration, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::catalog::{
    self, Concert, Merged, NewConcert, OccupiedSeat, Opening, PreQueue, SaleAction, SaleChange, Schedule,
    ScheduleAvailability, Seat, SeatList, SeatRecord, SeatState, SeatStates, SeatStatus, SeatTally, secs,
};
use crate::claim::{Claim, TokenKey, TokenSigner};
use crate::clock::{Clock, truncate_to_millis};
use crate::door::{Door, DoorBudget};
use crate::error::{DomainError, Error, StoreError};
use crate::hold::{self, Holder, Release, Reservation, ReservationStatus};
use crate::idempotency::{self, CheckError, IdempotencyRecord, KeyCheck};
use crate::ids::{
    ConcertId, IdempotencyKey, LedgerEntryId, PaymentId, QueueToken, ReservationId, ScheduleId, SeatId,
    UserId,
};
use crate::limits::{
    CAS_RETRIES, CATALOG_CACHE_MAX, ETA_MAX_SECS, HOLD_TTL_SECS_DEFAULT, HOLDS_PER_TOKEN_DEFAULT,
    LINE_REBUILD_MARGIN_SECS, OPENER, PRE_QUEUE_DRAW_MAX, SEAT_MAP_CACHE_SEATS_MAX, SWEEP_BATCH,
    TOKEN_RETENTION_SECS, UNLOGGED_ADMISSIONS_MAX,
};
use crate::payment::{
    self, Canceller, LedgerEntry, Payment, PaymentIds, PaymentReceipt, RefundReceipt, Wallet,
};
use crate::queue::{
    self, AdmissionPlan, AdmissionSnapshot, ExpiryReason, LineOpening, Polled, TokenRecord, TokenState,
    TokenStatus,
};
use crate::store::{
    BookingStore, ChargeInputs, HoldInputs, Lost, PaymentInputs, QueueStore, RefundInputs, Restored,
    Revocation,
};

/// Deployment-wide settings of the service (per-concert queue settings live with the concert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a hold keeps its seat.
    pub hold_ttl_secs: u64,
    /// How many open holds (held or confirmed) one queue token may have.
    pub holds_per_token: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { hold_ttl_secs: HOLD_TTL_SECS_DEFAULT, holds_per_token: HOLDS_PER_TOKEN_DEFAULT }
    }
}

/// A token as its holder sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenView {
    /// The stored record.
    pub record: TokenRecord,
    /// Its status now.
    pub status: TokenStatus,
    /// 1-based place in line, while waiting.
    pub position: Option<u64>,
    /// Estimated seconds until admission, while waiting.
    pub eta_secs: Option<u64>,
    /// Whether this call issued a new token (rather than returning the existing one).
    pub created: bool,
    /// Whether the concert is sold out, as this process last learnt it
    /// ([`Ticketing::seat_tally`]): a waiting buyer need not wait any more.
    pub sold_out: bool,
    /// When the sale opens, while the token waits in the pre-queue (the sale has a scheduled
    /// opening and its line is not open yet).
    pub opens_at: Option<DateTime<Utc>>,
}

impl TokenView {
    /// When the token stops being valid.
    #[must_use]
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.record.expires_at()
    }
}

/// A seat with its stored state and its status at one instant, as the sales report shows it
/// (a buyer's seat list is a [`SeatList`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatView {
    /// The seat and its stored state.
    pub record: SeatRecord,
    /// Its status now.
    pub status: SeatStatus,
}

impl SeatView {
    /// The seat as seen at `now`.
    #[must_use]
    pub fn at(record: SeatRecord, now: DateTime<Utc>) -> Self {
        Self { status: record.status_at(now), record }
    }
}

/// One seat in a [`Ticketing::sales`] report.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatSale {
    /// The seat and its status now.
    pub seat: SeatView,
    /// For a booked seat, the confirmed reservation.
    pub reservation: Option<Reservation>,
    /// For a booked seat, its payment (`None` here would be a broken store: the audit says so).
    pub payment: Option<Payment>,
}

/// One schedule in a [`Ticketing::sales`] report.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSales {
    /// The schedule.
    pub schedule: Schedule,
    /// Its seats by number.
    pub seats: Vec<SeatSale>,
}

/// A concert's live figures, for its operator ([`Ticketing::figures`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SaleFigures {
    /// The concert as stored (its sale settings, paused or not).
    pub concert: Concert,
    /// Tokens waiting in line after the opening (possibly counting some gone idle and not
    /// swept yet).
    pub waiting: u64,
    /// Tokens waiting in the pre-queue of a sale whose line is not open yet.
    pub pre_queue: u64,
    /// Tokens active.
    pub active: u32,
    /// The measured admission rate, per minute (a moving average over the admission windows in
    /// which people were waiting).
    pub admitted_per_minute: f64,
    /// The seats: how many, held, sold, and what the sold ones brought in.
    pub seats: SeatTally,
}

/// A user's wallet with its ledger, for [`Ticketing::account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The balance and its version.
    pub wallet: Wallet,
    /// Every charge and payment, oldest first.
    pub ledger: Vec<LedgerEntry>,
}

/// What one sweep tidied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Queue records touched (idle or timed-out tokens expired, old tokens forgotten).
    pub tokens: usize,
    /// Lapsed holds whose seats were freed.
    pub holds: usize,
}

/// The ticketing service over a queue store `Q`, a booking store `B` and a clock `C`.
///
/// See the crate documentation for a complete example.
#[derive(Debug, Clone)]
pub struct Ticketing<Q, B, C> {
    queue: Q,
    booking: B,
    clock: C,
    config: Config,
    catalog: Arc<CatalogCache>,
    signer: TokenSigner,
    lines: Arc<LineWatch>,
    door: Arc<Door>,
}

/// What the admission tick of this process knows of each concert's line: the generation it
/// last checked against the admission log and until when admission waits for the lost tokens
/// of a line that began again; and the admissions not yet written to the log (its store failed).
#[derive(Debug, Default)]
struct LineWatch {
    checked: Mutex<HashMap<ConcertId, LineCheck>>,
    /// Admissions not yet in the log, with their line generation.
    unlogged: Mutex<Vec<(u64, TokenRecord)>>,
}

#[derive(Debug, Clone, Copy)]
struct LineCheck {
    generation: u64,
    resume_at: Option<DateTime<Utc>>,
}

/// Concerts and schedules as read from the booking store, kept for the life of the service.
/// Schedules never change once created; a concert's sale settings change only by an operator
/// ([`Ticketing::change_sale`]), and every admission tick brings the stored version into the
/// cache (a cached copy never goes back to an older version). Only what was found is kept
/// (another node may create a concert later), and at most [`CATALOG_CACHE_MAX`] of each.
#[derive(Debug, Default)]
struct CatalogCache {
    concerts: RwLock<HashMap<ConcertId, Concert>>,
    schedules: RwLock<HashMap<ScheduleId, Schedule>>,
    /// Each schedule's seats by number (ids, numbers, prices: fixed at creation). A seat list
    /// reads only which of them are occupied, on every request.
    seat_maps: RwLock<HashMap<ScheduleId, Arc<[Seat]>>>,
    /// Each concert's schedules (fixed at creation), for its availability counts.
    schedule_lists: RwLock<HashMap<ConcertId, Arc<[Schedule]>>>,
    /// Each concert's seat states, brought up to date by one read of what changed on every seat
    /// list and availability count, where the booking store keeps changes
    /// ([`crate::store::CatalogStore::seat_changes`]).
    seat_states: Mutex<HashMap<ConcertId, SeatStates>>,
    /// Set once the booking store answered that it keeps no seat changes.
    no_seat_changes: AtomicBool,
    /// The concerts this process last found sold out ([`Ticketing::seat_tally`]).
    sold_out: RwLock<HashSet<ConcertId>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `key` from a cache map, or loads it and keeps what was found.
async fn cached<K, V, L, F>(map: &RwLock<HashMap<K, V>>, key: K, load: L) -> Result<Option<V>, StoreError>
where
    K: std::hash::Hash + Eq + Copy,
    V: Clone,
    L: FnOnce() -> F,
    F: Future<Output = Result<Option<V>, StoreError>>,
{
    if let Some(value) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return Ok(Some(value.clone()));
    }
    let loaded = load().await?;
    if let Some(value) = &loaded {
        let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CATALOG_CACHE_MAX {
            map.clear();
        }
        map.insert(key, value.clone());
    }
    Ok(loaded)
}

/// Why a keyed step's decision writes nothing.
enum Stop<T> {
    /// The key's stored outcome answers the request (boxed: it is the rare path).
    Replay(Box<Result<T, DomainError>>),
    /// A rule refused; the refusal is the outcome to remember under the key.
    Refused(DomainError),
    /// The request fails without touching the key (the token, a missing record, the key
    /// used for another request).
    Failed(Error),
}

impl<T> Stop<T> {
    fn failed(error: impl Into<Error>) -> Self {
        Self::Failed(error.into())
    }
}

/// The idempotency context of one request.
#[derive(Debug, Clone)]
struct KeyCtx {
    user: UserId,
    key: Option<IdempotencyKey>,
    fingerprint: String,
    now: DateTime<Utc>,
}

impl KeyCtx {
    fn record<T: Serialize>(
        &self,
        outcome: &Result<T, DomainError>,
    ) -> Result<Option<IdempotencyRecord>, Error> {
        self.key
            .as_ref()
            .map(|key| {
                idempotency::record(&self.user, key, self.fingerprint.clone(), outcome, self.now)
                    .map_err(|e| Error::Store(StoreError::Corrupt(e)))
            })
            .transpose()
    }

    /// The record to store with a successful write of `value`.
    fn success<T: Serialize + Clone>(&self, value: &T) -> Result<Option<IdempotencyRecord>, Stop<T>> {
        self.record(&Ok(value.clone())).map_err(Stop::Failed)
    }

    /// Judges what the step read under the request's key: go on (`Ok`) when the request has
    /// no key or the key is fresh; otherwise the stored outcome, or the key's misuse.
    fn check<T: DeserializeOwned>(&self, stored: Option<&IdempotencyRecord>) -> Result<(), Stop<T>> {
        if self.key.is_none() {
            return Ok(());
        }
        match idempotency::check::<T>(stored, &self.fingerprint, self.now) {
            Ok(KeyCheck::Fresh) => Ok(()),
            Ok(KeyCheck::Replay(outcome)) => Err(Stop::Replay(Box::new(outcome))),
            Err(CheckError::Reused) => Err(Stop::failed(DomainError::IdempotencyKeyReused)),
            Err(CheckError::Corrupt(message)) => Err(Stop::failed(StoreError::Corrupt(message))),
        }
    }
}

impl<Q: QueueStore, B: BookingStore, C: Clock> Ticketing<Q, B, C> {
    /// A service over the given stores and clock.
    ///
    /// Its tokens' claims are signed with a random key of this process alone: a deployment of
    /// several nodes gives them one key with [`Ticketing::with_token_key`], so that any node can
    /// give back a token another issued after the queue store lost it.
    pub fn new(queue: Q, booking: B, clock: C, config: Config) -> Self {
        Self {
            queue,
            booking,
            clock,
            config,
            catalog: Arc::default(),
            signer: TokenSigner::new(TokenKey::random()),
            lines: Arc::default(),
            door: Arc::default(),
        }
    }

    /// This service, limiting token requests per client address and per user to `budget`
    /// ([`crate::door`]); without it there is no limit.
    #[must_use]
    pub fn with_door(mut self, budget: DoorBudget) -> Self {
        self.door = Arc::new(Door::new(budget));
        self
    }

    /// This service, signing its tokens' claims with `key` ([`crate::claim`]).
    #[must_use]
    pub fn with_token_key(mut self, key: TokenKey) -> Self {
        self.signer = TokenSigner::new(key);
        self
    }

    /// The queue store.
    pub fn queue_store(&self) -> &Q {
        &self.queue
    }

    /// The booking store.
    pub fn booking_store(&self) -> &B {
        &self.booking
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        truncate_to_millis(self.clock.now())
    }

    fn hold_ttl(&self) -> Duration {
        secs(self.config.hold_ttl_secs)
    }

    /// Creates a concert with its schedules and seats.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for an invalid request; store errors.
    #[tracing::instrument(level = "debug", skip_all, fields(title = %request.title))]
    pub async fn create_concert(&self, request: &NewConcert) -> Result<catalog::ConcertPlan, Error> {
        let plan = catalog::plan_concert(request)?;
        self.booking.create_concert(&plan).await?;
        Ok(plan)
    }

    /// Every concert.
    ///
    /// # Errors
    /// Store errors.
    pub async fn concerts(&self) -> Result<Vec<Concert>, Error> {
        Ok(self.booking.concerts().await?)
    }

    /// One concert, from the process's catalog cache. Its id and title never change; its sale
    /// settings may (see [`Ticketing::change_sale`]), and every admission tick of this process
    /// reads them from the store and refreshes the cache, so requests follow a change within a
    /// tick.
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; store errors.
    pub async fn concert(&self, id: ConcertId) -> Result<Concert, Error> {
        if let Some(concert) = self.catalog.concerts.read().unwrap_or_else(PoisonError::into_inner).get(&id) {
            return Ok(concert.clone());
        }
        let concert = self.booking.concert(id).await?.ok_or(Error::Domain(DomainError::ConcertNotFound))?;
        // Through the version guard: a tick or a change may have cached a newer one meanwhile.
        Ok(self.remember_concert(&concert))
    }

    /// Keeps `concert` as read from the store in the catalog cache, unless the cache holds a
    /// newer version of it; answers the version kept.
    fn remember_concert(&self, concert: &Concert) -> Concert {
        let mut concerts = self.catalog.concerts.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = concerts.get(&concert.id).filter(|known| known.version > concert.version) {
            return known.clone();
        }
        if concerts.len() >= CATALOG_CACHE_MAX && !concerts.contains_key(&concert.id) {
            concerts.clear();
        }
        concerts.insert(concert.id, concert.clone());
        concert.clone()
    }

    /// `operator`'s change to a concert's sale: pause admission, resume it, or new
    /// waiting-room settings ([`catalog::plan_sale_change`] on the stored concert, written with
    /// its entry in the concert's audit trail if its version is still the one read; a change
    /// that changes nothing writes nothing). Every process follows it from its next admission
    /// tick.
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; [`DomainError::InvalidInput`] for settings out of
    /// range; [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn change_sale(
        &self,
        concert_id: ConcertId,
        change: SaleChange,
        operator: &UserId,
    ) -> Result<Concert, Error> {
        for _ in 0..CAS_RETRIES {
            let current =
                self.booking.concert(concert_id).await?.ok_or(Error::Domain(DomainError::ConcertNotFound))?;
            let Some(next) = catalog::plan_sale_change(&current, change)? else {
                self.remember_concert(&current);
                return Ok(current);
            };
            let action = catalog::sale_action(&current, &next, change, operator, self.now());
            match self.booking.change_sale(&action).await {
                Ok(()) => {
                    tracing::info!(concert = %concert_id, %operator, action = action.kind.as_str(),
                        version = next.version, paused = next.paused, queue = ?next.queue, "sale changed");
                    self.remember_concert(&next);
                    return Ok(next);
                }
                Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Contention)
    }

    async fn schedule(&self, id: ScheduleId) -> Result<Schedule, Error> {
        cached(&self.catalog.schedules, id, || self.booking.schedule(id))
            .await?
            .ok_or(Error::Domain(DomainError::ScheduleNotFound))
    }

    /// Issues a queue token for `user` and `concert`, or returns the user's valid one (a waiting
    /// token's idle deadline is extended; there is never a second place in line).
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; [`DomainError::SoldOut`] once this process found the
    /// concert sold out ([`Ticketing::seat_tally`]); [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn issue_token(&self, user: &UserId, concert_id: ConcertId) -> Result<TokenView, Error> {
        self.issue_token_from(user, concert_id, None).await
    }

    /// [`Ticketing::issue_token`] for a request from `address` (when known), counted first
    /// against the user's and the address's budgets ([`Ticketing::with_door`]), before any store
    /// is asked.
    ///
    /// # Errors
    /// [`DomainError::RateLimited`]; those of [`Ticketing::issue_token`].
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn issue_token_from(
        &self,
        user: &UserId,
        concert_id: ConcertId,
        address: Option<IpAddr>,
    ) -> Result<TokenView, Error> {
        self.door.knock(address, user)?;
        let concert = self.concert(concert_id).await?;
        if self.sold_out(concert_id) {
            return Err(DomainError::SoldOut.into());
        }
        for _ in 0..CAS_RETRIES {
            let now = self.now();
            let new =
                queue::new_token(QueueToken::generate(concert_id), user, concert_id, &concert.queue, now);
            let joined = self.queue.join(new, now).await?;
            if let Some(view) = view_of(joined.polled, &concert, joined.created, now) {
                return Ok(self.signed(view, None));
            }
        }
        Err(Error::Contention)
    }

    /// The status of a token. Polling a waiting token keeps its place (extends its idle deadline).
    ///
    /// One queue-store call ([`QueueStore::poll`]): the concert's settings come from the
    /// process's catalog cache (the token names its concert), and the refresh, the position and
    /// the admission state for the ETA come back from the same step.
    ///
    /// # Errors
    /// [`DomainError::TokenNotFound`], [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token); store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn token_status(&self, token: &QueueToken) -> Result<TokenView, Error> {
        let concert = match self.concert(token.concert()).await {
            Err(Error::Domain(DomainError::ConcertNotFound)) => return Err(DomainError::TokenNotFound.into()),
            other => other?,
        };
        let mut recovered = false;
        for _ in 0..CAS_RETRIES {
            let now = self.now();
            let deadline = queue::idle_deadline(&concert.queue, now);
            let polled = match self.queue.poll(token, now, deadline).await? {
                Some(polled) => polled,
                // Missing: if the queue store lost it, give it back and poll again.
                None if !recovered && self.recover(token, &concert, now).await?.is_some() => {
                    recovered = true;
                    continue;
                }
                None => return Err(DomainError::TokenNotFound.into()),
            };
            queue::require_valid(&polled.record, now)?;
            if let Some(view) = view_of(polled, &concert, false, now) {
                return Ok(self.signed(view, Some(token)));
            }
        }
        Err(Error::Contention)
    }

    /// The view with the credential to answer: the one presented if its claim verifies,
    /// otherwise the token's identity with its claim signed now (its place in line while it
    /// waits; 0 once admitted, which the admission log then speaks for).
    /// It also says whether the concert is sold out, as this process last learnt it.
    fn signed(&self, mut view: TokenView, presented: Option<&QueueToken>) -> TokenView {
        view.sold_out = self.sold_out(view.record.concert_id);
        let record = &view.record;
        // A presented claim stands unless the token now waits at another place than it claims
        // (the opening's draw moved it): then the answer carries a claim of the new place.
        let claim_stands = |token: &&QueueToken| {
            self.signer.verify(token).is_some_and(|claim| record.seq().is_none_or(|seq| seq == claim.seq))
        };
        view.record.token = match presented.filter(claim_stands) {
            Some(token) => token.clone(),
            None => self.signer.sign(
                &record.token,
                &Claim {
                    seq: record.seq().unwrap_or(0),
                    issued_at: record.issued_at,
                    user: record.user_id.clone(),
                },
            ),
        };
        view
    }

    /// Gives back a token the queue store does not have, if its credential's claim verifies and
    /// the store lost it ([`QueueStore::restore`]): expired if a payment was made with it,
    /// admitted when the admission log has it (expired if its active time ended), otherwise back
    /// in line at its claimed place. Costs one booking-store read and one queue-store step, on this rare
    /// path only. `None` when the token is unknown, forged, or was forgotten in the ordinary way.
    async fn recover(
        &self,
        token: &QueueToken,
        concert: &Concert,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, Error> {
        let Some(claim) = self.signer.verify(token) else { return Ok(None) };
        let history = self.booking.history(&claim.user, token).await?;
        let line_seq = claim.seq;
        let record = queue::recovered(token, claim, history, &concert.queue, now);
        let restored = self.queue.restore(&[Lost { record, line_seq }], now).await?;
        Ok(match restored.into_iter().next() {
            Some(Restored::Present(record) | Restored::Restored(record)) => {
                tracing::info!(?token, "a token the queue store had lost was given back");
                Some(record)
            }
            Some(Restored::NotLost | Restored::Superseded) | None => None,
        })
    }

    /// The token's holder leaves the line ([`queue::leave`]): a waiting token expires at once and
    /// everyone behind it moves up. Leaving twice answers [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token).
    ///
    /// # Errors
    /// [`DomainError::TokenNotFound`], [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token),
    /// [`DomainError::AlreadyAdmitted`]; [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn leave(&self, token: &QueueToken) -> Result<(), Error> {
        let mut record = self.authenticate(token).await?;
        // Recorded where the money is first (once it may leave), so that a queue store that
        // loses the token gives it back expired, never waiting: one booking-store write.
        let now = self.now();
        queue::leave(&record, now)?;
        self.booking.record_leave(&record.token.identity(), &record.user_id, now).await?;
        for _ in 0..CAS_RETRIES {
            let left = queue::leave(&record, self.now())?;
            match self.queue.update_token(record.version, &left).await {
                Ok(()) => return Ok(()),
                // Changed meanwhile, or lost by its queue store (then given back: it is recorded
                // as left, so it comes back expired and leaving again answers token_expired).
                Err(StoreError::Conflict(_) | StoreError::Missing(_)) => {
                    record = self.authenticate(token).await?;
                    if matches!(record.state, TokenState::Expired { reason: ExpiryReason::Left, .. }) {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Contention)
    }

    /// `operator` revokes `user`'s token for `concert_id` ([`queue::revoke`]): first the
    /// revocation is recorded where the money is, with its entry in the concert's audit trail
    /// ([`crate::store::AdmissionLog::revoke_token`]: a queue store that loses the token gives
    /// it back revoked, never in line or admitted); then the token expires as REVOKED in the
    /// queue store (one compare-and-set; every node's next request with it answers
    /// [`DomainError::TokenRevoked`]); then each of its live holds is released, freeing the
    /// seats. Revoking again repeats nothing that was done and finishes what was not (a failure
    /// midway is retried by asking again). A payment already under way when the token is revoked
    /// may complete; its seat is then sold, not released.
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; [`DomainError::TokenNotFound`] when the user has no
    /// token for the concert in the queue store; [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn revoke(
        &self,
        concert_id: ConcertId,
        user: &UserId,
        operator: &UserId,
    ) -> Result<Revoked, Error> {
        let concert =
            self.booking.concert(concert_id).await?.ok_or(Error::Domain(DomainError::ConcertNotFound))?;
        let mut record =
            self.queue.token_of_user(concert_id, user).await?.ok_or(DomainError::TokenNotFound)?;
        let now = self.now();
        let state = catalog::SaleState::from(&concert);
        let action = SaleAction {
            concert_id,
            operator: operator.clone(),
            kind: catalog::SaleActionKind::Revoke,
            at: now,
            before: state,
            after: state,
            subject: Some(user.clone()),
        };
        let revocation = Revocation { token: record.token.identity(), user_id: user.clone(), action };
        // Two revocations racing over a token that left may deadlock in MySQL (one is refused as
        // a conflict): writing it again is safe.
        match self.booking.revoke_token(&revocation).await {
            Err(StoreError::Conflict(_)) => self.booking.revoke_token(&revocation).await?,
            written => written?,
        }
        let mut done = false;
        for _ in 0..CAS_RETRIES {
            let Some(revoked) = queue::revoke(&record, now) else {
                done = true;
                break;
            };
            match self.queue.update_token(record.version, &revoked).await {
                Ok(()) => {
                    record = revoked;
                    done = true;
                    break;
                }
                Err(StoreError::Conflict(_)) => {
                    record = self.queue.token(&record.token).await?.ok_or(DomainError::TokenNotFound)?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if !done {
            return Err(Error::Contention);
        }
        let released = self.release_holds_of(&record, now).await?;
        tracing::info!(concert = %concert_id, %user, %operator, released, "token revoked");
        Ok(Revoked { record, released })
    }

    /// Releases every live hold `record`'s token made; answers how many it released.
    async fn release_holds_of(&self, record: &TokenRecord, now: DateTime<Utc>) -> Result<usize, Error> {
        let mut released = 0;
        for mut reservation in self.booking.reservations_of_token(&record.user_id, &record.token).await? {
            for attempt in 0..=CAS_RETRIES {
                if attempt == CAS_RETRIES {
                    return Err(Error::Contention);
                }
                let seat =
                    self.booking.seat(reservation.seat_id).await?.ok_or(StoreError::Missing("seat"))?;
                let plan = match hold::plan_release(&reservation, &seat, &record.user_id, now) {
                    Ok(Release::Write(plan)) => plan,
                    // Over, or paid (a payment that was under way): nothing to free.
                    Ok(Release::AlreadyOver) | Err(DomainError::AlreadyPaid) => break,
                    Err(error) => return Err(error.into()),
                };
                match self.booking.release_seat(&plan).await {
                    Ok(()) => {
                        released += 1;
                        break;
                    }
                    Err(StoreError::Conflict(_)) => {
                        reservation = self
                            .booking
                            .reservation(reservation.id)
                            .await?
                            .ok_or(StoreError::Missing("reservation"))?;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(released)
    }

    /// The stored record of a token, whatever its status; a token the queue store lost is given
    /// back first ([`QueueStore::restore`]).
    ///
    /// # Errors
    /// [`DomainError::TokenNotFound`]; store errors.
    pub async fn authenticate(&self, token: &QueueToken) -> Result<TokenRecord, Error> {
        if let Some(record) = self.queue.token(token).await? {
            return Ok(record);
        }
        let concert = match self.concert(token.concert()).await {
            Err(Error::Domain(DomainError::ConcertNotFound)) => return Err(DomainError::TokenNotFound.into()),
            other => other?,
        };
        self.recover(token, &concert, self.now()).await?.ok_or(Error::Domain(DomainError::TokenNotFound))
    }

    async fn active_token(
        &self,
        token: &QueueToken,
        concert: Option<ConcertId>,
        now: DateTime<Utc>,
    ) -> Result<TokenRecord, Error> {
        let record = self.authenticate(token).await?;
        let position = self.position_if_waiting(&record, now).await?;
        queue::require_active(&record, concert, now, || position)?;
        Ok(record)
    }

    /// The place in line of a waiting token (to say where it stands in a refusal); 0 otherwise.
    async fn position_if_waiting(&self, record: &TokenRecord, now: DateTime<Utc>) -> Result<u64, Error> {
        Ok(if record.status_at(now) == TokenStatus::Waiting { self.queue.position(record).await? } else { 0 })
    }

    /// A token that may read and release its owner's own holds: one with access to its user's
    /// account ([`queue::require_account_access`]: valid, or admitted and ended less than a hold
    /// time ago), or one expired because its owner paid (so a buyer can read back the
    /// reservation it paid for).
    async fn owner_token(&self, token: &QueueToken, now: DateTime<Utc>) -> Result<TokenRecord, Error> {
        let record = self.authenticate(token).await?;
        let paid = matches!(record.state, TokenState::Expired { reason: ExpiryReason::Paid, .. });
        if !paid {
            queue::require_account_access(&record, self.hold_ttl(), now)?;
        }
        Ok(record)
    }

    /// A concert's live figures: its line (waiting, active, the admission rate) and its seats
    /// (held, sold, revenue), read now: three store calls (the concert, the admission snapshot,
    /// the seat tally).
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; store errors.
    pub async fn figures(&self, concert_id: ConcertId) -> Result<SaleFigures, Error> {
        let now = self.now();
        let concert =
            self.booking.concert(concert_id).await?.ok_or(Error::Domain(DomainError::ConcertNotFound))?;
        let snapshot = self.queue.admission_snapshot(concert_id, now).await?;
        let seats = self.seat_tally(concert_id).await?;
        let (pre_queue, waiting) = snapshot.pre_queue_and_waiting(concert.sales_open_at.is_some());
        Ok(SaleFigures {
            concert,
            waiting,
            pre_queue,
            active: snapshot.active,
            admitted_per_minute: snapshot.admitted_per_minute(),
            seats,
        })
    }

    /// What a concert's seats add up to now (held, sold, revenue): one booking-store read.
    ///
    /// The tally also tells this process whether the concert is sold out ([`SeatTally::sold_out`]):
    /// from then on, until a tally says otherwise, nobody joins its line
    /// ([`DomainError::SoldOut`]) and its tokens say so ([`TokenView::sold_out`]). Whoever runs the
    /// process reads the tallies of busy lines, and of sold-out concerts, now and then (the HTTP
    /// server's sweeper does, every round).
    ///
    /// # Errors
    /// Store errors.
    pub async fn seat_tally(&self, concert_id: ConcertId) -> Result<SeatTally, Error> {
        let tally = self.booking.seat_tally(concert_id, self.now()).await?;
        let mut sold_out = self.catalog.sold_out.write().unwrap_or_else(PoisonError::into_inner);
        if tally.sold_out() {
            if sold_out.len() >= CATALOG_CACHE_MAX {
                sold_out.clear();
            }
            sold_out.insert(concert_id);
        } else {
            sold_out.remove(&concert_id);
        }
        Ok(tally)
    }

    /// Whether this process last found the concert sold out ([`Ticketing::seat_tally`]).
    #[must_use]
    pub fn sold_out(&self, concert_id: ConcertId) -> bool {
        self.catalog.sold_out.read().unwrap_or_else(PoisonError::into_inner).contains(&concert_id)
    }

    /// A concert's audit trail: every change of its sale, oldest first.
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; store errors.
    pub async fn sale_actions(&self, concert_id: ConcertId) -> Result<Vec<SaleAction>, Error> {
        self.concert(concert_id).await?;
        Ok(self.booking.sale_actions(concert_id).await?)
    }

    /// Runs one admission tick for one concert: admits from the head of the line as far as
    /// both caps allow, and writes who was admitted to the admission log (for a line that has
    /// generations: one its store may lose, [`AdmissionSnapshot::generation`]). Safe to run from many
    /// nodes at once: a tick that loses the race to another admits nobody.
    ///
    /// The tick reads the concert's sale settings from the booking store (one read; the round
    /// over every concert, [`Ticketing::admission_tick_all`], reads them all at once), so every
    /// process follows an operator's change ([`Ticketing::change_sale`]) from its next tick; a
    /// paused concert admits nobody.
    ///
    /// When the line began a new generation since the admission log last saw it (the queue
    /// store lost its data: [`QueueStore::restore`]), the tick first gives the store back the
    /// admissions still open, so the capacity cap counts them, and admits nobody until the
    /// longest pause a waiting client is told to keep between polls (plus
    /// [`LINE_REBUILD_MARGIN_SECS`]) has passed since the line began again or since this check,
    /// whichever is later (giving places back reads the booking store, as the check does): by
    /// then every waiting buyer who obeys `Retry-After` has come back with its place.
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn admission_tick(&self, concert_id: ConcertId) -> Result<Vec<TokenRecord>, Error> {
        let concert = match self.booking.concert(concert_id).await {
            Ok(concert) => concert.ok_or(Error::Domain(DomainError::ConcertNotFound))?,
            Err(error) => self.known_concerts(error, Some(concert_id))?.swap_remove(0),
        };
        self.tick(&concert).await
    }

    /// The concerts this process knows (only `only`, if given), as it last read them, for
    /// admission while the booking store does not answer (`error`, returned when it knows
    /// none): the line lives in the queue store, and no operator's change can be written
    /// meanwhile, so the last read stands.
    fn known_concerts(&self, error: StoreError, only: Option<ConcertId>) -> Result<Vec<Concert>, Error> {
        let known: Vec<Concert> = self
            .catalog
            .concerts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|concert| only.is_none_or(|id| concert.id == id))
            .cloned()
            .collect();
        if known.is_empty() {
            return Err(error.into());
        }
        tracing::warn!(%error, "the booking store did not answer; admitting with the concerts' settings as last read");
        Ok(known)
    }

    /// One admission tick of `concert` as just read from the store: its settings refresh this
    /// process's cache, and a paused concert admits nobody. (A tick that read the concert just
    /// before a pause was written may still admit its one batch: a pause stops admission from
    /// the next tick of every node, not mid-tick.)
    #[tracing::instrument(level = "debug", skip_all, fields(concert = %concert.id))]
    async fn tick(&self, concert: &Concert) -> Result<Vec<TokenRecord>, Error> {
        self.remember_concert(concert);
        let concert_id = concert.id;
        let now = self.now();
        self.write_unlogged().await;
        let snapshot = match self.queue.admission_snapshot(concert_id, now).await {
            Ok(snapshot) => snapshot,
            // Contention here means another node is ticking this concert right now.
            Err(StoreError::Conflict(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        if self.line_waits(concert, &snapshot, now).await? {
            return Ok(Vec::new());
        }
        if concert.sales_open_at.is_some() && !snapshot.opened {
            // Admission begins on the tick after the line opens, from a snapshot taken after.
            self.open(concert, &snapshot, now).await?;
            return Ok(Vec::new());
        }
        if concert.paused {
            return Ok(Vec::new());
        }
        let plan = AdmissionPlan {
            requires_open: concert.sales_open_at.is_some(),
            ..queue::plan_admission(concert_id, &concert.queue, &snapshot, now)
        };
        let admitted = match self.queue.admit(&plan).await {
            Ok(admitted) => admitted,
            Err(StoreError::Conflict(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        // A line with no generation is never lost apart from the rest of its store's data
        // (memory, SQL): nothing would ever read its log.
        if !admitted.is_empty() && snapshot.generation != 0 {
            lock(&self.lines.unlogged).extend(admitted.iter().map(|r| (snapshot.generation, r.clone())));
            self.write_unlogged().await;
        }
        Ok(admitted)
    }

    /// Opens `concert`'s sale, whose line `snapshot` says is not open yet, once its time has
    /// come. First the opening is recorded in the booking store, with a fresh seed and an entry
    /// in the audit trail ([`SaleChange::Open`]); the store refuses it while its own clock is
    /// before `sales_open_at` (so a node whose clock runs ahead opens nothing early), and only
    /// one node's recording wins. Then the queue store opens the line, drawing the pre-queue
    /// with the recorded seed ([`queue::draw_pre_queue`]) when it is drawn at random. A line
    /// that began again after the opening (its queue store lost it) is opened without a new
    /// draw: the draw was made once, before.
    async fn open(
        &self,
        concert: &Concert,
        snapshot: &AdmissionSnapshot,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let Some(opens_at) = concert.sales_open_at else { return Ok(()) };
        let mut recorded = None;
        let opening = match concert.opened {
            Some(opening) => opening,
            None if now < opens_at => return Ok(()),
            None => {
                let seed = opening_seed();
                let Some(next) = catalog::plan_sale_change(concert, SaleChange::Open { at: now, seed })?
                else {
                    return Ok(());
                };
                let opener = UserId::parse(OPENER).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let action =
                    catalog::sale_action(concert, &next, SaleChange::Open { at: now, seed }, &opener, now);
                match self.booking.change_sale(&action).await {
                    Ok(()) => {}
                    // Not yet by the store's clock, or another node recorded the opening first:
                    // the next tick reads the concert again.
                    Err(StoreError::Conflict(_)) => return Ok(()),
                    Err(error) => return Err(error.into()),
                }
                tracing::info!(concert = %concert.id, %seed, "the sale opened");
                let opening = next.opened.unwrap_or(Opening { at: now, seed });
                recorded = Some(next);
                opening
            }
        };
        // A line that began again (its queue store lost it) waits, as admission does after a
        // loss, until the waiting buyers have had time to come back with their places: opened
        // sooner, it would admit (or draw) whoever came back first.
        let generation = snapshot.generation;
        let began = i64::try_from(generation).ok().and_then(DateTime::from_timestamp_micros);
        let rebuilding = |line: Option<&[(u64, QueueToken)]>| {
            let pause = rebuild_pause(concert);
            let lost = line.is_none_or(|line| line.iter().any(|(seq, _)| *seq < generation));
            generation != 0 && lost && began.is_some_and(|began| now < began + pause)
        };
        // Lost after the opening: the draw was made, before; the places come back with the claims.
        let drawn_before = generation != 0 && began.is_some_and(|began| began > opening.at);
        let moves = if drawn_before {
            if rebuilding(None) {
                return Ok(());
            }
            Vec::new()
        } else if concert.pre_queue == PreQueue::Random {
            let line = self.queue.waiting_line(concert.id, PRE_QUEUE_DRAW_MAX).await?;
            // Tokens placed before the line began were given back: it was lost before the opening.
            if rebuilding(Some(&line)) {
                return Ok(());
            }
            queue::draw_pre_queue(opening.seed, &line)
        } else {
            Vec::new()
        };
        let count = moves.len();
        match self.queue.open_line(&LineOpening { concert_id: concert.id, moves, generation }).await {
            Ok(true) => tracing::info!(concert = %concert.id, moved = count, "the line opened"),
            Ok(false) => {}
            // The line began again meanwhile: the next tick decides again.
            Err(StoreError::Conflict(_)) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        // Only now: until the line is open, this process's answers keep the pre-queue's places
        // hidden (they read the opening from the cache).
        if let Some(next) = recorded {
            self.remember_concert(&next);
        }
        Ok(())
    }

    /// Writes the admissions not yet in the admission log; keeps them for the next tick if the
    /// booking store fails (at most [`UNLOGGED_ADMISSIONS_MAX`], the oldest dropped first).
    async fn write_unlogged(&self) {
        let mut batch = std::mem::take(&mut *lock(&self.lines.unlogged));
        let mut failed = Vec::new();
        while let Some(&(generation, _)) = batch.first() {
            let run = batch.iter().take_while(|(g, _)| *g == generation).count();
            let rest = batch.split_off(run);
            let records: Vec<TokenRecord> = batch.iter().map(|(_, r)| r.clone()).collect();
            if let Err(error) = self.booking.log_admissions(generation, &records).await {
                tracing::warn!(%error, count = records.len(), "admissions not logged yet; kept for the next tick");
                failed.append(&mut batch);
            }
            batch = rest;
        }
        if !failed.is_empty() {
            let mut unlogged = lock(&self.lines.unlogged);
            failed.append(&mut unlogged);
            let excess = failed.len().saturating_sub(UNLOGGED_ADMISSIONS_MAX);
            failed.drain(..excess);
            *unlogged = failed;
        }
    }

    /// Whether admission of `concert` waits this tick: checks a line generation this process has
    /// not seen against the admission log (see [`Ticketing::admission_tick`]).
    async fn line_waits(
        &self,
        concert: &Concert,
        snapshot: &AdmissionSnapshot,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let generation = snapshot.generation;
        if generation == 0 {
            return Ok(false);
        }
        let known = lock(&self.lines.checked).get(&concert.id).copied();
        if let Some(check) = known.filter(|check| check.generation == generation) {
            return Ok(check.resume_at.is_some_and(|at| now < at));
        }
        let began = i64::try_from(generation).ok().and_then(DateTime::from_timestamp_micros);
        let log = self.booking.admissions(concert.id, now).await?;
        // Rebuilt only if admissions were logged in an older generation and none yet in this
        // one (an admission in this one means its pause is over: a process that starts later
        // must not pause again).
        let resume_at = match (began, log.first_generation, log.last_generation) {
            (Some(began), Some(first), Some(last)) if first < generation && last < generation => {
                let lost: Vec<Lost> = log
                    .open
                    .into_iter()
                    .map(|record| Lost { record: queue::restamped(record, now), line_seq: 0 })
                    .collect();
                if !lost.is_empty() {
                    self.queue.restore(&lost, now).await?;
                }
                let pause = rebuild_pause(concert);
                tracing::warn!(concert = %concert.id, restored = lost.len(), "the queue store lost this line; \
                    admission waits for waiting buyers to come back");
                // From the later of the line's new beginning and this check: buyers come back
                // only once the booking store answers (the check needed it too).
                Some(began.max(now) + pause)
            }
            _ => None,
        };
        let mut checked = lock(&self.lines.checked);
        if checked.len() >= CATALOG_CACHE_MAX {
            checked.clear();
        }
        checked.insert(concert.id, LineCheck { generation, resume_at });
        // A line just rebuilt is admitted from on the next tick, from a snapshot that counts
        // the admissions given back.
        Ok(resume_at.is_some())
    }

    /// Runs one admission tick for every concert; returns how many were admitted. A concert
    /// whose tick fails does not hold up the others: the failure is logged and the round goes
    /// on (the next round tries that concert again).
    ///
    /// # Errors
    /// Store errors reading the concerts.
    pub async fn admission_tick_all(&self) -> Result<usize, Error> {
        let mut admitted = 0;
        let concerts = match self.booking.concerts().await {
            Ok(concerts) => concerts,
            Err(error) => self.known_concerts(error, None)?,
        };
        for concert in concerts {
            match self.tick(&concert).await {
                Ok(records) => admitted += records.len(),
                Err(error) => tracing::warn!(%error, concert = %concert.id, "admission tick failed"),
            }
        }
        Ok(admitted)
    }

    /// A concert's schedules with their available seats, for an active token of that concert.
    ///
    /// # Errors
    /// Token errors ([`DomainError::NotAdmitted`], [`DomainError::WrongConcert`], …),
    /// [`DomainError::ConcertNotFound`]; store errors.
    pub async fn schedules(
        &self,
        token: &QueueToken,
        concert_id: ConcertId,
    ) -> Result<Vec<ScheduleAvailability>, Error> {
        let now = self.now();
        self.concert(concert_id).await?;
        self.active_token(token, Some(concert_id), now).await?;
        let list = self
            .catalog
            .schedule_lists
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&concert_id)
            .cloned();
        if let Some(list) = list {
            let counted = self
                .with_seat_states(concert_id, now, |states| {
                    list.iter()
                        .map(|s| ScheduleAvailability {
                            schedule: s.clone(),
                            available_seats: states.available(s.id, now),
                        })
                        .collect()
                })
                .await?;
            if let Some(counted) = counted {
                return Ok(counted);
            }
        }
        // The concert's first count in this process (or a store that keeps no seat changes):
        // the store counts, and the process keeps the schedules.
        let counted = self.booking.schedules(concert_id, now).await?;
        if !self.catalog.no_seat_changes.load(Ordering::Relaxed) {
            let mut lists = self.catalog.schedule_lists.write().unwrap_or_else(PoisonError::into_inner);
            if lists.len() >= CATALOG_CACHE_MAX {
                lists.clear();
            }
            lists.entry(concert_id).or_insert_with(|| counted.iter().map(|c| c.schedule.clone()).collect());
        }
        Ok(counted)
    }

    /// Brings this process's states of `concert`'s seats up to date with one store read of what
    /// changed since the last one, and answers `answer` of them; `None` when the booking store
    /// keeps no seat changes (then the caller reads what it needs from the store).
    async fn with_seat_states<T>(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
        answer: impl FnOnce(&SeatStates) -> T,
    ) -> Result<Option<T>, Error> {
        if self.catalog.no_seat_changes.load(Ordering::Relaxed) {
            return Ok(None);
        }
        for _ in 0..CAS_RETRIES {
            let since = lock(&self.catalog.seat_states).get(&concert).and_then(|s| s.since(now));
            let Some(read) = self.booking.seat_changes(concert, since).await? else {
                self.catalog.no_seat_changes.store(true, Ordering::Relaxed);
                return Ok(None);
            };
            let mut all = lock(&self.catalog.seat_states);
            let known = all.get(&concert).map_or(0, SeatStates::seat_count);
            let others = all.values().map(SeatStates::seat_count).sum::<usize>() - known;
            let needed = known.max(read.seats.len());
            if needed > SEAT_MAP_CACHE_SEATS_MAX {
                // A concert larger than the whole budget is not kept: a whole read answers.
                all.remove(&concert);
                drop(all);
                if since.is_some() {
                    continue;
                }
                let mut states = SeatStates::default();
                states.merge(None, &read, now);
                return Ok(Some(answer(&states)));
            }
            if others + needed > SEAT_MAP_CACHE_SEATS_MAX {
                all.retain(|id, _| *id == concert);
            }
            let states = all.entry(concert).or_default();
            // `Reread`: the states were forgotten while the read was under way, or the store
            // went back in time or has another history; read the concert whole.
            if states.merge(since, &read, now) == Merged::Current {
                return Ok(Some(answer(states)));
            }
        }
        Err(Error::Contention)
    }

    /// A schedule's seats with their live status, for an active token of its concert.
    ///
    /// # Errors
    /// [`DomainError::ScheduleNotFound`], token errors; store errors.
    ///
    /// Never stale: the seats themselves (fixed at creation) come from the process's catalog
    /// cache, and which of them are held or booked is read from the booking store on every call:
    /// what changed since this process's last read
    /// ([`CatalogStore::seat_changes`](crate::store::CatalogStore::seat_changes)) or, where the
    /// store keeps no changes, the occupied seats
    /// ([`CatalogStore::occupied_seats`](crate::store::CatalogStore::occupied_seats)). So a list
    /// shows every hold and payment committed before it was asked for, whichever node wrote it.
    pub async fn seats(&self, token: &QueueToken, schedule_id: ScheduleId) -> Result<SeatList, Error> {
        let now = self.now();
        let schedule = self.schedule(schedule_id).await?;
        self.active_token(token, Some(schedule.concert_id), now).await?;
        let map =
            self.catalog.seat_maps.read().unwrap_or_else(PoisonError::into_inner).get(&schedule_id).cloned();
        if let Some(seats) = map {
            let concert = schedule.concert_id;
            let listed = self
                .with_seat_states(concert, now, |states| states.list(schedule_id, Arc::clone(&seats), now))
                .await?;
            if let Some(list) = listed {
                return Ok(list);
            }
            let occupied = self.booking.occupied_seats(schedule_id).await?;
            return Ok(SeatList::at(seats, &occupied, now));
        }
        // The schedule's first list in this process reads the seats whole.
        let records = self.booking.seats(schedule_id).await?;
        let occupied: Vec<OccupiedSeat> = records.iter().filter_map(OccupiedSeat::of).collect();
        let seats: Arc<[Seat]> = records.into_iter().map(|r| r.seat).collect();
        if !seats.is_empty() {
            let mut maps = self.catalog.seat_maps.write().unwrap_or_else(PoisonError::into_inner);
            if maps.values().map(|m| m.len()).sum::<usize>() + seats.len() > SEAT_MAP_CACHE_SEATS_MAX {
                maps.clear();
            }
            maps.insert(schedule_id, Arc::clone(&seats));
        }
        Ok(SeatList::at(seats, &occupied, now))
    }

    /// Runs a keyed step (one store call that reads, lets the step's pure rules decide, and
    /// writes) until it writes, stops, or runs out of retries. A refusal is stored under the
    /// key, so a replay gets it back.
    async fn keyed<T, F, Fut>(&self, ctx: KeyCtx, mut step: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(KeyCtx) -> Fut,
        Fut: Future<Output = Result<Result<T, Stop<T>>, StoreError>>,
    {
        for _ in 0..CAS_RETRIES {
            match step(ctx.clone()).await {
                Ok(Ok(value)) => return Ok(value),
                // A compare-and-set lost: read again and decide again.
                Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(error.into()),
                Ok(Err(Stop::Replay(outcome))) => return (*outcome).map_err(Error::Domain),
                Ok(Err(Stop::Failed(error))) => return Err(error),
                Ok(Err(Stop::Refused(refusal))) => {
                    if let Some(record) = ctx.record::<T>(&Err(refusal.clone()))? {
                        match self.booking.save_outcome(&record).await {
                            Ok(()) => {}
                            // Someone stored an outcome under this key first: answer with theirs.
                            Err(StoreError::Conflict(_)) => continue,
                            Err(error) => return Err(error.into()),
                        }
                    }
                    return Err(refusal.into());
                }
            }
        }
        Err(Error::Contention)
    }

    /// Holds a seat for the token's user for `hold_ttl_secs` (the whole time, whenever the
    /// token's active time ends: see [`hold::plan_hold`] and [`payment::require_payer`]).
    ///
    /// # Errors
    /// Token errors; [`DomainError::SeatNotFound`], [`DomainError::WrongConcert`];
    /// [`DomainError::BuyerLimitReached`] (the user already bought the concert's
    /// `max_seats_per_buyer`), [`DomainError::SeatUnavailable`],
    /// [`DomainError::HoldLimitReached`] (remembered under the key);
    /// [`DomainError::IdempotencyKeyReused`]; [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn hold(
        &self,
        token: &QueueToken,
        seat_id: SeatId,
        key: Option<IdempotencyKey>,
    ) -> Result<Reservation, Error> {
        let now = self.now();
        // The token as read once for this request: the hold's own step decides.
        let record = self.authenticate(token).await?;
        // Before any replay under a key: a revoked token is answered for nothing.
        if record.revoked() {
            return Err(DomainError::TokenRevoked.into());
        }
        let position = self.position_if_waiting(&record, now).await?;
        let ctx = KeyCtx { user: record.user_id.clone(), key, fingerprint: format!("hold:{seat_id}"), now };
        let reservation_id = ReservationId::random();
        let hold_ttl = self.hold_ttl();
        // Set at creation: the process's cached copy is the stored one.
        let concert = self.concert(record.concert_id).await?;
        let (cap, limit) = (concert.max_seats_per_buyer, self.holds_per_token_of(&concert));
        let reservation = self
            .keyed(ctx, |ctx| {
                let record = &record;
                async move {
                    let decide = |inputs: HoldInputs| {
                        ctx.check(inputs.key.as_ref())?;
                        queue::require_active(record, None, now, || position).map_err(Stop::failed)?;
                        let seat = inputs.seat.ok_or(Stop::failed(DomainError::SeatNotFound))?;
                        if seat.seat.concert_id != record.concert_id {
                            return Err(Stop::failed(DomainError::WrongConcert));
                        }
                        // A buyer at the cap holds nothing it could not pay for.
                        payment::require_within_buyer_cap(inputs.bought, 1, cap).map_err(Stop::Refused)?;
                        let holder = Holder { user_id: record.user_id.clone(), token: record.token.clone() };
                        let plan = hold::plan_hold(&seat, holder, reservation_id, hold_ttl, limit, now)
                            .map_err(Stop::Refused)?;
                        let key = ctx.success(&plan.reservation)?;
                        Ok((plan, key))
                    };
                    match self.booking.hold(seat_id, &ctx.user, ctx.key.as_ref(), decide).await {
                        Err(StoreError::HoldLimitReached) => {
                            Ok(Err(Stop::Refused(DomainError::HoldLimitReached { limit })))
                        }
                        written => written.map(|decided| decided.map(|plan| plan.reservation)),
                    }
                }
            })
            .await?;
        // As written (HELD), not re-judged at a later `now`: a replay returns the first answer.
        Ok(reservation)
    }

    /// How many open holds one token of `concert` may have: the concert's own setting, else
    /// the deployment's, and never more than the concert's seats per buyer (a buyer would hold
    /// seats it may not pay for, keeping them from others).
    fn holds_per_token_of(&self, concert: &Concert) -> u32 {
        let holds = concert.holds_per_token.unwrap_or(self.config.holds_per_token);
        concert.max_seats_per_buyer.map_or(holds, |cap| holds.min(cap))
    }

    /// One of the token's user's reservations, with its status now.
    ///
    /// # Errors
    /// [`DomainError::ReservationNotFound`], [`DomainError::NotOwner`],
    /// [`DomainError::WrongConcert`] (a token acts only for its own concert); token errors.
    pub async fn reservation(&self, token: &QueueToken, id: ReservationId) -> Result<Reservation, Error> {
        let now = self.now();
        let record = self.owner_token(token, now).await?;
        let reservation = self.own_reservation(&record, id).await?;
        Ok(with_status_at(reservation, now))
    }

    async fn own_reservation(&self, record: &TokenRecord, id: ReservationId) -> Result<Reservation, Error> {
        let reservation = self.booking.reservation(id).await?.ok_or(DomainError::ReservationNotFound)?;
        hold::require_own(&reservation, &record.user_id, record.concert_id)?;
        Ok(reservation)
    }

    /// The token's user's own reservations, of every concert, newest first (at most
    /// [`RESERVATIONS_PER_USER_READ`](crate::limits::RESERVATIONS_PER_USER_READ)), each with its
    /// status now: holds, bookings, and what lapsed or was released. Read with a token that may
    /// read a reservation ([`Ticketing::reservation`]'s rule).
    ///
    /// # Errors
    /// Token errors; store errors.
    pub async fn my_reservations(&self, token: &QueueToken) -> Result<Vec<Reservation>, Error> {
        let now = self.now();
        let record = self.owner_token(token, now).await?;
        let reservations = self.booking.reservations_of_user(&record.user_id).await?;
        Ok(reservations.into_iter().map(|r| with_status_at(r, now)).collect())
    }

    /// The token's user's balance and ledger (every charge and payment, oldest first), with the
    /// same tokens as [`Ticketing::my_reservations`].
    ///
    /// # Errors
    /// Token errors; store errors.
    pub async fn my_account(&self, token: &QueueToken) -> Result<Account, Error> {
        let now = self.now();
        let record = self.owner_token(token, now).await?;
        self.account(&record.user_id).await
    }

    /// Releases one of the token's user's holds; the seat is available again at once.
    /// Releasing a hold that is already over succeeds and changes nothing.
    ///
    /// # Errors
    /// [`DomainError::ReservationNotFound`], [`DomainError::NotOwner`],
    /// [`DomainError::WrongConcert`], [`DomainError::AlreadyPaid`]; token errors; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn release(&self, token: &QueueToken, id: ReservationId) -> Result<(), Error> {
        for _ in 0..CAS_RETRIES {
            let now = self.now();
            let record = self.owner_token(token, now).await?;
            let reservation = self.own_reservation(&record, id).await?;
            let seat = self.booking.seat(reservation.seat_id).await?.ok_or(StoreError::Missing("seat"))?;
            match hold::plan_release(&reservation, &seat, &record.user_id, now)? {
                Release::AlreadyOver => return Ok(()),
                Release::Write(plan) => match self.booking.release_seat(&plan).await {
                    Ok(()) => return Ok(()),
                    Err(StoreError::Conflict(_)) => {}
                    Err(error) => return Err(error.into()),
                },
            }
        }
        Err(Error::Contention)
    }

    /// Pays for one held reservation: [`Ticketing::pay_order`] of one.
    ///
    /// # Errors
    /// Those of [`Ticketing::pay_order`].
    pub async fn pay(
        &self,
        token: &QueueToken,
        id: ReservationId,
        key: Option<IdempotencyKey>,
    ) -> Result<PaymentReceipt, Error> {
        self.pay_order(token, &[id], key).await
    }

    /// Pays for several held reservations at once from the balance, all or none: one debit of
    /// their sum, and for each its reservation CONFIRMED, its seat BOOKED, its payment and
    /// PAYMENT ledger entry recorded, in one step; then the token expires, once nothing it holds
    /// is left to pay ([`payment::token_after_payment`]). A refusal of any one (a hold lapsed,
    /// released or paid, a seat's fence moved) writes nothing: the others stay held.
    ///
    /// Who may pay is [`payment::require_payer`], for each: a token of the holds' concert that
    /// is active, or the token that made a hold, until the hold's deadline. A replay with the
    /// same key returns the first outcome even after the token expired by this payment (the
    /// key's fingerprint names the set of reservations, in any order). The reservations' states
    /// are judged before the token's, so paying twice is [`DomainError::AlreadyPaid`] and
    /// paying a lapsed hold [`DomainError::HoldExpired`].
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] (no reservation, more than
    /// [`RESERVATIONS_PER_PAYMENT_MAX`](crate::limits::RESERVATIONS_PER_PAYMENT_MAX), one
    /// named twice); token errors; [`DomainError::ReservationNotFound`],
    /// [`DomainError::NotOwner`], [`DomainError::WrongConcert`];
    /// [`DomainError::InsufficientBalance`] (for the sum), [`DomainError::HoldExpired`],
    /// [`DomainError::AlreadyPaid`], [`DomainError::HoldReleased`],
    /// [`DomainError::BuyerLimitReached`] (the concert's `max_seats_per_buyer`, counting every
    /// seat of the payment) (remembered under the key); [`DomainError::IdempotencyKeyReused`];
    /// [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn pay_order(
        &self,
        token: &QueueToken,
        ids: &[ReservationId],
        key: Option<IdempotencyKey>,
    ) -> Result<PaymentReceipt, Error> {
        payment::validate_order(ids)?;
        let now = self.now();
        // Any token of the user identifies it here: a replay must answer after the payment
        // expired the token, and an expired hold is reported as such (410) rather than hidden
        // behind the token's expiry. Who may pay afresh is `payment::require_payer`, below.
        let record = self.authenticate(token).await?;
        // Before any replay under a key: a revoked token is answered for nothing.
        if record.revoked() {
            return Err(DomainError::TokenRevoked.into());
        }
        let ctx = KeyCtx { user: record.user_id.clone(), key, fingerprint: payment_fingerprint(ids), now };
        let new_ids: Vec<PaymentIds> = ids
            .iter()
            .map(|_| PaymentIds { payment: PaymentId::random(), entry: LedgerEntryId::random() })
            .collect();
        let position = self.position_if_waiting(&record, now).await?;
        // Set at creation: the process's cached copy is the stored one.
        let cap = self.concert(record.concert_id).await?.max_seats_per_buyer;
        let adding = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let receipt = self
            .keyed(ctx, |ctx| {
                let (record, new_ids) = (&record, &new_ids);
                async move {
                    let decide = |inputs: PaymentInputs| {
                        ctx.check(inputs.key.as_ref())?;
                        let mut holds = Vec::with_capacity(inputs.holds.len());
                        for hold in &inputs.holds {
                            let reservation = hold
                                .reservation
                                .as_ref()
                                .ok_or(Stop::failed(DomainError::ReservationNotFound))?;
                            hold::require_own(reservation, &record.user_id, record.concert_id)
                                .map_err(Stop::failed)?;
                            let seat = hold.seat.as_ref().ok_or(Stop::failed(StoreError::Missing("seat")))?;
                            holds.push((reservation, seat, hold.hold_revoked));
                        }
                        // The reservations' own states answer first: paying twice is "already
                        // paid", not "token expired" (the first payment expired the token).
                        for (reservation, seat, _) in &holds {
                            hold::require_live_hold(reservation, seat, &record.user_id, now)
                                .map_err(Stop::Refused)?;
                        }
                        for (reservation, _, hold_revoked) in &holds {
                            // A hold its revoked token made in the instant of the revocation
                            // is paid by none of its user's tokens.
                            if *hold_revoked {
                                return Err(Stop::failed(DomainError::TokenRevoked));
                            }
                            payment::require_payer(record, reservation, now, || position)
                                .map_err(Stop::failed)?;
                        }
                        payment::require_within_buyer_cap(inputs.bought, adding, cap)
                            .map_err(Stop::Refused)?;
                        let order: Vec<_> = holds
                            .iter()
                            .zip(new_ids)
                            .map(|((reservation, seat, _), ids)| (*reservation, *seat, *ids))
                            .collect();
                        let plan = payment::plan_order(&order, &inputs.wallet, &record.user_id, now)
                            .map_err(Stop::Refused)?;
                        let key = ctx.success(&plan.receipt())?;
                        Ok((plan, key))
                    };
                    let written = self.booking.pay(&ctx.user, ids, ctx.key.as_ref(), decide).await?;
                    Ok(written.map(|plan| plan.receipt()))
                }
            })
            .await?;
        self.expire_paid_token(record, ids).await;
        Ok(receipt)
    }

    /// Cancels one of the token's user's bookings of the token's concert and gives the points
    /// back, within the concert's cancellation window (until `cancel_until_secs_before_start`
    /// before the performance): in one step the seat is available again (and may be sold again),
    /// the reservation CANCELLED, the payment marked refunded, and the price back on the balance
    /// with a REFUND ledger entry ([`payment::plan_refund`]). Safe to retry with a key. Read with
    /// a token that may read the reservation ([`Ticketing::reservation`]'s rule).
    ///
    /// # Errors
    /// Token errors; [`DomainError::ReservationNotFound`], [`DomainError::NotOwner`],
    /// [`DomainError::WrongConcert`]; [`DomainError::NotPaid`], [`DomainError::AlreadyCancelled`],
    /// [`DomainError::CancellationClosed`], [`DomainError::BalanceLimitExceeded`] (remembered
    /// under the key); [`DomainError::IdempotencyKeyReused`]; [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn cancel(
        &self,
        token: &QueueToken,
        id: ReservationId,
        key: Option<IdempotencyKey>,
    ) -> Result<RefundReceipt, Error> {
        let now = self.now();
        let record = self.owner_token(token, now).await?;
        if record.revoked() {
            return Err(DomainError::TokenRevoked.into());
        }
        let reservation = self.own_reservation(&record, id).await?;
        let concert = self.concert(record.concert_id).await?;
        let until = match concert.cancel_until_secs_before_start {
            Some(secs) => {
                let starts_at = self.schedule(reservation.schedule_id).await?.starts_at;
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                Some(starts_at - Duration::seconds(secs))
            }
            None => None,
        };
        let by = Canceller::Buyer { user: record.user_id.clone(), until };
        let refund = self.refund(id, &reservation.user_id, &by, key, format!("cancel:{id}"), now).await?;
        self.seat_freed(reservation.concert_id);
        Ok(refund)
    }

    /// Cancels any booking, as an operator, at any time, and gives the points back to its
    /// buyer: as [`Ticketing::cancel`], without the window. Safe to retry with a key (kept with
    /// the buyer's keys).
    ///
    /// # Errors
    /// [`DomainError::ReservationNotFound`]; [`DomainError::NotPaid`],
    /// [`DomainError::AlreadyCancelled`], [`DomainError::BalanceLimitExceeded`] (remembered under
    /// the key); [`DomainError::IdempotencyKeyReused`]; [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn cancel_by_operator(
        &self,
        id: ReservationId,
        key: Option<IdempotencyKey>,
    ) -> Result<RefundReceipt, Error> {
        let now = self.now();
        let reservation = self.booking.reservation(id).await?.ok_or(DomainError::ReservationNotFound)?;
        let refund = self
            .refund(
                id,
                &reservation.user_id,
                &Canceller::Operator,
                key,
                format!("cancel-by-operator:{id}"),
                now,
            )
            .await?;
        self.seat_freed(reservation.concert_id);
        Ok(refund)
    }

    /// A seat of `concert` is available again: this process no longer takes it for sold out
    /// (others learn it from their next seat tally).
    fn seat_freed(&self, concert: ConcertId) {
        self.catalog.sold_out.write().unwrap_or_else(PoisonError::into_inner).remove(&concert);
    }

    /// The keyed cancellation step of `id`, owned by `owner`, by `by`.
    async fn refund(
        &self,
        id: ReservationId,
        owner: &UserId,
        by: &Canceller,
        key: Option<IdempotencyKey>,
        fingerprint: String,
        now: DateTime<Utc>,
    ) -> Result<RefundReceipt, Error> {
        let ctx = KeyCtx { user: owner.clone(), key, fingerprint, now };
        let entry_id = LedgerEntryId::random();
        self.keyed(ctx, |ctx| async move {
            let decide = |inputs: RefundInputs| {
                ctx.check(inputs.key.as_ref())?;
                let reservation = inputs.reservation.ok_or(Stop::failed(DomainError::ReservationNotFound))?;
                let seat = inputs.seat.ok_or(Stop::failed(StoreError::Missing("seat")))?;
                let wallet = inputs.wallet.ok_or(Stop::failed(StoreError::Missing("wallet")))?;
                // A booking whose payment or seat disagrees with it is the store's fault, not the
                // request's: answered as such and not remembered under the key.
                if reservation.status == ReservationStatus::Confirmed
                    && payment::live_booking(&reservation, &seat, inputs.payment.as_ref()).is_none()
                {
                    return Err(Stop::failed(StoreError::Corrupt(format!(
                        "booking {} without its live payment or booked seat",
                        reservation.id
                    ))));
                }
                let plan = payment::plan_refund(
                    &reservation,
                    &seat,
                    inputs.payment.as_ref(),
                    &wallet,
                    by,
                    entry_id,
                    now,
                )
                .map_err(Stop::Refused)?;
                let key = ctx.success(&plan.receipt())?;
                Ok((plan, key))
            };
            let written = self.booking.refund(id, ctx.key.as_ref(), decide).await?;
            Ok(written.map(|plan| plan.receipt()))
        })
        .await
    }

    /// Expires the token of a buyer who paid, once nothing it holds is left to pay. The payment
    /// has committed whatever happens here: if a store cannot be read or written the token
    /// simply runs out its active time, and it cannot buy again meanwhile because confirmed
    /// reservations count against its hold limit. Two payments of one token's two holds that
    /// commit at the same moment may each see the other still held: then neither expires the
    /// token, which runs out its active time the same way.
    async fn expire_paid_token(&self, read: TokenRecord, paid: &[ReservationId]) {
        let token = read.token.clone();
        let mut known = Some(read);
        for _ in 0..CAS_RETRIES {
            let now = self.now();
            // The token as this request read it first; read again only after a conflict.
            let record = match known.take() {
                Some(record) => record,
                None => match self.queue.token(&token).await {
                    Ok(Some(record)) => record,
                    _ => return,
                },
            };
            // With one hold per token the paid one was its only open hold: nothing to read.
            // (The concert is cached; if it cannot be read, the token's holds are read anyway.)
            let several =
                self.concert(record.concert_id).await.map_or(true, |c| self.holds_per_token_of(&c) > 1);
            let held = if several {
                match self.booking.reservations_of_token(&record.user_id, &token).await {
                    Ok(held) => held,
                    Err(error) => {
                        tracing::warn!(%error, "could not read a paid token's holds; it will time out");
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            let Some(expired) = payment::token_after_payment(&record, paid, &held, now) else { return };
            match self.queue.update_token(record.version, &expired).await {
                Err(StoreError::Conflict(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not expire a paid token; it will time out");
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    /// Adds points to the token's user's balance.
    ///
    /// # Errors
    /// [`DomainError::InvalidAmount`], [`DomainError::BalanceLimitExceeded`] (remembered under
    /// the key); [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token) unless the token has access to its user's account
    /// ([`queue::require_account_access`]); [`DomainError::IdempotencyKeyReused`];
    /// [`Error::Contention`]; store errors.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn charge(
        &self,
        token: &QueueToken,
        amount: i64,
        key: Option<IdempotencyKey>,
    ) -> Result<Wallet, Error> {
        let now = self.now();
        payment::validate_charge_amount(amount)?;
        let record = self.authenticate(token).await?;
        queue::require_account_access(&record, self.hold_ttl(), now)?;
        let ctx = KeyCtx { user: record.user_id.clone(), key, fingerprint: format!("charge:{amount}"), now };
        let entry = LedgerEntryId::random();
        self.keyed(ctx, |ctx| async move {
            let decide = |inputs: ChargeInputs| {
                ctx.check(inputs.key.as_ref())?;
                let plan = payment::plan_charge(&inputs.wallet, amount, entry, now).map_err(Stop::Refused)?;
                let key = ctx.success(&plan.wallet)?;
                Ok((plan, key))
            };
            let written = self.booking.charge(&ctx.user, ctx.key.as_ref(), decide).await?;
            Ok(written.map(|plan| plan.wallet))
        })
        .await
    }

    /// The token's user's balance, for a token with access to its user's account
    /// ([`queue::require_account_access`]).
    ///
    /// # Errors
    /// [`DomainError::TokenNotFound`], [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token); store errors.
    pub async fn balance(&self, token: &QueueToken) -> Result<Wallet, Error> {
        let now = self.now();
        let record = self.authenticate(token).await?;
        queue::require_account_access(&record, self.hold_ttl(), now)?;
        Ok(self.booking.wallet(&record.user_id).await?)
    }

    /// What a concert sold, for operators and audits (no token: callers are trusted, as the
    /// admin routes are): every seat of every schedule with its status now and, for each booked
    /// seat, its reservation and payment, read from the store as it is.
    ///
    /// Reads one seat list per schedule and two records per booked seat; not for hot paths.
    ///
    /// # Errors
    /// [`DomainError::ConcertNotFound`]; store errors.
    pub async fn sales(&self, concert_id: ConcertId) -> Result<Vec<ScheduleSales>, Error> {
        let now = self.now();
        self.concert(concert_id).await?;
        let mut report = Vec::new();
        for availability in self.booking.schedules(concert_id, now).await? {
            let mut seats = Vec::new();
            for record in self.booking.seats(availability.schedule.id).await? {
                let (reservation, payment) = match &record.state {
                    SeatState::Booked { reservation } => (
                        self.booking.reservation(*reservation).await?,
                        self.booking.payment_of(*reservation).await?,
                    ),
                    SeatState::Available | SeatState::Held { .. } => (None, None),
                };
                seats.push(SeatSale { seat: SeatView::at(record, now), reservation, payment });
            }
            report.push(ScheduleSales { schedule: availability.schedule, seats });
        }
        Ok(report)
    }

    /// A user's balance and ledger, for operators and audits (no token: callers are trusted).
    ///
    /// # Errors
    /// Store errors.
    pub async fn account(&self, user: &UserId) -> Result<Account, Error> {
        let wallet = self.booking.wallet(user).await?;
        let ledger = self.booking.ledger(user).await?;
        Ok(Account { wallet, ledger })
    }

    /// Tidies: frees lapsed holds' seats early, expires idle and timed-out tokens, forgets old
    /// tokens and idempotency keys, and the door's clients whose budget refilled. Nothing
    /// depends on it for correctness.
    ///
    /// # Errors
    /// Store errors.
    pub async fn sweep(&self) -> Result<SweepReport, Error> {
        self.door.tidy();
        let now = self.now();
        let forget_before = now - secs(TOKEN_RETENTION_SECS);
        let tokens = self.queue.sweep_queue(now, forget_before, SWEEP_BATCH).await?;
        let holds = self.booking.sweep_holds(now, SWEEP_BATCH).await?;
        Ok(SweepReport { tokens, holds })
    }
}

/// What revoking a token did ([`Ticketing::revoke`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Revoked {
    /// The token as it now stands: EXPIRED, REVOKED.
    pub record: TokenRecord,
    /// How many of its live holds were released (their seats freed).
    pub released: usize,
}

/// The fingerprint of a payment under an idempotency key: the reservation for one (as it always
/// was), and for several a digest of the set (in any order), which fits the stored column.
fn payment_fingerprint(ids: &[ReservationId]) -> String {
    match ids {
        [one] => format!("pay:{one}"),
        several => {
            let mut sorted: Vec<String> = several.iter().map(ToString::to_string).collect();
            sorted.sort_unstable();
            let digest = Sha256::digest(sorted.join(",").as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("pay:{}:{hex}", several.len())
        }
    }
}

/// How long a line its queue store lost waits for its buyers to come back before it admits (or
/// is drawn): the longest pause a waiting client is told to keep between polls, and a margin.
fn rebuild_pause(concert: &Concert) -> Duration {
    secs(queue::poll_after_secs(None, &concert.queue) + LINE_REBUILD_MARGIN_SECS)
}

/// A fresh seed for a pre-queue's draw, below [`catalog::OPENING_SEED_BOUND`].
fn opening_seed() -> u64 {
    let mut bytes = [0_u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system provides a random source");
    u64::from_be_bytes(bytes) % catalog::OPENING_SEED_BOUND
}

/// The view of a token a store step answered; `None` when it is waiting but was out of line at
/// the step's reads (ask again).
fn view_of(polled: Polled, concert: &Concert, created: bool, now: DateTime<Utc>) -> Option<TokenView> {
    let Polled { record, line } = polled;
    let status = record.status_at(now);
    match line.filter(|line| line.position > 0) {
        Some(line) => {
            // Before the opening the line waits for it: the estimate counts from the opening.
            // (A line its queue store lost after the opening is not open again until the next
            // tick, but the opening, and the draw, were made: its places stand.)
            let opens_at =
                concert.sales_open_at.filter(|_| !line.snapshot.opened && concert.opened.is_none());
            let until_open = opens_at.map_or(0, |at| u64::try_from((at - now).num_seconds()).unwrap_or(0));
            // A pre-queue drawn at random has no place yet: the draw gives it at the opening, and
            // its estimate is the time to the opening (one from its place would tell the place).
            let drawn = opens_at.is_some() && concert.pre_queue == PreQueue::Random;
            // While the sale is paused nobody is admitted: no honest estimate.
            let eta_secs = if concert.paused {
                None
            } else if drawn {
                Some(until_open).filter(|eta| *eta <= ETA_MAX_SECS)
            } else {
                queue::eta_secs(line.position, &line.snapshot, &concert.queue)
                    .map(|eta| eta.saturating_add(until_open))
                    .filter(|eta| *eta <= ETA_MAX_SECS)
            };
            Some(TokenView {
                record,
                status,
                position: (!drawn).then_some(line.position),
                eta_secs,
                created,
                sold_out: false,
                opens_at,
            })
        }
        None if status == TokenStatus::Waiting => None,
        None => Some(TokenView {
            record,
            status,
            position: None,
            eta_secs: None,
            created,
            sold_out: false,
            opens_at: None,
        }),
    }
}

/// The reservation with its stored status replaced by its status at `now`.
fn with_status_at(mut reservation: Reservation, now: DateTime<Utc>) -> Reservation {
    reservation.status = reservation.status_at(now);
    reservation
}
