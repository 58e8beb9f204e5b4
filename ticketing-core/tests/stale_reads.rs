//! The service across reads that go stale between two store calls: a token admitted by another
//! node's tick after the service read it, but before it asked for the token's place in line.
//! Found by the load test against PostgreSQL + Redis: the answer was `WAITING` at place 0.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
use ticketing_core::ids::{ConcertId, Points, QueueToken, UserId};
use ticketing_core::queue::{
    AdmissionPlan, AdmissionSnapshot, LineOpening, NewToken, TokenRecord, TokenState, TokenStatus,
};
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::{QueueStore, StoreResult};
use ticketing_core::{Clock, Config, ManualClock, Ticketing};

/// A queue store where, once armed, the next `position` call is preceded by another node
/// admitting the token being asked about.
struct AdmittedMeanwhile {
    inner: MemoryStore,
    armed: AtomicBool,
    clock: ManualClock,
    /// A concert whose admission snapshot fails (its line's store refused).
    failing: std::sync::Mutex<Option<ConcertId>>,
}

impl QueueStore for AdmittedMeanwhile {
    async fn token(&self, token: &QueueToken) -> StoreResult<Option<TokenRecord>> {
        self.inner.token(token).await
    }

    async fn token_of_user(&self, concert: ConcertId, user: &UserId) -> StoreResult<Option<TokenRecord>> {
        self.inner.token_of_user(concert, user).await
    }

    async fn insert_token(&self, new: NewToken, replacing: Option<&TokenRecord>) -> StoreResult<TokenRecord> {
        self.inner.insert_token(new, replacing).await
    }

    async fn update_token(&self, expected_version: u64, updated: &TokenRecord) -> StoreResult<()> {
        self.inner.update_token(expected_version, updated).await
    }

    async fn position(&self, record: &TokenRecord) -> StoreResult<u64> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let now = self.clock.now();
            let current = self.inner.token(&record.token).await?.expect("the token exists");
            let admitted = TokenRecord {
                version: current.version + 1,
                state: TokenState::Active { admitted_at: now, expires_at: now + Duration::minutes(10) },
                ..current.clone()
            };
            self.inner.update_token(current.version, &admitted).await?;
        }
        self.inner.position(record).await
    }

    async fn admission_snapshot(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<AdmissionSnapshot> {
        if *self.failing.lock().unwrap() == Some(concert) {
            return Err(ticketing_core::StoreError::Backend { message: "injected".into(), source: None });
        }
        self.inner.admission_snapshot(concert, now).await
    }

    async fn admit(&self, plan: &AdmissionPlan) -> StoreResult<Vec<TokenRecord>> {
        self.inner.admit(plan).await
    }

    async fn waiting_line(&self, concert: ConcertId, limit: usize) -> StoreResult<Vec<(u64, QueueToken)>> {
        self.inner.waiting_line(concert, limit).await
    }

    async fn open_line(&self, opening: &LineOpening) -> StoreResult<bool> {
        self.inner.open_line(opening).await
    }

    async fn sweep_queue(
        &self,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<usize> {
        self.inner.sweep_queue(now, forget_before, limit).await
    }

    async fn ping_queue(&self) -> StoreResult<()> {
        self.inner.ping_queue().await
    }
}

fn service(clock: &ManualClock) -> Ticketing<AdmittedMeanwhile, MemoryStore, ManualClock> {
    let queue = AdmittedMeanwhile {
        inner: MemoryStore::new(),
        armed: AtomicBool::new(false),
        clock: clock.clone(),
        failing: std::sync::Mutex::new(None),
    };
    Ticketing::new(queue, MemoryStore::new(), clock.clone(), Config::default())
}

fn open_concert(title: &str) -> NewConcert {
    NewConcert {
        title: title.into(),
        schedules: vec![NewSchedule {
            starts_at: DateTime::from_timestamp(1_950_000_000, 0).unwrap(),
            seat_count: 1,
            price: Points::new(10).unwrap(),
        }],
        queue: QueueSettings {
            max_active: 10,
            admit_batch: 10,
            admit_interval_ms: 1_000,
            waiting_idle_secs: 60,
            active_ttl_secs: 600,
        },
        max_seats_per_buyer: None,
        holds_per_token: None,
        cancel_until_secs_before_start: None,
        sales_open_at: None,
        pre_queue: Default::default(),
    }
}

/// One concert whose line's store refuses does not keep the others' lines waiting: the round
/// admits the others and tries that one again next time.
#[tokio::test]
async fn a_concert_whose_tick_fails_does_not_hold_up_the_others() {
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let service = service(&clock);
    let broken = service.create_concert(&open_concert("Broken")).await.unwrap().concert.id;
    let fine = service.create_concert(&open_concert("Fine")).await.unwrap().concert.id;
    let user = UserId::parse("alice").unwrap();
    let waiting = service.issue_token(&user, broken).await.unwrap().record.token;
    let admitted = service.issue_token(&user, fine).await.unwrap().record.token;
    *service.queue_store().failing.lock().unwrap() = Some(broken);
    assert_eq!(service.admission_tick_all().await.unwrap(), 1, "the other concert's line moved");
    assert_eq!(service.token_status(&admitted).await.unwrap().status, TokenStatus::Active);
    *service.queue_store().failing.lock().unwrap() = None;
    assert_eq!(service.admission_tick_all().await.unwrap(), 1, "and the failed one next round");
    assert_eq!(service.token_status(&waiting).await.unwrap().status, TokenStatus::Active);
}

#[tokio::test]
async fn a_token_admitted_between_two_reads_is_answered_active_never_waiting_at_place_zero() {
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let service = service(&clock);
    let concert = service.create_concert(&open_concert("Stale reads")).await.unwrap();
    let user = UserId::parse("alice").unwrap();
    let issued = service.issue_token(&user, concert.concert.id).await.unwrap();
    assert_eq!((issued.status, issued.position), (TokenStatus::Waiting, Some(1)));

    service.queue_store().armed.store(true, Ordering::SeqCst);
    let polled = service.token_status(&issued.record.token).await.unwrap();
    assert!(!service.queue_store().armed.load(Ordering::SeqCst), "the race was staged");
    assert_eq!(
        (polled.status, polled.position, polled.eta_secs),
        (TokenStatus::Active, None, None),
        "{polled:?}"
    );
}
