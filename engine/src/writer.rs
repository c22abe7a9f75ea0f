//! Group commit: the one thread that writes.
//!
//! Every write (single, bulk, transaction, expiry sweep) is a [`Command`] on one bounded
//! queue. The writer blocks for the first command, drains whatever else is queued (up to
//! `max_batch_requests`), applies them in arrival order inside **one** redb write transaction,
//! commits it once through the [`Committer`] and then answers every waiter. While one batch
//! commits, the next fills up, so throughput grows with concurrency instead of being pinned at
//! one fsync per write. There is no timer: a lone writer is never delayed.
//!
//! Each request is checked against the state the requests before it in the batch left, and a
//! request whose condition fails writes nothing (see [`Applier::apply_atomic`]), so it never
//! affects its neighbours. A *storage* error, by contrast, makes the transaction unusable: the
//! batch is abandoned, every request in it gets the error, and the writer poisons itself —
//! later writes are refused until the database is reopened, rather than guessing what reached
//! the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flume::{Receiver, RecvTimeoutError, Sender};

use crate::clock::Clock;
use crate::codec::Codec;
use crate::durability::Committer;
use crate::error::Error;
use crate::etag::Etag;
use crate::query::index::IndexDef;
use crate::request::CheckedOp;
use crate::storage::{self, Applier, ApplyError};
use crate::wal::WalOp;

pub(crate) type Reply<T> = Sender<Result<T, Error>>;
/// Per-item results of a bulk request.
pub(crate) type BulkResults = Vec<Result<Option<Etag>, Error>>;

pub(crate) enum Command {
    /// One set or delete.
    Single(CheckedOp, Reply<Option<Etag>>),
    /// Independent operations; each succeeds or fails alone.
    Bulk(Vec<CheckedOp>, Reply<BulkResults>),
    /// Operations applied in order, all or nothing.
    Transaction(Vec<CheckedOp>, Reply<Vec<Option<Etag>>>),
    /// Re-encode records after a key (up to a count) under the current codec settings.
    Rewrite(Option<Vec<u8>>, usize, Reply<(usize, Option<Vec<u8>>)>),
    /// Write records exactly as exported.
    Import(Vec<crate::storage::ImportRecord>, Reply<usize>),
    /// Delete up to this many expired records.
    Sweep(usize, Reply<usize>),
    /// Make every acknowledged write durable before answering.
    Sync(Reply<()>),
    /// Finish the queue, flush, mark the file clean and stop.
    Shutdown(Reply<()>),
}

/// Counters of the writer's work, readable at any time.
#[derive(Debug)]
pub(crate) struct WriterCounters {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub largest_batch: AtomicU64,
    pub swept: AtomicU64,
    pub batch_size: crate::metrics::Histogram,
    pub commit_time: crate::metrics::Histogram,
    pub checkpoint_time: crate::metrics::Histogram,
}

impl Default for WriterCounters {
    fn default() -> Self {
        WriterCounters {
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            swept: AtomicU64::new(0),
            batch_size: crate::metrics::Histogram::new(crate::metrics::BATCH_BOUNDS, 1.0),
            commit_time: crate::metrics::Histogram::latency(),
            checkpoint_time: crate::metrics::Histogram::latency(),
        }
    }
}

pub(crate) struct Writer {
    pub db: Arc<redb::Database>,
    pub commands: Receiver<Command>,
    pub committer: Committer,
    pub clock: Arc<dyn Clock>,
    pub last_etag: u64,
    pub max_batch_requests: usize,
    pub counters: Arc<WriterCounters>,
    /// Held while a batch is assembled and applied; lets tests line requests up in one batch.
    pub gate: Arc<Mutex<()>>,
    pub poisoned: Option<String>,
    pub indexes: Arc<Vec<IndexDef>>,
    pub codec: Arc<Codec>,
}

/// A computed answer, sent only after the batch is durable (or abandoned).
enum Answer {
    Single(Reply<Option<Etag>>, Result<Option<Etag>, Error>),
    Bulk(
        Reply<Vec<Result<Option<Etag>, Error>>>,
        Vec<Result<Option<Etag>, Error>>,
    ),
    Transaction(Reply<Vec<Option<Etag>>>, Result<Vec<Option<Etag>>, Error>),
    /// A count: expired records swept, or records imported.
    Count(Reply<usize>, usize),
    Rewrite(Reply<(usize, Option<Vec<u8>>)>, (usize, Option<Vec<u8>>)),
    Sync(Reply<()>),
    Shutdown(Reply<()>),
}

impl Answer {
    /// Sends the computed answer. Waiters that went away are ignored.
    fn send(self) {
        match self {
            Answer::Single(reply, result) => drop(reply.send(result)),
            Answer::Bulk(reply, results) => drop(reply.send(Ok(results))),
            Answer::Transaction(reply, result) => drop(reply.send(result)),
            Answer::Count(reply, n) => drop(reply.send(Ok(n))),
            Answer::Rewrite(reply, r) => drop(reply.send(Ok(r))),
            Answer::Sync(reply) | Answer::Shutdown(reply) => drop(reply.send(Ok(()))),
        }
    }

