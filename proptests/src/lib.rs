//! Property tests of `ticketing-core` on every backend.
//!
//! - [`model`]: an independent reference model of the sale.
//! - [`run`]: executes generated [`Cmd`]s against the real service and the model, compares every
//!   outcome, and after every step checks the invariants on what the stores hold
//!   ([`check_invariants`]).
//! - [`faults`]: a store decorator that fails chosen calls before or after their effect.
//!
//! The tests live in `tests/`; failing seeds are kept in `proptest-regressions/`.

pub mod faults;
pub mod model;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings, SaleChange, SeatState, SeatStatus};
use ticketing_core::hold::ReservationStatus;
use ticketing_core::ids::{
    ConcertId, IdempotencyKey, Points, QueueToken, ReservationId, ScheduleId, SeatId, UserId,
};
use ticketing_core::payment::LedgerKind;
use ticketing_core::queue::TokenStatus;
use ticketing_core::store::{BookingStore, QueueStore};
use ticketing_core::{Clock, Config, DomainError, Error, ManualClock, Ticketing};

use crate::model::{Expect, Model};

/// Users per case.
pub const USERS: usize = 3;
/// Seats as (concert, price): concert 0 has three at 100, concert 1 two at 150, concert 2 two
/// at 120 (a schedule has one price).
pub const SEATS: [(usize, i64); 7] = [(0, 100), (0, 100), (0, 100), (1, 150), (1, 150), (2, 120), (2, 120)];
/// Concerts per case.
pub const CONCERTS: usize = 3;
/// Each concert's seats per buyer: concert 0 lets a user buy one of its three seats.
pub const CAPS: [Option<u32>; CONCERTS] = [Some(1), None, None];
/// Each concert's holds per token: concert 1's buyers may hold both its seats and pay them in one
/// payment.
pub const HOLDS: [u32; CONCERTS] = [1, 2, 1];
/// Each concert's cancellation window (until how long before the performance its buyers may
/// cancel): concert 1's buyers may, for the whole case (its performance is 30 days on); the
/// others' may not.
pub const CANCEL_WINDOWS: [Option<u64>; CONCERTS] = [None, Some(86_400), None];
/// Concerts whose sale has a scheduled opening with a pre-queue drawn at random: concert 2's
/// opened a second before the case began by the wall clock (a SQL store's, which decides it; the
/// service's clock, which the memory store decides by, is years on), so its first tick opens it.
pub const SCHEDULED: [bool; CONCERTS] = [false, false, true];

/// One generated command. Fields are indexes into the case's users, concerts, seats and
/// reservations (reservation indexes are reduced modulo what exists), an idempotency key number,
/// an amount of points or a number of milliseconds.
#[allow(missing_docs)] // The fields are described above, uniformly.
#[derive(Debug, Clone)]
pub enum Cmd {
    /// Ask for a token.
    Issue { user: usize, concert: usize },
    /// Poll the user's token for the concert.
    Poll { user: usize, concert: usize },
    /// Run an admission tick.
    Tick { concert: usize },
    /// An operator pauses (`paused`) or resumes the concert's sale.
    Pause { concert: usize, paused: bool },
    /// List concert `of`'s seats with the token for `concert` (another concert must be refused).
    Seats { user: usize, concert: usize, of: usize },
    /// Hold a seat (any concert's: a wrong one must be refused).
    Hold { user: usize, concert: usize, seat: usize, key: Option<u8> },
    /// Release a reservation (anyone's: a stranger's must be refused).
    Release { user: usize, concert: usize, reservation: usize },
    /// Charge points.
    Charge { user: usize, concert: usize, amount: i64, key: Option<u8> },
    /// Pay a reservation.
    Pay { user: usize, concert: usize, reservation: usize, key: Option<u8> },
    /// Pay several reservations in one payment (the same one twice must be refused).
    PayOrder { user: usize, concert: usize, reservations: Vec<usize>, key: Option<u8> },
    /// Cancel a booking (anyone's: a stranger's must be refused) and get its points back.
    Cancel { user: usize, concert: usize, reservation: usize, key: Option<u8> },
    /// An operator revokes the user's token for the concert.
    Revoke { user: usize, concert: usize },
    /// Move the clock.
    Advance { ms: i64 },
    /// Run the sweeper.
    Sweep,
}

