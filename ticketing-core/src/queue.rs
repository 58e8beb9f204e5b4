//! The queue-token state machine and the admission rule. Pure: no I/O, `now` passed in.
//!
//! A token is WAITING -> ACTIVE -> EXPIRED. A waiting token holds a sequence number that fixes
//! its place in line; it expires when it is not polled for `waiting_idle_secs`. Admission moves
//! tokens from the head of the line to ACTIVE, capped both by `max_active` and by `admit_batch`
//! per `admit_interval_ms`. An active token expires `active_ttl_secs` after admission, or at once
//! when its user pays.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::QueueSettings;
use crate::claim::Claim;
use crate::error::DomainError;
use crate::ids::{ConcertId, QueueToken, UserId};
use crate::limits::{ADMIT_RATE_EWMA_EIGHTHS, ETA_MAX_SECS};
use crate::store::TokenHistory;

/// The stored state of a queue token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenState {
    /// In line.
    Waiting {
        /// Arrival order within the concert; smaller is earlier.
        seq: u64,
        /// When it loses its place unless polled again.
        expires_at: DateTime<Utc>,
    },
    /// Admitted.
    Active {
        /// When it was admitted.
        admitted_at: DateTime<Utc>,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
    /// Over.
    Expired {
        /// When it expired.
        at: DateTime<Utc>,
        /// Why.
        reason: ExpiryReason,
    },
}

/// Why a token expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExpiryReason {
    /// It waited without being polled for too long.
    Idle,
    /// Its active time ran out.
    TimedOut,
    /// Its user paid.
    Paid,
    /// Its holder left the line while waiting (it was never admitted).
    Left,
    /// An operator revoked it: it acts for nobody any more, and a queue store that loses it
    /// gives it back revoked ([`crate::store::AdmissionLog::revoke_token`]).
    Revoked,
}

/// What a client sees of a token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenStatus {
    /// In line.
    Waiting,
    /// Admitted.
    Active,
    /// Over.
    Expired,
}

/// A queue token as a store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// The credential.
    pub token: QueueToken,
    /// The user it was issued to.
    pub user_id: UserId,
    /// The concert it queues for.
    pub concert_id: ConcertId,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Raised by every change; stores compare it before writing.
    pub version: u64,
    /// Its state.
    pub state: TokenState,
}

impl TokenRecord {
    /// The token's status at `now`: a waiting or active token past its deadline is expired
    /// whether or not a sweeper has tidied it yet.
    #[must_use]
    pub fn status_at(&self, now: DateTime<Utc>) -> TokenStatus {
        match self.state {
            TokenState::Waiting { expires_at, .. } if expires_at > now => TokenStatus::Waiting,
            TokenState::Active { expires_at, .. } if expires_at > now => TokenStatus::Active,
            TokenState::Waiting { .. } | TokenState::Active { .. } | TokenState::Expired { .. } => {
                TokenStatus::Expired
            }
        }
    }

    /// When the token stops being valid (for an expired token, when it expired).
    #[must_use]
    pub fn expires_at(&self) -> DateTime<Utc> {
        match self.state {
            TokenState::Waiting { expires_at, .. } | TokenState::Active { expires_at, .. } => expires_at,
            TokenState::Expired { at, .. } => at,
        }
    }

    /// The waiting sequence number, for a token in line.
    #[must_use]
    pub fn seq(&self) -> Option<u64> {
        match self.state {
            TokenState::Waiting { seq, .. } => Some(seq),
            TokenState::Active { .. } | TokenState::Expired { .. } => None,
        }
    }

    /// When it was admitted, for an active token.
    #[must_use]
    pub fn admitted_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            TokenState::Active { admitted_at, .. } => Some(admitted_at),
            TokenState::Waiting { .. } | TokenState::Expired { .. } => None,
        }
    }

    /// When an admitted token stopped being active, if it has by `now`: its active time ran out,
    /// or its user paid. `None` for a token still waiting or active, and for one that went idle
    /// in line (it was never admitted).
    #[must_use]
    pub fn admission_ended_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.state {
            TokenState::Active { expires_at, .. } if expires_at <= now => Some(expires_at),
            TokenState::Expired { at, reason: ExpiryReason::TimedOut | ExpiryReason::Paid } => Some(at),
            TokenState::Waiting { .. }
            | TokenState::Active { .. }
            | TokenState::Expired {
                reason: ExpiryReason::Idle | ExpiryReason::Left | ExpiryReason::Revoked,
                ..
            } => None,
        }
    }

    /// Whether an operator revoked the token.
    #[must_use]
    pub fn revoked(&self) -> bool {
        matches!(self.state, TokenState::Expired { reason: ExpiryReason::Revoked, .. })
    }

    /// Why the token may not act once it is expired: revoked, or expired.
    #[must_use]
    pub fn expired_error(&self) -> DomainError {
        if self.revoked() { DomainError::TokenRevoked } else { DomainError::TokenExpired }
    }

    fn with_state(&self, state: TokenState) -> Self {
        Self { version: self.version + 1, state, ..self.clone() }
    }
}

/// A token about to be put at the back of the line; the store assigns its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    /// The credential.
    pub token: QueueToken,
    /// The user it is issued to.
    pub user_id: UserId,
    /// The concert it queues for.
    pub concert_id: ConcertId,
    /// When it is issued.
    pub issued_at: DateTime<Utc>,
    /// When it loses its place unless polled.
    pub expires_at: DateTime<Utc>,
}

