//! Durability: how a planned batch becomes durable, and when it may be acknowledged. The
//! decision to use the write-ahead log is made once, at open (`Options::logs`), and picks the
//! [`Sink`]:
//!
//! - [`Sink::Logged`] (`Immediate` durability on a file, the default): the batch's final
//!   records are appended to the log ([`crate::wal`]) and fdatasync'ed, put in the overlay
//!   ([`crate::overlay`]) where every reader sees them, and acknowledged. Catch-up
//!   ([`crate::catchup`]) applies them to redb in the background and checkpoints; the writer
//!   never waits for either, except for room in the overlay when it is full.
//! - [`Sink::Direct`] with `Immediate` (a custom storage backend, or the log turned off): the
//!   writer applies the batch in one redb transaction committed with `Durability::Immediate`
//!   (one fsync) and acknowledges after that returns.
//! - [`Sink::Direct`] with `Eventual { max_delay }`: the batch commits with
//!   `Durability::None` (no fsync) and is acknowledged at once; the first such commit starts
//!   a timer, and when `max_delay` has passed an empty `Immediate` commit makes everything
//!   before it durable (while the writer waits for requests, or right after the batch that
//!   finds the deadline passed). redb commits are atomic either way, so a crash loses a suffix
//!   of whole batches, never part of one.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flume::Sender;

use crate::apply::Applier;
use crate::catchup::{CatchUp, Message, Pause, Poison};
use crate::codec::Codec;
use crate::command::Reply;
use crate::error::Error;
use crate::meta;
use crate::metrics::WriterCounters;
use crate::options::{CrashAt, CrashPoint, Durability, Options};
use crate::overlay::{Batch, Overlay, Planned};
use crate::query::index::IndexDef;
use crate::wal::{self, Wal};

/// A step of the write path slower than this is logged at debug level.
pub(crate) const SLOW_STEP: Duration = Duration::from_millis(20);

pub(crate) enum Sink {
    Direct(Direct),
    Logged(Logged),
}

