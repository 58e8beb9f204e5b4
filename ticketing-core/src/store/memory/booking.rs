//! The memory backend's catalog, wallets and holds.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::{MemoryStore, read, write};
use crate::catalog::{
    Concert, ConcertPlan, OccupiedSeat, SaleAction, Schedule, ScheduleAvailability, SeatRecord, SeatState,
    SeatStatus, SeatTally,
};
use crate::error::StoreError;
use crate::hold::{HoldPlan, ReleasePlan, Reservation, ReservationStatus};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{ConcertId, IdempotencyKey, QueueToken, ReservationId, ScheduleId, SeatId, UserId};
use crate::payment::{ChargePlan, LedgerEntry, Payment, PaymentPlan, RefundPlan, Wallet};
use crate::queue::TokenRecord;
use crate::store::{
    AdmissionLog, Admissions, BookingStore, CatalogStore, Revocation, StoreResult, TokenHistory, WalletStore,
};

/// The users of one shard, with deadlines to sweep.
#[derive(Debug, Default)]
pub(super) struct UserShard {
    books: HashMap<UserId, UserBook>,
    /// Holds by deadline: (expires_at, reservation, owner).
    hold_deadlines: BTreeSet<(DateTime<Utc>, ReservationId, UserId)>,
    /// Idempotency keys by expiry.
    key_deadlines: BTreeSet<(DateTime<Utc>, UserId, IdempotencyKey)>,
}

/// Everything one user has.
#[derive(Debug)]
struct UserBook {
    wallet: Wallet,
    ledger: Vec<LedgerEntry>,
    keys: HashMap<IdempotencyKey, IdempotencyRecord>,
    reservations: HashMap<ReservationId, Reservation>,
    /// Per token, its reservations that were open when last counted: the hold limit counts
    /// these (pruning the closed ones) instead of every reservation the user ever made.
    open_by_token: HashMap<crate::ids::QueueToken, Vec<ReservationId>>,
    payments: HashMap<ReservationId, Payment>,
}

impl UserBook {
    fn new(user: &UserId) -> Self {
        Self {
            wallet: Wallet::empty(user.clone()),
            ledger: Vec::new(),
            keys: HashMap::new(),
            reservations: HashMap::new(),
            open_by_token: HashMap::new(),
            payments: HashMap::new(),
        }
    }

    /// How many of `token`'s reservations are open at `now`, forgetting the closed ones (a
    /// reservation never reopens).
    fn open_holds(&mut self, token: &crate::ids::QueueToken, now: DateTime<Utc>) -> usize {
        let Some(ids) = self.open_by_token.get_mut(token) else { return 0 };
        let reservations = &self.reservations;
        ids.retain(|id| reservations.get(id).is_some_and(|r| r.is_open_at(now)));
        ids.len()
    }

    /// Refuses a key that already has a live record; a record past its lifetime may be replaced.
    fn check_key_free(&self, record: Option<&IdempotencyRecord>) -> StoreResult<()> {
        match record.and_then(|r| self.keys.get(&r.key).map(|existing| (r, existing))) {
            Some((new, existing)) if existing.expires_at > new.created_at => {
                Err(StoreError::Conflict("idempotency key"))
            }
            _ => Ok(()),
        }
    }
}

impl UserShard {
    fn book(&mut self, user: &UserId) -> &mut UserBook {
        self.books.entry(user.clone()).or_insert_with(|| UserBook::new(user))
    }

    fn store_key(&mut self, record: Option<&IdempotencyRecord>) {
        if let Some(record) = record {
            self.key_deadlines.insert((record.expires_at, record.user_id.clone(), record.key.clone()));
            self.book(&record.user_id).keys.insert(record.key.clone(), record.clone());
        }
    }
}

impl MemoryStore {
    /// The owner of a reservation, from the owner index (a leaf lock, taken alone).
    fn owner_of(&self, id: ReservationId) -> Option<UserId> {
        self.inner.owners.lock(&id).get(&id).cloned()
    }
}

