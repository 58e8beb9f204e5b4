//! The door: how many queue tokens one client address, and one user, may ask for per minute, so
//! that a script cannot flood the line.
//!
//! A budget of `n` per minute lets a client ask `n` times at once and then once every `60 / n`
//! seconds (the generic cell rate algorithm, as [`governor`] implements it); a request past it
//! is refused with [`DomainError::RateLimited`], which says how long to wait. Each budget is kept
//! per process: behind a load balancer spreading one client over `k` nodes, that client gets up
//! to `k` times its budget (a budget shared by every node would cost a round trip to a shared
//! store on every join, the stampede's hottest request).
//!
//! An IPv6 client is counted by its `/64` network, the block one subscriber is usually given, so
//! that a client cannot make itself new budgets by changing the low bits of its address.
//! State is kept for clients seen recently only: [`Door::tidy`] forgets those whose budget has
//! refilled.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as RateClock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::UserId;

/// How many token requests per minute each client may make; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DoorBudget {
    /// Per client address (an IPv6 one by its `/64`).
    pub per_address: Option<NonZeroU32>,
    /// Per user.
    pub per_user: Option<NonZeroU32>,
}

/// Which budget a refused request ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorScope {
    /// The client address's.
    Address,
    /// The user's.
    User,
}

impl std::fmt::Display for DoorScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Address => "address",
            Self::User => "user",
        })
    }
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as RateClock>::Instant>>;

/// The budgets of a process, with what each client has used of them.
pub struct Door<C: RateClock = DefaultClock> {
    budget: DoorBudget,
    clock: C,
    addresses: Option<Keyed<IpAddr, C>>,
    users: Option<Keyed<UserId, C>>,
}

impl<C: RateClock> std::fmt::Debug for Door<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door").field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl Default for Door {
    /// A door with no limits.
    fn default() -> Self {
        Self::new(DoorBudget::default())
    }
}

impl Door {
    /// A door with `budget`, on the monotonic clock.
    #[must_use]
    pub fn new(budget: DoorBudget) -> Self {
        Self::with_clock(budget, DefaultClock::default())
    }
}

impl<C: RateClock + Clone> Door<C> {
    /// A door with `budget` on `clock` (tests pass a fake one).
    #[must_use]
    pub fn with_clock(budget: DoorBudget, clock: C) -> Self {
        Self {
            budget,
            addresses: budget
                .per_address
                .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone())),
            users: budget
                .per_user
                .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone())),
            clock,
        }
    }

    /// Counts one token request from `address` (when known) by `user`. The user's budget is
    /// counted first: a request its own user's budget refuses spends nothing of its address's,
    /// so one user asking too often does not shut out the others behind a shared address (a
    /// request the address refuses has spent one of its user's).
    ///
    /// # Errors
    /// [`DomainError::RateLimited`] when either budget is spent, with the whole seconds to wait
    /// (at least one) before that budget allows another request.
    pub fn knock(&self, address: Option<IpAddr>, user: &UserId) -> Result<(), DomainError> {
        if let Some(limiter) = &self.users {
            self.check(limiter, user, DoorScope::User)?;
        }
        if let (Some(limiter), Some(address)) = (&self.addresses, address) {
            self.check(limiter, &address_key(address), DoorScope::Address)?;
        }
        Ok(())
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K, C>,
        key: &K,
        scope: DoorScope,
    ) -> Result<(), DomainError> {
        limiter.check_key(key).map_err(|refused| DomainError::RateLimited {
            scope,
            retry_after_secs: whole_seconds(refused.wait_time_from(self.clock.now())),
        })
    }

    /// Forgets the clients whose budget has refilled, so the door's memory follows the clients
    /// seen in the last minute, not every client ever seen.
    pub fn tidy(&self) {
        for limiter in [&self.addresses].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [&self.users].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many clients (addresses and users) the door remembers.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.addresses.as_ref().map_or(0, Keyed::len) + self.users.as_ref().map_or(0, Keyed::len)
    }
}

