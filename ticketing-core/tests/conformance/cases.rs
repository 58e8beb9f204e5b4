//! The generic cases. Each takes fresh stores and asserts one clause of the contract, through
//! the service where the clause is about behaviour and directly on the store where it is about
//! the store's compare-and-set.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration};
use ticketing_core::catalog::{
    ConcertPlan, Merged, NewConcert, NewSchedule, QueueSettings, SeatList, SeatStates, SeatStatus,
};
use ticketing_core::hold::{self, Holder, ReservationStatus};
use ticketing_core::ids::{
    Fence, IdempotencyKey, LedgerEntryId, Points, QueueToken, ReservationId, SeatId, UserId,
};
use ticketing_core::payment::LedgerKind;
use ticketing_core::queue::{self, TokenStatus};
use ticketing_core::store::{Admissions, BookingStore, Lost, QueueStore, Restored, TokenHistory};
use ticketing_core::{Clock, Config, DomainError, Error, ManualClock, StoreError, Ticketing};

/// Fresh stores for one test, and whatever must live as long as the test (a fresh database
/// is dropped with its guard).
pub struct Stores<Q, B> {
    pub queue: Q,
    pub booking: B,
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

type Service<Q, B> = Ticketing<Q, B, ManualClock>;

struct Fx<Q, B> {
    svc: Arc<Service<Q, B>>,
    clock: ManualClock,
    concert: ConcertPlan,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

const PRICE: i64 = 1_000;

fn generous() -> QueueSettings {
    QueueSettings {
        max_active: 10_000,
        admit_batch: 10_000,
        admit_interval_ms: 1_000,
        waiting_idle_secs: 60,
        active_ttl_secs: 600,
    }
}

async fn fixture<Q: QueueStore, B: BookingStore>(
    stores: impl Future<Output = Stores<Q, B>>,
    settings: QueueSettings,
    seats: u32,
) -> Fx<Q, B> {
    fixture_with(stores, settings, seats, Config::default()).await
}

async fn fixture_with<Q: QueueStore, B: BookingStore>(
    stores: impl Future<Output = Stores<Q, B>>,
    settings: QueueSettings,
    seats: u32,
    config: Config,
) -> Fx<Q, B> {
    let stores = stores.await;
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let svc = Ticketing::new(stores.queue, stores.booking, clock.clone(), config);
    let stores = Stores { queue: (), booking: (), guard: stores.guard };
    let concert = svc
        .create_concert(&NewConcert {
            title: "Conformance".into(),
            schedules: vec![
                NewSchedule {
                    starts_at: DateTime::from_timestamp(1_950_000_000, 0).unwrap(),
                    seat_count: seats,
                    price: Points::new(PRICE).unwrap(),
                },
                NewSchedule {
                    starts_at: DateTime::from_timestamp(1_940_000_000, 0).unwrap(),
                    seat_count: 2,
                    price: Points::new(PRICE * 2).unwrap(),
                },
            ],
            queue: settings,
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: None,
            pre_queue: Default::default(),
        })
        .await
        .expect("create concert");
    Fx { svc: Arc::new(svc), clock, concert, _guard: stores.guard }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn key(text: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(text).unwrap())
}

fn domain<T: std::fmt::Debug>(result: Result<T, Error>) -> DomainError {
    match result {
        Err(Error::Domain(error)) => error,
        other => panic!("expected a domain error, got {other:?}"),
    }
}

impl<Q: QueueStore, B: BookingStore> Fx<Q, B> {
    fn seat(&self, i: usize) -> SeatId {
        self.concert.seats[i].id
    }

    fn concert_id(&self) -> ticketing_core::ids::ConcertId {
        self.concert.concert.id
    }

    async fn token(&self, name: &str) -> QueueToken {
        self.svc.issue_token(&user(name), self.concert_id()).await.unwrap().record.token
    }

    /// A token for `name`, admitted.
    async fn admitted(&self, name: &str) -> QueueToken {
        admitted_to(self, name, &self.concert).await
    }

    /// A second concert (one seat, open queue), for tokens of the wrong concert.
    async fn other_concert(&self) -> ConcertPlan {
        self.svc
            .create_concert(&NewConcert {
                title: "Other".into(),
                schedules: vec![NewSchedule {
                    starts_at: DateTime::from_timestamp(1_960_000_000, 0).unwrap(),
                    seat_count: 1,
                    price: Points::new(5).unwrap(),
                }],
                queue: generous(),
                max_seats_per_buyer: None,
                holds_per_token: None,
                cancel_until_secs_before_start: None,
                sales_open_at: None,
                pre_queue: Default::default(),
            })
            .await
            .unwrap()
    }

    /// Moves the clock forward to `at`.
    fn advance_to(&self, at: chrono::DateTime<chrono::Utc>) {
        let by = at - self.clock.now();
        assert!(by >= Duration::zero(), "the clock only moves forward");
        self.clock.advance(by);
    }

    async fn status(&self, token: &QueueToken) -> TokenStatus {
        self.svc.authenticate(token).await.unwrap().status_at(self.clock.now())
    }

    async fn balance(&self, name: &str) -> i64 {
        self.svc.booking_store().wallet(&user(name)).await.unwrap().balance.get()
    }

    /// The ledger sums to the balance.
    async fn assert_ledger_balances(&self, name: &str) {
        let ledger = self.svc.booking_store().ledger(&user(name)).await.unwrap();
        let sum: i64 = ledger.iter().map(|e| e.signed_amount()).sum();
        assert_eq!(sum, self.balance(name).await, "ledger of {name} sums to its balance");
    }

    async fn seat_status_of(&self, seat: SeatId) -> SeatStatus {
        let record = self.svc.booking_store().seat(seat).await.unwrap().unwrap();
        record.status_at(self.clock.now())
    }

    async fn seat_status(&self, i: usize) -> SeatStatus {
        let record = self.svc.booking_store().seat(self.seat(i)).await.unwrap().unwrap();
        record.status_at(self.clock.now())
    }
}

pub async fn issuing_twice_returns_the_same_token_and_place<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let first = fx.svc.issue_token(&user("alice"), fx.concert_id()).await.unwrap();
    assert!(first.created);
    assert_eq!((first.status, first.position), (TokenStatus::Waiting, Some(1)));
    fx.token("bob").await;
    fx.clock.advance_secs(30);
    let again = fx.svc.issue_token(&user("alice"), fx.concert_id()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.record.token, first.record.token);
    assert_eq!(again.position, Some(1), "never a second place in line");
    assert_eq!(again.expires_at(), first.expires_at() + Duration::seconds(30), "validity extended");
    assert!(again.eta_secs.is_some());
}

pub async fn positions_follow_arrival_order<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let names = ["u1", "u2", "u3", "u4"];
    let mut tokens = Vec::new();
    for name in names {
        tokens.push(fx.token(name).await);
    }
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(fx.svc.token_status(token).await.unwrap().position, Some(i as u64 + 1));
    }
    fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    assert_eq!(fx.svc.token_status(&tokens[0]).await.unwrap().status, TokenStatus::Active);
    assert_eq!(fx.svc.token_status(&tokens[0]).await.unwrap().position, None);
    assert_eq!(fx.svc.token_status(&tokens[1]).await.unwrap().position, Some(1));
    assert_eq!(fx.svc.token_status(&tokens[3]).await.unwrap().position, Some(3));
}

pub async fn an_idle_waiting_token_loses_its_place<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let idle = fx.token("idle").await;
    let polite = fx.token("polite").await;
    fx.clock.advance_secs(40);
    fx.svc.token_status(&polite).await.unwrap();
    fx.clock.advance_secs(20);
    // 60 s without a poll: expired on every path, whether or not a sweeper ran.
    assert_eq!(domain(fx.svc.token_status(&idle).await), DomainError::TokenExpired);
    assert_eq!(fx.status(&polite).await, TokenStatus::Waiting);
    fx.svc.sweep().await.unwrap();
    assert_eq!(fx.svc.token_status(&polite).await.unwrap().position, Some(1));
    let back = fx.svc.issue_token(&user("idle"), fx.concert_id()).await.unwrap();
    assert!(back.created, "asking again after expiry is a new place");
    assert_ne!(back.record.token, idle);
    assert_eq!(back.position, Some(2));
}

pub async fn admission_respects_capacity_and_rate_together<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let settings = QueueSettings { max_active: 3, admit_batch: 2, ..generous() };
    let fx = fixture(s, settings, 4).await;
    for i in 0..6 {
        fx.token(&format!("u{i}")).await;
    }
    let tick = || async { fx.svc.admission_tick(fx.concert_id()).await.unwrap().len() };
    assert_eq!(tick().await, 2, "rate cap");
    fx.clock.advance_millis(500);
    assert_eq!(tick().await, 0, "same window");
    fx.clock.advance_millis(500);
    assert_eq!(tick().await, 1, "capacity cap");
    fx.clock.advance_secs(1);
    assert_eq!(tick().await, 0, "full");
    let snapshot = fx.svc.queue_store().admission_snapshot(fx.concert_id(), fx.clock.now()).await.unwrap();
    assert_eq!((snapshot.active, snapshot.waiting), (3, 3));
}

/// An operator pauses a sale, changes its settings and resumes it; each change names the
/// version it was decided from, the store refuses a stale one, and each change is in the
/// concert's audit trail, written in the same step (a refused one is not).
pub async fn a_sale_is_paused_changed_and_resumed_by_version<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    use ticketing_core::catalog::{QueuePatch, SaleActionKind, SaleChange, SaleState, sale_action};
    let settings = QueueSettings { max_active: 2, admit_batch: 2, ..generous() };
    let fx = fixture(s, settings, 4).await;
    let (ops, lead) = (user("ops"), user("lead"));
    let tokens = [fx.token("u0").await, fx.token("u1").await, fx.token("u2").await];
    let tick = || async { fx.svc.admission_tick(fx.concert_id()).await.unwrap().len() };
    let created = fx.svc.concert(fx.concert_id()).await.unwrap();

    let paused = fx.svc.change_sale(fx.concert_id(), SaleChange::Pause, &ops).await.unwrap();
    assert_eq!((paused.paused, paused.version), (true, 1));
    let again = fx.svc.change_sale(fx.concert_id(), SaleChange::Pause, &lead).await.unwrap();
    assert_eq!(again, paused, "no change");
    let stored = fx.svc.booking_store().concert(fx.concert_id()).await.unwrap().unwrap();
    assert_eq!(stored, paused, "stored");
    assert_eq!(tick().await, 0, "paused: nobody admitted");
    let status = fx.svc.token_status(&tokens[0]).await.unwrap();
    assert_eq!((status.status, status.position), (TokenStatus::Waiting, Some(1)), "places kept");
    assert_eq!(status.eta_secs, None, "no estimate while paused");

    // A change decided from an older version is refused whole: no settings, no audit entry.
    let resumed_from_created = ticketing_core::catalog::Concert { version: 1, ..created.clone() };
    let stale = sale_action(&created, &resumed_from_created, SaleChange::Resume, &lead, fx.clock.now());
    assert!(matches!(fx.svc.booking_store().change_sale(&stale).await, Err(StoreError::Conflict(_))));
    assert_eq!(fx.svc.booking_store().concert(fx.concert_id()).await.unwrap().unwrap(), paused);

    fx.clock.advance_secs(1);
    let patch = QueuePatch { max_active: Some(3), admit_batch: Some(3), ..QueuePatch::default() };
    let changed = fx.svc.change_sale(fx.concert_id(), SaleChange::Queue(patch), &lead).await.unwrap();
    assert_eq!((changed.queue.max_active, changed.queue.admit_batch), (3, 3));
    assert_eq!(
        (changed.queue.waiting_idle_secs, changed.paused, changed.version),
        (60, true, 2),
        "the rest stays"
    );
    let invalid = QueuePatch { max_active: Some(0), ..QueuePatch::default() };
    assert!(matches!(
        domain(fx.svc.change_sale(fx.concert_id(), SaleChange::Queue(invalid), &lead).await),
        DomainError::InvalidInput { .. }
    ));
    assert_eq!(tick().await, 0, "still paused");

    let resumed = fx.svc.change_sale(fx.concert_id(), SaleChange::Resume, &ops).await.unwrap();
    assert_eq!((resumed.paused, resumed.version), (false, 3));
    assert_eq!(tick().await, 3, "resumed, with the new caps");
    let concerts = fx.svc.booking_store().concerts().await.unwrap();
    assert_eq!(concerts.iter().find(|c| c.id == fx.concert_id()), Some(&resumed));
    let missing = ticketing_core::ids::ConcertId::random();
    assert_eq!(
        domain(fx.svc.change_sale(missing, SaleChange::Pause, &ops).await),
        DomainError::ConcertNotFound
    );

    let trail = fx.svc.sale_actions(fx.concert_id()).await.unwrap();
    let seen: Vec<_> =
        trail.iter().map(|a| (a.operator.as_str(), a.kind, a.before.version, a.after.version)).collect();
    assert_eq!(
        seen,
        [
            ("ops", SaleActionKind::Pause, 0, 1),
            ("lead", SaleActionKind::Queue, 1, 2),
            ("ops", SaleActionKind::Resume, 2, 3)
        ]
    );
    assert_eq!((trail[0].before, trail[0].after), (SaleState::from(&created), SaleState::from(&paused)));
    assert_eq!((trail[1].before, trail[1].after), (SaleState::from(&paused), SaleState::from(&changed)));
    assert_eq!(trail[1].at, trail[0].at + Duration::seconds(1), "when, from the service's clock");
    assert!(trail.iter().all(|a| a.concert_id == fx.concert_id()));
    assert_eq!(domain(fx.svc.sale_actions(missing).await), DomainError::ConcertNotFound);
    let other = fx.other_concert().await;
    assert!(fx.svc.sale_actions(other.concert.id).await.unwrap().is_empty(), "each concert its own trail");
}

/// A concert's live figures add up: seats, held (not lapsed), sold and their prices, and the
/// line's counts.
pub async fn a_concerts_figures_add_up<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let empty = fx.svc.figures(fx.concert_id()).await.unwrap();
    assert_eq!((empty.seats.seats, empty.seats.held, empty.seats.sold, empty.seats.revenue), (6, 0, 0, 0));
    let dear = fx.concert.seats.iter().position(|s| s.price.get() == PRICE * 2).unwrap();
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    let carol = fx.admitted("carol").await;
    fx.token("dave").await; // Admitted by nobody: no tick after.
    fx.svc.charge(&alice, PRICE * 2, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(dear), None).await.unwrap();
    fx.svc.pay(&alice, held.id, None).await.unwrap();
    fx.svc.hold(&bob, fx.seat(0), None).await.unwrap();
    fx.svc.hold(&carol, fx.seat(1), None).await.unwrap();
    let figures = fx.svc.figures(fx.concert_id()).await.unwrap();
    assert_eq!(
        figures.seats,
        ticketing_core::catalog::SeatTally { seats: 6, held: 2, sold: 1, revenue: PRICE * 2 }
    );
    assert_eq!((figures.waiting, figures.active), (1, 2), "alice's token expired with her payment");
    assert_eq!(figures.concert.id, fx.concert_id());
    // Holds lapse on their deadline, swept or not.
    fx.clock.advance_secs(i64::try_from(fx.svc.config().hold_ttl_secs).unwrap());
    let later = fx.svc.seat_tally(fx.concert_id()).await.unwrap();
    assert_eq!((later.held, later.sold, later.revenue), (0, 1, PRICE * 2));
    let other = fx.other_concert().await;
    assert_eq!(fx.svc.seat_tally(other.concert.id).await.unwrap().sold, 0, "each concert its own seats");
    let missing = ticketing_core::ids::ConcertId::random();
    assert_eq!(domain(fx.svc.figures(missing).await), DomainError::ConcertNotFound);
}

