//! A booking-store decorator that injects failures into the calls that write: before the effect
//! (nothing happened), or after it with the answer lost (the commit happened, the caller never
//! hears). Reads pass through.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use ticketing_core::StoreError;
use ticketing_core::catalog::{
    Concert, ConcertPlan, OccupiedSeat, SaleAction, Schedule, ScheduleAvailability, SeatChanges, SeatRecord,
    SeatTally,
};
use ticketing_core::hold::{HoldPlan, ReleasePlan, Reservation};
use ticketing_core::idempotency::IdempotencyRecord;
use ticketing_core::ids::{ConcertId, IdempotencyKey, QueueToken, ReservationId, ScheduleId, SeatId, UserId};
use ticketing_core::payment::{ChargePlan, LedgerEntry, Payment, PaymentPlan, Wallet};
use ticketing_core::queue::TokenRecord;
use ticketing_core::store::{
    AdmissionLog, Admissions, BookingStore, CatalogStore, StoreResult, TokenHistory, WalletStore,
};

/// What happens to the next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It goes through.
    None,
    /// It fails before doing anything.
    Before,
    /// It takes effect, and then the answer is lost.
    AfterLost,
}

/// A booking store whose writes fail as planned.
#[derive(Debug, Clone)]
pub struct Faulty<B> {
    inner: B,
    plan: Arc<Mutex<VecDeque<Fault>>>,
}

impl<B> Faulty<B> {
    /// Wraps `inner`; each write takes the next fault of `plan` (none once it runs out).
    pub fn new(inner: B, plan: impl IntoIterator<Item = Fault>) -> Self {
        Self { inner, plan: Arc::new(Mutex::new(plan.into_iter().collect())) }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn next(&self) -> Fault {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner).pop_front().unwrap_or(Fault::None)
    }

    async fn write<F: Future<Output = StoreResult<()>>>(&self, effect: F) -> StoreResult<()> {
        let injected =
            |when: &str| StoreError::Backend { message: format!("injected fault {when}"), source: None };
        match self.next() {
            Fault::None => effect.await,
            Fault::Before => Err(injected("before the effect")),
            Fault::AfterLost => {
                effect.await?;
                Err(injected("after the effect: the answer was lost"))
            }
        }
    }
}

impl<B: BookingStore> CatalogStore for Faulty<B> {
    async fn create_concert(&self, plan: &ConcertPlan) -> StoreResult<()> {
        self.inner.create_concert(plan).await
    }
    async fn concerts(&self) -> StoreResult<Vec<Concert>> {
        self.inner.concerts().await
    }
    async fn concert(&self, id: ConcertId) -> StoreResult<Option<Concert>> {
        self.inner.concert(id).await
    }
    async fn change_sale(&self, action: &SaleAction) -> StoreResult<()> {
        self.inner.change_sale(action).await
    }
    async fn sale_actions(&self, concert: ConcertId) -> StoreResult<Vec<SaleAction>> {
        self.inner.sale_actions(concert).await
    }
    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<Schedule>> {
        self.inner.schedule(id).await
    }
    async fn seat_tally(&self, concert: ConcertId, now: DateTime<Utc>) -> StoreResult<SeatTally> {
        self.inner.seat_tally(concert, now).await
    }
    async fn schedules(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ScheduleAvailability>> {
        self.inner.schedules(concert, now).await
    }
    async fn seats(&self, schedule: ScheduleId) -> StoreResult<Vec<SeatRecord>> {
        self.inner.seats(schedule).await
    }
    async fn seat(&self, id: SeatId) -> StoreResult<Option<SeatRecord>> {
        self.inner.seat(id).await
    }
    async fn occupied_seats(&self, schedule: ScheduleId) -> StoreResult<Vec<OccupiedSeat>> {
        self.inner.occupied_seats(schedule).await
    }
    async fn seat_changes(&self, concert: ConcertId, since: Option<u64>) -> StoreResult<Option<SeatChanges>> {
        self.inner.seat_changes(concert, since).await
    }
    async fn ping_catalog(&self) -> StoreResult<()> {
        self.inner.ping_catalog().await
    }
}

impl<B: BookingStore> WalletStore for Faulty<B> {
    async fn wallet(&self, user: &UserId) -> StoreResult<Wallet> {
        self.inner.wallet(user).await
    }
    async fn apply_charge(
        &self,
        plan: &ChargePlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        self.write(self.inner.apply_charge(plan, idempotency)).await
    }
    async fn ledger(&self, user: &UserId) -> StoreResult<Vec<LedgerEntry>> {
        self.inner.ledger(user).await
    }
    async fn idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        self.inner.idempotency(user, key).await
    }
    async fn save_outcome(&self, record: &IdempotencyRecord) -> StoreResult<()> {
        self.write(self.inner.save_outcome(record)).await
    }
}

/// The admission log is passed through without faults: these tests inject them into the
/// booking steps.
impl<B: BookingStore> AdmissionLog for Faulty<B> {
    async fn log_admissions(&self, generation: u64, admitted: &[TokenRecord]) -> StoreResult<()> {
        self.inner.log_admissions(generation, admitted).await
    }
    async fn history(&self, user: &UserId, token: &QueueToken) -> StoreResult<TokenHistory> {
        self.inner.history(user, token).await
    }
    async fn admissions(&self, concert: ConcertId, now: DateTime<Utc>) -> StoreResult<Admissions> {
        self.inner.admissions(concert, now).await
    }
    async fn record_leave(&self, token: &QueueToken, user: &UserId, at: DateTime<Utc>) -> StoreResult<()> {
        self.inner.record_leave(token, user, at).await
    }
    async fn revoke_token(&self, revocation: &ticketing_core::store::Revocation) -> StoreResult<()> {
        self.inner.revoke_token(revocation).await
    }
}

impl<B: BookingStore> BookingStore for Faulty<B> {
    async fn reservation(&self, id: ReservationId) -> StoreResult<Option<Reservation>> {
        self.inner.reservation(id).await
    }
    async fn seats_bought(
        &self,
        user: &UserId,
        concert: ConcertId,
        except: &[ReservationId],
    ) -> StoreResult<u32> {
        self.inner.seats_bought(user, concert, except).await
    }
    async fn reservations_of_user(&self, user: &UserId) -> StoreResult<Vec<Reservation>> {
        self.inner.reservations_of_user(user).await
    }
    async fn reservations_of_token(
        &self,
        user: &UserId,
        token: &QueueToken,
    ) -> StoreResult<Vec<Reservation>> {
        self.inner.reservations_of_token(user, token).await
    }
    async fn claim_seat(&self, plan: &HoldPlan, idempotency: Option<&IdempotencyRecord>) -> StoreResult<()> {
        self.write(self.inner.claim_seat(plan, idempotency)).await
    }
    async fn release_seat(&self, plan: &ReleasePlan) -> StoreResult<()> {
        self.write(self.inner.release_seat(plan)).await
    }
    async fn commit_payment(
        &self,
        plan: &PaymentPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        self.write(self.inner.commit_payment(plan, idempotency)).await
    }
    async fn cancel_booking(
        &self,
        plan: &ticketing_core::payment::RefundPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        self.write(self.inner.cancel_booking(plan, idempotency)).await
    }
    async fn payment_of(&self, reservation: ReservationId) -> StoreResult<Option<Payment>> {
        self.inner.payment_of(reservation).await
    }
    async fn sweep_holds(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<usize> {
        self.inner.sweep_holds(now, limit).await
    }
}