impl CatalogStore for MemoryStore {
    async fn create_concert(&self, plan: &ConcertPlan) -> StoreResult<()> {
        let mut catalog = write(&self.inner.catalog);
        if catalog.concert_index.contains_key(&plan.concert.id) {
            return Err(StoreError::Conflict("concert id"));
        }
        for seat in &plan.seats {
            let record =
                SeatRecord { seat: seat.clone(), state: SeatState::Available, fence: Default::default() };
            self.inner.seats.lock(&seat.id).insert(seat.id, record);
            catalog.seats_of.entry(seat.schedule_id).or_default().push(seat.id);
        }
        for schedule in &plan.schedules {
            catalog.schedules.insert(schedule.id, schedule.clone());
            catalog.schedules_of.entry(schedule.concert_id).or_default().push(schedule.id);
        }
        let index = catalog.concerts.len();
        catalog.concerts.push(plan.concert.clone());
        catalog.concert_index.insert(plan.concert.id, index);
        Ok(())
    }

    async fn concerts(&self) -> StoreResult<Vec<Concert>> {
        Ok(read(&self.inner.catalog).concerts.clone())
    }

    async fn concert(&self, id: ConcertId) -> StoreResult<Option<Concert>> {
        let catalog = read(&self.inner.catalog);
        Ok(catalog.concert_index.get(&id).map(|&i| catalog.concerts[i].clone()))
    }

    async fn change_sale(&self, action: &SaleAction) -> StoreResult<()> {
        let mut catalog = write(&self.inner.catalog);
        let index = *catalog.concert_index.get(&action.concert_id).ok_or(StoreError::Conflict("concert"))?;
        let stored = &mut catalog.concerts[index];
        if stored.version != action.before.version {
            return Err(StoreError::Conflict("concert"));
        }
        // The opening's time is this process's clock, which is this store's clock.
        if stored.opened.is_none()
            && action.after.opened.is_some_and(|o| stored.sales_open_at.is_none_or(|opens| o.at < opens))
        {
            return Err(StoreError::Conflict("concert"));
        }
        stored.queue = action.after.queue;
        stored.paused = action.after.paused;
        stored.version = action.after.version;
        stored.opened = action.after.opened;
        catalog.sale_actions.entry(action.concert_id).or_default().push(action.clone());
        Ok(())
    }

    async fn sale_actions(&self, concert: ConcertId) -> StoreResult<Vec<SaleAction>> {
        Ok(read(&self.inner.catalog).sale_actions.get(&concert).cloned().unwrap_or_default())
    }

    async fn schedule(&self, id: ScheduleId) -> StoreResult<Option<Schedule>> {
        Ok(read(&self.inner.catalog).schedules.get(&id).cloned())
    }

    async fn seat_tally(&self, concert: ConcertId, now: DateTime<Utc>) -> StoreResult<SeatTally> {
        let seats: Vec<SeatId> = {
            let catalog = read(&self.inner.catalog);
            let schedules = catalog.schedules_of.get(&concert).map(Vec::as_slice).unwrap_or_default();
            schedules.iter().flat_map(|s| catalog.seats_of.get(s).into_iter().flatten().copied()).collect()
        };
        let mut tally = SeatTally::default();
        for id in seats {
            if let Some(record) = self.inner.seats.lock(&id).get(&id) {
                let status = record.status_at(now);
                let (held, sold) =
                    (u64::from(status == SeatStatus::Held), u64::from(status == SeatStatus::Booked));
                tally = tally.with(record.seat.price.get(), 1, held, sold);
            }
        }
        Ok(tally)
    }

