//! The queue survives its store losing its data: what Redis without persistence does when it
//! restarts, or a failover to an empty replica. Every key of the deployment is deleted mid-sale;
//! then buyers who come back keep their places and their order, admitted buyers stay admitted
//! until their deadline, newcomers queue after everyone who was there, admission waits for the
//! waiting buyers to come back and then goes on within both caps, and nothing forged or
//! legitimately forgotten comes back.
//!
//! Real Redis for the queue, the memory store for booking (the admission log lives there).

#![cfg(all(feature = "redis", feature = "testing", feature = "memory"))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use chrono::DateTime;
use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings};
use ticketing_core::claim::{Claim, TokenKey, TokenSigner};
use ticketing_core::ids::{ConcertId, Points, QueueToken, UserId};
use ticketing_core::queue::{TokenState, TokenStatus};
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::redis::RedisQueueStore;
use ticketing_core::store::{AdmissionLog, Lost, QueueStore, Restored};
use ticketing_core::testing::{fresh_redis_prefix, redis_connection};
use ticketing_core::{Clock, Config, DomainError, Error, ManualClock, Ticketing};

type Service = Ticketing<RedisQueueStore, MemoryStore, ManualClock>;

struct Sale {
    svc: Service,
    clock: ManualClock,
    concert: ConcertId,
    seats: Vec<ticketing_core::ids::SeatId>,
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

async fn sale(max_active: u32) -> Sale {
    sale_opening(max_active, None).await
}

/// [`sale`] of a concert whose sale opens at `sales_open_at` (its pre-queue drawn at random).
async fn sale_opening(max_active: u32, sales_open_at: Option<DateTime<chrono::Utc>>) -> Sale {
    let conn = redis_connection().await;
    let prefix = fresh_redis_prefix();
    let clock = ManualClock::at_epoch_secs(1_900_000_000);
    let svc = Ticketing::new(
        RedisQueueStore::new(conn.clone(), prefix.clone()),
        MemoryStore::new(),
        clock.clone(),
        Config::default(),
    )
    .with_token_key(TokenKey::from_secret(&"a shared secret of this deployment".repeat(2)).unwrap());
    let plan = svc
        .create_concert(&NewConcert {
            title: "Loss".into(),
            schedules: vec![NewSchedule {
                starts_at: DateTime::from_timestamp(1_950_000_000, 0).unwrap(),
                seat_count: 10,
                price: Points::new(100).unwrap(),
            }],
            queue: QueueSettings {
                max_active,
                admit_batch: 100,
                admit_interval_ms: 1_000,
                waiting_idle_secs: 60,
                active_ttl_secs: 600,
            },
            max_seats_per_buyer: None,
            holds_per_token: None,
            cancel_until_secs_before_start: None,
            sales_open_at,
            pre_queue: Default::default(),
        })
        .await
        .unwrap();
    Sale {
        svc,
        clock,
        concert: plan.concert.id,
        seats: plan.seats.iter().map(|s| s.id).collect(),
        conn,
        prefix,
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

impl Sale {
    async fn join(&self, name: &str) -> QueueToken {
        self.svc.issue_token(&user(name), self.concert).await.unwrap().record.token
    }

    /// Deletes every key of this deployment, as a Redis restart without persistence does, a
    /// second after the last step (a line's places are counted from the microsecond it began:
    /// time passes between a sale's start and a loss).
    async fn lose_redis(&self) {
        self.clock.advance_secs(1);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut self.conn.clone())
            .await
            .unwrap();
        assert!(!keys.is_empty());
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut self.conn.clone()).await.unwrap();
    }

    async fn position(&self, token: &QueueToken) -> Option<u64> {
        let view = self.svc.token_status(token).await.unwrap();
        assert_eq!(view.status, TokenStatus::Waiting, "{token:?} waits");
        view.position
    }

    async fn status(&self, token: &QueueToken) -> TokenStatus {
        self.svc.token_status(token).await.unwrap().status
    }
}

#[tokio::test]
async fn buyers_keep_their_places_and_admissions_when_redis_loses_its_data() {
    let s = sale(4).await;
    // a2 is admitted and never comes back during the test: only the tick's rebuild from the
    // admission log counts it against the capacity.
    let admitted: Vec<QueueToken> = vec![s.join("a0").await, s.join("a1").await, s.join("a2").await];
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 3);
    let waiting: Vec<QueueToken> = vec![s.join("w0").await, s.join("w1").await, s.join("w2").await];
    // a1 holds a seat before the loss.
    s.svc.charge(&admitted[1], 100, None).await.unwrap();
    let held = s.svc.hold(&admitted[1], s.seats[0], None).await.unwrap();