impl NewToken {
    /// The record a store keeps for this token once it has its place `seq` in line: version 1,
    /// WAITING until its idle deadline.
    #[must_use]
    pub fn waiting(self, seq: u64) -> TokenRecord {
        TokenRecord {
            token: self.token,
            user_id: self.user_id,
            concert_id: self.concert_id,
            issued_at: self.issued_at,
            version: 1,
            state: TokenState::Waiting { seq, expires_at: self.expires_at },
        }
    }
}

/// What asking for a token should do.
#[derive(Debug, Clone, PartialEq)]
pub enum IssueDecision {
    /// A new token at the back of the line, replacing the user's expired one if there is one.
    Issue {
        /// The token to insert.
        new: NewToken,
        /// The user's previous, expired token, which the new one replaces.
        replacing: Option<TokenRecord>,
    },
    /// The user's waiting token, its idle deadline extended. Written with a compare-and-set on
    /// the version of `previous`.
    Refresh {
        /// The record as read.
        previous: TokenRecord,
        /// The record to write.
        updated: TokenRecord,
    },
    /// The user's active token, unchanged: re-asking never extends an active token's time,
    /// because that would let one buyer keep a place of `max_active` for ever.
    Keep(TokenRecord),
}

/// Decides what asking for a token does, given the user's current token for the concert.
///
/// Asking again while the token is valid returns the same token (never a second place in line);
/// a waiting token's idle deadline is extended.
#[must_use]
pub fn issue(
    existing: Option<TokenRecord>,
    user_id: &UserId,
    concert_id: ConcertId,
    fresh: QueueToken,
    settings: &QueueSettings,
    now: DateTime<Utc>,
) -> IssueDecision {
    join_decision(existing, new_token(fresh, user_id, concert_id, settings, now), now)
}

/// [`issue`] as a store's join step applies it ([`crate::store::QueueStore::join`]): `new` is
/// the token to put at the back of the line if the user has no valid one, and its idle deadline
/// is the one a waiting token gets.
#[must_use]
pub fn join_decision(existing: Option<TokenRecord>, new: NewToken, now: DateTime<Utc>) -> IssueDecision {
    match existing {
        Some(record) => match record.status_at(now) {
            TokenStatus::Waiting => match refresh_to(&record, new.expires_at, now) {
                Some(updated) => IssueDecision::Refresh { previous: record, updated },
                None => IssueDecision::Keep(record),
            },
            TokenStatus::Active => IssueDecision::Keep(record),
            TokenStatus::Expired => IssueDecision::Issue { new, replacing: Some(record) },
        },
        None => IssueDecision::Issue { new, replacing: None },
    }
}

/// A token for `user_id` at the back of `concert_id`'s line, asked for at `now`.
#[must_use]
pub fn new_token(
    token: QueueToken,
    user_id: &UserId,
    concert_id: ConcertId,
    settings: &QueueSettings,
    now: DateTime<Utc>,
) -> NewToken {
    NewToken {
        token,
        user_id: user_id.clone(),
        concert_id,
        issued_at: now,
        expires_at: now + settings.waiting_idle(),
    }
}

/// A poll of a waiting token: its idle deadline moves to `now + waiting_idle_secs`.
///
/// Returns `None` when nothing is to be written: the token is active (polling never extends an
/// active token) or already expired.
#[must_use]
pub fn refresh(record: &TokenRecord, settings: &QueueSettings, now: DateTime<Utc>) -> Option<TokenRecord> {
    refresh_to(record, idle_deadline(settings, now), now)
}

/// The idle deadline a poll at `now` gives a waiting token.
#[must_use]
pub fn idle_deadline(settings: &QueueSettings, now: DateTime<Utc>) -> DateTime<Utc> {
    now + settings.waiting_idle()
}

/// The rule a store's poll step applies ([`crate::store::QueueStore::poll`]): a token waiting at
/// `now` gets the idle deadline `deadline` (version + 1); any other token is left as it is
/// (`None`).
#[must_use]
pub fn refresh_to(record: &TokenRecord, deadline: DateTime<Utc>, now: DateTime<Utc>) -> Option<TokenRecord> {
    match (record.status_at(now), &record.state) {
        (TokenStatus::Waiting, TokenState::Waiting { seq, .. }) => {
            Some(record.with_state(TokenState::Waiting { seq: *seq, expires_at: deadline }))
        }
        _ => None,
    }
}

/// What one poll step of a store answers: the token as it is after the step, and where it
/// stands while it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    /// The token's record after the step (refreshed if it was waiting).
    pub record: TokenRecord,
    /// For a token waiting at the poll's instant: its place and its concert's admission state,
    /// read in the same step.
    pub line: Option<InLine>,
}

/// What one join step of a store answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The user's token after the step, and where it stands while it waits.
    pub polled: Polled,
    /// Whether the step put a new token at the back of the line.
    pub created: bool,
}

/// Where a waiting token stands.
#[derive(Debug, Clone, PartialEq)]
pub struct InLine {
    /// 1-based place among the concert's waiting tokens (0: no longer in line).
    pub position: u64,
    /// The concert's admission state, for the ETA.
    pub snapshot: AdmissionSnapshot,
}

/// Whether a poll whose write lost its compare-and-set has nothing left to do: the token it
/// read is still waiting and was written again since (`current` is newer than `previous`), so a
/// concurrent poll already extended its idle deadline. Re-trying would only race that poll.
#[must_use]
pub fn refreshed_concurrently(previous: &TokenRecord, current: &TokenRecord, now: DateTime<Utc>) -> bool {
    current.token == previous.token
        && current.version > previous.version
        && current.status_at(now) == TokenStatus::Waiting
}

