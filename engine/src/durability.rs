//! The durability seam: how a batch's write transaction becomes durable.
//!
//! The group-commit writer hands every batch to [`Committer::commit`] and asks it, while idle,
//! whether a deferred flush is due ([`Committer::flush_deadline`], [`Committer::flush`]).
//! Everything about fsync lives here, so a write-ahead log can later be put in front of redb
//! by changing this module alone.
//!
//! - `Immediate`: each batch commits with redb `Durability::Immediate` (one fsync), and its
//!   requests are acknowledged after that returns.
//! - `Eventual { max_delay }`: each batch commits with `Durability::None` (no fsync) and is
//!   acknowledged at once; the first such commit starts a timer, and when `max_delay` has
//!   passed an empty `Immediate` commit makes everything before it durable. redb commits are
//!   atomic either way, so a crash loses a suffix of whole batches, never part of one.

use std::time::{Duration, Instant};

use redb::WriteTransaction;

use crate::error::Error;
use crate::options::Durability;

pub(crate) struct Committer {
    durability: Durability,
    /// When the oldest not-yet-durable commit was made (eventual mode only).
    unflushed_since: Option<Instant>,
}

impl Committer {
    pub fn new(durability: Durability) -> Committer {
        Committer {
            durability,
            unflushed_since: None,
        }
    }

    /// Commits one batch. When this returns `Ok`, its requests may be acknowledged.
    pub fn commit(&mut self, mut txn: WriteTransaction) -> Result<(), Error> {
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
            Durability::Immediate => None,
        }
    }

    /// Makes every earlier commit durable (a no-op when nothing is pending).
    pub fn flush(&mut self, db: &redb::Database) -> Result<(), Error> {
        if self.unflushed_since.is_none() {
            return Ok(());
        }
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        self.unflushed_since = None;
        Ok(())
    }

    /// How long the writer may sleep waiting for requests before a flush is due.
    pub fn time_to_flush(&self) -> Option<Duration> {
        self.flush_deadline()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}
