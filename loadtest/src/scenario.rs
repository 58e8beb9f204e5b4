//! The simulated people: goose scenarios for buyers and browsers.
//!
//! Each iteration of a goose user is one new person with a fresh user id, so a run is a stream
//! of arrivals. Every response is checked (status and body); an answer the contract allows but
//! that ends the person's attempt (a `409` on a seat someone else took, a hold that lapsed) is a
//! handled outcome and is marked a success for goose. A response the contract does not allow is
//! a contract violation (the audit fails); a `5xx` or a request with no answer is a server error
//! (reported). Money-moving requests carry an `Idempotency-Key` and are retried with the same key
//! when no answer came, as a careful client would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use goose::goose::GooseResponse;
use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use crate::api::{
    Balance, CreatedConcert, Payment, Problem, Refund, Reservation, ReservationStatus, Schedule, Seat,
    SeatStatus, Token, TokenStatus,
};
use crate::auth::ClientAuth;
use crate::record::{Observations, Outcome, Role, SeenPayment, SeenRefund};

/// Attempts of a money-moving request whose answer did not come (same key each time).
const KEYED_ATTEMPTS: u32 = 4;
/// Longest pause the client accepts from `Retry-After`.
const MAX_RETRY_AFTER_SECS: u64 = 30;

/// Everything the simulated people share.
#[derive(Debug)]
pub struct Run {
    /// The concert created for this run.
    pub concert: CreatedConcert,
    /// The price of every seat.
    pub price: i64,
    /// How users prove who they are.
    pub auth: ClientAuth,
    /// The servers; goose user `i` talks to `hosts[i % hosts.len()]`.
    pub hosts: Vec<String>,
    /// Holds tried per person before giving up on conflicts.
    pub hold_attempts: u32,
    /// What the clients saw.
    pub obs: Observations,
    /// When the attack started (client clock).
    pub started: Instant,
    /// When people should stop waiting: the end of the configured run time.
    pub deadline: Option<Instant>,
    /// Seats each buyer tries to buy, one after another (`--seats-per-buyer`).
    pub seats_per_buyer: u32,
    /// The share of browsers that leave the line rather than walk away (`--leave-share`).
    pub leave_share: f64,
    /// The share of buyers who hold two seats and pay them in one payment (`--pair-share`).
    pub pair_share: f64,
    /// The share of buyers who cancel their booking after reading it back (`--cancel-share`).
    pub cancel_share: f64,
    /// Distinguishes this run's user ids from any other run's.
    pub tag: String,
    next_person: AtomicU64,
    sold_out_ms: AtomicU64,
}

impl Run {
    /// A run over `concert`.
    #[must_use]
    pub fn new(
        concert: CreatedConcert,
        price: i64,
        auth: ClientAuth,
        hosts: Vec<String>,
        hold_attempts: u32,
    ) -> Self {
        let tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
        Self {
            concert,
            price,
            auth,
            hosts,
            hold_attempts,
            obs: Observations::default(),
            started: Instant::now(),
            deadline: None,
            seats_per_buyer: 1,
            leave_share: 0.5,
            pair_share: 0.0,
            cancel_share: 0.0,
            tag,
            next_person: AtomicU64::new(0),
            sold_out_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Milliseconds since the attack started.
    #[must_use]
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When a client first saw every seat booked, in ms since the start.
    #[must_use]
    pub fn sold_out_ms(&self) -> Option<u64> {
        Some(self.sold_out_ms.load(Ordering::Relaxed)).filter(|&ms| ms != u64::MAX)
    }

    fn mark_sold_out(&self) {
        let _ = self.sold_out_ms.compare_exchange(
            u64::MAX,
            self.elapsed_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn next_user_id(&self) -> String {
        let n = self.next_person.fetch_add(1, Ordering::Relaxed);
        format!("lt-{}-{n}", self.tag)
    }
}

/// The buyer and browser scenarios, weighted, over `run`.
///
/// # Errors
/// A zero weight.
pub fn scenarios(
    run: &Arc<Run>,
    buyer_weight: usize,
    browser_weight: usize,
) -> Result<Vec<Scenario>, GooseError> {
    let mut scenarios = Vec::new();
    if buyer_weight > 0 {
        scenarios.push(
            scenario!("Buyer")
                .set_weight(buyer_weight)?
                .set_wait_time(Duration::ZERO, Duration::from_millis(500))?
                .register_transaction(pick_host(run).set_on_start().set_name("pick host"))
                .register_transaction(step(run, buyer).set_name("buy a seat")),
        );
    }
    if browser_weight > 0 {
        scenarios.push(
            scenario!("Browser")
                .set_weight(browser_weight)?
                .set_wait_time(Duration::from_secs(1), Duration::from_secs(3))?
                .register_transaction(pick_host(run).set_on_start().set_name("pick host"))
                .register_transaction(step(run, browser).set_name("join and walk away")),
        );
    }
    Ok(scenarios)
}

fn pick_host(run: &Arc<Run>) -> Transaction {
    let run = Arc::clone(run);
    Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let host = run.hosts[user.weighted_users_index % run.hosts.len()].clone();
        Box::pin(async move {
            user.set_base_url(&host)?;
            Ok(())
        })
    }))
}

type Story = for<'u> fn(
    &'u mut GooseUser,
    Arc<Run>,
) -> std::pin::Pin<Box<dyn Future<Output = TransactionResult> + Send + 'u>>;

