//! Applying final states to redb: catch-up's steps, the direct sink's commits, log replay at
//! open and the overlay's part of a snapshot all write through [`Applier`], which keeps a
//! record's expiry-index and secondary-index entries in step with it.

use redb::WriteTransaction;

use crate::codec::Codec;
use crate::error::Error;
use crate::overlay::Planned;
use crate::query::index::{self, IndexDef};
use crate::record;
use crate::tables::{DATA, EXPIRY, INDEX, expiry_key};
use crate::wal::WalOp;

/// The last of each key's states among `states` (given oldest first), in key order.
///
/// Applying these through one [`Applier`] leaves redb as applying every state in order would:
/// [`Applier`] derives what it replaces (the old record's index entries and expiry) from the
/// record redb holds, so a key's intermediate states change nothing its last one does not
/// overwrite, and different keys touch disjoint rows (every index and expiry entry ends with
/// its record's key). Key order makes consecutive inserts share the B-tree's upper pages,
/// which the CPU's caches then still hold: at 1 000 000 keys 6 % more 10-op transactions per
/// second in four of four interleaved pairs, and a replay of scattered keys in half the time
/// (`BENCHMARKS.md`).
pub(crate) fn last_per_key<'a, T>(
    states: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> &[u8],
) -> Vec<&'a T> {
    let mut states: Vec<&T> = states.collect();
    // Stable: a key's states keep their order, so the last of each run is its newest.
    states.sort_by(|a, b| key(a).cmp(key(b)));
    let mut last: Vec<&T> = Vec::with_capacity(states.len());
    for state in states {
        match last.last_mut() {
            Some(previous) if key(previous) == key(state) => *previous = state,
            _ => last.push(state),
        }
    }
    last
}

/// Applies final states (planned by the writer, or replayed from the log) inside one write
/// transaction, keeping the expiry and secondary indexes in step.
pub(crate) struct Applier<'txn> {
    txn: &'txn WriteTransaction,
    data: redb::Table<'txn, &'static [u8], &'static [u8]>,
    /// The expiry and secondary-index tables are opened when first needed: most writes
    /// neither carry nor replace an expiry, and most instances declare no index (opening a
    /// table costs about 250 instructions a set, counted per catch-up group).
    expiry: Option<redb::Table<'txn, &'static [u8], ()>>,
    index: Option<redb::Table<'txn, &'static [u8], ()>>,
    indexes: &'txn [IndexDef],
    codec: &'txn Codec,
}

impl<'txn> Applier<'txn> {
    pub fn new(
        txn: &'txn WriteTransaction,
        indexes: &'txn [IndexDef],
        codec: &'txn Codec,
    ) -> Result<Self, Error> {
        Ok(Applier {
            txn,
            data: txn.open_table(DATA)?,
            expiry: None,
            index: None,
            indexes,
            codec,
        })
    }

    /// Writes one planned final state (its index entries computed by the planner).
    pub fn apply(&mut self, planned: &Planned) -> Result<(), Error> {
        match &planned.op {
            WalOp::Put { key, record } => self.flush(key, Some(record), &planned.index_entries),
            WalOp::Remove { key } => self.flush(key, None, &[]),
        }
    }

    /// Re-applies one logged final state (write-ahead-log replay): its index entries are
    /// computed from the record, exactly as the original write computed them.
    pub fn replay(&mut self, op: &WalOp) -> Result<(), Error> {
        match op {
            WalOp::Put { key, record } => {
                let entries = if self.indexes.is_empty() {
                    Vec::new()
                } else {
                    let view = record::decode(record)?;
                    let plain = self.codec.open(key, &view)?;
                    index::entries(self.indexes, key, &plain)
                };
                self.flush(key, Some(record), &entries)
            }
            WalOp::Remove { key } => self.flush(key, None, &[]),
        }
    }

    /// Writes one key's final state (`None` = removed) and keeps its expiry-index and
    /// secondary-index entries in step.
    fn flush(
        &mut self,
        key: &[u8],
        record: Option<&[u8]>,
        new_entries: &[Vec<u8>],
    ) -> Result<(), Error> {
        let new_expiry = match record {
            Some(bytes) => record::decode(bytes)?.expires_at_ms,
            None => None,
        };
        let old = match record {
            Some(bytes) => self.data.insert(key, bytes)?,
            None => self.data.remove(key)?,
        };
        let (old_expiry, old_entries) = match old {
            Some(guard) => {
                let view = record::decode(guard.value())?;
                let entries = if self.indexes.is_empty() {
                    Vec::new()
                } else {
                    match self.codec.open(key, &view) {
                        Ok(plain) => index::entries(self.indexes, key, &plain),
                        Err(err) => {
                            // The old value cannot be read (its key is no longer configured,
                            // or the record is damaged): its index entries stay behind.
                            // Queries re-check every candidate against its record.
                            tracing::warn!(error = %err, "index entries of an unreadable record left in place");
                            Vec::new()
                        }
                    }
                };
                (view.expires_at_ms, entries)
            }
            None => (None, Vec::new()),
        };
        if old_entries != new_entries {
            let index = open_lazily(self.txn, &mut self.index, INDEX)?;
            for entry in old_entries.iter().filter(|e| !new_entries.contains(e)) {
                index.remove(entry.as_slice())?;
            }
            for entry in new_entries.iter().filter(|e| !old_entries.contains(e)) {
                index.insert(entry.as_slice(), ())?;
            }
        }
        if old_expiry != new_expiry {
            let expiry = open_lazily(self.txn, &mut self.expiry, EXPIRY)?;
            if let Some(at) = old_expiry {
                expiry.remove(expiry_key(at, key).as_slice())?;
            }
            if let Some(at) = new_expiry {
                expiry.insert(expiry_key(at, key).as_slice(), ())?;
            }
        }
        Ok(())
    }
}

/// The table in `slot`, opened in `txn` on first use.
fn open_lazily<'txn, 's>(
    txn: &'txn WriteTransaction,
    slot: &'s mut Option<redb::Table<'txn, &'static [u8], ()>>,
    definition: redb::TableDefinition<'static, &'static [u8], ()>,
) -> Result<&'s mut redb::Table<'txn, &'static [u8], ()>, Error> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition)?);
    }
    Ok(slot.as_mut().expect("just opened"))
}

#[cfg(test)]
mod tests {
    use super::last_per_key;

    #[test]
    fn last_per_key_keeps_each_keys_newest_state_in_key_order() {
        let states = [("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5), ("b", 6)];
        let last: Vec<(&str, i32)> = last_per_key(states.iter(), |s| s.0.as_bytes())
            .into_iter()
            .copied()
            .collect();
        assert_eq!(last, vec![("a", 5), ("b", 6), ("c", 4)]);
        let none: [(&str, i32); 0] = [];
        assert!(last_per_key(none.iter(), |s| s.0.as_bytes()).is_empty());
    }
}
