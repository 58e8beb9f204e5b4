//! The audit after a run: what the clients saw against what the server lists.
//!
//! A pure function of three inputs: the clients' records, the server's sales listing of the
//! run's concert, and the server's account (balance and ledger) of every user that moved money.
//! Each check counts its violations and keeps a few examples; the verdict is PASS only when
//! every count is zero.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use uuid::Uuid;

use crate::api::{Account, LedgerKind, Sales, SeatSale, SeatStatus};
use crate::record::UserRecord;
use crate::stats::fifo_inversions;

/// A payment whose inputs were read before a revocation was written may complete and bear a
/// time up to its request's duration later than the revocation's (taken before its write): the
/// audit allows this much.
pub const REVOCATION_SLACK_MS: i64 = 1_000;

/// How many examples each check keeps.
const EXAMPLES: usize = 5;

/// The audit's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// `PASS` or `FAIL`.
    pub verdict: Verdict,
    /// Seats the server lists.
    pub seats: usize,
    /// Seats the server lists as BOOKED.
    pub booked_seats: usize,
    /// Payments clients saw answered 201 and not refunded (distinct payment ids).
    pub payments_seen: usize,
    /// Cancellations clients saw answered 200 (their payments refunded).
    pub refunds_seen: usize,
    /// Refunded payments whose seat the server still lists as BOOKED by them.
    pub refunded_but_booked: usize,
    /// Payments whose answer a client never got (they are settled from the server's side).
    pub payments_unanswered: usize,
    /// Users whose balance was checked.
    pub accounts_checked: usize,
    /// Admissions clients observed with their number in line.
    pub admissions_observed: usize,
    /// Seats with more than one distinct payment, across all clients.
    pub seats_paid_twice: usize,
    /// 201 payments whose seat the server does not list as BOOKED by that payment.
    pub payments_without_booked_seat: usize,
    /// BOOKED seats without exactly one consistent payment (missing payment, other buyer,
    /// other price).
    pub booked_seats_without_one_payment: usize,
    /// BOOKED seats whose payment no client saw nor was waiting for.
    pub sales_no_client_made: usize,
    /// Users whose server balance is not what their charges minus payments make, or whose
    /// ledger does not add up.
    pub balance_mismatches: usize,
    /// Pairs admitted out of line order (a later number admitted at an earlier tick). With a
    /// drawn pre-queue, its buyers' order is the draw's (SHA-256 of the seed and the token), all
    /// of them before anyone who joined after the opening.
    pub fifo_inversions: u64,
    /// Buyers who own more booked seats than the concert's cap on seats per buyer.
    pub over_cap: usize,
    /// Seats paid by a user more than [`REVOCATION_SLACK_MS`] after the run's operator revoked
    /// that user's token.
    pub paid_after_revocation: usize,
    /// The sale's scheduled opening as checked, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opening: Option<OpeningAudit>,
    /// Responses that broke the API contract (wrong status or body), counted by the clients.
    pub contract_violations: u64,
    /// A few examples per failed check.
    pub examples: BTreeMap<String, Vec<String>>,
}

/// What the audit checked of a scheduled opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpeningAudit {
    /// Whether the server recorded the opening (a run that ends before it does not).
    pub opened: bool,
    /// Buyers who waited in the pre-queue.
    pub pre_queue: usize,
    /// Of those, how many saw their number in line after the opening.
    pub drawn_seen: usize,
    /// Admissions at an instant before the opening.
    pub admitted_before_opening: usize,
    /// Pairs of pre-queue buyers whose numbers after the opening are not in the order the seed
    /// draws (a drawn pre-queue only).
    pub draw_inversions: u64,
    /// Buyers whose number in line changed more than once (the draw is applied once).
    pub drawn_more_than_once: usize,
}

/// A scheduled opening, as the server lists it after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// When the sale was to open.
    pub opens_at: chrono::DateTime<chrono::Utc>,
    /// Whether its pre-queue is drawn (`random`), not first come first served.
    pub drawn: bool,
    /// The recorded opening.
    pub opened: Option<crate::api::Opening>,
}

/// A pre-queue token's key in the draw: SHA-256 of the seed (8 bytes, big-endian) and the
/// token's identity, the order [`ticketing_core::queue::draw_pre_queue`] deals places in
/// (written again here: the load test speaks HTTP only).
fn draw_key(seed: u64, token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(seed.to_be_bytes());
    hash.update(token.as_bytes());
    hash.finalize().into()
}

/// PASS or FAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every check found nothing.
    Pass,
    /// At least one check found something.
    Fail,
}