    async fn schedules(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ScheduleAvailability>> {
        let (mut schedules, seats_of): (Vec<Schedule>, Vec<Vec<SeatId>>) = {
            let catalog = read(&self.inner.catalog);
            let ids = catalog.schedules_of.get(&concert).cloned().unwrap_or_default();
            ids.iter()
                .filter_map(|id| catalog.schedules.get(id).cloned())
                .map(|s| {
                    let seats = catalog.seats_of.get(&s.id).cloned().unwrap_or_default();
                    (s, seats)
                })
                .unzip()
        };
        let mut result: Vec<ScheduleAvailability> = schedules
            .drain(..)
            .zip(seats_of)
            .map(|(schedule, seats)| {
                let available = seats
                    .iter()
                    .filter(|id| {
                        self.inner
                            .seats
                            .lock(*id)
                            .get(*id)
                            .is_some_and(|s| s.status_at(now) == SeatStatus::Available)
                    })
                    .count();
                ScheduleAvailability {
                    schedule,
                    available_seats: u32::try_from(available).unwrap_or(u32::MAX),
                }
            })
            .collect();
        result.sort_by_key(|s| s.schedule.starts_at);
        Ok(result)
    }

    async fn seats(&self, schedule: ScheduleId) -> StoreResult<Vec<SeatRecord>> {
        let ids = read(&self.inner.catalog).seats_of.get(&schedule).cloned().unwrap_or_default();
        let mut seats: Vec<SeatRecord> =
            ids.iter().filter_map(|id| self.inner.seats.lock(id).get(id).cloned()).collect();
        seats.sort_by_key(|s| s.seat.number);
        Ok(seats)
    }

    async fn occupied_seats(&self, schedule: ScheduleId) -> StoreResult<Vec<OccupiedSeat>> {
        let ids = read(&self.inner.catalog).seats_of.get(&schedule).cloned().unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let seats = self.inner.seats.lock(id);
                OccupiedSeat::of(seats.get(id)?)
            })
            .collect())
    }

    async fn seat(&self, id: SeatId) -> StoreResult<Option<SeatRecord>> {
        Ok(self.inner.seats.lock(&id).get(&id).cloned())
    }

    async fn ping_catalog(&self) -> StoreResult<()> {
        Ok(())
    }
}

impl WalletStore for MemoryStore {
    async fn wallet(&self, user: &UserId) -> StoreResult<Wallet> {
        let shard = self.inner.users.lock(user);
        Ok(shard.books.get(user).map_or_else(|| Wallet::empty(user.clone()), |b| b.wallet.clone()))
    }

    async fn apply_charge(
        &self,
        plan: &ChargePlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let user = &plan.wallet.user_id;
        let mut shard = self.inner.users.lock(user);
        let book = shard.book(user);
        if book.wallet.version != plan.expected_version {
            return Err(StoreError::Conflict("wallet"));
        }
        book.check_key_free(idempotency)?;
        book.wallet = plan.wallet.clone();
        book.ledger.push(plan.entry.clone());
        shard.store_key(idempotency);
        Ok(())
    }

    async fn ledger(&self, user: &UserId) -> StoreResult<Vec<LedgerEntry>> {
        let shard = self.inner.users.lock(user);
        Ok(shard.books.get(user).map(|b| b.ledger.clone()).unwrap_or_default())
    }

    async fn idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let shard = self.inner.users.lock(user);
        Ok(shard.books.get(user).and_then(|b| b.keys.get(key)).cloned())
    }

    async fn save_outcome(&self, record: &IdempotencyRecord) -> StoreResult<()> {
        let mut shard = self.inner.users.lock(&record.user_id);
        shard.book(&record.user_id).check_key_free(Some(record))?;
        shard.store_key(Some(record));
        Ok(())
    }
}

impl MemoryStore {
    /// When a payment was made with `token` of `user`: the payment of a confirmed reservation
    /// it made (or of one cancelled since: the token paid all the same).
    fn paid_with(&self, user: &UserId, token: &QueueToken) -> Option<DateTime<Utc>> {
        let shard = self.inner.users.lock(user);
        let book = shard.books.get(user)?;
        book.reservations
            .values()
            .filter(|r| {
                &r.token == token
                    && matches!(r.status, ReservationStatus::Confirmed | ReservationStatus::Cancelled)
            })
            .filter_map(|r| book.payments.get(&r.id).map(|p| p.at))
            .min()
    }
}

