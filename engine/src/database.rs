//! The public handles: [`Database`] (blocking) and [`AsyncDatabase`] (for tokio code).
//!
//! Reads never wait for the writer: each takes one consistent cut of the table of unapplied
//! writes ([`crate::overlay`]) and a redb MVCC snapshot ([`crate::read`]). Writes are checked
//! (limits, etag syntax, TTL) on the caller's thread, then queued to the group-commit writer
//! ([`crate::writer`]); the call returns when the batch holding the write is durable with the
//! configured durability ([`crate::durability`]).
//!
//! `Database` blocks the calling thread. In async code use [`AsyncDatabase`] (from
//! [`Database::into_async`]): its writes wait on the queue without blocking a runtime worker,
//! and its reads run on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use flume::{Receiver, Sender};

use crate::clock::Clock;
use crate::codec::Codec;
use crate::command::{BulkResults, Command};
use crate::durability::Sink;
use crate::error::Error;
use crate::etag::Etag;
use crate::metrics::WriterCounters;
use crate::options::{Limits, Options};
use crate::overlay::Overlay;
use crate::query::index::IndexDef;
use crate::query::{Query, QueryPage};
use crate::read::{self, Cut, KeyspaceStats, Record, RecordRef, ScanPage};
use crate::request::{CheckedOp, DeleteRequest, ImportRecord, Operation, SetRequest};
use crate::snapshot::SnapshotStats;
use crate::writer::Writer;

/// Records visited per rewrite batch.
const REWRITE_BATCH: usize = 1000;

/// Counters describing the writer's work since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Write transactions committed (each one fsync in `Immediate` mode).
    pub batches: u64,
    /// Requests received by the writer (a bulk or transaction counts once).
    pub requests: u64,
    /// Most requests group-committed in one transaction.
    pub largest_batch: u64,
    /// Expired records deleted by sweeps.
    pub swept: u64,
}

/// An open Roost database. Cheap to clone; all clones share one file and one writer.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once closed.
    db: RwLock<Option<Arc<redb::Database>>>,
    commands: Sender<Command>,
    limits: Limits,
    sweep_batch: usize,
    clock: Arc<dyn Clock>,
    indexes: Arc<Vec<IndexDef>>,
    codec: Arc<Codec>,
    overlay: Arc<Overlay>,
    pause: Arc<crate::catchup::Pause>,
    counters: Arc<WriterCounters>,
    gate: Arc<Mutex<()>>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    sweeper: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// A queued write and where its answer will arrive.
struct Submission<T> {
    command: Command,
    reply: Receiver<Result<T, Error>>,
}

impl<T> Submission<T> {
    fn new(make: impl FnOnce(Sender<Result<T, Error>>) -> Command) -> Submission<T> {
        let (tx, reply) = flume::bounded(1);
        Submission {
            command: make(tx),
            reply,
        }
    }

    fn wait(self, commands: &Sender<Command>) -> Result<T, Error> {
        commands.send(self.command).map_err(|_| Error::Closed)?;
        self.reply.recv().map_err(|_| Error::Closed)?
    }

    async fn wait_async(self, commands: &Sender<Command>) -> Result<T, Error> {
        commands
            .send_async(self.command)
            .await
            .map_err(|_| Error::Closed)?;
        self.reply.recv_async().await.map_err(|_| Error::Closed)?
    }
}

/// A bulk request split into the items refused up front and those sent to the writer.
struct BulkPlan {
    refused: Vec<Option<Error>>,
    submission: Option<Submission<BulkResults>>,
}

impl BulkPlan {
    fn new(checked: Vec<Result<CheckedOp, Error>>) -> BulkPlan {
        let mut refused = Vec::with_capacity(checked.len());
        let mut ops = Vec::with_capacity(checked.len());
        for item in checked {
            match item {
                Ok(op) => {
                    refused.push(None);
                    ops.push(op);
                }
                Err(err) => refused.push(Some(err)),
            }
        }
        let submission = (!ops.is_empty()).then(|| Submission::new(|tx| Command::Bulk(ops, tx)));
        BulkPlan {
            refused,
            submission,
        }
    }