/// The token's user paid: the token expires at once.
///
/// # Errors
/// [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token) when the token is not active at `now`.
pub fn expire_on_payment(record: &TokenRecord, now: DateTime<Utc>) -> Result<TokenRecord, DomainError> {
    match record.status_at(now) {
        TokenStatus::Active => {
            Ok(record.with_state(TokenState::Expired { at: now, reason: ExpiryReason::Paid }))
        }
        TokenStatus::Waiting | TokenStatus::Expired => Err(record.expired_error()),
    }
}

/// An operator revokes the token: whatever its state, it expires at once as REVOKED (a waiting
/// one gives up its place; an admitted one its admission; an expired one any grace it had to
/// reach its account). `None` when it is revoked already.
#[must_use]
pub fn revoke(record: &TokenRecord, now: DateTime<Utc>) -> Option<TokenRecord> {
    (!record.revoked())
        .then(|| record.with_state(TokenState::Expired { at: now, reason: ExpiryReason::Revoked }))
}

/// The token's holder leaves the line: a waiting token expires at once and gives up its place,
/// so everyone behind it moves up. Joining again later takes a new place at the back.
///
/// # Errors
/// [`DomainError::AlreadyAdmitted`] for an active token (its admission runs out its time);
/// [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token) for an expired one.
pub fn leave(record: &TokenRecord, now: DateTime<Utc>) -> Result<TokenRecord, DomainError> {
    match record.status_at(now) {
        TokenStatus::Waiting => {
            Ok(record.with_state(TokenState::Expired { at: now, reason: ExpiryReason::Left }))
        }
        TokenStatus::Active => Err(DomainError::AlreadyAdmitted),
        TokenStatus::Expired => Err(record.expired_error()),
    }
}

/// Checks that `record` is a token of `concert_id` that may act: valid and admitted.
///
/// `position` is asked for only when the token is still waiting, to say where it stands.
///
/// # Errors
/// [`DomainError::WrongConcert`], [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token) or
/// [`DomainError::NotAdmitted`] with the position.
pub fn require_active(
    record: &TokenRecord,
    concert_id: Option<ConcertId>,
    now: DateTime<Utc>,
    position: impl FnOnce() -> u64,
) -> Result<(), DomainError> {
    if concert_id.is_some_and(|id| id != record.concert_id) {
        return Err(DomainError::WrongConcert);
    }
    match record.status_at(now) {
        TokenStatus::Active => Ok(()),
        TokenStatus::Waiting => Err(DomainError::NotAdmitted { position: position() }),
        TokenStatus::Expired => Err(record.expired_error()),
    }
}

/// Checks that `record` is a token that has not expired (waiting or active).
///
/// # Errors
/// [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token).
pub fn require_valid(record: &TokenRecord, now: DateTime<Utc>) -> Result<(), DomainError> {
    match record.status_at(now) {
        TokenStatus::Waiting | TokenStatus::Active => Ok(()),
        TokenStatus::Expired => Err(record.expired_error()),
    }
}

/// Checks that `record` may reach its user's own account (balance, charges) and own holds
/// (read, release): a valid token, or an admitted one whose active time ended less than `grace`
/// ago. The grace is the hold time: a buyer who held a seat keeps what paying for it needs
/// (topping up, reading the hold, letting it go) until the hold's own deadline, whenever the
/// token's active time ends.
///
/// # Errors
/// [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token).
pub fn require_account_access(
    record: &TokenRecord,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<(), DomainError> {
    if require_valid(record, now).is_ok()
        || record.admission_ended_at(now).is_some_and(|ended| now < ended + grace)
    {
        Ok(())
    } else {
        Err(record.expired_error())
    }
}

/// The record to give back for `token`, which its queue store lost
/// ([`crate::store::QueueStore::restore`]), from its verified `claim` and what the booking data
/// says of it: expired as REVOKED if an operator revoked it; expired as LEFT if its holder left
/// the line and it was never logged as admitted; expired as PAID if a payment was made with it
/// (logged as admitted or not); admitted until its deadline when the admission log has it
/// (expired as TIMED_OUT if the deadline passed); otherwise waiting at its claimed place with a
/// fresh idle deadline.
/// Versioned by [`restamped`].
#[must_use]
pub fn recovered(
    token: &QueueToken,
    claim: Claim,
    history: TokenHistory,
    settings: &QueueSettings,
    now: DateTime<Utc>,
) -> TokenRecord {
    // Left the line: never admitted (an admission logged after a leave that lost its race wins).
    let left = history.left_at.filter(|_| history.admitted.is_none());
    let record = history.admitted.unwrap_or_else(|| TokenRecord {
        token: token.identity(),
        user_id: claim.user,
        concert_id: token.concert(),
        issued_at: claim.issued_at,
        version: 1,
        state: TokenState::Waiting { seq: claim.seq, expires_at: idle_deadline(settings, now) },
    });
    let state = match (history.revoked_at, history.paid_at, record.state) {
        (Some(at), _, _) => TokenState::Expired { at, reason: ExpiryReason::Revoked },
        (None, _, _) if left.is_some() => {
            TokenState::Expired { at: left.unwrap_or(now), reason: ExpiryReason::Left }
        }
        (None, Some(at), _) => TokenState::Expired { at, reason: ExpiryReason::Paid },
        (None, None, TokenState::Active { expires_at, .. }) if expires_at <= now => {
            TokenState::Expired { at: expires_at, reason: ExpiryReason::TimedOut }
        }
        (None, None, state) => state,
    };
    restamped(TokenRecord { token: token.identity(), state, ..record }, now)
}

/// `record` with the version a record given back to its queue store takes: the time in
/// milliseconds, above any version it had before its store lost it, so that a write planned
/// from the lost record fails its compare-and-set.
#[must_use]
pub fn restamped(record: TokenRecord, now: DateTime<Utc>) -> TokenRecord {
    let version = u64::try_from(now.timestamp_millis()).unwrap_or(0).max(record.version + 1);
    TokenRecord { version, ..record }
}

/// The admission state of one concert's line, as read before a tick.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionSnapshot {
    /// Raised by every tick; the tick's write compares it.
    pub version: u64,
    /// Tokens active at the time of reading (expired ones not counted).
    pub active: u32,
    /// Tokens in line at the time of reading (possibly counting some that have gone idle and not
    /// been swept yet).
    pub waiting: u64,
    /// When the current admission window began.
    pub window_started_at: Option<DateTime<Utc>>,
    /// How many were admitted in the current window.
    pub admitted_in_window: u32,
    /// Measured admissions per second: a moving average over finished windows during which
    /// people were waiting.
    pub rate_per_sec: f64,
    /// When the line's current generation began, in microseconds since the epoch: when its
    /// sequence counter was created ([`crate::store::QueueStore::restore`]). 0 for a line whose
    /// store never loses it apart from the rest of its data (memory, SQL) or that has no counter
    /// yet.
    #[serde(default)]
    pub generation: u64,
    /// Whether the line was opened ([`crate::store::QueueStore::open_line`]): a line of a
    /// concert with a scheduled opening admits nobody until it is.
    #[serde(default)]
    pub opened: bool,
}

