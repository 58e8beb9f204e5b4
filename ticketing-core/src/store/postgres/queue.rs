//! The queue in PostgreSQL, for deployments without Redis.
//!
//! The line is the partial index `queue_line (concert_id, seq) WHERE status = 'WAITING'`;
//! admission takes from its head in order, and ticks are serialised by a compare-and-set on the
//! concert's `admission_state` row (only ticks write it, never a buyer's request). A position is
//! a count over that index: O(position), index-only. For lines of hundreds of thousands, the
//! Redis queue store answers positions in O(log n).

use chrono::{DateTime, Utc};

use super::{PgStore, db, one_row};
use crate::error::StoreError;
use crate::ids::{ConcertId, QueueToken, UserId};
use crate::queue::{AdmissionPlan, AdmissionSnapshot, LineOpening, NewToken, TokenRecord};
use crate::store::sql_rows::{AdmissionRow, TokenColumns, TokenRow, admission_snapshot, i64_of, u64_of};
use crate::store::{QueueStore, StoreResult};

#[derive(Debug, sqlx::FromRow)]
struct AdmittedRow {
    #[sqlx(flatten)]
    token: TokenRow,
    line_seq: i64,
}

impl QueueStore for PgStore {
    async fn token(&self, token: &QueueToken) -> StoreResult<Option<TokenRecord>> {
        let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM queue_tokens WHERE token = $1")
            .bind(token.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("queue token"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn token_of_user(&self, concert: ConcertId, user: &UserId) -> StoreResult<Option<TokenRecord>> {
        let row: Option<TokenRow> =
            sqlx::query_as("SELECT * FROM queue_tokens WHERE concert_id = $1 AND user_id = $2")
                .bind(concert.as_uuid())
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("queue token"))?;
        row.map(TryInto::try_into).transpose()
    }

    async fn insert_token(&self, new: NewToken, replacing: Option<&TokenRecord>) -> StoreResult<TokenRecord> {
        let mut tx = self.begin().await?;
        if let Some(old) = replacing {
            let removed = sqlx::query(
                "DELETE FROM queue_tokens WHERE token = $1 AND version = $2 AND user_id = $3 AND concert_id = $4",
            )
            .bind(old.token.as_str())
            .bind(i64_of(old.version)?)
            .bind(new.user_id.as_str())
            .bind(new.concert_id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("queue token of user"))?;
            one_row(removed, "queue token of user")?;
        }
        let row: TokenRow = sqlx::query_as(
            "INSERT INTO queue_tokens (token, user_id, concert_id, issued_at, version, status, seq, expires_at)
             VALUES ($1, $2, $3, $4, 1, 'WAITING', nextval('queue_seq'), $5)
             RETURNING *",
        )
        .bind(new.token.as_str())
        .bind(new.user_id.as_str())
        .bind(new.concert_id.as_uuid())
        .bind(new.issued_at)
        .bind(new.expires_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("queue token of user"))?;
        tx.commit().await.map_err(db("commit"))?;
        row.try_into()
    }

    async fn update_token(&self, expected_version: u64, updated: &TokenRecord) -> StoreResult<()> {
        let columns = TokenColumns::of(&updated.state)?;
        let result = sqlx::query(
            "UPDATE queue_tokens SET version = $2, status = $3, seq = $4, admitted_at = $5, expires_at = $6,
                                     expired_reason = $7
             WHERE token = $1 AND version = $8",
        )
        .bind(updated.token.as_str())
        .bind(i64_of(updated.version)?)
        .bind(columns.status)
        .bind(columns.seq)
        .bind(columns.admitted_at)
        .bind(columns.expires_at)
        .bind(columns.reason)
        .bind(i64_of(expected_version)?)
        .execute(&self.pool)
        .await
        .map_err(db("queue token"))?;
        if result.rows_affected() == 1 {
            return Ok(());
        }
        match self.token(&updated.token).await? {
            Some(_) => Err(StoreError::Conflict("queue token")),
            None => Err(StoreError::Missing("queue token")),
        }
    }

    async fn position(&self, record: &TokenRecord) -> StoreResult<u64> {
        let Some(seq) = record.seq() else { return Ok(0) };
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM queue_tokens WHERE concert_id = $1 AND status = 'WAITING' AND seq <= $2",
        )
        .bind(record.concert_id.as_uuid())
        .bind(i64_of(seq)?)
        .fetch_one(&self.pool)
        .await
        .map_err(db("position"))?;
        u64_of(count)
    }

    async fn admission_snapshot(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<AdmissionSnapshot> {
        // Read-only: actives are counted by their deadline; tidying them is the sweeper's job.
        // The version is read before the counts. An admission that commits after this read
        // raises the version, so a plan made from counts that miss it fails its compare-and-set;
        // one that committed before is in the counts. (Read the other way round, a tick could
        // plan from stale counts under a fresh version and admit past `max_active`.)
        let state: Option<AdmissionRow> =
            sqlx::query_as("SELECT * FROM admission_state WHERE concert_id = $1")
                .bind(concert.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("admission state"))?;
        let (active, waiting): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'ACTIVE' AND expires_at > $2),
                    count(*) FILTER (WHERE status = 'WAITING')
             FROM queue_tokens WHERE concert_id = $1 AND status IN ('ACTIVE', 'WAITING')",
        )
        .bind(concert.as_uuid())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db("queue counts"))?;
        admission_snapshot(state, active, waiting)
    }

    async fn admit(&self, plan: &AdmissionPlan) -> StoreResult<Vec<TokenRecord>> {
        let concert = plan.concert_id.as_uuid();
        let mut tx = self.begin().await?;
        let (version, opened) = locked_admission_state(&mut tx, concert).await?;
        if version != i64_of(plan.expected_version)? {
            return Err(StoreError::Conflict("admission state"));
        }
        if plan.requires_open && !opened {
            return Err(StoreError::Conflict("line not open"));
        }
        let mut rows: Vec<AdmittedRow> = sqlx::query_as(
            "WITH head AS (SELECT token, seq FROM queue_tokens
                           WHERE concert_id = $1 AND status = 'WAITING' AND expires_at > $2
                           ORDER BY seq LIMIT $3 FOR UPDATE)
             UPDATE queue_tokens q SET status = 'ACTIVE', seq = NULL, admitted_at = $2, expires_at = $4,
                                       version = q.version + 1
             FROM head WHERE q.token = head.token
             RETURNING q.*, head.seq AS line_seq",
        )
        .bind(concert)
        .bind(plan.now)
        .bind(i64::from(plan.quota))
        .bind(plan.active_expires_at)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("admit"))?;
        rows.sort_by_key(|r| r.line_seq);
        if let Some(last) = rows.last() {
            // Idle tokens the head skipped expire now rather than waiting for the sweeper.
            sqlx::query(
                "UPDATE queue_tokens SET status = 'EXPIRED', expired_reason = 'IDLE', seq = NULL, version = version + 1
                 WHERE concert_id = $1 AND status = 'WAITING' AND seq < $2 AND expires_at <= $3",
            )
            .bind(concert)
            .bind(last.line_seq)
            .bind(plan.now)
            .execute(&mut *tx)
            .await
            .map_err(db("expire idle"))?;
        }
        let admitted = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        sqlx::query(
            "UPDATE admission_state SET version = version + 1, window_started_at = $2, admitted_in_window = $3,
                                        rate_per_sec = $4
             WHERE concert_id = $1",
        )
        .bind(concert)
        .bind(plan.window_started_at)
        .bind(crate::store::sql_rows::i32_of(plan.admitted_before.saturating_add(admitted))?)
        .bind(plan.rate_per_sec)
        .execute(&mut *tx)
        .await
        .map_err(db("admission state"))?;
        tx.commit().await.map_err(db("commit"))?;
        rows.into_iter().map(|r| r.token.try_into()).collect()
    }

    crate::store::sql_steps::queue_line_reads!();

    async fn open_line(&self, opening: &LineOpening) -> StoreResult<bool> {
        let concert = opening.concert_id.as_uuid();
        let mut tx = self.begin().await?;
        let (_, opened) = locked_admission_state(&mut tx, concert).await?;
        if opened {
            return Ok(false);
        }
        // In parts, all in this one transaction.
        for part in opening.moves.chunks(crate::limits::PRE_QUEUE_DRAW_CHUNK) {
            let tokens: Vec<&str> = part.iter().map(|m| m.token.as_str()).collect();
            let from = part.iter().map(|m| i64_of(m.from)).collect::<StoreResult<Vec<_>>>()?;
            let to = part.iter().map(|m| i64_of(m.to)).collect::<StoreResult<Vec<_>>>()?;
            sqlx::query(
                "UPDATE queue_tokens q SET seq = m.to_seq, version = q.version + 1
                 FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS m(token, from_seq, to_seq)
                 WHERE q.token = m.token AND q.concert_id = $1 AND q.status = 'WAITING' AND q.seq = m.from_seq",
            )
            .bind(concert)
            .bind(&tokens)
            .bind(&from)
            .bind(&to)
            .execute(&mut *tx)
            .await
            .map_err(db("open line"))?;
        }
        sqlx::query("UPDATE admission_state SET opened = true, version = version + 1 WHERE concert_id = $1")
            .bind(concert)
            .execute(&mut *tx)
            .await
            .map_err(db("admission state"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(true)
    }

    async fn sweep_queue(
        &self,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let idle = sqlx::query(
            "UPDATE queue_tokens SET status = 'EXPIRED', expired_reason = 'IDLE', seq = NULL, version = version + 1
             WHERE token IN (SELECT token FROM queue_tokens WHERE status = 'WAITING' AND expires_at <= $1
                             LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db("sweep idle"))?;
        let timed_out = sqlx::query(
            "UPDATE queue_tokens SET status = 'EXPIRED', expired_reason = 'TIMED_OUT', version = version + 1
             WHERE token IN (SELECT token FROM queue_tokens WHERE status = 'ACTIVE' AND expires_at <= $1
                             LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db("sweep active"))?;
        let forgotten = sqlx::query(
            "DELETE FROM queue_tokens
             WHERE token IN (SELECT token FROM queue_tokens WHERE status = 'EXPIRED' AND expires_at < $1
                             LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(forget_before)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db("forget tokens"))?;
        let touched = idle.rows_affected() + timed_out.rows_affected() + forgotten.rows_affected();
        Ok(usize::try_from(touched).unwrap_or(usize::MAX))
    }

    async fn ping_queue(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db("ping"))?;
        Ok(())
    }
}

/// The concert's admission state row (made if missing), locked for this transaction: its
/// version and whether its line was opened. Admission and the opening each decide under it.
async fn locked_admission_state(
    tx: &mut crate::store::SqlTx<sqlx::Postgres>,
    concert: uuid::Uuid,
) -> StoreResult<(i64, bool)> {
    sqlx::query(
        "INSERT INTO admission_state (concert_id, version, admitted_in_window, rate_per_sec)
         VALUES ($1, 0, 0, 0) ON CONFLICT (concert_id) DO NOTHING",
    )
    .bind(concert)
    .execute(&mut **tx)
    .await
    .map_err(db("admission state"))?;
    sqlx::query_as("SELECT version, opened FROM admission_state WHERE concert_id = $1 FOR UPDATE")
        .bind(concert)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("admission state"))
}