    s.lose_redis().await;

    // A newcomer right after the loss queues behind everyone who was there.
    let late = s.join("late").await;
    assert_eq!(s.position(&late).await, Some(1), "alone in the new line for now");

    // The first tick sees the line began again: it gives back the open admissions and admits
    // nobody while waiting buyers come back.
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap(), vec![]);
    assert_eq!(s.status(&admitted[0]).await, TokenStatus::Active, "admitted stays admitted");

    // Waiting buyers come back, out of order, and take their places back in order.
    assert_eq!(s.position(&waiting[2]).await, Some(1));
    assert_eq!(s.position(&waiting[0]).await, Some(1));
    assert_eq!(s.position(&waiting[2]).await, Some(2));
    assert_eq!(s.position(&late).await, Some(3), "w1 is not back yet");
    assert_eq!(s.position(&waiting[1]).await, Some(2));
    assert_eq!(s.position(&waiting[2]).await, Some(3));
    assert_eq!(s.position(&late).await, Some(4));

    // The admitted buyer with a hold pays for it with the same credential.
    let receipt = s.svc.pay(&admitted[1], held.id, None).await.unwrap();
    assert_eq!(receipt.payments[0].reservation_id, held.id);
    assert_eq!(
        s.svc.authenticate(&admitted[1]).await.unwrap().status_at(s.clock.now()),
        TokenStatus::Expired
    );

    // Admission waits out the longest poll pause (10 s here) and the margin, then admits in the
    // old order within the capacity cap: a0 and a2 are active and a1 paid, so two of four
    // places are free.
    s.clock.advance_secs(5);
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap(), vec![]);
    s.clock.advance_secs(10);
    let next = s.svc.admission_tick(s.concert).await.unwrap();
    let next: Vec<QueueToken> = next.into_iter().map(|r| r.token).collect();
    assert_eq!(next, vec![waiting[0].clone(), waiting[1].clone()]);
    assert_eq!(s.status(&waiting[0]).await, TokenStatus::Active);
    assert_eq!(s.position(&waiting[2]).await, Some(1));
    assert_eq!(s.position(&late).await, Some(2));
    assert_eq!(s.status(&admitted[2]).await, TokenStatus::Active, "given back by the tick");
}

#[tokio::test]
async fn a_node_that_starts_after_the_line_was_rebuilt_does_not_pause_it() {
    let s = sale(10).await;
    s.join("a0").await;
    s.svc.admission_tick(s.concert).await.unwrap();
    let w0 = s.join("w0").await;
    s.lose_redis().await;
    assert_eq!(s.position(&w0).await, Some(1));
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap(), vec![], "paused");
    s.clock.advance_secs(13);
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 1, "w0, after the pause");
    // A node started now (a fresh process over the same stores) checks the line: admissions
    // were logged in this generation already, so it admits at once.
    let w1 = s.join("w1").await;
    let restarted = Ticketing::new(
        s.svc.queue_store().clone(),
        s.svc.booking_store().clone(),
        s.clock.clone(),
        Config::default(),
    );
    s.clock.advance_secs(1);
    let admitted = restarted.admission_tick(s.concert).await.unwrap();
    assert_eq!(admitted.into_iter().map(|r| r.token).collect::<Vec<_>>(), vec![w1]);
}