/// Commands from several users over a few concerts and seats.
pub fn commands(max_len: usize) -> impl Strategy<Value = Vec<Cmd>> {
    let user = 0..USERS;
    // The scheduled concert less often: sequences long enough to pay need one concert mostly.
    let concert = prop_oneof![8 => Just(0_usize), 8 => Just(1), 1 => Just(2)];
    let key = prop_oneof![3 => Just(None), 2 => (0_u8..3).prop_map(Some)];
    let amount = prop_oneof![
        Just(-5_i64),
        Just(0),
        Just(100),
        Just(150),
        Just(300),
        Just(1_000),
        Just(model::CHARGE_MAX),
        Just(model::CHARGE_MAX + 1)
    ];
    let ms = prop_oneof![Just(100_i64), Just(1_000), Just(15_000), Just(31_000), Just(61_000), Just(91_000)];
    let cmd = prop_oneof![
        4 => (user.clone(), concert.clone()).prop_map(|(user, concert)| Cmd::Issue { user, concert }),
        2 => (user.clone(), concert.clone()).prop_map(|(user, concert)| Cmd::Poll { user, concert }),
        3 => concert.clone().prop_map(|concert| Cmd::Tick { concert }),
        1 => (concert.clone(), prop_oneof![1 => Just(true), 2 => Just(false)])
            .prop_map(|(concert, paused)| Cmd::Pause { concert, paused }),
        1 => (user.clone(), concert.clone(), concert.clone()).prop_map(|(user, concert, of)| Cmd::Seats { user, concert, of }),
        4 => (user.clone(), concert.clone(), prop_oneof![6 => 0..5_usize, 1 => 5..SEATS.len()], key.clone())
            .prop_map(|(user, concert, seat, key)| Cmd::Hold { user, concert, seat, key }),
        1 => (user.clone(), concert.clone(), 0_usize..8)
            .prop_map(|(user, concert, reservation)| Cmd::Release { user, concert, reservation }),
        3 => (user.clone(), concert.clone(), amount, key.clone())
            .prop_map(|(user, concert, amount, key)| Cmd::Charge { user, concert, amount, key }),
        1 => (user.clone(), concert.clone()).prop_map(|(user, concert)| Cmd::Revoke { user, concert }),
        2 => (user.clone(), concert.clone(), 0_usize..8, key.clone())
            .prop_map(|(user, concert, reservation, key)| Cmd::Cancel { user, concert, reservation, key }),
        1 => (user.clone(), concert.clone(), proptest::collection::vec(0_usize..8, 2..=3), key.clone())
            .prop_map(|(user, concert, reservations, key)| Cmd::PayOrder { user, concert, reservations, key }),
        3 => (user, concert, 0_usize..8, key).prop_map(|(user, concert, reservation, key)| Cmd::Pay {
            user,
            concert,
            reservation,
            key
        }),
        2 => ms.prop_map(|ms| Cmd::Advance { ms }),
        1 => Just(Cmd::Sweep),
    ];
    proptest::collection::vec(cmd, 1..max_len)
}

/// The queue settings of every case's concerts.
#[must_use]
pub fn queue_settings() -> QueueSettings {
    QueueSettings {
        max_active: u32::try_from(model::MAX_ACTIVE).unwrap_or(u32::MAX),
        admit_batch: u32::try_from(model::ADMIT_BATCH).unwrap_or(u32::MAX),
        admit_interval_ms: u64::try_from(model::ADMIT_INTERVAL_MS).unwrap_or(u64::MAX),
        waiting_idle_secs: u64::try_from(model::WAITING_IDLE_MS / 1_000).unwrap_or(u64::MAX),
        active_ttl_secs: u64::try_from(model::ACTIVE_TTL_MS / 1_000).unwrap_or(u64::MAX),
    }
}

/// The service configuration of every case.
#[must_use]
pub fn service_config() -> Config {
    Config {
        hold_ttl_secs: u64::try_from(model::HOLD_TTL_MS / 1_000).unwrap_or(u64::MAX),
        holds_per_token: 1,
    }
}