impl AdmissionLog for MemoryStore {
    async fn log_admissions(&self, generation: u64, admitted: &[TokenRecord]) -> StoreResult<()> {
        let mut log = super::lock(&self.inner.admissions);
        for record in admitted {
            let concert = log.entry(record.concert_id).or_default();
            concert.entry(record.token.identity()).or_insert_with(|| {
                (generation, TokenRecord { token: record.token.identity(), ..record.clone() })
            });
        }
        Ok(())
    }

    async fn history(&self, user: &UserId, token: &QueueToken) -> StoreResult<TokenHistory> {
        let admitted = super::lock(&self.inner.admissions)
            .get(&token.concert())
            .and_then(|c| c.get(token).map(|(_, record)| record.clone()));
        let revoked_at = super::lock(&self.inner.revoked).get(token).copied();
        let left_at = super::lock(&self.inner.left).get(token).copied();
        Ok(TokenHistory { admitted, paid_at: self.paid_with(user, token), revoked_at, left_at })
    }

    async fn record_leave(&self, token: &QueueToken, _user: &UserId, at: DateTime<Utc>) -> StoreResult<()> {
        super::lock(&self.inner.left).entry(token.identity()).or_insert(at);
        Ok(())
    }

    async fn revoke_token(&self, revocation: &Revocation) -> StoreResult<()> {
        // The revocation, then its audit entry, each under its own lock: the catalog lock is
        // never taken inside the leaf lock.
        let fresh = {
            let mut revoked = super::lock(&self.inner.revoked);
            let fresh = !revoked.contains_key(&revocation.token);
            revoked.entry(revocation.token.identity()).or_insert(revocation.action.at);
            fresh
        };
        if fresh {
            let action = &revocation.action;
            write(&self.inner.catalog)
                .sale_actions
                .entry(action.concert_id)
                .or_default()
                .push(action.clone());
        }
        Ok(())
    }

    async fn admissions(&self, concert: ConcertId, now: DateTime<Utc>) -> StoreResult<Admissions> {
        let (records, first_generation, last_generation) = {
            let log = super::lock(&self.inner.admissions);
            let Some(of_concert) = log.get(&concert) else { return Ok(Admissions::default()) };
            let first = of_concert.values().map(|(generation, _)| *generation).min();
            let last = of_concert.values().map(|(generation, _)| *generation).max();
            let open: Vec<TokenRecord> =
                of_concert.values().map(|(_, r)| r).filter(|r| r.expires_at() > now).cloned().collect();
            (open, first, last)
        };
        let revoked = super::lock(&self.inner.revoked).clone();
        let open = records
            .into_iter()
            .filter(|r| self.paid_with(&r.user_id, &r.token).is_none() && !revoked.contains_key(&r.token))
            .collect();
        Ok(Admissions { open, first_generation, last_generation })
    }
}

impl BookingStore for MemoryStore {
    async fn reservation(&self, id: ReservationId) -> StoreResult<Option<Reservation>> {
        let Some(owner) = self.owner_of(id) else { return Ok(None) };
        let shard = self.inner.users.lock(&owner);
        Ok(shard.books.get(&owner).and_then(|b| b.reservations.get(&id)).cloned())
    }

    async fn seats_bought(
        &self,
        user: &UserId,
        concert: ConcertId,
        except: &[ReservationId],
    ) -> StoreResult<u32> {
        let shard = self.inner.users.lock(user);
        let bought = shard.books.get(user).map_or(0, |book| {
            book.reservations
                .values()
                .filter(|r| {
                    r.concert_id == concert
                        && r.status == ReservationStatus::Confirmed
                        && !except.contains(&r.id)
                })
                .count()
        });
        Ok(u32::try_from(bought).unwrap_or(u32::MAX))
    }

    async fn reservations_of_user(&self, user: &UserId) -> StoreResult<Vec<Reservation>> {
        let shard = self.inner.users.lock(user);
        let mut all: Vec<Reservation> = shard
            .books
            .get(user)
            .map(|book| book.reservations.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| b.held_at.cmp(&a.held_at).then(b.id.cmp(&a.id)));
        all.truncate(crate::limits::RESERVATIONS_PER_USER_READ);
        Ok(all)
    }