    /// Puts the writer's per-item results back between the refused items, in request order.
    fn merge(
        refused: Vec<Option<Error>>,
        applied: Vec<Result<Option<Etag>, Error>>,
    ) -> Result<Vec<Result<Option<Etag>, Error>>, Error> {
        let mut applied = applied.into_iter();
        refused
            .into_iter()
            .map(|slot| match slot {
                Some(err) => Ok(Err(err)),
                None => applied
                    .next()
                    .ok_or_else(|| Error::Storage("bulk result missing an item".into())),
            })
            .collect()
    }
}

fn expect_etag(result: Result<Option<Etag>, Error>) -> Result<Etag, Error> {
    result?.ok_or_else(|| Error::Storage("set returned no etag".into()))
}

impl Database {
    /// Opens (or creates) the database described by `options` and starts its writer and
    /// expiry sweeper threads.
    pub fn open(options: Options) -> Result<Database, Error> {
        let counters = Arc::new(WriterCounters::default());
        let opened = crate::open::open(&options, &counters.written_back)?;
        let indexes = Arc::new(opened.indexes);
        let codec = Arc::new(opened.codec);
        let db = Arc::new(opened.db);
        let (commands, queue) = flume::bounded(options.write_queue_capacity);
        let gate = Arc::new(Mutex::new(()));
        let overlay = Arc::new(Overlay::new(options.max_unapplied_bytes));
        let pause = Arc::new(crate::catchup::Pause::default());
        let sink = Sink::new(
            &options, opened.wal, &db, &overlay, &indexes, &codec, &counters, &pause,
        )?;
        let writer = Writer {
            db: Arc::clone(&db),
            commands: queue,
            sink,
            overlay: Arc::clone(&overlay),
            clock: Arc::clone(&options.clock),
            last_etag: opened.last_etag,
            max_batch_requests: options.max_batch_requests,
            counters: Arc::clone(&counters),
            gate: Arc::clone(&gate),
            poisoned: None,
            indexes: Arc::clone(&indexes),
            codec: Arc::clone(&codec),
        };
        let writer = std::thread::Builder::new()
            .name("roost-writer".into())
            .spawn(move || writer.run())
            .map_err(|err| Error::Storage(format!("cannot start the writer thread: {err}")))?;
        let inner = Inner {
            path: options.path.clone(),
            db: RwLock::new(Some(db)),
            commands,
            limits: options.limits,
            sweep_batch: options.sweep_batch,
            clock: options.clock,
            indexes,
            codec,
            overlay,
            pause,
            counters,
            gate,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
            sweeper: Mutex::new(None),
        };
        let database = Database {
            inner: Arc::new(inner),
        };
        if let Some(interval) = options.sweep_interval {
            database.start_sweeper(interval)?;
        }
        tracing::debug!(path = %options.path.display(), durability = ?options.durability, "database open");
        Ok(database)
    }

