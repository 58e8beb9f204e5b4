//! The queue in MySQL / MariaDB. The line is the index `queue_line (concert_id, status, seq)`;
//! `seq` is the table's AUTO_INCREMENT column. Admission ticks are serialised by a
//! compare-and-set on the concert's `admission_state` row, read with a locking read.

use chrono::{DateTime, Utc};

use super::{MyStore, db, one_row};
use crate::error::StoreError;
use crate::ids::{ConcertId, QueueToken, UserId};
use crate::queue::{AdmissionPlan, AdmissionSnapshot, LineOpening, NewToken, TokenRecord};
use crate::store::sql_rows::{
    AdmissionRow, TokenColumns, TokenRow, admission_snapshot, i32_of, i64_of, u64_of,
};
use crate::store::{QueueStore, StoreResult};

const TOKEN_COLUMNS: &str =
    "token, user_id, concert_id, issued_at, version, status, seq, admitted_at, expires_at, expired_reason";

impl MyStore {
    async fn token_named(&self, token: &str) -> StoreResult<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE token = ?");
        let row: Option<TokenRow> =
            sqlx::query_as(&sql).bind(token).fetch_optional(&self.pool).await.map_err(db("queue token"))?;
        row.map(TryInto::try_into).transpose()
    }
}

impl QueueStore for MyStore {
    async fn token(&self, token: &QueueToken) -> StoreResult<Option<TokenRecord>> {
        self.token_named(token.as_str()).await
    }