/// Everything the audit reads.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// What the clients saw.
    pub clients: &'a [UserRecord],
    /// What the server lists for the run's concert.
    pub sales: &'a Sales,
    /// The server's account of each user in [`users_to_check`].
    pub accounts: &'a HashMap<String, Account>,
    /// The price of every seat of the run.
    pub price: i64,
    /// Contract violations the clients counted.
    pub contract_violations: u64,
    /// The sale's scheduled opening, if it had one.
    pub opening: Option<Scheduled>,
    /// The concert's cap on seats per buyer, if it has one.
    pub max_seats_per_buyer: Option<u32>,
}

/// The users whose accounts the audit needs: everyone who charged, paid or was left waiting for
/// a money answer, and every buyer the server lists.
#[must_use]
pub fn users_to_check(clients: &[UserRecord], sales: &Sales) -> Vec<String> {
    let mut users: HashSet<String> = clients
        .iter()
        .filter(|c| c.charged != 0 || !c.payments.is_empty() || !c.is_determinate())
        .map(|c| c.user_id.clone())
        .collect();
    users.extend(all_seats(sales).filter_map(|s| s.paid_by.clone()));
    users.extend(all_seats(sales).filter_map(|s| s.user_id.clone()));
    let mut users: Vec<String> = users.into_iter().collect();
    users.sort();
    users
}

fn all_seats(sales: &Sales) -> impl Iterator<Item = &SeatSale> {
    sales.schedules.iter().flat_map(|s| s.seats.iter())
}