    fn start_sweeper(&self, interval: Duration) -> Result<(), Error> {
        let (stop, stopped) = flume::bounded::<()>(0);
        let commands = self.inner.commands.clone();
        let batch = self.inner.sweep_batch;
        let handle = std::thread::Builder::new()
            .name("roost-sweeper".into())
            .spawn(move || sweep_loop(commands, stopped, interval, batch))
            .map_err(|err| Error::Storage(format!("cannot start the sweeper thread: {err}")))?;
        *lock(&self.inner.sweeper) = Some((stop, handle));
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            batches: c.batches.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            swept: c.swept.load(Ordering::Relaxed),
        }
    }

    /// The writer's histograms: group-commit batch sizes, commit and checkpoint times, and
    /// the overlay of writes not yet applied to the main file.
    pub fn writer_metrics(&self) -> crate::metrics::WriterMetrics {
        let c = &self.inner.counters;
        crate::metrics::WriterMetrics {
            batch_size: c.batch_size.snapshot(),
            commit_seconds: c.commit_time.snapshot(),
            checkpoint_seconds: c.checkpoint_time.snapshot(),
            apply_seconds: c.apply_time.snapshot(),
            room_wait_seconds: c.room_wait.snapshot(),
            hold_back_seconds: c.hold_back.snapshot(),
            written_back_bytes: c.written_back.load(std::sync::atomic::Ordering::Relaxed),
            unapplied_bytes: self.inner.overlay.bytes(),
            unapplied_limit_bytes: self.inner.overlay.limit(),
        }
    }

    /// The files this database consists of now: the main file, the write-ahead log's segments
    /// and its spare segments (for sizes and removal; never open them while the database is
    /// open).
    pub fn files(&self) -> Vec<PathBuf> {
        database_files(&self.inner.path)
    }

    fn cut(&self) -> Result<Cut, Error> {
        Cut::take(&*self.redb()?, &self.inner.overlay)
    }

    /// A handle whose methods are `async` and never block a tokio worker.
    pub fn into_async(self) -> AsyncDatabase {
        AsyncDatabase { db: self }
    }

    fn redb(&self) -> Result<Arc<redb::Database>, Error> {
        self.inner
            .db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::Closed)
    }

    /// The live record under `key`, or `None` if it is missing or expired.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Record>, Error> {
        let key = key.as_ref();
        crate::request::check_key(key, &self.inner.limits)?;
        read::read_one(
            &*self.redb()?,
            &self.inner.overlay,
            &self.inner.codec,
            key,
            self.inner.clock.now_unix_ms(),
        )
    }

    /// One result per key, in request order, all from one snapshot; `None` for missing or
    /// expired keys.
    pub fn bulk_get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Record>>, Error> {
        let mut records = Vec::with_capacity(keys.len());
        self.bulk_get_each(keys, |_, record| {
            records.push(record.map(|r| r.to_record()));
        })?;
        Ok(records)
    }

    /// Calls `each` with every key and its live record (`None` for missing or expired keys),
    /// in request order, all from one snapshot, as [`Database::bulk_get`] reads them. The
    /// record is borrowed for the call: a caller that encodes it somewhere copies its value
    /// once, there.
    pub fn bulk_get_each<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        mut each: impl FnMut(&[u8], Option<RecordRef<'_>>),
    ) -> Result<(), Error> {
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        self.bulk_visit(&keys, &mut each)
    }

    /// [`Database::bulk_get_each`] of byte slices. Not generic, so the read path is compiled
    /// once, in this crate, whatever key type and visitor callers use: the same machine code
    /// in every program that uses the engine.
    fn bulk_visit(
        &self,
        keys: &[&[u8]],
        each: &mut dyn FnMut(&[u8], Option<RecordRef<'_>>),
    ) -> Result<(), Error> {
        self.check_bulk_len(keys.len())?;
        for key in keys {
            crate::request::check_key(key, &self.inner.limits)?;
        }
        read::visit_many(
            &*self.redb()?,
            &self.inner.overlay,
            &self.inner.codec,
            keys,
            self.inner.clock.now_unix_ms(),
            each,
        )
    }

    /// Runs a query over the JSON records from one snapshot and returns one page (see
    /// `docs/query.md`). Records whose value is not JSON, and expired records, never appear.
    pub fn query(&self, query: &Query) -> Result<QueryPage, Error> {
        let cut = self.cut()?;
        crate::query::plan::execute(
            &cut,
            &self.inner.indexes,
            &self.inner.codec,
            query,
            self.inner.clock.now_unix_ms(),
        )
    }

    /// Live records whose key starts with `prefix`, in key order, after the key `after` (the
    /// `next` of the previous page), at most `limit` per page (0 = no limit). One snapshot.
    pub fn scan(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage, Error> {
        read::scan(
            &self.cut()?,
            &self.inner.codec,
            prefix.as_ref(),
            after,
            limit,
            self.inner.clock.now_unix_ms(),
        )
    }

    /// Record, expired-pending and index-entry counts (expired-pending counts the due part of
    /// the expiry index, so its cost is proportional to what awaits the sweeper).
    pub fn keyspace_stats(&self) -> Result<KeyspaceStats, Error> {
        read::keyspace_stats(&self.cut()?, self.inner.clock.now_unix_ms())
    }

    /// Writes a consistent snapshot of the keyspace to a new file at `path` while readers and
    /// writers keep going: one read transaction copied as stored (values stay compressed and
    /// encrypted), durable when this returns. Open it like the original (same keys) or put it
    /// in place of the original's file to restore it.
    pub fn snapshot_to(&self, path: impl AsRef<Path>) -> Result<SnapshotStats, Error> {
        crate::snapshot::snapshot_to(
            &self.cut()?,
            &self.inner.indexes,
            &self.inner.codec,
            path.as_ref(),
        )
    }

    /// The dot paths that have a secondary index.
    pub fn indexed_paths(&self) -> Vec<String> {
        self.inner.indexes.iter().map(|d| d.path.clone()).collect()
    }

    /// Writes one record and returns its new etag.
    pub fn set(&self, request: SetRequest) -> Result<Etag, Error> {
        expect_etag(
            self.prepare_single(request.into())?
                .wait(&self.inner.commands),
        )
    }

    /// Deletes one record (see [`DeleteRequest`] for the rules).
    pub fn delete(&self, request: DeleteRequest) -> Result<(), Error> {
        self.prepare_single(request.into())?
            .wait(&self.inner.commands)
            .map(|_| ())
    }

    /// Writes each record independently: one result per request, in order; the failures do
    /// not stop the others. The outer error means the whole call failed (e.g. closed).
    pub fn bulk_set(&self, requests: Vec<SetRequest>) -> Result<Vec<Result<Etag, Error>>, Error> {
        let plan = self.prepare_bulk(requests.into_iter().map(Operation::Set).collect())?;
        let applied = match plan.submission {
            Some(submission) => submission.wait(&self.inner.commands)?,
            None => Vec::new(),
        };
        Ok(BulkPlan::merge(plan.refused, applied)?
            .into_iter()
            .map(expect_etag)
            .collect())
    }

    /// Deletes each key independently; one result per request, in order.
    pub fn bulk_delete(
        &self,
        requests: Vec<DeleteRequest>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let plan = self.prepare_bulk(requests.into_iter().map(Operation::Delete).collect())?;
        let applied = match plan.submission {
            Some(submission) => submission.wait(&self.inner.commands)?,
            None => Vec::new(),
        };
        Ok(BulkPlan::merge(plan.refused, applied)?
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect())
    }

    /// Applies `operations` in order, all or nothing; later operations see earlier ones. On
    /// failure nothing is applied and the error is [`Error::Transaction`] with the index of
    /// the failing operation. Returns each operation's new etag (`None` for deletes).
    pub fn transact(&self, operations: Vec<Operation>) -> Result<Vec<Option<Etag>>, Error> {
        match self.prepare_transaction(operations)? {
            Some(submission) => submission.wait(&self.inner.commands),
            None => Ok(Vec::new()),
        }
    }

    /// Re-encodes every record whose encoding differs from the current settings (after a key
    /// rotation, or after turning compression or encryption on or off): values, etags,
    /// expiries and content types are unchanged. Runs in batches through the writer, so the
    /// database stays available. Returns how many records were rewritten.
    pub fn rewrite_all(&self) -> Result<usize, Error> {
        let mut after: Option<Vec<u8>> = None;
        let mut total = 0;
        loop {
            let cursor = after.take();
            let (count, next) = Submission::new(|tx| Command::Rewrite(cursor, REWRITE_BATCH, tx))
                .wait(&self.inner.commands)?;
            total += count;
            match next {
                Some(key) => after = Some(key),
                None => return Ok(total),
            }
        }
    }

    /// Writes records exactly as exported — same etags, expiries and content types —
    /// replacing what is stored under their keys; the etag sequence moves above every imported
    /// etag, so later writes never reuse one. Used by `roost import` and restores.
    pub fn import(&self, records: Vec<ImportRecord>) -> Result<usize, Error> {
        let limits = &self.inner.limits;
        for record in &records {
            crate::request::check_key(&record.key, limits)?;
            if record.value.len() > limits.max_value_bytes {
                return Err(Error::InvalidArgument(format!(
                    "an imported value is {} bytes, above the limit of {} bytes",
                    record.value.len(),
                    limits.max_value_bytes
                )));
            }
            if record
                .content_type
                .as_ref()
                .is_some_and(|ct| ct.len() > Limits::MAX_CONTENT_TYPE_BYTES)
            {
                return Err(Error::InvalidArgument(
                    "an imported content type is too long".into(),
                ));
            }
        }
        Submission::new(|tx| Command::Import(records, tx)).wait(&self.inner.commands)
    }

    /// Deletes up to one sweep batch of expired records now; returns how many.
    pub fn sweep_expired(&self) -> Result<usize, Error> {
        let batch = self.inner.sweep_batch;
        Submission::new(|tx| Command::Sweep(batch, tx)).wait(&self.inner.commands)
    }

    /// Makes every write acknowledged so far durable in the main file: with `Eventual`
    /// durability a flush; with the write-ahead log (where acknowledged writes are durable
    /// already) catch-up applies everything and checkpoints, so the main file alone holds it.
    pub fn sync(&self) -> Result<(), Error> {
        Submission::new(Command::Sync).wait(&self.inner.commands)
    }

    /// Finishes queued writes, makes everything durable, marks the file cleanly closed and
    /// releases it. Every clone of this handle is closed too. Idempotent.
    pub fn close(&self) -> Result<(), Error> {
        self.inner.close()
    }

    fn check_bulk_len(&self, len: usize) -> Result<(), Error> {
        let max = self.inner.limits.max_bulk_items;
        if max > 0 && len > max {
            return Err(Error::InvalidArgument(format!(
                "{len} items in one bulk request, above the limit of {max}"
            )));
        }
        Ok(())
    }

    fn prepare_single(&self, op: Operation) -> Result<Submission<Option<Etag>>, Error> {
        let op = op.check(&self.inner.limits)?;
        Ok(Submission::new(|tx| Command::Single(op, tx)))
    }

    fn prepare_bulk(&self, ops: Vec<Operation>) -> Result<BulkPlan, Error> {
        self.check_bulk_len(ops.len())?;
        let limits = &self.inner.limits;
        Ok(BulkPlan::new(
            ops.into_iter().map(|op| op.check(limits)).collect(),
        ))
    }

    fn prepare_transaction(
        &self,
        operations: Vec<Operation>,
    ) -> Result<Option<Submission<Vec<Option<Etag>>>>, Error> {
        let max = self.inner.limits.max_transaction_ops;
        if max > 0 && operations.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} operations in one transaction, above the limit of {max}",
                operations.len()
            )));
        }
        if operations.is_empty() {
            return Ok(None);
        }
        let limits = &self.inner.limits;
        let ops = operations
            .into_iter()
            .enumerate()
            .map(|(index, op)| {
                op.check(limits).map_err(|err| Error::Transaction {
                    index,
                    source: Box::new(err),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Submission::new(|tx| Command::Transaction(ops, tx))))
    }

    /// Holds the writer before its next batch until the guard is dropped, so requests sent
    /// meanwhile are committed together. For tests of group commit.
    #[doc(hidden)]
    pub fn hold_writer(&self) -> MutexGuard<'_, ()> {
        lock(&self.inner.gate)
    }

    /// Holds catch-up (with the write-ahead log) until [`Database::resume_catchup`], so
    /// acknowledged writes stay in the overlay. For tests of the read paths over unapplied
    /// writes; `close` resumes it.
    #[doc(hidden)]
    pub fn pause_catchup(&self) {
        self.inner.pause.set(true);
    }

    #[doc(hidden)]
    pub fn resume_catchup(&self) {
        self.inner.pause.set(false);
    }

    /// Requests waiting in the write queue. For tests of group commit.
    #[doc(hidden)]
    pub fn queued_writes(&self) -> usize {
        self.inner.commands.len()
    }
}

