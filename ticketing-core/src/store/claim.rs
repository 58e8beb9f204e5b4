//! What runs in front of a seat's compare-and-set write when a SQL store claims a seat: one
//! strategy type for PostgreSQL and MySQL / MariaDB.

/// What runs in front of the seat's compare-and-set write when a hold claims a seat. Every
/// strategy ends in the same conditional write (`UPDATE seats … WHERE fence = <expected>`), so
/// none of them is needed for safety; they differ in how losers wait. Every strategy works on
/// both SQL dialects.
#[derive(Debug, Clone, Default)]
pub enum ClaimStrategy {
    /// Just the conditional write (the default): a loser waits only for the winner's commit,
    /// then matches no row.
    #[default]
    ConditionalUpdate,
    /// `SELECT … FOR UPDATE` of the seat row first, then the write.
    ForUpdate,
    /// A lock keyed by the seat, held by the database: `pg_advisory_xact_lock` inside the claim
    /// on PostgreSQL; the named lock `GET_LOCK('ticketing:seat:<id>')` around it on MySQL,
    /// released with `RELEASE_LOCK` on every path (on a path that cannot run it, the connection
    /// is closed, which releases it).
    AdvisoryLock,
    /// A Redis lock with a fencing number in front of the database: losers wait in Redis
    /// (bounded) instead of on the seat's row; the winner's write also requires the Redis fence
    /// to be newer than any that wrote the seat before, so a holder whose lock lapsed while it
    /// was paused can never write.
    #[cfg(feature = "redis")]
    RedisLock(crate::store::redis::RedisSeatLock),
}

impl ClaimStrategy {
    /// The strategy's name as configured (`conditional`, `for-update`, `advisory`,
    /// `redis-lock`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConditionalUpdate => "conditional",
            Self::ForUpdate => "for-update",
            Self::AdvisoryLock => "advisory",
            #[cfg(feature = "redis")]
            Self::RedisLock(_) => "redis-lock",
        }
    }

    /// The strategy named `name`, but for `redis-lock` (which needs a Redis connection: build
    /// [`ClaimStrategy::RedisLock`] with one). `named-lock` is another name for `advisory` (what
    /// MySQL calls its advisory locks). `None` for any other name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "conditional" => Some(Self::ConditionalUpdate),
            "for-update" => Some(Self::ForUpdate),
            "advisory" | "named-lock" => Some(Self::AdvisoryLock),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClaimStrategy;

    #[test]
    fn every_strategy_is_found_by_its_name_and_named_lock_is_advisory() {
        for strategy in
            [ClaimStrategy::ConditionalUpdate, ClaimStrategy::ForUpdate, ClaimStrategy::AdvisoryLock]
        {
            assert_eq!(ClaimStrategy::from_name(strategy.name()).map(|s| s.name()), Some(strategy.name()));
        }
        assert!(matches!(ClaimStrategy::from_name("named-lock"), Some(ClaimStrategy::AdvisoryLock)));
        assert!(ClaimStrategy::from_name("redis-lock").is_none(), "needs a connection");
        assert!(ClaimStrategy::from_name("optimistic").is_none());
    }
}