    /// Sends `error` instead of the computed answer (the batch did not become durable).
    fn fail(self, error: &Error) {
        let err = || match error {
            Error::Poisoned(reason) => Error::Poisoned(reason.clone()),
            other => Error::CommitFailed(other.to_string()),
        };
        match self {
            Answer::Single(reply, _) => drop(reply.send(Err(err()))),
            Answer::Bulk(reply, _) => drop(reply.send(Err(err()))),
            Answer::Transaction(reply, _) => drop(reply.send(Err(err()))),
            Answer::Count(reply, _) => drop(reply.send(Err(err()))),
            Answer::Rewrite(reply, _) => drop(reply.send(Err(err()))),
            Answer::Sync(reply) | Answer::Shutdown(reply) => drop(reply.send(Err(err()))),
        }
    }
}

impl Writer {
    pub fn run(mut self) {
        let mut shutdown: Vec<Reply<()>> = Vec::new();
        loop {
            let first = match self.committer.time_to_flush() {
                None => match self.commands.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
                Some(wait) => match self
                    .commands
                    .recv_timeout(wait.max(self.committer.quiet_before_flush()))
                {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush_or_poison();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let gate = Arc::clone(&self.gate);
            let _held = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut batch = vec![first];
            while batch.len() < self.max_batch_requests {
                match self.commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|c| matches!(c, Command::Shutdown(_)));
            let answers = match catch_unwind(AssertUnwindSafe(|| self.run_batch(batch))) {
                Ok(answers) => answers,
                Err(_) => {
                    // The batch's waiters were dropped with it and see the database as closed.
                    self.poisoned = Some("internal error while applying a batch".into());
                    Vec::new()
                }
            };
            for answer in answers {
                match answer {
                    Answer::Shutdown(reply) => shutdown.push(reply),
                    other => other.send(),
                }
            }
            if stop {
                break;
            }
        }
        // Nothing more is accepted: later senders see the queue closed.
        let leftover: Vec<Command> = self.commands.drain().collect();
        drop(leftover);
        let result = self.finish();
        for reply in shutdown {
            let _ = reply.send(result.as_ref().map(|_| ()).map_err(clone_error));
        }
    }

    /// Flushes pending writes and marks the file clean (only if nothing failed).
    fn finish(&mut self) -> Result<(), Error> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned(reason.clone()));
        }
        self.committer.flush(&self.db)?;
        storage::mark_clean(&self.db, self.last_etag)
    }

    fn flush_or_poison(&mut self) {
        if let Err(err) = self.committer.flush(&self.db) {
            tracing::error!(error = %err, "deferred flush failed; refusing further writes");
            self.poisoned = Some(err.to_string());
        }
    }

    fn run_batch(&mut self, batch: Vec<Command>) -> Vec<Answer> {
        let requests = batch.len() as u64;
        self.counters
            .requests
            .fetch_add(requests, Ordering::Relaxed);
        self.counters
            .largest_batch
            .fetch_max(requests, Ordering::Relaxed);
        if let Some(reason) = self.poisoned.clone() {
            return fail_all(batch.into_iter().map(pending), &Error::Poisoned(reason));
        }
        match self.apply_and_commit(batch) {
            Ok(answers) => answers,
            Err((error, answers)) => {
                tracing::error!(error = %error, "write batch failed; refusing further writes until reopen");
                self.poisoned = Some(error.to_string());
                fail_all(answers.into_iter(), &error)
            }
        }
    }

    /// Applies every command of the batch in one transaction and commits it.
    #[allow(clippy::type_complexity)]
    fn apply_and_commit(
        &mut self,
        batch: Vec<Command>,
    ) -> Result<Vec<Answer>, (Error, Vec<Answer>)> {
        let requests = batch.len() as u64;
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(err) => return Err((Error::from(err), batch.into_iter().map(pending).collect())),
        };
        let mut answers = Vec::with_capacity(batch.len());
        let mut wrote = false;
        let mut sync_requested = false;
        let logging = self.committer.logging();
        let outcome: Result<(u64, Vec<WalOp>), Error> = (|| {
            let mut applier = Applier::new(
                &txn,
                &self.indexes,
                &self.codec,
                self.clock.now_unix_ms(),
                self.last_etag,
            )?;
            if logging {
                applier.log = Some(Vec::new());
            }
            let mut iter = batch.into_iter();
            while let Some(command) = iter.next() {
                let answer = match command {
                    Command::Single(op, reply) => {
                        let result = match applier.apply_atomic(std::slice::from_ref(&op)) {
                            Ok(mut etags) => {
                                wrote = true;
                                Ok(etags.pop().flatten())
                            }
                            Err(ApplyError::Request { error, .. }) => Err(error),
                            Err(ApplyError::Storage(error)) => {
                                answers.push(Answer::Single(reply, Err(Error::Closed)));
                                answers.extend(iter.map(pending));
                                return Err(error);
                            }
                        };
                        Answer::Single(reply, result)
                    }
                    Command::Bulk(ops, reply) => {
                        let mut results = Vec::with_capacity(ops.len());
                        for op in &ops {
                            match applier.apply_atomic(std::slice::from_ref(op)) {
                                Ok(mut etags) => {
                                    wrote = true;
                                    results.push(Ok(etags.pop().flatten()));
                                }
                                Err(ApplyError::Request { error, .. }) => results.push(Err(error)),
                                Err(ApplyError::Storage(error)) => {
                                    answers.push(Answer::Bulk(reply, Vec::new()));
                                    answers.extend(iter.map(pending));
                                    return Err(error);
                                }
                            }
                        }
                        Answer::Bulk(reply, results)
                    }
                    Command::Transaction(ops, reply) => {
                        let result = match applier.apply_atomic(&ops) {
                            Ok(etags) => {
                                wrote = true;
                                Ok(etags)
                            }
                            Err(ApplyError::Request { index, error }) => Err(Error::Transaction {
                                index,
                                source: Box::new(error),
                            }),
                            Err(ApplyError::Storage(error)) => {
                                answers.push(Answer::Transaction(reply, Err(Error::Closed)));
                                answers.extend(iter.map(pending));
                                return Err(error);
                            }
                        };
                        Answer::Transaction(reply, result)
                    }
                    Command::Sweep(limit, reply) => match applier.sweep(limit) {
                        Ok(n) => {
                            wrote |= n > 0;
                            self.counters.swept.fetch_add(n as u64, Ordering::Relaxed);
                            Answer::Count(reply, n)
                        }
                        Err(error) => {
                            answers.push(Answer::Count(reply, 0));
                            answers.extend(iter.map(pending));
                            return Err(error);
                        }
                    },
                    Command::Rewrite(after, limit, reply) => {
                        match applier.rewrite(after.as_deref(), limit) {
                            Ok(result) => {
                                wrote |= result.0 > 0;
                                Answer::Rewrite(reply, result)
                            }
                            Err(error)
                                if error.is_request_error()
                                    || matches!(
                                        error,
                                        Error::EncryptionKey(_) | Error::Integrity { .. }
                                    ) =>
                            {
                                // Nothing was written by this command: report it to its caller.
                                drop(reply.send(Err(error)));
                                continue;
                            }
                            Err(error) => {
                                answers.push(Answer::Rewrite(reply, (0, None)));
                                answers.extend(iter.map(pending));
                                return Err(error);
                            }
                        }
                    }
                    Command::Import(records, reply) => match applier.import(&records) {
                        Ok(n) => {
                            wrote |= n > 0;
                            Answer::Count(reply, n)
                        }
                        Err(error) => {
                            answers.push(Answer::Count(reply, 0));
                            answers.extend(iter.map(pending));
                            return Err(error);
                        }
                    },
                    Command::Sync(reply) => {
                        sync_requested = true;
                        Answer::Sync(reply)
                    }
                    Command::Shutdown(reply) => Answer::Shutdown(reply),
                };
                answers.push(answer);
            }
            Ok((applier.last_etag, applier.log.take().unwrap_or_default()))
        })();
        let (last_etag, ops) = match outcome {
            Ok(done) => done,
            Err(error) => {
                let _ = txn.abort();
                return Err((error, answers));
            }
        };
        if wrote {
            let started = std::time::Instant::now();
            let committed = storage::store_etag_sequence(&txn, last_etag)
                .and_then(|()| self.committer.commit(&self.db, txn, &ops, last_etag));
            self.counters
                .commit_time
                .observe_duration(started.elapsed());
            self.counters.batch_size.observe(requests);
            if let Err(error) = committed {
                return Err((error, answers));
            }
            self.last_etag = last_etag;
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
        } else if let Err(error) = txn.abort() {
            return Err((Error::storage(error), answers));
        }
        if sync_requested && let Err(error) = self.committer.flush(&self.db) {
            return Err((error, answers));
        }
        Ok(answers)
    }
}