#[tokio::test]
async fn a_paid_token_comes_back_expired_and_a_lapsed_one_timed_out() {
    let s = sale(10).await;
    let payer = s.join("payer").await;
    let idler = s.join("idler").await;
    s.svc.admission_tick(s.concert).await.unwrap();
    s.svc.charge(&payer, 100, None).await.unwrap();
    let held = s.svc.hold(&payer, s.seats[0], None).await.unwrap();
    s.svc.pay(&payer, held.id, None).await.unwrap();
    s.lose_redis().await;

    let back = s.svc.authenticate(&payer).await.unwrap();
    assert_eq!(back.status_at(s.clock.now()), TokenStatus::Expired, "a paid token does not act again");
    assert!(matches!(
        s.svc.hold(&payer, s.seats[1], None).await,
        Err(Error::Domain(DomainError::TokenExpired))
    ));
    // The buyer can still read back what it paid for.
    assert_eq!(s.svc.reservation(&payer, held.id).await.unwrap().id, held.id);

    s.clock.advance_secs(601);
    s.lose_redis().await;
    assert!(matches!(s.svc.token_status(&idler).await, Err(Error::Domain(DomainError::TokenExpired))));
}

#[tokio::test]
async fn nothing_forged_or_forgotten_comes_back() {
    let s = sale(10).await;
    let alice = s.join("alice").await;

    // The identity alone (no claim), a claim signed with another key, and a claim moved onto
    // another token are all unknown after the loss.
    s.lose_redis().await;
    let bare = alice.identity();
    assert!(matches!(s.svc.token_status(&bare).await, Err(Error::Domain(DomainError::TokenNotFound))));
    let other_key = TokenSigner::new(TokenKey::random());
    let claim = Claim { seq: 1, issued_at: s.clock.now(), user: user("alice") };
    let forged = other_key.sign(&alice, &claim);
    assert!(matches!(s.svc.token_status(&forged).await, Err(Error::Domain(DomainError::TokenNotFound))));
    let stranger = QueueToken::generate(s.concert).with_claim(alice.claim().unwrap());
    assert!(matches!(s.svc.token_status(&stranger).await, Err(Error::Domain(DomainError::TokenNotFound))));
    // The genuine credential still comes back.
    assert_eq!(s.status(&alice).await, TokenStatus::Waiting);

    // A token issued in the line's current generation and forgotten in the ordinary way (it went
    // idle and was swept after its retention) stays forgotten.
    let bob = s.join("bob").await;
    s.clock.advance_secs(60 + i64::try_from(ticketing_core::limits::TOKEN_RETENTION_SECS).unwrap() + 1);
    while s.svc.sweep().await.unwrap().tokens > 0 {}
    assert!(matches!(s.svc.token_status(&bob).await, Err(Error::Domain(DomainError::TokenNotFound))));
}

#[tokio::test]
async fn a_token_given_back_and_then_replaced_is_not_given_back_again() {
    let s = sale(10).await;
    let old = s.join("gina").await;
    s.lose_redis().await;
    assert_eq!(s.status(&old).await, TokenStatus::Waiting, "given back");
    // It goes idle; Gina asks again and gets a new token at the back.
    s.clock.advance_secs(61);
    let new = s.join("gina").await;
    assert_ne!(new, old);
    // The old credential's place is older than the line, but it was given back once already.
    assert!(matches!(s.svc.token_status(&old).await, Err(Error::Domain(DomainError::TokenNotFound))));
    assert_eq!(s.status(&new).await, TokenStatus::Waiting);
}

#[tokio::test]
async fn a_tick_planned_before_the_line_began_again_admits_nobody() {
    let s = sale(10).await;
    s.join("hal").await;
    let now = s.clock.now();
    let snapshot = s.svc.queue_store().admission_snapshot(s.concert, now).await.unwrap();
    assert_ne!(snapshot.generation, 0);
    let settings = s.svc.concert(s.concert).await.unwrap().queue;
    let plan = ticketing_core::queue::plan_admission(s.concert, &settings, &snapshot, now);
    s.lose_redis().await;
    // Someone comes back (or joins) before the stale plan is written: the line's generation
    // changed, so the plan is refused although the lost admission version reads 0 again.
    s.join("ivy").await;
    assert!(matches!(s.svc.queue_store().admit(&plan).await, Err(ticketing_core::StoreError::Conflict(_))));
}

