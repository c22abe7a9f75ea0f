//! Catch-up: the thread that brings redb up to the write-ahead log.
//!
//! With the log, the writer acknowledges a batch once the log holds it and the overlay
//! ([`crate::overlay`]) shows it to readers; it then hands the batch here. Catch-up applies
//! batches to redb in bounded steps (several batches per redb commit, each commit without
//! fsync), records in the same commit the last log sequence it holds, and only then removes
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
/// Most log bytes applied per redb commit: bounds one step's time and memory.
const STEP_BYTES: u64 = 8 * 1024 * 1024;
/// Most batches applied per redb commit.
const STEP_BATCHES: usize = 512;

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
                None => match self.unflushed_since {
                    None => match self.messages.recv() {
                        Ok(message) => message,
                        // The writer went away without finishing (a panic): leave the log
                        // to replay.
                        Err(_) => return,
                    },
                    Some(since) => {
                        let due = (since + self.checkpoint_interval)
                            .saturating_duration_since(Instant::now());
                        match self.messages.recv_timeout(due.max(CHECKPOINT_QUIET)) {
                            Ok(message) => message,
                            Err(RecvTimeoutError::Timeout) => {
                                self.checkpoint_or_poison();
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                },
            };
            self.pause.wait();
            match first {
                Message::Batch(batch) => {
                    let mut step = vec![batch];
                    let mut bytes = step[0].logged_len();
                    while step.len() < STEP_BATCHES && bytes < STEP_BYTES {
                        match self.messages.try_recv() {
                            Ok(Message::Batch(batch)) => {
                                bytes += batch.logged_len();
                                step.push(batch);
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
                    if let Err(error) = self.apply(&step, bytes) {
                        self.fail(&error);
                        continue;
                    }
                    if self.since_checkpoint >= self.checkpoint_log_bytes {
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

    /// Applies `step` to redb in one commit without fsync, then removes what it applied from
    /// the overlay.
    fn apply(&mut self, step: &[Arc<Batch>], bytes: u64) -> Result<(), Error> {
        let started = Instant::now();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let last = step.last().expect("a step holds a batch");
        let last_etag = step.iter().map(|b| b.last_etag).max().unwrap_or(0);
        {
            let mut applier = Applier::new(&txn, &self.indexes, &self.codec)?;
            let ops = step.iter().flat_map(|batch| batch.ops.iter());
            for planned in last_per_key(ops, |planned| planned.op.key()) {
                applier.apply(planned)?;
            }
        }
        meta::store_wal_seq(&txn, last.seq)?;
        meta::store_etag_sequence(&txn, last_etag)?;
        txn.commit()?;
        CrashAt::reached(&self.crash_at, CrashPoint::AfterApply);
        // Visible to readers from here: the overlay's entries may go.
        self.overlay.remove_applied(step);
        self.applied_seq = last.seq;
        self.since_checkpoint += bytes;
        self.unflushed_since.get_or_insert_with(Instant::now);
        self.counters.apply_time.observe_duration(started.elapsed());
        Ok(())
    }

    /// Makes every applied batch durable in the main file, then deletes the log segments it
    /// covers.
    fn checkpoint(&mut self) -> Result<(), Error> {
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