    async fn reservations_of_token(
        &self,
        user: &UserId,
        token: &QueueToken,
    ) -> StoreResult<Vec<Reservation>> {
        let shard = self.inner.users.lock(user);
        Ok(shard
            .books
            .get(user)
            .map(|book| book.reservations.values().filter(|r| &r.token == token).cloned().collect())
            .unwrap_or_default())
    }

    async fn claim_seat(&self, plan: &HoldPlan, idempotency: Option<&IdempotencyRecord>) -> StoreResult<()> {
        let reservation = &plan.reservation;
        let user = &reservation.user_id;
        let mut shard = self.inner.users.lock(user);
        let book = shard.book(user);
        book.check_key_free(idempotency)?;
        if book.open_holds(&reservation.token, plan.now) >= plan.holds_per_token as usize {
            return Err(StoreError::HoldLimitReached);
        }
        {
            let mut seats = self.inner.seats.lock(&reservation.seat_id);
            let seat = seats.get_mut(&reservation.seat_id).ok_or(StoreError::Missing("seat"))?;
            if seat.fence != plan.expected_fence {
                return Err(StoreError::Conflict("seat"));
            }
            seat.state = plan.seat_state.clone();
            seat.fence = reservation.fence;
        }
        book.reservations.insert(reservation.id, reservation.clone());
        book.open_by_token.entry(reservation.token.clone()).or_default().push(reservation.id);
        shard.hold_deadlines.insert((reservation.expires_at, reservation.id, user.clone()));
        self.inner.owners.lock(&reservation.id).insert(reservation.id, user.clone());
        shard.store_key(idempotency);
        Ok(())
    }

    async fn release_seat(&self, plan: &ReleasePlan) -> StoreResult<()> {
        let owner = self.owner_of(plan.reservation_id).ok_or(StoreError::Missing("reservation"))?;
        let mut shard = self.inner.users.lock(&owner);
        let reservation = shard
            .book(&owner)
            .reservations
            .get_mut(&plan.reservation_id)
            .ok_or(StoreError::Missing("reservation"))?;
        if reservation.status != ReservationStatus::Held {
            return Err(StoreError::Conflict("reservation"));
        }
        let mut seats = self.inner.seats.lock(&plan.seat_id);
        let seat = seats.get_mut(&plan.seat_id).ok_or(StoreError::Missing("seat"))?;
        let held_by_it =
            matches!(&seat.state, SeatState::Held { reservation: r, .. } if *r == plan.reservation_id);
        if seat.fence != plan.expected_fence || !held_by_it {
            return Err(StoreError::Conflict("seat"));
        }
        seat.state = SeatState::Available;
        seat.fence = seat.fence.next();
        reservation.status = ReservationStatus::Released;
        Ok(())
    }

    async fn commit_payment(
        &self,
        plan: &PaymentPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let user = &plan.wallet.user_id;
        let mut shard = self.inner.users.lock(user);
        let book = shard.book(user);
        if book.wallet.version != plan.expected_wallet_version {
            return Err(StoreError::Conflict("wallet"));
        }
        book.check_key_free(idempotency)?;
        for paid in &plan.seats {
            let reservation =
                book.reservations.get(&paid.reservation.id).ok_or(StoreError::Missing("reservation"))?;
            if reservation.status != ReservationStatus::Held {
                return Err(StoreError::Conflict("reservation"));
            }
        }
        {
            // Every seat's shard at once, in ascending shard order: all or none is written.
            let mut seats = self.inner.seats.lock_all(plan.seats.iter().map(|p| &p.reservation.seat_id));
            for paid in &plan.seats {
                let seat = seats.get(&paid.reservation.seat_id).ok_or(StoreError::Missing("seat"))?;
                if seat.fence != paid.expected_fence {
                    return Err(StoreError::Conflict("seat"));
                }
            }
            for paid in &plan.seats {
                let seat = seats.get_mut(&paid.reservation.seat_id).ok_or(StoreError::Missing("seat"))?;
                seat.state = paid.seat_state.clone();
                seat.fence = paid.new_fence;
            }
        }
        for paid in &plan.seats {
            if let Some(reservation) = book.reservations.get_mut(&paid.reservation.id) {
                reservation.status = ReservationStatus::Confirmed;
            }
            book.ledger.push(paid.entry.clone());
            book.payments.insert(paid.reservation.id, paid.payment.clone());
        }
        book.wallet = plan.wallet.clone();
        shard.store_key(idempotency);
        Ok(())
    }