/// Once every seat is sold, a process that reads the concert's tally knows: nobody more joins,
/// and waiting tokens say so. Other concerts are not affected.
pub async fn a_sold_out_concert_says_so_and_takes_nobody_more<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await; // 1 + 2 seats.
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let buyer = fx.admitted(name).await;
        fx.svc.charge(&buyer, PRICE * 2, None).await.unwrap();
        let held = fx.svc.hold(&buyer, fx.seat(i), None).await.unwrap();
        if i < 2 {
            fx.svc.pay(&buyer, held.id, None).await.unwrap();
        } else {
            assert!(!fx.svc.seat_tally(fx.concert_id()).await.unwrap().sold_out(), "a held seat may lapse");
            assert!(!fx.svc.sold_out(fx.concert_id()));
            fx.svc.pay(&buyer, held.id, None).await.unwrap();
        }
    }
    let late = fx.token("late").await;
    assert!(!fx.svc.token_status(&late).await.unwrap().sold_out, "not known before a tally");
    let tally = fx.svc.seat_tally(fx.concert_id()).await.unwrap();
    assert!(tally.sold_out(), "{tally:?}");
    assert!(fx.svc.sold_out(fx.concert_id()));
    assert_eq!(domain(fx.svc.issue_token(&user("newcomer"), fx.concert_id()).await), DomainError::SoldOut);
    let view = fx.svc.token_status(&late).await.unwrap();
    assert_eq!((view.status, view.sold_out), (TokenStatus::Waiting, true));
    let other = fx.other_concert().await;
    let elsewhere = fx.svc.issue_token(&user("newcomer"), other.concert.id).await.unwrap();
    assert!(!elsewhere.sold_out);
}

pub async fn admission_is_first_in_first_out<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 3, ..generous() }, 4).await;
    let mut tokens = Vec::new();
    for i in 0..7 {
        tokens.push(fx.token(&format!("u{i}")).await);
    }
    let mut admitted = Vec::new();
    for _ in 0..3 {
        admitted.extend(fx.svc.admission_tick(fx.concert_id()).await.unwrap().into_iter().map(|r| r.token));
        fx.clock.advance_secs(1);
    }
    assert_eq!(admitted, tokens);
}

pub async fn a_record_read_before_its_admission_has_place_zero<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let first = fx.svc.issue_token(&user("first"), fx.concert_id()).await.unwrap().record;
    let second = fx.svc.issue_token(&user("second"), fx.concert_id()).await.unwrap().record;
    let queue = fx.svc.queue_store();
    assert_eq!((queue.position(&first).await.unwrap(), queue.position(&second).await.unwrap()), (1, 2));
    fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    // `first` was read while waiting; it is out of line now, and the store says so.
    assert_eq!((queue.position(&first).await.unwrap(), queue.position(&second).await.unwrap()), (0, 1));
}

pub async fn admission_skips_idle_tokens_at_the_head<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let idle = fx.token("idle").await;
    fx.clock.advance_secs(30);
    let live = fx.token("live").await;
    fx.clock.advance_secs(30);
    let admitted = fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    assert_eq!(admitted.iter().map(|r| r.token.clone()).collect::<Vec<_>>(), vec![live]);
    assert_eq!(fx.status(&idle).await, TokenStatus::Expired);
}

pub async fn active_tokens_expire_after_their_time_and_free_capacity<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(
        s,
        QueueSettings { max_active: 1, active_ttl_secs: 300, waiting_idle_secs: 1_000, ..generous() },
        4,
    )
    .await;
    let first = fx.admitted("first").await;
    let second = fx.token("second").await;
    fx.clock.advance_secs(299);
    assert!(fx.svc.admission_tick(fx.concert_id()).await.unwrap().is_empty());
    fx.svc.token_status(&second).await.unwrap();
    fx.clock.advance_secs(1);
    assert_eq!(domain(fx.svc.schedules(&first, fx.concert_id()).await), DomainError::TokenExpired);
    let admitted = fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    assert_eq!(admitted.len(), 1);
    assert_eq!(admitted[0].token, second);
}

pub async fn concurrent_admission_ticks_never_exceed_the_caps<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let settings = QueueSettings { max_active: 25, admit_batch: 7, ..generous() };
    let fx = fixture(s, settings, 4).await;
    let mut tokens = Vec::new();
    for i in 0..60 {
        tokens.push(fx.token(&format!("u{i}")).await);
    }
    let mut seen = HashSet::new();
    for round in 0..6 {
        let ticks: Vec<_> = (0..8)
            .map(|_| {
                let svc = Arc::clone(&fx.svc);
                let concert = fx.concert_id();
                tokio::spawn(async move { svc.admission_tick(concert).await.unwrap() })
            })
            .collect();
        let mut this_round = 0;
        for tick in ticks {
            for record in tick.await.unwrap() {
                assert!(seen.insert(record.token.clone()), "no token admitted twice");
                this_round += 1;
            }
        }
        assert!(this_round <= 7, "round {round}: {this_round} admitted in one interval");
        let snapshot =
            fx.svc.queue_store().admission_snapshot(fx.concert_id(), fx.clock.now()).await.unwrap();
        assert!(snapshot.active <= 25, "{} active", snapshot.active);
        fx.clock.advance_secs(1);
    }
    assert_eq!(seen.len(), 25, "capacity filled exactly");
    let expected: HashSet<_> = tokens[..25].iter().cloned().collect();
    assert_eq!(seen, expected, "the first 25 in line, no one else");
}

pub async fn concurrent_token_requests_of_one_user_yield_one_token<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let svc = Arc::clone(&fx.svc);
            let concert = fx.concert_id();
            tokio::spawn(async move { svc.issue_token(&user("eager"), concert).await.unwrap() })
        })
        .collect();
    let mut tokens = HashSet::new();
    let mut created = 0;
    for request in requests {
        let view = request.await.unwrap();
        created += usize::from(view.created);
        tokens.insert(view.record.token);
    }
    assert_eq!((tokens.len(), created), (1, 1));
    let snapshot = fx.svc.queue_store().admission_snapshot(fx.concert_id(), fx.clock.now()).await.unwrap();
    assert_eq!(snapshot.waiting, 1);
}

pub async fn token_writes_compare_versions<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let token = fx.token("alice").await;
    let record = fx.svc.authenticate(&token).await.unwrap();
    let settings = fx.concert.concert.queue;
    let polled = queue::refresh(&record, &settings, fx.clock.now()).unwrap();
    fx.svc.queue_store().update_token(record.version, &polled).await.unwrap();
    let stale = queue::refresh(&record, &settings, fx.clock.now()).unwrap();
    assert!(matches!(
        fx.svc.queue_store().update_token(record.version, &stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(fx.svc.authenticate(&token).await.unwrap(), polled);
}

pub async fn a_user_has_one_token_per_concert_in_the_store<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let record = fx.svc.authenticate(&fx.token("alice").await).await.unwrap();
    let now = fx.clock.now();
    let new = queue::NewToken {
        token: QueueToken::generate(fx.concert_id()),
        user_id: user("alice"),
        concert_id: fx.concert_id(),
        issued_at: now,
        expires_at: now + Duration::seconds(60),
    };
    let store = fx.svc.queue_store();
    assert!(matches!(store.insert_token(new.clone(), None).await, Err(StoreError::Conflict(_))));
    let mut stale = record.clone();
    stale.version += 1;
    assert!(matches!(store.insert_token(new.clone(), Some(&stale)).await, Err(StoreError::Conflict(_))));
    let replaced = store.insert_token(new.clone(), Some(&record)).await.unwrap();
    assert_eq!(replaced.token, new.token);
    assert!(store.token(&record.token).await.unwrap().is_none(), "the replaced token is gone");
    assert_eq!(store.token_of_user(fx.concert_id(), &user("alice")).await.unwrap().unwrap().token, new.token);
}

pub async fn only_active_tokens_of_the_concert_may_browse_and_hold<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let active = fx.admitted("first").await;
    let waiting = fx.token("second").await;
    let concert = fx.concert_id();
    let schedule = fx.concert.schedules[0].id;
    assert_eq!(domain(fx.svc.schedules(&waiting, concert).await), DomainError::NotAdmitted { position: 1 });
    assert_eq!(domain(fx.svc.seats(&waiting, schedule).await), DomainError::NotAdmitted { position: 1 });
    assert_eq!(
        domain(fx.svc.hold(&waiting, fx.seat(0), None).await),
        DomainError::NotAdmitted { position: 1 }
    );
    let unknown = QueueToken::generate(concert);
    assert_eq!(domain(fx.svc.schedules(&unknown, concert).await), DomainError::TokenNotFound);
    assert_eq!(domain(fx.svc.token_status(&unknown).await), DomainError::TokenNotFound);
    assert_eq!(
        domain(fx.svc.schedules(&active, ticketing_core::ids::ConcertId::random()).await),
        DomainError::ConcertNotFound
    );
    assert_eq!(
        domain(fx.svc.seats(&active, ticketing_core::ids::ScheduleId::random()).await),
        DomainError::ScheduleNotFound
    );
    assert_eq!(domain(fx.svc.hold(&active, SeatId::random(), None).await), DomainError::SeatNotFound);

    // A token of another concert is forbidden here.
    let second_concert = fx.other_concert().await;
    assert_eq!(domain(fx.svc.schedules(&active, second_concert.concert.id).await), DomainError::WrongConcert);
    assert_eq!(
        domain(fx.svc.seats(&active, second_concert.schedules[0].id).await),
        DomainError::WrongConcert
    );
    assert_eq!(
        domain(fx.svc.hold(&active, second_concert.seats[0].id, None).await),
        DomainError::WrongConcert
    );
}

pub async fn seats_and_schedules_show_live_status<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let token = fx.admitted("alice").await;
    let schedules = fx.svc.schedules(&token, fx.concert_id()).await.unwrap();
    assert_eq!(schedules.len(), 2);
    assert!(schedules[0].schedule.starts_at < schedules[1].schedule.starts_at, "by start time");
    let main = schedules.iter().find(|s| s.schedule.id == fx.concert.schedules[0].id).unwrap();
    assert_eq!(main.available_seats, 4);
    // The first list reads the seats whole (and keeps the seat map); every later one reads only
    // which seats are occupied. Both see the store as it is.
    let before = fx.svc.seats(&token, fx.concert.schedules[0].id).await.unwrap();
    assert!(before.iter().all(|(_, status)| status == SeatStatus::Available));
    fx.svc.hold(&token, fx.seat(1), None).await.unwrap();
    let seats = fx.svc.seats(&token, fx.concert.schedules[0].id).await.unwrap();
    let numbers: Vec<u32> = seats.iter().map(|(seat, _)| seat.number).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    assert_eq!(seats.get(1).unwrap().1, SeatStatus::Held);
    assert_eq!(seats.get(1).unwrap().0.id, fx.seat(1));
    assert_eq!(seats.get(1).unwrap().0.price.get(), PRICE);
    let count = |v: &[ticketing_core::catalog::ScheduleAvailability]| {
        v.iter().find(|s| s.schedule.id == fx.concert.schedules[0].id).unwrap().available_seats
    };
    assert_eq!(count(&fx.svc.schedules(&token, fx.concert_id()).await.unwrap()), 3);
    fx.clock.advance_secs(300);
    // The hold lapsed: available again on every read, without any sweep.
    assert_eq!(
        fx.svc.seats(&token, fx.concert.schedules[0].id).await.unwrap().get(1).unwrap().1,
        SeatStatus::Available
    );
    assert_eq!(count(&fx.svc.schedules(&token, fx.concert_id()).await.unwrap()), 4);
}

pub async fn a_seat_cannot_be_held_twice<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    assert_eq!(held.status, ReservationStatus::Held);
    assert_eq!(held.expires_at, fx.clock.now() + Duration::seconds(300));
    assert_eq!(held.price.get(), PRICE);
    assert_eq!(domain(fx.svc.hold(&bob, fx.seat(0), None).await), DomainError::SeatUnavailable);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
}

pub async fn a_hold_lasts_its_whole_time_and_its_token_may_pay_it<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { active_ttl_secs: 100, ..generous() }, 4).await;
    let hold_ttl = Duration::seconds(i64::try_from(Config::default().hold_ttl_secs).unwrap());
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    fx.clock.advance_secs(40);
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let lapsing = fx.svc.hold(&bob, fx.seat(1), None).await.unwrap();
    assert_eq!(held.expires_at - held.held_at, hold_ttl, "the whole hold time, past the token's");
    // The tokens' active time ends at 100 s; the holds keep their seats and their payers.
    fx.clock.advance_secs(100);
    fx.svc.sweep().await.unwrap();
    assert_eq!(fx.status(&alice).await, TokenStatus::Expired);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
    assert_eq!(domain(fx.svc.hold(&alice, fx.seat(2), None).await), DomainError::TokenExpired);
    // What paying needs: the hold, the balance, a top-up, the payment itself.
    assert_eq!(fx.svc.reservation(&alice, held.id).await.unwrap().status, ReservationStatus::Held);
    assert_eq!(fx.svc.balance(&alice).await.unwrap().balance.get(), 0);
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    let receipt = fx.svc.pay(&alice, held.id, None).await.expect("the holder pays within the hold time");
    assert_eq!(receipt.balance.get(), 0);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Booked);
    // Bob's hold lapses at its own deadline, not before, and then it cannot be paid.
    fx.advance_to(lapsing.expires_at - Duration::milliseconds(1));
    assert_eq!(fx.seat_status(1).await, SeatStatus::Held);
    fx.advance_to(lapsing.expires_at);
    assert_eq!(fx.seat_status(1).await, SeatStatus::Available);
    assert_eq!(domain(fx.svc.pay(&bob, lapsing.id, None).await), DomainError::HoldExpired);
    // The account access that came with the hold ends with it.
    fx.advance_to(DateTime::from_timestamp(1_900_000_000 + 100, 0).unwrap() + hold_ttl);
    assert_eq!(domain(fx.svc.balance(&bob).await), DomainError::TokenExpired);
    assert_eq!(domain(fx.svc.charge(&bob, 1, None).await), DomainError::TokenExpired);
}