/// Answers every request with `error`, keeping only shutdown requests (answered at the end).
fn fail_all(answers: impl Iterator<Item = Answer>, error: &Error) -> Vec<Answer> {
    answers
        .filter_map(|answer| match answer {
            Answer::Shutdown(_) => Some(answer),
            other => {
                other.fail(error);
                None
            }
        })
        .collect()
}

/// The answer slot of a command that was not applied (its result is replaced by an error).
fn pending(command: Command) -> Answer {
    match command {
        Command::Single(_, reply) => Answer::Single(reply, Err(Error::Closed)),
        Command::Bulk(_, reply) => Answer::Bulk(reply, Vec::new()),
        Command::Transaction(_, reply) => Answer::Transaction(reply, Err(Error::Closed)),
        Command::Sweep(_, reply) | Command::Import(_, reply) => Answer::Count(reply, 0),
        Command::Rewrite(_, _, reply) => Answer::Rewrite(reply, (0, None)),
        Command::Sync(reply) => Answer::Sync(reply),
        Command::Shutdown(reply) => Answer::Shutdown(reply),
    }
}

fn clone_error(error: &Error) -> Error {
    match error {
        Error::Poisoned(reason) => Error::Poisoned(reason.clone()),
        Error::Corrupted(detail) => Error::Corrupted(detail.clone()),
        other => Error::Storage(other.to_string()),
    }
}
