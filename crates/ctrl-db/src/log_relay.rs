//! The log relay: requests for instance logs filed by readers
//! (`log_requests`) and the batches of lines agents push back
//! (`log_batches`). The database is the one place every ctrl-api and
//! cluster-sync replica shares, so the reader and the agent's stream need
//! not meet in one process. Rows live only while someone reads.

use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

pub use crate::types::LogRequestState as RequestState;
use crate::{Error, Result};

/// A request for one deployment's output in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LogRequest {
    /// `lrq_…`
    pub id: String,
    /// The cluster whose agent answers.
    pub cluster_id: String,
    /// The deployment.
    pub deployment_id: String,
    /// Keep sending new lines.
    pub follow: bool,
    /// Past lines per instance.
    pub tail_lines: u32,
    /// Where it stands.
    pub state: RequestState,
    /// With `Ended`: why the agent could not read the output.
    pub error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms it was handed to the agent.
    pub claimed_at: Option<i64>,
    /// Unix ms of the reader's last refresh.
    pub reader_seen_at: i64,
    /// Unix ms of the agent's last push.
    pub agent_seen_at: Option<i64>,
}

/// What a reader files.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    /// `lrq_…`
    pub id: &'a str,
    /// The cluster whose agent should answer.
    pub cluster_id: &'a str,
    /// The deployment.
    pub deployment_id: &'a str,
    /// Keep sending new lines.
    pub follow: bool,
    /// Past lines per instance.
    pub tail_lines: u32,
}

const COLUMNS: &str = "id, cluster_id, deployment_id, follow, tail_lines, state, error, \
    created_at, claimed_at, reader_seen_at, agent_seen_at";

/// Files a pending request.
pub async fn file(ex: impl MySqlExecutor<'_>, r: &NewRequest<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO log_requests (id, cluster_id, deployment_id, follow, tail_lines, created_at, reader_seen_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id)
    .bind(r.cluster_id)
    .bind(r.deployment_id)
    .bind(r.follow)
    .bind(r.tail_lines)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// One request; `NotFound` once it was removed.
pub async fn get(ex: impl MySqlExecutor<'_>, id: &str) -> Result<LogRequest> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM log_requests WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(ex)
    .await?
    .ok_or(Error::NotFound("log request"))
}

/// Pending requests for any of `cluster_ids`, oldest first.
pub async fn pending(
    ex: impl MySqlExecutor<'_>,
    cluster_ids: &[String],
    limit: u32,
) -> Result<Vec<LogRequest>> {
    if cluster_ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; cluster_ids.len()].join(", ");
    let sql = format!(
        "SELECT {COLUMNS} FROM log_requests WHERE state = 'pending' AND cluster_id IN ({marks})
         ORDER BY pk LIMIT ?"
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for id in cluster_ids {
        query = query.bind(id);
    }
    Ok(query.bind(limit).fetch_all(ex).await?)
}

/// Marks a pending request handed to its agent; false if it was not
/// pending any more (another replica's stream took it, or it was removed).
pub async fn claim(ex: impl MySqlExecutor<'_>, id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE log_requests SET state = 'claimed', claimed_at = ? WHERE id = ? AND state = 'pending'",
    )
    .bind(now)
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The reader is still there.
pub async fn touch_reader(ex: impl MySqlExecutor<'_>, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE log_requests SET reader_seen_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// What an agent pushes.
#[derive(Debug, Clone)]
pub struct Push<'a> {
    /// The request.
    pub id: &'a str,
    /// The batch's number and its encoded lines, if it has any.
    pub batch: Option<(u64, &'a [u8])>,
    /// The last push: `Some(error)` (empty: none).
    pub end: Option<&'a str>,
}

/// Records a push (call in a transaction): the batch once per number, the
/// agent's liveness and, with `end`, the end and its error.
pub async fn push(conn: &mut MySqlConnection, p: &Push<'_>, now: i64) -> Result<()> {
    if let Some((seq, body)) = p.batch {
        sqlx::query(
            "INSERT IGNORE INTO log_batches (request_id, seq, body, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(p.id)
        .bind(seq)
        .bind(body)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    match p.end {
        Some(error) => sqlx::query(
            "UPDATE log_requests SET state = 'ended', error = ?, agent_seen_at = ? WHERE id = ?",
        )
        .bind((!error.is_empty()).then(|| ctrl_core::names::clip(error, 1024)))
        .bind(now)
        .bind(p.id)
        .execute(&mut *conn)
        .await?,
        None => {
            sqlx::query("UPDATE log_requests SET agent_seen_at = ? WHERE id = ?")
                .bind(now)
                .bind(p.id)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(())
}

/// Batches pushed but not yet consumed by the reader.
pub async fn unread(ex: impl MySqlExecutor<'_>, id: &str) -> Result<u64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM log_batches WHERE request_id = ?")
        .bind(id)
        .fetch_one(ex)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Up to `limit` batches after `after_seq`, in order: `(seq, body)`.
pub async fn batches(
    ex: impl MySqlExecutor<'_>,
    id: &str,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<(u64, Vec<u8>)>> {
    Ok(sqlx::query_as(
        "SELECT seq, body FROM log_batches WHERE request_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// Forgets the batches the reader has passed on (up to `seq`).
pub async fn consume(ex: impl MySqlExecutor<'_>, id: &str, seq: u64) -> Result<()> {
    sqlx::query("DELETE FROM log_batches WHERE request_id = ? AND seq <= ?")
        .bind(id)
        .bind(seq)
        .execute(ex)
        .await?;
    Ok(())
}

/// Removes a request and its batches (the reader left). The request goes
/// first, so the agent's next push learns to stop; a batch pushed in
/// between is left to [`sweep`].
pub async fn remove(ex: &sqlx::MySqlPool, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM log_requests WHERE id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    sqlx::query("DELETE FROM log_batches WHERE request_id = ?")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

/// Removes requests whose reader stopped refreshing before `reader_before`
/// (a reader that crashed) and batches older than `batches_before`; returns
/// the number of rows removed.
pub async fn sweep(ex: &sqlx::MySqlPool, reader_before: i64, batches_before: i64) -> Result<u64> {
    let requests = sqlx::query("DELETE FROM log_requests WHERE reader_seen_at < ? LIMIT 1000")
        .bind(reader_before)
        .execute(ex)
        .await?;
    let batches = sqlx::query("DELETE FROM log_batches WHERE created_at < ? LIMIT 1000")
        .bind(batches_before)
        .execute(ex)
        .await?;
    Ok(requests.rows_affected() + batches.rows_affected())
}