pub async fn a_token_acts_only_for_its_own_concert<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let other = fx.other_concert().await;
    let here = fx.admitted("alice").await;
    let there = fx.svc.issue_token(&user("alice"), other.concert.id).await.unwrap().record.token;
    fx.svc.admission_tick(other.concert.id).await.unwrap();
    assert_eq!(fx.status(&there).await, TokenStatus::Active);
    fx.svc.charge(&here, 5 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&here, fx.seat(0), None).await.unwrap();

    assert_eq!(domain(fx.svc.pay(&there, held.id, key("elsewhere")).await), DomainError::WrongConcert);
    assert_eq!(domain(fx.svc.reservation(&there, held.id).await), DomainError::WrongConcert);
    assert_eq!(domain(fx.svc.release(&there, held.id).await), DomainError::WrongConcert);
    assert_eq!(fx.balance("alice").await, 5 * PRICE, "nothing paid");
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
    assert_eq!(fx.status(&there).await, TokenStatus::Active, "the other concert's token is untouched");
    assert_eq!(fx.status(&here).await, TokenStatus::Active);
    // The refusal is about the token, not the request: the key is still free for the right one.
    fx.svc.pay(&here, held.id, key("elsewhere")).await.expect("the concert's own token pays");
    assert_eq!(fx.status(&here).await, TokenStatus::Expired);
    assert_eq!(fx.status(&there).await, TokenStatus::Active);
}

pub async fn every_hold_of_a_token_can_be_paid<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let config = Config { holds_per_token: 2, ..Config::default() };
    let fx = fixture_with(s, generous(), 4, config).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, 2 * PRICE, None).await.unwrap();
    let first = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let second = fx.svc.hold(&alice, fx.seat(1), None).await.unwrap();
    fx.svc.pay(&alice, first.id, key("first")).await.unwrap();
    assert_eq!(fx.status(&alice).await, TokenStatus::Active, "another hold is left to pay");
    let receipt = fx.svc.pay(&alice, second.id, key("second")).await.expect("the second hold is paid too");
    assert_eq!(receipt.balance.get(), 0);
    assert_eq!(fx.status(&alice).await, TokenStatus::Expired, "nothing left to pay");
    assert_eq!((fx.seat_status(0).await, fx.seat_status(1).await), (SeatStatus::Booked, SeatStatus::Booked));

    // A second hold that is let go leaves nothing to pay: the payment expires the token.
    let bob = fx.admitted("bob").await;
    fx.svc.charge(&bob, PRICE, None).await.unwrap();
    let kept = fx.svc.hold(&bob, fx.seat(2), None).await.unwrap();
    let dropped = fx.svc.hold(&bob, fx.seat(3), None).await.unwrap();
    fx.svc.release(&bob, dropped.id).await.unwrap();
    fx.svc.pay(&bob, kept.id, None).await.unwrap();
    assert_eq!(fx.status(&bob).await, TokenStatus::Expired);
}

pub async fn racing_payments_of_one_hold_lose_as_already_paid<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, PRICE, None).await.unwrap(); // Enough for one.
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let (svc, token, barrier) = (Arc::clone(&fx.svc), alice.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                svc.pay(&token, held.id, key(&format!("race-{i}"))).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.unwrap());
    }
    let paid = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(paid, 1, "{outcomes:?}");
    for (i, outcome) in outcomes.iter().enumerate() {
        if let Err(error) = outcome {
            // Judged on one consistent view: the hold was paid, never "the balance is short".
            assert!(
                matches!(error, Error::Domain(DomainError::AlreadyPaid)),
                "payment {i} answered {error:?}"
            );
            let replay = fx.svc.pay(&alice, held.id, key(&format!("race-{i}"))).await;
            assert_eq!(domain(replay), DomainError::AlreadyPaid, "its key remembers it");
        }
    }
    assert_eq!(fx.balance("alice").await, 0, "one debit");
    fx.assert_ledger_balances("alice").await;
}

pub async fn the_eta_stays_bounded_while_admission_waits_on_capacity<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let settings = QueueSettings {
        max_active: 2,
        admit_batch: 2,
        admit_interval_ms: 1_000,
        waiting_idle_secs: 60,
        active_ttl_secs: 100,
    };
    let fx = fixture(s, settings, 4).await;
    fx.admitted("first").await;
    fx.token("second").await;
    fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    let third = fx.token("third").await;
    let fourth = fx.token("fourth").await;
    // Capacity is full; nobody leaves for 40 windows. The measured rate decays window by
    // window, and the estimate must stay within what capacity guarantees: 2 places per 100 s.
    for _ in 0..40 {
        fx.clock.advance_secs(1);
        fx.svc.admission_tick(fx.concert_id()).await.unwrap();
        for token in [&third, &fourth] {
            let view = fx.svc.token_status(token).await.unwrap();
            assert_eq!(view.status, TokenStatus::Waiting);
            let bound = view.position.unwrap() * 50;
            let eta = view.eta_secs.expect("capacity gives an honest bound");
            assert!(eta <= bound, "eta {eta} s at place {:?}, bound {bound} s", view.position);
        }
    }
    assert!(fx.svc.token_status(&fourth).await.unwrap().eta_secs.unwrap() >= 1);
}

pub async fn a_thousand_concurrent_holds_of_one_seat_have_one_winner<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let mut tokens = Vec::new();
    for i in 0..1_000 {
        tokens.push(fx.token(&format!("buyer{i}")).await);
    }
    fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    let seat = fx.seat(2);
    let attempts: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let svc = Arc::clone(&fx.svc);
            tokio::spawn(async move { svc.hold(&token, seat, None).await })
        })
        .collect();
    let (mut won, mut lost) = (0, 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::Domain(DomainError::SeatUnavailable)) => lost += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, lost), (1, 999));
    let record = fx.svc.booking_store().seat(seat).await.unwrap().unwrap();
    assert_eq!(record.fence, Fence::new(1), "exactly one write reached the seat");

    // The same race with every writer planning from one read, released at once by a barrier,
    // so the store's compare-and-set alone decides (on every backend, however fast its reads).
    let store = fx.svc.booking_store();
    let seat = fx.seat(3);
    let read = store.seat(seat).await.unwrap().unwrap();
    let now = fx.clock.now();
    let plans: Vec<_> = (0..200)
        .map(|i| {
            let holder =
                Holder { user_id: user(&format!("racer{i}")), token: QueueToken::generate(fx.concert_id()) };
            hold::plan_hold(&read, holder, ReservationId::random(), Duration::seconds(300), 1, now).unwrap()
        })
        .collect();
    let wins = race(plans, |plan| {
        let svc = Arc::clone(&fx.svc);
        async move { svc.booking_store().claim_seat(&plan, None).await }
    })
    .await;
    assert_eq!(wins, 1);
}

/// Runs one write per plan, all released at once by a barrier; returns how many succeeded and
/// checks that every loser lost its compare-and-set.
async fn race<P, F, Fut>(plans: Vec<P>, write: F) -> usize
where
    P: Send + 'static,
    F: Fn(P) -> Fut,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(plans.len()));
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let barrier = Arc::clone(&barrier);
            let write = write(plan);
            tokio::spawn(async move {
                barrier.wait().await;
                write.await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("a loser must lose its compare-and-set, got {other:?}"),
        }
    }
    wins
}

pub async fn an_expired_hold_is_reholdable_and_the_first_holders_payment_is_refused<
    Q: QueueStore,
    B: BookingStore,
>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    fx.svc.charge(&alice, 5 * PRICE, None).await.unwrap();
    let first = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    fx.clock.advance_secs(300);
    assert_eq!(fx.svc.reservation(&alice, first.id).await.unwrap().status, ReservationStatus::Expired);
    let second = fx.svc.hold(&bob, fx.seat(0), None).await.unwrap();
    assert!(second.fence > first.fence);
    assert_eq!(domain(fx.svc.pay(&alice, first.id, None).await), DomainError::HoldExpired);
    assert_eq!(fx.balance("alice").await, 5 * PRICE, "nothing debited");
    assert_eq!(fx.svc.reservation(&alice, first.id).await.unwrap().status, ReservationStatus::Expired);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held, "bob's hold untouched");
    // Alice's stale release changes nothing either.
    fx.svc.release(&alice, first.id).await.unwrap();
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
}

pub async fn a_stale_fence_never_writes<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    fx.svc.charge(&alice, 5 * PRICE, None).await.unwrap();
    let store = fx.svc.booking_store();
    let seat_before = store.seat(fx.seat(0)).await.unwrap().unwrap();
    let now = fx.clock.now();
    let holder = |token: &QueueToken, name: &str| Holder { user_id: user(name), token: token.clone() };
    let ttl = Duration::seconds(300);
    // Two plans computed from the same read: the second write must lose.
    let plan_a =
        hold::plan_hold(&seat_before, holder(&alice, "alice"), ReservationId::random(), ttl, 1, now).unwrap();
    let plan_b =
        hold::plan_hold(&seat_before, holder(&bob, "bob"), ReservationId::random(), ttl, 1, now).unwrap();
    store.claim_seat(&plan_a, None).await.unwrap();
    assert!(matches!(store.claim_seat(&plan_b, None).await, Err(StoreError::Conflict(_))));
    assert!(store.reservation(plan_b.reservation.id).await.unwrap().is_none(), "the loser wrote nothing");

    // Alice's hold lapses and bob takes the seat; alice's plans from before are stale.
    let held_seat = store.seat(fx.seat(0)).await.unwrap().unwrap();
    let wallet = store.wallet(&user("alice")).await.unwrap();
    let ids = ticketing_core::payment::PaymentIds {
        payment: ticketing_core::ids::PaymentId::random(),
        entry: ticketing_core::ids::LedgerEntryId::random(),
    };
    let stale_payment = ticketing_core::payment::plan_payment(
        &plan_a.reservation,
        &held_seat,
        &wallet,
        &user("alice"),
        ids,
        now,
    )
    .unwrap();
    let hold::Release::Write(stale_release) =
        hold::plan_release(&plan_a.reservation, &held_seat, &user("alice"), now).unwrap()
    else {
        panic!("live hold")
    };
    fx.clock.advance_secs(300);
    let later = fx.clock.now();
    let lapsed = store.seat(fx.seat(0)).await.unwrap().unwrap();
    let plan_c =
        hold::plan_hold(&lapsed, holder(&bob, "bob"), ReservationId::random(), ttl, 1, later).unwrap();
    assert_eq!(plan_c.supersedes, Some(plan_a.reservation.id));
    store.claim_seat(&plan_c, None).await.unwrap();
    assert!(matches!(store.commit_payment(&stale_payment, None).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.release_seat(&stale_release).await, Err(StoreError::Conflict(_))));
    let seat_after = store.seat(fx.seat(0)).await.unwrap().unwrap();
    assert_eq!(seat_after.fence, plan_c.reservation.fence);
    assert_eq!(seat_after.status_at(later), SeatStatus::Held);
    assert_eq!(fx.balance("alice").await, 5 * PRICE);
    assert!(store.payment_of(plan_a.reservation.id).await.unwrap().is_none());
}

pub async fn a_token_holds_at_most_its_limit<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let first = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    assert_eq!(
        domain(fx.svc.hold(&alice, fx.seat(1), None).await),
        DomainError::HoldLimitReached { limit: 1 }
    );
    assert_eq!(fx.seat_status(1).await, SeatStatus::Available);
    fx.svc.release(&alice, first.id).await.unwrap();
    fx.svc.hold(&alice, fx.seat(1), None).await.unwrap();
    // Concurrent holds of different seats by one token: still one.
    let bob = fx.admitted("bob").await;
    let attempts: Vec<_> = (2..4)
        .chain(0..1)
        .map(|i| {
            let svc = Arc::clone(&fx.svc);
            let (token, seat) = (bob.clone(), fx.seat(i));
            tokio::spawn(async move { svc.hold(&token, seat, None).await })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::Domain(DomainError::HoldLimitReached { .. } | DomainError::SeatUnavailable)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

pub async fn releasing_frees_the_seat_and_only_the_owner_may<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    assert_eq!(domain(fx.svc.release(&bob, held.id).await), DomainError::NotOwner);
    assert_eq!(domain(fx.svc.release(&bob, ReservationId::random()).await), DomainError::ReservationNotFound);
    fx.svc.release(&alice, held.id).await.unwrap();
    assert_eq!(fx.seat_status(0).await, SeatStatus::Available);
    assert_eq!(fx.svc.reservation(&alice, held.id).await.unwrap().status, ReservationStatus::Released);
    fx.svc.release(&alice, held.id).await.expect("releasing twice is harmless");
    fx.svc.hold(&bob, fx.seat(0), None).await.expect("bob may take it");
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    let again = fx.svc.hold(&alice, fx.seat(1), None).await.unwrap();
    fx.svc.pay(&alice, again.id, None).await.unwrap();
    assert_eq!(domain(fx.svc.release(&alice, again.id).await), DomainError::AlreadyPaid);
    assert_eq!(domain(fx.svc.pay(&alice, held.id, None).await), DomainError::HoldReleased);
}

pub async fn the_sweeper_frees_lapsed_holds_but_nothing_waits_for_it<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    fx.clock.advance_secs(299);
    assert_eq!(fx.svc.sweep().await.unwrap().holds, 0, "not yet");
    fx.clock.advance_secs(1);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Available, "lapsed before any sweep");
    assert_eq!(fx.svc.sweep().await.unwrap().holds, 1);
    let stored = fx.svc.booking_store().reservation(held.id).await.unwrap().unwrap();
    assert_eq!(stored.status, ReservationStatus::Expired);
    let seat = fx.svc.booking_store().seat(fx.seat(0)).await.unwrap().unwrap();
    assert_eq!(seat.state, ticketing_core::catalog::SeatState::Available);
    assert!(seat.fence > held.fence, "the sweep's write raised the fence");
    assert_eq!(fx.svc.sweep().await.unwrap().holds, 0, "idempotent");
}

pub async fn a_payment_books_debits_records_and_expires_the_token<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, 3 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let receipt = fx.svc.pay(&alice, held.id, None).await.unwrap();
    assert_eq!((receipt.balance.get(), receipt.payments[0].amount.get()), (2 * PRICE, PRICE));
    assert_eq!(receipt.payments[0].reservation_id, held.id);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Booked);
    assert_eq!(fx.svc.reservation(&alice, held.id).await.unwrap().status, ReservationStatus::Confirmed);
    assert_eq!(fx.status(&alice).await, TokenStatus::Expired);
    assert_eq!(fx.svc.booking_store().payment_of(held.id).await.unwrap(), Some(receipt.payments[0].clone()));
    let ledger = fx.svc.booking_store().ledger(&user("alice")).await.unwrap();
    assert_eq!(
        ledger.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![LedgerKind::Charge, LedgerKind::Payment]
    );
    assert_eq!(ledger[1].payment_id, Some(receipt.payments[0].id));
    fx.assert_ledger_balances("alice").await;
    assert_eq!(domain(fx.svc.pay(&alice, held.id, None).await), DomainError::AlreadyPaid);
    assert_eq!(domain(fx.svc.hold(&alice, fx.seat(1), None).await), DomainError::TokenExpired);
    // A booked seat stays booked: no hold deadline applies any more.
    fx.clock.advance_secs(10_000);
    fx.svc.sweep().await.unwrap();
    assert_eq!(fx.seat_status(0).await, SeatStatus::Booked);
}

