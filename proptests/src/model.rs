//! The reference model: the sale in the plainest terms, written apart from the implementation.
//!
//! No fences, versions, plans or stores: a list of tokens, a list of seats, a list of
//! reservations, a map of balances and a map of idempotency keys, and for every command the
//! outcome the rules say it must have. Handles are indexes into these lists; the runner maps
//! them to the ids the service chose.

use std::collections::HashMap;

/// Queue settings every case uses (small, so the caps bite).
pub const MAX_ACTIVE: usize = 2;
/// Admitted per window.
pub const ADMIT_BATCH: usize = 2;
/// The window, in ms.
pub const ADMIT_INTERVAL_MS: i64 = 1_000;
/// A waiting token not polled for this long expires.
pub const WAITING_IDLE_MS: i64 = 30_000;
/// An admitted token expires this long after admission.
pub const ACTIVE_TTL_MS: i64 = 90_000;
/// A hold lasts this long, whenever its token's active time ends; it is also how long an
/// admitted token keeps access to its user's account after its active time ended.
pub const HOLD_TTL_MS: i64 = 60_000;
/// The largest single charge and the largest balance.
pub const CHARGE_MAX: i64 = ticketing_core::limits::CHARGE_MAX_POINTS;
/// The largest balance.
pub const BALANCE_MAX: i64 = ticketing_core::limits::BALANCE_MAX_POINTS;

/// What a command should answer, as far as the model cares. Handles are indexes into the
/// model's lists.
#[allow(missing_docs)] // The fields are described on each variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Success (details are compared by the runner where they matter).
    Ok,
    /// A token request: whether a new token was issued, and its status.
    Token { created: bool, active: bool },
    /// Admission: the token handles admitted, in order.
    Admitted(Vec<usize>),
    /// A hold: the reservation handle (new, or replayed).
    Held(usize),
    /// A payment of a reservation handle, leaving this balance.
    Paid { reservations: Vec<usize>, balance: i64 },
    /// A charge leaving this balance.
    Balance(i64),
    /// A cancellation giving the points back, leaving this balance.
    Refunded(i64),
    /// A refusal, by its `code` (the serde tag of `DomainError`).
    Refused(&'static str),
    /// Seat statuses of a concert (AVAILABLE / HELD / BOOKED), by seat handle.
    Seats(Vec<(usize, &'static str)>),
    /// The tick that opens a scheduled sale: nobody admitted; its pre-queue is drawn
    /// ([`Model::draw`]).
    Opened,
}

/// A token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Whose.
    pub user: usize,
    /// For which concert.
    pub concert: usize,
    /// Arrival order.
    pub seq: u64,
    /// Waiting or active until, in ms; `None` once expired for good.
    pub until: Option<i64>,
    /// Admitted?
    pub active: bool,
    /// Expired because its user paid.
    pub paid: bool,
    /// When its user paid (and it expired), in ms.
    pub paid_at: Option<i64>,
    /// An operator revoked it.
    pub revoked: bool,
}

/// A seat.
#[derive(Debug, Clone)]
pub struct Seat {
    /// Its concert.
    pub concert: usize,
    /// Its price.
    pub price: i64,
    /// The reservation holding or having bought it.
    pub holder: Option<usize>,
    /// Sold.
    pub booked: bool,
}

/// A reservation.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Whose.
    pub user: usize,
    /// Made with which token.
    pub token: usize,
    /// Which seat.
    pub seat: usize,
    /// At what price.
    pub price: i64,
    /// Held until, in ms.
    pub until: i64,
    /// Paid.
    pub confirmed: bool,
    /// Let go.
    pub released: bool,
    /// Paid, then cancelled and refunded.
    pub cancelled: bool,
}

/// The model's state.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The time, ms.
    pub now: i64,
    /// Every token ever issued.
    pub tokens: Vec<Token>,
    /// The current token of (user, concert).
    pub current: HashMap<(usize, usize), usize>,
    next_seq: u64,
    /// Per concert: (window start, admitted in window).
    windows: HashMap<usize, (Option<i64>, usize)>,
    /// Every seat.
    pub seats: Vec<Seat>,
    /// Every reservation.
    pub reservations: Vec<Reservation>,
    /// Balances.
    pub balances: HashMap<usize, i64>,
    /// Idempotency keys: (user, key) -> (what was asked, what was answered).
    keys: HashMap<(usize, u8), (String, Expect)>,
    /// Concerts whose sale an operator paused.
    paused: std::collections::HashSet<usize>,
    /// Concerts whose sale waits for an opening (their pre-queue drawn at random), and those
    /// opened.
    scheduled: std::collections::HashSet<usize>,
    opened: std::collections::HashSet<usize>,
}