impl Sink {
    /// Picks the sink for `options`; `wal` is the opened log and the sequence it continues
    /// from (present exactly when the options log).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        options: &Options,
        wal: Option<(Wal, u64)>,
        db: &Arc<redb::Database>,
        overlay: &Arc<Overlay>,
        indexes: &Arc<Vec<IndexDef>>,
        codec: &Arc<Codec>,
        counters: &Arc<WriterCounters>,
        pause: &Arc<Pause>,
    ) -> Result<Sink, Error> {
        let Some((wal, seq)) = wal else {
            return Ok(Sink::Direct(Direct {
                overlay: Arc::clone(overlay),
                durability: options.durability,
                unflushed_since: None,
                counters: Arc::clone(counters),
            }));
        };
        let (messages, inbox) = flume::unbounded();
        let poison: Poison = Arc::default();
        let catchup = CatchUp {
            db: Arc::clone(db),
            messages: inbox,
            overlay: Arc::clone(overlay),
            indexes: Arc::clone(indexes),
            codec: Arc::clone(codec),
            segments: wal.segments(),
            counters: Arc::clone(counters),
            poison: Arc::clone(&poison),
            checkpoint_interval: options.checkpoint_interval,
            checkpoint_log_bytes: options.checkpoint_log_bytes,
            applied_seq: seq,
            durable_seq: seq,
            since_checkpoint: 0,
            unflushed_since: None,
            pause: Arc::clone(pause),
            crash_at: options.crash_at.clone(),
            held_back_seen: (0, 0.0),
            written_back_seen: 0,
            step: None,
        };
        let handle = std::thread::Builder::new()
            .name("roost-catchup".into())
            .spawn(move || catchup.run())
            .map_err(|err| Error::Storage(format!("cannot start the catch-up thread: {err}")))?;
        Ok(Sink::Logged(Logged {
            db_path: options.path.clone(),
            wal,
            seq,
            overlay: Arc::clone(overlay),
            catchup: Some(messages),
            handle: Some(handle),
            poison,
            counters: Arc::clone(counters),
            crash_at: options.crash_at.clone(),
        }))
    }

    /// Holds the next batch back while the overlay is over half its bound, and waits, if it
    /// is full, until catch-up makes room (a no-op without the log).
    pub fn wait_for_room(&self) {
        if let Sink::Logged(logged) = self {
            let held = logged.overlay.wait_for_room(|| logged.poisoned().is_some());
            if !held.delayed.is_zero() {
                logged.counters.hold_back.observe_duration(held.delayed);
            }
            let waited = held.waited;
            if !waited.is_zero() {
                logged.counters.room_wait.observe_duration(waited);
                tracing::debug!(
                    waited_ms = waited.as_secs_f64() * 1e3,
                    unapplied_bytes = logged.overlay.bytes(),
                    "a write batch waited for room among the unapplied writes"
                );
            }
        }
    }

    /// Why catch-up stopped, if it did.
    pub fn poisoned(&self) -> Option<String> {
        match self {
            Sink::Logged(logged) => logged.poisoned(),
            Sink::Direct(_) => None,
        }
    }

    /// Makes one planned batch durable (or logged); when this returns `Ok`, its requests may
    /// be acknowledged.
    pub fn commit(
        &mut self,
        db: &redb::Database,
        indexes: &[IndexDef],
        codec: &Codec,
        planned: Vec<Planned>,
        last_etag: u64,
    ) -> Result<(), Error> {
        match self {
            Sink::Direct(direct) => direct.commit(db, indexes, codec, &planned, last_etag),
            Sink::Logged(logged) => logged.commit(planned, last_etag),
        }
    }

    /// Answers `replies` once every write acknowledged before them is durable in the main
    /// file (with the log: after catch-up has applied and checkpointed them).
    pub fn sync(&mut self, db: &redb::Database, replies: Vec<Reply<()>>) -> Result<(), Error> {
        match self {
            Sink::Direct(direct) => {
                direct.flush(db)?;
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
                Ok(())
            }
            Sink::Logged(logged) => {
                for reply in replies {
                    logged.send(Message::Checkpoint(reply))?;
                }
                Ok(())
            }
        }
    }

    /// How long the writer may sleep waiting for requests before a deferred flush is due.
    pub fn time_to_flush(&self) -> Option<Duration> {
        match self {
            Sink::Direct(direct) => direct.time_to_flush(),
            Sink::Logged(_) => None,
        }
    }

    /// Runs a due deferred flush (eventual durability).
    pub fn flush(&mut self, db: &redb::Database) -> Result<(), Error> {
        match self {
            Sink::Direct(direct) => direct.flush(db),
            Sink::Logged(_) => Ok(()),
        }
    }

    /// Everything durable in the main file, the file marked clean, the log gone: the close.
    pub fn finish(&mut self, db: &redb::Database, last_etag: u64) -> Result<(), Error> {
        match self {
            Sink::Direct(direct) => {
                direct.flush(db)?;
                meta::mark_clean(db, last_etag)
            }
            Sink::Logged(logged) => {
                logged.stop_catchup()?;
                meta::mark_clean(db, last_etag)?;
                wal::remove_log_files(&logged.db_path).map_err(|e| {
                    Error::Storage(format!(
                        "removing the checkpointed write-ahead log failed: {e}"
                    ))
                })
            }
        }
    }

    /// Stops catch-up without a final checkpoint when the writer gives up (poisoned).
    pub fn abandon(&mut self) {
        if let Sink::Logged(logged) = self {
            logged.join_catchup();
        }
    }
}

/// Without the log: the writer applies and commits to redb itself.
pub(crate) struct Direct {
    /// Empty without a log; told of each commit, for point reads' shared table.
    overlay: Arc<Overlay>,
    durability: Durability,
    /// When the oldest commit not yet durable in the main file was made.
    unflushed_since: Option<Instant>,
    counters: Arc<WriterCounters>,
}

impl Direct {
    fn commit(
        &mut self,
        db: &redb::Database,
        indexes: &[IndexDef],
        codec: &Codec,
        planned: &[Planned],
        last_etag: u64,
    ) -> Result<(), Error> {
        let mut txn = db.begin_write()?;
        let applied = (|| {
            let mut applier = Applier::new(&txn, indexes, codec)?;
            for op in planned {
                applier.apply(op)?;
            }
            drop(applier);
            meta::store_etag_sequence(&txn, last_etag)
        })();
        if let Err(error) = applied {
            let _ = txn.abort();
            return Err(error);
        }
        match self.durability {
            Durability::Immediate => {
                txn.set_durability(redb::Durability::Immediate)?;
                txn.commit()?;
                self.overlay.data_committed();
            }
            Durability::Eventual { .. } => {
                txn.set_durability(redb::Durability::None)?;
                txn.commit()?;
                self.overlay.data_committed();
                self.unflushed_since.get_or_insert_with(Instant::now);
                // The loss window is a promise: a writer that never finds its queue empty
                // still flushes once the oldest unflushed batch is `max_delay` old.
                if self
                    .flush_deadline()
                    .is_some_and(|due| Instant::now() >= due)
                {
                    self.flush(db)?;
                }
            }
        }
        Ok(())
    }