    async fn cancel_booking(
        &self,
        plan: &RefundPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let user = &plan.wallet.user_id;
        let id = plan.reservation.id;
        let mut shard = self.inner.users.lock(user);
        let book = shard.book(user);
        if book.wallet.version != plan.expected_wallet_version {
            return Err(StoreError::Conflict("wallet"));
        }
        book.check_key_free(idempotency)?;
        let reservation = book.reservations.get(&id).ok_or(StoreError::Missing("reservation"))?;
        if reservation.status != ReservationStatus::Confirmed {
            return Err(StoreError::Conflict("reservation"));
        }
        if book.payments.get(&id).is_none_or(|p| p.id != plan.payment.id || p.refunded_at.is_some()) {
            return Err(StoreError::Conflict("payment"));
        }
        {
            let mut seats = self.inner.seats.lock(&plan.reservation.seat_id);
            let seat = seats.get_mut(&plan.reservation.seat_id).ok_or(StoreError::Missing("seat"))?;
            let booked = matches!(seat.state, SeatState::Booked { reservation } if reservation == id);
            if seat.fence != plan.expected_fence || !booked {
                return Err(StoreError::Conflict("seat"));
            }
            seat.state = SeatState::Available;
            seat.fence = plan.new_fence;
        }
        if let Some(reservation) = book.reservations.get_mut(&id) {
            reservation.status = ReservationStatus::Cancelled;
        }
        book.payments.insert(id, plan.payment.clone());
        book.wallet = plan.wallet.clone();
        book.ledger.push(plan.entry.clone());
        shard.store_key(idempotency);
        Ok(())
    }

    async fn payment_of(&self, reservation: ReservationId) -> StoreResult<Option<Payment>> {
        let Some(owner) = self.owner_of(reservation) else { return Ok(None) };
        let shard = self.inner.users.lock(&owner);
        Ok(shard.books.get(&owner).and_then(|b| b.payments.get(&reservation)).cloned())
    }

    async fn sweep_holds(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<usize> {
        let mut freed = 0;
        for mut shard in self.inner.users.each() {
            let shard = &mut *shard;
            while freed < limit {
                let Some(first) = shard.hold_deadlines.first().cloned() else { break };
                if first.0 > now {
                    break;
                }
                shard.hold_deadlines.remove(&first);
                let (_, id, owner) = first;
                let Some(reservation) = shard.books.get_mut(&owner).and_then(|b| b.reservations.get_mut(&id))
                else {
                    continue;
                };
                if reservation.status != ReservationStatus::Held || reservation.expires_at > now {
                    continue;
                }
                reservation.status = ReservationStatus::Expired;
                let mut seats = self.inner.seats.lock(&reservation.seat_id);
                if let Some(seat) = seats.get_mut(&reservation.seat_id) {
                    let held_by_it =
                        matches!(&seat.state, SeatState::Held { reservation: r, .. } if *r == id);
                    if held_by_it && seat.fence == reservation.fence {
                        seat.state = SeatState::Available;
                        seat.fence = seat.fence.next();
                        freed += 1;
                    }
                }
            }
            while let Some(first) = shard.key_deadlines.first().cloned() {
                if first.0 > now {
                    break;
                }
                shard.key_deadlines.remove(&first);
                let (_, user, key) = first;
                if let Some(book) = shard.books.get_mut(&user) {
                    if book.keys.get(&key).is_some_and(|r| r.expires_at <= now) {
                        book.keys.remove(&key);
                    }
                }
            }
        }
        Ok(freed)
    }
}
