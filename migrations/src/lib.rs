//! The sqlx migrations of ticketing's SQL backends, embedded in the binary.
//!
//! `postgres/` holds the PostgreSQL schema. The server applies them at start-up and its
//! `migrate` subcommand applies them alone.

/// The PostgreSQL migrations (`migrations/postgres`).
#[cfg(feature = "postgres")]
pub static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./postgres");
