//! The Redis queue store's own promises, beyond the conformance suite: a token is found from
//! itself alone (it carries its concert), issuing it is one script over one concert's hash slot,
//! and no key outside that slot is needed to read it back.

#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use chrono::{DateTime, Duration, Utc};
use ticketing_core::StoreError;
use ticketing_core::ids::{ConcertId, QueueToken, UserId};
use ticketing_core::queue::NewToken;
use ticketing_core::store::QueueStore;
use ticketing_core::store::memory::MemoryStore;
use ticketing_core::store::redis::RedisQueueStore;
use ticketing_core::testing::{fresh_redis_prefix, redis_connection};

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

fn new_token(concert: ConcertId, user: &str) -> NewToken {
    NewToken {
        token: QueueToken::generate(concert),
        user_id: UserId::parse(user).unwrap(),
        concert_id: concert,
        issued_at: now(),
        expires_at: now() + Duration::seconds(60),
    }
}

/// `token` with its concert part replaced by `concert`'s, the random part kept.
fn forged(token: &QueueToken, concert: ConcertId) -> QueueToken {
    let text = format!("{}{}", concert.as_uuid().simple(), &token.as_str()[32..]);
    QueueToken::parse(&text).unwrap()
}

async fn fresh_store() -> (RedisQueueStore, redis::aio::ConnectionManager, String) {
    let conn = redis_connection().await;
    let prefix = fresh_redis_prefix();
    (RedisQueueStore::new(conn.clone(), prefix.clone()), conn, prefix)
}

async fn keys(conn: &redis::aio::ConnectionManager, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn.clone()).await.unwrap()
}

#[tokio::test]
async fn an_issued_token_lives_in_its_concerts_slot_only_and_reads_back_alone() {
    let (store, conn, prefix) = fresh_store().await;
    let concert = ConcertId::random();
    let first = store.insert_token(new_token(concert, "alice"), None).await.unwrap();
    let second = store.insert_token(new_token(concert, "bob"), None).await.unwrap();

    // Every key is in the concert's hash slot, but for the sweeper's set of concerts: no token
    // index (`tok:<token>`, in another slot, written outside the script) exists any more.
    let tag = format!("{prefix}c:{{{concert}}}:");
    let found = keys(&conn, &prefix).await;
    assert!(found.iter().all(|k| k.starts_with(&tag) || *k == format!("{prefix}concerts")), "{found:?}");
    assert!(!found.iter().any(|k| k.contains("tok:")), "{found:?}");
    assert!(found.contains(&format!("{tag}t:{}", first.token)));

    // Reading a token needs nothing but the token, not even the set of concerts.
    let _: () =
        redis::cmd("DEL").arg(format!("{prefix}concerts")).query_async(&mut conn.clone()).await.unwrap();
    assert_eq!(store.token(&first.token).await.unwrap(), Some(first.clone()));
    assert_eq!(store.token(&second.token).await.unwrap(), Some(second));
}

#[tokio::test]
async fn the_first_token_of_a_concert_registers_it_for_the_sweeper() {
    let (store, conn, prefix) = fresh_store().await;
    let concert = ConcertId::random();
    store.insert_token(new_token(concert, "alice"), None).await.unwrap();
    let concerts: Vec<String> =
        redis::cmd("SMEMBERS").arg(format!("{prefix}concerts")).query_async(&mut conn.clone()).await.unwrap();
    assert_eq!(concerts, vec![concert.to_string()]);
    // The sweeper finds it: the waiting token, never polled, loses its place.
    let swept = store.sweep_queue(now() + Duration::seconds(61), now(), 100).await.unwrap();
    assert_eq!(swept, 1);
}

#[tokio::test]
async fn a_token_with_a_forged_concert_part_is_not_found_in_redis() {
    let (store, _conn, _prefix) = fresh_store().await;
    a_token_with_a_forged_concert_part_is_not_found(&store).await;
}

#[tokio::test]
async fn a_token_with_a_forged_concert_part_is_not_found_in_memory() {
    a_token_with_a_forged_concert_part_is_not_found(&MemoryStore::new()).await;
}

async fn a_token_with_a_forged_concert_part_is_not_found(store: &impl QueueStore) {
    let (mine, other) = (ConcertId::random(), ConcertId::random());
    let record = store.insert_token(new_token(mine, "alice"), None).await.unwrap();
    store.insert_token(new_token(other, "bob"), None).await.unwrap();
    assert_eq!(store.token(&record.token).await.unwrap(), Some(record.clone()));
    // The same random part under a concert that has a line, and under one that has none.
    assert_eq!(store.token(&forged(&record.token, other)).await.unwrap(), None);
    assert_eq!(store.token(&forged(&record.token, ConcertId::random())).await.unwrap(), None);
}