impl Model {
    /// A model with the given seats (concert, price) at time `now`.
    #[must_use]
    pub fn new(now: i64, seats: &[(usize, i64)]) -> Self {
        Self {
            now,
            seats: seats
                .iter()
                .map(|&(concert, price)| Seat { concert, price, holder: None, booked: false })
                .collect(),
            ..Self::default()
        }
    }

    fn waiting(&self, t: usize) -> bool {
        let token = &self.tokens[t];
        !token.active && token.until.is_some_and(|u| u > self.now)
    }

    fn active(&self, t: usize) -> bool {
        let token = &self.tokens[t];
        token.active && token.until.is_some_and(|u| u > self.now)
    }

    fn valid(&self, t: usize) -> bool {
        self.waiting(t) || self.active(t)
    }

    /// When an admitted token stopped being active (paid, or its active time ran out).
    fn admission_ended(&self, t: usize) -> Option<i64> {
        let token = &self.tokens[t];
        if token.paid {
            token.paid_at
        } else {
            token.until.filter(|&until| token.active && until <= self.now)
        }
    }

    /// Whether the token reaches its user's account (balance, charges, own holds): valid, or
    /// admitted and ended less than a hold time ago.
    fn account_access(&self, t: usize) -> bool {
        self.valid(t) || self.admission_ended(t).is_some_and(|ended| self.now < ended + HOLD_TTL_MS)
    }

    /// A token acts only for its own concert.
    fn concert_of_reservation(&self, r: usize) -> usize {
        self.seats[self.reservations[r].seat].concert
    }

    /// A reservation is live while held, not paid or let go, before its deadline, and still the
    /// seat's holder.
    fn live(&self, r: usize) -> bool {
        let res = &self.reservations[r];
        !res.confirmed
            && !res.released
            && !res.cancelled
            && res.until > self.now
            && self.seats[res.seat].holder == Some(r)
    }

    fn seat_free(&self, s: usize) -> bool {
        let seat = &self.seats[s];
        !seat.booked && seat.holder.is_none_or(|r| !self.live(r))
    }