fn step(run: &Arc<Run>, story: Story) -> Transaction {
    let run = Arc::clone(run);
    Transaction::new(Arc::new(move |user: &mut GooseUser| story(user, Arc::clone(&run))))
}

/// How a person's story stops early.
enum Stop {
    /// A handled ending.
    End(Outcome),
    /// A failure goose should count against the transaction.
    Fail(Box<TransactionError>),
}

impl From<Box<TransactionError>> for Stop {
    fn from(error: Box<TransactionError>) -> Self {
        Self::Fail(error)
    }
}

type Flow<T> = Result<T, Stop>;

/// How many times a request the server shed is sent again before its 503 counts as an error.
const SHED_RETRIES: u32 = 10;

/// One answer, read whole.
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    body: String,
    metric: GooseRequestMetric,
    /// Whether the request was sent again to another server after its first got no answer (so
    /// the first may have done it).
    resent: bool,
}

impl Reply {
    fn code(&self) -> String {
        serde_json::from_str::<Problem>(&self.body).map(|p| p.code).unwrap_or_default()
    }
}

/// Who is acting, and where.
struct Person<'a> {
    run: &'a Run,
    user_id: String,
    /// The person's first token's identity: the line's audits (FIFO, the draw) follow that
    /// token only; a buyer who comes back for another seat takes a new place, audited as nobody.
    first_token: std::sync::Mutex<Option<String>>,
}

