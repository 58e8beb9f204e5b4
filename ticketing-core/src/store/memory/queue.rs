//! The memory backend's queue: one lock per concert; every operation is O(log n) in the length
//! of the line, or proportional to what it takes off the line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::fenwick::Fenwick;
use super::{MemoryStore, lock, read, write};
use crate::error::StoreError;
use crate::ids::{ConcertId, QueueToken, UserId};
use crate::queue::{
    self, AdmissionPlan, AdmissionSnapshot, ExpiryReason, InLine, IssueDecision, Joined, LineOpening,
    NewToken, Polled, TokenRecord, TokenState, TokenStatus,
};
use crate::store::{QueueStore, StoreResult};

/// One concert's tokens and line.
#[derive(Debug, Default)]
pub(super) struct ConcertQueue {
    tokens: HashMap<QueueToken, TokenRecord>,
    by_user: HashMap<UserId, QueueToken>,
    last_seq: u64,
    /// Waiting tokens by sequence number: the line, head first.
    line: BTreeMap<u64, QueueToken>,
    /// Which sequence numbers are in the line, for O(log n) positions.
    ranks: Fenwick,
    /// Waiting tokens by idle deadline, for sweeping.
    idle: BTreeSet<(DateTime<Utc>, u64)>,
    /// Active tokens by expiry.
    active: BTreeSet<(DateTime<Utc>, QueueToken)>,
    /// Expired tokens by expiry, for forgetting them after the retention time.
    expired: BTreeSet<(DateTime<Utc>, QueueToken)>,
    admission: AdmissionSnapshot,
}

impl ConcertQueue {
    fn unindex(&mut self, record: &TokenRecord) {
        match &record.state {
            TokenState::Waiting { seq, expires_at } => {
                self.line.remove(seq);
                self.ranks.add(*seq, -1);
                self.idle.remove(&(*expires_at, *seq));
            }
            TokenState::Active { expires_at, .. } => {
                self.active.remove(&(*expires_at, record.token.clone()));
            }
            TokenState::Expired { at, .. } => {
                self.expired.remove(&(*at, record.token.clone()));
            }
        }
    }

    fn index(&mut self, record: &TokenRecord) {
        match &record.state {
            TokenState::Waiting { seq, expires_at } => {
                self.line.insert(*seq, record.token.clone());
                self.ranks.add(*seq, 1);
                self.idle.insert((*expires_at, *seq));
            }
            TokenState::Active { expires_at, .. } => {
                self.active.insert((*expires_at, record.token.clone()));
            }
            TokenState::Expired { at, .. } => {
                self.expired.insert((*at, record.token.clone()));
            }
        }
    }

    /// Replaces a record, keeping every index in step.
    fn put(&mut self, record: TokenRecord) {
        if let Some(old) = self.tokens.get(&record.token).cloned() {
            self.unindex(&old);
        }
        self.index(&record);
        self.tokens.insert(record.token.clone(), record);
    }

    /// Moves a token to EXPIRED.
    fn expire(&mut self, token: &QueueToken, at: DateTime<Utc>, reason: ExpiryReason) {
        if let Some(record) = self.tokens.get(token).cloned() {
            self.put(TokenRecord {
                version: record.version + 1,
                state: TokenState::Expired { at, reason },
                ..record
            });
        }
    }

    /// The admission state at `now`. Tidying expired actives here is what lazy expiry allows:
    /// they are expired at `now` whether or not this runs, and counting what is left is O(1).
    fn snapshot(&mut self, now: DateTime<Utc>) -> AdmissionSnapshot {
        self.expire_timed_out(now, usize::MAX);
        AdmissionSnapshot {
            active: u32::try_from(self.active.len()).unwrap_or(u32::MAX),
            waiting: self.line.len() as u64,
            ..self.admission.clone()
        }
    }

    /// Where `record` stands at `now`: its place and the admission state, while it waits.
    fn line_of(&mut self, record: &TokenRecord, now: DateTime<Utc>) -> Option<InLine> {
        match (record.status_at(now), record.seq()) {
            (TokenStatus::Waiting, Some(seq)) => {
                Some(InLine { position: self.ranks.prefix(seq), snapshot: self.snapshot(now) })
            }
            _ => None,
        }
    }

    /// Expires active tokens whose time ran out at or before `now`; returns how many.
    fn expire_timed_out(&mut self, now: DateTime<Utc>, limit: usize) -> usize {
        // Every token sorts at or below the all-`f` token, so this is "deadline at or before now".
        let due: Vec<(DateTime<Utc>, QueueToken)> =
            self.active.range(..=(now, max_token())).take(limit).cloned().collect();
        let count = due.len();
        for (at, token) in due {
            self.expire(&token, at, ExpiryReason::TimedOut);
        }
        count
    }

