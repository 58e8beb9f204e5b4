//! The in-memory backend: complete, correct under real parallelism, and the embedded default.
//!
//! # How it is locked
//!
//! Nothing is ever locked across an `.await` (no method awaits at all). State is sharded so that
//! buyers of different seats rarely meet on a lock:
//!
//! - seats live in [`SHARDS`] shards by seat id;
//! - users' wallets, ledgers, idempotency keys and reservations live in [`SHARDS`] shards by
//!   user id;
//! - each concert's line has its own lock;
//! - small insert-only indexes (token -> concert, reservation -> owner) are sharded too.
//!
//! A step that needs a user and a seat locks the user's shard first, then the seat's shard, and
//! never holds two user shards at once. Only a payment of several seats holds several seat shards,
//! taken together in ascending shard order (`Sharded::lock_all`) while no other step holds
//! more than one, so there is no deadlock. Index shards are leaves: taken last and alone.

mod booking;
mod fenwick;
mod queue;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::catalog::{Concert, Schedule, SeatRecord};
use crate::ids::{ConcertId, ScheduleId, SeatId};

use self::booking::UserShard;
use self::queue::ConcertQueue;

/// How many shards each sharded map has.
pub const SHARDS: usize = 64;

/// The in-memory store. Implements every storage trait. Clones share the same data.
///
/// ```
/// use ticketing_core::store::memory::MemoryStore;
/// use ticketing_core::{ManualClock, Ticketing, Config};
/// let store = MemoryStore::new();
/// let service = Ticketing::new(store.clone(), store, ManualClock::at_epoch_secs(0), Config::default());
/// # let _ = service;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    catalog: RwLock<Catalog>,
    seats: Sharded<HashMap<SeatId, SeatRecord>>,
    users: Sharded<UserShard>,
    queues: RwLock<HashMap<ConcertId, Arc<Mutex<ConcertQueue>>>>,
    owners: Sharded<HashMap<crate::ids::ReservationId, crate::ids::UserId>>,
    /// The admission log: each concert's admitted tokens with the line generation they were
    /// admitted in (a leaf lock, taken alone).
    admissions: Mutex<HashMap<ConcertId, AdmissionsOfConcert>>,
    /// Revoked tokens and when (a leaf lock, taken alone).
    revoked: Mutex<HashMap<crate::ids::QueueToken, chrono::DateTime<chrono::Utc>>>,
    /// Tokens whose holders left the line, and when (a leaf lock, taken alone).
    left: Mutex<HashMap<crate::ids::QueueToken, chrono::DateTime<chrono::Utc>>>,
}

/// One concert's logged admissions: each token with the generation it was admitted in.
type AdmissionsOfConcert = HashMap<crate::ids::QueueToken, (u64, crate::queue::TokenRecord)>;

#[derive(Debug, Default)]
struct Catalog {
    concerts: Vec<Concert>,
    concert_index: HashMap<ConcertId, usize>,
    schedules: HashMap<ScheduleId, Schedule>,
    schedules_of: HashMap<ConcertId, Vec<ScheduleId>>,
    seats_of: HashMap<ScheduleId, Vec<SeatId>>,
    sale_actions: HashMap<ConcertId, Vec<crate::catalog::SaleAction>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

/// A fixed number of independently locked parts, chosen by hash.
#[derive(Debug)]
struct Sharded<T> {
    shards: Vec<Mutex<T>>,
    hasher: RandomState,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }
}

impl<T> Sharded<T> {
    /// Locks the shard `key` lives in.
    fn lock<K: Hash + ?Sized>(&self, key: &K) -> MutexGuard<'_, T> {
        lock(&self.shards[self.index(key)])
    }

    /// The shards the `keys` live in, locked together in ascending shard order (each once), so
    /// two callers locking overlapping sets cannot deadlock; callers that lock one shard of this
    /// map never wait for another of it.
    fn lock_all<'k, K: Hash + ?Sized + 'k>(&self, keys: impl Iterator<Item = &'k K>) -> Locked<'_, T> {
        let mut indexes: Vec<usize> = keys.map(|key| self.index(key)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        Locked { guards: indexes.into_iter().map(|i| lock(&self.shards[i])).collect() }
    }

    fn index<K: Hash + ?Sized>(&self, key: &K) -> usize {
        usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0)
    }

    /// Every shard, one at a time.
    fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(lock)
    }
}

/// Several shards of one map, locked together ([`Sharded::lock_all`]).
struct Locked<'a, T> {
    guards: Vec<MutexGuard<'a, T>>,
}

impl<K: Eq + Hash, V> Locked<'_, HashMap<K, V>> {
    /// The entry of `key`, from whichever locked shard holds it.
    fn get(&self, key: &K) -> Option<&V> {
        self.guards.iter().find_map(|shard| shard.get(key))
    }

    /// The entry of `key`, to change.
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.guards.iter_mut().find_map(|shard| shard.get_mut(key))
    }
}

/// Locks a mutex. A poisoned lock means a panic happened while it was held; every critical
/// section here checks before it writes and writes without panicking, so the data is still
/// consistent and the lock is taken anyway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
