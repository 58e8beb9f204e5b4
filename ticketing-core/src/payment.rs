//! The balance ledger and the payment rule. Pure: no I/O, `now` passed in.
//!
//! A wallet's balance changes only with a ledger entry: CHARGE adds, PAYMENT subtracts, so the
//! ledger always sums to the balance. Every write names the wallet version it was computed from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{SeatRecord, SeatState};
use crate::error::DomainError;
use crate::hold::ReservationStatus;
use crate::hold::{Reservation, require_live_hold};
use crate::ids::{Fence, LedgerEntryId, PaymentId, Points, ReservationId, SeatId, UserId};
use crate::limits::{BALANCE_MAX_POINTS, CHARGE_MAX_POINTS, RESERVATIONS_PER_PAYMENT_MAX};
use crate::queue::{self, TokenRecord, TokenStatus};

/// A user's prepaid balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wallet {
    /// Whose.
    pub user_id: UserId,
    /// The balance; never negative.
    pub balance: Points,
    /// Raised by every change; 0 for a wallet never written.
    pub version: u64,
}

impl Wallet {
    /// The wallet of a user who has never charged.
    #[must_use]
    pub fn empty(user_id: UserId) -> Self {
        Self { user_id, balance: Points::ZERO, version: 0 }
    }
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerKind {
    /// Points added.
    Charge,
    /// Points spent on a seat.
    Payment,
    /// Points given back for a cancelled booking.
    Refund,
}

/// One change of a balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Its id.
    pub id: LedgerEntryId,
    /// Whose balance.
    pub user_id: UserId,
    /// Charge or payment.
    pub kind: LedgerKind,
    /// How much (always positive; `kind` gives the sign).
    pub amount: Points,
    /// The balance after it.
    pub balance_after: Points,
    /// When.
    pub at: DateTime<Utc>,
    /// The payment, for a PAYMENT entry and for the REFUND that answers it.
    pub payment_id: Option<PaymentId>,
}

impl LedgerEntry {
    /// The entry's effect on the balance: `+amount` for a charge, `-amount` for a payment.
    #[must_use]
    pub fn signed_amount(&self) -> i64 {
        match self.kind {
            LedgerKind::Charge | LedgerKind::Refund => self.amount.get(),
            LedgerKind::Payment => -self.amount.get(),
        }
    }
}

/// A completed payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// Its id.
    pub id: PaymentId,
    /// The reservation it confirmed.
    pub reservation_id: ReservationId,
    /// The seat it booked.
    pub seat_id: SeatId,
    /// Who paid.
    pub user_id: UserId,
    /// How much.
    pub amount: Points,
    /// When.
    pub at: DateTime<Utc>,
    /// When it was refunded (its booking cancelled), if it was: the seat may be sold again.
    #[serde(default)]
    pub refunded_at: Option<DateTime<Utc>>,
}

/// A charge to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargePlan {
    /// The wallet version it was computed from; the store writes only if it is unchanged.
    pub expected_version: u64,
    /// The wallet after the charge.
    pub wallet: Wallet,
    /// The ledger entry.
    pub entry: LedgerEntry,
}

/// Checks a charge amount: `1..=CHARGE_MAX_POINTS`.
///
/// # Errors
/// [`DomainError::InvalidAmount`].
pub fn validate_charge_amount(amount: i64) -> Result<Points, DomainError> {
    if amount <= 0 {
        return Err(DomainError::InvalidAmount { reason: "the amount must be positive".into() });
    }
    if amount > CHARGE_MAX_POINTS {
        return Err(DomainError::InvalidAmount {
            reason: format!("at most {CHARGE_MAX_POINTS} points per charge"),
        });
    }
    Points::new(amount).map_err(DomainError::from)
}