#[tokio::test]
async fn a_restored_token_never_displaces_a_valid_admission_of_its_user() {
    let s = sale(10).await;
    let old = s.join("carol").await;
    s.lose_redis().await;
    // Carol joined again (from another device) and was admitted in the new line.
    let new = s.join("carol").await;
    assert_ne!(new, old);
    s.clock.advance_secs(20);
    s.svc.admission_tick(s.concert).await.unwrap();
    s.svc.admission_tick(s.concert).await.unwrap();
    assert_eq!(s.status(&new).await, TokenStatus::Active);
    // Her old credential does not bring back a second place.
    assert!(matches!(s.svc.token_status(&old).await, Err(Error::Domain(DomainError::TokenNotFound))));
    assert_eq!(s.status(&new).await, TokenStatus::Active);
}

#[tokio::test]
async fn restore_answers_for_each_token_in_one_script() {
    let s = sale(10).await;
    let present = s.svc.authenticate(&s.join("dave").await).await.unwrap();
    // Dave is the first of the line: his place is the line's generation + 1.
    let generation = present.seq().unwrap() - 1;
    let waiting = |name: &str, seq: u64| {
        let mut record = present.clone();
        record.token = QueueToken::generate(s.concert);
        record.user_id = user(name);
        record.state = TokenState::Waiting { seq, expires_at: s.clock.now() + chrono::Duration::seconds(60) };
        Lost { record, line_seq: seq }
    };
    let older = waiting("erin", generation - 1);
    let newer = waiting("frank", generation);
    let answers = s
        .svc
        .queue_store()
        .restore(
            &[Lost { record: present.clone(), line_seq: present.seq().unwrap() }, older.clone(), newer],
            s.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(answers[0], Restored::Present(present));
    assert!(
        matches!(&answers[1], Restored::Restored(r) if r.token == older.record.token && r.seq() == Some(generation - 1)),
        "{answers:?}"
    );
    assert_eq!(answers[2], Restored::NotLost, "a place of the current generation was not lost");
    // Erin is back ahead of Dave.
    assert_eq!(s.position(&older.record.token).await, Some(1));
    // The admission log is untouched by restores.
    assert_eq!(s.svc.booking_store().admissions(s.concert, s.clock.now()).await.unwrap().open, vec![]);
}

/// A pre-queue drawn at the opening keeps the drawn order when Redis loses its data: each
/// buyer's answer after the draw carries a claim of its new place, the line comes back in that
/// order, and the line is opened again without a second draw (the opening, and its one entry in
/// the audit trail, live in the booking store).
#[tokio::test]
async fn a_drawn_pre_queue_keeps_the_drawn_order_when_redis_loses_its_data() {
    let opens_at = DateTime::from_timestamp(1_900_000_010, 0).unwrap();
    let s = sale_opening(100, Some(opens_at)).await;
    let mut credentials = Vec::new();
    for i in 0..6 {
        credentials.push(s.join(&format!("p{i}")).await);
    }
    s.clock.advance_secs(10);
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 0, "opens");
    let mut drawn: Vec<(u64, QueueToken)> = Vec::new();
    for credential in &mut credentials {
        let view = s.svc.token_status(credential).await.unwrap();
        drawn.push((view.position.unwrap(), view.record.token.clone()));
        *credential = view.record.token; // The answer's credential: a claim of the drawn place.
    }
    let mut by_place = drawn.clone();
    by_place.sort_unstable_by_key(|(position, _)| *position);

    s.lose_redis().await;
    // Half come back at once; the line waits for the others (nothing is logged as admitted yet,
    // so it is the opening that waits).
    let (first, rest) = drawn.split_at(3);
    for (_, credential) in first {
        s.position(credential).await;
    }
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 0, "waits for the rest to come back");
    s.clock.advance_secs(5);
    for (_, credential) in rest {
        s.position(credential).await;
    }
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 0, "still within the pause");
    for (position, credential) in &drawn {
        assert_eq!(s.position(credential).await, Some(*position), "its drawn place, given back");
    }
    // Past the pause the line opens again (no draw), then admits in the drawn order.
    s.clock.advance_secs(8);
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 0, "opens again");
    let admitted: Vec<QueueToken> =
        s.svc.admission_tick(s.concert).await.unwrap().into_iter().map(|r| r.token).collect();
    assert_eq!(admitted, by_place.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
    let trail = s.svc.sale_actions(s.concert).await.unwrap();
    assert_eq!(trail.len(), 1, "opened once: {trail:?}");
}