    /// Takes waiting tokens whose idle deadline is at or before `now` out of the line.
    fn expire_idle(&mut self, now: DateTime<Utc>, limit: usize) -> usize {
        let due: Vec<(DateTime<Utc>, u64)> =
            self.idle.range(..=(now, u64::MAX)).take(limit).copied().collect();
        for (at, seq) in &due {
            if let Some(token) = self.line.get(seq).cloned() {
                self.expire(&token, *at, ExpiryReason::Idle);
            }
        }
        due.len()
    }

    /// Forgets up to `limit` tokens that expired before `before`; returns how many.
    fn forget(&mut self, before: DateTime<Utc>, limit: usize) -> usize {
        let due: Vec<(DateTime<Utc>, QueueToken)> =
            self.expired.range(..(before, min_token())).take(limit).cloned().collect();
        for (at, token) in &due {
            self.expired.remove(&(*at, token.clone()));
            if let Some(record) = self.tokens.remove(token) {
                if self.by_user.get(&record.user_id) == Some(token) {
                    self.by_user.remove(&record.user_id);
                }
            }
        }
        due.len()
    }
}

/// The smallest and largest tokens, as range bounds.
fn min_token() -> QueueToken {
    QueueToken::parse(&"0".repeat(72)).expect("72 hex digits form a token")
}

fn max_token() -> QueueToken {
    QueueToken::parse(&"f".repeat(72)).expect("72 hex digits form a token")
}

impl MemoryStore {
    fn queue_of(&self, concert: ConcertId) -> Option<Arc<Mutex<ConcertQueue>>> {
        read(&self.inner.queues).get(&concert).cloned()
    }

    fn queue_or_new(&self, concert: ConcertId) -> Arc<Mutex<ConcertQueue>> {
        if let Some(queue) = self.queue_of(concert) {
            return queue;
        }
        Arc::clone(write(&self.inner.queues).entry(concert).or_default())
    }
}

impl MemoryStore {
    /// Puts `new` at the back of `queue`'s line (its lock held), replacing `replacing`.
    fn insert_locked(
        &self,
        queue: &mut ConcertQueue,
        new: NewToken,
        replacing: Option<&TokenRecord>,
    ) -> TokenRecord {
        if let Some(old) = replacing {
            queue.unindex(old);
            queue.tokens.remove(&old.token);
        }
        queue.last_seq += 1;
        let record = new.waiting(queue.last_seq);
        queue.by_user.insert(record.user_id.clone(), record.token.clone());
        queue.put(record.clone());
        record
    }
}

impl QueueStore for MemoryStore {
    async fn token(&self, token: &QueueToken) -> StoreResult<Option<TokenRecord>> {
        // The token names its concert; a token with another concert's prefix is not in that
        // concert's line.
        let Some(queue) = self.queue_of(token.concert()) else { return Ok(None) };
        Ok(lock(&queue).tokens.get(token).cloned())
    }

    async fn token_of_user(&self, concert: ConcertId, user: &UserId) -> StoreResult<Option<TokenRecord>> {
        let Some(queue) = self.queue_of(concert) else { return Ok(None) };
        let queue = lock(&queue);
        Ok(queue.by_user.get(user).and_then(|token| queue.tokens.get(token)).cloned())
    }

    async fn insert_token(&self, new: NewToken, replacing: Option<&TokenRecord>) -> StoreResult<TokenRecord> {
        let queue = self.queue_or_new(new.concert_id);
        let mut queue = lock(&queue);
        let current = queue.by_user.get(&new.user_id).and_then(|t| queue.tokens.get(t)).cloned();
        match (&current, replacing) {
            (None, None) => {}
            (Some(current), Some(expected))
                if current.token == expected.token && current.version == expected.version => {}
            _ => return Err(StoreError::Conflict("queue token of user")),
        }
        Ok(self.insert_locked(&mut queue, new, current.as_ref()))
    }

    async fn update_token(&self, expected_version: u64, updated: &TokenRecord) -> StoreResult<()> {
        let queue = self.queue_of(updated.concert_id).ok_or(StoreError::Missing("queue token"))?;
        let mut queue = lock(&queue);
        let current = queue.tokens.get(&updated.token).ok_or(StoreError::Missing("queue token"))?;
        if current.version != expected_version {
            return Err(StoreError::Conflict("queue token"));
        }
        queue.put(updated.clone());
        Ok(())
    }

    async fn position(&self, record: &TokenRecord) -> StoreResult<u64> {
        let Some(seq) = record.seq() else { return Ok(0) };
        let Some(queue) = self.queue_of(record.concert_id) else { return Ok(0) };
        Ok(lock(&queue).ranks.prefix(seq))
    }