/// What a client address is counted as: an IPv4 address itself (an IPv4-mapped IPv6 one too),
/// an IPv6 address by its `/64` network.
#[must_use]
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// A wait in whole seconds, rounded up, at least one (what `Retry-After` can say).
fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn door(per_address: u32, per_user: u32) -> (Door<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let budget =
            DoorBudget { per_address: NonZeroU32::new(per_address), per_user: NonZeroU32::new(per_user) };
        (Door::with_clock(budget, clock.clone()), clock)
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn refused(scope: DoorScope, retry_after_secs: u64) -> Result<(), DomainError> {
        Err(DomainError::RateLimited { scope, retry_after_secs })
    }

    #[test]
    fn a_user_asks_its_budget_at_once_then_waits_its_share_of_the_minute() {
        let (door, clock) = door(0, 3);
        for _ in 0..3 {
            assert_eq!(door.knock(None, &user("alice")), Ok(()));
        }
        assert_eq!(door.knock(None, &user("alice")), refused(DoorScope::User, 20));
        assert_eq!(door.knock(None, &user("bob")), Ok(()), "another user has a budget of its own");
        clock.advance(Duration::from_millis(19_500));
        assert_eq!(door.knock(None, &user("alice")), refused(DoorScope::User, 1), "rounded up");
        clock.advance(Duration::from_millis(500));
        assert_eq!(door.knock(None, &user("alice")), Ok(()), "one request every 20 s");
        assert_eq!(door.knock(None, &user("alice")), refused(DoorScope::User, 20));
    }

    #[test]
    fn an_address_is_counted_across_its_users_but_not_for_a_users_refusal() {
        let (door, _) = door(2, 1);
        let here: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(door.knock(Some(here), &user("a")), Ok(()));
        assert_eq!(door.knock(Some(here), &user("a")), refused(DoorScope::User, 60));
        assert_eq!(door.knock(Some(here), &user("b")), Ok(()), "a's refusal spent none of the address");
        assert_eq!(door.knock(Some(here), &user("c")), refused(DoorScope::Address, 30));
        assert_eq!(door.knock(Some("192.0.2.8".parse().unwrap()), &user("e")), Ok(()));
        assert_eq!(
            door.knock(Some("192.0.2.8".parse().unwrap()), &user("c")),
            refused(DoorScope::User, 60),
            "the address's refusal of c spent one of c's own"
        );
        assert_eq!(door.knock(None, &user("d")), Ok(()), "an unknown address is not counted");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let (door, _) = door(1, 100);
        assert_eq!(door.knock(Some("2001:db8:1:2::1".parse().unwrap()), &user("a")), Ok(()));
        assert_eq!(
            door.knock(Some("2001:db8:1:2:ffff::9".parse().unwrap()), &user("b")),
            refused(DoorScope::Address, 60),
            "the same /64"
        );
        assert_eq!(door.knock(Some("2001:db8:1:3::1".parse().unwrap()), &user("c")), Ok(()));
        assert_eq!(door.knock(Some("198.51.100.1".parse().unwrap()), &user("d")), Ok(()));
        assert_eq!(
            door.knock(Some("::ffff:198.51.100.1".parse().unwrap()), &user("e")),
            refused(DoorScope::Address, 60)
        );
    }

    #[test]
    fn no_budget_is_no_limit_and_tidying_forgets_refilled_clients() {
        let (open, _) = door(0, 0);
        for _ in 0..1_000 {
            assert_eq!(open.knock(Some("192.0.2.1".parse().unwrap()), &user("a")), Ok(()));
        }
        assert_eq!(open.remembered(), 0);
        let (door, clock) = door(10, 10);
        for name in ["a", "b", "c"] {
            door.knock(Some("192.0.2.1".parse().unwrap()), &user(name)).unwrap();
        }
        assert_eq!(door.remembered(), 4);
        door.tidy();
        assert_eq!(door.remembered(), 4, "their budgets are not full again yet");
        clock.advance(Duration::from_secs(60));
        door.tidy();
        assert_eq!(door.remembered(), 0);
    }
}