/// Decides a charge of `amount` to `wallet`.
///
/// # Errors
/// [`DomainError::InvalidAmount`] outside `1..=CHARGE_MAX_POINTS`;
/// [`DomainError::BalanceLimitExceeded`] when the balance would pass `BALANCE_MAX_POINTS`.
pub fn plan_charge(
    wallet: &Wallet,
    amount: i64,
    entry_id: LedgerEntryId,
    now: DateTime<Utc>,
) -> Result<ChargePlan, DomainError> {
    let amount = validate_charge_amount(amount)?;
    let max = Points::new(BALANCE_MAX_POINTS)?;
    let balance = wallet
        .balance
        .checked_add(amount)
        .filter(|b| *b <= max)
        .ok_or(DomainError::BalanceLimitExceeded { max })?;
    Ok(ChargePlan {
        expected_version: wallet.version,
        wallet: Wallet { user_id: wallet.user_id.clone(), balance, version: wallet.version + 1 },
        entry: LedgerEntry {
            id: entry_id,
            user_id: wallet.user_id.clone(),
            kind: LedgerKind::Charge,
            amount,
            balance_after: balance,
            at: now,
            payment_id: None,
        },
    })
}

/// A payment to write, in one atomic step: one debit of the wallet for every seat in it, and for
/// each seat its reservation CONFIRMED, the seat BOOKED, a payment and a PAYMENT ledger entry
/// recorded. All of it is written or none of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPlan {
    /// The seats paid for, in the order of their seat ids: the order every store takes their
    /// locks in, so two payments of overlapping holds cannot deadlock.
    pub seats: Vec<PaidSeat>,
    /// The wallet version it was computed from.
    pub expected_wallet_version: u64,
    /// The wallet after the debit (its version raised once, however many seats).
    pub wallet: Wallet,
}

impl PaymentPlan {
    /// What the payment answers: its payments and the balance after it.
    #[must_use]
    pub fn receipt(&self) -> PaymentReceipt {
        PaymentReceipt {
            payments: self.seats.iter().map(|s| s.payment.clone()).collect(),
            balance: self.wallet.balance,
        }
    }

    /// The reservations it confirms.
    pub fn reservation_ids(&self) -> impl Iterator<Item = ReservationId> + '_ {
        self.seats.iter().map(|s| s.reservation.id)
    }
}

/// One seat of a [`PaymentPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidSeat {
    /// The reservation being confirmed.
    pub reservation: Reservation,
    /// The fence of the hold; the seat must still have it.
    pub expected_fence: Fence,
    /// The seat's fence after booking.
    pub new_fence: Fence,
    /// The seat's new state.
    pub seat_state: SeatState,
    /// Its PAYMENT ledger entry (one per seat, so a refund answers one entry with another).
    pub entry: LedgerEntry,
    /// Its payment.
    pub payment: Payment,
}

/// The ids a payment creates, chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentIds {
    /// The payment's id.
    pub payment: PaymentId,
    /// The ledger entry's id.
    pub entry: LedgerEntryId,
}

/// Refuses a payment of `adding` seats that would take a buyer past the concert's seat cap:
/// `bought` is how many seats of the concert the buyer has paid for (the ones being paid left
/// out), read in the same store step as the wallet whose version the payment's write names
/// (every payment changes that version, so no other payment of the buyer can slip in between
/// the count and the write). A hold asks with `adding` 1: a buyer at the cap holds nothing.
///
/// # Errors
/// [`DomainError::BuyerLimitReached`].
pub fn require_within_buyer_cap(bought: u32, adding: u32, cap: Option<u32>) -> Result<(), DomainError> {
    match cap {
        Some(limit) if u64::from(bought) + u64::from(adding) > u64::from(limit) => {
            Err(DomainError::BuyerLimitReached { limit })
        }
        _ => Ok(()),
    }
}

