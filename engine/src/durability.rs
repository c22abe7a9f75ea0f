//! The durability seam: how a batch's write transaction becomes durable.
//!
//! The group-commit writer hands every batch to [`Committer::commit`] and asks it, while idle,
//! whether a deferred flush is due ([`Committer::flush_deadline`], [`Committer::flush`]).
//! Everything about fsync lives here, so a write-ahead log can later be put in front of redb
//! by changing this module alone.
//!
//! - `Immediate` on a file: each batch's final records are appended to the write-ahead log
//!   ([`crate::wal`]) and fdatasync'ed, then the batch commits to redb with
//!   `Durability::None` (no fsync; readers see it from here), then it is acknowledged. A
//!   checkpoint — an empty `Immediate` redb commit, which makes every earlier commit durable
//!   in the main file — runs when the log reaches `Options::checkpoint_log_bytes` (128 MiB by
//!   default); once writes pause for [`CHECKPOINT_QUIET`] at least one checkpoint interval
//!   (`Options::checkpoint_interval`) after the first un-checkpointed batch; on `sync`; and at
//!   close. The log is emptied after it. Open replays what the log holds beyond the
//!   checkpointed sequence.
//! - `Immediate` on a custom storage backend (no file to put a log beside): each batch commits
//!   with redb `Durability::Immediate` (one fsync) and is acknowledged after that returns.
//! - `Eventual { max_delay }`: each batch commits with `Durability::None` (no fsync) and is
//!   acknowledged at once; the first such commit starts a timer, and when `max_delay` has
//!   passed an empty `Immediate` commit makes everything before it durable (while the writer
//!   waits for requests, or right after the batch that finds the deadline passed). redb
//!   commits are atomic either way, so a crash loses a suffix of whole batches, never part of
//!   one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::WriteTransaction;

use crate::error::Error;
use crate::options::Durability;
use crate::wal::{Wal, WalOp};
use crate::writer::WriterCounters;

/// With `Immediate` durability, how long no write may arrive before a due idle checkpoint
/// runs. Clients that keep the writer busy with gaps shorter than this (64 socket clients
/// leave gaps far below a millisecond) would otherwise meet a checkpoint — which holds every
/// write for 0.2–0.6 s on a 100 000-record keyspace — once per checkpoint interval.
pub(crate) const CHECKPOINT_QUIET: Duration = Duration::from_millis(50);

pub(crate) struct Committer {
    durability: Durability,
    /// When the oldest commit not yet durable in the main file was made.
    unflushed_since: Option<Instant>,
    /// The write-ahead log (immediate durability on a file) and the last sequence logged.
    wal: Option<(Wal, u64)>,
    checkpoint_interval: Duration,
    checkpoint_log_bytes: u64,
    /// Where checkpoint times are recorded.
    counters: Arc<WriterCounters>,
}

impl Committer {
    /// `wal` is the opened log and the sequence it continues from; `None` for a custom
    /// storage backend or eventual durability.
    pub fn new(
        durability: Durability,
        wal: Option<(Wal, u64)>,
        checkpoint_interval: Duration,
        checkpoint_log_bytes: u64,
        counters: Arc<WriterCounters>,
    ) -> Committer {
        let wal = match durability {
            Durability::Immediate => wal,
            Durability::Eventual { .. } => None,
        };
        Committer {
            durability,
            unflushed_since: None,
            wal,
            checkpoint_interval,
            checkpoint_log_bytes,
            counters,
        }
    }

    /// Whether batches must hand their final records to [`Committer::commit`].
    pub fn logging(&self) -> bool {
        self.wal.is_some()
    }

