//! Catch-up: the thread that brings redb up to the write-ahead log.
//!
//! With the log, the writer acknowledges a batch once the log holds it and the overlay
//! ([`crate::overlay`]) shows it to readers; it then hands the batch here. Catch-up applies
//! batches to redb as they arrive in bounded steps: one redb write transaction left open
//! until it holds [`STEP_BYTES`] of log or has been open [`STEP_LINGER`], committed without
//! fsync. It records in the same commit the last log sequence it holds, and only then removes
//! those entries from the overlay. A checkpoint — one empty durable redb commit, which makes
//! every earlier commit durable in the main file — runs here too: when the log applied since
//! the last one reaches `Options::checkpoint_log_bytes`; once writes pause for
//! [`CHECKPOINT_QUIET`] at least one checkpoint interval after the first unflushed commit; on
//! `sync`; and at close. After it, the log segments whose batches are all at or below the
//! checkpointed sequence are deleted. Writers never wait for a checkpoint: while it runs they
//! keep logging, and the overlay holds what they write (up to `Options::max_unapplied_bytes`,
//! beyond which they wait for room). `docs/design.md` argues the crash cases.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flume::{Receiver, RecvTimeoutError, Sender};

use crate::apply::{Applier, last_per_key};
use crate::codec::Codec;
use crate::command::Reply;
use crate::error::Error;
use crate::meta;
use crate::metrics::WriterCounters;
use crate::options::{CrashAt, CrashPoint};
use crate::overlay::{Batch, Overlay};
use crate::query::index::IndexDef;
use crate::wal::Segments;

/// How long no batch may arrive before a due idle checkpoint runs.
pub(crate) const CHECKPOINT_QUIET: Duration = Duration::from_millis(50);
/// Most log bytes applied in one group (batches received together): when catch-up is behind,
/// bounds one group's time and memory.
const GROUP_BYTES: u64 = 8 * 1024 * 1024;
/// Most batches applied in one group.
const GROUP_BATCHES: usize = 512;
/// A step is committed once it holds this much log (or `GROUP_BATCHES` batches)...
const STEP_BYTES: u64 = 128 * 1024;
/// ...or once its write transaction has been open this long.
const STEP_LINGER: Duration = Duration::from_millis(100);

/// A catch-up step: one redb write transaction, left open while batches keep arriving, so
/// that redb's fixed cost per commit is shared by more of them.
pub(crate) struct Step {
    txn: redb::WriteTransaction,
    batches: Vec<Arc<Batch>>,
    bytes: u64,
    opened: Instant,
    /// Time spent applying its batches so far.
    applying: Duration,
}

impl Step {
    /// Whether to commit it now: it is full, or has waited its time for more.
    fn due(&self) -> bool {
        self.bytes >= STEP_BYTES
            || self.batches.len() >= GROUP_BATCHES
            || self.opened.elapsed() >= STEP_LINGER
    }
}

pub(crate) enum Message {
    Batch(Arc<Batch>),
    /// Apply everything sent before, checkpoint, then answer.
    Checkpoint(Reply<()>),
    /// Apply everything sent before, checkpoint and stop.
    Finish(Sender<Result<(), Error>>),
}

/// Why catch-up stopped applying (a storage error); shared with the writer, which then
/// refuses writes. Acknowledged writes stay in the log and the overlay.
pub(crate) type Poison = Arc<Mutex<Option<String>>>;

pub(crate) struct CatchUp {
    pub db: Arc<redb::Database>,
    pub messages: Receiver<Message>,
    pub overlay: Arc<Overlay>,
    pub indexes: Arc<Vec<IndexDef>>,
    pub codec: Arc<Codec>,
    pub segments: Arc<Segments>,
    pub counters: Arc<WriterCounters>,
    pub poison: Poison,
    pub checkpoint_interval: Duration,
    pub checkpoint_log_bytes: u64,
    /// The last log batch applied to redb, and the last one a checkpoint made durable.
    pub applied_seq: u64,
    pub durable_seq: u64,
    /// Log bytes applied since the last checkpoint.
    pub since_checkpoint: u64,
    /// When the oldest commit not yet durable in the main file was made.
    pub unflushed_since: Option<Instant>,
    pub pause: Arc<Pause>,
    pub crash_at: Option<Arc<CrashAt>>,
    /// The writers' hold-back (batches, seconds) as the last checkpoint's log line saw it.
    pub held_back_seen: (u64, f64),
    /// The main file's paced write-back (bytes) as the last checkpoint's log line saw it.
    pub written_back_seen: u64,
    /// The step whose write transaction is open, if any.
    pub step: Option<Step>,
}