impl AdmissionSnapshot {
    /// The line split at its sale's opening, for operators: `(pre_queue, waiting)`. While a
    /// scheduled sale's line is not open every token in it is in the pre-queue; after, none.
    #[must_use]
    pub fn pre_queue_and_waiting(&self, scheduled: bool) -> (u64, u64) {
        if scheduled && !self.opened { (self.waiting, 0) } else { (0, self.waiting) }
    }

    /// The measured admission rate per minute, for operators (0 when it is not a finite number).
    #[must_use]
    pub fn admitted_per_minute(&self) -> f64 {
        let rate = self.rate_per_sec * 60.0;
        if rate.is_finite() { rate } else { 0.0 }
    }
}

/// One admission tick's write: admit up to `quota` from the head of the line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionPlan {
    /// The concert.
    pub concert_id: ConcertId,
    /// The snapshot version this plan was computed from; the store refuses the plan if the
    /// concert's admission state has moved on (another node ticked first).
    pub expected_version: u64,
    /// At most this many tokens are admitted.
    pub quota: u32,
    /// The tick's instant. Waiting tokens whose idle deadline is at or before it are skipped
    /// (and expire) rather than admitted.
    pub now: DateTime<Utc>,
    /// When admitted tokens expire.
    pub active_expires_at: DateTime<Utc>,
    /// The admission window after this tick.
    pub window_started_at: DateTime<Utc>,
    /// Admitted in that window before this tick; the store adds what it admits.
    pub admitted_before: u32,
    /// The measured admission rate to store.
    pub rate_per_sec: f64,
    /// The line generation the plan was computed in ([`AdmissionSnapshot::generation`]); a
    /// store with generations refuses the plan if the line began again since.
    #[serde(default)]
    pub generation: u64,
    /// The concert's sale has a scheduled opening: the store admits nobody unless its line was
    /// opened ([`crate::store::QueueStore::open_line`]); otherwise
    /// [`crate::error::StoreError::Conflict`].
    #[serde(default)]
    pub requires_open: bool,
}

/// Plans one admission tick: how many may be admitted now under both caps.
#[must_use]
pub fn plan_admission(
    concert_id: ConcertId,
    settings: &QueueSettings,
    snapshot: &AdmissionSnapshot,
    now: DateTime<Utc>,
) -> AdmissionPlan {
    let (window_started_at, admitted_before, rate_per_sec) = match snapshot.window_started_at {
        Some(start) if now < start + settings.admit_interval() && now >= start => {
            (start, snapshot.admitted_in_window, snapshot.rate_per_sec)
        }
        _ => (now, 0, measured_rate(snapshot, now)),
    };
    let by_rate = settings.admit_batch.saturating_sub(admitted_before);
    let by_capacity = settings.max_active.saturating_sub(snapshot.active);
    AdmissionPlan {
        concert_id,
        expected_version: snapshot.version,
        quota: by_rate.min(by_capacity),
        now,
        active_expires_at: now + settings.active_ttl(),
        window_started_at,
        admitted_before,
        rate_per_sec,
        generation: snapshot.generation,
        requires_open: false,
    }
}

/// One waiting token's new place, given by the draw of a pre-queue at its sale's opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    /// The token.
    pub token: QueueToken,
    /// Its place before the draw (the store moves it only if it is still waiting there).
    pub from: u64,
    /// Its place after.
    pub to: u64,
}