#[tokio::test]
async fn redis_refuses_a_token_filed_under_another_concert() {
    let (store, conn, prefix) = fresh_store().await;
    let concert = ConcertId::random();
    let mismatched =
        NewToken { token: QueueToken::generate(ConcertId::random()), ..new_token(concert, "alice") };
    assert!(matches!(store.insert_token(mismatched, None).await, Err(StoreError::Corrupt(_))));
    assert!(keys(&conn, &prefix).await.is_empty(), "nothing written");
    assert_eq!(store.token_of_user(concert, &UserId::parse("alice").unwrap()).await.unwrap(), None);
}

/// Redis going away for two seconds and coming back: while it is away a call fails (it does not
/// hang: the store answers the backend failing), and once it is back calls succeed again within
/// seconds, on the same store (redis-rs's default reconnect backoff left every call hanging for
/// about a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_store_fails_fast_while_redis_is_away_and_recovers_by_itself() {
    use ticketing_core::testing::{TcpProxy, resolve};
    let url = redis::IntoConnectionInfo::into_connection_info(ticketing_core::testing::redis_url().as_str())
        .unwrap();
    let (host, port) = match &url.addr {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => panic!("the test Redis is reached over TCP, not {other:?}"),
    };
    let proxy = TcpProxy::start(resolve(&host, port).await).await;
    let conn = ticketing_core::store::redis::connect(&format!("redis://127.0.0.1:{}/", proxy.address.port()))
        .await
        .unwrap();
    let store = RedisQueueStore::new(conn, fresh_redis_prefix());
    store.ping_queue().await.unwrap();

    proxy.set_up(false);
    let away = tokio::time::timeout(std::time::Duration::from_secs(30), store.ping_queue()).await;
    assert!(matches!(away, Ok(Err(StoreError::Backend { .. }))), "a call fails, not hangs: {away:?}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    proxy.set_up(true);

    // Far less than the minute the default backoff took, far more than the few seconds it takes.
    let back = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while store.ping_queue().await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the store answers again once Redis is back");
}

/// A pre-queue larger than one script's part is dealt out in several scripts: every token ends
/// at its drawn place, the line is marked open only by the last part, and an opening read in a
/// line generation that has since begun again is refused.
#[tokio::test]
async fn a_large_pre_queue_is_drawn_in_parts_and_opened_once() {
    use ticketing_core::limits::PRE_QUEUE_DRAW_CHUNK;
    use ticketing_core::queue::{LineOpening, draw_pre_queue};
    let (store, _conn, _prefix) = fresh_store().await;
    let concert = ConcertId::random();
    let count = PRE_QUEUE_DRAW_CHUNK * 2 + 7;
    let inserts = (0..count).map(|i| {
        let store = store.clone();
        async move { store.insert_token(new_token(concert, &format!("u{i}")), None).await.unwrap() }
    });
    futures_join_all(inserts).await;
    let snapshot = store.admission_snapshot(concert, now()).await.unwrap();
    assert!(!snapshot.opened);
    let line = store.waiting_line(concert, usize::MAX).await.unwrap();
    assert_eq!(line.len(), count);
    let moves = draw_pre_queue(11, &line);
    assert!(moves.len() > PRE_QUEUE_DRAW_CHUNK, "more than one part: {}", moves.len());
    let stale = LineOpening { concert_id: concert, moves: Vec::new(), generation: snapshot.generation + 1 };
    assert!(matches!(store.open_line(&stale).await, Err(StoreError::Conflict(_))), "another generation");
    let opening = LineOpening { concert_id: concert, moves: moves.clone(), generation: snapshot.generation };
    assert!(store.open_line(&opening).await.unwrap());
    assert!(store.admission_snapshot(concert, now()).await.unwrap().opened);
    for one in moves.iter().step_by(97) {
        assert_eq!(store.token(&one.token).await.unwrap().unwrap().seq(), Some(one.to));
    }
    let mut places: Vec<u64> =
        store.waiting_line(concert, usize::MAX).await.unwrap().iter().map(|e| e.0).collect();
    let mut before: Vec<u64> = line.iter().map(|e| e.0).collect();
    places.sort_unstable();
    before.sort_unstable();
    assert_eq!(places, before, "the same places");
    assert!(!store.open_line(&opening).await.unwrap(), "opened once");
}

/// Runs `futures` a few hundred at a time.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut futures = futures.peekable();
    while futures.peek().is_some() {
        let mut set = tokio::task::JoinSet::new();
        for future in futures.by_ref().take(500) {
            set.spawn(future);
        }
        while set.join_next().await.transpose().unwrap().is_some() {}
    }
}
