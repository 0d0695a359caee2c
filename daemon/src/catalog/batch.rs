//! The catalog's writes, each step of a transaction one command to sqlx's SQLite thread.
//!
//! Through sqlx every statement is a command to the thread that holds the connection and an
//! answer back, two thread wake-ups, and a transaction adds its BEGIN and its COMMIT: a scheduled
//! checkpoint's catalog work was 20 such trips, and hand-offs between threads were a third of the
//! daemon's CPU (BENCHMARKS.md, "Cost growth"). sqlx 0.8's SQLite driver runs a query of several
//! statements as one command (`Executor::fetch_many`), binding anonymous `?` parameters in order
//! across them. A `Batch` is such a query; a `Tx` sends its BEGIN with its first batch and its
//! COMMIT with its last, so a transaction costs one trip per step that must see what SQLite
//! answered before it goes on (a write made only if another took, a row read and then changed),
//! and a plain write one trip.
//!
//! The catalog's connections are its own, not an sqlx pool: sqlx 0.8 gives a pooled connection
//! back by spawning a task that pings the connection's thread first, so a use of a pooled
//! connection costs its statement plus a task and a ping, more thread hand-offs than the
//! statement (BENCHMARKS.md, "Cost growth"). Every write goes through one connection, the
//! `Writer` (SQLite lets one writer at a time in anyway); reads take one of a few `Readers`,
//! given back as they are dropped. A reader needs no ping: a read is one statement outside any
//! transaction, and sqlx's SQLite thread resets a statement whose answer was dropped half read
//! before it runs the next command.
//!
//! (sqlx deprecates several statements in one `Query`'s `fetch_many`, launchbadge/sqlx#3108, not
//! in `Executor`'s, which this uses; a sqlx without it fails the catalog's unit tests.)

use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Arguments, ConnectOptions, Connection, Either, Encode, Executor, Sqlite, Type};
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore, SemaphorePermit};

/// Connections for reads, at most `max` at once, opened as they are first needed.
pub(super) struct Readers {
    idle: std::sync::Mutex<Vec<SqliteConnection>>,
    permits: Semaphore,
    opts: SqliteConnectOptions,
}

/// A reader connection; back among the idle ones when dropped.
pub(super) struct Reader<'a> {
    conn: Option<SqliteConnection>,
    readers: &'a Readers,
    _permit: SemaphorePermit<'a>,
}

impl Readers {
    pub fn new(opts: SqliteConnectOptions, max: usize) -> Readers {
        Readers {
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Semaphore::new(max),
            opts,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection for a read: an idle one, or a new one while fewer than `max` are out.
    pub async fn get(&self) -> Result<Reader<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle().pop();
        let conn = match idle {
            Some(c) => c,
            None => self.opts.connect().await?,
        };
        Ok(Reader {
            conn: Some(conn),
            readers: self,
            _permit: permit,
        })
    }

    /// Refuses further reads and closes the idle connections.
    pub async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle());
        for c in idle {
            let _ = c.close().await;
        }
    }
}

impl std::ops::Deref for Reader<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // After `close`, a connection still out is dropped (its thread closes it).
            if !self.readers.permits.is_closed() {
                self.readers.idle().push(c);
            }
        }
    }
}

/// sqlx's own error, so that a caller can tell a unique index's refusal.
type Result<T> = std::result::Result<T, sqlx::Error>;

/// Statements to run as one command, their values bound in order.
pub(super) struct Batch<'q> {
    sql: String,
    args: SqliteArguments<'q>,
    statements: usize,
    /// The first value that would not bind (none of the catalog's types fails).
    bad: Option<String>,
}

/// What one statement of a batch did: the rows it returned and the rows it changed.
pub(super) struct Done {
    pub rows: Vec<SqliteRow>,
    pub changed: u64,
}

impl<'q> Batch<'q> {
    pub fn new() -> Self {
        Batch {
            sql: String::new(),
            args: SqliteArguments::default(),
            statements: 0,
            bad: None,
        }
    }

