//! Group commit: the one thread that writes.
//!
//! Every write (single, bulk, transaction, expiry sweep) is a [`Command`] on one bounded
//! queue. The writer blocks for the first command, drains whatever else is queued (up to
//! `max_batch_requests`), plans them in arrival order against the present state of the
//! overlay and redb ([`crate::plan`]), makes the batch durable once through the [`Sink`]
//! (one log append and fdatasync, or one redb commit) and then answers every waiter. While one
//! batch is made durable, the next fills up, so throughput grows with concurrency instead of
//! being pinned at one fsync per write. There is no timer: a lone writer is never delayed.
//!
//! A request whose condition fails plans nothing, so it never affects its neighbours. A
//! *storage* error, by contrast, abandons the batch: every request in it gets the error, and
//! the writer poisons itself — later writes are refused until the database is reopened,
//! rather than guessing what reached the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use flume::{Receiver, RecvTimeoutError};

use crate::clock::Clock;
use crate::codec::Codec;
use crate::command::{Command, Reply};
use crate::durability::Sink;
use crate::error::Error;
use crate::etag::Etag;
use crate::metrics::WriterCounters;
use crate::overlay::Overlay;
use crate::plan::{PlanError, Planner};
use crate::query::index::IndexDef;

pub(crate) struct Writer {
    pub db: Arc<redb::Database>,
    pub commands: Receiver<Command>,
    pub sink: Sink,
    pub overlay: Arc<Overlay>,
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
    /// A sync whose batch failed (answered only with the error).
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
            let first = match self.sink.time_to_flush() {
                None => match self.commands.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
                Some(wait) => match self.commands.recv_timeout(wait) {
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
            // Held back before the batch is drained, so what arrives meanwhile joins it.
            self.sink.wait_for_room();
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

    /// Makes everything durable in the main file and marks it clean (only if nothing failed).
    fn finish(&mut self) -> Result<(), Error> {
        if let Some(reason) = self.poison_reason() {
            self.sink.abandon();
            return Err(Error::Poisoned(reason));
        }
        let result = self.sink.finish(&self.db, self.last_etag);
        if result.is_err() {
            self.sink.abandon();
        }
        result
    }

    fn poison_reason(&mut self) -> Option<String> {
        if self.poisoned.is_none() {
            self.poisoned = self.sink.poisoned();
        }
        self.poisoned.clone()
    }

    fn flush_or_poison(&mut self) {
        if let Err(err) = self.sink.flush(&self.db) {
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
        if let Some(reason) = self.poison_reason() {
            return fail_all(batch.into_iter().map(pending), &Error::Poisoned(reason));
        }
        match self.plan_and_commit(batch) {
            Ok(answers) => answers,
            Err((error, answers)) => {
                tracing::error!(error = %error, "write batch failed; refusing further writes until reopen");
                self.poisoned = Some(error.to_string());
                fail_all(answers.into_iter(), &error)
            }
        }
    }

    /// Plans every command of the batch, then makes the batch durable once.
    #[allow(clippy::type_complexity)]
    fn plan_and_commit(
        &mut self,
        batch: Vec<Command>,
    ) -> Result<Vec<Answer>, (Error, Vec<Answer>)> {
        let requests = batch.len() as u64;
        let started = std::time::Instant::now();
        let mut answers = Vec::with_capacity(batch.len());
        let mut syncs: Vec<Reply<()>> = Vec::new();
        let planned = (|| {
            let mut planner = Planner::new(
                &self.db,
                &self.overlay,
                &self.indexes,
                &self.codec,
                self.clock.now_unix_ms(),
                self.last_etag,
            );
            let mut iter = batch.into_iter();
            while let Some(command) = iter.next() {
                // A storage error abandons the batch: this command's slot and every later
                // one's are answered with it.
                let abandon =
                    |answers: &mut Vec<Answer>, slot: Answer, iter: std::vec::IntoIter<Command>| {
                        answers.push(slot);
                        answers.extend(iter.map(pending));
                    };
                let answer = match command {
                    Command::Single(op, reply) => {
                        match planner.plan_atomic(std::slice::from_ref(&op)) {
                            Ok(mut etags) => Answer::Single(reply, Ok(etags.pop().flatten())),
                            Err(PlanError::Request { error, .. }) => {
                                Answer::Single(reply, Err(error))
                            }
                            Err(PlanError::Storage(error)) => {
                                abandon(
                                    &mut answers,
                                    Answer::Single(reply, Err(Error::Closed)),
                                    iter,
                                );
                                return Err(error);
                            }
                        }
                    }
                    Command::Bulk(ops, reply) => {
                        let mut results = Vec::with_capacity(ops.len());
                        for op in &ops {
                            match planner.plan_atomic(std::slice::from_ref(op)) {
                                Ok(mut etags) => results.push(Ok(etags.pop().flatten())),
                                Err(PlanError::Request { error, .. }) => results.push(Err(error)),
                                Err(PlanError::Storage(error)) => {
                                    abandon(&mut answers, Answer::Bulk(reply, Vec::new()), iter);
                                    return Err(error);
                                }
                            }
                        }
                        Answer::Bulk(reply, results)
                    }
                    Command::Transaction(ops, reply) => match planner.plan_atomic(&ops) {
                        Ok(etags) => Answer::Transaction(reply, Ok(etags)),
                        Err(PlanError::Request { index, error }) => Answer::Transaction(
                            reply,
                            Err(Error::Transaction {
                                index,
                                source: Box::new(error),
                            }),
                        ),
                        Err(PlanError::Storage(error)) => {
                            abandon(
                                &mut answers,
                                Answer::Transaction(reply, Err(Error::Closed)),
                                iter,
                            );
                            return Err(error);
                        }
                    },
                    Command::Sweep(limit, reply) => match planner.sweep(limit) {
                        Ok(n) => {
                            self.counters.swept.fetch_add(n as u64, Ordering::Relaxed);
                            Answer::Count(reply, n)
                        }
                        Err(error) => {
                            abandon(&mut answers, Answer::Count(reply, 0), iter);
                            return Err(error);
                        }
                    },
                    Command::Rewrite(after, limit, reply) => {
                        match planner.rewrite(after.as_deref(), limit) {
                            Ok(result) => Answer::Rewrite(reply, result),
                            Err(error)
                                if error.is_request_error()
                                    || matches!(
                                        error,
                                        Error::EncryptionKey(_) | Error::Integrity { .. }
                                    ) =>
                            {
                                // Nothing was planned by this command: report it to its caller.
                                drop(reply.send(Err(error)));
                                continue;
                            }
                            Err(error) => {
                                abandon(&mut answers, Answer::Rewrite(reply, (0, None)), iter);
                                return Err(error);
                            }
                        }
                    }
                    Command::Import(records, reply) => {
                        Answer::Count(reply, planner.import(&records))
                    }
                    Command::Sync(reply) => {
                        syncs.push(reply);
                        continue;
                    }
                    Command::Shutdown(reply) => Answer::Shutdown(reply),
                };
                answers.push(answer);
            }
            Ok((planner.last_etag, std::mem::take(&mut planner.out)))
        })();
        let took = started.elapsed();
        if took > crate::durability::SLOW_STEP {
            tracing::debug!(
                elapsed_ms = took.as_secs_f64() * 1e3,
                requests,
                "slow batch planning"
            );
        }
        let (last_etag, planned) = match planned {
            Ok(done) => done,
            Err(error) => {
                answers.extend(syncs.into_iter().map(Answer::Sync));
                return Err((error, answers));
            }
        };
        if !planned.is_empty() {
            let started = std::time::Instant::now();
            let committed =
                self.sink
                    .commit(&self.db, &self.indexes, &self.codec, planned, last_etag);
            self.counters
                .commit_time
                .observe_duration(started.elapsed());
            self.counters.batch_size.observe(requests);
            if let Err(error) = committed {
                for reply in syncs {
                    let _ = reply.send(Err(Error::CommitFailed(error.to_string())));
                }
                return Err((error, answers));
            }
            self.last_etag = last_etag;
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
        } else {
            self.last_etag = self.last_etag.max(last_etag);
        }
        if !syncs.is_empty()
            && let Err(error) = self.sink.sync(&self.db, syncs)
        {
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