/// A revoked token stays revoked when Redis loses its data: its claim gives it back revoked
/// (never in line, never admitted), and the rebuilt line's capacity does not count its admission.
#[tokio::test]
async fn a_revoked_token_comes_back_revoked() {
    let s = sale(2).await;
    let ops = user("ops");
    let admitted = s.join("a").await;
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 1);
    let waiting = s.join("w").await;
    let other = s.join("x").await;
    s.svc.revoke(s.concert, &user("a"), &ops).await.unwrap();
    s.svc.revoke(s.concert, &user("w"), &ops).await.unwrap();

    s.lose_redis().await;
    for token in [&admitted, &waiting] {
        assert_eq!(
            s.svc.token_status(token).await.map(|_| ()).unwrap_err().to_string(),
            Error::Domain(DomainError::TokenRevoked).to_string()
        );
    }
    assert_eq!(s.position(&other).await, Some(1), "the one left in line");
    // The rebuilt line counts no revoked admission: both places of the capacity are free.
    s.svc.admission_tick(s.concert).await.unwrap();
    s.clock.advance_secs(13);
    s.position(&other).await;
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 1);
    let snapshot = s.svc.queue_store().admission_snapshot(s.concert, s.clock.now()).await.unwrap();
    assert_eq!(snapshot.active, 1, "only x is active: the revoked admission was not given back");
}

/// A token whose holder left the line stays gone when Redis loses its data: its claim gives it
/// back expired (the leave is recorded in the booking store), and everyone behind keeps moving up.
#[tokio::test]
async fn a_token_that_left_the_line_comes_back_expired() {
    let s = sale(2).await;
    let (first, gone, last) = (s.join("a").await, s.join("b").await, s.join("c").await);
    s.svc.leave(&gone).await.unwrap();
    s.lose_redis().await;
    assert_eq!(s.position(&first).await, Some(1));
    assert_eq!(
        s.svc.token_status(&gone).await.map(|_| ()).unwrap_err().to_string(),
        Error::Domain(DomainError::TokenExpired).to_string(),
        "not back in line"
    );
    assert_eq!(s.position(&last).await, Some(2), "c stays behind a only");
}

/// A leave that lost its race to an admission (recorded, then the tick admitted the token first)
/// does not end the admission: a lost line's rebuild still counts it against the capacity.
#[tokio::test]
async fn an_admission_that_beat_a_leave_still_counts_after_a_loss() {
    use ticketing_core::store::AdmissionLog;
    let s = sale(2).await;
    let admitted = s.join("a").await;
    assert_eq!(s.svc.admission_tick(s.concert).await.unwrap().len(), 1);
    s.svc.booking_store().record_leave(&admitted, &user("a"), s.clock.now()).await.unwrap();
    s.lose_redis().await;
    s.svc.admission_tick(s.concert).await.unwrap();
    let snapshot = s.svc.queue_store().admission_snapshot(s.concert, s.clock.now()).await.unwrap();
    assert_eq!(snapshot.active, 1, "the admission was given back to the rebuilt line");
    assert_eq!(s.status(&admitted).await, TokenStatus::Active, "and its holder keeps it");
}