    fn flush_deadline(&self) -> Option<Instant> {
        match self.durability {
            Durability::Eventual { max_delay } => self.unflushed_since.map(|t| t + max_delay),
            Durability::Immediate => None,
        }
    }

    fn time_to_flush(&self) -> Option<Duration> {
        self.flush_deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Makes every earlier commit durable in the main file (a no-op when nothing is pending).
    fn flush(&mut self, db: &redb::Database) -> Result<(), Error> {
        if self.unflushed_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        self.unflushed_since = None;
        self.counters
            .checkpoint_time
            .observe_duration(started.elapsed());
        Ok(())
    }
}

/// With the log: the writer logs, shows the batch in the overlay and hands it to catch-up.
pub(crate) struct Logged {
    db_path: PathBuf,
    wal: Wal,
    /// The last log sequence used.
    seq: u64,
    overlay: Arc<Overlay>,
    catchup: Option<Sender<Message>>,
    handle: Option<JoinHandle<()>>,
    poison: Poison,
    counters: Arc<WriterCounters>,
    crash_at: Option<Arc<CrashAt>>,
}

impl Logged {
    fn poisoned(&self) -> Option<String> {
        self.poison
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn send(&self, message: Message) -> Result<(), Error> {
        self.catchup
            .as_ref()
            .ok_or(Error::Closed)?
            .send(message)
            .map_err(|_| Error::Storage("the catch-up thread stopped".into()))
    }

    fn commit(&mut self, planned: Vec<Planned>, last_etag: u64) -> Result<(), Error> {
        let next = self.seq + 1;
        // On disk in the log before any reader can see it, so nothing a reader sees can be
        // lost by a crash.
        let started = Instant::now();
        self.wal
            .append(next, last_etag, planned.iter().map(|p| &p.op))
            .map_err(|e| Error::Storage(format!("write-ahead log append failed: {e}")))?;
        let took = started.elapsed();
        if took > SLOW_STEP {
            tracing::debug!(
                elapsed_ms = took.as_secs_f64() * 1e3,
                "slow write-ahead log append"
            );
        }
        CrashAt::reached(&self.crash_at, CrashPoint::AfterLogAppend);
        self.seq = next;
        let batch = Arc::new(Batch {
            seq: next,
            last_etag,
            ops: planned,
        });
        self.overlay.insert(&batch);
        self.send(Message::Batch(batch))
    }

    fn stop_catchup(&mut self) -> Result<(), Error> {
        let (tx, rx) = flume::bounded(1);
        self.send(Message::Finish(tx))?;
        let result = rx
            .recv()
            .unwrap_or_else(|_| Err(Error::Storage("the catch-up thread stopped".into())));
        self.join_catchup();
        result
    }

    /// Closes catch-up's queue (it stops once the queue is drained) and waits for the thread.
    fn join_catchup(&mut self) {
        self.catchup.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // Without a finish (a poisoned writer), catch-up stops when its queue closes.
        self.join_catchup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose queue is never empty never waits on it, so the loss window must be kept
    /// by the commit that finds it over.
    #[test]
    fn an_eventual_commit_after_the_loss_window_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db.redb")).unwrap();
        let counters = Arc::new(WriterCounters::default());
        let max_delay = Duration::from_millis(20);
        let mut direct = Direct {
            overlay: Arc::new(Overlay::new(1)),
            durability: Durability::Eventual { max_delay },
            unflushed_since: None,
            counters: Arc::clone(&counters),
        };
        {
            let txn = db.begin_write().unwrap();
            txn.open_table(crate::tables::DATA).unwrap();
            txn.open_table(crate::tables::EXPIRY).unwrap();
            txn.open_table(crate::tables::INDEX).unwrap();
            txn.open_table(crate::tables::META).unwrap();
            txn.commit().unwrap();
        }
        let codec =
            crate::codec::prepare(&db, &crate::codec::CodecOptions::default(), 1 << 20).unwrap();
        direct.commit(&db, &[], &codec, &[], 1).unwrap();
        assert!(direct.flush_deadline().is_some());
        std::thread::sleep(max_delay + Duration::from_millis(10));
        direct.commit(&db, &[], &codec, &[], 2).unwrap();
        assert!(counters.checkpoint_time.snapshot().count >= 1, "no flush");
        assert!(
            direct.flush_deadline().is_none(),
            "the flush left a pending deadline"
        );
    }
}