/// One case's world: the service, the model, and the ids the service chose for model handles.
pub struct World<Q, B> {
    /// The service under test.
    pub svc: Ticketing<Q, B, ManualClock>,
    /// Its clock.
    pub clock: ManualClock,
    /// The model.
    pub model: Model,
    /// Users' ids.
    pub users: Vec<UserId>,
    /// Concert ids and their one schedule each.
    pub concerts: Vec<(ConcertId, ScheduleId)>,
    /// Seat ids by seat handle.
    pub seats: Vec<SeatId>,
    /// Token strings by token handle.
    pub tokens: Vec<QueueToken>,
    /// Reservation ids by reservation handle.
    pub reservations: Vec<ReservationId>,
    admitted: HashSet<QueueToken>,
    /// Every kind of outcome the model predicted in this case (for coverage).
    pub seen: HashSet<String>,
}

/// The code of a domain error (its serde tag), as the model names refusals.
#[must_use]
pub fn code(error: &DomainError) -> String {
    serde_json::to_value(error).ok().and_then(|v| v["code"].as_str().map(str::to_owned)).unwrap_or_default()
}

/// A token's key in a pre-queue's draw, written out from its definition (SHA-256 of the seed,
/// 8 bytes big-endian, and the token's 72 characters): the model does not use the service's
/// draw.
fn draw_key(seed: u64, token: &QueueToken) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(seed.to_be_bytes());
    hash.update(token.as_str().as_bytes());
    hash.finalize().into()
}