pub async fn a_payment_without_enough_points_changes_nothing<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, PRICE - 1, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    assert_eq!(
        domain(fx.svc.pay(&alice, held.id, None).await),
        DomainError::InsufficientBalance {
            balance: Points::new(PRICE - 1).unwrap(),
            required: Points::new(PRICE).unwrap()
        }
    );
    assert_eq!(fx.balance("alice").await, PRICE - 1);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
    assert_eq!(fx.status(&alice).await, TokenStatus::Active);
    assert!(fx.svc.booking_store().payment_of(held.id).await.unwrap().is_none());
    fx.svc.charge(&alice, 1, None).await.unwrap();
    fx.svc.pay(&alice, held.id, None).await.expect("enough now");
    assert_eq!(fx.balance("alice").await, 0);
}

pub async fn a_hundred_concurrent_payments_of_one_reservation_make_one_payment<
    Q: QueueStore,
    B: BookingStore,
>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, 10 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let svc = Arc::clone(&fx.svc);
            let token = alice.clone();
            tokio::spawn(async move { svc.pay(&token, held.id, None).await })
        })
        .collect();
    let mut paid = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => paid += 1,
            Err(Error::Domain(DomainError::AlreadyPaid | DomainError::TokenExpired))
            | Err(Error::Contention) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(paid, 1);
    assert_eq!(fx.balance("alice").await, 9 * PRICE, "one debit");
    let ledger = fx.svc.booking_store().ledger(&user("alice")).await.unwrap();
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Payment).count(), 1);
    fx.assert_ledger_balances("alice").await;

    // Store level: 100 payment plans from one read of a second hold, written at once.
    let bob = fx.admitted("bob").await;
    fx.svc.charge(&bob, 10 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&bob, fx.seat(1), None).await.unwrap();
    let store = fx.svc.booking_store();
    let seat = store.seat(fx.seat(1)).await.unwrap().unwrap();
    let wallet = store.wallet(&user("bob")).await.unwrap();
    let now = fx.clock.now();
    let plans: Vec<_> = (0..100)
        .map(|_| {
            let ids = ticketing_core::payment::PaymentIds {
                payment: ticketing_core::ids::PaymentId::random(),
                entry: ticketing_core::ids::LedgerEntryId::random(),
            };
            ticketing_core::payment::plan_payment(&held, &seat, &wallet, &user("bob"), ids, now).unwrap()
        })
        .collect();
    let wins = race(plans, |plan| {
        let svc = Arc::clone(&fx.svc);
        async move { svc.booking_store().commit_payment(&plan, None).await }
    })
    .await;
    assert_eq!(wins, 1);
    assert_eq!(fx.balance("bob").await, 9 * PRICE, "one debit");
    fx.assert_ledger_balances("bob").await;
}

pub async fn nobody_pays_for_or_reads_someone_elses_reservation<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    fx.svc.charge(&bob, 5 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    assert_eq!(domain(fx.svc.pay(&bob, held.id, None).await), DomainError::NotOwner);
    assert_eq!(domain(fx.svc.reservation(&bob, held.id).await), DomainError::NotOwner);
    assert_eq!(
        domain(fx.svc.pay(&bob, ReservationId::random(), None).await),
        DomainError::ReservationNotFound
    );
    assert_eq!(fx.balance("bob").await, 5 * PRICE);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
}

pub async fn a_charge_replayed_with_its_key_takes_effect_once<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.token("alice").await;
    let first = fx.svc.charge(&alice, 700, key("c1")).await.unwrap();
    fx.clock.advance_secs(5);
    let replay = fx.svc.charge(&alice, 700, key("c1")).await.unwrap();
    assert_eq!(replay, first, "the original outcome");
    assert_eq!(fx.balance("alice").await, 700);
    assert_eq!(fx.svc.booking_store().ledger(&user("alice")).await.unwrap().len(), 1);
    fx.svc.charge(&alice, 700, key("c2")).await.unwrap();
    assert_eq!(fx.balance("alice").await, 1_400);
    fx.assert_ledger_balances("alice").await;
}

pub async fn concurrent_charges_with_one_key_make_one_ledger_entry<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.token("alice").await;
    let attempts: Vec<_> = (0..64)
        .map(|_| {
            let svc = Arc::clone(&fx.svc);
            let token = alice.clone();
            tokio::spawn(async move { svc.charge(&token, 250, key("same")).await })
        })
        .collect();
    let mut outcomes = HashSet::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(wallet) => {
                outcomes.insert(wallet.balance.get());
            }
            Err(Error::Contention) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(outcomes, HashSet::from([250]), "every answer is the one outcome");
    assert_eq!(fx.svc.booking_store().ledger(&user("alice")).await.unwrap().len(), 1);
    assert_eq!(fx.balance("alice").await, 250);

    // Store level: one key, many charge plans from one wallet read, written at once.
    let store = fx.svc.booking_store();
    let wallet = store.wallet(&user("bob")).await.unwrap();
    let now = fx.clock.now();
    let plans: Vec<_> = (0..64)
        .map(|_| {
            let plan = ticketing_core::payment::plan_charge(
                &wallet,
                40,
                ticketing_core::ids::LedgerEntryId::random(),
                now,
            )
            .unwrap();
            let record = ticketing_core::idempotency::record(
                &user("bob"),
                &key("k").unwrap(),
                "charge:40".into(),
                &Ok(plan.wallet.clone()),
                now,
            )
            .unwrap();
            (plan, record)
        })
        .collect();
    let wins = race(plans, |(plan, record)| {
        let svc = Arc::clone(&fx.svc);
        async move { svc.booking_store().apply_charge(&plan, Some(&record)).await }
    })
    .await;
    assert_eq!(wins, 1);
    assert_eq!(fx.svc.booking_store().ledger(&user("bob")).await.unwrap().len(), 1);
    assert!(fx.svc.booking_store().idempotency(&user("bob"), &key("k").unwrap()).await.unwrap().is_some());
}

/// The store's half of the key contract, without the service's check in front: a write that
/// carries a key already stored (live) for the user is refused whole, as if the key had been
/// stored by a racing request between this one's read and its write; past its lifetime the
/// record is replaced.
pub async fn a_write_under_a_live_key_writes_nothing<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let store = fx.svc.booking_store();
    let alice = user("alice");
    let now = fx.clock.now();
    let record =
        |fingerprint: &str, at: DateTime<chrono::Utc>| ticketing_core::idempotency::IdempotencyRecord {
            user_id: alice.clone(),
            key: IdempotencyKey::parse("k-1").unwrap(),
            fingerprint: fingerprint.to_owned(),
            outcome: "{\"Ok\":null}".to_owned(),
            created_at: at,
            expires_at: at + Duration::seconds(60),
        };
    store.save_outcome(&record("first", now)).await.unwrap();
    let wallet = store.wallet(&alice).await.unwrap();
    let plan = ticketing_core::payment::plan_charge(&wallet, 500, LedgerEntryId::random(), now).unwrap();
    assert!(matches!(
        store.apply_charge(&plan, Some(&record("second", now))).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.wallet(&alice).await.unwrap(), wallet, "nothing written");
    assert!(store.ledger(&alice).await.unwrap().is_empty());
    assert_eq!(
        store.idempotency(&alice, &IdempotencyKey::parse("k-1").unwrap()).await.unwrap().unwrap().fingerprint,
        "first"
    );
    // Past its lifetime, the record is replaced and the write goes through.
    let later = now + Duration::seconds(61);
    let plan = ticketing_core::payment::plan_charge(&wallet, 500, LedgerEntryId::random(), later).unwrap();
    store.apply_charge(&plan, Some(&record("third", later))).await.unwrap();
    assert_eq!(store.wallet(&alice).await.unwrap().balance.get(), 500);
    assert_eq!(
        store.idempotency(&alice, &IdempotencyKey::parse("k-1").unwrap()).await.unwrap().unwrap().fingerprint,
        "third"
    );
}

pub async fn a_key_reused_for_another_request_is_refused<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, 100, key("k")).await.unwrap();
    assert_eq!(domain(fx.svc.charge(&alice, 101, key("k")).await), DomainError::IdempotencyKeyReused);
    assert_eq!(domain(fx.svc.hold(&alice, fx.seat(0), key("k")).await), DomainError::IdempotencyKeyReused);
    assert_eq!(fx.seat_status(0).await, SeatStatus::Available);
    assert_eq!(fx.balance("alice").await, 100);
}

pub async fn a_refusal_is_replayed_under_its_key<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let refusal = domain(fx.svc.pay(&alice, held.id, key("p1")).await);
    assert!(matches!(refusal, DomainError::InsufficientBalance { .. }));
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    assert_eq!(domain(fx.svc.pay(&alice, held.id, key("p1")).await), refusal, "the first outcome");
    assert_eq!(fx.balance("alice").await, PRICE);
    fx.svc.pay(&alice, held.id, key("p2")).await.expect("a new key is a new attempt");
    assert_eq!(fx.balance("alice").await, 0);
}

pub async fn a_payment_replayed_after_its_token_expired_returns_the_receipt<
    Q: QueueStore,
    B: BookingStore,
>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let receipt = fx.svc.pay(&alice, held.id, key("pay-1")).await.unwrap();
    assert_eq!(fx.status(&alice).await, TokenStatus::Expired);
    fx.clock.advance_secs(60);
    assert_eq!(fx.svc.pay(&alice, held.id, key("pay-1")).await.unwrap(), receipt);
    assert_eq!(
        fx.svc.reservation(&alice, held.id).await.unwrap().status,
        ReservationStatus::Confirmed,
        "a paid token reads its reservation"
    );
    assert_eq!(fx.balance("alice").await, 0);
    assert_eq!(fx.svc.booking_store().ledger(&user("alice")).await.unwrap().len(), 2);
}

pub async fn a_hold_replayed_with_its_key_holds_once<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.admitted("alice").await;
    let first = fx.svc.hold(&alice, fx.seat(0), key("h1")).await.unwrap();
    let replay = fx.svc.hold(&alice, fx.seat(0), key("h1")).await.unwrap();
    assert_eq!(replay.id, first.id);
    let bob = fx.admitted("bob").await;
    assert_eq!(domain(fx.svc.hold(&bob, fx.seat(0), key("h1")).await), DomainError::SeatUnavailable);
    assert_eq!(
        domain(fx.svc.hold(&bob, fx.seat(0), key("h1")).await),
        DomainError::SeatUnavailable,
        "refusal replayed"
    );
    fx.svc.release(&alice, first.id).await.unwrap();
    assert_eq!(
        domain(fx.svc.hold(&bob, fx.seat(0), key("h1")).await),
        DomainError::SeatUnavailable,
        "still the first outcome"
    );
    fx.svc.hold(&bob, fx.seat(0), key("h2")).await.expect("a new key sees the released seat");
}

pub async fn keys_are_scoped_to_the_user<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.token("alice").await;
    let bob = fx.token("bob").await;
    fx.svc.charge(&alice, 100, key("shared")).await.unwrap();
    fx.svc.charge(&bob, 200, key("shared")).await.unwrap();
    assert_eq!((fx.balance("alice").await, fx.balance("bob").await), (100, 200));
}

pub async fn charges_are_bounded<Q: QueueStore, B: BookingStore>(s: impl Future<Output = Stores<Q, B>>) {
    use ticketing_core::limits::{BALANCE_MAX_POINTS, CHARGE_MAX_POINTS};
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.token("alice").await;
    for amount in [0, -5, CHARGE_MAX_POINTS + 1] {
        assert!(matches!(
            domain(fx.svc.charge(&alice, amount, None).await),
            DomainError::InvalidAmount { .. }
        ));
    }
    let mut balance = 0;
    while balance + CHARGE_MAX_POINTS <= BALANCE_MAX_POINTS {
        fx.svc.charge(&alice, CHARGE_MAX_POINTS, None).await.unwrap();
        balance += CHARGE_MAX_POINTS;
    }
    assert!(matches!(
        domain(fx.svc.charge(&alice, BALANCE_MAX_POINTS - balance + 1, None).await),
        DomainError::BalanceLimitExceeded { .. }
    ));
    assert_eq!(fx.balance("alice").await, balance);
    fx.assert_ledger_balances("alice").await;
}

pub async fn the_balance_needs_an_unexpired_token<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.token("alice").await;
    fx.svc.charge(&alice, 10, None).await.unwrap();
    assert_eq!(fx.svc.balance(&alice).await.unwrap().balance.get(), 10);
    fx.clock.advance_secs(60);
    assert_eq!(domain(fx.svc.balance(&alice).await), DomainError::TokenExpired);
    assert_eq!(domain(fx.svc.charge(&alice, 10, None).await), DomainError::TokenExpired);
    assert_eq!(
        domain(fx.svc.balance(&QueueToken::generate(fx.concert_id())).await),
        DomainError::TokenNotFound
    );
}

pub async fn concerts_are_validated_and_listed<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let bad = NewConcert {
        title: String::new(),
        schedules: vec![],
        queue: generous(),
        max_seats_per_buyer: None,
        holds_per_token: None,
        cancel_until_secs_before_start: None,
        sales_open_at: None,
        pre_queue: Default::default(),
    };
    assert!(matches!(domain(fx.svc.create_concert(&bad).await), DomainError::InvalidInput { .. }));
    let concerts = fx.svc.concerts().await.unwrap();
    assert_eq!(concerts, vec![fx.concert.concert.clone()]);
    assert_eq!(
        domain(fx.svc.issue_token(&user("a"), ticketing_core::ids::ConcertId::random()).await),
        DomainError::ConcertNotFound
    );
    assert!(matches!(fx.svc.booking_store().create_concert(&fx.concert).await, Err(StoreError::Conflict(_))));
}

pub async fn a_poll_refreshes_and_places_a_waiting_token_in_one_step<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let first = fx.admitted("first").await;
    let second = fx.token("second").await;
    let third = fx.token("third").await;
    let store = fx.svc.queue_store();
    let now = fx.clock.now();
    let deadline = now + Duration::seconds(60);

    let before = fx.svc.authenticate(&third).await.unwrap();
    let polled = store.poll(&third, now, deadline).await.unwrap().expect("known");
    assert_eq!(polled.record.version, before.version + 1, "refreshed");
    assert_eq!(polled.record.expires_at(), deadline);
    let line = polled.line.expect("waiting");
    assert_eq!(line.position, 2);
    assert_eq!((line.snapshot.waiting, line.snapshot.active), (2, 1));
    assert_eq!(fx.svc.authenticate(&third).await.unwrap(), polled.record, "as stored");

    // An active token is returned as it is, with no place in line.
    let active = fx.svc.authenticate(&first).await.unwrap();
    let polled = store.poll(&first, now, deadline).await.unwrap().expect("known");
    assert_eq!((polled.record, polled.line), (active, None));
    // A token unknown to the store.
    assert_eq!(store.poll(&QueueToken::generate(fx.concert_id()), now, deadline).await.unwrap(), None);
    // A waiting token past its idle deadline is not brought back.
    let idle = fx.svc.authenticate(&second).await.unwrap();
    let later = idle.expires_at() + Duration::seconds(1);
    let polled = store.poll(&second, later, later + Duration::seconds(60)).await.unwrap().expect("known");
    assert_eq!(polled.record.version, idle.version, "not refreshed");
    assert_eq!(polled.line, None);
    assert_eq!(polled.record.status_at(later), TokenStatus::Expired);
}

