//! A store that counts the calls made to it: wraps any backend, changes nothing else.
//!
//! Every request has a budget of store calls (the README's round-trip table); tests wrap the
//! queue store and the booking store of a service in [`Counting`], make one request, and assert
//! how many calls each store saw. Counts are behaviour, not timing: they are the same on every
//! backend, whatever a call costs there.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use ticketing_core::store::QueueStore;
//! use ticketing_core::store::counting::Counting;
//! use ticketing_core::store::memory::MemoryStore;
//!
//! let queue = Counting::new(MemoryStore::new());
//! queue.ping_queue().await.unwrap();
//! assert_eq!(queue.calls().total(), 1);
//! assert_eq!(queue.calls().of("ping_queue"), 1);
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use super::{
    AdmissionLog, Admissions, BookingStore, CatalogStore, ChargeInputs, Decided, HoldInputs, Lost,
    PaymentInputs, QueueStore, RefundInputs, Restored, Revocation, StoreResult, TokenHistory, WalletStore,
};
use crate::catalog::{
    Concert, ConcertPlan, OccupiedSeat, SaleAction, Schedule, ScheduleAvailability, SeatChanges, SeatRecord,
    SeatTally,
};
use crate::hold::{HoldPlan, ReleasePlan, Reservation};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{ConcertId, IdempotencyKey, QueueToken, ReservationId, ScheduleId, SeatId, UserId};
use crate::payment::{ChargePlan, LedgerEntry, Payment, PaymentPlan, RefundPlan, Wallet};
use crate::queue::{AdmissionPlan, AdmissionSnapshot, Joined, LineOpening, NewToken, Polled, TokenRecord};

/// How many calls a store saw, by method name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls(BTreeMap<&'static str, u64>);

impl Calls {
    /// Calls of every method.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Calls of `method`.
    #[must_use]
    pub fn of(&self, method: &str) -> u64 {
        self.0.get(method).copied().unwrap_or(0)
    }

    /// Every method called, with its count, by name.
    #[must_use]
    pub fn by_method(&self) -> &BTreeMap<&'static str, u64> {
        &self.0
    }
}

/// A store `S` whose every call is counted. Clones share their counts.
#[derive(Debug, Clone)]
pub struct Counting<S> {
    inner: S,
    calls: Arc<Mutex<Calls>>,
}

