//! # ticketing-core
//!
//! Sell concert seats on sale day, when tens of thousands of buyers arrive at once for a few
//! thousand seats: a virtual waiting room, seat holds with a deadline, and payment from a
//! prepaid point balance — never selling a seat twice, never losing or double-charging a point,
//! never letting anyone act for someone else, under any load, retry or crash.
//!
//! ## Vocabulary
//!
//! One word for each thing, used everywhere (code, API, docs):
//!
//! - **concert**: what is sold; it has **schedules** (performance dates), each with **seats**
//!   (a number and a price in **points**).
//! - **queue token**: a buyer's place in a concert's waiting room, and afterwards its
//!   credential. One per (user, concert). **WAITING** -> **ACTIVE** -> **EXPIRED**.
//!   A waiting token has a **position** (1-based, arrival order) and an **ETA**.
//! - **admission**: moving waiting tokens to ACTIVE in FIFO order, capped by `max_active`
//!   (capacity) and by `admit_batch` per `admit_interval_ms` (rate). One run is a **tick**.
//! - **hold** / **reservation**: one seat kept for one user until a deadline. Reservation
//!   **HELD** -> **CONFIRMED** | **EXPIRED** | **RELEASED**; seat **AVAILABLE** -> **HELD** ->
//!   **BOOKED**.
//! - **fence**: a per-seat number raised by every change of the seat; writes name the fence they
//!   expect, so a stale holder can never write.
//! - **balance** (wallet) and **ledger**: points, changed only by ledger entries, **CHARGE** (add)
//!   and **PAYMENT** (spend).
//! - **idempotency key**: a client-chosen key that makes a hold, payment or charge safe to retry.
//!
//! ## Layout
//!
//! - [`ids`], [`limits`], [`clock`]: newtypes, named bounds, time.
//! - [`catalog`], [`queue`], [`hold`], [`payment`], [`idempotency`]: the pure state machines.
//!   No I/O; `now` is always an argument.
//! - [`store`]: the storage contract (small traits, one atomic step per method) and the
//!   backends; [`store::memory`] is the in-memory default.
//! - [`Ticketing`] ([`service`]): the facade: read, decide with a pure function, write with a
//!   compare-and-set, retry on conflict.
//! - [`door`]: how many queue tokens a client address or a user may ask for per minute.
//! - [`error`]: what went wrong, named for what happened.
//!
//! ## Example
//!
//! Create a concert, queue, get admitted, hold a seat, charge points and pay:
//!
//! ```
//! use chrono::DateTime;
//! use ticketing_core::catalog::{NewConcert, NewSchedule, QueueSettings, SeatStatus};
//! use ticketing_core::hold::ReservationStatus;
//! use ticketing_core::ids::{Points, UserId};
//! use ticketing_core::queue::TokenStatus;
//! use ticketing_core::store::memory::MemoryStore;
//! use ticketing_core::{Clock, Config, ManualClock, Ticketing};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let clock = ManualClock::at_epoch_secs(1_800_000_000);
//! let service = Ticketing::new(store.clone(), store, clock.clone(), Config::default());
//!
//! let concert = service
//!     .create_concert(&NewConcert {
//!         title: "Aurora Live".into(),
//!         schedules: vec![NewSchedule {
//!             starts_at: DateTime::from_timestamp(1_800_500_000, 0).expect("valid"),
//!             seat_count: 50,
//!             price: Points::new(50_000)?,
//!         }],
//!         queue: QueueSettings::default(),
//!         max_seats_per_buyer: None,
//!         holds_per_token: None,
//!         cancel_until_secs_before_start: None,
//!         sales_open_at: None,
//!         pre_queue: Default::default(),
//!     })
//!     .await?;
//!
//! let alice = UserId::parse("alice")?;
//! let ticket = service.issue_token(&alice, concert.concert.id).await?;
//! assert_eq!(ticket.status, TokenStatus::Waiting);
//! assert_eq!(ticket.position, Some(1));
//!
//! service.admission_tick(concert.concert.id).await?;
//! let token = ticket.record.token;
//! assert_eq!(service.token_status(&token).await?.status, TokenStatus::Active);
//!
//! let schedule = &service.schedules(&token, concert.concert.id).await?[0];
//! let seats = service.seats(&token, schedule.schedule.id).await?;
//! let (seat, status) = seats.get(0).expect("the schedule has seats");
//! assert_eq!(status, SeatStatus::Available);
//! let hold = service.hold(&token, seat.id, None).await?;
//! assert_eq!(hold.status, ReservationStatus::Held);
//!
//! service.charge(&token, 60_000, None).await?;
//! let receipt = service.pay(&token, hold.id, None).await?;
//! assert_eq!(receipt.balance.get(), 10_000);
//!
//! // Paying expires the token, and the seat is sold.
//! assert_eq!(service.authenticate(&token).await?.status_at(clock.now()), TokenStatus::Expired);
//! # Ok(())
//! # }
//! ```

pub mod catalog;
pub mod claim;
pub mod clock;
pub mod door;
pub mod error;
pub mod hold;
pub mod idempotency;
pub mod ids;
pub mod limits;
pub mod payment;
pub mod queue;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DomainError, Error, StoreError};
pub use service::{
    Account, Config, Revoked, SaleFigures, ScheduleSales, SeatSale, SeatView, SweepReport, Ticketing,
    TokenView,
};