pub async fn the_admission_log_records_who_was_admitted_and_who_paid_with_it<
    Q: QueueStore,
    B: BookingStore,
>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let log = fx.svc.booking_store();
    assert_eq!(log.admissions(fx.concert_id(), fx.clock.now()).await.unwrap(), Admissions::default());
    let alice = fx.admitted("alice").await;
    fx.clock.advance_secs(1);
    let bob = fx.admitted("bob").await;
    let carol = fx.token("carol").await;
    // The tick logs admissions only for a line its store may lose (Redis); log them here, in
    // two generations (a Redis line's are times in microseconds, far above these).
    let alice_record = fx.svc.authenticate(&alice).await.unwrap();
    log.log_admissions(1, std::slice::from_ref(&alice_record)).await.unwrap();
    log.log_admissions(2, &[fx.svc.authenticate(&bob).await.unwrap()]).await.unwrap();
    let history = log.history(&user("alice"), &alice).await.unwrap();
    assert_eq!(history.admitted, Some(alice_record.clone()), "as admitted");
    assert_eq!(history.paid_at, None);
    let open = log.admissions(fx.concert_id(), fx.clock.now()).await.unwrap();
    let mut tokens: Vec<QueueToken> = open.open.iter().map(|r| r.token.clone()).collect();
    tokens.sort();
    let mut expected = vec![alice.clone(), bob.clone()];
    expected.sort();
    assert_eq!(tokens, expected);
    // A Redis line's ticks logged them first, in the line's generation; elsewhere the tick logs
    // nothing and the oldest is ours.
    let line = fx.svc.queue_store().admission_snapshot(fx.concert_id(), fx.clock.now()).await.unwrap();
    let first = open.first_generation.expect("a generation");
    assert_eq!(first, if line.generation == 0 { 1 } else { line.generation });

    // Logging again keeps the first record.
    let mut again = alice_record.clone();
    again.version += 10;
    log.log_admissions(3, &[again]).await.unwrap();
    assert_eq!(log.history(&user("alice"), &alice).await.unwrap().admitted, Some(alice_record));

    // A payment made with a token shows, logged or not, and the admission is no longer open.
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let receipt = fx.svc.pay(&alice, held.id, None).await.unwrap();
    assert_eq!(log.history(&user("alice"), &alice).await.unwrap().paid_at, Some(receipt.payments[0].at));
    let open = log.admissions(fx.concert_id(), fx.clock.now()).await.unwrap();
    assert_eq!(open.open.iter().map(|r| r.token.clone()).collect::<Vec<_>>(), vec![bob.clone()]);
    fx.svc.admission_tick(fx.concert_id()).await.unwrap();
    fx.svc.charge(&carol, PRICE, None).await.unwrap();
    let held = fx.svc.hold(&carol, fx.seat(1), None).await.unwrap();
    let receipt = fx.svc.pay(&carol, held.id, None).await.unwrap();
    let history = log.history(&user("carol"), &carol).await.unwrap();
    assert_eq!(history.paid_at, Some(receipt.payments[0].at));

    // Past its deadline an admission is not open; the oldest generation stays.
    fx.clock.advance_secs(601);
    let later = log.admissions(fx.concert_id(), fx.clock.now()).await.unwrap();
    assert_eq!((later.open.len(), later.first_generation), (0, Some(first)));
    // The newest generation: 2 (bob's, ours) elsewhere; the line's on Redis.
    let last = if line.generation == 0 { 2 } else { line.generation };
    assert_eq!(later.last_generation, Some(last));
    let stranger = QueueToken::generate(fx.concert_id());
    assert_eq!(log.history(&user("nobody"), &stranger).await.unwrap(), TokenHistory::default());
}

pub async fn a_store_gives_back_what_it_has_and_writes_nothing_it_did_not_lose<
    Q: QueueStore,
    B: BookingStore,
>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 4).await;
    let alice = fx.token("alice").await;
    let record = fx.svc.authenticate(&alice).await.unwrap();
    let seq = record.seq().unwrap();
    let mut stranger = record.clone();
    stranger.token = QueueToken::generate(fx.concert_id());
    stranger.user_id = user("stranger");
    stranger.state =
        queue::TokenState::Waiting { seq: seq + 1_000, expires_at: fx.clock.now() + Duration::seconds(60) };
    let answers = fx
        .svc
        .queue_store()
        .restore(
            &[
                Lost { record: record.clone(), line_seq: seq },
                Lost { record: stranger.clone(), line_seq: seq + 1_000 },
            ],
            fx.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(answers, vec![Restored::Present(record), Restored::NotLost]);
    assert_eq!(fx.svc.queue_store().token(&stranger.token).await.unwrap(), None);
    // A credential the service did not sign brings nothing back either.
    assert_eq!(domain(fx.svc.token_status(&stranger.token).await), DomainError::TokenNotFound);
}

pub async fn a_concert_may_start_in_any_year_the_rules_allow<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    // MySQL kept a `DateTime<Utc>` sent as a TIMESTAMP only to 2038: a later start failed.
    let fx = fixture(s, generous(), 1).await;
    for year in [1_900, 2_039, 8_999] {
        let starts_at: chrono::DateTime<chrono::Utc> = format!("{year}-06-30T20:00:00.123Z").parse().unwrap();
        let plan = fx
            .svc
            .create_concert(&NewConcert {
                title: format!("In {year}"),
                schedules: vec![NewSchedule { starts_at, seat_count: 1, price: Points::new(5).unwrap() }],
                queue: generous(),
                max_seats_per_buyer: None,
                holds_per_token: None,
                cancel_until_secs_before_start: None,
                sales_open_at: None,
                pre_queue: Default::default(),
            })
            .await
            .unwrap();
        let stored = fx.svc.booking_store().schedule(plan.schedules[0].id).await.unwrap().unwrap();
        assert_eq!(stored.starts_at, starts_at, "{year}");
    }
}

/// What a store's seat-change read answers, checked against the seats as stored: where the store
/// keeps changes, the read from `states`' horizon brings each of `written` with its stored fence
/// and only seats of the concert, and merged, the states list every seat as stored; where it
/// keeps none, the occupied seats (what the service reads instead) agree with the seats.
async fn assert_seat_changes_agree<Q: QueueStore, B: BookingStore>(
    fx: &Fx<Q, B>,
    states: &mut SeatStates,
    written: &[SeatId],
) {
    let store = fx.svc.booking_store();
    let now = fx.clock.now();
    let since = states.horizon();
    let read = store.seat_changes(fx.concert_id(), since).await.unwrap();
    for schedule in &fx.concert.schedules {
        let stored = store.seats(schedule.id).await.unwrap();
        let expected: Vec<SeatStatus> = stored.iter().map(|r| r.status_at(now)).collect();
        let Some(read) = &read else {
            let seats: Arc<[_]> = stored.iter().map(|r| r.seat.clone()).collect();
            let occupied = store.occupied_seats(schedule.id).await.unwrap();
            assert_eq!(SeatList::at(seats, &occupied, now).statuses, expected, "the occupied seats agree");
            continue;
        };
        for record in stored.iter().filter(|r| written.contains(&r.seat.id)) {
            let change =
                read.seats.iter().find(|c| c.schedule_id == schedule.id && c.number == record.seat.number);
            let change = change.unwrap_or_else(|| {
                panic!("seat {} written since {since:?} is in the read", record.seat.number)
            });
            assert_eq!((change.fence, change.occupancy), (record.fence, record.state.occupancy()));
        }
    }
    let Some(read) = read else { return };
    let schedules: HashSet<_> = fx.concert.schedules.iter().map(|s| s.id).collect();
    assert!(read.seats.iter().all(|c| schedules.contains(&c.schedule_id)), "only seats of the concert");
    if since.is_none() {
        assert_eq!(read.seats.len(), fx.concert.seats.len(), "a first read brings every seat");
    }
    assert_eq!(states.merge(since, &read, now), Merged::Current);
    for schedule in &fx.concert.schedules {
        let stored = store.seats(schedule.id).await.unwrap();
        let seats: Arc<[_]> = stored.iter().map(|r| r.seat.clone()).collect();
        let expected: Vec<SeatStatus> = stored.iter().map(|r| r.status_at(now)).collect();
        assert_eq!(
            states.list(schedule.id, seats, now).statuses,
            expected,
            "the merged states list the seats as stored"
        );
        let available = expected.iter().filter(|s| **s == SeatStatus::Available).count();
        assert_eq!(states.available(schedule.id, now) as usize, available);
    }
}

pub async fn seat_changes_bring_every_seat_written_since_their_horizon<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let config = Config { holds_per_token: 3, ..Config::default() };
    let fx = fixture_with(s, generous(), 4, config).await;
    let other = fx.other_concert().await;
    let mut states = SeatStates::default();
    assert_seat_changes_agree(&fx, &mut states, &[]).await;

    let alice = fx.admitted("alice").await;
    fx.svc.charge(&alice, 10 * PRICE, None).await.unwrap();
    let first = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    let second = fx.svc.hold(&alice, fx.seat(1), None).await.unwrap();
    // A write to another concert is not in this one's reads.
    let bob = fx.svc.issue_token(&user("bob"), other.concert.id).await.unwrap().record.token;
    fx.svc.admission_tick(other.concert.id).await.unwrap();
    fx.svc.hold(&bob, other.seats[0].id, None).await.unwrap();
    assert_seat_changes_agree(&fx, &mut states, &[fx.seat(0), fx.seat(1)]).await;

    fx.svc.pay(&alice, first.id, None).await.unwrap();
    fx.svc.release(&alice, second.id).await.unwrap();
    let third = fx.svc.hold(&alice, fx.seat(2), None).await.unwrap();
    assert_seat_changes_agree(&fx, &mut states, &[fx.seat(0), fx.seat(1), fx.seat(2)]).await;
    // Nothing written: the states still agree (a read may bring seats again, never miss one).
    assert_seat_changes_agree(&fx, &mut states, &[]).await;

    // A hold that lapsed lists as available before the sweep and after it.
    fx.advance_to(third.expires_at);
    assert_seat_changes_agree(&fx, &mut states, &[]).await;
    assert_eq!(fx.svc.sweep().await.unwrap().holds, 2, "alice's and bob's lapsed holds");
    assert_seat_changes_agree(&fx, &mut states, &[fx.seat(2)]).await;
}

/// A concert of `seats` seats at [`PRICE`] whose buyers may buy at most `cap` of them.
async fn capped_concert<Q: QueueStore, B: BookingStore>(fx: &Fx<Q, B>, seats: u32, cap: u32) -> ConcertPlan {
    let concert = NewConcert { max_seats_per_buyer: Some(cap), ..one_schedule("Capped", seats) };
    fx.svc.create_concert(&concert).await.unwrap()
}

/// A concert of one schedule of `seats` seats at [`PRICE`], starting at 1,960,000,000 s, with an
/// open queue and no other setting: what the cases below change is written next to them.
fn one_schedule(title: &str, seats: u32) -> NewConcert {
    NewConcert {
        title: title.into(),
        schedules: vec![NewSchedule {
            starts_at: DateTime::from_timestamp(1_960_000_000, 0).unwrap(),
            seat_count: seats,
            price: Points::new(PRICE).unwrap(),
        }],
        queue: generous(),
        max_seats_per_buyer: None,
        holds_per_token: None,
        cancel_until_secs_before_start: None,
        sales_open_at: None,
        pre_queue: Default::default(),
    }
}

/// `name`'s token for `concert`, admitted.
async fn admitted_to<Q: QueueStore, B: BookingStore>(
    fx: &Fx<Q, B>,
    name: &str,
    concert: &ConcertPlan,
) -> QueueToken {
    let token = fx.svc.issue_token(&user(name), concert.concert.id).await.unwrap().record.token;
    fx.svc.admission_tick(concert.concert.id).await.unwrap();
    assert_eq!(fx.svc.token_status(&token).await.unwrap().status, TokenStatus::Active, "{name} admitted");
    token
}

pub async fn a_buyer_buys_no_more_than_the_concerts_cap_across_tokens_and_retries<
    Q: QueueStore,
    B: BookingStore,
>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let capped = capped_concert(&fx, 4, 2).await;
    assert_eq!(capped.concert.max_seats_per_buyer, Some(2));
    let stored = fx.svc.booking_store().concert(capped.concert.id).await.unwrap().unwrap();
    assert_eq!(stored.max_seats_per_buyer, Some(2), "the cap is stored");
    // Two purchases, each with its own token (paying expires the token; the buyer joins again).
    for seat in &capped.seats[..2] {
        let token = admitted_to(&fx, "alice", &capped).await;
        fx.svc.charge(&token, PRICE, None).await.unwrap();
        let held = fx.svc.hold(&token, seat.id, None).await.unwrap();
        fx.svc.pay(&token, held.id, None).await.unwrap();
    }
    // At the cap, a hold is refused too: the buyer keeps no seat from others that it could
    // not pay for (the payment step decides for sure: `racing_payments_of_one_buyer_…`).
    let token = admitted_to(&fx, "alice", &capped).await;
    fx.svc.charge(&token, PRICE, None).await.unwrap();
    let key = IdempotencyKey::parse("third-seat").unwrap();
    let refused = fx.svc.hold(&token, capped.seats[2].id, Some(key.clone())).await;
    assert_eq!(domain(refused), DomainError::BuyerLimitReached { limit: 2 });
    assert_eq!(
        domain(fx.svc.hold(&token, capped.seats[2].id, Some(key)).await),
        DomainError::BuyerLimitReached { limit: 2 },
        "a retry with the key answers the same"
    );
    // Nothing was taken: the points are there, the seat is free for others.
    assert_eq!(fx.svc.balance(&token).await.unwrap().balance.get(), PRICE);
    let bob = admitted_to(&fx, "bob", &capped).await;
    let seats = fx.svc.seats(&bob, capped.schedules[0].id).await.unwrap();
    assert_eq!(seats.get(2).map(|(_, status)| status), Some(SeatStatus::Available));
    // Another buyer's cap is their own; another concert knows no cap.
    fx.svc.charge(&bob, PRICE, None).await.unwrap();
    let bobs = fx.svc.hold(&bob, capped.seats[3].id, None).await.unwrap();
    fx.svc.pay(&bob, bobs.id, None).await.unwrap();
    assert_eq!(fx.svc.booking_store().seats_bought(&user("alice"), capped.concert.id, &[]).await.unwrap(), 2);
    assert_eq!(fx.svc.booking_store().seats_bought(&user("alice"), fx.concert_id(), &[]).await.unwrap(), 0);
}