    /// Appends a statement. Its parameters must be anonymous (`?`): a numbered one (`?1`) would
    /// name the batch's first value, not the statement's.
    pub fn push(&mut self, statement: &str) -> &mut Self {
        debug_assert!(
            !numbered_parameter(statement),
            "a batch's statements take anonymous parameters: {statement}"
        );
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
        self.statements += 1;
        self
    }

    /// Binds the next parameter.
    pub fn bind<T: 'q + Encode<'q, Sqlite> + Type<Sqlite>>(&mut self, value: T) -> &mut Self {
        if let Err(e) = self.args.add(value) {
            self.bad.get_or_insert(e.to_string());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.statements == 0
    }
}

fn numbered_parameter(sql: &str) -> bool {
    sql.as_bytes()
        .windows(2)
        .any(|w| matches!(w, [b'?', d] if d.is_ascii_digit()))
}

/// The catalog's connection for writes, shared by every `Tx` in turn.
pub(super) type Writer = Arc<Mutex<WriterState>>;

pub(super) struct WriterState {
    /// None once the catalog is closed.
    conn: Option<SqliteConnection>,
    opts: SqliteConnectOptions,
    /// A `Tx` was dropped inside its transaction (an error, a cancelled request): the next
    /// user rolls it back first, if a task spawned by the drop has not yet.
    pub(super) open: bool,
    /// What the connection's `synchronous` is set to; None when unknown (a batch that set it
    /// failed), so that the next transaction sets it again.
    synchronous: Option<Durability>,
}

/// Whether a transaction's commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// `synchronous = FULL`: the WAL is fsynced at the commit; a power loss right after keeps
    /// it. Every transaction but those below.
    Durable,
    /// `synchronous = NORMAL`: the commit is written to the WAL and not fsynced. A kill -9 of
    /// the daemon loses nothing (the WAL is in the kernel's page cache); a power loss or a
    /// kernel crash can take back this commit and any before the next durable one, whose fsync
    /// of the WAL makes all of them durable. For what nobody is told before a durable commit
    /// follows it (`Catalog::start_queued_job`).
    Lazy,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Durable => "PRAGMA synchronous = FULL;\n",
            Durability::Lazy => "PRAGMA synchronous = NORMAL;\n",
        }
    }
}

/// The catalog's writer, on `conn` (opened with `opts`, which a replacement is opened with).
pub(super) fn writer(conn: SqliteConnection, opts: SqliteConnectOptions) -> Writer {
    Arc::new(Mutex::new(WriterState {
        conn: Some(conn),
        opts,
        open: false,
        // As opened (`Catalog::open`).
        synchronous: Some(Durability::Durable),
    }))
}

