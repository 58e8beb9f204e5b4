//! A pool in front of sqlx's that takes a connection back without a round trip.
//!
//! sqlx 0.8 pings every connection as it goes back into its pool (a `Sync` on PostgreSQL, a
//! `COM_PING` on MySQL; `PoolConnection`'s drop, not configurable), so a statement run on
//! `&Pool` costs two round trips, and the second one is pure overhead for both the server and
//! the database. The ping is there for connections whose statement was cancelled half-way or
//! broke: they may be mid-protocol.
//!
//! [`SqlPool`] keeps the connections itself, on a stack, and knows in what state each comes
//! back:
//!
//! - **ready**: its statement ran to completion (an answer, or an error the database reported
//!   that leaves the session usable) and no transaction is open: back on the stack as it is;
//! - **to check**: its future was dropped half-way, its I/O failed, a transaction was left open,
//!   or the database reported an error that may have ended the session: a task of the pool's
//!   rolls back what is open and pings it, then puts it back on the stack or closes it, holding
//!   its place in the pool meanwhile (so no caller waits on a connection being checked while
//!   another lies idle);
//! - **to close**: it was cancelled while it could hold something the session keeps (a `BEGIN`
//!   whose answer was not read, a named lock): closed, which lets the database drop it.
//!
//! A connection idle longer than [`HOT_CONNECTION_IDLE_MS`] is pinged before it is handed out
//! again. A semaphore sized like sqlx's pool bounds the connections out at once (those being
//! checked included), and one deadline, the pool's acquire timeout, bounds a caller's wait.
//! `&SqlPool` is an [`Executor`]: every statement of the SQL stores runs through it (its rows
//! are read whole before they are yielded, so the connection is settled when the statement
//! ends), and a transaction is a [`SqlTx`]. sqlx's pool underneath only opens and closes
//! connections: its `max_lifetime` and its acquire and release hooks do not apply to a
//! connection while the stack holds it.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Describe, Either, Execute, Executor, Pool, TransactionManager};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::limits::HOT_CONNECTION_IDLE_MS;

/// A bounded pool of database connections that reuses a connection without pinging it when its
/// last statement completed. Clones share the connections.
pub struct SqlPool<DB: Database> {
    inner: Arc<Inner<DB>>,
}

struct Inner<DB: Database> {
    pool: Pool<DB>,
    /// Ready connections and since when; the back is the most recently used.
    idle: Mutex<VecDeque<(PoolConnection<DB>, Instant)>>,
    permits: Arc<Semaphore>,
}

impl<DB: Database> Inner<DB> {
    fn acquire_timeout(&self) -> Duration {
        self.pool.options().get_acquire_timeout()
    }

    /// Puts a ready connection on the stack; connections idle past the limit at its bottom go
    /// back to sqlx (which pings them), dropped outside the lock.
    fn push(&self, conn: PoolConnection<DB>) {
        let now = Instant::now();
        let stale: Vec<_> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.push_back((conn, now));
            let cut = idle.iter().take_while(|(_, since)| now - *since >= idle_limit()).count();
            idle.drain(..cut).collect()
        };
        drop(stale);
    }
}

impl<DB: Database> Drop for Inner<DB> {
    fn drop(&mut self) {
        // Synchronously, so a pool may be dropped outside an async runtime: each connection
        // leaves sqlx's pool and closes its socket as it drops.
        let idle = self.idle.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (conn, _) in idle.drain(..) {
            drop(conn.detach());
        }
    }
}