/// Runs every check.
#[must_use]
pub fn audit(evidence: Evidence<'_>) -> Audit {
    let Evidence { clients, sales, accounts, price, contract_violations, opening, max_seats_per_buyer } =
        evidence;
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut note = |check: &str, example: String| {
        let list = examples.entry(check.to_owned()).or_default();
        if list.len() < EXAMPLES {
            list.push(example);
        }
    };
    let seats: HashMap<Uuid, &SeatSale> = all_seats(sales).map(|s| (s.seat_id, s)).collect();

    // 1. No seat paid twice while both payments live, across all clients: a seat is sold again
    // only after its payment was refunded (at most once more per refund).
    let refunded: HashSet<Uuid> =
        clients.iter().flat_map(|c| c.refunds.iter().map(|r| r.payment_id)).collect();
    let mut payments_by_seat: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    let mut seen_payment_ids: HashSet<Uuid> = HashSet::new();
    for payment in clients.iter().flat_map(|c| &c.payments).filter(|p| !refunded.contains(&p.payment_id)) {
        payments_by_seat.entry(payment.seat_id).or_default().insert(payment.payment_id);
        seen_payment_ids.insert(payment.payment_id);
    }
    let mut seats_paid_twice = 0;
    for (seat, payments) in &payments_by_seat {
        if payments.len() > 1 {
            seats_paid_twice += 1;
            note("seatsPaidTwice", format!("seat {seat}: payments {payments:?}"));
        }
    }

    // 2. Every 201 payment matches a seat BOOKED by that payment, unless it was refunded: then
    // the seat is not booked by it.
    let mut payments_without_booked_seat = 0;
    let mut refunded_but_booked = 0;
    for (client, payment) in clients.iter().flat_map(|c| c.payments.iter().map(move |p| (c, p))) {
        if refunded.contains(&payment.payment_id) {
            if seats.get(&payment.seat_id).is_some_and(|seat| seat.payment_id == Some(payment.payment_id)) {
                refunded_but_booked += 1;
                note(
                    "refundedButBooked",
                    format!(
                        "{} refunded {} but its seat is booked by it",
                        client.user_id, payment.payment_id
                    ),
                );
            }
            continue;
        }
        let booked_by_it = seats.get(&payment.seat_id).is_some_and(|seat| {
            seat.status == SeatStatus::Booked
                && seat.payment_id == Some(payment.payment_id)
                && seat.reservation_id == Some(payment.reservation_id)
                && seat.paid_by.as_deref() == Some(client.user_id.as_str())
                && seat.amount == Some(payment.amount)
        });
        if !booked_by_it {
            payments_without_booked_seat += 1;
            let listed = seats.get(&payment.seat_id).map(|s| format!("{s:?}"));
            note(
                "paymentsWithoutBookedSeat",
                format!(
                    "{} paid {} for seat {}; server lists {listed:?}",
                    client.user_id, payment.payment_id, payment.seat_id
                ),
            );
        }
    }

    // 3. Every BOOKED seat has exactly one consistent payment, and some client made it.
    let unanswered: HashSet<Uuid> = clients.iter().flat_map(|c| c.payments_unknown.iter().copied()).collect();
    let mut booked_seats = 0;
    let mut booked_seats_without_one_payment = 0;
    let mut sales_no_client_made = 0;
    for seat in all_seats(sales).filter(|s| s.status == SeatStatus::Booked) {
        booked_seats += 1;
        let consistent = seat.payment_id.is_some()
            && seat.reservation_id.is_some()
            && seat.user_id.is_some()
            && seat.user_id == seat.paid_by
            && seat.amount == Some(price);
        if !consistent {
            booked_seats_without_one_payment += 1;
            note("bookedSeatsWithoutOnePayment", format!("{seat:?}"));
            continue;
        }
        let seen = seat.payment_id.is_some_and(|id| seen_payment_ids.contains(&id));
        let awaited = seat.reservation_id.is_some_and(|id| unanswered.contains(&id));
        if !seen && !awaited {
            sales_no_client_made += 1;
            note("salesNoClientMade", format!("{seat:?}"));
        }
    }
    for seat in all_seats(sales).filter(|s| s.status != SeatStatus::Booked) {
        if seat.payment_id.is_some() {
            booked_seats_without_one_payment += 1;
            note("bookedSeatsWithoutOnePayment", format!("paid but not booked: {seat:?}"));
        }
    }

    // 4. Balances: the ledger adds up to the balance, and (for users whose every money request
    //    was answered) equals what the client charged minus what it paid, payment by payment.
    let by_user: HashMap<&str, &UserRecord> = clients.iter().map(|c| (c.user_id.as_str(), c)).collect();
    let mut balance_mismatches = 0;
    let users = users_to_check(clients, sales);
    for user in &users {
        let Some(account) = accounts.get(user) else {
            balance_mismatches += 1;
            note("balanceMismatches", format!("{user}: no account from the server"));
            continue;
        };
        if let Err(why) = ledger_adds_up(account) {
            balance_mismatches += 1;
            note("balanceMismatches", format!("{user}: {why}"));
            continue;
        }
        let Some(client) = by_user.get(user.as_str()) else {
            continue; // a buyer only the server knows: counted as a sale no client made
        };
        let ledger_payments: HashSet<Uuid> = account.ledger.iter().filter_map(|e| e.payment_id).collect();
        let missing: Vec<Uuid> =
            client.payments.iter().map(|p| p.payment_id).filter(|id| !ledger_payments.contains(id)).collect();
        if !missing.is_empty() {
            balance_mismatches += 1;
            note("balanceMismatches", format!("{user}: payments {missing:?} missing from the ledger"));
            continue;
        }
        let expected = client.charged - client.paid() + client.refunded();
        if client.is_determinate() && account.balance != expected {
            balance_mismatches += 1;
            note(
                "balanceMismatches",
                format!(
                    "{user}: server balance {} but charged {} - paid {} + refunded {} = {expected}",
                    account.balance,
                    client.charged,
                    client.paid(),
                    client.refunded()
                ),
            );
        }
    }

    // 5. FIFO: nobody admitted before someone earlier in line who was also admitted; a drawn
    // pre-queue comes first, in the order its seed draws.
    let seed = opening.filter(|o| o.drawn).and_then(|o| o.opened).map(|o| o.seed);
    let drawn_key = |c: &UserRecord| match (seed, c.pre_queue, &c.token) {
        (Some(seed), true, Some(token)) => Some(draw_key(seed, token)),
        _ => None,
    };
    // Sorted by (0, draw key) for a drawn pre-queue, then (1, number in line) for the rest.
    type Key = (u8, [u8; 32], u64);
    let mut keyed: Vec<(Key, i64)> = clients
        .iter()
        .filter_map(|c| {
            let at = c.admitted_at?.timestamp_millis();
            match drawn_key(c) {
                Some(key) => Some(((0, key, 0), at)),
                None => Some(((1, [0; 32], c.line_number?), at)),
            }
        })
        .collect();
    keyed.sort_unstable();
    let admissions: Vec<(u64, i64)> =
        keyed.iter().enumerate().map(|(rank, (_, at))| (rank as u64, *at)).collect();
    let fifo_inversions = fifo_inversions(&admissions);
    if fifo_inversions > 0 {
        note("fifoInversions", format!("{fifo_inversions} pairs among {} admissions", admissions.len()));
    }

    // 6. A scheduled opening: nobody admitted before it, and the pre-queue drawn once as its
    // seed draws it (numbers seen after the opening in the seed's order).
    let opening_audit = opening.map(|scheduled| {
        let opened_at = scheduled.opened.map_or(scheduled.opens_at, |o| o.at.max(scheduled.opens_at));
        let early: Vec<&UserRecord> =
            clients.iter().filter(|c| c.admitted_at.is_some_and(|at| at < opened_at)).collect();
        for c in early.iter().take(EXAMPLES) {
            note(
                "admittedBeforeOpening",
                format!("{} admitted at {:?}, before {opened_at}", c.user_id, c.admitted_at),
            );
        }
        let mut drawn: Vec<([u8; 32], u64)> =
            clients.iter().filter_map(|c| Some((drawn_key(c)?, c.drawn_number?))).collect();
        drawn.sort_unstable();
        let ranked: Vec<(u64, u64)> =
            drawn.iter().enumerate().map(|(rank, (_, n))| (rank as u64, *n)).collect();
        let draw_inversions = crate::stats::fifo_inversions(&ranked);
        if draw_inversions > 0 {
            note(
                "drawInversions",
                format!("{draw_inversions} pairs among {} drawn numbers seen", drawn.len()),
            );
        }
        let twice: Vec<&UserRecord> = clients.iter().filter(|c| c.line_changes > 1).collect();
        for c in twice.iter().take(EXAMPLES) {
            note(
                "drawnMoreThanOnce",
                format!("{}: its number in line changed {} times", c.user_id, c.line_changes),
            );
        }
        OpeningAudit {
            opened: scheduled.opened.is_some(),
            pre_queue: clients.iter().filter(|c| c.pre_queue).count(),
            drawn_seen: clients.iter().filter(|c| c.pre_queue && c.drawn_number.is_some()).count(),
            admitted_before_opening: early.len(),
            draw_inversions,
            drawn_more_than_once: twice.len(),
        }
    });
    // 7. Nobody pays after an operator revoked their token.
    let revoked: HashMap<&str, chrono::DateTime<chrono::Utc>> =
        clients.iter().filter_map(|c| Some((c.user_id.as_str(), c.revoked_at?))).collect();
    let mut paid_after_revocation = 0;
    for seat in sales.schedules.iter().flat_map(|s| &s.seats) {
        let (Some(user), Some(paid_at)) = (seat.paid_by.as_deref(), seat.paid_at) else { continue };
        if let Some(at) = revoked.get(user) {
            if paid_at > *at + chrono::Duration::milliseconds(REVOCATION_SLACK_MS) {
                paid_after_revocation += 1;
                note("paidAfterRevocation", format!("{user} paid at {paid_at}, revoked at {at}"));
            }
        }
    }

    // 8. Nobody owns more seats than the concert lets one buyer.
    let mut owned: HashMap<&str, usize> = HashMap::new();
    for seat in sales.schedules.iter().flat_map(|s| &s.seats) {
        if let Some(user) = seat.paid_by.as_deref() {
            *owned.entry(user).or_default() += 1;
        }
    }
    let over_cap = match max_seats_per_buyer {
        Some(cap) => {
            let over: Vec<(&str, usize)> = owned.into_iter().filter(|(_, n)| *n > cap as usize).collect();
            for (user, n) in over.iter().take(EXAMPLES) {
                note("overCap", format!("{user} owns {n} seats, the cap is {cap}"));
            }
            over.len()
        }
        None => 0,
    };

    let opening_failed = opening_audit.as_ref().is_some_and(|o| {
        o.admitted_before_opening > 0 || o.draw_inversions > 0 || o.drawn_more_than_once > 0
    });

    let failed = seats_paid_twice
        + payments_without_booked_seat
        + refunded_but_booked
        + booked_seats_without_one_payment
        + sales_no_client_made
        + balance_mismatches
        > 0
        || fifo_inversions > 0
        || opening_failed
        || paid_after_revocation > 0
        || over_cap > 0
        || contract_violations > 0;
    Audit {
        verdict: if failed { Verdict::Fail } else { Verdict::Pass },
        seats: seats.len(),
        booked_seats,
        payments_seen: seen_payment_ids.len(),
        refunds_seen: refunded.len(),
        refunded_but_booked,
        payments_unanswered: unanswered.len(),
        accounts_checked: users.len(),
        admissions_observed: admissions.len(),
        seats_paid_twice,
        payments_without_booked_seat,
        booked_seats_without_one_payment,
        sales_no_client_made,
        balance_mismatches,
        fifo_inversions,
        paid_after_revocation,
        over_cap,
        opening: opening_audit,
        contract_violations,
        examples,
    }
}