pub async fn racing_payments_of_one_buyer_stay_within_the_cap<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let config = Config { holds_per_token: 4, ..Config::default() };
    let fx = fixture_with(s, generous(), 1, config).await;
    // A token holds no more than the cap (2): one seat bought first, then two held with a new
    // token, whose payments race for the one seat left under the cap.
    let capped = capped_concert(&fx, 4, 2).await;
    let first = admitted_to(&fx, "alice", &capped).await;
    fx.svc.charge(&first, PRICE * 4, None).await.unwrap();
    let bought = fx.svc.hold(&first, capped.seats[0].id, None).await.unwrap();
    fx.svc.pay(&first, bought.id, None).await.unwrap();
    let token = admitted_to(&fx, "alice", &capped).await;
    let mut holds = Vec::new();
    for seat in &capped.seats[1..3] {
        holds.push(fx.svc.hold(&token, seat.id, None).await.unwrap().id);
    }
    let svc = Arc::new(fx.svc.clone());
    let payments: Vec<_> = holds
        .iter()
        .map(|&id| {
            let (svc, token) = (Arc::clone(&svc), token.clone());
            tokio::spawn(async move { svc.pay(&token, id, None).await })
        })
        .collect();
    let mut paid = 0;
    for payment in payments {
        match payment.await.unwrap() {
            Ok(_) => paid += 1,
            Err(Error::Domain(DomainError::BuyerLimitReached { limit: 2 }) | Error::Contention) => {}
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(paid, 1, "one payment of two within what the cap leaves");
    assert_eq!(fx.svc.booking_store().seats_bought(&user("alice"), capped.concert.id, &[]).await.unwrap(), 2);
    assert_eq!(fx.svc.balance(&token).await.unwrap().balance.get(), PRICE * 2, "charged twice in all");
}

pub async fn a_waiting_buyer_leaves_and_everyone_behind_moves_up<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, QueueSettings { admit_batch: 1, ..generous() }, 4).await;
    let (a, b, c) = (fx.token("a").await, fx.token("b").await, fx.token("c").await);
    fx.svc.leave(&b).await.unwrap();
    assert_eq!(fx.svc.token_status(&c).await.unwrap().position, Some(2), "c moved up");
    assert_eq!(domain(fx.svc.token_status(&b).await), DomainError::TokenExpired);
    assert_eq!(domain(fx.svc.leave(&b).await), DomainError::TokenExpired, "leaving twice");
    let stored = fx.svc.queue_store().token(&b).await.unwrap().unwrap();
    assert!(matches!(stored.state, queue::TokenState::Expired { reason: queue::ExpiryReason::Left, .. }));
    // Recorded where the money is, so a queue store that loses it gives it back expired.
    let history = fx.svc.booking_store().history(&user("b"), &b).await.unwrap();
    assert_eq!(history.left_at, Some(fx.clock.now()));
    // Admission skips the one who left.
    let mut admitted = Vec::new();
    for _ in 0..3 {
        admitted.extend(fx.svc.admission_tick(fx.concert_id()).await.unwrap().into_iter().map(|r| r.token));
        fx.clock.advance_secs(1);
    }
    assert_eq!(admitted, vec![a.clone(), c]);
    assert_eq!(domain(fx.svc.leave(&a).await), DomainError::AlreadyAdmitted);
    // A leave recorded for a token that a tick admitted first (it lost its race) does not end
    // the admission: a lost line's open admissions still count it.
    let record = fx.svc.queue_store().token(&a).await.unwrap().unwrap();
    fx.svc.booking_store().log_admissions(7, std::slice::from_ref(&record)).await.unwrap();
    fx.svc.booking_store().record_leave(&a, &user("a"), fx.clock.now()).await.unwrap();
    let open = fx.svc.booking_store().admissions(fx.concert_id(), fx.clock.now()).await.unwrap();
    assert!(open.open.iter().any(|r| r.token == a), "{open:?}");
    // Coming back is a new token at the back of the line.
    fx.token("d").await;
    let back = fx.svc.issue_token(&user("b"), fx.concert_id()).await.unwrap();
    assert!(back.created && back.record.token != b, "{back:?}");
    assert_eq!(back.position, Some(2));
}

/// A service whose clock reads `clock_offset_secs` from the wall clock now, and a concert of 4
/// seats whose sale opens `opens_in_secs` from the wall clock now (the clock of a SQL store,
/// which decides the opening; the memory store decides by the service's clock).
async fn scheduled<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
    clock_offset_secs: i64,
    opens_in_secs: i64,
    pre_queue: ticketing_core::catalog::PreQueue,
) -> Fx<Q, B> {
    let stores = s.await;
    let wall = chrono::Utc::now().timestamp();
    let clock = ManualClock::at_epoch_secs(wall + clock_offset_secs);
    let svc = Ticketing::new(stores.queue, stores.booking, clock.clone(), Config::default());
    let concert = svc
        .create_concert(&NewConcert {
            title: "Scheduled".into(),
            schedules: vec![NewSchedule {
                starts_at: DateTime::from_timestamp(1_950_000_000, 0).unwrap(),
                seat_count: 4,
                price: Points::new(PRICE).unwrap(),
            }],
            queue: generous(),
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at: DateTime::from_timestamp(wall + opens_in_secs, 0),
            pre_queue,
        })
        .await
        .unwrap();
    Fx { svc: Arc::new(svc), clock, concert, _guard: stores.guard }
}

/// The places of `tokens` in line, as stored.
async fn places<Q: QueueStore, B: BookingStore>(fx: &Fx<Q, B>, tokens: &[QueueToken]) -> Vec<u64> {
    let mut places = Vec::new();
    for token in tokens {
        places.push(fx.svc.queue_store().token(token).await.unwrap().unwrap().seq().expect("waiting"));
    }
    places
}

/// A sale with a scheduled opening: buyers join before it and wait in a pre-queue (told when it
/// opens, with no place yet in a drawn pre-queue), nobody is admitted before it (the store
/// refuses an admission of a line not opened), and at the opening the booking store records it
/// once (seed, audit entry) and the queue store deals the pre-queue's places out again exactly as
/// the seed draws them, once; whoever joins after is behind the whole pre-queue.
pub async fn a_scheduled_sale_opens_once_and_draws_its_pre_queue<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    use ticketing_core::catalog::{PreQueue, SaleActionKind};
    use ticketing_core::queue::{AdmissionPlan, LineOpening, Move, draw_pre_queue};
    // The service's clock is 10 s behind the wall clock; the sale opened 1 s ago by the wall.
    let fx = scheduled(s, -10, -1, PreQueue::Random).await;
    let id = fx.concert_id();
    let opens_at = fx.concert.concert.sales_open_at.unwrap();
    let mut pre = Vec::new();
    for i in 0..6 {
        let view = fx.svc.issue_token(&user(&format!("u{i}")), id).await.unwrap();
        assert_eq!((view.status, view.opens_at, view.position), (TokenStatus::Waiting, Some(opens_at), None));
        assert!(view.eta_secs.is_some_and(|eta| eta >= 9), "counted from the opening: {:?}", view.eta_secs);
        pre.push(view.record.token);
    }
    let before = places(&fx, &pre).await;
    assert_eq!(fx.svc.admission_tick(id).await.unwrap().len(), 0, "before the opening");
    let snapshot = fx.svc.queue_store().admission_snapshot(id, fx.clock.now()).await.unwrap();
    assert!(!snapshot.opened);
    let early = AdmissionPlan {
        requires_open: true,
        ..queue::plan_admission(id, &generous(), &snapshot, fx.clock.now())
    };
    assert!(
        matches!(fx.svc.queue_store().admit(&early).await, Err(StoreError::Conflict(_))),
        "the store refuses"
    );
    assert_eq!(fx.svc.concert(id).await.unwrap().opened, None);
    let figures = fx.svc.figures(id).await.unwrap();
    assert_eq!((figures.pre_queue, figures.waiting), (6, 0), "the operator sees a pre-queue");

    fx.clock.advance_secs(10);
    assert_eq!(fx.svc.admission_tick(id).await.unwrap().len(), 0, "this tick opens; the next admits");
    let concert = fx.svc.booking_store().concert(id).await.unwrap().unwrap();
    let opening = concert.opened.expect("recorded");
    assert_eq!(opening.at, fx.clock.now());
    assert!(opening.seed < ticketing_core::catalog::OPENING_SEED_BOUND);
    let trail = fx.svc.sale_actions(id).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!((trail[0].operator.as_str(), trail[0].kind), ("admission-ticker", SaleActionKind::Open));
    assert_eq!(trail[0].after.opened, Some(opening));

    // The places are the same numbers, dealt out as the seed draws them.
    let line: Vec<(u64, QueueToken)> = before.iter().copied().zip(pre.iter().cloned()).collect();
    let moves = draw_pre_queue(opening.seed, &line);
    let expected: Vec<u64> = line
        .iter()
        .map(|(seq, token)| moves.iter().find(|m| &m.token == token).map_or(*seq, |m| m.to))
        .collect();
    let after = places(&fx, &pre).await;
    assert_eq!(after, expected);
    let (mut sorted_before, mut sorted_after) = (before.clone(), after.clone());
    sorted_before.sort_unstable();
    sorted_after.sort_unstable();
    assert_eq!(sorted_before, sorted_after, "a permutation of the same places");
    let status = fx.svc.token_status(&pre[0]).await.unwrap();
    let rank = after.iter().filter(|place| **place <= after[0]).count() as u64;
    assert_eq!((status.opens_at, status.position), (None, Some(rank)), "a place, once drawn");

    let late = fx.svc.issue_token(&user("late"), id).await.unwrap();
    assert_eq!((late.position, late.opens_at), (Some(7), None), "behind the whole pre-queue");
    let figures = fx.svc.figures(id).await.unwrap();
    assert_eq!((figures.pre_queue, figures.waiting), (0, 7), "one line, once open");
    // Opening again changes nothing: the draw is applied once.
    let again = Move { token: pre[0].clone(), from: after[0], to: 1 };
    let generation = fx.svc.queue_store().admission_snapshot(id, fx.clock.now()).await.unwrap().generation;
    let reopened =
        fx.svc.queue_store().open_line(&LineOpening { concert_id: id, moves: vec![again], generation }).await;
    assert!(!reopened.unwrap());
    assert_eq!(places(&fx, &pre).await, after);

    let admitted: Vec<QueueToken> =
        fx.svc.admission_tick(id).await.unwrap().into_iter().map(|record| record.token).collect();
    let mut order: Vec<(u64, QueueToken)> = after.iter().copied().zip(pre.iter().cloned()).collect();
    order.sort_unstable_by_key(|(place, _)| *place);
    let mut expected: Vec<QueueToken> = order.into_iter().map(|(_, token)| token).collect();
    expected.push(late.record.token);
    assert_eq!(admitted, expected, "the drawn order, then first come first served");
    assert_eq!(fx.svc.sale_actions(id).await.unwrap().len(), 1, "opened once");
}

/// A first-come pre-queue keeps its order at the opening, and its buyers see their places while
/// they wait for it.
pub async fn a_first_come_pre_queue_keeps_its_order<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    use ticketing_core::catalog::PreQueue;
    let fx = scheduled(s, -10, -1, PreQueue::Fifo).await;
    let id = fx.concert_id();
    let mut pre = Vec::new();
    for i in 0..3 {
        let view = fx.svc.issue_token(&user(&format!("u{i}")), id).await.unwrap();
        assert_eq!(view.position, Some(i + 1), "its place, while it waits for the opening");
        pre.push(view.record.token);
    }
    let before = places(&fx, &pre).await;
    fx.clock.advance_secs(10);
    assert_eq!(fx.svc.admission_tick(id).await.unwrap().len(), 0, "opens");
    assert!(fx.svc.concert(id).await.unwrap().opened.is_some());
    assert_eq!(places(&fx, &pre).await, before, "not drawn");
    let admitted: Vec<QueueToken> =
        fx.svc.admission_tick(id).await.unwrap().into_iter().map(|record| record.token).collect();
    assert_eq!(admitted, pre);
}

/// A node whose clock runs ahead of the store's cannot open a sale early: the booking store
/// refuses to record the opening until its own clock reaches it, so nobody is admitted.
pub async fn a_node_whose_clock_runs_ahead_opens_no_sale_early<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    use ticketing_core::catalog::PreQueue;
    // The sale opens in an hour by the store's (wall) clock; the node's clock is two hours on.
    let fx = scheduled(s, 7_200, 3_600, PreQueue::Random).await;
    let id = fx.concert_id();
    let token = fx.token("early").await;
    for _ in 0..3 {
        assert_eq!(fx.svc.admission_tick(id).await.unwrap().len(), 0);
        fx.clock.advance_secs(1);
    }
    assert_eq!(fx.svc.booking_store().concert(id).await.unwrap().unwrap().opened, None, "not recorded");
    assert!(fx.svc.sale_actions(id).await.unwrap().is_empty());
    let status = fx.svc.token_status(&token).await.unwrap();
    assert_eq!((status.status, status.opens_at), (TokenStatus::Waiting, fx.concert.concert.sales_open_at));
}