fn idle_limit() -> Duration {
    Duration::from_millis(HOT_CONNECTION_IDLE_MS)
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
    /// Takes over `pool`: at most its `max_connections` are out at once, and a caller waits at
    /// most its acquire timeout for one. The pool must not be used by anything else.
    #[must_use]
    pub fn new(pool: Pool<DB>) -> Self {
        let permits = usize::try_from(pool.options().get_max_connections()).unwrap_or(usize::MAX);
        Self {
            inner: Arc::new(Inner {
                pool,
                idle: Mutex::new(VecDeque::new()),
                permits: Arc::new(Semaphore::new(permits.clamp(1, Semaphore::MAX_PERMITS))),
            }),
        }
    }

    /// A connection: the most recently used ready one if there is one (pinged first if it sat
    /// idle past the limit), else a new one from sqlx's pool.
    ///
    /// # Errors
    /// [`sqlx::Error::PoolTimedOut`] when no connection was free within the acquire timeout;
    /// what sqlx reports when it cannot open a connection.
    pub(crate) async fn get(&self) -> Result<SqlConn<DB>, sqlx::Error> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.acquire_timeout();
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&inner.permits).acquire_owned())
            .await
            .map_err(|_elapsed| sqlx::Error::PoolTimedOut)?
            .map_err(|_closed| sqlx::Error::PoolClosed)?;
        loop {
            let top = inner.idle.lock().unwrap_or_else(PoisonError::into_inner).pop_back();
            let conn = match top {
                Some((conn, since)) if since.elapsed() < idle_limit() => conn,
                Some((mut conn, _)) => match tokio::time::timeout_at(deadline, conn.ping()).await {
                    Ok(Ok(())) => conn,
                    _ => {
                        conn.close_on_drop();
                        continue;
                    }
                },
                None => tokio::time::timeout_at(deadline, inner.pool.acquire())
                    .await
                    .map_err(|_elapsed| sqlx::Error::PoolTimedOut)??,
            };
            return Ok(SqlConn {
                inner: Arc::clone(inner),
                conn: Some(conn),
                reuse: Reuse::Check,
                permit: Some(permit),
            });
        }
    }

    /// Applies `migrator`'s migrations on one connection. A connection whose migration failed
    /// may still hold the migrator's session lock: it is closed, never reused.
    ///
    /// # Errors
    /// As [`SqlPool::get`] (as a [`sqlx::migrate::MigrateError::Execute`]), and what the
    /// migrator reports.
    pub(crate) async fn migrate(
        &self,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<(), sqlx::migrate::MigrateError>
    where
        for<'c> &'c mut DB::Connection: sqlx::Acquire<'c, Database = DB>,
        DB::Connection: sqlx::migrate::Migrate,
    {
        let mut conn = self.get().await?;
        conn.reuse = Reuse::Close;
        migrator.run(&mut *conn).await?;
        conn.reuse = Reuse::Ready;
        Ok(())
    }

    /// Begins a transaction on a connection from [`SqlPool::get`].
    ///
    /// # Errors
    /// As [`SqlPool::get`], and what the database answers to `BEGIN`.
    pub(crate) async fn begin(&self) -> Result<SqlTx<DB>, sqlx::Error> {
        let mut conn = self.get().await?;
        // Cancelled before `BEGIN`'s answer was read, the session would hold a transaction sqlx
        // does not know of: close it rather than reuse it.
        conn.reuse = Reuse::Close;
        DB::TransactionManager::begin(&mut conn, None).await?;
        conn.reuse = Reuse::Check;
        Ok(SqlTx { conn, open: true })
    }
}

/// What becomes of a connection when it is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Between statements, no transaction open: back on the stack as it is.
    Ready,
    /// Unknown (a statement did not complete, a transaction is open): rolled back if need be
    /// and pinged first.
    Check,
    /// Never reused: closed.
    Close,
}

/// A connection taken from a [`SqlPool`]; it derefs to the driver's connection. Given back when
/// dropped, as its last [`SqlConn::settle`] (or [`SqlConn::close_unless_settled`]) says.
pub(crate) struct SqlConn<DB: Database> {
    inner: Arc<Inner<DB>>,
    conn: Option<PoolConnection<DB>>,
    reuse: Reuse,
    permit: Option<OwnedSemaphorePermit>,
}