impl<S> Counting<S> {
    /// Wraps `inner`, with every count at zero.
    pub fn new(inner: S) -> Self {
        Self { inner, calls: Arc::new(Mutex::new(Calls::default())) }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The counts so far.
    #[must_use]
    pub fn calls(&self) -> Calls {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The counts so far, and every count back to zero.
    pub fn take(&self) -> Calls {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts `call` when it first runs (a future that is made and dropped unpolled costs its
    /// store nothing, and counts nothing).
    fn count<F: Future>(&self, method: &'static str, call: F) -> impl Future<Output = F::Output> {
        let calls = Arc::clone(&self.calls);
        async move {
            *calls.lock().unwrap_or_else(PoisonError::into_inner).0.entry(method).or_insert(0) += 1;
            call.await
        }
    }
}

impl<S: QueueStore> QueueStore for Counting<S> {
    fn token(&self, token: &QueueToken) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send {
        self.count("token", self.inner.token(token))
    }

    fn token_of_user(
        &self,
        concert: ConcertId,
        user: &UserId,
    ) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send {
        self.count("token_of_user", self.inner.token_of_user(concert, user))
    }

    fn insert_token(
        &self,
        new: NewToken,
        replacing: Option<&TokenRecord>,
    ) -> impl Future<Output = StoreResult<TokenRecord>> + Send {
        self.count("insert_token", self.inner.insert_token(new, replacing))
    }

    fn update_token(
        &self,
        expected_version: u64,
        updated: &TokenRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("update_token", self.inner.update_token(expected_version, updated))
    }

    fn poll(
        &self,
        token: &QueueToken,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Option<Polled>>> + Send {
        self.count("poll", self.inner.poll(token, now, deadline))
    }

    fn join(&self, new: NewToken, now: DateTime<Utc>) -> impl Future<Output = StoreResult<Joined>> + Send {
        self.count("join", self.inner.join(new, now))
    }

    fn position(&self, record: &TokenRecord) -> impl Future<Output = StoreResult<u64>> + Send {
        self.count("position", self.inner.position(record))
    }

    fn admission_snapshot(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<AdmissionSnapshot>> + Send {
        self.count("admission_snapshot", self.inner.admission_snapshot(concert, now))
    }

    fn admit(&self, plan: &AdmissionPlan) -> impl Future<Output = StoreResult<Vec<TokenRecord>>> + Send {
        self.count("admit", self.inner.admit(plan))
    }

    fn waiting_line(
        &self,
        concert: ConcertId,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<(u64, QueueToken)>>> + Send {
        self.count("waiting_line", self.inner.waiting_line(concert, limit))
    }

    fn open_line(&self, opening: &LineOpening) -> impl Future<Output = StoreResult<bool>> + Send {
        self.count("open_line", self.inner.open_line(opening))
    }

    fn sweep_queue(
        &self,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<usize>> + Send {
        self.count("sweep_queue", self.inner.sweep_queue(now, forget_before, limit))
    }

    fn ping_queue(&self) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("ping_queue", self.inner.ping_queue())
    }

    fn restore(
        &self,
        lost: &[Lost],
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<Restored>>> + Send {
        self.count("restore", self.inner.restore(lost, now))
    }
}

impl<S: AdmissionLog> AdmissionLog for Counting<S> {
    fn log_admissions(
        &self,
        generation: u64,
        admitted: &[TokenRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("log_admissions", self.inner.log_admissions(generation, admitted))
    }

    fn history(
        &self,
        user: &UserId,
        token: &QueueToken,
    ) -> impl Future<Output = StoreResult<TokenHistory>> + Send {
        self.count("history", self.inner.history(user, token))
    }

    fn admissions(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Admissions>> + Send {
        self.count("admissions", self.inner.admissions(concert, now))
    }

    fn record_leave(
        &self,
        token: &QueueToken,
        user: &UserId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("record_leave", self.inner.record_leave(token, user, at))
    }

    fn revoke_token(&self, revocation: &Revocation) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("revoke_token", self.inner.revoke_token(revocation))
    }
}

impl<S: CatalogStore> CatalogStore for Counting<S> {
    fn create_concert(&self, plan: &ConcertPlan) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("create_concert", self.inner.create_concert(plan))
    }

    fn concerts(&self) -> impl Future<Output = StoreResult<Vec<Concert>>> + Send {
        self.count("concerts", self.inner.concerts())
    }

    fn concert(&self, id: ConcertId) -> impl Future<Output = StoreResult<Option<Concert>>> + Send {
        self.count("concert", self.inner.concert(id))
    }

    fn change_sale(&self, action: &SaleAction) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("change_sale", self.inner.change_sale(action))
    }

    fn sale_actions(&self, concert: ConcertId) -> impl Future<Output = StoreResult<Vec<SaleAction>>> + Send {
        self.count("sale_actions", self.inner.sale_actions(concert))
    }

    fn schedule(&self, id: ScheduleId) -> impl Future<Output = StoreResult<Option<Schedule>>> + Send {
        self.count("schedule", self.inner.schedule(id))
    }

    fn seat_tally(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<SeatTally>> + Send {
        self.count("seat_tally", self.inner.seat_tally(concert, now))
    }

    fn schedules(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<ScheduleAvailability>>> + Send {
        self.count("schedules", self.inner.schedules(concert, now))
    }

    fn seats(&self, schedule: ScheduleId) -> impl Future<Output = StoreResult<Vec<SeatRecord>>> + Send {
        self.count("seats", self.inner.seats(schedule))
    }

    fn seat(&self, id: SeatId) -> impl Future<Output = StoreResult<Option<SeatRecord>>> + Send {
        self.count("seat", self.inner.seat(id))
    }

    fn occupied_seats(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = StoreResult<Vec<OccupiedSeat>>> + Send {
        self.count("occupied_seats", self.inner.occupied_seats(schedule))
    }

    fn seat_changes(
        &self,
        concert: ConcertId,
        since: Option<u64>,
    ) -> impl Future<Output = StoreResult<Option<SeatChanges>>> + Send {
        self.count("seat_changes", self.inner.seat_changes(concert, since))
    }

    fn ping_catalog(&self) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("ping_catalog", self.inner.ping_catalog())
    }
}

impl<S: WalletStore> WalletStore for Counting<S> {
    fn wallet(&self, user: &UserId) -> impl Future<Output = StoreResult<Wallet>> + Send {
        self.count("wallet", self.inner.wallet(user))
    }

    fn apply_charge(
        &self,
        plan: &ChargePlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("apply_charge", self.inner.apply_charge(plan, idempotency))
    }

    fn ledger(&self, user: &UserId) -> impl Future<Output = StoreResult<Vec<LedgerEntry>>> + Send {
        self.count("ledger", self.inner.ledger(user))
    }

    fn idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = StoreResult<Option<IdempotencyRecord>>> + Send {
        self.count("idempotency", self.inner.idempotency(user, key))
    }

    fn save_outcome(&self, record: &IdempotencyRecord) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("save_outcome", self.inner.save_outcome(record))
    }

    fn charge_inputs(
        &self,
        user: &UserId,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<ChargeInputs>> + Send {
        self.count("charge_inputs", self.inner.charge_inputs(user, key))
    }

    fn charge<D, E>(
        &self,
        user: &UserId,
        key: Option<&IdempotencyKey>,
        decide: D,
    ) -> impl Future<Output = StoreResult<Result<ChargePlan, E>>> + Send
    where
        D: FnOnce(ChargeInputs) -> Decided<ChargePlan, E> + Send,
        E: Send,
    {
        self.count("charge", self.inner.charge(user, key, decide))
    }
}

impl<S: BookingStore> BookingStore for Counting<S> {
    fn reservation(
        &self,
        id: ReservationId,
    ) -> impl Future<Output = StoreResult<Option<Reservation>>> + Send {
        self.count("reservation", self.inner.reservation(id))
    }

    fn seats_bought(
        &self,
        user: &UserId,
        concert: ConcertId,
        except: &[ReservationId],
    ) -> impl Future<Output = StoreResult<u32>> + Send {
        self.count("seats_bought", self.inner.seats_bought(user, concert, except))
    }

    fn reservations_of_user(
        &self,
        user: &UserId,
    ) -> impl Future<Output = StoreResult<Vec<Reservation>>> + Send {
        self.count("reservations_of_user", self.inner.reservations_of_user(user))
    }

    fn reservations_of_token(
        &self,
        user: &UserId,
        token: &QueueToken,
    ) -> impl Future<Output = StoreResult<Vec<Reservation>>> + Send {
        self.count("reservations_of_token", self.inner.reservations_of_token(user, token))
    }

    fn claim_seat(
        &self,
        plan: &HoldPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("claim_seat", self.inner.claim_seat(plan, idempotency))
    }

    fn release_seat(&self, plan: &ReleasePlan) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("release_seat", self.inner.release_seat(plan))
    }

    fn commit_payment(
        &self,
        plan: &PaymentPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("commit_payment", self.inner.commit_payment(plan, idempotency))
    }

    fn payment_of(
        &self,
        reservation: ReservationId,
    ) -> impl Future<Output = StoreResult<Option<Payment>>> + Send {
        self.count("payment_of", self.inner.payment_of(reservation))
    }

    fn hold_inputs(
        &self,
        seat: SeatId,
        user: &UserId,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<HoldInputs>> + Send {
        self.count("hold_inputs", self.inner.hold_inputs(seat, user, key))
    }

    fn hold<D, E>(
        &self,
        seat: SeatId,
        user: &UserId,
        key: Option<&IdempotencyKey>,
        decide: D,
    ) -> impl Future<Output = StoreResult<Result<HoldPlan, E>>> + Send
    where
        D: FnOnce(HoldInputs) -> Decided<HoldPlan, E> + Send,
        E: Send,
    {
        self.count("hold", self.inner.hold(seat, user, key, decide))
    }

    fn payment_inputs(
        &self,
        user: &UserId,
        reservations: &[ReservationId],
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<PaymentInputs>> + Send {
        self.count("payment_inputs", self.inner.payment_inputs(user, reservations, key))
    }

    fn pay<D, E>(
        &self,
        user: &UserId,
        reservations: &[ReservationId],
        key: Option<&IdempotencyKey>,
        decide: D,
    ) -> impl Future<Output = StoreResult<Result<PaymentPlan, E>>> + Send
    where
        D: FnOnce(PaymentInputs) -> Decided<PaymentPlan, E> + Send,
        E: Send,
    {
        self.count("pay", self.inner.pay(user, reservations, key, decide))
    }

    fn cancel_booking(
        &self,
        plan: &RefundPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.count("cancel_booking", self.inner.cancel_booking(plan, idempotency))
    }

    fn refund_inputs(
        &self,
        reservation: ReservationId,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<RefundInputs>> + Send {
        self.count("refund_inputs", self.inner.refund_inputs(reservation, key))
    }

    fn refund<D, E>(
        &self,
        reservation: ReservationId,
        key: Option<&IdempotencyKey>,
        decide: D,
    ) -> impl Future<Output = StoreResult<Result<RefundPlan, E>>> + Send
    where
        D: FnOnce(RefundInputs) -> Decided<RefundPlan, E> + Send,
        E: Send,
    {
        self.count("refund", self.inner.refund(reservation, key, decide))
    }

    fn sweep_holds(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<usize>> + Send {
        self.count("sweep_holds", self.inner.sweep_holds(now, limit))
    }
}