/// Checks the reservations one payment names: at least one, at most
/// [`RESERVATIONS_PER_PAYMENT_MAX`], none twice.
///
/// # Errors
/// [`DomainError::InvalidInput`].
pub fn validate_order(ids: &[ReservationId]) -> Result<(), DomainError> {
    if ids.is_empty() {
        return Err(nothing_to_pay());
    }
    if ids.len() > RESERVATIONS_PER_PAYMENT_MAX {
        return Err(DomainError::InvalidInput {
            reason: format!("at most {RESERVATIONS_PER_PAYMENT_MAX} reservations per payment"),
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    if let Some(twice) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(DomainError::InvalidInput { reason: format!("reservation {twice} is named twice") });
    }
    Ok(())
}

fn nothing_to_pay() -> DomainError {
    DomainError::InvalidInput { reason: "name at least one reservation to pay".into() }
}

/// Decides a payment of one `reservation` by `payer` from `wallet`: [`plan_order`] of one seat.
///
/// # Errors
/// Those of [`plan_order`].
pub fn plan_payment(
    reservation: &Reservation,
    seat: &SeatRecord,
    wallet: &Wallet,
    payer: &UserId,
    ids: PaymentIds,
    now: DateTime<Utc>,
) -> Result<PaymentPlan, DomainError> {
    plan_order(&[(reservation, seat, ids)], wallet, payer, now)
}

/// Decides one payment of several holds by `payer` from `wallet`: every hold must be live and
/// the payer's own ([`require_live_hold`], judged in the order given: the first refusal
/// answers), and the balance must cover their sum. The wallet is debited once; each seat gets
/// its payment and ledger entry (with `ids`, chosen by the caller), the entries' running
/// balances stepping down in seat order.
///
/// # Errors
/// Those of [`require_live_hold`]; [`DomainError::InsufficientBalance`] (for the sum);
/// [`DomainError::InvalidInput`] for no holds.
pub fn plan_order(
    holds: &[(&Reservation, &SeatRecord, PaymentIds)],
    wallet: &Wallet,
    payer: &UserId,
    now: DateTime<Utc>,
) -> Result<PaymentPlan, DomainError> {
    if holds.is_empty() {
        return Err(nothing_to_pay());
    }
    let mut total = Points::ZERO;
    for (reservation, seat, _) in holds {
        require_live_hold(reservation, seat, payer, now)?;
        // Prices are at most PRICE_MAX_POINTS and a payment names at most
        // RESERVATIONS_PER_PAYMENT_MAX holds: the sum cannot overflow.
        total = total.checked_add(reservation.price).unwrap_or(total);
    }
    let balance = wallet
        .balance
        .checked_sub(total)
        .ok_or(DomainError::InsufficientBalance { balance: wallet.balance, required: total })?;
    let mut ordered: Vec<&(&Reservation, &SeatRecord, PaymentIds)> = holds.iter().collect();
    ordered.sort_by_key(|(reservation, _, _)| reservation.seat_id);
    let mut running = wallet.balance;
    let seats = ordered
        .into_iter()
        .map(|(reservation, _, ids)| {
            let price = reservation.price;
            // Never below `balance`, which is not negative: the sum was checked above.
            running = running.checked_sub(price).unwrap_or(balance);
            PaidSeat {
                reservation: (*reservation).clone(),
                expected_fence: reservation.fence,
                new_fence: reservation.fence.next(),
                seat_state: SeatState::Booked { reservation: reservation.id },
                entry: LedgerEntry {
                    id: ids.entry,
                    user_id: payer.clone(),
                    kind: LedgerKind::Payment,
                    amount: price,
                    balance_after: running,
                    at: now,
                    payment_id: Some(ids.payment),
                },
                payment: Payment {
                    id: ids.payment,
                    reservation_id: reservation.id,
                    seat_id: reservation.seat_id,
                    user_id: payer.clone(),
                    amount: price,
                    at: now,
                    refunded_at: None,
                },
            }
        })
        .collect();
    Ok(PaymentPlan {
        seats,
        expected_wallet_version: wallet.version,
        wallet: Wallet { user_id: payer.clone(), balance, version: wallet.version + 1 },
    })
}

/// Checks that the token `record` may pay `reservation` at `now` (that the hold is live and
/// the user's own is [`require_live_hold`]'s question). A token acts only for its own concert.
/// Within it, an active token may pay any of its user's holds, and the token that made a hold
/// may pay it until the hold's deadline even after its own active time ended (or after it paid
/// another hold): the hold, granted while the token was active, carries the right to pay it.
///
/// `position` is asked for only when the token is still waiting, to say where it stands.
///
/// # Errors
/// [`DomainError::WrongConcert`], [`DomainError::NotAdmitted`] or [`DomainError::TokenExpired`] ([`DomainError::TokenRevoked`] for a revoked token).
pub fn require_payer(
    record: &TokenRecord,
    reservation: &Reservation,
    now: DateTime<Utc>,
    position: impl FnOnce() -> u64,
) -> Result<(), DomainError> {
    if reservation.concert_id != record.concert_id {
        return Err(DomainError::WrongConcert);
    }
    if record.revoked() {
        return Err(DomainError::TokenRevoked);
    }
    if reservation.token == record.token && record.status_at(now) != TokenStatus::Waiting {
        return Ok(());
    }
    queue::require_active(record, Some(reservation.concert_id), now, position)
}

/// What becomes of the token `record` once it paid `paid` at `now`, given the reservations it
/// made (`held`, as read after the payment): it expires (PAID) when nothing it holds is left to
/// pay, and stays as it is while another of its holds is live, so that one can be paid too.
/// `None`: nothing to write (it holds more, or it is no longer active).
#[must_use]
pub fn token_after_payment(
    record: &TokenRecord,
    paid: &[ReservationId],
    held: &[Reservation],
    now: DateTime<Utc>,
) -> Option<TokenRecord> {
    let more_to_pay = held.iter().any(|r| {
        !paid.contains(&r.id) && r.token == record.token && r.status_at(now) == ReservationStatus::Held
    });
    if more_to_pay { None } else { queue::expire_on_payment(record, now).ok() }
}

/// Who cancels a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canceller {
    /// Its buyer, before `until` (the end of the concert's cancellation window for the booking's
    /// performance; `None`: the concert's buyers may not cancel).
    Buyer {
        /// The buyer.
        user: UserId,
        /// Until when they may.
        until: Option<DateTime<Utc>>,
    },
    /// An operator, at any time.
    Operator,
}

/// A cancellation to write, in one atomic step: the seat AVAILABLE again with the next fence,
/// the reservation CANCELLED, the payment marked refunded, the points back on the buyer's
/// wallet with a REFUND ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPlan {
    /// The booking being cancelled, as read (CONFIRMED).
    pub reservation: Reservation,
    /// Its payment, as refunded (`refunded_at` set).
    pub payment: Payment,
    /// The seat's fence as booked by the reservation; the seat must still have it.
    pub expected_fence: Fence,
    /// The seat's fence once available again.
    pub new_fence: Fence,
    /// The buyer's wallet version it was computed from.
    pub expected_wallet_version: u64,
    /// The buyer's wallet after the refund.
    pub wallet: Wallet,
    /// The REFUND ledger entry.
    pub entry: LedgerEntry,
}