/// Closes the writer: a `Tx` begun afterwards fails.
pub(super) async fn close(w: &Writer) {
    let conn = w.lock().await.conn.take();
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

impl WriterState {
    fn conn(&mut self) -> Result<&mut SqliteConnection> {
        self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Ends a transaction a dropped `Tx` left open. If ROLLBACK fails (SQLite may have ended
    /// the transaction itself), the connection is replaced: closing one rolls back whatever it
    /// still holds.
    async fn settle(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        if self.conn()?.execute("ROLLBACK").await.is_err() {
            let fresh = self.opts.connect().await?;
            if let Some(old) = self.conn.replace(fresh) {
                let _ = old.close().await;
            }
            self.synchronous = Some(Durability::Durable);
        }
        self.open = false;
        Ok(())
    }
}

/// A write transaction on the writer, `BEGIN IMMEDIATE` sent with its first batch (immediate:
/// it takes the write lock first, so a read followed by a write never meets another writer's
/// commit in between) and `COMMIT` with its last. Dropped unfinished (an error, a cancelled
/// request), the transaction is rolled back by a task it spawns, or by the next `Tx` first.
pub(super) struct Tx {
    writer: OwnedMutexGuard<WriterState>,
    begun: bool,
    finished: bool,
    durability: Durability,
}

impl Tx {
    /// A transaction whose commit is durable.
    pub async fn new(w: &Writer) -> Result<Tx> {
        Tx::with(w, Durability::Durable).await
    }

    pub async fn with(w: &Writer, durability: Durability) -> Result<Tx> {
        let mut writer = w.clone().lock_owned().await;
        writer.settle().await?;
        Ok(Tx {
            writer,
            begun: false,
            finished: false,
            durability,
        })
    }

    /// Runs `b` within the transaction: what each of its statements did.
    pub async fn run(&mut self, b: Batch<'_>) -> Result<Vec<Done>> {
        let begin = !self.begun;
        self.begun = true;
        self.send(b, begin, false, begin).await
    }

    /// Runs `b` (perhaps empty) and commits: what each of its statements did. A transaction of
    /// one statement in one batch is sent without BEGIN and COMMIT (SQLite commits a statement
    /// by itself).
    pub async fn commit(mut self, b: Batch<'_>) -> Result<Vec<Done>> {
        let alone = !self.begun && b.statements <= 1;
        if alone && b.is_empty() {
            self.finished = true;
            return Ok(Vec::new());
        }
        let first = !self.begun;
        let begin = !self.begun && !alone;
        self.begun |= begin;
        let done = self.send(b, begin, !alone, first).await?;
        self.finished = true;
        Ok(done)
    }

    /// Ends the transaction without writing anything.
    pub async fn rollback(mut self) -> Result<()> {
        if self.begun {
            self.writer.conn()?.execute("ROLLBACK").await?;
        }
        self.finished = true;
        Ok(())
    }

    /// Sends `b`, after BEGIN if `begin` and before COMMIT if `commit`; `first` for the
    /// transaction's first statements, before which the connection's `synchronous` is set to the
    /// transaction's durability if it is not already (SQLite refuses to change it inside a
    /// transaction; it applies to the commit).
    async fn send(
        &mut self,
        b: Batch<'_>,
        begin: bool,
        commit: bool,
        first: bool,
    ) -> Result<Vec<Done>> {
        if let Some(bad) = b.bad {
            return Err(sqlx::Error::Protocol(format!(
                "a value for the catalog would not bind: {bad}"
            )));
        }
        let set = first && self.writer.synchronous != Some(self.durability);
        let sql = match (begin, commit) {
            (false, false) => b.sql,
            (true, false) => format!("BEGIN IMMEDIATE;\n{}", b.sql),
            (false, true) => format!("{}COMMIT;", b.sql),
            (true, true) => format!("BEGIN IMMEDIATE;\n{}COMMIT;", b.sql),
        };
        let sql = if set {
            // Unknown until the batch has run: a failure leaves it to be set again.
            self.writer.synchronous = None;
            format!("{}{sql}", self.durability.pragma())
        } else {
            sql
        };
        let mut done = Vec::with_capacity(b.statements + 2);
        let mut rows = Vec::new();
        let mut steps = self
            .writer
            .conn()?
            .fetch_many(sqlx::query_with(&sql, b.args));
        while let Some(step) = steps.try_next().await? {
            match step {
                Either::Left(r) => done.push(Done {
                    rows: std::mem::take(&mut rows),
                    changed: r.rows_affected(),
                }),
                Either::Right(row) => rows.push(row),
            }
        }
        drop(steps);
        if set {
            self.writer.synchronous = Some(self.durability);
        }
        // The PRAGMA, BEGIN and COMMIT answer too; the caller asked about its own statements.
        if commit {
            done.pop();
        }
        let before = usize::from(begin) + usize::from(set);
        done.drain(..before.min(done.len()));
        if done.len() != b.statements {
            return Err(sqlx::Error::Protocol(format!(
                "the catalog ran {} of a batch's {} statements",
                done.len(),
                b.statements
            )));
        }
        Ok(done)
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.begun && !self.finished {
            self.writer.open = true;
            // Rolled back now rather than at the next write: the transaction holds SQLite's
            // write lock. Without a runtime (a test's end), the next `Tx` does it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let w = OwnedMutexGuard::mutex(&self.writer).clone();
                rt.spawn(async move {
                    if let Err(e) = w.lock().await.settle().await {
                        tracing::warn!(error = %e, "rolling back an unfinished catalog transaction failed; the next write retries");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_are_told_from_anonymous_ones() {
        assert!(numbered_parameter("SELECT ?1"));
        assert!(!numbered_parameter("UPDATE t SET a = ? WHERE b = ?"));
    }
}