impl Inner {
    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some((stop, handle)) = lock(&self.sweeper).take() {
            drop(stop);
            let _ = handle.join();
        }
        self.pause.set(false);
        let result = Submission::new(Command::Shutdown).wait(&self.commands);
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
        self.overlay.end_reads();
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(path = %self.path.display(), error = %err, "closing the database failed");
        }
    }
}

/// The files of the database at `path` that exist now: the main file, the write-ahead log's
/// segments, and the spare segments it keeps for reuse (`<file>-wal.spare.<n>`, holding no
/// batch a replay reads).
pub fn database_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files.extend(crate::wal::log_files(path));
    files.extend(crate::wal::spare_files(path));
    files
}

/// The bytes of write-ahead-log records beside the database at `path`: at most what a replay
/// on open would read (segment files can be larger, since reused segments keep their size).
pub fn log_record_bytes(path: &Path) -> Result<u64, Error> {
    crate::wal::record_bytes(path).map_err(|err| {
        Error::Storage(format!(
            "cannot read the write-ahead log of {}: {err}",
            path.display()
        ))
    })
}

/// The write-ahead log's segment files of the database at `path` that exist now, oldest first:
/// `<file>-wal.<first batch, 20 digits>` (and `<file>-wal`, the single log of older versions).
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    crate::wal::log_files(path)
}

