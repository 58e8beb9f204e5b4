//! The sqlx migrations of ticketing's SQL backends, embedded in the binary.
//!
//! `postgres/` holds the PostgreSQL schema, `mysql/` the same schema for MySQL 8 and MariaDB
//! 10.11. The server applies them at start-up and its `migrate` subcommand applies them alone.

/// The PostgreSQL migrations (`migrations/postgres`).
#[cfg(feature = "postgres")]
pub static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./postgres");

/// The MySQL / MariaDB migrations (`migrations/mysql`).
#[cfg(feature = "mysql")]
pub static MYSQL: sqlx::migrate::Migrator = sqlx::migrate!("./mysql");