    /// Why a token that is not valid any more may not act: revoked, or expired.
    fn gone(&self, t: usize) -> &'static str {
        if self.tokens[t].revoked { "token_revoked" } else { "token_expired" }
    }

    /// Why a token may not act: waiting in line or expired.
    fn not_active(&self, t: usize) -> &'static str {
        if self.waiting(t) { "not_admitted" } else { self.gone(t) }
    }

    fn replay(&self, user: usize, key: Option<u8>, asked: &str) -> Option<Expect> {
        let (stored_ask, outcome) = self.keys.get(&(user, key?))?;
        Some(if stored_ask == asked { outcome.clone() } else { Expect::Refused("idempotency_key_reused") })
    }

    fn remember(&mut self, user: usize, key: Option<u8>, asked: String, outcome: &Expect) {
        if let Some(key) = key {
            self.keys.insert((user, key), (asked, outcome.clone()));
        }
    }

    /// Asks for a token.
    pub fn issue(&mut self, user: usize, concert: usize) -> Expect {
        if let Some(&t) = self.current.get(&(user, concert)) {
            if self.waiting(t) {
                self.tokens[t].until = Some(self.now + WAITING_IDLE_MS);
                return Expect::Token { created: false, active: false };
            }
            if self.active(t) {
                return Expect::Token { created: false, active: true };
            }
        }
        self.next_seq += 1;
        self.tokens.push(Token {
            user,
            concert,
            seq: self.next_seq,
            until: Some(self.now + WAITING_IDLE_MS),
            active: false,
            paid: false,
            paid_at: None,
            revoked: false,
        });
        self.current.insert((user, concert), self.tokens.len() - 1);
        Expect::Token { created: true, active: false }
    }

    /// Polls a token.
    pub fn poll(&mut self, t: usize) -> Expect {
        if self.waiting(t) {
            self.tokens[t].until = Some(self.now + WAITING_IDLE_MS);
            Expect::Token { created: false, active: false }
        } else if self.active(t) {
            Expect::Token { created: false, active: true }
        } else {
            Expect::Refused(self.gone(t))
        }
    }

    /// An operator revokes `user`'s token for `concert`: it expires for good (no grace to
    /// reach the account) and its live holds are released.
    pub fn revoke(&mut self, user: usize, concert: usize) -> Expect {
        let Some(&t) = self.current.get(&(user, concert)) else { return Expect::Refused("token_not_found") };
        let token = &mut self.tokens[t];
        token.revoked = true;
        token.active = false;
        token.until = None;
        token.paid = false;
        token.paid_at = None;
        for r in 0..self.reservations.len() {
            if self.reservations[r].token == t && self.live(r) {
                self.reservations[r].released = true;
                let seat = self.reservations[r].seat;
                self.seats[seat].holder = None;
            }
        }
        Expect::Ok
    }

    /// An operator pauses (or resumes) a concert's sale.
    pub fn pause(&mut self, concert: usize, paused: bool) -> Expect {
        if paused {
            self.paused.insert(concert);
        } else {
            self.paused.remove(&concert);
        }
        Expect::Ok
    }

    /// Marks `concert` as one whose sale waits for an opening (drawn at random), already due:
    /// its first tick opens it.
    pub fn schedule(&mut self, concert: usize) {
        self.scheduled.insert(concert);
    }

    /// Whether `concert`'s sale waits for its opening: a drawn pre-queue has no places yet.
    #[must_use]
    pub fn before_opening(&self, concert: usize) -> bool {
        self.scheduled.contains(&concert) && !self.opened.contains(&concert)
    }

    /// The opening's draw of `concert`'s pre-queue: every token of it not admitted (a lapsed one
    /// may still be in the store's line) takes a place of the same set again, in the order of
    /// `key` (SHA-256 of the seed and the token, which only the runner knows).
    pub fn draw(&mut self, concert: usize, key: impl Fn(usize) -> [u8; 32]) {
        let mut drawn: Vec<usize> = (0..self.tokens.len())
            .filter(|&t| self.tokens[t].concert == concert && !self.tokens[t].active && !self.tokens[t].paid)
            .collect();
        let mut places: Vec<u64> = drawn.iter().map(|&t| self.tokens[t].seq).collect();
        places.sort_unstable();
        drawn.sort_by_key(|&t| key(t));
        for (t, place) in drawn.into_iter().zip(places) {
            self.tokens[t].seq = place;
        }
    }

    /// One admission tick: a scheduled sale's first opens it (and admits nobody, paused or not);
    /// nobody while the sale is paused.
    pub fn tick(&mut self, concert: usize) -> Expect {
        if self.before_opening(concert) {
            self.opened.insert(concert);
            return Expect::Opened;
        }
        if self.paused.contains(&concert) {
            return Expect::Admitted(Vec::new());
        }
        let now = self.now;
        let window = self.windows.entry(concert).or_insert((None, 0));
        match window.0 {
            Some(start) if now >= start && now < start + ADMIT_INTERVAL_MS => {}
            _ => *window = (Some(now), 0),
        }
        let admitted_so_far = window.1;
        let active =
            (0..self.tokens.len()).filter(|&t| self.tokens[t].concert == concert && self.active(t)).count();
        let quota = (ADMIT_BATCH - admitted_so_far).min(MAX_ACTIVE.saturating_sub(active));
        let mut line: Vec<usize> = (0..self.tokens.len())
            .filter(|&t| self.tokens[t].concert == concert && self.waiting(t))
            .collect();
        line.sort_by_key(|&t| self.tokens[t].seq);
        let admitted: Vec<usize> = line.into_iter().take(quota).collect();
        for &t in &admitted {
            self.tokens[t].active = true;
            self.tokens[t].until = Some(now + ACTIVE_TTL_MS);
        }
        if let Some(window) = self.windows.get_mut(&concert) {
            window.1 += admitted.len();
        }
        Expect::Admitted(admitted)
    }

    /// Seat statuses of a concert, for an active token of that concert.
    pub fn seats_of(&self, t: usize, concert: usize) -> Expect {
        if self.tokens[t].concert != concert {
            return Expect::Refused("wrong_concert");
        }
        if !self.active(t) {
            return Expect::Refused(self.not_active(t));
        }
        Expect::Seats(
            (0..self.seats.len())
                .filter(|&s| self.seats[s].concert == concert)
                .map(|s| {
                    let status = if self.seats[s].booked {
                        "BOOKED"
                    } else if self.seat_free(s) {
                        "AVAILABLE"
                    } else {
                        "HELD"
                    };
                    (s, status)
                })
                .collect(),
        )
    }

    /// Holds seat `s` with token `t`.
    pub fn hold(&mut self, t: usize, s: usize, key: Option<u8>) -> Expect {
        let user = self.tokens[t].user;
        let asked = format!("hold:{s}");
        // A revoked token is answered for nothing, not even a replay.
        if self.tokens[t].revoked {
            return Expect::Refused("token_revoked");
        }
        if let Some(replayed) = self.replay(user, key, &asked) {
            return replayed;
        }
        if !self.active(t) {
            return Expect::Refused(self.not_active(t));
        }
        if self.seats[s].concert != self.tokens[t].concert {
            return Expect::Refused("wrong_concert");
        }
        let concert = self.seats[s].concert;
        let outcome = if crate::CAPS[concert].is_some_and(|cap| self.bought_of(user, concert) >= cap as usize)
        {
            Expect::Refused("buyer_limit_reached")
        } else if !self.seat_free(s) {
            Expect::Refused("seat_unavailable")
        } else if (0..self.reservations.len())
            .filter(|&r| self.reservations[r].token == t && (self.reservations[r].confirmed || self.live(r)))
            .count()
            >= crate::HOLDS[concert] as usize
        {
            Expect::Refused("hold_limit_reached")
        } else {
            self.reservations.push(Reservation {
                user,
                token: t,
                seat: s,
                price: self.seats[s].price,
                until: self.now + HOLD_TTL_MS,
                confirmed: false,
                released: false,
                cancelled: false,
            });
            self.seats[s].holder = Some(self.reservations.len() - 1);
            Expect::Held(self.reservations.len() - 1)
        };
        self.remember(user, key, asked, &outcome);
        outcome
    }

    /// Releases reservation `r` with token `t`.
    pub fn release(&mut self, t: usize, r: usize) -> Expect {
        if !self.account_access(t) && !self.tokens[t].paid {
            return Expect::Refused(self.gone(t));
        }
        let res = &self.reservations[r];
        if res.user != self.tokens[t].user {
            return Expect::Refused("not_owner");
        }
        if self.concert_of_reservation(r) != self.tokens[t].concert {
            return Expect::Refused("wrong_concert");
        }
        if res.confirmed {
            return Expect::Refused("already_paid");
        }
        if self.live(r) {
            self.reservations[r].released = true;
            let seat = self.reservations[r].seat;
            self.seats[seat].holder = None;
        }
        Expect::Ok
    }

    /// Cancels booking `r` with token `t` (its buyer's), refunding it: only a concert with a
    /// window lets its buyers cancel ([`crate::CANCEL_WINDOWS`]; the window is open for the
    /// whole case).
    pub fn cancel(&mut self, t: usize, r: usize, key: Option<u8>) -> Expect {
        if self.tokens[t].revoked {
            return Expect::Refused("token_revoked");
        }
        if !self.account_access(t) && !self.tokens[t].paid {
            return Expect::Refused(self.gone(t));
        }
        let user = self.tokens[t].user;
        if self.reservations[r].user != user {
            return Expect::Refused("not_owner");
        }
        let concert = self.concert_of_reservation(r);
        if concert != self.tokens[t].concert {
            return Expect::Refused("wrong_concert");
        }
        let asked = format!("cancel:{r}");
        if let Some(replayed) = self.replay(user, key, &asked) {
            return replayed;
        }
        let res = self.reservations[r].clone();
        let balance = self.balances.get(&user).copied().unwrap_or(0);
        let outcome = if res.cancelled {
            Expect::Refused("already_cancelled")
        } else if !res.confirmed {
            Expect::Refused("not_paid")
        } else if crate::CANCEL_WINDOWS[concert].is_none() {
            Expect::Refused("cancellation_closed")
        } else if balance + res.price > BALANCE_MAX {
            Expect::Refused("balance_limit_exceeded")
        } else {
            self.balances.insert(user, balance + res.price);
            self.reservations[r].confirmed = false;
            self.reservations[r].cancelled = true;
            self.seats[res.seat].booked = false;
            self.seats[res.seat].holder = None;
            Expect::Refunded(balance + res.price)
        };
        self.remember(user, key, asked, &outcome);
        outcome
    }

    /// Pays reservation `r` with token `t`.
    pub fn pay(&mut self, t: usize, r: usize, key: Option<u8>) -> Expect {
        self.pay_order(t, &[r], key)
    }

    /// Pays reservations `rs` with token `t` in one payment: all or none.
    pub fn pay_order(&mut self, t: usize, rs: &[usize], key: Option<u8>) -> Expect {
        let user = self.tokens[t].user;
        let mut set: Vec<usize> = rs.to_vec();
        set.sort_unstable();
        set.dedup();
        if set.len() != rs.len() {
            // Checked before the token is even read.
            return Expect::Refused("invalid_input");
        }
        let asked = format!("pay:{}", set.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
        if self.tokens[t].revoked {
            return Expect::Refused("token_revoked");
        }
        if let Some(replayed) = self.replay(user, key, &asked) {
            return replayed;
        }
        for &r in rs {
            if self.reservations[r].user != user {
                return Expect::Refused("not_owner");
            }
            if self.concert_of_reservation(r) != self.tokens[t].concert {
                // Not remembered under the key: the token, not the request, was refused.
                return Expect::Refused("wrong_concert");
            }
        }
        // The holds' own states answer first, in the order named.
        let lapsed = rs.iter().find_map(|&r| {
            let res = &self.reservations[r];
            if res.confirmed {
                Some("already_paid")
            } else if res.cancelled {
                Some("already_cancelled")
            } else if res.released {
                Some("hold_released")
            } else if !self.live(r) {
                Some("hold_expired")
            } else {
                None
            }
        });
        let outcome = if let Some(refused) = lapsed {
            Expect::Refused(refused)
        } else if let Some(&r) = rs.iter().find(|&&r| {
            let res = &self.reservations[r];
            !self.active(t) && (res.token != t || self.waiting(t))
        }) {
            // The token that made a hold may pay it until the hold's deadline, whatever became
            // of the token; any other token must be active. Not remembered under the key: the
            // token, not the request, was refused.
            let _ = r;
            return Expect::Refused(self.not_active(t));
        } else if crate::CAPS[self.concert_of_reservation(rs[0])]
            .is_some_and(|cap| self.bought(user, rs[0]) + rs.len() > cap as usize)
        {
            Expect::Refused("buyer_limit_reached")
        } else if self.balances.get(&user).copied().unwrap_or(0)
            < rs.iter().map(|&r| self.reservations[r].price).sum::<i64>()
        {
            Expect::Refused("insufficient_balance")
        } else {
            let total: i64 = rs.iter().map(|&r| self.reservations[r].price).sum();
            let balance = self.balances.entry(user).or_insert(0);
            *balance -= total;
            let balance = *balance;
            for &r in rs {
                self.reservations[r].confirmed = true;
                let seat = self.reservations[r].seat;
                self.seats[seat].booked = true;
            }
            // The token expires once nothing it holds is left to pay.
            let more_to_pay =
                (0..self.reservations.len()).any(|o| self.reservations[o].token == t && self.live(o));
            if self.active(t) && !more_to_pay {
                self.tokens[t].active = false;
                self.tokens[t].until = None;
                self.tokens[t].paid = true;
                self.tokens[t].paid_at = Some(self.now);
            }
            Expect::Paid { reservations: rs.to_vec(), balance }
        };
        self.remember(user, key, asked, &outcome);
        outcome
    }

    /// How many seats of reservation `r`'s concert `user` has paid for.
    fn bought(&self, user: usize, r: usize) -> usize {
        self.bought_of(user, self.concert_of_reservation(r))
    }

    /// How many seats of `concert` `user` has paid for.
    fn bought_of(&self, user: usize, concert: usize) -> usize {
        (0..self.reservations.len())
            .filter(|&o| {
                self.reservations[o].user == user
                    && self.reservations[o].confirmed
                    && self.concert_of_reservation(o) == concert
            })
            .count()
    }

    /// Charges `amount` with token `t`.
    pub fn charge(&mut self, t: usize, amount: i64, key: Option<u8>) -> Expect {
        if amount <= 0 || amount > CHARGE_MAX {
            return Expect::Refused("invalid_amount");
        }
        if !self.account_access(t) {
            return Expect::Refused(self.gone(t));
        }
        let user = self.tokens[t].user;
        let asked = format!("charge:{amount}");
        if let Some(replayed) = self.replay(user, key, &asked) {
            return replayed;
        }
        let balance = self.balances.get(&user).copied().unwrap_or(0);
        let outcome = if balance + amount > BALANCE_MAX {
            Expect::Refused("balance_limit_exceeded")
        } else {
            self.balances.insert(user, balance + amount);
            Expect::Balance(balance + amount)
        };
        self.remember(user, key, asked, &outcome);
        outcome
    }

    /// Bounds on a waiting token's position: at least the live tokens ahead of it plus one, at
    /// most every token ahead that was ever waiting and not admitted plus one.
    #[must_use]
    pub fn position_bounds(&self, t: usize) -> (u64, u64) {
        let token = &self.tokens[t];
        let ahead = |strict: bool| {
            (0..self.tokens.len())
                .filter(|&o| {
                    let other = &self.tokens[o];
                    other.concert == token.concert
                        && other.seq < token.seq
                        && !other.active
                        && !other.paid
                        && (!strict || self.waiting(o))
                })
                .count() as u64
        };
        (ahead(true) + 1, ahead(false) + 1)
    }
}