    /// Commits one batch whose final records are `ops` (empty unless [`Committer::logging`])
    /// and whose etag sequence ends at `last_etag`. When this returns `Ok`, its requests may
    /// be acknowledged.
    pub fn commit(
        &mut self,
        db: &redb::Database,
        mut txn: WriteTransaction,
        ops: &[WalOp],
        last_etag: u64,
    ) -> Result<(), Error> {
        if let Some((wal, seq)) = &mut self.wal {
            let next = *seq + 1;
            crate::storage::store_wal_seq(&txn, next)?;
            // On disk in the log before redb makes it visible, so nothing a reader sees can
            // be lost by a crash.
            wal.append(next, last_etag, ops)
                .map_err(|e| Error::Storage(format!("write-ahead log append failed: {e}")))?;
            *seq = next;
            txn.set_durability(redb::Durability::None)?;
            txn.commit()?;
            self.unflushed_since.get_or_insert_with(Instant::now);
            if wal.len() >= self.checkpoint_log_bytes {
                self.flush(db)?;
            }
            return Ok(());
        }
        match self.durability {
            Durability::Immediate => {
                txn.set_durability(redb::Durability::Immediate)?;
                txn.commit()?;
            }
            Durability::Eventual { .. } => {
                txn.set_durability(redb::Durability::None)?;
                txn.commit()?;
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

    /// How long the queue must stay empty before a due flush runs. An `Immediate` checkpoint
    /// only bounds replay time, so it waits for writes to pause ([`CHECKPOINT_QUIET`]) and,
    /// under sustained writes, is left to the log size; an `Eventual` flush is owed to the
    /// loss window and runs as soon as it is due.
    pub fn quiet_before_flush(&self) -> Duration {
        match self.durability {
            Durability::Immediate => CHECKPOINT_QUIET,
            Durability::Eventual { .. } => Duration::ZERO,
        }
    }

    /// When the writer must wake up to flush, if anything is waiting to become durable.
    pub fn flush_deadline(&self) -> Option<Instant> {
        match self.durability {
            Durability::Eventual { max_delay } => self.unflushed_since.map(|t| t + max_delay),
            Durability::Immediate => self.unflushed_since.map(|t| t + self.checkpoint_interval),
        }
    }

    /// Makes every earlier commit durable in the main file (a no-op when nothing is pending)
    /// and, with a log, empties it.
    pub fn flush(&mut self, db: &redb::Database) -> Result<(), Error> {
        if self.unflushed_since.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let log_bytes = self.wal.as_ref().map_or(0, |(wal, _)| wal.len());
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        if let Some((wal, _)) = &mut self.wal {
            wal.reset()
                .map_err(|e| Error::Storage(format!("emptying the write-ahead log failed: {e}")))?;
        }
        self.unflushed_since = None;
        let elapsed = started.elapsed();
        self.counters.checkpoint_time.observe_duration(elapsed);
        tracing::debug!(
            log_bytes,
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "checkpoint"
        );
        Ok(())
    }

    /// How long the writer may sleep waiting for requests before a flush is due.
    pub fn time_to_flush(&self) -> Option<Duration> {
        self.flush_deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(committer: &mut Committer, db: &redb::Database) {
        let txn = db.begin_write().unwrap();
        committer.commit(db, txn, &[], 0).unwrap();
    }

    /// A writer whose queue is never empty never waits on it, so the loss window must be kept
    /// by the commit that finds it over.
    #[test]
    fn an_eventual_commit_after_the_loss_window_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db.redb")).unwrap();
        let counters = Arc::new(WriterCounters::default());
        let max_delay = Duration::from_millis(20);
        let mut committer = Committer::new(
            Durability::Eventual { max_delay },
            None,
            Duration::from_secs(1),
            crate::DEFAULT_CHECKPOINT_LOG_BYTES,
            Arc::clone(&counters),
        );
        commit(&mut committer, &db);
        std::thread::sleep(max_delay + Duration::from_millis(10));
        commit(&mut committer, &db);
        assert!(counters.checkpoint_time.snapshot().count >= 1, "no flush");
        assert!(
            committer.flush_deadline().is_none(),
            "the flush left a pending deadline"
        );
        assert_eq!(committer.quiet_before_flush(), Duration::ZERO);
    }
}
