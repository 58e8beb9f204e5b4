//! A pool in front of sqlx's that takes a connection back without a round trip.
//!
//! sqlx 0.8 pings every connection as it goes back into its pool (a `Sync` on PostgreSQL, a
//! `COM_PING` on MySQL; `PoolConnection`'s drop, not configurable), so a statement run on
//! `&Pool` costs two round trips, and the second one is pure overhead for both the server and
//! the database. The ping is there for connections whose statement was cancelled half-way or
//! broke: they may be mid-protocol.
//!
//! [`SqlPool`] keeps a connection whose statement ran to completion (its answer, or an error the
//! database reported) on a stack of its own and hands it out again as it is; only a connection
//! whose future was dropped, whose I/O failed, or that sat unused longer than
//! [`HOT_CONNECTION_IDLE_MS`] goes back to sqlx, whose ping settles it (or closes it). A
//! semaphore sized like sqlx's pool bounds the connections in use, so a caller never waits on
//! sqlx while a connection lies idle on the stack. `&SqlPool` is an [`Executor`]: every
//! statement of the SQL stores runs through it; a transaction is a [`SqlTx`] (from
//! [`SqlPool::begin`]), whose connection is reused only once it committed.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Describe, Either, Execute, Executor, Pool, TransactionManager};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::limits::HOT_CONNECTION_IDLE_MS;

/// A bounded pool of database connections that reuses a connection without pinging it when its
/// last statement completed. Clones share the connections.
pub struct SqlPool<DB: Database> {
    inner: Arc<Inner<DB>>,
}

struct Inner<DB: Database> {
    pool: Pool<DB>,
    idle: Mutex<Vec<(PoolConnection<DB>, Instant)>>,
    permits: Semaphore,
}

impl<DB: Database> Clone for SqlPool<DB> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<DB: Database> fmt::Debug for SqlPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlPool")
            .field("pool", &self.inner.pool)
            .field("available", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<DB: Database> SqlPool<DB> {
    /// Takes over `pool`: at most its `max_connections` are in use at once, and a caller waits at
    /// most its acquire timeout for one.
    #[must_use]
    pub fn new(pool: Pool<DB>) -> Self {
        let permits = usize::try_from(pool.options().get_max_connections()).unwrap_or(usize::MAX);
        Self {
            inner: Arc::new(Inner {
                pool,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(permits.clamp(1, Semaphore::MAX_PERMITS)),
            }),
        }
    }

    /// The sqlx pool underneath (it opens and closes the connections).
    #[must_use]
    pub fn sqlx_pool(&self) -> &Pool<DB> {
        &self.inner.pool
    }

    /// A connection: one that finished its last statement cleanly if there is one, else one from
    /// sqlx's pool.
    ///
    /// # Errors
    /// [`sqlx::Error::PoolTimedOut`] when every connection stayed in use for the acquire
    /// timeout; what sqlx reports when it cannot open a connection.
    pub async fn get(&self) -> Result<SqlConn<'_, DB>, sqlx::Error> {
        let inner = &*self.inner;
        let timeout = inner.pool.options().get_acquire_timeout();
        let permit = match tokio::time::timeout(timeout, inner.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(sqlx::Error::PoolClosed),
            Err(_elapsed) => return Err(sqlx::Error::PoolTimedOut),
        };
        let reused = inner.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn = match reused {
            Some((conn, since)) if since.elapsed() < Duration::from_millis(HOT_CONNECTION_IDLE_MS) => conn,
            stale => {
                // A connection idle for long goes back through sqlx's ping (which closes it if
                // the database dropped it meanwhile); a fresh one comes from sqlx's pool.
                drop(stale);
                inner.pool.acquire().await?
            }
        };
        Ok(SqlConn { inner, conn: Some(conn), sound: false, _permit: permit })
    }

    /// Begins a transaction on a connection from [`SqlPool::get`].
    ///
    /// # Errors
    /// As [`SqlPool::get`], and what the database answers to `BEGIN`.
    pub async fn begin(&self) -> Result<SqlTx<'_, DB>, sqlx::Error> {
        let mut conn = self.get().await?;
        DB::TransactionManager::begin(&mut conn, None).await?;
        Ok(SqlTx { conn, open: true })
    }
}