fn ms_since_epoch(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

impl<Q: QueueStore, B: BookingStore> World<Q, B> {
    /// A new world over the stores: fresh concerts and users (unique ids, so many cases can
    /// share one database).
    ///
    /// # Errors
    /// When the concerts cannot be created.
    pub async fn new(queue: Q, booking: B) -> Result<Self, String> {
        let clock = ManualClock::at_epoch_secs(1_900_000_000);
        let svc = Ticketing::new(queue, booking, clock.clone(), service_config());
        let case = QueueToken::generate(ConcertId::random()).to_string();
        let users = (0..USERS)
            .map(|u| UserId::parse(&format!("u{u}-{}", &case[..12])))
            .collect::<Result<Vec<_>, _>>();
        let users = users.map_err(|e| e.to_string())?;
        let mut concerts = Vec::new();
        let mut seats = Vec::new();
        for (c, cap) in CAPS.into_iter().enumerate() {
            let mine: Vec<i64> =
                SEATS.iter().filter(|(concert, _)| *concert == c).map(|(_, price)| *price).collect();
            let plan = svc
                .create_concert(&NewConcert {
                    title: format!("case {c}"),
                    schedules: vec![NewSchedule {
                        starts_at: clock.now() + Duration::days(30),
                        seat_count: u32::try_from(mine.len()).unwrap_or(1),
                        price: Points::new(mine[0]).map_err(|e| e.to_string())?,
                    }],
                    queue: queue_settings(),
                    max_seats_per_buyer: cap,
                    holds_per_token: Some(HOLDS[c]),
                    cancel_until_secs_before_start: CANCEL_WINDOWS[c],
                    sales_open_at: SCHEDULED[c].then(|| chrono::Utc::now() - Duration::seconds(1)),
                    pre_queue: Default::default(),
                })
                .await
                .map_err(|e| e.to_string())?;
            concerts.push((plan.concert.id, plan.schedules[0].id));
            seats.extend(plan.seats.iter().map(|s| s.id));
        }
        let mut model = Model::new(ms_since_epoch(clock.now()), &SEATS);
        for (c, scheduled) in SCHEDULED.into_iter().enumerate() {
            if scheduled {
                model.schedule(c);
            }
        }
        Ok(Self {
            model,
            svc,
            clock,
            users,
            concerts,
            seats,
            tokens: Vec::new(),
            reservations: Vec::new(),
            admitted: HashSet::new(),
            seen: HashSet::new(),
        })
    }

    fn key(key: Option<u8>) -> Option<IdempotencyKey> {
        key.and_then(|k| IdempotencyKey::parse(&format!("key-{k}")).ok())
    }

    fn handle_of_token(&self, token: &QueueToken) -> Option<usize> {
        self.tokens.iter().position(|t| t == token)
    }

    /// Runs one command on both sides and compares.
    ///
    /// # Errors
    /// A description of the first disagreement.
    pub async fn step(&mut self, cmd: &Cmd) -> Result<(), String> {
        self.step_inner(cmd).await
    }

    /// Compares a payment's answer with the model's: the reservations paid (as first paid, for
    /// a replay; in any order) and the balance after, or the same refusal.
    fn paid(
        &self,
        expected: &Expect,
        actual: Result<ticketing_core::payment::PaymentReceipt, Error>,
        what: &str,
    ) -> Result<(), String> {
        match (expected, actual) {
            (Expect::Paid { reservations, balance }, Ok(receipt))
                if receipt.payments.len() == reservations.len()
                    && reservations.iter().all(|&r| {
                        receipt.payments.iter().any(|p| p.reservation_id == self.reservations[r])
                    })
                    && receipt.balance.get() == *balance =>
            {
                Ok(())
            }
            (expected, actual) => refusal(expected, &actual.map(|_| ()), what),
        }
    }

    /// Notes the kind of an outcome the model predicted.
    fn saw(&mut self, what: &str, expected: &Expect) {
        let kind = match expected {
            Expect::Refused(code) => format!("{what}:{code}"),
            Expect::Token { created, active } => format!("{what}:token(created={created},active={active})"),
            Expect::Admitted(handles) => format!("{what}:admitted({})", handles.len().min(2)),
            other => {
                format!("{what}:{}", format!("{other:?}").split(['(', ' ', '{']).next().unwrap_or_default())
            }
        };
        self.seen.insert(kind);
    }

    #[allow(clippy::too_many_lines)] // One arm per command reads best side by side.
    async fn step_inner(&mut self, cmd: &Cmd) -> Result<(), String> {
        let current = |w: &Self, user: usize, concert: usize| w.model.current.get(&(user, concert)).copied();
        match *cmd {
            Cmd::Issue { user, concert } => {
                let expected = self.model.issue(user, concert);
                self.saw("issue", &expected);
                let actual = self.svc.issue_token(&self.users[user], self.concerts[concert].0).await;
                let view = actual.map_err(|e| format!("issue: {e:?}, expected {expected:?}"))?;
                if view.created {
                    self.tokens.push(view.record.token.clone());
                }
                let Expect::Token { created, active } = expected else {
                    return Err(format!("model: {expected:?}"));
                };
                self.compare_token(&view, created, active, current(self, user, concert))?;
            }
            Cmd::Poll { user, concert } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                let expected = self.model.poll(t);
                self.saw("poll", &expected);
                let actual = self.svc.token_status(&self.tokens[t]).await;
                match (expected, actual) {
                    (Expect::Token { created, active }, Ok(view)) => {
                        self.compare_token(&view, created, active, Some(t))?
                    }
                    (expected, actual) => refusal(&expected, &actual.map(|_| ()), "poll")?,
                }
            }
            Cmd::Tick { concert } => {
                let expected = self.model.tick(concert);
                self.saw("tick", &expected);
                let admitted = self
                    .svc
                    .admission_tick(self.concerts[concert].0)
                    .await
                    .map_err(|e| format!("tick: {e:?}"))?;
                let mut handles = Vec::new();
                for record in admitted {
                    if !self.admitted.insert(record.token.clone()) {
                        return Err("a token was admitted twice".into());
                    }
                    handles.push(self.handle_of_token(&record.token).ok_or("admitted an unknown token")?);
                }
                if expected == Expect::Opened {
                    if !handles.is_empty() {
                        return Err(format!("the opening tick admitted {handles:?}"));
                    }
                    let id = self.concerts[concert].0;
                    let stored = self.svc.booking_store().concert(id).await.map_err(|e| format!("{e:?}"))?;
                    let seed = stored.and_then(|c| c.opened).ok_or("the opening was not recorded")?.seed;
                    let tokens = &self.tokens;
                    self.model.draw(concert, |t| draw_key(seed, &tokens[t]));
                } else if Expect::Admitted(handles.clone()) != expected {
                    return Err(format!("tick admitted {handles:?}, model {expected:?}"));
                }
            }
            Cmd::Seats { user, concert, of } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                let expected = self.model.seats_of(t, of);
                self.saw("seats", &expected);
                let actual = self.svc.seats(&self.tokens[t], self.concerts[of].1).await;
                match (&expected, actual) {
                    (Expect::Seats(statuses), Ok(views)) => {
                        for (s, status) in statuses {
                            let (_, seen) = views
                                .iter()
                                .find(|(seat, _)| seat.id == self.seats[*s])
                                .ok_or("seat missing")?;
                            let seen = serde_json::to_value(seen).map_err(|e| e.to_string())?;
                            if seen != *status {
                                return Err(format!("seat {s}: {seen} but model {status}"));
                            }
                        }
                    }
                    (expected, actual) => refusal(expected, &actual.map(|_| ()), "seats")?,
                }
            }
            Cmd::Hold { user, concert, seat, key } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                let expected = self.model.hold(t, seat, key);
                self.saw("hold", &expected);
                let actual = self.svc.hold(&self.tokens[t], self.seats[seat], Self::key(key)).await;
                match (&expected, actual) {
                    (Expect::Held(r), Ok(reservation)) => {
                        if *r == self.reservations.len() {
                            self.reservations.push(reservation.id);
                        }
                        if self.reservations[*r] != reservation.id {
                            return Err(format!("hold answered {:?}, model reservation {r}", reservation.id));
                        }
                        let until = self.model.reservations[*r].until;
                        if ms_since_epoch(reservation.expires_at) != until {
                            return Err(format!("hold until {}, model {until}", reservation.expires_at));
                        }
                    }
                    (expected, actual) => refusal(expected, &actual.map(|_| ()), "hold")?,
                }
            }
            Cmd::Release { user, concert, reservation } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                if self.reservations.is_empty() {
                    return Ok(());
                }
                let r = reservation % self.reservations.len();
                let expected = self.model.release(t, r);
                self.saw("release", &expected);
                let actual = self.svc.release(&self.tokens[t], self.reservations[r]).await;
                refusal(&expected, &actual, "release")?;
            }
            Cmd::Charge { user, concert, amount, key } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                let expected = self.model.charge(t, amount, key);
                self.saw("charge", &expected);
                let actual = self.svc.charge(&self.tokens[t], amount, Self::key(key)).await;
                match (&expected, actual) {
                    (Expect::Balance(balance), Ok(wallet)) if wallet.balance.get() == *balance => {}
                    (expected, actual) => refusal(expected, &actual.map(|_| ()), "charge")?,
                }
            }
            Cmd::Pay { user, concert, reservation, key } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                if self.reservations.is_empty() {
                    return Ok(());
                }
                let r = reservation % self.reservations.len();
                let expected = self.model.pay(t, r, key);
                self.saw("pay", &expected);
                let actual = self.svc.pay(&self.tokens[t], self.reservations[r], Self::key(key)).await;
                self.paid(&expected, actual, "pay")?;
            }
            Cmd::Cancel { user, concert, reservation, key } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                if self.reservations.is_empty() {
                    return Ok(());
                }
                let r = reservation % self.reservations.len();
                let expected = self.model.cancel(t, r, key);
                self.saw("cancel", &expected);
                let actual = self.svc.cancel(&self.tokens[t], self.reservations[r], Self::key(key)).await;
                match (&expected, actual) {
                    (Expect::Refunded(balance), Ok(refund))
                        if refund.balance.get() == *balance
                            && refund.reservation_id == self.reservations[r] => {}
                    (expected, actual) => refusal(expected, &actual.map(|_| ()), "cancel")?,
                }
            }
            Cmd::PayOrder { user, concert, ref reservations, key } => {
                let Some(t) = current(self, user, concert) else { return Ok(()) };
                if self.reservations.is_empty() {
                    return Ok(());
                }
                let rs: Vec<usize> = reservations.iter().map(|r| r % self.reservations.len()).collect();
                let expected = self.model.pay_order(t, &rs, key);
                self.saw("pay_order", &expected);
                let ids: Vec<ReservationId> = rs.iter().map(|&r| self.reservations[r]).collect();
                let actual = self.svc.pay_order(&self.tokens[t], &ids, Self::key(key)).await;
                self.paid(&expected, actual, "pay_order")?;
            }
            Cmd::Pause { concert, paused } => {
                let expected = self.model.pause(concert, paused);
                self.saw("pause", &expected);
                let change = if paused { SaleChange::Pause } else { SaleChange::Resume };
                let sale = self
                    .svc
                    .change_sale(self.concerts[concert].0, change, &self.users[0])
                    .await
                    .map_err(|e| format!("pause: {e:?}"))?;
                if sale.paused != paused {
                    return Err(format!("pause: asked for paused = {paused}, the sale says {}", sale.paused));
                }
            }
            Cmd::Revoke { user, concert } => {
                let expected = self.model.revoke(user, concert);
                self.saw("revoke", &expected);
                let ops = UserId::parse("ops").map_err(|e| e.to_string())?;
                let actual = self.svc.revoke(self.concerts[concert].0, &self.users[user], &ops).await;
                refusal(&expected, &actual.map(|_| ()), "revoke")?;
            }
            Cmd::Advance { ms } => {
                self.model.now += ms;
                self.clock.advance_millis(ms);
            }
            Cmd::Sweep => {
                self.svc.sweep().await.map_err(|e| format!("sweep: {e:?}"))?;
            }
        }
        Ok(())
    }

    fn compare_token(
        &self,
        view: &ticketing_core::TokenView,
        created: bool,
        active: bool,
        handle: Option<usize>,
    ) -> Result<(), String> {
        if view.created != created {
            return Err(format!("token created: {} but model {created}", view.created));
        }
        let status = if active { TokenStatus::Active } else { TokenStatus::Waiting };
        if view.status != status {
            return Err(format!("token status {:?} but model {status:?}", view.status));
        }
        let handle = handle.ok_or("no model token")?;
        if self.tokens.get(handle) != Some(&view.record.token) {
            return Err("the token is not the one the model expects".into());
        }
        if !active && self.model.before_opening(self.model.tokens[handle].concert) {
            if view.position.is_some() || view.opens_at.is_none() {
                return Err(format!("a drawn pre-queue shows a place before the opening: {view:?}"));
            }
        } else if !active {
            let (low, high) = self.model.position_bounds(handle);
            let position = view.position.ok_or("a waiting token without a position")?;
            if position < low || position > high {
                return Err(format!("position {position} outside [{low}, {high}]"));
            }
        }
        Ok(())
    }
}