/// Deletes the write-ahead log of the database at `path`, spare segments included (when its
/// main file is replaced by a snapshot while the database is closed).
pub fn remove_log_files(path: &Path) -> Result<(), Error> {
    crate::wal::remove_log_files(path).map_err(|err| {
        Error::Storage(format!(
            "cannot remove the write-ahead log of {}: {err}",
            path.display()
        ))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn sweep_loop(commands: Sender<Command>, stop: Receiver<()>, interval: Duration, batch: usize) {
    loop {
        match stop.recv_timeout(interval) {
            Err(flume::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        loop {
            match Submission::new(|tx| Command::Sweep(batch, tx)).wait(&commands) {
                Ok(n) if n == batch => continue,
                Ok(_) => break,
                Err(Error::Closed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "expiry sweep failed");
                    break;
                }
            }
        }
    }
}

/// The async face of a [`Database`]: the same operations, as futures that never stall the
/// tokio runtime. Requires a tokio runtime: writes wait on the writer's queue; point reads run
/// inside `block_in_place` on a multi-thread runtime (other tasks move off the worker first);
/// on a current-thread runtime a get runs inline and a bulk get on the blocking pool; queries
/// and scans run on the blocking pool.
#[derive(Clone, Debug)]
pub struct AsyncDatabase {
    db: Database,
}

impl AsyncDatabase {
    /// The blocking handle (e.g. for use inside `spawn_blocking`).
    pub fn blocking(&self) -> &Database {
        &self.db
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|err| Error::Storage(format!("read task failed: {err}")))?
    }

    /// Point reads (microseconds from the overlay or redb's cache): on a multi-thread runtime
    /// they run on the calling worker inside `block_in_place`, which first hands the worker's
    /// other tasks to another thread. On a current-thread runtime (`roost serve`'s transport
    /// threads) a single-key read runs inline, like any other short step of a task: on the
    /// blocking pool a served get spent more instructions on the hand-off than on the lookup
    /// (`BENCHMARKS.md`, "Instructions per served call"); a read that has to go to disk holds
    /// the thread for that long. A bulk read (`inline: false`) is a hundred lookups: there it
    /// still goes to the blocking pool, where it runs beside the thread's other calls.
    async fn point_read<T: Send + 'static>(
        &self,
        inline: bool,
        f: impl FnOnce(&Database) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| f(&self.db))
            }
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) if inline => f(&self.db),
            _ => self.read(f).await,
        }
    }

    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Record>, Error> {
        let key = key.into();
        self.point_read(true, move |db| db.get(key)).await
    }

    pub async fn bulk_get(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Record>>, Error> {
        self.point_read(false, move |db| db.bulk_get(&keys)).await
    }

    /// [`Database::bulk_get_each`], visiting into `state`, which it gives back: `keys` is any
    /// owner of a slice of keys (a `Vec`, an `Arc<[K]>`, …).
    pub async fn bulk_get_each<K, L, S, F>(
        &self,
        keys: L,
        state: S,
        mut each: F,
    ) -> Result<S, Error>
    where
        K: AsRef<[u8]>,
        L: AsRef<[K]> + Send + 'static,
        S: Send + 'static,
        F: FnMut(&mut S, &[u8], Option<RecordRef<'_>>) + Send + 'static,
    {
        self.point_read(false, move |db| {
            let mut state = state;
            db.bulk_get_each(keys.as_ref(), |key, record| each(&mut state, key, record))?;
            Ok(state)
        })
        .await
    }

    pub async fn query(&self, query: Query) -> Result<QueryPage, Error> {
        self.read(move |db| db.query(&query)).await
    }

    pub async fn set(&self, request: SetRequest) -> Result<Etag, Error> {
        let submission = self.db.prepare_single(request.into())?;
        expect_etag(submission.wait_async(&self.db.inner.commands).await)
    }

    pub async fn delete(&self, request: DeleteRequest) -> Result<(), Error> {
        let submission = self.db.prepare_single(request.into())?;
        submission
            .wait_async(&self.db.inner.commands)
            .await
            .map(|_| ())
    }

    pub async fn bulk_set(
        &self,
        requests: Vec<SetRequest>,
    ) -> Result<Vec<Result<Etag, Error>>, Error> {
        let plan = self
            .db
            .prepare_bulk(requests.into_iter().map(Operation::Set).collect())?;
        let applied = match plan.submission {
            Some(submission) => submission.wait_async(&self.db.inner.commands).await?,
            None => Vec::new(),
        };
        Ok(BulkPlan::merge(plan.refused, applied)?
            .into_iter()
            .map(expect_etag)
            .collect())
    }

    pub async fn bulk_delete(
        &self,
        requests: Vec<DeleteRequest>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let plan = self
            .db
            .prepare_bulk(requests.into_iter().map(Operation::Delete).collect())?;
        let applied = match plan.submission {
            Some(submission) => submission.wait_async(&self.db.inner.commands).await?,
            None => Vec::new(),
        };
        Ok(BulkPlan::merge(plan.refused, applied)?
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect())
    }

    pub async fn transact(&self, operations: Vec<Operation>) -> Result<Vec<Option<Etag>>, Error> {
        match self.db.prepare_transaction(operations)? {
            Some(submission) => submission.wait_async(&self.db.inner.commands).await,
            None => Ok(Vec::new()),
        }
    }

    pub async fn sync(&self) -> Result<(), Error> {
        Submission::new(Command::Sync)
            .wait_async(&self.db.inner.commands)
            .await
    }

    /// Closes the database (see [`Database::close`]) on the blocking pool.
    pub async fn close(&self) -> Result<(), Error> {
        self.read(|db| db.close()).await
    }
}