/// A transaction on a connection of a [`SqlPool`]; `&mut *tx` is the connection to run its
/// statements on. Dropped before [`SqlTx::commit`], it is rolled back and its connection goes
/// back to sqlx (whose ping sends the rollback).
pub struct SqlTx<'p, DB: Database> {
    conn: SqlConn<'p, DB>,
    open: bool,
}

impl<DB: Database> SqlTx<'_, DB> {
    /// Commits the transaction; its connection is then reused as it is.
    ///
    /// # Errors
    /// What the database answers to `COMMIT`.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        DB::TransactionManager::commit(&mut self.conn).await?;
        self.open = false;
        self.conn.sound();
        Ok(())
    }
}

impl<DB: Database> Deref for SqlTx<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> DerefMut for SqlTx<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: Database> Drop for SqlTx<'_, DB> {
    fn drop(&mut self) {
        if self.open {
            DB::TransactionManager::start_rollback(&mut self.conn);
        }
    }
}

/// A connection taken from a [`SqlPool`]. Dropped after [`SqlConn::sound`] (or a
/// [`SqlConn::settle`] of a completed statement), it goes back on the pool's stack as it is;
/// otherwise back to sqlx, which pings it first.
pub struct SqlConn<'p, DB: Database> {
    inner: &'p Inner<DB>,
    conn: Option<PoolConnection<DB>>,
    sound: bool,
    _permit: SemaphorePermit<'p>,
}

impl<DB: Database> SqlConn<'_, DB> {
    /// Marks the connection as between statements, with no transaction open: it can be reused as
    /// it is.
    pub fn sound(&mut self) {
        self.sound = true;
    }

    /// Marks the connection sound if `result` is a completed statement's: an answer, or an error
    /// the database reported (after which the connection is ready again). A failed I/O or
    /// protocol error leaves it to sqlx.
    pub fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.sound = matches!(result, Ok(_) | Err(sqlx::Error::Database(_) | sqlx::Error::RowNotFound));
    }

    /// Closes the connection when it is dropped instead of reusing it (a session lock must never
    /// outlive its holder).
    pub fn close_on_drop(&mut self) {
        self.sound = false;
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

impl<DB: Database> Deref for SqlConn<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        self.conn.as_ref().expect("a SqlConn holds its connection until dropped")
    }
}

impl<DB: Database> DerefMut for SqlConn<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn.as_mut().expect("a SqlConn holds its connection until dropped")
    }
}

impl<DB: Database> Drop for SqlConn<'_, DB> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !self.sound || DB::TransactionManager::get_transaction_depth(&conn) != 0 {
            // Dropped here: sqlx pings it and keeps or closes it.
            return;
        }
        let now = Instant::now();
        let evicted = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            idle.push((conn, now));
            // The stack is used from the top, so the connection at the bottom is the one idle
            // longest: past the limit it goes back to sqlx (dropped outside the lock).
            let stale = idle.first().is_some_and(|(_, since)| {
                now.duration_since(*since) >= Duration::from_millis(HOT_CONNECTION_IDLE_MS)
            });
            stale.then(|| idle.remove(0))
        };
        drop(evicted);
    }
}

impl<'p, DB: Database> Executor<'p> for &'p SqlPool<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<DB::QueryResult, DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        // Collected before they are yielded, so the connection is settled as soon as the
        // statement completes (every caller here collects anyway: execute, fetch_all, fetch_one).
        stream::once(async move {
            let mut conn = self.get().await?;
            let all: Result<Vec<_>, sqlx::Error> = (&mut *conn).fetch_many(query).try_collect().await;
            conn.settle(&all);
            all
        })
        .map_ok(|all| stream::iter(all.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        Box::pin(async move {
            let mut conn = self.get().await?;
            let row = (&mut *conn).fetch_optional(query).await;
            conn.settle(&row);
            row
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move {
            let mut conn = self.get().await?;
            let statement = (&mut *conn).prepare_with(sql, parameters).await;
            conn.settle(&statement);
            statement
        })
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<DB>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move {
            let mut conn = self.get().await?;
            let described = (&mut *conn).describe(sql).await;
            conn.settle(&described);
            described
        })
    }
}