/// Compares a refusal (or a plain success) with the model.
fn refusal(expected: &Expect, actual: &Result<(), Error>, what: &str) -> Result<(), String> {
    match (expected, actual) {
        (Expect::Ok, Ok(())) => Ok(()),
        (Expect::Refused(code_expected), Err(Error::Domain(error))) if code(error) == *code_expected => {
            Ok(())
        }
        _ => Err(format!("{what}: got {actual:?}, model {expected:?}")),
    }
}

/// The invariants, on what the stores hold:
/// 1. no seat is booked by two reservations or held by two live holds, and no seat has two live
///    (unrefunded) payments;
/// 2. every balance equals the sum of its ledger (and is never negative);
/// 3. money is conserved: charges − payments + refunds = balances, live payments = prices of
///    booked seats, and every refund answers a refunded payment of a cancelled booking;
/// 4. at most `max_active` tokens are active per concert;
/// 6. no payment was made after its hold's deadline, and a token that paid is expired.
///
/// (5, idempotency, is checked by comparing every answer with the model.)
///
/// # Errors
/// The first invariant that does not hold.
pub async fn check_invariants<Q: QueueStore, B: BookingStore>(w: &World<Q, B>) -> Result<(), String> {
    let store = w.svc.booking_store();
    let now = w.clock.now();
    let fail = |e: ticketing_core::StoreError| e.to_string();
    // 1. Seats.
    let mut paid_seats = HashMap::new();
    let mut live_holds: HashMap<SeatId, usize> = HashMap::new();
    let (mut payments_total, mut paid_total, mut refunded_total) = (0, 0, 0);
    for id in &w.reservations {
        let reservation = store.reservation(*id).await.map_err(fail)?.ok_or("a reservation vanished")?;
        if reservation.status_at(now) == ReservationStatus::Held {
            *live_holds.entry(reservation.seat_id).or_default() += 1;
        }
        if let Some(payment) = store.payment_of(*id).await.map_err(fail)? {
            if payment.at >= reservation.expires_at {
                return Err("a hold was paid after its deadline".into());
            }
            paid_total += payment.amount.get();
            if payment.refunded_at.is_some() {
                if reservation.status != ReservationStatus::Cancelled {
                    return Err("a refunded payment of a booking not cancelled".into());
                }
                refunded_total += payment.amount.get();
                continue;
            }
            if reservation.status != ReservationStatus::Confirmed {
                return Err("a live payment for an unconfirmed reservation".into());
            }
            if paid_seats.insert(payment.seat_id, *id).is_some() {
                return Err(format!("seat {} has two live payments", payment.seat_id));
            }
            payments_total += payment.amount.get();
        } else if reservation.status == ReservationStatus::Cancelled {
            return Err("a cancelled booking without its payment".into());
        }
    }
    if let Some((seat, n)) = live_holds.iter().find(|(_, n)| **n > 1) {
        return Err(format!("seat {seat} has {n} live holds"));
    }
    let mut booked_prices = 0;
    for (_, schedule) in &w.concerts {
        for seat in store.seats(*schedule).await.map_err(fail)? {
            if let SeatState::Booked { reservation } = seat.state {
                if paid_seats.get(&seat.seat.id) != Some(&reservation) {
                    return Err(format!("booked seat {} has no payment of its reservation", seat.seat.id));
                }
                booked_prices += seat.seat.price.get();
            }
            if seat.status_at(now) == SeatStatus::Held
                && live_holds.get(&seat.seat.id).copied().unwrap_or(0) != 1
            {
                return Err(format!("held seat {} without exactly one live hold", seat.seat.id));
            }
        }
    }
    if booked_prices != payments_total {
        return Err(format!("payments {payments_total} != prices of booked seats {booked_prices}"));
    }
    // 2 and 3. Money.
    let (mut charged, mut spent, mut refunds, mut balances) = (0, 0, 0, 0);
    for (u, user) in w.users.iter().enumerate() {
        let wallet = store.wallet(user).await.map_err(fail)?;
        let ledger = store.ledger(user).await.map_err(fail)?;
        let sum: i64 = ledger.iter().map(|e| e.signed_amount()).sum();
        if sum != wallet.balance.get() {
            return Err(format!("ledger of {user} sums to {sum}, balance {}", wallet.balance));
        }
        let model_balance = w.model.balances.get(&u).copied().unwrap_or(0);
        if wallet.balance.get() != model_balance {
            return Err(format!("balance of {user} is {}, model {model_balance}", wallet.balance));
        }
        charged +=
            ledger.iter().filter(|e| e.kind == LedgerKind::Charge).map(|e| e.amount.get()).sum::<i64>();
        spent += ledger.iter().filter(|e| e.kind == LedgerKind::Payment).map(|e| e.amount.get()).sum::<i64>();
        refunds +=
            ledger.iter().filter(|e| e.kind == LedgerKind::Refund).map(|e| e.amount.get()).sum::<i64>();
        balances += wallet.balance.get();
    }
    if charged - spent + refunds != balances || spent != paid_total || refunds != refunded_total {
        return Err(format!(
            "money: charged {charged} − spent {spent} + refunded {refunds} ≠ balances {balances}, or spent ≠ \
             payments {paid_total}, or refunded ≠ refunded payments {refunded_total}"
        ));
    }
    // 4. Capacity.
    for (concert, _) in &w.concerts {
        let snapshot = w.svc.queue_store().admission_snapshot(*concert, now).await.map_err(fail)?;
        if snapshot.active as usize > model::MAX_ACTIVE {
            return Err(format!("{} active tokens", snapshot.active));
        }
    }
    // 6. A paid token is expired (or gone: a user who queues again replaces it).
    for (t, token) in w.model.tokens.iter().enumerate() {
        if token.paid {
            let replaced = w.model.current.get(&(token.user, token.concert)) != Some(&t);
            match w.svc.authenticate(&w.tokens[t]).await {
                Ok(record) if record.status_at(now) == TokenStatus::Expired => {}
                Err(Error::Domain(DomainError::TokenNotFound)) if replaced => {}
                other => return Err(format!("a token that paid is not expired: {other:?}")),
            }
        }
    }
    Ok(())
}

/// Runs a whole case: every command, compared with the model, invariants after each. Returns
/// the kinds of outcome the case reached.
///
/// # Errors
/// The step, the command and the disagreement.
pub async fn run<Q: QueueStore, B: BookingStore>(
    queue: Q,
    booking: B,
    commands: &[Cmd],
) -> Result<HashSet<String>, String> {
    let mut world = World::new(queue, booking).await?;
    for (i, cmd) in commands.iter().enumerate() {
        world.step(cmd).await.map_err(|e| format!("step {i} {cmd:?}: {e}"))?;
        check_invariants(&world).await.map_err(|e| format!("after step {i} {cmd:?}: {e}"))?;
    }
    Ok(world.seen)
}

/// The number of cases: `PROPTEST_CASES` when set, else `default`.
#[must_use]
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A proptest configuration with [`cases`] cases whose failing seeds are kept (and replayed
/// first) in `proptest-regressions/<file>.txt`.
#[must_use]
pub fn config(default_cases: u32, file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}