/// The ledger's entries chain from 0 to the balance.
fn ledger_adds_up(account: &Account) -> Result<(), String> {
    let mut running = 0i64;
    for entry in &account.ledger {
        if entry.amount <= 0 {
            return Err(format!("ledger entry with amount {}", entry.amount));
        }
        running += match entry.kind {
            LedgerKind::Charge | LedgerKind::Refund => entry.amount,
            LedgerKind::Payment => -entry.amount,
        };
        if entry.balance_after != running {
            return Err(format!(
                "ledger says {} after an entry, the entries add up to {running}",
                entry.balance_after
            ));
        }
        if running < 0 {
            return Err(format!("ledger goes negative ({running})"));
        }
    }
    if running == account.balance {
        Ok(())
    } else {
        Err(format!("balance {} but the ledger adds up to {running}", account.balance))
    }
}

impl Audit {
    /// The lines printed after a run.
    #[must_use]
    pub fn render(&self) -> String {
        let verdict = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        };
        let mut out = format!(
            "audit: {verdict}\n  seats {} | booked {} | payments seen {} | refunds seen {} | unanswered {} | accounts checked {} | admissions observed {}\n  \
             seats paid twice {} | payments without booked seat {} | refunded but booked {} | booked seats without one payment {} | sales no client made {} | \
             balance mismatches {} | FIFO inversions {} | paid after revocation {} | over the cap {} | contract violations {}\n",
            self.seats,
            self.booked_seats,
            self.payments_seen,
            self.refunds_seen,
            self.payments_unanswered,
            self.accounts_checked,
            self.admissions_observed,
            self.seats_paid_twice,
            self.payments_without_booked_seat,
            self.refunded_but_booked,
            self.booked_seats_without_one_payment,
            self.sales_no_client_made,
            self.balance_mismatches,
            self.fifo_inversions,
            self.paid_after_revocation,
            self.over_cap,
            self.contract_violations,
        );
        if let Some(o) = &self.opening {
            out.push_str(&format!(
                "  opening: {} | pre-queue {} (drawn number seen by {}) | admitted before the opening {} | \
                 draw inversions {} | drawn more than once {}\n",
                if o.opened { "recorded" } else { "NOT recorded" },
                o.pre_queue,
                o.drawn_seen,
                o.admitted_before_opening,
                o.draw_inversions,
                o.drawn_more_than_once,
            ));
        }
        for (check, list) in &self.examples {
            for example in list {
                out.push_str(&format!("  {check}: {example}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::api::{LedgerEntry, ScheduleSales};
    use crate::record::{Outcome, Role, SeenPayment, SeenRefund};

    const PRICE: i64 = 100;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn client(user: &str) -> UserRecord {
        UserRecord::new(user, Role::Buyer, "h", 0)
    }

    /// A buyer who charged `charged`, paid seat `seat` with payment `1000 + seat` for reservation
    /// `2000 + seat`.
    fn buyer(user: &str, seat: u128, charged: i64) -> UserRecord {
        let mut c = client(user);
        c.charged = charged;
        c.payments.push(SeenPayment {
            payment_id: id(1000 + seat),
            reservation_id: id(2000 + seat),
            seat_id: id(seat),
            amount: PRICE,
        });
        c.outcome = Outcome::Bought;
        c
    }

    fn seat(n: u128, booked_by: Option<&str>) -> SeatSale {
        SeatSale {
            seat_id: id(n),
            number: u32::try_from(n).unwrap_or(0),
            status: if booked_by.is_some() { SeatStatus::Booked } else { SeatStatus::Available },
            reservation_id: booked_by.map(|_| id(2000 + n)),
            user_id: booked_by.map(str::to_owned),
            payment_id: booked_by.map(|_| id(1000 + n)),
            paid_by: booked_by.map(str::to_owned),
            amount: booked_by.map(|_| PRICE),
            paid_at: booked_by.map(|_| DateTime::<Utc>::UNIX_EPOCH),
        }
    }

    fn sales(seats: Vec<SeatSale>) -> Sales {
        Sales { concert_id: id(9), schedules: vec![ScheduleSales { schedule_id: id(8), seats }] }
    }

    fn account(user: &str, charged: i64, payments: &[u128]) -> (String, Account) {
        let mut ledger = vec![LedgerEntry {
            kind: LedgerKind::Charge,
            amount: charged,
            balance_after: charged,
            payment_id: None,
        }];
        let mut balance = charged;
        for seat in payments {
            balance -= PRICE;
            ledger.push(LedgerEntry {
                kind: LedgerKind::Payment,
                amount: PRICE,
                balance_after: balance,
                payment_id: Some(id(1000 + seat)),
            });
        }
        (user.to_owned(), Account { user_id: user.to_owned(), balance, ledger })
    }

    fn run(clients: &[UserRecord], sales: &Sales, accounts: &HashMap<String, Account>) -> Audit {
        audit(Evidence {
            clients,
            sales,
            accounts,
            price: PRICE,
            contract_violations: 0,
            opening: None,
            max_seats_per_buyer: None,
        })
    }

    #[test]
    fn a_clean_sale_passes() {
        let clients = vec![buyer("a", 1, 150), buyer("b", 2, 100), client("c")];
        let sales = sales(vec![seat(1, Some("a")), seat(2, Some("b")), seat(3, None)]);
        let accounts = HashMap::from([account("a", 150, &[1]), account("b", 100, &[2])]);
        let audit = run(&clients, &sales, &accounts);
        assert_eq!(audit.verdict, Verdict::Pass, "{}", audit.render());
        assert_eq!(
            (audit.seats, audit.booked_seats, audit.payments_seen, audit.accounts_checked),
            (3, 2, 2, 2)
        );
    }

    /// `a` bought seat 1 and cancelled it (refunded); `b` then bought the seat again.
    fn resold() -> (Vec<UserRecord>, HashMap<String, Account>) {
        let mut a = buyer("a", 1, 150);
        a.refunds.push(SeenRefund {
            payment_id: id(1001),
            reservation_id: id(2001),
            seat_id: id(1),
            amount: PRICE,
        });
        a.outcome = Outcome::Cancelled;
        let mut b = client("b");
        b.charged = 100;
        b.payments.push(SeenPayment {
            payment_id: id(3001),
            reservation_id: id(4001),
            seat_id: id(1),
            amount: PRICE,
        });
        let (_, mut a_account) = account("a", 150, &[1]);
        a_account.balance += PRICE;
        a_account.ledger.push(LedgerEntry {
            kind: LedgerKind::Refund,
            amount: PRICE,
            balance_after: a_account.balance,
            payment_id: Some(id(1001)),
        });
        let (_, mut b_account) = account("b", 100, &[]);
        b_account.balance -= PRICE;
        b_account.ledger.push(LedgerEntry {
            kind: LedgerKind::Payment,
            amount: PRICE,
            balance_after: b_account.balance,
            payment_id: Some(id(3001)),
        });
        (vec![a, b], HashMap::from([("a".to_owned(), a_account), ("b".to_owned(), b_account)]))
    }

    #[test]
    fn a_refunded_seat_sold_again_passes_and_money_counts_the_refund() {
        let (clients, accounts) = resold();
        let mut booked = seat(1, Some("b"));
        (booked.reservation_id, booked.payment_id) = (Some(id(4001)), Some(id(3001)));
        let audit = run(&clients, &sales(vec![booked.clone()]), &accounts);
        assert_eq!(audit.verdict, Verdict::Pass, "{}", audit.render());
        assert_eq!((audit.payments_seen, audit.refunds_seen, audit.seats_paid_twice), (1, 1, 0));
        // Without the refund, the seat has two live payments and a's balance is off.
        let mut unrefunded = clients.clone();
        unrefunded[0].refunds.clear();
        let audit = run(&unrefunded, &sales(vec![booked]), &accounts);
        assert_eq!((audit.verdict, audit.seats_paid_twice), (Verdict::Fail, 1), "{}", audit.render());
        assert!(audit.balance_mismatches > 0);
    }

    #[test]
    fn a_refunded_payment_whose_seat_is_still_booked_by_it_fails() {
        let (clients, accounts) = resold();
        let clients = &clients[..1];
        let audit = run(clients, &sales(vec![seat(1, Some("a"))]), &accounts);
        assert_eq!((audit.verdict, audit.refunded_but_booked), (Verdict::Fail, 1), "{}", audit.render());
    }

    #[test]
    fn a_buyer_over_the_concerts_cap_fails() {
        let mut a = buyer("a", 1, 200);
        a.payments.push(SeenPayment {
            payment_id: id(1002),
            reservation_id: id(2002),
            seat_id: id(2),
            amount: PRICE,
        });
        let sales = sales(vec![seat(1, Some("a")), seat(2, Some("a"))]);
        let accounts = HashMap::from([account("a", 200, &[1, 2])]);
        let audit_with = |cap: u32| {
            audit(Evidence {
                clients: std::slice::from_ref(&a),
                sales: &sales,
                accounts: &accounts,
                price: PRICE,
                contract_violations: 0,
                opening: None,
                max_seats_per_buyer: Some(cap),
            })
        };
        assert_eq!(audit_with(2).verdict, Verdict::Pass, "{}", audit_with(2).render());
        let over = audit_with(1);
        assert_eq!((over.verdict, over.over_cap), (Verdict::Fail, 1));
    }

    #[test]
    fn a_payment_after_the_buyers_revocation_fails() {
        let sales = sales(vec![seat(1, Some("a"))]);
        let accounts = HashMap::from([account("a", 150, &[1])]);
        let paid_at = DateTime::<Utc>::UNIX_EPOCH;
        let mut a = buyer("a", 1, 150);
        a.revoked_at = Some(paid_at + chrono::Duration::seconds(2));
        assert_eq!(run(&[a.clone()], &sales, &accounts).verdict, Verdict::Pass, "paid before");
        a.revoked_at = Some(paid_at - chrono::Duration::milliseconds(REVOCATION_SLACK_MS / 2));
        assert_eq!(run(&[a.clone()], &sales, &accounts).verdict, Verdict::Pass, "within the slack");
        a.revoked_at = Some(paid_at - chrono::Duration::seconds(5));
        let audit = run(&[a], &sales, &accounts);
        assert_eq!((audit.verdict, audit.paid_after_revocation), (Verdict::Fail, 1));
    }

    #[test]
    fn two_payments_for_one_seat_fail() {
        let mut b = buyer("b", 1, 100);
        b.payments[0].payment_id = id(77);
        let clients = vec![buyer("a", 1, 100), b];
        let sales = sales(vec![seat(1, Some("a"))]);
        let accounts = HashMap::from([account("a", 100, &[1]), {
            let (user, mut acc) = account("b", 100, &[1]);
            acc.ledger[1].payment_id = Some(id(77));
            (user, acc)
        }]);
        let audit = run(&clients, &sales, &accounts);
        assert_eq!(
            (audit.verdict, audit.seats_paid_twice, audit.payments_without_booked_seat),
            (Verdict::Fail, 1, 1)
        );
    }

    #[test]
    fn a_booked_seat_nobody_paid_for_fails_unless_an_answer_was_lost() {
        let sales = sales(vec![seat(1, Some("a"))]);
        let accounts = HashMap::from([account("a", 100, &[1])]);
        let mut a = client("a");
        a.charged = 100;
        let audit = run(&[a.clone()], &sales, &accounts);
        assert_eq!((audit.verdict, audit.sales_no_client_made), (Verdict::Fail, 1), "{}", audit.render());
        a.payments_unknown.push(id(2001));
        let audit = run(&[a], &sales, &accounts);
        assert_eq!((audit.verdict, audit.payments_unanswered), (Verdict::Pass, 1), "{}", audit.render());
    }

    #[test]
    fn a_booked_seat_without_its_payment_fails() {
        let mut broken = seat(1, Some("a"));
        broken.payment_id = None;
        let audit =
            run(&[buyer("a", 1, 100)], &sales(vec![broken]), &HashMap::from([account("a", 100, &[1])]));
        assert_eq!(audit.booked_seats_without_one_payment, 1);
        assert_eq!(audit.payments_without_booked_seat, 1);
        assert_eq!(audit.verdict, Verdict::Fail);
    }

    #[test]
    fn a_balance_off_by_one_point_fails() {
        let (user, mut acc) = account("a", 150, &[1]);
        acc.balance += 1;
        let audit =
            run(&[buyer("a", 1, 150)], &sales(vec![seat(1, Some("a"))]), &HashMap::from([(user, acc)]));
        assert_eq!((audit.verdict, audit.balance_mismatches), (Verdict::Fail, 1));
        // The ledger adds up but the client charged less than the server kept.
        let audit = run(
            &[buyer("a", 1, 120)],
            &sales(vec![seat(1, Some("a"))]),
            &HashMap::from([account("a", 150, &[1])]),
        );
        assert_eq!((audit.verdict, audit.balance_mismatches), (Verdict::Fail, 1));
    }

    #[test]
    fn a_missing_account_fails() {
        let audit = run(&[buyer("a", 1, 100)], &sales(vec![seat(1, Some("a"))]), &HashMap::new());
        assert_eq!((audit.verdict, audit.balance_mismatches), (Verdict::Fail, 1));
    }

    #[test]
    fn fifo_inversions_fail_and_same_tick_batches_do_not() {
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms);
        let mut clients: Vec<UserRecord> = (0..4).map(|i| client(&format!("u{i}"))).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.line_number = Some(i as u64 + 1);
            c.admitted_at = at(if i < 3 { 1_000 } else { 2_000 });
        }
        let empty = sales(vec![]);
        assert_eq!(run(&clients, &empty, &HashMap::new()).verdict, Verdict::Pass);
        clients[0].admitted_at = at(3_000);
        let audit = run(&clients, &empty, &HashMap::new());
        assert_eq!((audit.verdict, audit.fifo_inversions, audit.admissions_observed), (Verdict::Fail, 3, 4));
    }

    #[test]
    fn contract_violations_fail() {
        let empty = sales(vec![]);
        let accounts = HashMap::new();
        let audit = audit(Evidence {
            clients: &[],
            sales: &empty,
            accounts: &accounts,
            price: PRICE,
            contract_violations: 2,
            opening: None,
            max_seats_per_buyer: None,
        });
        assert_eq!(audit.verdict, Verdict::Fail);
    }

    /// A drawn pre-queue of four (tokens t0…t3) admitted in the seed's order, then a late
    /// joiner with number 9; the opening at 1 s.
    fn drawn_sale() -> (Vec<UserRecord>, Scheduled) {
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms);
        let seed = 7;
        let mut pre: Vec<UserRecord> = (0..4)
            .map(|i| {
                let mut c = client(&format!("p{i}"));
                c.pre_queue = true;
                c.token = Some(format!("{i:072}"));
                c.line_number = Some(i + 1);
                c
            })
            .collect();
        pre.sort_by_key(|c| draw_key(seed, c.token.as_deref().expect("a token")));
        for (rank, c) in pre.iter_mut().enumerate() {
            let rank = rank as i64;
            c.admitted_at = at(2_000 + rank * 1_000);
            c.drawn_number = Some(rank as u64 + 1);
            c.line_changes = u32::from(c.line_number != c.drawn_number);
            c.line_number = c.drawn_number;
        }
        let mut late = client("late");
        late.line_number = Some(9);
        late.admitted_at = at(9_000);
        pre.push(late);
        let opened = crate::api::Opening { at: at(1_000).expect("a time"), seed };
        (pre, Scheduled { opens_at: opened.at, drawn: true, opened: Some(opened) })
    }

    fn audit_opening(clients: &[UserRecord], opening: Scheduled) -> Audit {
        let empty = sales(vec![]);
        let accounts = HashMap::new();
        audit(Evidence {
            clients,
            sales: &empty,
            accounts: &accounts,
            price: PRICE,
            contract_violations: 0,
            opening: Some(opening),
            max_seats_per_buyer: None,
        })
    }

    #[test]
    fn a_pre_queue_drawn_as_its_seed_says_and_admitted_after_the_opening_passes() {
        let (clients, opening) = drawn_sale();
        let audit = audit_opening(&clients, opening);
        assert_eq!(audit.verdict, Verdict::Pass, "{}", audit.render());
        let checked = audit.opening.expect("checked");
        assert_eq!((checked.pre_queue, checked.drawn_seen, checked.draw_inversions), (4, 4, 0));
    }

    #[test]
    fn an_admission_before_the_opening_fails() {
        let (mut clients, opening) = drawn_sale();
        clients[0].admitted_at = DateTime::<Utc>::from_timestamp_millis(500);
        let audit = audit_opening(&clients, opening);
        assert_eq!(
            (audit.verdict, audit.opening.expect("checked").admitted_before_opening),
            (Verdict::Fail, 1)
        );
    }

    #[test]
    fn numbers_out_of_the_seeds_order_or_drawn_twice_fail() {
        let (clients, opening) = drawn_sale();
        let mut swapped = clients.clone();
        let (a, b) = (swapped[0].drawn_number, swapped[1].drawn_number);
        (swapped[0].drawn_number, swapped[1].drawn_number) = (b, a);
        let audit = audit_opening(&swapped, opening);
        assert_eq!((audit.verdict, audit.opening.expect("checked").draw_inversions), (Verdict::Fail, 1));
        let mut twice = clients.clone();
        twice[2].line_changes = 2;
        let audit = audit_opening(&twice, opening);
        assert_eq!((audit.verdict, audit.opening.expect("checked").drawn_more_than_once), (Verdict::Fail, 1));
        // Admitted out of the seed's order: a FIFO inversion of the drawn order.
        let mut late_first = clients;
        late_first[4].admitted_at = DateTime::<Utc>::from_timestamp_millis(1_500);
        let audit = audit_opening(&late_first, opening);
        assert_eq!((audit.verdict, audit.fifo_inversions), (Verdict::Fail, 4));
    }
}
