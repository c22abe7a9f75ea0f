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
//!   in the main file — runs when the log passes [`CHECKPOINT_BYTES`], one checkpoint
//!   interval (`Options::checkpoint_interval`) after the first un-checkpointed batch (while
//!   the writer is idle),
//!   on `sync` and at close; the log is emptied after it. Open replays what the log holds
//!   beyond the checkpointed sequence.
//! - `Immediate` on a custom storage backend (no file to put a log beside): each batch commits
//!   with redb `Durability::Immediate` (one fsync) and is acknowledged after that returns.
//! - `Eventual { max_delay }`: each batch commits with `Durability::None` (no fsync) and is
//!   acknowledged at once; the first such commit starts a timer, and when `max_delay` has
//!   passed an empty `Immediate` commit makes everything before it durable. redb commits are
//!   atomic either way, so a crash loses a suffix of whole batches, never part of one.

use std::time::{Duration, Instant};

use redb::WriteTransaction;

use crate::error::Error;
use crate::options::Durability;
use crate::wal::{Wal, WalOp};

/// Log size that triggers a checkpoint.
pub(crate) const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

pub(crate) struct Committer {
    durability: Durability,
    /// When the oldest commit not yet durable in the main file was made.
    unflushed_since: Option<Instant>,
    /// The write-ahead log (immediate durability on a file) and the last sequence logged.
    wal: Option<(Wal, u64)>,
    checkpoint_interval: Duration,
}

impl Committer {
    /// `wal` is the opened log and the sequence it continues from; `None` for a custom
    /// storage backend or eventual durability.
    pub fn new(
        durability: Durability,
        wal: Option<(Wal, u64)>,
        checkpoint_interval: Duration,
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
            if wal.len() >= CHECKPOINT_BYTES {
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
            }
        }
        Ok(())
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
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        if let Some((wal, _)) = &mut self.wal {
            wal.reset()
                .map_err(|e| Error::Storage(format!("emptying the write-ahead log failed: {e}")))?;
        }
        self.unflushed_since = None;
        Ok(())
    }

    /// How long the writer may sleep waiting for requests before a flush is due.
    pub fn time_to_flush(&self) -> Option<Duration> {
        self.flush_deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}