    async fn token_of_user(&self, concert: ConcertId, user: &UserId) -> StoreResult<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE concert_id = ? AND user_id = ?");
        let row: Option<TokenRow> = sqlx::query_as(&sql)
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
                "DELETE FROM queue_tokens WHERE token = ? AND version = ? AND user_id = ? AND concert_id = ?",
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
        let inserted = sqlx::query(
            "INSERT INTO queue_tokens (token, user_id, concert_id, issued_at, version, status, expires_at)
             VALUES (?, ?, ?, ?, 1, 'WAITING', ?)",
        )
        .bind(new.token.as_str())
        .bind(new.user_id.as_str())
        .bind(new.concert_id.as_uuid())
        .bind(new.issued_at)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db("queue token of user"))?;
        let seq = inserted.last_insert_id();
        tx.commit().await.map_err(db("commit"))?;
        Ok(new.waiting(seq))
    }

    async fn update_token(&self, expected_version: u64, updated: &TokenRecord) -> StoreResult<()> {
        // The line's order (`seq`) is not written here: a refreshed token keeps its place (only
        // the opening's draw deals places out again, `open_line`).
        let columns = TokenColumns::of(&updated.state)?;
        let result = sqlx::query(
            "UPDATE queue_tokens SET version = ?, status = ?, admitted_at = ?, expires_at = ?, expired_reason = ?
             WHERE token = ? AND version = ?",
        )
        .bind(i64_of(updated.version)?)
        .bind(columns.status)
        .bind(columns.admitted_at)
        .bind(columns.expires_at)
        .bind(columns.reason)
        .bind(updated.token.as_str())
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
            "SELECT COUNT(*) FROM queue_tokens WHERE concert_id = ? AND status = 'WAITING' AND seq <= ?",
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
        // The version is read before the counts (see the trait): each statement below runs in
        // its own transaction, so each sees what committed before it.
        let state: Option<AdmissionRow> = sqlx::query_as(
            "SELECT version, window_started_at, admitted_in_window, rate_per_sec, opened FROM admission_state WHERE concert_id = ?",
        )
        .bind(concert.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("admission state"))?;
        let (active, waiting): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(status = 'ACTIVE' AND expires_at > ?), 0) AS SIGNED),
                    CAST(COALESCE(SUM(status = 'WAITING'), 0) AS SIGNED)
             FROM queue_tokens WHERE concert_id = ? AND status IN ('ACTIVE', 'WAITING')",
        )
        .bind(now)
        .bind(concert.as_uuid())
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
        let head: Vec<(String, i64)> = sqlx::query_as(
            "SELECT token, seq FROM queue_tokens
             WHERE concert_id = ? AND status = 'WAITING' AND expires_at > ?
             ORDER BY seq LIMIT ? FOR UPDATE",
        )
        .bind(concert)
        .bind(plan.now)
        .bind(i64::from(plan.quota))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("admit"))?;
        if !head.is_empty() {
            // One statement for the whole batch.
            let mut admit = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "UPDATE queue_tokens SET status = 'ACTIVE', admitted_at = ",
            );
            admit.push_bind(plan.now).push(", expires_at = ").push_bind(plan.active_expires_at);
            admit.push(", version = version + 1 WHERE status = 'WAITING' AND token IN (");
            let mut tokens = admit.separated(", ");
            for (token, _) in &head {
                tokens.push_bind(token);
            }
            admit.push(")");
            admit.build().execute(&mut *tx).await.map_err(db("admit"))?;
        }
        if let Some((_, last)) = head.last() {
            // Idle tokens the head skipped expire now rather than waiting for the sweeper.
            sqlx::query(
                "UPDATE queue_tokens SET status = 'EXPIRED', expired_reason = 'IDLE', version = version + 1
                 WHERE concert_id = ? AND status = 'WAITING' AND seq < ? AND expires_at <= ?",
            )
            .bind(concert)
            .bind(last)
            .bind(plan.now)
            .execute(&mut *tx)
            .await
            .map_err(db("expire idle"))?;
        }
        let admitted = u32::try_from(head.len()).unwrap_or(u32::MAX);
        sqlx::query(
            "UPDATE admission_state SET version = version + 1, window_started_at = ?, admitted_in_window = ?, rate_per_sec = ?
             WHERE concert_id = ?",
        )
        .bind(plan.window_started_at)
        .bind(i32_of(plan.admitted_before.saturating_add(admitted))?)
        .bind(plan.rate_per_sec)
        .bind(concert)
        .execute(&mut *tx)
        .await
        .map_err(db("admission state"))?;
        tx.commit().await.map_err(db("commit"))?;
        if head.is_empty() {
            return Ok(Vec::new());
        }
        let mut read = sqlx::QueryBuilder::<sqlx::MySql>::new(format!(
            "SELECT {TOKEN_COLUMNS} FROM queue_tokens WHERE token IN ("
        ));
        let mut tokens = read.separated(", ");
        for (token, _) in &head {
            tokens.push_bind(token);
        }
        read.push(") ORDER BY seq");
        let rows: Vec<TokenRow> =
            read.build_query_as().fetch_all(&self.pool).await.map_err(db("admitted tokens"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    crate::store::sql_steps::queue_line_reads!();

    async fn open_line(&self, opening: &LineOpening) -> StoreResult<bool> {
        let concert = opening.concert_id.as_uuid();
        let mut tx = self.begin().await?;
        let (_, opened) = locked_admission_state(&mut tx, concert).await?;
        if opened {
            return Ok(false);
        }
        // In parts (each well under `max_allowed_packet`), all in this one transaction.
        for part in opening.moves.chunks(crate::limits::PRE_QUEUE_DRAW_CHUNK) {
            let moves: Vec<(&str, u64, u64)> =
                part.iter().map(|m| (m.token.as_str(), m.from, m.to)).collect();
            let moves =
                serde_json::to_string(&moves).map_err(|e| StoreError::Corrupt(format!("moves: {e}")))?;
            // The tokens as ASCII text: compared with the column's utf8mb4 in its own collation, not
            // the connection's (two implicit utf8mb4 collations cannot be compared).
            sqlx::query(
                "UPDATE queue_tokens q
                 JOIN JSON_TABLE(?, '$[*]' COLUMNS (token VARCHAR(72) CHARACTER SET ascii PATH '$[0]', from_seq BIGINT PATH '$[1]',
                                                    to_seq BIGINT PATH '$[2]')) m ON q.token = m.token
                 SET q.seq = m.to_seq, q.version = q.version + 1
                 WHERE q.concert_id = ? AND q.status = 'WAITING' AND q.seq = m.from_seq",
            )
            .bind(moves)
            .bind(concert)
            .execute(&mut *tx)
            .await
            .map_err(db("open line"))?;
        }
        sqlx::query("UPDATE admission_state SET opened = TRUE, version = version + 1 WHERE concert_id = ?")
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
            "UPDATE queue_tokens SET status = 'EXPIRED', expired_reason = 'IDLE', version = version + 1
             WHERE status = 'WAITING' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db("sweep idle"))?;
        let timed_out = sqlx::query(
            "UPDATE queue_tokens SET status = 'EXPIRED', expired_reason = 'TIMED_OUT', version = version + 1
             WHERE status = 'ACTIVE' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(db("sweep active"))?;
        let forgotten =
            sqlx::query("DELETE FROM queue_tokens WHERE status = 'EXPIRED' AND expires_at < ? ORDER BY expires_at LIMIT ?")
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
/// The row is locked exclusively at once, made or not: `INSERT IGNORE` took a shared lock on an
/// existing row, and two ticks that both held it then deadlocked upgrading it for the
/// `FOR UPDATE` below.
async fn locked_admission_state(
    tx: &mut crate::store::SqlTx<sqlx::MySql>,
    concert: uuid::Uuid,
) -> StoreResult<(i64, bool)> {
    sqlx::query(
        "INSERT INTO admission_state (concert_id, version, admitted_in_window, rate_per_sec) VALUES (?, 0, 0, 0)
         ON DUPLICATE KEY UPDATE version = version",
    )
    .bind(concert)
    .execute(&mut **tx)
    .await
    .map_err(db("admission state"))?;
    sqlx::query_as("SELECT version, opened FROM admission_state WHERE concert_id = ? FOR UPDATE")
        .bind(concert)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("admission state"))
}
