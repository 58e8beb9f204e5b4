//! The storage contract.
//!
//! Three small traits, one per concern, so that the queue can live in one backend and booking in
//! another (Redis for the queue and PostgreSQL for booking is the deployment the design draws):
//!
//! - [`QueueStore`]: queue tokens, the line, admission.
//! - [`CatalogStore`]: concerts, schedules, seats.
//! - [`WalletStore`]: balances, the ledger and idempotency keys.
//! - [`BookingStore`]: holds and payments. It extends the other two because a payment debits a
//!   balance, confirms a reservation, books a seat and stores its idempotency key in one atomic
//!   step, which one backend must do.
//!
//! # The rules every backend follows
//!
//! - **One method, one atomic step.** A method either does all it says or nothing. No
//!   transaction, connection or guard outlives a call. SQL backends open a transaction and commit
//!   before returning; the memory backend takes its locks with no `.await` inside; Redis runs one
//!   script.
//! - **Stores do not decide legality.** The pure state machines ([`crate::queue`],
//!   [`crate::hold`], [`crate::payment`]) decide what may happen; a store writes a plan only if
//!   what the plan was computed from is unchanged (a version or a fence), and reports
//!   [`StoreError::Conflict`] otherwise. The service then reads again and re-decides. So safety
//!   never rests on a lock or a timer: whatever a backend does to reduce contention, the final
//!   write is a compare-and-set that a loser cannot pass.
//! - **Time comes from the caller.** Every method that needs "now" takes it in its arguments or
//!   plan; no backend reads its own clock for a decision.
//! - **Expiry is lazy.** Records past their deadline are still returned as stored; readers judge
//!   them with `status_at(now)`. The sweep methods only tidy.
//!
//! The conformance suite in `tests/conformance` checks every clause of this contract, and every
//! backend runs it.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::catalog::{
    Concert, ConcertPlan, OccupiedSeat, SaleAction, Schedule, ScheduleAvailability, SeatChanges, SeatRecord,
    SeatTally,
};
use crate::error::StoreError;
use crate::hold::{HoldPlan, ReleasePlan, Reservation};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{ConcertId, IdempotencyKey, QueueToken, ReservationId, ScheduleId, SeatId, UserId};
use crate::payment::{ChargePlan, LedgerEntry, Payment, PaymentPlan, RefundPlan, Wallet};
use crate::queue::{
    self, AdmissionPlan, AdmissionSnapshot, InLine, IssueDecision, Joined, LineOpening, NewToken, Polled,
    TokenRecord,
};

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod claim;
pub mod counting;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql_pool;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql_rows;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql_steps;

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use claim::ClaimStrategy;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use sql_pool::SqlPool;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use sql_pool::{SqlConn, SqlTx};

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Queue tokens, the line of waiting tokens per concert, and admission.
pub trait QueueStore: Send + Sync + 'static {
    /// The record of `token`, if the store still has it (expired tokens are kept at least
    /// `TOKEN_RETENTION_SECS`). A store may look for it under [`QueueToken::concert`] only.
    fn token(&self, token: &QueueToken) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send;

    /// The newest token of `user` for `concert`, in whatever state.
    fn token_of_user(
        &self,
        concert: ConcertId,
        user: &UserId,
    ) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send;

    /// Puts a new token at the back of its concert's line, assigning the next sequence number of
    /// that line, and returns the stored record (version 1, WAITING).
    ///
    /// A user has at most one token per concert: when `replacing` is `None` the user must have
    /// none, and when it is `Some` the user's token must be that record at that version (it is
    /// removed). Otherwise [`StoreError::Conflict`] and nothing is written. The new token is
    /// one of its concert (`new.token.concert() == new.concert_id`, as
    /// [`QueueToken::generate`] makes it).
    fn insert_token(
        &self,
        new: NewToken,
        replacing: Option<&TokenRecord>,
    ) -> impl Future<Output = StoreResult<TokenRecord>> + Send;

    /// Replaces the record of `updated.token` if its stored version is `expected_version`,
    /// keeping the line and the active set in step with the new state. Otherwise
    /// [`StoreError::Conflict`] (or [`StoreError::Missing`] if the token is gone).
    fn update_token(
        &self,
        expected_version: u64,
        updated: &TokenRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// One poll of `token` at `now`: the stored record, refreshed by [`queue::refresh_to`] to the
    /// idle deadline `deadline` when it is waiting at `now`, and, while it waits, its position
    /// and its concert's admission snapshot. `None` when the store has no such token.
    ///
    /// The poll is the most frequent request of a sale, so a backend should answer it in one
    /// round trip and one atomic step (the memory and Redis backends do). This default composes
    /// the other methods, each atomic: a read, the refresh as a compare-and-set (a concurrent
    /// poll that already refreshed the token is as good), the position and the snapshot. It is
    /// what the SQL backends use; it costs them four round trips.
    fn poll(
        &self,
        token: &QueueToken,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Option<Polled>>> + Send {
        async move {
            for _ in 0..crate::limits::CAS_RETRIES {
                let Some(read) = self.token(token).await? else { return Ok(None) };
                let record = match queue::refresh_to(&read, deadline, now) {
                    None => read,
                    Some(updated) => match self.update_token(read.version, &updated).await {
                        Ok(()) => updated,
                        Err(StoreError::Conflict(_)) => match self.token(token).await? {
                            Some(current) if queue::refreshed_concurrently(&read, &current, now) => current,
                            _ => continue,
                        },
                        Err(StoreError::Missing(_)) => return Ok(None),
                        Err(error) => return Err(error),
                    },
                };
                return match place(self, record, now).await {
                    Err(StoreError::Missing(_)) => Ok(None), // Forgotten between the reads.
                    other => other.map(Some),
                };
            }
            Err(StoreError::Conflict("queue token"))
        }
    }

    /// A user asks for a token (`new` names the user, the concert, a fresh token and the idle
    /// deadline a waiting token gets): [`queue::join_decision`] applied to the user's current
    /// token of the concert at `now`, in one step: a waiting token is refreshed, an active one
    /// returned as it is, and otherwise `new` goes to the back of the line (replacing an expired
    /// token). Answers as [`QueueStore::poll`] does, and whether `new` was put in line.
    ///
    /// As for `poll`, the memory and Redis backends answer in one atomic step; this default
    /// composes the other methods (what the SQL backends use).
    fn join(&self, new: NewToken, now: DateTime<Utc>) -> impl Future<Output = StoreResult<Joined>> + Send {
        async move {
            for _ in 0..crate::limits::CAS_RETRIES {
                let existing = self.token_of_user(new.concert_id, &new.user_id).await?;
                let (record, created) = match queue::join_decision(existing, new.clone(), now) {
                    IssueDecision::Keep(record) => (record, false),
                    IssueDecision::Refresh { previous, updated } => {
                        match self.update_token(previous.version, &updated).await {
                            Ok(()) => (updated, false),
                            Err(StoreError::Conflict(_)) => match self.token(&previous.token).await? {
                                Some(current) if queue::refreshed_concurrently(&previous, &current, now) => {
                                    (current, false)
                                }
                                _ => continue,
                            },
                            Err(StoreError::Missing(_)) => continue,
                            Err(error) => return Err(error),
                        }
                    }
                    IssueDecision::Issue { new, replacing } => {
                        match self.insert_token(new, replacing.as_ref()).await {
                            Ok(record) => (record, true),
                            Err(StoreError::Conflict(_) | StoreError::Missing(_)) => continue,
                            Err(error) => return Err(error),
                        }
                    }
                };
                return Ok(Joined { polled: place(self, record, now).await?, created });
            }
            Err(StoreError::Conflict("queue token of user"))
        }
    }

    /// The 1-based place of a waiting token among its concert's waiting tokens, by sequence
    /// number. Tokens that went idle count until swept, so this may overstate the place by what
    /// one sweep interval lets go idle; it never understates it. Must not scan the line.
    ///
    /// 0 when the token is no longer in line: `record` was read before a tick admitted it or a
    /// sweep took it out (callers read the token again).
    fn position(&self, record: &TokenRecord) -> impl Future<Output = StoreResult<u64>> + Send;

    /// The concert's admission state at `now`: active tokens not yet expired at `now`, waiting
    /// tokens, the admission window and the measured rate.
    ///
    /// Called on every poll (for the ETA), so it should not write; a backend that tidies here
    /// must do it inside the same atomic step.
    ///
    /// The version must be read no later than the counts (or all of it atomically): a tick
    /// that plans from counts missing another tick's admissions must carry the version from
    /// before that tick, so that its compare-and-set in [`QueueStore::admit`] fails.
    fn admission_snapshot(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<AdmissionSnapshot>> + Send;

    /// Runs one admission tick, if the concert's admission version is still
    /// `plan.expected_version` (otherwise [`StoreError::Conflict`], nothing written): takes up
    /// to `plan.quota` tokens from the head of the line in order, skipping (and expiring as
    /// IDLE) those whose idle deadline is at or before `plan.now`, makes them ACTIVE until
    /// `plan.active_expires_at`, and stores the new window (`admitted_before` plus the number
    /// admitted), the rate, and version + 1.
    /// Returns the admitted records. Cost: proportional to the tokens taken, never to the line.
    fn admit(&self, plan: &AdmissionPlan) -> impl Future<Output = StoreResult<Vec<TokenRecord>>> + Send;

    /// The tokens waiting in `concert`'s line, head first, at most `limit`, with their places:
    /// the pre-queue its sale's opening draws ([`queue::draw_pre_queue`]). Read once per
    /// opening, never on a buyer's request.
    fn waiting_line(
        &self,
        concert: ConcertId,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<(u64, QueueToken)>>> + Send;

    /// Opens `opening.concert_id`'s line in one atomic step, unless it is open already (then
    /// nothing is written): moves each token of `opening.moves` that still waits at its `from`
    /// place to its `to` place (its version + 1; a token that left the line meanwhile is not
    /// moved), marks the line open ([`AdmissionSnapshot::opened`]), and raises the admission
    /// version, so that a tick planned before the opening fails its compare-and-set. Answers
    /// whether this call opened the line. Cost: proportional to the moves, once per opening.
    fn open_line(&self, opening: &LineOpening) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Tidies up to `limit` records: takes waiting tokens whose idle deadline is at or before
    /// `now` out of the line (EXPIRED, IDLE), drops active tokens expired at `now` from the
    /// active set (EXPIRED, TIMED_OUT), and forgets expired tokens older than `forget_before`.
    /// Returns how many records it touched. Correctness never depends on it running.
    fn sweep_queue(
        &self,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<usize>> + Send;

    /// Whether the backend answers.
    fn ping_queue(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// Puts back tokens this store lost (its data was deleted, or it failed over to an empty
    /// replica), each in one atomic step with the line it joins, and answers for each in order:
    ///
    /// - [`Restored::Present`] when the store has the token (nothing written);
    /// - [`Restored::NotLost`] when nothing says the store lost it: the token's `line_seq` is
    ///   not older than the line's current generation, so it was issued since the line last
    ///   began and is gone because it was forgotten (nothing written);
    /// - [`Restored::Superseded`] when its user holds another token of the concert, valid at
    ///   `now`, that the restored one would not better (nothing written): a restored token
    ///   replaces only a waiting one placed after it (or, restored active, any waiting one);
    /// - [`Restored::Restored`] otherwise: the record is written as given (a waiting token back
    ///   in line at its `seq`), replacing the user's other token, with the version `version`.
    ///
    /// A line's generation begins when its sequence counter is created, and the counter starts
    /// from the time it is created (`now` in microseconds), so every place given in a later
    /// generation comes after every place of an earlier one, and a lost token is one whose
    /// place is older than the generation. A store whose line is never lost apart from the rest
    /// of its data (memory, SQL) keeps this default: `Present` or `NotLost`, never a write.
    fn restore(
        &self,
        lost: &[Lost],
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<Restored>>> + Send {
        let _ = now;
        async move {
            let mut answers = Vec::with_capacity(lost.len());
            for one in lost {
                answers.push(match self.token(&one.record.token).await? {
                    Some(record) => Restored::Present(record),
                    None => Restored::NotLost,
                });
            }
            Ok(answers)
        }
    }
}

/// A token to put back in a queue store that lost it ([`QueueStore::restore`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Lost {
    /// The record to write (its `version` is written as given).
    pub record: TokenRecord,
    /// The token's place in line when it was issued (0: unknown, older than any line), which
    /// says whether the store lost it: see [`QueueStore::restore`]. For a waiting record its
    /// `seq` is its place, and this is not read.
    pub line_seq: u64,
}

/// What [`QueueStore::restore`] did with one [`Lost`] token.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    /// The store has the token: its record as stored.
    Present(TokenRecord),
    /// The token was put back: its record as written.
    Restored(TokenRecord),
    /// Nothing says the store lost the token.
    NotLost,
    /// Its user holds another valid token of the concert that this one would not better.
    Superseded,
}

/// Where `record` stands at `now`, for the default [`QueueStore::poll`] and
/// [`QueueStore::join`]: its position and the admission snapshot while it waits; read again when
/// it left the line between the reads (a tick admitted it, or a sweep took it out).
async fn place<Q: QueueStore + ?Sized>(
    store: &Q,
    mut record: TokenRecord,
    now: DateTime<Utc>,
) -> StoreResult<Polled> {
    for _ in 0..crate::limits::CAS_RETRIES {
        if record.status_at(now) != queue::TokenStatus::Waiting {
            return Ok(Polled { record, line: None });
        }
        let position = store.position(&record).await?;
        if position > 0 {
            let snapshot = store.admission_snapshot(record.concert_id, now).await?;
            return Ok(Polled { record, line: Some(InLine { position, snapshot }) });
        }
        record = store.token(&record.token).await?.ok_or(StoreError::Missing("queue token"))?;
    }
    Err(StoreError::Conflict("queue token"))
}

/// Concerts, schedules and seats.
pub trait CatalogStore: Send + Sync + 'static {
    /// Writes a concert with its schedules and all its seats (AVAILABLE, fence 0) at once.
    /// [`StoreError::Conflict`] if the concert id exists.
    fn create_concert(&self, plan: &ConcertPlan) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every concert, in creation order.
    fn concerts(&self) -> impl Future<Output = StoreResult<Vec<Concert>>> + Send;

    /// One concert.
    fn concert(&self, id: ConcertId) -> impl Future<Output = StoreResult<Option<Concert>>> + Send;

    /// An operator's change of a concert's sale, in one step: the concert's sale settings become
    /// `action.after` (queue settings, paused, version) if its stored version is still
    /// `action.before.version`, and `action` is appended to the concert's audit trail. Otherwise
    /// nothing is written and [`StoreError::Conflict`] (also when the concert does not exist).
    /// A concert's id and title never change.
    fn change_sale(&self, action: &SaleAction) -> impl Future<Output = StoreResult<()>> + Send;

    /// A concert's audit trail: every [`SaleAction`], oldest first.
    fn sale_actions(&self, concert: ConcertId) -> impl Future<Output = StoreResult<Vec<SaleAction>>> + Send;

    /// One schedule.
    fn schedule(&self, id: ScheduleId) -> impl Future<Output = StoreResult<Option<Schedule>>> + Send;

    /// What `concert`'s seats add up to at `now` (a hold that lapsed at or before `now` is not
    /// counted as held), in one read. A concert without seats (or unknown) adds up to zero.
    fn seat_tally(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<SeatTally>> + Send;

    /// A concert's schedules by start time, each with its seats available at `now` (a seat whose
    /// hold lapsed at or before `now` counts as available). No shared counter row is kept for
    /// this: it is counted from the seats.
    fn schedules(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<ScheduleAvailability>>> + Send;

    /// A schedule's seats by number, as stored now (no cache).
    fn seats(&self, schedule: ScheduleId) -> impl Future<Output = StoreResult<Vec<SeatRecord>>> + Send;

    /// One seat as stored now.
    fn seat(&self, id: SeatId) -> impl Future<Output = StoreResult<Option<SeatRecord>>> + Send;

    /// The seats of `schedule` that are not AVAILABLE as stored now, in any order: what a seat
    /// list reads on every request (the seats themselves never change once created, so the
    /// service keeps them). The default reads [`CatalogStore::seats`]; a backend should read
    /// only the occupied seats' numbers and deadlines.
    fn occupied_seats(
        &self,
        schedule: ScheduleId,
    ) -> impl Future<Output = StoreResult<Vec<OccupiedSeat>>> + Send {
        async move {
            let seats = self.seats(schedule).await?;
            Ok(seats.iter().filter_map(OccupiedSeat::of).collect())
        }
    }

    /// The seats of `concert` whose stored state may have changed since `since` (a horizon an
    /// earlier call returned; `None`: every seat of the concert), each as stored now, and the
    /// horizon to ask from next ([`SeatChanges`]). What the service merges into the states it
    /// keeps per concert ([`crate::catalog::SeatStates`]) so that a seat list or a schedule's
    /// availability reads only what changed, yet misses nothing committed before it was asked.
    ///
    /// A backend that keeps no such horizon answers `None` (the default): the service then
    /// reads [`CatalogStore::occupied_seats`] and [`CatalogStore::schedules`] on every request.
    /// A backend that answers must return every seat whose latest committed change could be
    /// missing from the reads that returned horizons up to `since`.
    fn seat_changes(
        &self,
        concert: ConcertId,
        since: Option<u64>,
    ) -> impl Future<Output = StoreResult<Option<SeatChanges>>> + Send {
        let _ = (concert, since);
        async { Ok(None) }
    }

    /// Whether the backend answers.
    fn ping_catalog(&self) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Balances, the ledger and idempotency keys.
pub trait WalletStore: Send + Sync + 'static {
    /// A user's wallet ([`Wallet::empty`] if never written).
    fn wallet(&self, user: &UserId) -> impl Future<Output = StoreResult<Wallet>> + Send;

    /// Charges, if the wallet version is still `plan.expected_version` (otherwise
    /// [`StoreError::Conflict`]): the wallet takes `plan.wallet`, the entry is inserted, and
    /// `idempotency` is stored as in [`BookingStore::claim_seat`].
    fn apply_charge(
        &self,
        plan: &ChargePlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// A user's ledger, oldest first.
    fn ledger(&self, user: &UserId) -> impl Future<Output = StoreResult<Vec<LedgerEntry>>> + Send;

    /// The stored outcome for a user's key, if any (possibly past its lifetime).
    fn idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> impl Future<Output = StoreResult<Option<IdempotencyRecord>>> + Send;

    /// Stores the outcome of a request that was refused (and so wrote nothing else). A live
    /// record for the same user and key is a [`StoreError::Conflict`]; one past its lifetime is
    /// replaced.
    fn save_outcome(&self, record: &IdempotencyRecord) -> impl Future<Output = StoreResult<()>> + Send;

    /// What a charge of `user` is decided from: the wallet and, when the request has a key, what
    /// is stored for it. The default reads them one after the other; a backend may read them in
    /// one round trip.
    fn charge_inputs(
        &self,
        user: &UserId,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<ChargeInputs>> + Send {
        async move {
            let wallet = self.wallet(user).await?;
            let key = match key {
                Some(key) => self.idempotency(user, key).await?,
                None => None,
            };
            Ok(ChargeInputs { wallet, key })
        }
    }

    /// One charge as one store call: reads [`WalletStore::charge_inputs`], lets `decide` (the
    /// caller's pure rules) plan it, and writes the plan with [`WalletStore::apply_charge`].
    /// Answers the written plan, or what `decide` stopped with (nothing written);
    /// [`StoreError::Conflict`] when the write's compare-and-set lost (the caller decides again).
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
        async move {
            let (plan, record) = match decide(self.charge_inputs(user, key).await?) {
                Ok(decided) => decided,
                Err(stop) => return Ok(Err(stop)),
            };
            self.apply_charge(&plan, record.as_ref()).await?;
            Ok(Ok(plan))
        }
    }
}

/// What a decision inside a store step returns: the plan to write with the outcome to store under
/// the request's key, or why nothing is written (`E`, the caller's own).
pub type Decided<P, E> = Result<(P, Option<IdempotencyRecord>), E>;

/// What a charge is decided from ([`WalletStore::charge_inputs`]).
#[derive(Debug, Clone)]
pub struct ChargeInputs {
    /// The user's wallet.
    pub wallet: Wallet,
    /// What is stored under the request's key (`None` without a key).
    pub key: Option<IdempotencyRecord>,
}

/// What a hold is decided from ([`BookingStore::hold_inputs`]).
#[derive(Debug, Clone)]
pub struct HoldInputs {
    /// The seat as stored, if it exists.
    pub seat: Option<SeatRecord>,
    /// What is stored under the request's key (`None` without a key).
    pub key: Option<IdempotencyRecord>,
    /// How many seats of the seat's concert the user has paid for (0 when the seat does not
    /// exist): a buyer at its concert's cap holds no more (the payment decides it for sure).
    pub bought: u32,
}

/// What a payment is decided from ([`BookingStore::payment_inputs`]).
#[derive(Debug, Clone)]
pub struct PaymentInputs {
    /// The paying user's wallet.
    pub wallet: Wallet,
    /// Each reservation named, in the order named.
    pub holds: Vec<HoldToPay>,
    /// What is stored under the request's key (`None` without a key).
    pub key: Option<IdempotencyRecord>,
    /// How many seats of the first found reservation's concert its user has paid for, the
    /// named reservations left out (0 when none exists), read no earlier than the wallet: the
    /// payment's write names the wallet's version, which every payment of the user changes.
    /// Left out by id, not by status: a named hold that a racing payment just confirmed is
    /// decided on its own state (already paid), never counted against the cap.
    pub bought: u32,
}

/// One reservation a payment names, as read for it ([`PaymentInputs::holds`]).
#[derive(Debug, Clone)]
pub struct HoldToPay {
    /// The reservation named.
    pub id: ReservationId,
    /// The reservation, if it exists.
    pub reservation: Option<Reservation>,
    /// The reservation's seat, when the reservation exists.
    pub seat: Option<SeatRecord>,
    /// Whether the token that made the reservation was revoked: its hold is paid by nobody (a
    /// hold written in the instant of its token's revocation, after the revocation listed the
    /// token's holds, lapses unpaid).
    pub hold_revoked: bool,
}

/// What a cancellation is decided from ([`BookingStore::refund_inputs`]).
#[derive(Debug, Clone)]
pub struct RefundInputs {
    /// The reservation, if it exists.
    pub reservation: Option<Reservation>,
    /// Its seat, when it exists.
    pub seat: Option<SeatRecord>,
    /// Its payment, if it was paid.
    pub payment: Option<Payment>,
    /// Its buyer's wallet, when it exists.
    pub wallet: Option<Wallet>,
    /// What is stored under the request's key for the reservation's buyer (`None` without a
    /// key or a reservation).
    pub key: Option<IdempotencyRecord>,
}

/// Holds and payments. Over the same backend as the wallet, because a payment debits the wallet
/// in the same atomic step.
pub trait BookingStore: CatalogStore + WalletStore + AdmissionLog {
    /// One reservation.
    fn reservation(&self, id: ReservationId)
    -> impl Future<Output = StoreResult<Option<Reservation>>> + Send;

    /// How many seats of `concert` `user` has paid for (its confirmed reservations), leaving out
    /// `except` (the reservations being paid: if a racing payment of one just committed, the
    /// payment's write then fails on the wallet's version and is decided again, as already paid).
    fn seats_bought(
        &self,
        user: &UserId,
        concert: ConcertId,
        except: &[ReservationId],
    ) -> impl Future<Output = StoreResult<u32>> + Send;

    /// Every reservation `token` (a token of `user`) made, in any status, in no particular
    /// order. Paying needs it when a token may hold several seats: the token expires only once
    /// nothing it holds is left to pay.
    fn reservations_of_token(
        &self,
        user: &UserId,
        token: &QueueToken,
    ) -> impl Future<Output = StoreResult<Vec<Reservation>>> + Send;

    /// Every reservation of `user`, of every concert and in any status, newest first, at most
    /// [`RESERVATIONS_PER_USER_READ`](crate::limits::RESERVATIONS_PER_USER_READ) of them.
    fn reservations_of_user(
        &self,
        user: &UserId,
    ) -> impl Future<Output = StoreResult<Vec<Reservation>>> + Send;

    /// Writes a hold, if the seat's fence is still `plan.expected_fence` (otherwise
    /// [`StoreError::Conflict`]) and the token has fewer than `plan.holds_per_token` open
    /// reservations at `plan.now` (held and unexpired, or confirmed; otherwise
    /// [`StoreError::HoldLimitReached`]): the seat takes `plan.seat_state` and fence
    /// `plan.reservation.fence`, the reservation is inserted, `plan.supersedes` (a lapsed hold)
    /// becomes EXPIRED (or is left for [`BookingStore::sweep_holds`]: its `status_at` already
    /// reads EXPIRED), and `idempotency`, if given, is stored (a live record for the same user
    /// and key is a [`StoreError::Conflict`]). All or nothing.
    fn claim_seat(
        &self,
        plan: &HoldPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Frees a held seat, if the seat's fence is still `plan.expected_fence` and the
    /// reservation is still HELD (otherwise [`StoreError::Conflict`]): the seat becomes
    /// AVAILABLE with the next fence, the reservation RELEASED.
    fn release_seat(&self, plan: &ReleasePlan) -> impl Future<Output = StoreResult<()>> + Send;

    /// Pays, if every seat of the plan still has its `expected_fence`, every reservation is still
    /// HELD and the wallet version is still `plan.expected_wallet_version` (otherwise
    /// [`StoreError::Conflict`], and nothing is written): the wallet takes `plan.wallet`; for
    /// each seat its ledger entry and payment are inserted, its reservation becomes CONFIRMED
    /// and the seat takes its `seat_state` and `new_fence`; and `idempotency` is stored as in
    /// [`BookingStore::claim_seat`]. Seats are locked in the plan's order (by seat id).
    fn commit_payment(
        &self,
        plan: &PaymentPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Cancels a booking, if the seat still has `plan.expected_fence` and is booked by the
    /// reservation, the reservation is still CONFIRMED, its payment not refunded yet, and the
    /// buyer's wallet version is still `plan.expected_wallet_version` (otherwise
    /// [`StoreError::Conflict`], and nothing is written): the seat becomes AVAILABLE with
    /// `plan.new_fence`, the reservation CANCELLED, the payment takes `refunded_at`, the wallet
    /// takes `plan.wallet` with the REFUND entry, and `idempotency` is stored as in
    /// [`BookingStore::claim_seat`]. A seat may then be sold again; it is never paid by two live
    /// payments at once.
    fn cancel_booking(
        &self,
        plan: &RefundPlan,
        idempotency: Option<&IdempotencyRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// What a cancellation of `reservation` is decided from: the reservation, its seat, its
    /// payment, its buyer's wallet and what is stored under `key` for that buyer. The default
    /// reads them one after the other; a backend may read them in one round trip.
    fn refund_inputs(
        &self,
        reservation: ReservationId,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<RefundInputs>> + Send {
        async move {
            let Some(found) = self.reservation(reservation).await? else {
                return Ok(RefundInputs {
                    reservation: None,
                    seat: None,
                    payment: None,
                    wallet: None,
                    key: None,
                });
            };
            // Whatever moves between these reads, the write names what it was decided from.
            let wallet = self.wallet(&found.user_id).await?;
            let seat = self.seat(found.seat_id).await?;
            let payment = self.payment_of(reservation).await?;
            let key = match key {
                Some(key) => self.idempotency(&found.user_id, key).await?,
                None => None,
            };
            Ok(RefundInputs { reservation: Some(found), seat, payment, wallet: Some(wallet), key })
        }
    }

    /// One cancellation as one store call: reads [`BookingStore::refund_inputs`], lets `decide`
    /// plan it, and writes the plan with [`BookingStore::cancel_booking`]; as
    /// [`BookingStore::pay`].
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
        async move {
            let (plan, record) = match decide(self.refund_inputs(reservation, key).await?) {
                Ok(decided) => decided,
                Err(stop) => return Ok(Err(stop)),
            };
            self.cancel_booking(&plan, record.as_ref()).await?;
            Ok(Ok(plan))
        }
    }

    /// The payment of a reservation, if it was paid.
    fn payment_of(
        &self,
        reservation: ReservationId,
    ) -> impl Future<Output = StoreResult<Option<Payment>>> + Send;

    /// What a hold of `seat` by `user` is decided from: the seat and, when the request has a key,
    /// what is stored for it. The default reads them one after the other; a backend may read
    /// them in one round trip.
    fn hold_inputs(
        &self,
        seat: SeatId,
        user: &UserId,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<HoldInputs>> + Send {
        async move {
            let seat = self.seat(seat).await?;
            let bought = match &seat {
                Some(seat) => self.seats_bought(user, seat.seat.concert_id, &[]).await?,
                None => 0,
            };
            let key = match key {
                Some(key) => self.idempotency(user, key).await?,
                None => None,
            };
            Ok(HoldInputs { seat, key, bought })
        }
    }

    /// One hold as one store call: reads [`BookingStore::hold_inputs`], lets `decide` (the
    /// caller's pure rules) plan it, and writes the plan with [`BookingStore::claim_seat`].
    /// Answers the written plan, or what `decide` stopped with (nothing written); the errors of
    /// `claim_seat` otherwise ([`StoreError::Conflict`]: decide again).
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
        async move {
            let (plan, record) = match decide(self.hold_inputs(seat, user, key).await?) {
                Ok(decided) => decided,
                Err(stop) => return Ok(Err(stop)),
            };
            self.claim_seat(&plan, record.as_ref()).await?;
            Ok(Ok(plan))
        }
    }

    /// What a payment of `reservations` by `user` is decided from, as one consistent view: the
    /// wallet, each reservation and its seat and, when the request has a key, what is stored
    /// for it. The default reads the wallet first, then the reservations and their seats: a
    /// payment writes all of them at once, so a wallet that already shows a racing payment of
    /// these holds is followed by reads that show them paid; the count of seats the user bought
    /// comes after the wallet too, so a payment it misses has changed the wallet's version and
    /// the write fails. A backend may read them in one round trip (one statement sees one
    /// snapshot).
    fn payment_inputs(
        &self,
        user: &UserId,
        reservations: &[ReservationId],
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = StoreResult<PaymentInputs>> + Send {
        async move {
            let wallet = self.wallet(user).await?;
            let mut holds = Vec::with_capacity(reservations.len());
            for &id in reservations {
                let reservation = self.reservation(id).await?;
                let (seat, hold_revoked) = match &reservation {
                    Some(r) => (
                        self.seat(r.seat_id).await?,
                        self.history(&r.user_id, &r.token).await?.revoked_at.is_some(),
                    ),
                    None => (None, false),
                };
                holds.push(HoldToPay { id, reservation, seat, hold_revoked });
            }
            let bought = match holds.iter().find_map(|h| h.reservation.as_ref()) {
                Some(r) => self.seats_bought(&r.user_id, r.concert_id, reservations).await?,
                None => 0,
            };
            let key = match key {
                Some(key) => self.idempotency(user, key).await?,
                None => None,
            };
            Ok(PaymentInputs { wallet, holds, key, bought })
        }
    }

    /// One payment as one store call: reads [`BookingStore::payment_inputs`], lets `decide` (the
    /// caller's pure rules) plan it, and writes the plan with [`BookingStore::commit_payment`].
    /// Answers the written plan, or what `decide` stopped with (nothing written);
    /// [`StoreError::Conflict`] when the write's compare-and-set lost (decide again).
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
        async move {
            let (plan, record) = match decide(self.payment_inputs(user, reservations, key).await?) {
                Ok(decided) => decided,
                Err(stop) => return Ok(Err(stop)),
            };
            self.commit_payment(&plan, record.as_ref()).await?;
            Ok(Ok(plan))
        }
    }

    /// Tidies up to `limit` holds that lapsed at or before `now`: each seat becomes AVAILABLE
    /// with the next fence (only if it still has the hold's fence) and its reservation EXPIRED;
    /// and forgets idempotency records that expired before `now`. Returns how many holds it
    /// freed. Correctness never depends on it running.
    fn sweep_holds(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<usize>> + Send;
}

/// The durable record of admissions, kept with the booking data: what lets a queue store that
/// lost its data be given back its admitted tokens. [`crate::Ticketing`] writes it after every
/// admission tick that admitted someone on a line its store may lose, and reads it only when a
/// token is missing from the queue store, or once per line generation
/// ([`AdmissionSnapshot::generation`]) to rebuild the set of active tokens. No request of a
/// sale that loses nothing reads it.
pub trait AdmissionLog: Send + Sync + 'static {
    /// Records tokens admitted in the line's generation `generation` (ACTIVE records, as the
    /// admission tick answered them). A token recorded before keeps its first record.
    fn log_admissions(
        &self,
        generation: u64,
        admitted: &[TokenRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// What the booking data says of `token` (a token of `user`), in one read: its recorded
    /// admission, if any, and when a payment was made with it (a confirmed reservation it
    /// made), logged or not.
    fn history(
        &self,
        user: &UserId,
        token: &QueueToken,
    ) -> impl Future<Output = StoreResult<TokenHistory>> + Send;

    /// Records that the holder of waiting `token` (of `user`) left the line at `at`, so that a
    /// queue store that loses the token gives it back expired (LEFT), never waiting
    /// ([`AdmissionLog::history`]); an admission logged for the token (a leave that lost its race
    /// to a tick) wins over it. Recording it again changes nothing.
    fn record_leave(
        &self,
        token: &QueueToken,
        user: &UserId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Records that an operator revoked a token, with its entry in the concert's audit trail, in
    /// one step: a queue store that loses the token gives it back revoked ([`AdmissionLog::history`]),
    /// and a lost line's open admissions leave it out ([`AdmissionLog::admissions`]). Revoking a
    /// token again writes nothing.
    fn revoke_token(&self, revocation: &Revocation) -> impl Future<Output = StoreResult<()>> + Send;

    /// The admissions of `concert` whose active time has not ended at `now` and that were not
    /// paid with nor revoked, and the oldest and newest line generations its admissions were
    /// recorded in.
    fn admissions(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Admissions>> + Send;
}

/// What the booking data says of one token ([`AdmissionLog::history`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenHistory {
    /// The token as admitted (ACTIVE, with its admission time and deadline), if it was logged.
    pub admitted: Option<TokenRecord>,
    /// When a payment was made with the token (which ends its active time), if one was.
    pub paid_at: Option<DateTime<Utc>>,
    /// When an operator revoked the token, if one did ([`AdmissionLog::revoke_token`]).
    pub revoked_at: Option<DateTime<Utc>>,
    /// When its holder left the line with it, if they did ([`AdmissionLog::record_leave`]).
    pub left_at: Option<DateTime<Utc>>,
}

/// An operator's revocation of a token ([`AdmissionLog::revoke_token`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Revocation {
    /// The token (its identity).
    pub token: QueueToken,
    /// Its user.
    pub user_id: UserId,
    /// The audit entry: the concert's sale as it stands (before and after are the same), who
    /// revoked, when, and whose token (`subject`).
    pub action: SaleAction,
}

/// A concert's open admissions ([`AdmissionLog::admissions`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Admissions {
    /// Admissions still active at the time asked, not paid with.
    pub open: Vec<TokenRecord>,
    /// The oldest line generation an admission of the concert was recorded in (`None`: nobody
    /// was ever recorded as admitted).
    pub first_generation: Option<u64>,
    /// The newest one.
    pub last_generation: Option<u64>,
}

/// Every storage concern in one backend: what the memory, PostgreSQL and MySQL backends are.
pub trait Store: QueueStore + BookingStore {}

impl<T: QueueStore + BookingStore> Store for T {}