/// Holds catch-up before its next step while set (tests: writes then stay in the overlay).
#[derive(Debug, Default)]
pub(crate) struct Pause {
    paused: Mutex<bool>,
    changed: Condvar,
}

impl Pause {
    pub fn set(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = paused;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        while *paused {
            paused = self.changed.wait(paused).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl CatchUp {
    pub fn run(mut self) {
        let mut pending: Vec<Message> = Vec::new();
        loop {
            let first = match pending.pop() {
                Some(message) => message,
                None => {
                    let wait = match (&self.step, self.unflushed_since) {
                        (Some(step), _) => Some(
                            (step.opened + STEP_LINGER).saturating_duration_since(Instant::now()),
                        ),
                        (None, None) => None,
                        (None, Some(since)) => Some(
                            (since + self.checkpoint_interval)
                                .saturating_duration_since(Instant::now())
                                .max(CHECKPOINT_QUIET),
                        ),
                    };
                    let received = match wait {
                        // The writer went away without finishing (a panic): leave the log
                        // to replay.
                        None => self
                            .messages
                            .recv()
                            .map_err(|_| RecvTimeoutError::Disconnected),
                        Some(wait) => self.messages.recv_timeout(wait),
                    };
                    match received {
                        Ok(message) => message,
                        Err(RecvTimeoutError::Timeout) => {
                            self.pause.wait();
                            if self.step.is_some() {
                                self.commit_step_or_poison();
                            } else {
                                self.checkpoint_or_poison();
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            self.pause.wait();
            match first {
                Message::Batch(batch) => {
                    let mut group = vec![batch];
                    let mut bytes = group[0].logged_len();
                    while group.len() < GROUP_BATCHES && bytes < GROUP_BYTES {
                        match self.messages.try_recv() {
                            Ok(Message::Batch(batch)) => {
                                bytes += batch.logged_len();
                                group.push(batch);
                            }
                            Ok(other) => {
                                pending.push(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if self.poisoned() {
                        continue;
                    }
                    if let Err(error) = self.apply(group, bytes) {
                        self.fail(&error);
                        continue;
                    }
                    if self.step.as_ref().is_some_and(Step::due) {
                        self.commit_step_or_poison();
                    }
                    // The open step's log counts as applied: a checkpoint commits it first.
                    let open = self.step.as_ref().map_or(0, |step| step.bytes);
                    if self.since_checkpoint + open >= self.checkpoint_log_bytes {
                        self.checkpoint_or_poison();
                    }
                }
                Message::Checkpoint(reply) => {
                    let result = self.checked_checkpoint();
                    let _ = reply.send(result);
                }
                Message::Finish(reply) => {
                    let result = self.checked_checkpoint();
                    let _ = reply.send(result);
                    return;
                }
            }
        }
    }

    fn poisoned(&self) -> bool {
        self.poison
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn fail(&self, error: &Error) {
        tracing::error!(error = %error, "applying the write-ahead log to the main file failed; refusing further writes until reopen");
        self.poison
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| error.to_string());
        self.overlay.wake_all();
    }

    fn checked_checkpoint(&mut self) -> Result<(), Error> {
        if let Some(reason) = self
            .poison
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(Error::Poisoned(reason));
        }
        let result = self.checkpoint();
        if let Err(error) = &result {
            self.fail(error);
        }
        result
    }

    /// A checkpoint nobody waits for: a failure poisons (in `checked_checkpoint`).
    fn checkpoint_or_poison(&mut self) {
        let _ = self.checked_checkpoint();
    }

    /// Applies `group` (batches received together) in the open step's write transaction,
    /// opening one when none is open.
    fn apply(&mut self, group: Vec<Arc<Batch>>, bytes: u64) -> Result<(), Error> {
        let started = Instant::now();
        if self.step.is_none() {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::None)?;
            self.step = Some(Step {
                txn,
                batches: Vec::new(),
                bytes: 0,
                opened: started,
                applying: Duration::ZERO,
            });
        }
        let step = self.step.as_mut().expect("a step is open");
        let applied = (|| {
            let mut applier = Applier::new(&step.txn, &self.indexes, &self.codec)?;
            let ops = group.iter().flat_map(|batch| batch.ops.iter());
            for planned in last_per_key(ops, |planned| planned.op.key()) {
                applier.apply(planned)?;
            }
            Ok::<(), Error>(())
        })();
        if let Err(error) = applied {
            // Dropping the transaction aborts it: the step's batches stay in the log and the
            // overlay.
            self.step = None;
            return Err(error);
        }
        step.bytes += bytes;
        step.batches.extend(group);
        step.applying += started.elapsed();
        Ok(())
    }

    /// Commits the open step without fsync, then removes what it applied from the overlay.
    fn commit_step(&mut self) -> Result<(), Error> {
        let Some(step) = self.step.take() else {
            return Ok(());
        };
        let started = Instant::now();
        let Step {
            txn,
            batches,
            bytes,
            applying,
            ..
        } = step;
        let last = batches.last().expect("an open step holds a batch");
        let last_etag = batches.iter().map(|b| b.last_etag).max().unwrap_or(0);
        meta::store_wal_seq(&txn, last.seq)?;
        meta::store_etag_sequence(&txn, last_etag)?;
        txn.commit()?;
        CrashAt::reached(&self.crash_at, CrashPoint::AfterApply);
        // Visible to readers from here: the overlay's entries may go.
        self.overlay.remove_applied(&batches);
        self.applied_seq = last.seq;
        self.since_checkpoint += bytes;
        self.unflushed_since.get_or_insert_with(Instant::now);
        self.counters
            .apply_time
            .observe_duration(applying + started.elapsed());
        Ok(())
    }

    /// A step commit nobody waits for: a failure poisons.
    fn commit_step_or_poison(&mut self) {
        if let Err(error) = self.commit_step() {
            self.fail(&error);
        }
    }

    /// Makes every applied batch durable in the main file, then deletes the log segments it
    /// covers.
    fn checkpoint(&mut self) -> Result<(), Error> {
        self.commit_step()?;
        if self.unflushed_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        CrashAt::reached(&self.crash_at, CrashPoint::BeforeCheckpoint);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        CrashAt::reached(&self.crash_at, CrashPoint::AfterCheckpoint);
        self.durable_seq = self.applied_seq;
        let removed = self
            .segments
            .remove_through(self.durable_seq)
            .map_err(|e| {
                Error::Storage(format!("deleting checkpointed log segments failed: {e}"))
            })?;
        CrashAt::reached(&self.crash_at, CrashPoint::AfterLogTruncate);
        let elapsed = started.elapsed();
        self.counters.checkpoint_time.observe_duration(elapsed);
        let held = self.counters.hold_back.snapshot();
        let (batches, seconds) =
            std::mem::replace(&mut self.held_back_seen, (held.count, held.sum));
        let written_back = self
            .counters
            .written_back
            .load(std::sync::atomic::Ordering::Relaxed);
        let written_back_before = std::mem::replace(&mut self.written_back_seen, written_back);
        tracing::debug!(
            applied_log_bytes = self.since_checkpoint,
            segments_removed = removed,
            unapplied_bytes = self.overlay.bytes(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            held_back_batches = held.count - batches,
            held_back_ms = (held.sum - seconds) * 1e3,
            written_back_bytes = written_back - written_back_before,
            "checkpoint"
        );
        self.since_checkpoint = 0;
        self.unflushed_since = None;
        Ok(())
    }
}