/// What a completed cancellation returns (and every idempotent replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundReceipt {
    /// The cancelled booking.
    pub reservation_id: ReservationId,
    /// The refunded payment.
    pub payment_id: PaymentId,
    /// The seat, available again.
    pub seat_id: SeatId,
    /// Whose points came back.
    pub user_id: UserId,
    /// How many.
    pub amount: Points,
    /// The buyer's balance right after.
    pub balance: Points,
    /// When.
    pub at: DateTime<Utc>,
}

impl RefundPlan {
    /// What the cancellation answers.
    #[must_use]
    pub fn receipt(&self) -> RefundReceipt {
        RefundReceipt {
            reservation_id: self.reservation.id,
            payment_id: self.payment.id,
            seat_id: self.reservation.seat_id,
            user_id: self.reservation.user_id.clone(),
            amount: self.entry.amount,
            balance: self.wallet.balance,
            at: self.entry.at,
        }
    }
}

/// Decides the cancellation of `reservation` (a booking) by `by` at `now`: `seat` and `payment`
/// are the reservation's as read, `wallet` its buyer's. A buyer may cancel only their own
/// booking and only within the concert's cancellation window ([`Canceller::Buyer`]); an operator
/// may cancel any booking at any time. The whole price comes back.
///
/// # Errors
/// [`DomainError::NotOwner`]; [`DomainError::AlreadyCancelled`]; [`DomainError::NotPaid`] for a
/// hold that was never paid; [`DomainError::CancellationClosed`];
/// [`DomainError::BalanceLimitExceeded`] when the refund would take the balance past
/// `BALANCE_MAX_POINTS`; [`DomainError::InvalidInput`] when the records disagree (a booking
/// without its payment or seat: nothing is written).
pub fn plan_refund(
    reservation: &Reservation,
    seat: &SeatRecord,
    payment: Option<&Payment>,
    wallet: &Wallet,
    by: &Canceller,
    entry_id: LedgerEntryId,
    now: DateTime<Utc>,
) -> Result<RefundPlan, DomainError> {
    if let Canceller::Buyer { user, .. } = by {
        if &reservation.user_id != user {
            return Err(DomainError::NotOwner);
        }
    }
    match reservation.status {
        ReservationStatus::Confirmed => {}
        ReservationStatus::Cancelled => return Err(DomainError::AlreadyCancelled),
        ReservationStatus::Held | ReservationStatus::Expired | ReservationStatus::Released => {
            return Err(DomainError::NotPaid);
        }
    }
    if let Canceller::Buyer { until, .. } = by {
        if until.is_none_or(|until| now >= until) {
            return Err(DomainError::CancellationClosed);
        }
    }
    let payment = live_booking(reservation, seat, payment).ok_or_else(|| DomainError::InvalidInput {
        reason: "the booking has no live payment or booked seat".into(),
    })?;
    let max = Points::new(BALANCE_MAX_POINTS)?;
    let balance = wallet
        .balance
        .checked_add(payment.amount)
        .filter(|b| *b <= max)
        .ok_or(DomainError::BalanceLimitExceeded { max })?;
    Ok(RefundPlan {
        reservation: reservation.clone(),
        payment: Payment { refunded_at: Some(now), ..payment.clone() },
        expected_fence: seat.fence,
        new_fence: seat.fence.next(),
        expected_wallet_version: wallet.version,
        wallet: Wallet { user_id: reservation.user_id.clone(), balance, version: wallet.version + 1 },
        entry: LedgerEntry {
            id: entry_id,
            user_id: reservation.user_id.clone(),
            kind: LedgerKind::Refund,
            amount: payment.amount,
            balance_after: balance,
            at: now,
            payment_id: Some(payment.id),
        },
    })
}