/// What a queue store writes to open a concert's line at its sale's opening
/// ([`crate::store::QueueStore::open_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOpening {
    /// The concert.
    pub concert_id: ConcertId,
    /// The pre-queue's new places ([`draw_pre_queue`]); empty for a first-come pre-queue, and
    /// when the line is opened again in a store that lost it (the draw was made once, before).
    pub moves: Vec<Move>,
    /// The line generation the moves were read in ([`AdmissionSnapshot::generation`]); a store
    /// with generations refuses the opening if the line began again since.
    pub generation: u64,
}

/// The draw of a pre-queue at its sale's opening: `line` is every token waiting then, with its
/// place (in any order). The places stay the same set of numbers; who has which is given by
/// `seed`: the tokens sorted by SHA-256 of the seed (8 bytes, big-endian) followed by the token
/// (its 72 characters), smallest first, take the places in ascending order. Anyone who knows
/// the seed and who was in line can check it; nobody can know it before the opening records it.
/// Answers the tokens whose place changes.
///
/// ```
/// use ticketing_core::ids::{ConcertId, QueueToken};
/// use ticketing_core::queue::draw_pre_queue;
///
/// let concert = ConcertId::random();
/// let line: Vec<(u64, QueueToken)> = (1..=5).map(|seq| (seq, QueueToken::generate(concert))).collect();
/// let moves = draw_pre_queue(7, &line);
/// assert_eq!(moves, draw_pre_queue(7, &line), "the same seed draws the same order");
/// let mut places: Vec<u64> = line.iter().map(|(seq, token)| {
///     moves.iter().find(|m| &m.token == token).map_or(*seq, |m| m.to)
/// }).collect();
/// places.sort_unstable();
/// assert_eq!(places, [1, 2, 3, 4, 5], "the same places, dealt out again");
/// ```
#[must_use]
pub fn draw_pre_queue(seed: u64, line: &[(u64, QueueToken)]) -> Vec<Move> {
    use sha2::{Digest, Sha256};
    let mut places: Vec<u64> = line.iter().map(|(seq, _)| *seq).collect();
    places.sort_unstable();
    let mut drawn: Vec<([u8; 32], &(u64, QueueToken))> = line
        .iter()
        .map(|entry| {
            let mut hash = Sha256::new();
            hash.update(seed.to_be_bytes());
            hash.update(entry.1.as_str().as_bytes());
            (hash.finalize().into(), entry)
        })
        .collect();
    drawn.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.1.as_str().cmp(b.1.1.as_str())));
    drawn
        .into_iter()
        .zip(places)
        .filter(|((_, (from, _)), to)| from != to)
        .map(|((_, (from, token)), to)| Move { token: token.clone(), from: *from, to })
        .collect()
}

/// The admission rate when a window closes: what the closed window admitted over how long it
/// lasted, folded into a moving average. Measuring per window rather than per tick makes the
/// rate independent of how often ticks run. Windows while nobody waits say nothing about how
/// fast the line moves, so they leave the average alone.
fn measured_rate(snapshot: &AdmissionSnapshot, now: DateTime<Utc>) -> f64 {
    let Some(start) = snapshot.window_started_at else { return snapshot.rate_per_sec };
    let elapsed = (now - start).num_milliseconds();
    if snapshot.waiting == 0 || elapsed <= 0 {
        return snapshot.rate_per_sec;
    }
    #[allow(clippy::cast_precision_loss)] // A rate estimate; precision beyond 2^52 is irrelevant.
    let sample = f64::from(snapshot.admitted_in_window) * 1_000.0 / elapsed as f64;
    if snapshot.rate_per_sec <= 0.0 {
        return sample;
    }
    let weight = f64::from(ADMIT_RATE_EWMA_EIGHTHS) / 8.0;
    snapshot.rate_per_sec * (1.0 - weight) + sample * weight
}

/// The estimated wait in seconds for the token at `position`, or `None` when no honest
/// estimate is at most [`ETA_MAX_SECS`].
///
/// The line moves at the measured admission rate (admissions per second over finished windows
/// while people waited: when admission is bound by capacity, that is the rate at which active
/// tokens leave), held between two bounds that follow from the settings alone:
/// - at most the rate cap, `admit_batch` per `admit_interval_ms`;
/// - at least the capacity floor, `max_active` per `active_ttl_secs` (capped by the rate cap):
///   every active token leaves within its active time, so even if nobody pays, a full set of
///   `max_active` places frees up at least once per active time.
///
/// Before anything has been measured, the rate cap is assumed while there is room and the floor
/// once capacity is full. So a line waiting on capacity never sees its estimate collapse, and the
/// estimate is never longer than the floor allows.
#[must_use]
pub fn eta_secs(position: u64, snapshot: &AdmissionSnapshot, settings: &QueueSettings) -> Option<u64> {
    #[allow(clippy::cast_precision_loss)] // Settings are bounded far below 2^52.
    let cap = f64::from(settings.admit_batch) * 1_000.0 / settings.admit_interval_ms.max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let floor = (f64::from(settings.max_active) / settings.active_ttl_secs.max(1) as f64).min(cap);
    let measured = snapshot.rate_per_sec;
    let rate = if measured.is_finite() && measured > 0.0 {
        measured.clamp(floor, cap)
    } else if snapshot.active >= settings.max_active {
        floor
    } else {
        cap
    };
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // A position beyond 2^52 is not a line.
    let secs = (position as f64 / rate).ceil();
    #[allow(clippy::cast_precision_loss)]
    let bound = ETA_MAX_SECS as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0 <= secs <= bound.
    (secs <= bound).then_some(secs.max(0.0) as u64)
}