impl<DB: Database> SqlConn<DB> {
    /// Judges the connection by `result`, a statement's that ran to completion: ready after an
    /// answer or an error the database reported while the session goes on; to check after
    /// anything else (an I/O or protocol error, or a database error that may have ended the
    /// session: SQLSTATE classes 08 connection, 57 operator intervention, 70 (MariaDB's
    /// killed connection) and HY (MySQL's unclassified errors)).
    pub(crate) fn settle<T>(&mut self, result: &Result<T, sqlx::Error>) {
        self.reuse = match result {
            Ok(_) | Err(sqlx::Error::RowNotFound) => Reuse::Ready,
            Err(sqlx::Error::Database(error)) => match error.code().as_deref().map(|c| c.get(..2)) {
                Some(Some("08" | "57" | "70" | "HY")) => Reuse::Check,
                _ => Reuse::Ready,
            },
            Err(_) => Reuse::Check,
        };
    }

    /// Closes the connection when it is given back unless a later [`SqlConn::settle`] says
    /// otherwise: for a statement that may leave something held by the session (a named lock)
    /// until another undoes it.
    pub(crate) fn close_unless_settled(&mut self) {
        self.reuse = Reuse::Close;
    }
}

impl<DB: Database> Deref for SqlConn<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        self.conn.as_ref().expect("a SqlConn holds its connection until dropped")
    }
}

impl<DB: Database> DerefMut for SqlConn<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn.as_mut().expect("a SqlConn holds its connection until dropped")
    }
}

impl<DB: Database> Drop for SqlConn<DB> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let permit = self.permit.take();
        let in_transaction = DB::TransactionManager::get_transaction_depth(&conn) > 0;
        match self.reuse {
            Reuse::Ready if !in_transaction => self.inner.push(conn),
            Reuse::Close => {
                conn.close_on_drop();
                drop(conn);
            }
            Reuse::Ready | Reuse::Check => {
                if in_transaction {
                    DB::TransactionManager::start_rollback(&mut conn);
                }
                let inner = Arc::clone(&self.inner);
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            // The ping sends what is queued (a rollback) and reads whatever the
                            // cancelled statement left unread.
                            match tokio::time::timeout(inner.acquire_timeout(), conn.ping()).await {
                                Ok(Ok(())) => inner.push(conn),
                                _ => conn.close_on_drop(),
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => drop(conn.detach()),
                }
            }
        }
    }
}

/// A transaction on a connection of a [`SqlPool`]; `&mut *tx` is the connection to run its
/// statements on. Dropped before [`SqlTx::commit`], it is rolled back before its connection is
/// reused.
pub(crate) struct SqlTx<DB: Database> {
    conn: SqlConn<DB>,
    open: bool,
}

impl<DB: Database> SqlTx<DB> {
    /// Commits the transaction; its connection is then reused as it is.
    ///
    /// # Errors
    /// What the database answers to `COMMIT`.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        DB::TransactionManager::commit(&mut self.conn).await?;
        self.open = false;
        self.conn.reuse = Reuse::Ready;
        Ok(())
    }
}

impl<DB: Database> Deref for SqlTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> DerefMut for SqlTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: Database> Drop for SqlTx<DB> {
    fn drop(&mut self) {
        if self.open {
            // Queued here, sent by the check that follows (the connection is not ready).
            DB::TransactionManager::start_rollback(&mut self.conn);
            self.conn.reuse = Reuse::Check;
        }
    }
}

/// Runs `query` to its end on a connection of `pool` and gives the connection back settled.
async fn run_whole<'q, DB, E>(
    pool: &SqlPool<DB>,
    query: E,
) -> Result<Vec<Either<DB::QueryResult, DB::Row>>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    E: 'q + Execute<'q, DB>,
{
    let mut conn = pool.get().await?;
    let all = (&mut *conn).fetch_many(query).try_collect().await;
    conn.settle(&all);
    all
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
        // Read whole before yielding, so the connection is settled as soon as the statement
        // ends (every caller here collects anyway: execute, fetch_all, fetch_one).
        stream::once(run_whole(self, query))
            .map_ok(|all| stream::iter(all.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        // The whole answer is read (MySQL's driver would stop at the first row and leave the
        // rest, an error packet of a procedure included, to whoever uses the connection next).
        Box::pin(async move { Ok(run_whole(self, query).await?.into_iter().find_map(Either::right)) })
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