    async fn admission_snapshot(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<AdmissionSnapshot> {
        let Some(queue) = self.queue_of(concert) else { return Ok(AdmissionSnapshot::default()) };
        Ok(lock(&queue).snapshot(now))
    }

    async fn poll(
        &self,
        token: &QueueToken,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<Option<Polled>> {
        // The token names its concert; a token with another concert's prefix is not in that
        // concert's line.
        let Some(queue) = self.queue_of(token.concert()) else { return Ok(None) };
        let mut queue = lock(&queue);
        let Some(read) = queue.tokens.get(token).cloned() else { return Ok(None) };
        let record = match queue::refresh_to(&read, deadline, now) {
            Some(updated) => {
                queue.put(updated.clone());
                updated
            }
            None => read,
        };
        let line = queue.line_of(&record, now);
        Ok(Some(Polled { record, line }))
    }

    async fn join(&self, new: NewToken, now: DateTime<Utc>) -> StoreResult<Joined> {
        let queue = self.queue_or_new(new.concert_id);
        let mut queue = lock(&queue);
        let existing = queue.by_user.get(&new.user_id).and_then(|t| queue.tokens.get(t)).cloned();
        let (record, created) = match queue::join_decision(existing, new, now) {
            IssueDecision::Keep(record) => (record, false),
            IssueDecision::Refresh { updated, .. } => {
                queue.put(updated.clone());
                (updated, false)
            }
            IssueDecision::Issue { new, replacing } => {
                (self.insert_locked(&mut queue, new, replacing.as_ref()), true)
            }
        };
        let line = queue.line_of(&record, now);
        Ok(Joined { polled: Polled { record, line }, created })
    }

    async fn admit(&self, plan: &AdmissionPlan) -> StoreResult<Vec<TokenRecord>> {
        let queue = self.queue_or_new(plan.concert_id);
        let mut queue = lock(&queue);
        if queue.admission.version != plan.expected_version {
            return Err(StoreError::Conflict("admission state"));
        }
        if plan.requires_open && !queue.admission.opened {
            return Err(StoreError::Conflict("line not open"));
        }
        let mut admitted = Vec::new();
        while admitted.len() < plan.quota as usize {
            let Some((&seq, token)) = queue.line.first_key_value() else { break };
            let token = token.clone();
            let Some(record) = queue.tokens.get(&token).cloned() else {
                queue.line.remove(&seq);
                continue;
            };
            if record.expires_at() <= plan.now {
                queue.expire(&token, record.expires_at(), ExpiryReason::Idle);
                continue;
            }
            let active = TokenRecord {
                version: record.version + 1,
                state: TokenState::Active { admitted_at: plan.now, expires_at: plan.active_expires_at },
                ..record
            };
            queue.put(active.clone());
            admitted.push(active);
        }
        let count = u32::try_from(admitted.len()).unwrap_or(u32::MAX);
        queue.admission = AdmissionSnapshot {
            version: plan.expected_version + 1,
            active: 0,
            waiting: 0,
            window_started_at: Some(plan.window_started_at),
            admitted_in_window: plan.admitted_before.saturating_add(count),
            rate_per_sec: plan.rate_per_sec,
            generation: 0,
            opened: queue.admission.opened,
        };
        Ok(admitted)
    }

    async fn waiting_line(&self, concert: ConcertId, limit: usize) -> StoreResult<Vec<(u64, QueueToken)>> {
        let Some(queue) = self.queue_of(concert) else { return Ok(Vec::new()) };
        Ok(lock(&queue).line.iter().take(limit).map(|(seq, token)| (*seq, token.clone())).collect())
    }

    async fn open_line(&self, opening: &LineOpening) -> StoreResult<bool> {
        let queue = self.queue_or_new(opening.concert_id);
        let mut queue = lock(&queue);
        if queue.admission.opened {
            return Ok(false);
        }
        // Out of the indexes first, then back at the new places: a place may pass from one moved
        // token to another.
        let mut moved = Vec::with_capacity(opening.moves.len());
        for one in &opening.moves {
            let Some(record) = queue.tokens.get(&one.token).cloned() else { continue };
            let TokenState::Waiting { seq, expires_at } = record.state else { continue };
            if seq != one.from {
                continue;
            }
            queue.unindex(&record);
            moved.push(TokenRecord {
                version: record.version + 1,
                state: TokenState::Waiting { seq: one.to, expires_at },
                ..record
            });
        }
        for record in moved {
            queue.index(&record);
            queue.tokens.insert(record.token.clone(), record);
        }
        queue.admission.opened = true;
        queue.admission.version += 1;
        Ok(true)
    }

    async fn sweep_queue(
        &self,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<usize> {
        let queues: Vec<Arc<Mutex<ConcertQueue>>> = read(&self.inner.queues).values().cloned().collect();
        let mut touched = 0;
        for queue in queues {
            let mut queue = lock(&queue);
            touched += queue.expire_idle(now, limit.saturating_sub(touched));
            touched += queue.expire_timed_out(now, limit.saturating_sub(touched));
            touched += queue.forget(forget_before, limit.saturating_sub(touched));
        }
        Ok(touched)
    }

    async fn ping_queue(&self) -> StoreResult<()> {
        Ok(())
    }
}