/// The payment of a CONFIRMED `reservation` as its records should agree: `payment` not
/// refunded, `seat` booked by the reservation. `None` when they disagree (the store's fault).
#[must_use]
pub fn live_booking<'p>(
    reservation: &Reservation,
    seat: &SeatRecord,
    payment: Option<&'p Payment>,
) -> Option<&'p Payment> {
    let booked = matches!(seat.state, SeatState::Booked { reservation: r } if r == reservation.id);
    payment.filter(|p| p.refunded_at.is_none() && booked)
}

/// What a completed payment returns to its caller (and to every idempotent replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "StoredReceipt")]
pub struct PaymentReceipt {
    /// Its payments, one per seat, in the order of their seat ids.
    pub payments: Vec<Payment>,
    /// The balance right after it.
    pub balance: Points,
}

impl PaymentReceipt {
    /// What the payment cost: the sum of its seats' prices.
    #[must_use]
    pub fn total(&self) -> Points {
        self.payments.iter().fold(Points::ZERO, |sum, p| sum.checked_add(p.amount).unwrap_or(sum))
    }
}

/// A receipt as stored under an idempotency key: as now, or as written before a payment could
/// hold several seats (one `payment`), so a replay across an upgrade still answers.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredReceipt {
    Order { payments: Vec<Payment>, balance: Points },
    Single { payment: Payment, balance: Points },
}