/// An operator revokes a buyer's token: the revocation is recorded durably with its audit entry
/// (the token's history says so, and a lost line's open admissions leave it out), the token
/// answers `token_revoked` on every route, its live holds are released (the seat is free), a
/// waiting token gives up its place; revoking again does nothing more; the user may join again
/// at the back.
pub async fn an_operator_revokes_a_token_and_its_holds_are_released<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    use ticketing_core::catalog::SaleActionKind;
    let fx = fixture(s, generous(), 4).await;
    let ops = user("ops");
    let alice = fx.admitted("alice").await;
    let (bob, carol) = (fx.token("bob").await, fx.token("carol").await);
    let held = fx.svc.hold(&alice, fx.seat(0), key("hold-once")).await.unwrap();
    assert_eq!(fx.seat_status(0).await, SeatStatus::Held);
    let admitted = fx.svc.queue_store().token(&alice).await.unwrap().unwrap();
    fx.svc.booking_store().log_admissions(7, std::slice::from_ref(&admitted)).await.unwrap();

    let revoked = fx.svc.revoke(fx.concert_id(), &user("alice"), &ops).await.unwrap();
    assert!(revoked.record.revoked() && revoked.released == 1, "{revoked:?}");
    assert_eq!(fx.seat_status(0).await, SeatStatus::Available, "the hold is released");
    assert_eq!(domain(fx.svc.token_status(&alice).await), DomainError::TokenRevoked);
    assert_eq!(domain(fx.svc.balance(&alice).await), DomainError::TokenRevoked);
    let schedule = fx.concert.schedules[0].id;
    assert_eq!(domain(fx.svc.seats(&alice, schedule).await), DomainError::TokenRevoked);
    assert_eq!(domain(fx.svc.hold(&alice, fx.seat(1), None).await), DomainError::TokenRevoked);
    // Not even a replay under its key, nor its own (released) hold, read, paid or left.
    assert_eq!(domain(fx.svc.hold(&alice, fx.seat(0), key("hold-once")).await), DomainError::TokenRevoked);
    assert_eq!(domain(fx.svc.reservation(&alice, held.id).await), DomainError::TokenRevoked);
    assert_eq!(domain(fx.svc.pay(&alice, held.id, key("pay-once")).await), DomainError::TokenRevoked);
    assert_eq!(domain(fx.svc.release(&alice, held.id).await), DomainError::TokenRevoked);
    assert_eq!(domain(fx.svc.leave(&alice).await), DomainError::TokenRevoked);

    // Durable where the money is: the history gives it back revoked, the open admissions leave it out.
    let history = fx.svc.booking_store().history(&user("alice"), &alice).await.unwrap();
    assert_eq!(history.revoked_at, Some(fx.clock.now()));
    let open = fx.svc.booking_store().admissions(fx.concert_id(), fx.clock.now()).await.unwrap();
    assert!(open.open.iter().all(|r| r.token != alice), "{open:?}");

    // Revoking again: nothing more written; a waiting token gives up its place.
    assert_eq!(fx.svc.revoke(fx.concert_id(), &user("alice"), &ops).await.unwrap().released, 0);
    fx.svc.revoke(fx.concert_id(), &user("bob"), &ops).await.unwrap();
    assert_eq!(domain(fx.svc.token_status(&bob).await), DomainError::TokenRevoked);
    assert_eq!(fx.svc.token_status(&carol).await.unwrap().position, Some(1), "carol moved up");
    assert_eq!(
        domain(fx.svc.revoke(fx.concert_id(), &user("nobody"), &ops).await),
        DomainError::TokenNotFound
    );
    let trail = fx.svc.sale_actions(fx.concert_id()).await.unwrap();
    let seen: Vec<_> =
        trail.iter().map(|a| (a.kind, a.operator.as_str(), a.subject.as_ref().map(UserId::as_str))).collect();
    assert_eq!(
        seen,
        [(SaleActionKind::Revoke, "ops", Some("alice")), (SaleActionKind::Revoke, "ops", Some("bob"))],
        "one entry per revocation"
    );
    assert_eq!(trail[0].before, trail[0].after, "the sale itself is unchanged");

    // Joining again is a new token at the back.
    let back = fx.svc.issue_token(&user("alice"), fx.concert_id()).await.unwrap();
    assert!(back.created && back.record.token != alice && back.position == Some(2), "{back:?}");

    // The race: a hold its token wrote in the instant of the revocation, after the revocation
    // listed the token's holds (here: steps 1 and 2 of a revocation without step 3), lapses
    // unpaid: no token of its user pays it, not even a new admitted one.
    use ticketing_core::catalog::{SaleAction, SaleState};
    let dave = fx.admitted("dave").await;
    let late = fx.svc.hold(&dave, fx.seat(1), None).await.unwrap();
    let record = fx.svc.queue_store().token(&dave).await.unwrap().unwrap();
    let state = SaleState::from(&fx.svc.booking_store().concert(fx.concert_id()).await.unwrap().unwrap());
    let action = SaleAction {
        concert_id: fx.concert_id(),
        operator: ops.clone(),
        kind: SaleActionKind::Revoke,
        at: fx.clock.now(),
        before: state,
        after: state,
        subject: Some(user("dave")),
    };
    let revocation =
        ticketing_core::store::Revocation { token: dave.identity(), user_id: user("dave"), action };
    fx.svc.booking_store().revoke_token(&revocation).await.unwrap();
    let revoked = queue::revoke(&record, fx.clock.now()).unwrap();
    fx.svc.queue_store().update_token(record.version, &revoked).await.unwrap();
    let again = fx.admitted("dave").await;
    fx.svc.charge(&again, 10 * PRICE, None).await.unwrap();
    assert_eq!(domain(fx.svc.pay(&again, late.id, None).await), DomainError::TokenRevoked);
}

/// A concert of `seats` seats at [`PRICE`] whose tokens may hold `holds` seats each and whose
/// buyers may buy at most `cap`.
async fn family_concert<Q: QueueStore, B: BookingStore>(
    fx: &Fx<Q, B>,
    seats: u32,
    holds: u32,
    cap: Option<u32>,
) -> ConcertPlan {
    let concert = NewConcert {
        max_seats_per_buyer: cap,
        holds_per_token: Some(holds),
        ..one_schedule("Family", seats)
    };
    fx.svc.create_concert(&concert).await.unwrap()
}

pub async fn several_holds_are_paid_in_one_payment_all_or_none<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    // The deployment allows one hold per token; the concert's own setting allows four.
    let fx = fixture(s, generous(), 1).await;
    let family = family_concert(&fx, 5, 4, None).await;
    let stored = fx.svc.booking_store().concert(family.concert.id).await.unwrap().unwrap();
    assert_eq!(stored.holds_per_token, Some(4), "the setting is stored");
    let seat = |i: usize| family.seats[i].id;
    let alice = admitted_to(&fx, "alice", &family).await;
    fx.svc.charge(&alice, 2 * PRICE, None).await.unwrap();
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(fx.svc.hold(&alice, seat(i), None).await.expect("the concert allows four holds").id);
    }
    assert_eq!(
        domain(fx.svc.hold(&alice, seat(4), None).await),
        DomainError::HoldLimitReached { limit: 4 },
        "a fifth is refused"
    );
    let status = |i: usize| {
        let svc = Arc::clone(&fx.svc);
        let (id, now) = (seat(i), fx.clock.now());
        async move { svc.booking_store().seat(id).await.unwrap().unwrap().status_at(now) }
    };
    let held_still = |ids: &'static [usize]| {
        let svc = Arc::clone(&fx.svc);
        let ids: Vec<ReservationId> = ids.iter().map(|i| held[*i]).collect();
        async move {
            for id in ids {
                let r = svc.booking_store().reservation(id).await.unwrap().unwrap();
                assert_eq!(r.status, ReservationStatus::Held, "{id} is still held");
            }
        }
    };

    // Bad lists are refused before anything is read.
    assert!(matches!(domain(fx.svc.pay_order(&alice, &[], None).await), DomainError::InvalidInput { .. }));
    assert!(matches!(
        domain(fx.svc.pay_order(&alice, &[held[0], held[0]], None).await),
        DomainError::InvalidInput { .. }
    ));
    // The balance must cover the sum: nothing is paid, everything stays held.
    assert_eq!(
        domain(fx.svc.pay_order(&alice, &held[..3], None).await),
        DomainError::InsufficientBalance {
            balance: Points::new(2 * PRICE).unwrap(),
            required: Points::new(3 * PRICE).unwrap()
        }
    );
    held_still(&[0, 1, 2, 3]).await;
    // One hold let go: the payment naming it pays none of the others.
    fx.svc.release(&alice, held[3]).await.unwrap();
    fx.svc.charge(&alice, 2 * PRICE, None).await.unwrap();
    assert_eq!(
        domain(fx.svc.pay_order(&alice, &[held[0], held[1], held[3]], None).await),
        DomainError::HoldReleased
    );
    held_still(&[0, 1, 2]).await;
    assert_eq!(fx.balance("alice").await, 4 * PRICE, "nothing debited");

    // Three at once: one debit, a payment and a ledger entry per seat, every seat booked.
    let version = fx.svc.booking_store().wallet(&user("alice")).await.unwrap().version;
    let order = [held[2], held[0], held[1]];
    let receipt = fx.svc.pay_order(&alice, &order, key("family")).await.unwrap();
    assert_eq!(receipt.payments.len(), 3);
    assert_eq!((receipt.balance.get(), receipt.total().get()), (PRICE, 3 * PRICE));
    let seats_in_order: Vec<SeatId> = receipt.payments.iter().map(|p| p.seat_id).collect();
    let mut sorted = seats_in_order.clone();
    sorted.sort();
    assert_eq!(seats_in_order, sorted, "in seat order");
    let wallet = fx.svc.booking_store().wallet(&user("alice")).await.unwrap();
    assert_eq!((wallet.balance.get(), wallet.version), (PRICE, version + 1), "debited once");
    let ledger = fx.svc.booking_store().ledger(&user("alice")).await.unwrap();
    let paid: Vec<_> = ledger.iter().filter(|e| e.kind == LedgerKind::Payment).collect();
    assert_eq!(paid.len(), 3, "one entry per seat");
    assert_eq!(
        paid.iter().map(|e| e.balance_after.get()).collect::<Vec<_>>(),
        vec![3 * PRICE, 2 * PRICE, PRICE],
        "running balances in order"
    );
    for payment in &receipt.payments {
        assert!(paid.iter().any(|e| e.payment_id == Some(payment.id) && e.amount == payment.amount));
        assert_eq!(
            fx.svc.booking_store().payment_of(payment.reservation_id).await.unwrap().as_ref(),
            Some(payment)
        );
    }
    fx.assert_ledger_balances("alice").await;
    for i in 0..3 {
        assert_eq!(status(i).await, SeatStatus::Booked);
    }
    assert_eq!(status(3).await, SeatStatus::Available, "the released seat stays free");
    assert_eq!(fx.status(&alice).await, TokenStatus::Expired, "nothing left to pay");

    // The key answers again for the same set in any order, and refuses another set.
    let replay = fx.svc.pay_order(&alice, &[held[0], held[1], held[2]], key("family")).await.unwrap();
    assert_eq!(replay, receipt);
    assert_eq!(
        domain(fx.svc.pay_order(&alice, &[held[0], held[1]], key("family")).await),
        DomainError::IdempotencyKeyReused
    );
    assert_eq!(domain(fx.svc.pay_order(&alice, &held[..2], key("again")).await), DomainError::AlreadyPaid);
}

pub async fn a_payment_of_several_seats_counts_them_all_against_the_cap<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    // A token holds no more than its buyer may buy, whatever the concert's holds per token say.
    let generous_holds = family_concert(&fx, 4, 3, Some(2)).await;
    let bob = admitted_to(&fx, "bob", &generous_holds).await;
    for seat in &generous_holds.seats[..2] {
        fx.svc.hold(&bob, seat.id, None).await.unwrap();
    }
    assert_eq!(
        domain(fx.svc.hold(&bob, generous_holds.seats[2].id, None).await),
        DomainError::HoldLimitReached { limit: 2 }
    );
    let family = family_concert(&fx, 4, 2, Some(2)).await;
    let alice = admitted_to(&fx, "alice", &family).await;
    fx.svc.charge(&alice, 10 * PRICE, None).await.unwrap();
    let first = fx.svc.hold(&alice, family.seats[0].id, None).await.unwrap();
    fx.svc.pay(&alice, first.id, None).await.unwrap();
    // One bought; back in line for two more, together.
    let alice = admitted_to(&fx, "alice", &family).await;
    let mut held = Vec::new();
    for seat in &family.seats[1..3] {
        held.push(fx.svc.hold(&alice, seat.id, None).await.unwrap().id);
    }
    assert_eq!(
        domain(fx.svc.pay_order(&alice, &held, None).await),
        DomainError::BuyerLimitReached { limit: 2 },
        "one bought and two more would pass the cap of two"
    );
    assert_eq!(fx.balance("alice").await, 9 * PRICE, "nothing debited");
    let receipt = fx.svc.pay_order(&alice, &held[..1], None).await.expect("one more is within the cap");
    assert_eq!(receipt.payments.len(), 1);
    assert_eq!(domain(fx.svc.pay(&alice, held[1], None).await), DomainError::BuyerLimitReached { limit: 2 });
    assert_eq!(fx.svc.booking_store().seats_bought(&user("alice"), family.concert.id, &[]).await.unwrap(), 2);
    assert_eq!(
        fx.svc.booking_store().seats_bought(&user("alice"), family.concert.id, &[first.id]).await.unwrap(),
        1,
        "a named reservation is left out"
    );
    fx.assert_ledger_balances("alice").await;
}

/// Racing payments of one hold on a concert that sells one seat per buyer: one pays, every other
/// is told the hold is already paid (never that the buyer is at the cap: the hold being paid is
/// left out of the count by its id, whatever a racing payment did to it meanwhile).
pub async fn racing_payments_of_one_capped_hold_lose_as_already_paid<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let capped = capped_concert(&fx, 2, 1).await;
    let alice = admitted_to(&fx, "alice", &capped).await;
    fx.svc.charge(&alice, 5 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, capped.seats[0].id, None).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let (svc, token, barrier) = (Arc::clone(&fx.svc), alice.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                svc.pay(&token, held.id, key(&format!("race-{i}"))).await
            })
        })
        .collect();
    let mut paid = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => paid += 1,
            Err(Error::Domain(DomainError::AlreadyPaid)) => {}
            Err(other) => panic!("a racing payment answered {other:?}"),
        }
    }
    assert_eq!(paid, 1);
    assert_eq!(fx.balance("alice").await, 4 * PRICE, "one debit");
}

pub async fn racing_payments_of_overlapping_holds_book_each_seat_once<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let family = family_concert(&fx, 3, 3, None).await;
    let alice = admitted_to(&fx, "alice", &family).await;
    fx.svc.charge(&alice, 10 * PRICE, None).await.unwrap();
    let mut held = Vec::new();
    for seat in &family.seats {
        held.push(fx.svc.hold(&alice, seat.id, None).await.unwrap().id);
    }
    // Every two of these sets share a hold, so exactly one payment can win.
    let (a, b, c) = (held[0], held[1], held[2]);
    let sets = [vec![a, b], vec![b, c], vec![c, a], vec![a, b, c], vec![c, b, a], vec![b, a]];
    let barrier = Arc::new(tokio::sync::Barrier::new(sets.len() * 2));
    let attempts: Vec<_> = sets
        .iter()
        .chain(sets.iter())
        .enumerate()
        .map(|(i, set)| {
            let (svc, token, barrier, set) =
                (Arc::clone(&fx.svc), alice.clone(), Arc::clone(&barrier), set.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                svc.pay_order(&token, &set, key(&format!("race-{i}"))).await
            })
        })
        .collect();
    let mut won = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(receipt) => won.push(receipt),
            Err(Error::Domain(DomainError::AlreadyPaid)) => {}
            Err(other) => panic!("a racing payment answered {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let paid = won[0].payments.len() as i64;
    assert_eq!(fx.balance("alice").await, (10 - paid) * PRICE, "one debit of the winner's seats");
    let ledger = fx.svc.booking_store().ledger(&user("alice")).await.unwrap();
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Payment).count() as i64, paid);
    fx.assert_ledger_balances("alice").await;
    let now = fx.clock.now();
    for (seat, id) in family.seats.iter().zip(&held) {
        let status = fx.svc.booking_store().seat(seat.id).await.unwrap().unwrap().status_at(now);
        let in_winner = won[0].payments.iter().any(|p| p.reservation_id == *id);
        assert_eq!(status == SeatStatus::Booked, in_winner, "seat {}", seat.number);
    }
}