impl Person<'_> {
    fn record(&self, change: impl FnOnce(&mut crate::record::UserRecord)) {
        self.run.obs.update(&self.user_id, change);
    }

    /// Whether `identity` is the person's first token (the first one seen is).
    fn is_first_token(&self, identity: &str) -> bool {
        let mut first = self.first_token.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        first.get_or_insert_with(|| identity.to_owned()) == identity
    }

    /// Sends one request; `Ok(None)` when no answer came (goose has counted the error). A
    /// request the server shed (503 `overloaded` with Retry-After) or rate limited (429
    /// `rate_limited`, for a deployment that limits token requests) is sent again after the pause
    /// it asked for, as a careful client does, up to [`SHED_RETRIES`] times; it is counted as
    /// shed, not as a server error, and marked handled for goose.
    async fn send(
        &self,
        user: &mut GooseUser,
        name: &str,
        method: GooseMethod,
        path: &str,
        prepare: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Flow<Option<Reply>> {
        let mut attempt = 0;
        let mut failovers = 0;
        loop {
            let builder = prepare(user.get_request_builder(&method, path)?);
            let request = GooseRequest::builder().name(name).set_request_builder(builder).build();
            let GooseResponse { request: metric, response } = user.request(request).await?;
            let response = match response {
                Ok(response) => response,
                // No answer: the connection failed or broke (a node died). The request goes to
                // the next server, once per other server, as it is: every write this load test
                // sends is keyed (the key goes along, so it lands once whichever server took it)
                // or is a join (asking again returns the same token).
                Err(_) if failovers + 1 < self.run.hosts.len() => {
                    failovers += 1;
                    self.run.obs.failover();
                    self.fail_over(user)?;
                    continue;
                }
                Err(_) => {
                    self.run.obs.server_error();
                    return Ok(None);
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let Ok(body) = response.text().await else {
                self.run.obs.server_error();
                return Ok(None);
            };
            let mut reply = Reply { status, retry_after, body, metric, resent: failovers > 0 };
            // Shed (503 `overloaded`) or turned away at the door (429 `rate_limited`): wait as
            // asked and send it again.
            let turned_away =
                matches!((status, reply.code().as_str()), (503, "overloaded") | (429, "rate_limited"));
            if turned_away && retry_after.is_some() && attempt < SHED_RETRIES {
                attempt += 1;
                self.run.obs.shed();
                self.handled(user, &mut reply)?;
                pause_for_retry(self.run, retry_after).await;
                continue;
            }
            if status >= 500 {
                self.run.obs.server_error();
            }
            return Ok(Some(reply));
        }
    }

    /// Points `user` at the server after its current one in `--hosts`.
    fn fail_over(&self, user: &mut GooseUser) -> Flow<()> {
        let hosts = &self.run.hosts;
        let current = user.base_url.as_str().trim_end_matches('/');
        let at = hosts.iter().position(|h| h.trim_end_matches('/') == current).unwrap_or(0);
        user.set_base_url(&hosts[(at + 1) % hosts.len()])?;
        Ok(())
    }

    /// Marks a non-2xx answer the contract allows as a handled outcome.
    fn handled(&self, user: &mut GooseUser, reply: &mut Reply) -> Flow<()> {
        // goose listed the answer in its error table when it arrived; without clearing the
        // error its correction would be listed a second time.
        reply.metric.error.clear();
        user.set_success(&mut reply.metric)?;
        Ok(())
    }

    /// A response the contract does not allow: counted, and the story fails. Except one: any
    /// request of a person whose token an operator revoked answers 401 `token_revoked`, which
    /// ends the story (the run's operator revokes people, `--revoke-every-ms`).
    fn violation<T>(&self, user: &mut GooseUser, reply: &mut Reply, why: &str) -> Flow<T> {
        if reply.status >= 500 {
            // Already counted as a server error; goose has it as a failure too.
            return Err(Stop::End(Outcome::Failed));
        }
        if reply.status == 401 && reply.code() == "token_revoked" {
            self.handled(user, reply)?;
            return Err(Stop::End(Outcome::Revoked));
        }
        self.run.obs.contract_violation();
        let tag = format!("{} {}: {why}", reply.metric.name, reply.status);
        match user.set_failure(&tag, &mut reply.metric, None, Some(&reply.body)) {
            Err(error) => Err(Stop::Fail(error)),
            Ok(()) => Err(Stop::End(Outcome::Failed)),
        }
    }

    fn parse<T: DeserializeOwned>(&self, user: &mut GooseUser, reply: &mut Reply) -> Flow<T> {
        match serde_json::from_str(&reply.body) {
            Ok(value) => Ok(value),
            Err(error) => self.violation(user, reply, &format!("unreadable body: {error}")),
        }
    }

    /// A check on a parsed body.
    fn expect(&self, user: &mut GooseUser, reply: &mut Reply, ok: bool, why: &str) -> Flow<()> {
        if ok { Ok(()) } else { self.violation(user, reply, why) }
    }

    async fn join(&self, user: &mut GooseUser) -> Flow<(Token, Option<u64>)> {
        let body = json!({"userId": self.user_id, "concertId": self.run.concert.concert_id});
        for attempt in 0..KEYED_ATTEMPTS {
            let auth = &self.run.auth;
            let user_id = self.user_id.clone();
            let sent = self
                .send(user, "join", GooseMethod::Post, "/api/v1/queue/tokens", |b| {
                    auth.sign(b, &user_id).json(&body)
                })
                .await?;
            let Some(mut reply) = sent.filter(|r| r.status < 500) else {
                pause(self.run, 1).await;
                continue;
            };
            // The server found every seat sold: nobody more joins.
            if reply.status == 409 && reply.code() == "sold_out" {
                return Err(Stop::End(Outcome::SoldOut));
            }
            // A retry after a lost answer finds the token the first attempt made: 200.
            let allowed = reply.status == 201 || ((attempt > 0 || reply.resent) && reply.status == 200);
            if !allowed {
                return self.violation(user, &mut reply, "expected 201");
            }
            let token: Token = self.parse(user, &mut reply)?;
            self.check_token(user, &mut reply, &token)?;
            return Ok((token, reply.retry_after));
        }
        Err(Stop::End(Outcome::Failed))
    }

    fn check_token(&self, user: &mut GooseUser, reply: &mut Reply, token: &Token) -> Flow<()> {
        let run = self.run;
        self.expect(user, reply, token.user_id == self.user_id, "token of another user")?;
        self.expect(user, reply, token.concert_id == run.concert.concert_id, "token of another concert")?;
        match token.status {
            TokenStatus::Waiting => {
                // A pre-queue drawn at the opening gives no place before it.
                self.expect(
                    user,
                    reply,
                    token.position.is_some_and(|p| p >= 1) || token.sales_open_at.is_some(),
                    "waiting without a position",
                )?;
                // A sold-out line no longer moves: no Retry-After then, and no reason to wait.
                self.expect(
                    user,
                    reply,
                    reply.retry_after.is_some() != token.sold_out,
                    "Retry-After on a waiting token unless (and only unless) the concert is sold out",
                )?;
                if token.sold_out {
                    return Err(Stop::End(Outcome::SoldOut));
                }
                let pre_queue = token.sales_open_at.is_some();
                let identity = token.identity().to_owned();
                let line = token.line_number;
                if !self.is_first_token(&identity) {
                    return Ok(());
                }
                self.record(|r| {
                    r.token.get_or_insert(identity);
                    r.pre_queue |= pre_queue;
                    if let Some(line) = line {
                        if r.line_number.is_some_and(|seen| seen != line) {
                            r.line_changes += 1;
                        }
                        r.line_number = Some(line);
                        if r.pre_queue && !pre_queue {
                            r.drawn_number.get_or_insert(line);
                        }
                    }
                });
            }
            TokenStatus::Active => {
                self.expect(user, reply, token.position.is_none(), "active with a position")?;
                if !self.is_first_token(token.identity()) {
                    return Ok(());
                }
                if let Some(at) = token.admitted_at {
                    let seen = run.elapsed_ms();
                    self.record(|r| {
                        r.admitted_at = Some(at);
                        r.active_seen_ms.get_or_insert(seen);
                    });
                }
            }
            TokenStatus::Expired => return self.violation(user, reply, "a live token answered EXPIRED"),
        }
        Ok(())
    }

    /// Polls until ACTIVE, honouring `Retry-After`.
    async fn wait_until_admitted(
        &self,
        user: &mut GooseUser,
        mut token: Token,
        mut retry: Option<u64>,
    ) -> Flow<Token> {
        while token.status == TokenStatus::Waiting {
            if self.run.past_deadline() {
                return Err(Stop::End(Outcome::RunEnded));
            }
            if self.run.sold_out_ms().is_some() {
                return Err(Stop::End(Outcome::SoldOut));
            }
            pause_for_retry(self.run, retry).await;
            token = match self.poll(user, &token.token).await? {
                Some((next, next_retry)) => {
                    retry = next_retry;
                    next
                }
                None => continue,
            };
        }
        Ok(token)
    }

    /// Leaves the line with `token`: 204, then a poll answers 401 `token_expired`. Answers
    /// whether it left: an admitted token (409 `already_admitted`) or one that went idle meanwhile
    /// (401 `token_expired`) did not, and neither is a mistake of the server.
    async fn leave(&self, user: &mut GooseUser, token: &str) -> Flow<bool> {
        let path = "/api/v1/queue/tokens/current";
        let sent = self.send(user, "leave", GooseMethod::Delete, path, |b| b.bearer_auth(token)).await?;
        let Some(mut reply) = sent.filter(|r| r.status < 500) else { return Ok(false) };
        match reply.status {
            204 => {}
            409 if reply.code() == "already_admitted" => {
                self.handled(user, &mut reply)?;
                return Ok(false);
            }
            401 if reply.code() == "token_expired" => {
                self.handled(user, &mut reply)?;
                return Ok(false);
            }
            _ => return self.violation(user, &mut reply, "expected 204"),
        }
        let sent = self.send(user, "poll", GooseMethod::Get, path, |b| b.bearer_auth(token)).await?;
        let Some(mut reply) = sent.filter(|r| r.status < 500) else { return Ok(true) };
        if reply.status == 401 && reply.code() == "token_expired" {
            self.handled(user, &mut reply)?;
            Ok(true)
        } else {
            self.violation(user, &mut reply, "a token that left answered other than 401 token_expired")
        }
    }

    /// One poll; `None` when the server failed (try again later).
    async fn poll(&self, user: &mut GooseUser, token: &str) -> Flow<Option<(Token, Option<u64>)>> {
        let sent = self
            .send(user, "poll", GooseMethod::Get, "/api/v1/queue/tokens/current", |b| b.bearer_auth(token))
            .await?;
        let Some(mut reply) = sent.filter(|r| r.status < 500) else { return Ok(None) };
        match reply.status {
            200 => {
                let next: Token = self.parse(user, &mut reply)?;
                self.check_token(user, &mut reply, &next)?;
                // The same token; its claim may be signed anew (after the opening's draw).
                self.expect(
                    user,
                    &mut reply,
                    next.identity() == crate::api::identity(token),
                    "poll answered another token",
                )?;
                Ok(Some((next, reply.retry_after)))
            }
            // Polled too late: the place in line is gone (an overloaded client or server).
            401 if reply.code() == "token_expired" => {
                self.handled(user, &mut reply)?;
                Err(Stop::End(Outcome::TokenExpired))
            }
            _ => self.violation(user, &mut reply, "expected 200"),
        }
    }

    /// A `GET` that needs an active token; `401 token_expired` ends the story. `check` names
    /// what is wrong with a parsed body, if anything.
    async fn read<T: DeserializeOwned>(
        &self,
        user: &mut GooseUser,
        name: &str,
        path: &str,
        token: &str,
        check: impl Fn(&T) -> Option<String>,
    ) -> Flow<T> {
        for _ in 0..KEYED_ATTEMPTS {
            let sent = self.send(user, name, GooseMethod::Get, path, |b| b.bearer_auth(token)).await?;
            let Some(mut reply) = sent.filter(|r| r.status < 500) else {
                pause(self.run, 1).await;
                continue;
            };
            return match reply.status {
                200 => {
                    let value: T = self.parse(user, &mut reply)?;
                    match check(&value) {
                        None => Ok(value),
                        Some(why) => self.violation(user, &mut reply, &why),
                    }
                }
                401 if reply.code() == "token_expired" => {
                    self.handled(user, &mut reply)?;
                    Err(Stop::End(Outcome::TokenExpired))
                }
                _ => self.violation(user, &mut reply, "expected 200"),
            };
        }
        Err(Stop::End(Outcome::Failed))
    }

    /// Sends a keyed `POST` until an answer comes (same key each time); `None` if none came.
    async fn keyed_post(
        &self,
        user: &mut GooseUser,
        name: &str,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Flow<Option<Reply>> {
        let key = Uuid::new_v4().to_string();
        for _ in 0..KEYED_ATTEMPTS {
            let sent = self
                .send(user, name, GooseMethod::Post, path, |b| {
                    b.bearer_auth(token).header("Idempotency-Key", &key).json(body)
                })
                .await?;
            match sent {
                Some(reply) if reply.status < 500 => return Ok(Some(reply)),
                _ => pause(self.run, 1).await,
            }
        }
        Ok(None)
    }

    /// Picks a schedule with seats left and holds a random available seat, trying another one
    /// on `409`, at most `hold_attempts` times.
    async fn hold_a_seat(&self, user: &mut GooseUser, token: &str) -> Flow<Reservation> {
        let run = self.run;
        let path = format!("/api/v1/concerts/{}/schedules", run.concert.concert_id);
        let expected: Vec<Uuid> = run.concert.schedules.iter().map(|s| s.schedule_id).collect();
        let schedules: Vec<Schedule> = self
            .read(user, "schedules", &path, token, |list: &Vec<Schedule>| {
                let mut ids: Vec<Uuid> = list.iter().map(|s| s.schedule_id).collect();
                ids.sort();
                let mut want = expected.clone();
                want.sort();
                (ids != want).then(|| "the concert's schedules are not the ones created".to_owned())
            })
            .await?;
        let open: Vec<&Schedule> = schedules.iter().filter(|s| s.available_seats > 0).collect();
        let Some(schedule) = open.choose(&mut rand::rng()).map(|s| s.schedule_id) else {
            return Err(Stop::End(self.sold_out_or_no_seat(user, token, &schedules).await?));
        };
        let mut attempts = 0;
        while attempts < run.hold_attempts {
            let path = format!("/api/v1/schedules/{schedule}/seats");
            let seats: Vec<Seat> = self
                .read(user, "seats", &path, token, |seats: &Vec<Seat>| self.check_seats(schedule, seats))
                .await?;
            let mut available: Vec<&Seat> =
                seats.iter().filter(|s| s.status == SeatStatus::Available).collect();
            if available.is_empty() {
                return Err(Stop::End(Outcome::NoSeat));
            }
            // Try up to two seats from one listing before reading it again.
            for _ in 0..2 {
                if attempts >= run.hold_attempts || available.is_empty() {
                    break;
                }
                let index = rand::rng().random_range(0..available.len());
                let seat = available.swap_remove(index);
                attempts += 1;
                self.record(|r| r.hold_attempts += 1);
                let body = json!({"seatId": seat.seat_id});
                let Some(mut reply) =
                    self.keyed_post(user, "hold", "/api/v1/reservations", token, &body).await?
                else {
                    return Err(Stop::End(Outcome::Failed));
                };
                match reply.status {
                    201 => {
                        let held: Reservation = self.parse(user, &mut reply)?;
                        let ok = held.seat_id == seat.seat_id
                            && held.schedule_id == schedule
                            && held.status == ReservationStatus::Held
                            && held.price == run.price
                            && held.expires_at > Utc::now() - chrono::Duration::seconds(5);
                        self.expect(user, &mut reply, ok, "the hold does not match the request")?;
                        return Ok(held);
                    }
                    409 if reply.code() == "seat_unavailable" => {
                        self.handled(user, &mut reply)?;
                        self.record(|r| r.hold_conflicts += 1);
                    }
                    // The concert's seats per buyer (`--max-seats-per-buyer`) are bought.
                    409 if reply.code() == "buyer_limit" => {
                        self.handled(user, &mut reply)?;
                        return Err(Stop::End(Outcome::AtCap));
                    }
                    401 if reply.code() == "token_expired" => {
                        self.handled(user, &mut reply)?;
                        return Err(Stop::End(Outcome::TokenExpired));
                    }
                    _ => return self.violation(user, &mut reply, "expected 201 or 409 seat_unavailable"),
                }
            }
        }
        Err(Stop::End(Outcome::GaveUpOnConflicts))
    }

    /// What is wrong with a schedule's seat list, if anything.
    fn check_seats(&self, schedule: Uuid, seats: &[Seat]) -> Option<String> {
        let created = self.run.concert.schedules.iter().find(|s| s.schedule_id == schedule)?;
        if seats.len() != created.seat_count as usize {
            return Some(format!("{} seats listed, {} created", seats.len(), created.seat_count));
        }
        seats
            .iter()
            .find(|s| s.price != self.run.price)
            .map(|s| format!("seat {} priced {}", s.number, s.price))
    }

    /// No schedule shows a free seat: is every seat booked (sold out) or are some only held?
    async fn sold_out_or_no_seat(
        &self,
        user: &mut GooseUser,
        token: &str,
        schedules: &[Schedule],
    ) -> Flow<Outcome> {
        for schedule in schedules {
            let path = format!("/api/v1/schedules/{}/seats", schedule.schedule_id);
            let seats: Vec<Seat> = self
                .read(user, "seats", &path, token, |seats: &Vec<Seat>| {
                    self.check_seats(schedule.schedule_id, seats)
                })
                .await?;
            if seats.iter().any(|s| s.status != SeatStatus::Booked) {
                return Ok(Outcome::NoSeat);
            }
        }
        self.run.mark_sold_out();
        Ok(Outcome::SoldOut)
    }

    /// Charges what the balance lacks for `seats` seats, plus a random tip so balances are not all
    /// zero after paying (the audit then checks a real number).
    async fn top_up(&self, user: &mut GooseUser, token: &str, seats: usize) -> Flow<i64> {
        let balance: Balance = self
            .read(user, "balance", "/api/v1/balance", token, |b: &Balance| {
                (b.user_id != self.user_id).then(|| "the balance of another user".to_owned())
            })
            .await?;
        let shortfall = self.run.price * seats as i64 - balance.balance;
        if shortfall <= 0 {
            return Ok(balance.balance);
        }
        let amount = shortfall + rand::rng().random_range(0..=self.run.price / 4);
        let Some(mut reply) = self
            .keyed_post(user, "charge", "/api/v1/balance/charges", token, &json!({ "amount": amount }))
            .await?
        else {
            self.record(|r| r.charges_unknown += 1);
            return Err(Stop::End(Outcome::Failed));
        };
        match reply.status {
            200 => {
                let after: Balance = self.parse(user, &mut reply)?;
                self.record(|r| r.charged += amount);
                let ok = after.balance == balance.balance + amount && after.user_id == self.user_id;
                self.expect(user, &mut reply, ok, "the balance after the charge is wrong")?;
                Ok(after.balance)
            }
            401 if reply.code() == "token_expired" => {
                self.handled(user, &mut reply)?;
                Err(Stop::End(Outcome::TokenExpired))
            }
            _ => self.violation(user, &mut reply, "expected 200"),
        }
    }

    /// Pays `held` (one hold, or two in one payment) and records each seat's payment.
    async fn pay(&self, user: &mut GooseUser, token: &str, held: &[Reservation], balance: i64) -> Flow<()> {
        let body = match held {
            [one] => json!({"reservationId": one.reservation_id}),
            several => {
                json!({"reservationIds": several.iter().map(|h| h.reservation_id).collect::<Vec<_>>()})
            }
        };
        let Some(mut reply) = self.keyed_post(user, "pay", "/api/v1/payments", token, &body).await? else {
            self.record(|r| r.payments_unknown.extend(held.iter().map(|h| h.reservation_id)));
            return Err(Stop::End(Outcome::Failed));
        };
        match reply.status {
            201 => {
                let paid: Payment = self.parse(user, &mut reply)?;
                let seats: Vec<SeenPayment> = if paid.payments.is_empty() {
                    held.iter()
                        .take(1)
                        .map(|h| SeenPayment {
                            payment_id: paid.payment_id,
                            reservation_id: paid.reservation_id,
                            seat_id: h.seat_id,
                            amount: paid.amount,
                        })
                        .collect()
                } else {
                    paid.payments
                        .iter()
                        .map(|p| SeenPayment {
                            payment_id: p.payment_id,
                            reservation_id: p.reservation_id,
                            seat_id: p.seat_id,
                            amount: p.amount,
                        })
                        .collect()
                };
                let each_held = held.iter().all(|h| {
                    seats
                        .iter()
                        .filter(|p| p.reservation_id == h.reservation_id && p.seat_id == h.seat_id)
                        .count()
                        == 1
                });
                self.record(|r| {
                    r.payments.extend(seats.iter().cloned());
                    r.paid_together += u32::from(seats.len() > 1);
                });
                let total = self.run.price * held.len() as i64;
                let ok = each_held
                    && seats.len() == held.len()
                    && seats.iter().all(|p| p.amount == self.run.price)
                    && paid.amount == total
                    && paid.balance == balance - total
                    && paid.status == "COMPLETED";
                self.expect(user, &mut reply, ok, "the payment does not match the holds")
            }
            409 if reply.code() == "buyer_limit" => {
                self.handled(user, &mut reply)?;
                Err(Stop::End(Outcome::AtCap))
            }
            // Slow enough that the hold (or the token) ran out: allowed, and nothing moved.
            410 if reply.code() == "hold_expired" => {
                self.handled(user, &mut reply)?;
                Err(Stop::End(Outcome::HoldLapsed))
            }
            401 if reply.code() == "token_expired" => {
                self.handled(user, &mut reply)?;
                Err(Stop::End(Outcome::TokenExpired))
            }
            _ => self.violation(user, &mut reply, "expected 201 or 410 hold_expired"),
        }
    }

    /// Cancels a booking (with a key) and records the refund.
    async fn cancel(&self, user: &mut GooseUser, token: &str, held: &Reservation) -> Flow<()> {
        let path = format!("/api/v1/reservations/{}/cancel", held.reservation_id);
        let Some(mut reply) = self.keyed_post(user, "cancel", &path, token, &json!({})).await? else {
            self.record(|r| r.refunds_unknown.push(held.reservation_id));
            return Err(Stop::End(Outcome::Failed));
        };
        match reply.status {
            200 => {
                let refund: Refund = self.parse(user, &mut reply)?;
                let seen = SeenRefund {
                    payment_id: refund.payment_id,
                    reservation_id: refund.reservation_id,
                    seat_id: refund.seat_id,
                    amount: refund.amount,
                };
                self.record(|r| r.refunds.push(seen));
                let ok = refund.reservation_id == held.reservation_id
                    && refund.seat_id == held.seat_id
                    && refund.amount == self.run.price
                    && refund.status == "CANCELLED";
                self.expect(user, &mut reply, ok, "the refund does not match the booking")
            }
            _ => self.violation(user, &mut reply, "expected 200"),
        }
    }

    async fn read_back(&self, user: &mut GooseUser, token: &str, held: &Reservation) -> Flow<()> {
        let path = format!("/api/v1/reservations/{}", held.reservation_id);
        let sent = self.send(user, "reservation", GooseMethod::Get, &path, |b| b.bearer_auth(token)).await?;
        let Some(mut reply) = sent.filter(|r| r.status < 500) else {
            return Err(Stop::End(Outcome::Failed));
        };
        let ok = reply.status == 200;
        self.expect(user, &mut reply, ok, "expected 200")?;
        let read: Reservation = self.parse(user, &mut reply)?;
        let ok = read.reservation_id == held.reservation_id
            && read.seat_id == held.seat_id
            && read.status == ReservationStatus::Confirmed;
        self.expect(user, &mut reply, ok, "the paid reservation does not read CONFIRMED")
    }
}

/// Sleeps `secs` in short steps, waking early when the run's time is up.
async fn pause(run: &Run, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until && !run.past_deadline() {
        tokio::time::sleep(Duration::from_millis(250).min(until - Instant::now())).await;
    }
}

/// A new person arrives at `host`, with a fresh user id and an open record; or, once the sale is
/// over, nobody comes (after a pause, so an idle goose user does not spin).
async fn arrive(run: &Run, role: Role, host: String) -> Option<Person<'_>> {
    if run.sold_out_ms().is_some() || run.past_deadline() {
        pause(run, 1).await;
        return None;
    }
    let person = Person { run, user_id: run.next_user_id(), first_token: std::sync::Mutex::new(None) };
    run.obs.start(&person.user_id, role, &host, run.elapsed_ms());
    Some(person)
}

/// Waits as long as the server's `Retry-After` asks (1 s when it said nothing), within bounds.
async fn pause_for_retry(run: &Run, retry_after: Option<u64>) {
    pause(run, retry_after.unwrap_or(1).clamp(1, MAX_RETRY_AFTER_SECS)).await;
}

/// Ends a story: records the outcome and tells goose.
fn finish(person: &Person<'_>, result: Flow<()>, success: Outcome) -> TransactionResult {
    let (outcome, result) = match result {
        Ok(()) => (success, Ok(())),
        Err(Stop::End(outcome)) => (outcome, Ok(())),
        Err(Stop::Fail(error)) => (Outcome::Failed, Err(error)),
    };
    person.record(|r| r.outcome = outcome);
    result
}

fn buyer(
    user: &mut GooseUser,
    run: Arc<Run>,
) -> std::pin::Pin<Box<dyn Future<Output = TransactionResult> + Send + '_>> {
    Box::pin(async move {
        let Some(person) = arrive(&run, Role::Buyer, user.base_url.to_string()).await else { return Ok(()) };
        let result = async {
            // Paying expires the token: each further seat is a new place in line. A buyer who
            // bought one ends as having bought, or at the cap, whatever ends the next try.
            let mut bought = 0;
            for _ in 0..run.seats_per_buyer.max(1) {
                // Revoked between two purchases: no more tries.
                if bought > 0 && run.obs.revoked(&person.user_id) {
                    return Err(Stop::End(Outcome::Revoked));
                }
                let round = async {
                    let (token, retry) = person.join(user).await?;
                    let token = person.wait_until_admitted(user, token, retry).await?.token;
                    let mut held = vec![person.hold_a_seat(user, &token).await?];
                    // A friend's seat too, paid with the first in one payment; none found (or
                    // the token ran out meanwhile): the first is paid alone.
                    if run.pair_share > 0.0 && rand::rng().random_bool(run.pair_share) {
                        match person.hold_a_seat(user, &token).await {
                            Ok(second) => held.push(second),
                            Err(Stop::End(_)) => {}
                            Err(failed) => return Err(failed),
                        }
                    }
                    let balance = person.top_up(user, &token, held.len()).await?;
                    person.pay(user, &token, &held, balance).await?;
                    for one in &held {
                        person.read_back(user, &token, one).await?;
                    }
                    if run.cancel_share > 0.0 && rand::rng().random_bool(run.cancel_share) {
                        for one in &held {
                            person.cancel(user, &token, one).await?;
                        }
                        return Err(Stop::End(Outcome::Cancelled));
                    }
                    Ok(())
                }
                .await;
                match round {
                    Ok(()) => bought += 1,
                    Err(Stop::End(Outcome::AtCap)) if bought > 0 => return Err(Stop::End(Outcome::AtCap)),
                    Err(Stop::End(ending))
                        if bought > 0 && ending != Outcome::Revoked && ending != Outcome::Failed =>
                    {
                        return Ok(());
                    }
                    Err(stop) => return Err(stop),
                }
            }
            Ok(())
        }
        .await;
        finish(&person, result, Outcome::Bought)
    })
}

fn browser(
    user: &mut GooseUser,
    run: Arc<Run>,
) -> std::pin::Pin<Box<dyn Future<Output = TransactionResult> + Send + '_>> {
    Box::pin(async move {
        let Some(person) = arrive(&run, Role::Browser, user.base_url.to_string()).await else {
            return Ok(());
        };
        let result = async {
            let (mut token, mut retry) = person.join(user).await?;
            let polls = rand::rng().random_range(0..=2);
            for _ in 0..polls {
                if token.status != TokenStatus::Waiting {
                    break;
                }
                pause_for_retry(&run, retry).await;
                if let Some((next, next_retry)) = person.poll(user, &token.token).await? {
                    (token, retry) = (next, next_retry);
                }
            }
            // Some walk away without a word (the token goes idle and loses its place); the others
            // (`--leave-share`, half by default) leave the line, so that everyone behind moves up.
            if token.status == TokenStatus::Waiting
                && rand::rng().random_bool(run.leave_share)
                && person.leave(user, &token.token).await?
            {
                return Err(Stop::End(Outcome::Left));
            }
            Ok(())
        }
        .await;
        finish(&person, result, Outcome::Abandoned)
    })
}