/// How many seconds a client should wait before polling a waiting token again: about half its
/// ETA (the ceiling when there is no estimate), at least 1 s, and never more than a third of the
/// idle timeout (nor 10 s), so a client that obeys keeps its place.
#[must_use]
pub fn poll_after_secs(eta_secs: Option<u64>, settings: &QueueSettings) -> u64 {
    let ceiling = (settings.waiting_idle_secs / 3).clamp(1, 10);
    eta_secs.map_or(ceiling, |eta| (eta / 2).clamp(1, ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_000_000 + secs, 0).expect("valid")
    }

    #[test]
    fn a_draw_deals_the_same_places_out_by_the_seed() {
        let concert = ConcertId::random();
        let line: Vec<(u64, QueueToken)> =
            (0..20_u64).map(|i| (100 + i * 3, QueueToken::generate(concert))).collect();
        let deal = |seed: u64| -> Vec<u64> {
            let moves = draw_pre_queue(seed, &line);
            assert!(moves.iter().all(|m| m.from != m.to), "only what changes");
            line.iter().map(|(seq, t)| moves.iter().find(|m| &m.token == t).map_or(*seq, |m| m.to)).collect()
        };
        let dealt = deal(42);
        assert_eq!(dealt, deal(42), "reproducible");
        let mut sorted = dealt.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, line.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), "the same places");
        assert_ne!(dealt, deal(43), "another seed, another order (1 in 20! alike)");
        // The place order is the order of SHA-256(seed, token).
        let key = |token: &QueueToken| {
            use sha2::{Digest, Sha256};
            let mut hash = Sha256::new();
            hash.update(42_u64.to_be_bytes());
            hash.update(token.as_str().as_bytes());
            <[u8; 32]>::from(hash.finalize())
        };
        let mut by_place: Vec<(u64, [u8; 32])> =
            dealt.iter().zip(&line).map(|(p, (_, t))| (*p, key(t))).collect();
        by_place.sort_unstable();
        assert!(by_place.windows(2).all(|w| w[0].1 < w[1].1));
        assert!(draw_pre_queue(1, &[]).is_empty());
    }

    fn settings() -> QueueSettings {
        QueueSettings {
            max_active: 3,
            admit_batch: 2,
            admit_interval_ms: 1_000,
            waiting_idle_secs: 60,
            active_ttl_secs: 300,
        }
    }

    fn user() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    fn record(state: TokenState) -> TokenRecord {
        TokenRecord {
            token: QueueToken::generate(ConcertId::random()),
            user_id: user(),
            concert_id: ConcertId::from_uuid(uuid::Uuid::nil()),
            issued_at: t(0),
            version: 1,
            state,
        }
    }

    fn waiting(expires: i64) -> TokenRecord {
        record(TokenState::Waiting { seq: 7, expires_at: t(expires) })
    }

    fn active(expires: i64) -> TokenRecord {
        record(TokenState::Active { admitted_at: t(0), expires_at: t(expires) })
    }

    fn expired() -> TokenRecord {
        record(TokenState::Expired { at: t(0), reason: ExpiryReason::Paid })
    }

    #[test]
    fn asking_without_a_token_issues_one_at_the_back_of_the_line() {
        let decision = issue(
            None,
            &user(),
            ConcertId::random(),
            QueueToken::generate(ConcertId::random()),
            &settings(),
            t(5),
        );
        let IssueDecision::Issue { new, replacing: None } = decision else { panic!("{decision:?}") };
        assert_eq!(new.expires_at, t(65));
    }

    #[test]
    fn asking_again_while_waiting_returns_the_same_token_with_a_later_deadline() {
        let existing = waiting(60);
        let decision = issue(
            Some(existing.clone()),
            &user(),
            existing.concert_id,
            QueueToken::generate(ConcertId::random()),
            &settings(),
            t(30),
        );
        let IssueDecision::Refresh { previous, updated } = decision else { panic!("{decision:?}") };
        assert_eq!(previous, existing);
        assert_eq!(updated.token, existing.token);
        assert_eq!(updated.seq(), Some(7), "the place in line is kept");
        assert_eq!(updated.expires_at(), t(90));
        assert_eq!(updated.version, existing.version + 1);
    }

    #[test]
    fn asking_again_while_active_keeps_the_token_and_its_deadline() {
        let existing = active(300);
        let decision = issue(
            Some(existing.clone()),
            &user(),
            existing.concert_id,
            QueueToken::generate(ConcertId::random()),
            &settings(),
            t(30),
        );
        assert_eq!(decision, IssueDecision::Keep(existing));
    }

    #[test]
    fn asking_after_expiry_issues_a_new_token_replacing_the_old() {
        for old in [waiting(60), active(300), expired()] {
            let now = t(301);
            let fresh = QueueToken::generate(ConcertId::random());
            let decision = issue(Some(old.clone()), &user(), old.concert_id, fresh.clone(), &settings(), now);
            let IssueDecision::Issue { new, replacing: Some(replaced) } = decision else {
                panic!("{decision:?}")
            };
            assert_eq!(new.token, fresh);
            assert_eq!(replaced, old);
        }
    }

    #[test]
    fn status_follows_deadlines_without_any_sweeper() {
        assert_eq!(waiting(60).status_at(t(59)), TokenStatus::Waiting);
        assert_eq!(waiting(60).status_at(t(60)), TokenStatus::Expired);
        assert_eq!(active(300).status_at(t(299)), TokenStatus::Active);
        assert_eq!(active(300).status_at(t(300)), TokenStatus::Expired);
        assert_eq!(expired().status_at(t(0)), TokenStatus::Expired);
    }

    #[test]
    fn polling_extends_only_waiting_tokens() {
        assert_eq!(refresh(&waiting(60), &settings(), t(10)).map(|r| r.expires_at()), Some(t(70)));
        assert_eq!(refresh(&waiting(60), &settings(), t(60)), None);
        assert_eq!(refresh(&active(300), &settings(), t(10)), None);
        assert_eq!(refresh(&expired(), &settings(), t(10)), None);
    }

    #[test]
    fn a_poll_that_lost_to_another_poll_is_done() {
        let read = waiting(60);
        let polled = refresh(&read, &settings(), t(10)).expect("waiting");
        assert!(refreshed_concurrently(&read, &polled, t(10)));
        assert!(!refreshed_concurrently(&read, &read, t(10)), "nothing newer was written");
        assert!(!refreshed_concurrently(&read, &polled, t(70)), "the newer record has gone idle");
        let admitted = TokenRecord {
            version: read.version + 1,
            state: TokenState::Active { admitted_at: t(10), expires_at: t(310) },
            ..read.clone()
        };
        assert!(!refreshed_concurrently(&read, &admitted, t(10)), "admission is decided again, not accepted");
    }

    #[test]
    fn paying_expires_an_active_token_and_nothing_else() {
        let paid = expire_on_payment(&active(300), t(10)).expect("active");
        assert_eq!(paid.status_at(t(10)), TokenStatus::Expired);
        assert_eq!(paid.state, TokenState::Expired { at: t(10), reason: ExpiryReason::Paid });
        assert_eq!(expire_on_payment(&waiting(60), t(10)), Err(DomainError::TokenExpired));
        assert_eq!(expire_on_payment(&active(300), t(300)), Err(DomainError::TokenExpired));
        assert_eq!(expire_on_payment(&expired(), t(10)), Err(DomainError::TokenExpired));
    }

    #[test]
    fn only_active_tokens_of_the_right_concert_may_act() {
        let token = active(300);
        assert_eq!(require_active(&token, Some(token.concert_id), t(1), || 0), Ok(()));
        assert_eq!(require_active(&token, None, t(1), || 0), Ok(()));
        assert_eq!(
            require_active(&token, Some(ConcertId::random()), t(1), || 0),
            Err(DomainError::WrongConcert)
        );
        assert_eq!(
            require_active(&waiting(60), None, t(1), || 4),
            Err(DomainError::NotAdmitted { position: 4 })
        );
        assert_eq!(require_active(&token, None, t(300), || 0), Err(DomainError::TokenExpired));
        assert_eq!(require_valid(&waiting(60), t(1)), Ok(()));
        assert_eq!(require_valid(&expired(), t(1)), Err(DomainError::TokenExpired));
    }

    #[test]
    fn admission_is_capped_by_rate_and_by_capacity() {
        let s = settings();
        let empty = AdmissionSnapshot::default();
        assert_eq!(plan_admission(ConcertId::random(), &s, &empty, t(0)).quota, 2, "rate cap");
        let nearly_full = AdmissionSnapshot { active: 2, ..AdmissionSnapshot::default() };
        assert_eq!(plan_admission(ConcertId::random(), &s, &nearly_full, t(0)).quota, 1, "capacity cap");
        let full = AdmissionSnapshot { active: 3, ..AdmissionSnapshot::default() };
        assert_eq!(plan_admission(ConcertId::random(), &s, &full, t(0)).quota, 0);
    }

    #[test]
    fn the_rate_cap_counts_the_whole_window() {
        let s = settings();
        let mid_window = AdmissionSnapshot {
            version: 4,
            window_started_at: Some(t(10)),
            admitted_in_window: 2,
            ..AdmissionSnapshot::default()
        };
        let plan = plan_admission(ConcertId::random(), &s, &mid_window, t(10) + Duration::milliseconds(999));
        assert_eq!((plan.quota, plan.admitted_before, plan.expected_version), (0, 2, 4));
        let next = plan_admission(ConcertId::random(), &s, &mid_window, t(11));
        assert_eq!((next.quota, next.admitted_before, next.window_started_at), (2, 0, t(11)));
        assert_eq!(next.active_expires_at, t(311));
    }

    #[test]
    fn a_clock_that_went_backwards_opens_a_new_window() {
        let s = settings();
        let future = AdmissionSnapshot {
            window_started_at: Some(t(100)),
            admitted_in_window: 2,
            ..AdmissionSnapshot::default()
        };
        let plan = plan_admission(ConcertId::random(), &s, &future, t(50));
        assert_eq!((plan.quota, plan.window_started_at), (2, t(50)));
    }

    #[test]
    fn the_admission_rate_is_measured_per_window_while_people_wait() {
        let s = settings();
        let closed = AdmissionSnapshot {
            waiting: 10,
            window_started_at: Some(t(0)),
            admitted_in_window: 4,
            ..AdmissionSnapshot::default()
        };
        let first = plan_admission(ConcertId::random(), &s, &closed, t(2));
        assert!((first.rate_per_sec - 2.0).abs() < 1e-9, "{}", first.rate_per_sec);
        let open = AdmissionSnapshot { rate_per_sec: 5.0, ..closed.clone() };
        let within = plan_admission(ConcertId::random(), &s, &open, t(0) + Duration::milliseconds(500));
        assert!((within.rate_per_sec - 5.0).abs() < 1e-9, "unchanged inside a window");
        let nobody_waiting = AdmissionSnapshot { waiting: 0, rate_per_sec: 5.0, ..closed.clone() };
        assert!(
            (plan_admission(ConcertId::random(), &s, &nobody_waiting, t(2)).rate_per_sec - 5.0).abs() < 1e-9
        );
        let stalled = AdmissionSnapshot { admitted_in_window: 0, rate_per_sec: 2.0, ..closed };
        assert!(plan_admission(ConcertId::random(), &s, &stalled, t(2)).rate_per_sec < 2.0);
    }

    #[test]
    fn polls_are_spaced_well_within_the_idle_timeout() {
        let s = settings();
        assert_eq!(poll_after_secs(Some(0), &s), 1);
        assert_eq!(poll_after_secs(Some(8), &s), 4);
        assert_eq!(poll_after_secs(Some(10_000), &s), 10);
        assert_eq!(poll_after_secs(None, &s), 10, "no estimate: the longest safe pause");
        let short = QueueSettings { waiting_idle_secs: 6, ..s };
        assert_eq!(poll_after_secs(Some(10_000), &short), 2);
        let tiny = QueueSettings { waiting_idle_secs: 1, ..s };
        assert_eq!(poll_after_secs(Some(10_000), &tiny), 1);
    }

    fn measured(rate_per_sec: f64) -> AdmissionSnapshot {
        AdmissionSnapshot { rate_per_sec, waiting: 10, ..AdmissionSnapshot::default() }
    }

    #[test]
    fn eta_uses_the_measured_rate_within_the_caps() {
        let s = settings(); // 2 per second by rate; 3 active per 300 s = 0.01 per second floor.
        assert_eq!(eta_secs(10, &measured(0.0), &s), Some(5), "nothing measured, room: the rate cap");
        assert_eq!(eta_secs(10, &measured(1.0), &s), Some(10));
        assert_eq!(eta_secs(1, &measured(3.0), &s), Some(1), "never faster than the rate cap");
        assert_eq!(eta_secs(10, &measured(50.0), &s), Some(5));
    }

    #[test]
    fn eta_stays_bounded_while_admission_waits_on_capacity() {
        let s = settings();
        let floor_eta = |position: u64| position.div_ceil(3) * 300; // 3 places per 300 s.
        // Capacity full and nothing measured yet: the floor, not the rate cap.
        let full = AdmissionSnapshot { active: 3, ..measured(0.0) };
        assert_eq!(eta_secs(10, &full, &s), Some(1_000));
        // The measured rate decays by a quarter per window without admissions; the estimate
        // stops at the floor instead of running off to u64::MAX (as it did).
        let mut rate = 2.0;
        for _ in 0..10_000 {
            rate *= 0.75;
            let eta = eta_secs(10, &AdmissionSnapshot { active: 3, ..measured(rate) }, &s);
            assert!(eta.is_some_and(|eta| eta <= floor_eta(10) + 1), "{eta:?} at rate {rate}");
        }
        assert_eq!(eta_secs(10, &AdmissionSnapshot { active: 3, ..measured(f64::NAN) }, &s), Some(1_000));
        // Exits measured at one every 10 s give 100 s for ten places.
        assert_eq!(eta_secs(10, &AdmissionSnapshot { active: 3, ..measured(0.1) }, &s), Some(100));
    }

    #[test]
    fn an_eta_past_the_bound_is_unknown() {
        let s = settings();
        let full = AdmissionSnapshot { active: 3, ..measured(0.0) };
        assert_eq!(eta_secs(864, &full, &s), Some(86_400));
        assert_eq!(eta_secs(865, &full, &s), None, "past ETA_MAX_SECS");
        for position in [1, 1_000, 1_000_000, u64::MAX] {
            for rate in [0.0, 1e-300, 0.5, 2.0, 1e300, f64::INFINITY] {
                for active in [0, 3] {
                    let snapshot = AdmissionSnapshot { active, ..measured(rate) };
                    assert!(eta_secs(position, &snapshot, &s).is_none_or(|eta| eta <= ETA_MAX_SECS));
                }
            }
        }
    }

    #[test]
    fn a_token_whose_admission_ended_keeps_its_account_for_the_grace() {
        let grace = Duration::seconds(300);
        let timed_out = active(100);
        assert_eq!(timed_out.admission_ended_at(t(50)), None);
        assert_eq!(timed_out.admission_ended_at(t(100)), Some(t(100)));
        assert_eq!(require_account_access(&timed_out, grace, t(399)), Ok(()));
        assert_eq!(require_account_access(&timed_out, grace, t(400)), Err(DomainError::TokenExpired));
        let swept = record(TokenState::Expired { at: t(100), reason: ExpiryReason::TimedOut });
        assert_eq!(require_account_access(&swept, grace, t(399)), Ok(()));
        let paid = expired(); // Paid at t(0).
        assert_eq!(require_account_access(&paid, grace, t(299)), Ok(()));
        assert_eq!(require_account_access(&paid, grace, t(300)), Err(DomainError::TokenExpired));
        let idle = record(TokenState::Expired { at: t(0), reason: ExpiryReason::Idle });
        assert_eq!(idle.admission_ended_at(t(1)), None, "never admitted");
        assert_eq!(require_account_access(&idle, grace, t(1)), Err(DomainError::TokenExpired));
        assert_eq!(require_account_access(&waiting(60), grace, t(1)), Ok(()));
        assert_eq!(require_account_access(&waiting(60), grace, t(61)), Err(DomainError::TokenExpired));
    }
}