/// A payment of several seats planned from one read, written after one of its seats moved on (its
/// hold released and the seat held again): the store refuses it as a conflict and writes none of
/// it (the other seat stays held, the wallet and ledger unchanged, no payment recorded). Then a
/// plan whose every seat is unchanged but whose wallet moved is refused the same way.
pub async fn a_payment_of_several_seats_writes_all_or_nothing_in_the_store<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let family = family_concert(&fx, 3, 3, None).await;
    let alice = admitted_to(&fx, "alice", &family).await;
    let bob = admitted_to(&fx, "bob", &family).await;
    fx.svc.charge(&alice, 10 * PRICE, None).await.unwrap();
    let mut held = Vec::new();
    for seat in family.seats.iter().take(3) {
        held.push(fx.svc.hold(&alice, seat.id, None).await.unwrap());
    }
    // In seat order, the order a store writes them in: the seat that moves on is written last,
    // so a store that wrote seat by seat would have written the first already.
    held.sort_by_key(|r| r.seat_id);
    held.swap(1, 2);
    let store = fx.svc.booking_store();
    let now = fx.clock.now();
    let plan = |holds: &[&hold::Reservation], seats: &[ticketing_core::catalog::SeatRecord], wallet| {
        let ids: Vec<_> = holds
            .iter()
            .map(|_| ticketing_core::payment::PaymentIds {
                payment: ticketing_core::ids::PaymentId::random(),
                entry: LedgerEntryId::random(),
            })
            .collect();
        let order: Vec<_> = holds.iter().zip(seats).zip(&ids).map(|((r, s), ids)| (*r, s, *ids)).collect();
        ticketing_core::payment::plan_order(&order, wallet, &user("alice"), now).unwrap()
    };
    let mut seats = Vec::new();
    for r in &held {
        seats.push(store.seat(r.seat_id).await.unwrap().unwrap());
    }
    let wallet = store.wallet(&user("alice")).await.unwrap();
    let stale = plan(&[&held[0], &held[1]], &seats[..2], &wallet);
    // The second seat moves on: released, then held by bob.
    fx.svc.release(&alice, held[1].id).await.unwrap();
    fx.svc.hold(&bob, held[1].seat_id, None).await.unwrap();
    assert!(matches!(store.commit_payment(&stale, None).await, Err(StoreError::Conflict(_))));
    let first = store.reservation(held[0].id).await.unwrap().unwrap();
    assert_eq!(first.status, ReservationStatus::Held, "the other seat stays held");
    assert_eq!(store.seat(held[0].seat_id).await.unwrap().unwrap(), seats[0], "its seat untouched");
    assert_eq!(store.payment_of(held[0].id).await.unwrap(), None, "no payment recorded");
    assert_eq!(store.wallet(&user("alice")).await.unwrap(), wallet, "the wallet untouched");
    assert!(store.ledger(&user("alice")).await.unwrap().iter().all(|e| e.kind == LedgerKind::Charge));

    // A plan whose last seat names a fence the seat does not have (its reservation untouched):
    // refused, and the first seat, which the store reaches first, is not written either.
    let mut forged = plan(&[&held[0], &held[2]], &[seats[0].clone(), seats[2].clone()], &wallet);
    let last = forged.seats.len() - 1;
    forged.seats[last].expected_fence = forged.seats[last].expected_fence.next();
    assert!(matches!(store.commit_payment(&forged, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.seat(held[0].seat_id).await.unwrap().unwrap(), seats[0], "the first seat untouched");
    assert_eq!(store.reservation(held[0].id).await.unwrap().unwrap().status, ReservationStatus::Held);
    assert_eq!(store.wallet(&user("alice")).await.unwrap(), wallet, "the wallet untouched");

    // Every seat unchanged, the wallet moved: refused too, nothing written.
    let stale = plan(&[&held[0], &held[2]], &[seats[0].clone(), seats[2].clone()], &wallet);
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    assert!(matches!(store.commit_payment(&stale, None).await, Err(StoreError::Conflict(_))));
    for r in [&held[0], &held[2]] {
        assert_eq!(store.reservation(r.id).await.unwrap().unwrap().status, ReservationStatus::Held);
        assert_eq!(store.payment_of(r.id).await.unwrap(), None);
    }
    assert_eq!(fx.seat_status_of(held[2].seat_id).await, SeatStatus::Held);
    fx.assert_ledger_balances("alice").await;
}

pub async fn a_buyer_reads_their_own_reservations_and_ledger<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let config = Config { holds_per_token: 2, ..Config::default() };
    let fx = fixture_with(s, generous(), 4, config).await;
    let alice = fx.admitted("alice").await;
    let bob = fx.admitted("bob").await;
    fx.svc.charge(&alice, 2 * PRICE, None).await.unwrap();
    let released = fx.svc.hold(&alice, fx.seat(0), None).await.unwrap();
    fx.svc.release(&alice, released.id).await.unwrap();
    fx.clock.advance_secs(1);
    let paid = fx.svc.hold(&alice, fx.seat(1), None).await.unwrap();
    fx.clock.advance_secs(1);
    let held = fx.svc.hold(&alice, fx.seat(2), None).await.unwrap();
    fx.svc.hold(&bob, fx.seat(3), None).await.unwrap();
    fx.svc.pay(&alice, paid.id, None).await.unwrap();
    let mine = fx.svc.my_reservations(&alice).await.unwrap();
    let seen: Vec<_> = mine.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        seen,
        vec![
            (held.id, ReservationStatus::Held),
            (paid.id, ReservationStatus::Confirmed),
            (released.id, ReservationStatus::Released)
        ],
        "newest first, bob's left out"
    );
    // Once the hold lapses it reads as expired, before any sweep.
    fx.advance_to(held.expires_at);
    let mine = fx.svc.my_reservations(&alice).await.unwrap();
    assert_eq!(mine[0].status, ReservationStatus::Expired);
    let account = fx.svc.my_account(&alice).await.unwrap();
    assert_eq!(account.wallet.balance.get(), PRICE);
    assert_eq!(
        account.ledger.iter().map(|e| (e.kind, e.amount.get())).collect::<Vec<_>>(),
        vec![(LedgerKind::Charge, 2 * PRICE), (LedgerKind::Payment, PRICE)],
        "oldest first"
    );
    assert_eq!(fx.svc.my_reservations(&bob).await.unwrap().len(), 1, "bob sees only his own");
    let stranger = QueueToken::generate(fx.concert_id());
    assert!(fx.svc.my_reservations(&stranger).await.is_err(), "an unknown token reads nothing");
}

/// A concert of `seats` seats at [`PRICE`], whose performance starts at 1,960,000,000 s and
/// whose buyers may cancel until `window` seconds before it.
async fn refundable_concert<Q: QueueStore, B: BookingStore>(
    fx: &Fx<Q, B>,
    seats: u32,
    window: Option<u64>,
) -> ConcertPlan {
    let concert = NewConcert { cancel_until_secs_before_start: window, ..one_schedule("Refundable", seats) };
    fx.svc.create_concert(&concert).await.unwrap()
}

pub async fn a_booking_is_cancelled_refunded_and_sold_again<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let day = 86_400;
    let concert = refundable_concert(&fx, 2, Some(day)).await;
    let stored = fx.svc.booking_store().concert(concert.concert.id).await.unwrap().unwrap();
    assert_eq!(stored.cancel_until_secs_before_start, Some(day), "the window is stored");
    let seat = concert.seats[0].id;
    let alice = admitted_to(&fx, "alice", &concert).await;
    fx.svc.charge(&alice, 3 * PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, seat, None).await.unwrap();
    assert_eq!(
        domain(fx.svc.cancel(&alice, held.id, None).await),
        DomainError::NotPaid,
        "a hold is released, not cancelled"
    );
    let paid = fx.svc.pay(&alice, held.id, None).await.unwrap();
    let version = fx.svc.booking_store().wallet(&user("alice")).await.unwrap().version;

    // Someone else's booking is not theirs to cancel.
    let carol = admitted_to(&fx, "carol", &concert).await;
    assert_eq!(domain(fx.svc.cancel(&carol, held.id, None).await), DomainError::NotOwner);

    let refund = fx.svc.cancel(&alice, held.id, key("cancel-1")).await.unwrap();
    assert_eq!((refund.amount.get(), refund.balance.get()), (PRICE, 3 * PRICE), "the points come back");
    assert_eq!(
        (refund.reservation_id, refund.payment_id, refund.seat_id),
        (held.id, paid.payments[0].id, seat)
    );
    let store = fx.svc.booking_store();
    let wallet = store.wallet(&user("alice")).await.unwrap();
    assert_eq!((wallet.balance.get(), wallet.version), (3 * PRICE, version + 1));
    let ledger = store.ledger(&user("alice")).await.unwrap();
    assert_eq!(
        ledger.iter().map(|e| (e.kind, e.amount.get())).collect::<Vec<_>>(),
        vec![(LedgerKind::Charge, 3 * PRICE), (LedgerKind::Payment, PRICE), (LedgerKind::Refund, PRICE)]
    );
    assert_eq!(ledger[2].payment_id, Some(paid.payments[0].id), "the refund names its payment");
    fx.assert_ledger_balances("alice").await;
    assert_eq!(store.reservation(held.id).await.unwrap().unwrap().status, ReservationStatus::Cancelled);
    let payment = store.payment_of(held.id).await.unwrap().unwrap();
    assert_eq!(payment.refunded_at, Some(refund.at), "the payment keeps its history, refunded");
    assert_eq!(fx.seat_status_of(seat).await, SeatStatus::Available);
    assert_eq!(store.seats_bought(&user("alice"), concert.concert.id, &[]).await.unwrap(), 0);
    // The token paid all the same: a queue store that lost it gives it back expired, not active.
    assert!(store.history(&user("alice"), &alice).await.unwrap().paid_at.is_some(), "still paid with");
    let open = store.admissions(concert.concert.id, fx.clock.now()).await.unwrap().open;
    assert!(open.iter().all(|r| r.token != alice), "not an open admission again");
    // Again: the key answers the same; without it, already cancelled; nothing moves twice.
    assert_eq!(fx.svc.cancel(&alice, held.id, key("cancel-1")).await.unwrap(), refund);
    assert_eq!(domain(fx.svc.cancel(&alice, held.id, None).await), DomainError::AlreadyCancelled);
    assert_eq!(domain(fx.svc.cancel_by_operator(held.id, None).await), DomainError::AlreadyCancelled);
    assert_eq!(fx.balance("alice").await, 3 * PRICE, "refunded once");
    assert_eq!(domain(fx.svc.pay(&alice, held.id, None).await), DomainError::AlreadyCancelled);

    // The seat is sold again, to bob, and paid by one live payment.
    let bob = admitted_to(&fx, "bob", &concert).await;
    fx.svc.charge(&bob, PRICE, None).await.unwrap();
    let again = fx.svc.hold(&bob, seat, None).await.unwrap();
    let resold = fx.svc.pay(&bob, again.id, None).await.unwrap();
    assert_eq!(fx.seat_status_of(seat).await, SeatStatus::Booked);
    assert_eq!(store.payment_of(again.id).await.unwrap().as_ref(), Some(&resold.payments[0]));
    // Past the window bob may not cancel; an operator still may.
    fx.advance_to(DateTime::from_timestamp(1_960_000_000 - 86_400, 0).unwrap());
    assert_eq!(domain(fx.svc.cancel(&bob, again.id, None).await), DomainError::CancellationClosed);
    let by_operator = fx.svc.cancel_by_operator(again.id, key("op-1")).await.unwrap();
    assert_eq!((by_operator.user_id.as_str(), by_operator.balance.get()), ("bob", PRICE));
    assert_eq!(fx.svc.cancel_by_operator(again.id, key("op-1")).await.unwrap(), by_operator, "replayed");
    assert_eq!(fx.seat_status_of(seat).await, SeatStatus::Available);
    fx.assert_ledger_balances("bob").await;

    // A concert without a window: its buyers may not cancel at all.
    let strict = refundable_concert(&fx, 1, None).await;
    let dave = admitted_to(&fx, "dave", &strict).await;
    fx.svc.charge(&dave, PRICE, None).await.unwrap();
    let held = fx.svc.hold(&dave, strict.seats[0].id, None).await.unwrap();
    fx.svc.pay(&dave, held.id, None).await.unwrap();
    assert_eq!(domain(fx.svc.cancel(&dave, held.id, None).await), DomainError::CancellationClosed);
    assert_eq!(
        domain(fx.svc.cancel_by_operator(ReservationId::random(), None).await),
        DomainError::ReservationNotFound
    );
}

pub async fn racing_cancellations_of_one_booking_refund_it_once<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let concert = refundable_concert(&fx, 1, Some(60)).await;
    let alice = admitted_to(&fx, "alice", &concert).await;
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, concert.seats[0].id, None).await.unwrap();
    fx.svc.pay(&alice, held.id, None).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let attempts: Vec<_> = (0..16)
        .map(|i| {
            let (svc, token, barrier) = (Arc::clone(&fx.svc), alice.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 {
                    svc.cancel(&token, held.id, key(&format!("race-{i}"))).await
                } else {
                    svc.cancel_by_operator(held.id, key(&format!("race-{i}"))).await
                }
            })
        })
        .collect();
    let mut refunded = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => refunded += 1,
            Err(Error::Domain(DomainError::AlreadyCancelled)) => {}
            Err(other) => panic!("a racing cancellation answered {other:?}"),
        }
    }
    assert_eq!(refunded, 1);
    assert_eq!(fx.balance("alice").await, PRICE, "refunded once");
    let ledger = fx.svc.booking_store().ledger(&user("alice")).await.unwrap();
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Refund).count(), 1);
    fx.assert_ledger_balances("alice").await;
}

/// A cancellation planned from one read, written after the buyer's wallet moved on: refused as
/// a conflict, nothing written (the seat still booked, the reservation CONFIRMED, the payment
/// not refunded).
pub async fn a_stale_cancellation_writes_nothing<Q: QueueStore, B: BookingStore>(
    s: impl Future<Output = Stores<Q, B>>,
) {
    let fx = fixture(s, generous(), 1).await;
    let concert = refundable_concert(&fx, 1, Some(60)).await;
    let alice = admitted_to(&fx, "alice", &concert).await;
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    let held = fx.svc.hold(&alice, concert.seats[0].id, None).await.unwrap();
    fx.svc.pay(&alice, held.id, None).await.unwrap();
    let store = fx.svc.booking_store();
    let inputs = store.refund_inputs(held.id, None).await.unwrap();
    let reservation = inputs.reservation.unwrap();
    let seat = inputs.seat.unwrap();
    let plan = ticketing_core::payment::plan_refund(
        &reservation,
        &seat,
        inputs.payment.as_ref(),
        &inputs.wallet.unwrap(),
        &ticketing_core::payment::Canceller::Operator,
        LedgerEntryId::random(),
        fx.clock.now(),
    )
    .unwrap();
    fx.svc.charge(&alice, PRICE, None).await.unwrap();
    assert!(matches!(store.cancel_booking(&plan, None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.reservation(held.id).await.unwrap().unwrap().status, ReservationStatus::Confirmed);
    assert_eq!(store.seat(seat.seat.id).await.unwrap().unwrap(), seat, "the seat still booked");
    assert_eq!(store.payment_of(held.id).await.unwrap().unwrap().refunded_at, None);
    assert_eq!(fx.balance("alice").await, PRICE);
    fx.assert_ledger_balances("alice").await;
}