impl From<StoredReceipt> for PaymentReceipt {
    fn from(stored: StoredReceipt) -> Self {
        match stored {
            StoredReceipt::Order { payments, balance } => Self { payments, balance },
            StoredReceipt::Single { payment, balance } => Self { payments: vec![payment], balance },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Seat;
    use crate::hold::ReservationStatus;
    use crate::ids::{ConcertId, QueueToken, ScheduleId};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(3_000_000 + secs, 0).expect("valid")
    }

    fn alice() -> UserId {
        UserId::parse("alice").expect("valid")
    }

    fn wallet(balance: i64, version: u64) -> Wallet {
        Wallet { user_id: alice(), balance: Points::new(balance).expect("valid"), version }
    }

    fn ids() -> PaymentIds {
        PaymentIds { payment: PaymentId::random(), entry: LedgerEntryId::random() }
    }

    fn held_seat() -> (Reservation, SeatRecord) {
        let reservation = Reservation {
            id: ReservationId::random(),
            user_id: alice(),
            token: QueueToken::generate(ConcertId::random()),
            seat_id: SeatId::random(),
            schedule_id: ScheduleId::random(),
            concert_id: ConcertId::random(),
            price: Points::new(300).expect("valid"),
            fence: Fence::new(1),
            status: ReservationStatus::Held,
            held_at: t(0),
            expires_at: t(300),
        };
        let seat = SeatRecord {
            seat: Seat {
                id: reservation.seat_id,
                schedule_id: reservation.schedule_id,
                concert_id: reservation.concert_id,
                number: 1,
                price: reservation.price,
            },
            state: SeatState::Held {
                reservation: reservation.id,
                user: alice(),
                expires_at: reservation.expires_at,
            },
            fence: Fence::new(1),
        };
        (reservation, seat)
    }

    #[test]
    fn a_buyer_cap_refuses_only_at_or_past_it() {
        assert_eq!(require_within_buyer_cap(5, 1, None), Ok(()), "no cap");
        assert_eq!(require_within_buyer_cap(0, 1, Some(1)), Ok(()));
        assert_eq!(require_within_buyer_cap(1, 1, Some(2)), Ok(()));
        assert_eq!(require_within_buyer_cap(2, 1, Some(2)), Err(DomainError::BuyerLimitReached { limit: 2 }));
        assert_eq!(require_within_buyer_cap(3, 1, Some(2)), Err(DomainError::BuyerLimitReached { limit: 2 }));
        // A payment of several seats counts them all.
        assert_eq!(require_within_buyer_cap(0, 2, Some(2)), Ok(()));
        assert_eq!(require_within_buyer_cap(1, 2, Some(2)), Err(DomainError::BuyerLimitReached { limit: 2 }));
        assert_eq!(require_within_buyer_cap(0, 3, Some(2)), Err(DomainError::BuyerLimitReached { limit: 2 }));
    }

    #[test]
    fn a_charge_adds_to_the_balance_with_a_ledger_entry() {
        let plan = plan_charge(&wallet(100, 3), 50, LedgerEntryId::random(), t(0)).expect("valid");
        assert_eq!(plan.expected_version, 3);
        assert_eq!((plan.wallet.balance.get(), plan.wallet.version), (150, 4));
        assert_eq!(
            (plan.entry.kind, plan.entry.amount.get(), plan.entry.balance_after.get()),
            (LedgerKind::Charge, 50, 150)
        );
        assert_eq!(plan.entry.signed_amount(), 50);
    }

    #[test]
    fn charges_outside_the_bounds_are_refused() {
        for amount in [0, -1, CHARGE_MAX_POINTS + 1] {
            assert!(matches!(
                plan_charge(&wallet(0, 0), amount, LedgerEntryId::random(), t(0)),
                Err(DomainError::InvalidAmount { .. })
            ));
        }
        assert!(plan_charge(&wallet(0, 0), CHARGE_MAX_POINTS, LedgerEntryId::random(), t(0)).is_ok());
        assert!(matches!(
            plan_charge(&wallet(BALANCE_MAX_POINTS, 1), 1, LedgerEntryId::random(), t(0)),
            Err(DomainError::BalanceLimitExceeded { .. })
        ));
    }

    #[test]
    fn a_payment_debits_books_the_seat_and_confirms() {
        let (reservation, seat) = held_seat();
        let ids = ids();
        let plan = plan_payment(&reservation, &seat, &wallet(1_000, 2), &alice(), ids, t(10)).expect("valid");
        assert_eq!((plan.wallet.balance.get(), plan.expected_wallet_version), (700, 2));
        let [seat] = plan.seats.as_slice() else { panic!("one seat") };
        assert_eq!((seat.expected_fence, seat.new_fence), (Fence::new(1), Fence::new(2)));
        assert_eq!(seat.seat_state, SeatState::Booked { reservation: reservation.id });
        assert_eq!(seat.entry.signed_amount(), -300);
        assert_eq!(seat.entry.payment_id, Some(ids.payment));
        assert_eq!(seat.payment.amount.get(), 300);
        assert_eq!(plan.wallet.version, 3, "one version more");
    }

    #[test]
    fn an_order_debits_its_sum_once_with_an_entry_per_seat_in_seat_order() {
        let (first, first_seat) = held_seat();
        let (second, second_seat) = held_seat();
        let ids = [ids(), ids()];
        let order = [(&first, &first_seat, ids[0]), (&second, &second_seat, ids[1])];
        let plan = plan_order(&order, &wallet(1_000, 2), &alice(), t(10)).expect("valid");
        assert_eq!(
            (plan.wallet.balance.get(), plan.wallet.version, plan.expected_wallet_version),
            (400, 3, 2)
        );
        let seats: Vec<SeatId> = plan.seats.iter().map(|s| s.reservation.seat_id).collect();
        let mut sorted = seats.clone();
        sorted.sort();
        assert_eq!(seats, sorted, "in seat order, whatever the order named");
        assert_eq!(
            plan.seats.iter().map(|s| s.entry.balance_after.get()).collect::<Vec<_>>(),
            vec![700, 400],
            "the running balance steps down"
        );
        for s in &plan.seats {
            let named = order.iter().find(|(r, _, _)| r.id == s.reservation.id).expect("named");
            assert_eq!((s.payment.id, s.entry.id), (named.2.payment, named.2.entry), "its own ids");
        }
        let receipt = plan.receipt();
        assert_eq!((receipt.total().get(), receipt.balance.get(), receipt.payments.len()), (600, 400, 2));
        assert_eq!(
            plan_order(&order, &wallet(599, 2), &alice(), t(10)),
            Err(DomainError::InsufficientBalance {
                balance: Points::new(599).expect("valid"),
                required: Points::new(600).expect("valid"),
            }),
            "the sum must be covered"
        );
        let lapsed = Reservation { expires_at: t(5), ..second.clone() };
        let order = [(&first, &first_seat, ids[0]), (&lapsed, &second_seat, ids[1])];
        assert_eq!(plan_order(&order, &wallet(1_000, 2), &alice(), t(10)), Err(DomainError::HoldExpired));
        assert!(matches!(
            plan_order(&[], &wallet(1_000, 2), &alice(), t(10)),
            Err(DomainError::InvalidInput { .. })
        ));
    }

    #[test]
    fn an_order_names_each_hold_once_and_not_too_many() {
        let one = ReservationId::random();
        assert_eq!(validate_order(&[one]), Ok(()));
        assert!(matches!(validate_order(&[]), Err(DomainError::InvalidInput { .. })));
        assert!(matches!(validate_order(&[one, one]), Err(DomainError::InvalidInput { .. })));
        let many: Vec<_> = (0..=RESERVATIONS_PER_PAYMENT_MAX).map(|_| ReservationId::random()).collect();
        assert!(matches!(validate_order(&many), Err(DomainError::InvalidInput { .. })));
        assert_eq!(validate_order(&many[1..]), Ok(()));
    }

    #[test]
    fn a_receipt_stored_before_orders_still_reads() {
        let (reservation, _) = held_seat();
        let payment = Payment {
            id: PaymentId::random(),
            reservation_id: reservation.id,
            seat_id: reservation.seat_id,
            user_id: alice(),
            amount: Points::new(300).expect("valid"),
            at: t(1),
            refunded_at: None,
        };
        let old = serde_json::json!({"payment": payment, "balance": 700});
        let read: PaymentReceipt = serde_json::from_value(old).expect("reads");
        assert_eq!(read.payments, vec![payment.clone()]);
        let now = serde_json::to_value(&read).expect("writes");
        assert_eq!(serde_json::from_value::<PaymentReceipt>(now).expect("reads back"), read);
    }

    #[test]
    fn a_payment_without_enough_points_changes_nothing() {
        let (reservation, seat) = held_seat();
        let refused = plan_payment(&reservation, &seat, &wallet(299, 1), &alice(), ids(), t(10));
        assert_eq!(
            refused,
            Err(DomainError::InsufficientBalance {
                balance: Points::new(299).expect("valid"),
                required: Points::new(300).expect("valid"),
            })
        );
    }

    #[test]
    fn an_expired_or_foreign_hold_is_never_paid() {
        let (reservation, seat) = held_seat();
        assert_eq!(
            plan_payment(&reservation, &seat, &wallet(1_000, 1), &alice(), ids(), t(300)),
            Err(DomainError::HoldExpired)
        );
        let bob = UserId::parse("bob").expect("valid");
        assert_eq!(
            plan_payment(&reservation, &seat, &wallet(1_000, 1), &bob, ids(), t(1)),
            Err(DomainError::NotOwner)
        );
    }

    fn token_of(reservation: &Reservation, state: crate::queue::TokenState) -> TokenRecord {
        TokenRecord {
            token: reservation.token.clone(),
            user_id: alice(),
            concert_id: reservation.concert_id,
            issued_at: t(0),
            version: 3,
            state,
        }
    }

    fn active_until(secs: i64) -> crate::queue::TokenState {
        crate::queue::TokenState::Active { admitted_at: t(0), expires_at: t(secs) }
    }

    #[test]
    fn a_token_pays_only_for_its_own_concert() {
        let (reservation, _) = held_seat();
        let other =
            TokenRecord { concert_id: ConcertId::random(), ..token_of(&reservation, active_until(100)) };
        assert_eq!(require_payer(&other, &reservation, t(1), || 0), Err(DomainError::WrongConcert));
        assert_eq!(
            require_payer(&token_of(&reservation, active_until(100)), &reservation, t(1), || 0),
            Ok(())
        );
    }

    #[test]
    fn a_revoked_token_pays_nothing_not_even_its_own_hold() {
        let (reservation, _) = held_seat();
        let active = token_of(&reservation, active_until(100));
        let revoked = crate::queue::revoke(&active, t(10)).expect("not revoked yet");
        assert_eq!(require_payer(&revoked, &reservation, t(20), || 0), Err(DomainError::TokenRevoked));
        assert_eq!(crate::queue::revoke(&revoked, t(30)), None, "revoked once");
        assert_eq!(
            crate::queue::require_account_access(&revoked, chrono::Duration::seconds(300), t(20)),
            Err(DomainError::TokenRevoked),
            "no grace to reach the account"
        );
    }

    #[test]
    fn the_token_that_made_a_hold_may_pay_it_after_its_active_time() {
        let (reservation, _) = held_seat();
        let timed_out = token_of(&reservation, active_until(100));
        assert_eq!(require_payer(&timed_out, &reservation, t(200), || 0), Ok(()));
        let paid = token_of(
            &reservation,
            crate::queue::TokenState::Expired { at: t(50), reason: crate::queue::ExpiryReason::Paid },
        );
        assert_eq!(require_payer(&paid, &reservation, t(200), || 0), Ok(()));
        // Another token of the same user may pay while active, not after.
        let other = TokenRecord { token: QueueToken::generate(reservation.concert_id), ..timed_out };
        assert_eq!(require_payer(&other, &reservation, t(200), || 0), Err(DomainError::TokenExpired));
        assert_eq!(require_payer(&other, &reservation, t(50), || 0), Ok(()));
        let waiting =
            TokenRecord { state: crate::queue::TokenState::Waiting { seq: 4, expires_at: t(100) }, ..other };
        assert_eq!(
            require_payer(&waiting, &reservation, t(50), || 7),
            Err(DomainError::NotAdmitted { position: 7 })
        );
    }

    #[test]
    fn a_token_expires_once_nothing_it_holds_is_left_to_pay() {
        let (first, _) = held_seat();
        let second = Reservation { id: ReservationId::random(), seat_id: SeatId::random(), ..first.clone() };
        let token = token_of(&first, active_until(100));
        let paid_first = Reservation { status: ReservationStatus::Confirmed, ..first.clone() };
        assert_eq!(
            token_after_payment(&token, &[first.id], &[paid_first.clone(), second.clone()], t(10)),
            None
        );
        let expired = token_after_payment(&token, &[first.id], std::slice::from_ref(&paid_first), t(10))
            .expect("expires");
        assert_eq!(expired.status_at(t(10)), TokenStatus::Expired);
        // A second hold that lapsed or was released leaves nothing to pay.
        let released = Reservation { status: ReservationStatus::Released, ..second.clone() };
        assert!(token_after_payment(&token, &[first.id], &[paid_first.clone(), released], t(10)).is_some());
        assert!(
            token_after_payment(&token, &[first.id], &[paid_first.clone(), second.clone()], t(300)).is_none(),
            "the token's own time is over: nothing to write"
        );
        let lapsed_at = t(99);
        let short = Reservation { expires_at: lapsed_at, ..second };
        assert!(token_after_payment(&token, &[first.id], &[paid_first, short], t(99)).is_some());
    }
}
