//! The table of acknowledged writes that redb does not hold yet.
//!
//! With a write-ahead log, a batch is acknowledged once it is in the log; the writer then puts
//! each key's final state here, and the catch-up thread ([`crate::catchup`]) applies the
//! batches to redb in the background and removes what it applied. Every read consults this
//! table first, so a reader never sees redb's older state of a key written here.
//!
//! Consistency rule: a reader takes the table's state and begins its redb read transaction
//! **under one hold of the table's lock** ([`Overlay::snapshot`]); catch-up removes entries only
//! after the redb commit holding them is visible, and under the write lock. So for any key, the
//! newest acknowledged state is either in the reader's copy of the table or in its redb
//! snapshot, and the pair is one consistent cut: writes of one batch are inserted under one
//! hold, so a reader sees all of a transaction or none of it.
//!
//! The table is a persistent ordered map: a reader's copy costs a reference-count bump, and
//! keeps its version alive while the writer and catch-up go on changing theirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use parking_lot::{RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use redb::ReadableDatabase;

use crate::error::Error;
use crate::tables::{DATA, expiry_key};
use crate::wal::WalOp;

/// One logged batch: every key's final state, in the order written.
#[derive(Debug)]
pub(crate) struct Batch {
    pub seq: u64,
    pub last_etag: u64,
    pub ops: Vec<Planned>,
}

impl Batch {
    /// Bytes of the batch's ops as logged.
    pub fn logged_len(&self) -> u64 {
        self.ops.iter().map(|p| p.op.logged_len()).sum()
    }

    /// What the batch holds in memory until catch-up has applied it (its ops, their index
    /// entries, and the overlay's per-entry overhead), whether or not newer batches replaced
    /// its keys: the overlay's bound counts this.
    fn memory_bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|p| {
                let index: usize = p.index_entries.iter().map(Vec::len).sum();
                p.op.logged_len() + (index + ENTRY_OVERHEAD) as u64
            })
            .sum()
    }
}

/// One key's newest acknowledged state: an op of a batch that catch-up has not applied.
#[derive(Debug)]
pub(crate) struct Entry {
    batch: Arc<Batch>,
    at: usize,
}

impl Entry {
    /// The log batch that wrote it.
    pub fn seq(&self) -> u64 {
        self.batch.seq
    }

    fn planned(&self) -> &Planned {
        &self.batch.ops[self.at]
    }

    /// The sealed record, exactly as redb will store it; `None` = removed.
    pub fn record(&self) -> Option<&[u8]> {
        match &self.planned().op {
            WalOp::Put { record, .. } => Some(record),
            WalOp::Remove { .. } => None,
        }
    }

    /// The record's secondary-index entries (see [`crate::query::index::entries`]).
    pub fn index_entries(&self) -> &[Vec<u8>] {
        &self.planned().index_entries
    }

    /// The record's expiry, if it has one.
    pub fn expires_at(&self) -> Option<u64> {
        self.planned().expires_at
    }
}

/// What an entry costs beyond its bytes (map node share, `Arc`, vectors), for the bound.
const ENTRY_OVERHEAD: usize = 96;

/// One version of the table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layer {
    pub map: imbl::OrdMap<Vec<u8>, Arc<Entry>>,
    /// The index entries of every record in `map`, for indexed queries.
    pub index: imbl::OrdSet<Vec<u8>>,
    /// `expiry_ms (u64 BE) ‖ key` of every record in `map` with an expiry, for the sweeper.
    pub expiry: imbl::OrdSet<Vec<u8>>,
    /// The highest etag sequence any entry carries (or was handed out by a batch here).
    pub last_etag: u64,
    /// The last log batch inserted.
    pub last_seq: u64,
}

impl Layer {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A key's final state as planned by the writer, with its index entries and expiry.
#[derive(Debug)]
pub(crate) struct Planned {
    pub op: WalOp,
    pub index_entries: Vec<Vec<u8>>,
    /// The record's expiry (Unix ms), if it is a record with one.
    pub expires_at: Option<u64>,
}

/// The longest a batch is held back before the table is full (at a fill just below the bound).
///
/// At 10 ms, writers at 1 000 000 keys outran catch-up even at the longest delay: the table sat
/// at 95 % of its bound and a slow checkpoint made batches wait for room (up to 166 ms in a
/// 5-minute run). At 40 ms the delay that matches catch-up's pace comes at a lower fill,
/// leaving room for a checkpoint's pause (`BENCHMARKS.md`).
pub(crate) const MAX_HOLD_BACK: Duration = Duration::from_millis(40);

/// The delay for a table holding `bytes` of `limit`: zero up to half, then linear up to
/// [`MAX_HOLD_BACK`] at the bound.
fn hold_back(bytes: u64, limit: u64) -> Duration {
    let half = limit / 2;
    if bytes <= half {
        return Duration::ZERO;
    }
    let over = (bytes - half).min(limit - half) as u128;
    let span = (limit - half).max(1) as u128;
    Duration::from_nanos((MAX_HOLD_BACK.as_nanos() * over / span) as u64)
}

/// How long a batch was held back: the delay for the fill, and the wait for room at the bound.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeldBack {
    pub delayed: Duration,
    pub waited: Duration,
}

/// Operations removed under one hold of the table's write lock ([`Overlay::remove_applied`]):
/// about 0.3 ms of removals.
const REMOVE_CHUNK: usize = 256;

/// A hold of the table's write lock longer than this is logged at debug level.
const SLOW_HOLD: Duration = Duration::from_millis(2);

/// redb's data table as one read transaction sees it, shared by point reads.
pub(crate) type DataTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The data table of the newest redb commit, opened once and shared by point reads until the
/// next commit that changes the data (beginning a read transaction and opening the table cost
/// a get about 3 900 instructions, more than the lookup itself).
///
/// Rule: whoever commits to redb calls [`ReadCache::invalidate`] after the commit and before
/// anyone learns of it (an acknowledgement, or the overlay's entries being removed). A reader
/// notes the generation before it begins its transaction and caches the table only if no
/// commit invalidated in between, so a table begun before a commit is never cached after it.
#[derive(Default)]
struct ReadCache {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// Commits that changed the data since open.
    generation: u64,
    table: Option<Arc<DataTable>>,
    /// The database is closing: nothing is cached any more (nothing of redb outlives close
    /// in a cached transaction).
    ended: bool,
}

impl ReadCache {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self, db: &redb::Database) -> Result<Arc<DataTable>, Error> {
        let generation = {
            let slot = self.slot();
            if let Some(table) = &slot.table {
                return Ok(Arc::clone(table));
            }
            slot.generation
        };
        let table = Arc::new(db.begin_read()?.open_table(DATA)?);
        let mut slot = self.slot();
        if slot.generation == generation && slot.table.is_none() && !slot.ended {
            slot.table = Some(Arc::clone(&table));
        }
        Ok(table)
    }

    /// Forgets the cached table; with `end`, for good.
    fn invalidate(&self, end: bool) {
        let stale = {
            let mut slot = self.slot();
            slot.generation += 1;
            slot.ended |= end;
            slot.table.take()
        };
        // The old transaction ends here, outside the lock (unless a reader still holds it).
        drop(stale);
    }
}

/// The shared table, its size bound and the writers' wait for room.
pub(crate) struct Overlay {
    state: RwLock<Layer>,
    reads: ReadCache,
    bytes: AtomicU64,
    limit: u64,
    room: Mutex<()>,
    room_freed: Condvar,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Overlay {
    pub fn new(limit: u64) -> Overlay {
        Overlay {
            state: RwLock::new(Layer::default()),
            reads: ReadCache::default(),
            bytes: AtomicU64::new(0),
            limit: limit.max(1),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
        }
    }

    /// The table's state and a redb read transaction that form one consistent cut.
    pub fn snapshot(&self, db: &redb::Database) -> Result<(Layer, redb::ReadTransaction), Error> {
        let state = self.state.read();
        let txn = db.begin_read()?;
        Ok(((*state).clone(), txn))
    }

    /// Looks `keys` up, and takes redb's data table for the ones not here, under one hold of
    /// the lock (a point read costs no copy of the table; the data table is the shared one of
    /// the newest commit, see [`ReadCache`]).
    #[allow(clippy::type_complexity)]
    pub fn lookup<K: AsRef<[u8]>>(
        &self,
        db: &redb::Database,
        keys: &[K],
    ) -> Result<(Vec<Option<Arc<Entry>>>, Option<Arc<DataTable>>), Error> {
        let state = self.state.read();
        let found: Vec<Option<Arc<Entry>>> = keys
            .iter()
            .map(|k| state.map.get(k.as_ref()).cloned())
            .collect();
        let table = if found.iter().all(Option::is_some) {
            None
        } else {
            Some(self.reads.table(db)?)
        };
        Ok((found, table))
    }

    /// [`Overlay::lookup`] of one key: its entry here, or else redb's data table.
    pub fn lookup_one(
        &self,
        db: &redb::Database,
        key: &[u8],
    ) -> Result<Result<Arc<Entry>, Arc<DataTable>>, Error> {
        let state = self.state.read();
        Ok(match state.map.get(key) {
            Some(entry) => Ok(Arc::clone(entry)),
            None => Err(self.reads.table(db)?),
        })
    }

    /// Tells point reads that redb's data changed: called after every commit to redb that
    /// writes records, before the writes it holds are acknowledged or leave the overlay.
    pub fn data_committed(&self) {
        self.reads.invalidate(false);
    }

    /// Drops the shared read transaction for good: the database is closing.
    pub fn end_reads(&self) {
        self.reads.invalidate(true);
    }

    /// Bytes held by the batches not yet applied (keys, records, index entries, overhead).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.read().map.len()
    }

    /// How long a batch is held back at the table's present fill: nothing up to half the
    /// bound, then in proportion to the fill above it, up to [`MAX_HOLD_BACK`] just below the
    /// bound. Writers so slow down to catch-up's pace before the table is full, instead of
    /// running into the bound and waiting there for a whole checkpoint.
    pub fn hold_back(&self) -> Duration {
        hold_back(self.bytes(), self.limit)
    }

    /// Holds a batch back: first [`Overlay::hold_back`]'s delay, then, while the table is at
    /// its bound, until catch-up makes room. Returns the two times.
    pub fn wait_for_room(&self, poisoned: impl Fn() -> bool) -> HeldBack {
        let delay = self.hold_back();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.bytes() < self.limit {
            return HeldBack {
                delayed: delay,
                waited: Duration::ZERO,
            };
        }
        let started = Instant::now();
        let mut guard = self.room.lock().unwrap_or_else(|p| p.into_inner());
        while self.bytes() >= self.limit && !poisoned() {
            guard = self
                .room_freed
                .wait_timeout(guard, Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        HeldBack {
            delayed: delay,
            waited: started.elapsed(),
        }
    }

    /// Inserts one logged batch's final states (the newest state of a key replaces an older
    /// one), all under one hold of the lock.
    pub fn insert(&self, batch: &Arc<Batch>) {
        let mut state = self.state.write();
        for (at, planned) in batch.ops.iter().enumerate() {
            let key = planned.op.key();
            let entry = Arc::new(Entry {
                batch: Arc::clone(batch),
                at,
            });
            for index_entry in entry.index_entries() {
                state.index.insert(index_entry.clone());
            }
            if let Some(at) = planned.expires_at {
                state.expiry.insert(expiry_key(at, key));
            }
            if let Some(old) = state.map.insert(key.to_vec(), entry) {
                let current = planned.index_entries.as_slice();
                for stale in old.index_entries() {
                    if !current.contains(stale) {
                        state.index.remove(stale);
                    }
                }
                if let Some(at) = old.expires_at()
                    && Some(at) != planned.expires_at
                {
                    state.expiry.remove(&expiry_key(at, key));
                }
            }
        }
        state.last_etag = state.last_etag.max(batch.last_etag);
        state.last_seq = state.last_seq.max(batch.seq);
        self.bytes
            .fetch_add(batch.memory_bytes(), Ordering::Relaxed);
    }

    /// Removes the entries written by `batches` that nothing newer replaced: called after the
    /// redb commit holding them is visible to readers. Point reads take a new data table
    /// first ([`Overlay::data_committed`]), so none reads a table older than that commit once
    /// an entry is gone.
    ///
    /// The write lock is taken for [`REMOVE_CHUNK`] operations at a time: a catch-up step
    /// holds about 8 000 at 1 000 000 keys, and removing them under one hold (9–11 ms) stopped
    /// the writer's planning and every read that often. Removing some entries of a step before
    /// others is safe: each removed one is already in the redb commit every new reader sees.
    /// Between chunks the lock is handed to whoever waits for it (`unlock_fair`).
    pub fn remove_applied(&self, batches: &[Arc<Batch>]) {
        self.data_committed();
        let mut longest = Duration::ZERO;
        for batch in batches {
            for ops in batch.ops.chunks(REMOVE_CHUNK) {
                let began = Instant::now();
                let mut state = self.state.write();
                for planned in ops {
                    let key = planned.op.key();
                    if state.map.get(key).is_some_and(|e| e.seq() == batch.seq)
                        && let Some(entry) = state.map.remove(key)
                    {
                        for index_entry in entry.index_entries() {
                            state.index.remove(index_entry);
                        }
                        if let Some(at) = entry.expires_at() {
                            state.expiry.remove(&expiry_key(at, key));
                        }
                    }
                }
                // Handed straight to a waiting writer or reader: released plainly, this
                // thread (still running) took the lock back for the next chunk before the
                // woken waiter could, so the writer's insert waited out the whole step
                // (8–14 ms at 1 000 000 keys, every hundredth batch).
                RwLockWriteGuard::unlock_fair(state);
                longest = longest.max(began.elapsed());
            }
            self.bytes
                .fetch_sub(batch.memory_bytes(), Ordering::Relaxed);
        }
        if longest > SLOW_HOLD {
            tracing::debug!(
                held_ms = longest.as_secs_f64() * 1e3,
                "slow removal of applied writes (the table's lock held that long)"
            );
        }
        let _guard = self.room.lock().unwrap_or_else(|p| p.into_inner());
        self.room_freed.notify_all();
    }

    /// Wakes writers waiting for room (the catch-up thread stopped).
    pub fn wake_all(&self) {
        let _guard = self.room.lock().unwrap_or_else(|p| p.into_inner());
        self.room_freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, record: &[u8], index: &[&str]) -> Planned {
        Planned {
            op: WalOp::Put {
                key: key.as_bytes().to_vec(),
                record: record.to_vec(),
            },
            index_entries: index.iter().map(|e| e.as_bytes().to_vec()).collect(),
            expires_at: None,
        }
    }

    fn batch(seq: u64, ops: Vec<Planned>) -> Arc<Batch> {
        Arc::new(Batch {
            seq,
            last_etag: seq + 10,
            ops,
        })
    }

    #[test]
    fn newer_states_replace_older_ones_and_applied_ones_leave() {
        let overlay = Overlay::new(1 << 20);
        let one = batch(1, vec![put("a", b"one", &["ia1"]), put("b", b"two", &[])]);
        let two = batch(2, vec![put("a", b"three", &["ia2"])]);
        overlay.insert(&one);
        overlay.insert(&two);
        let before = overlay.bytes();
        assert!(before > 0);
        {
            let state = overlay.state.read();
            assert_eq!(state.map.get(b"a".as_slice()).unwrap().seq(), 2);
            assert!(
                !state.index.contains(b"ia1".as_slice()),
                "a stale index entry stayed"
            );
            assert!(state.index.contains(b"ia2".as_slice()));
            assert_eq!((state.last_seq, state.last_etag), (2, 12));
        }
        // Batch 1 applied: "b" leaves; "a" stays, batch 2 replaced it.
        overlay.remove_applied(std::slice::from_ref(&one));
        assert_eq!(overlay.len(), 1);
        assert!(overlay.bytes() < before);
        overlay.remove_applied(std::slice::from_ref(&two));
        assert_eq!(overlay.len(), 0);
        assert_eq!(overlay.bytes(), 0);
        assert!(overlay.state.read().index.is_empty());
    }

    #[test]
    fn a_step_larger_than_a_removal_chunk_leaves_whole_and_keeps_newer_states() {
        let overlay = Overlay::new(1 << 30);
        let n = REMOVE_CHUNK * 3 + 7;
        let key = |i: usize| format!("k{i:05}");
        let index = |i: usize| format!("i{i:05}");
        let older = batch(
            1,
            (0..n)
                .map(|i| put(&key(i), b"old", &[index(i).as_str()]))
                .collect(),
        );
        // The next batch rewrites every tenth key (in the last chunk too).
        let rewritten: Vec<usize> = (0..n).step_by(10).chain([n - 1]).collect();
        let newer = batch(
            2,
            rewritten
                .iter()
                .map(|&i| put(&key(i), b"new", &[format!("n{i:05}").as_str()]))
                .collect(),
        );
        overlay.insert(&older);
        overlay.insert(&newer);
        overlay.remove_applied(std::slice::from_ref(&older));
        let state = overlay.state.read();
        assert_eq!(state.map.len(), rewritten.len());
        for &i in &rewritten {
            let entry = state.map.get(key(i).as_bytes()).unwrap();
            assert_eq!(entry.record(), Some(b"new".as_slice()), "{i}");
        }
        assert_eq!(state.index.len(), rewritten.len());
        assert!(state.index.iter().all(|e| e.starts_with(b"n")));
        drop(state);
        assert_eq!(overlay.bytes(), newer.memory_bytes());
    }

    #[test]
    fn a_copy_keeps_its_version_while_the_table_changes() {
        let overlay = Overlay::new(1 << 20);
        overlay.insert(&batch(1, vec![put("k", b"v1", &[])]));
        let copy = overlay.state.read().clone();
        overlay.insert(&batch(2, vec![put("k", b"v2", &[])]));
        assert_eq!(
            copy.map.get(b"k".as_slice()).unwrap().record(),
            Some(b"v1".as_slice())
        );
    }

    #[test]
    fn a_full_table_makes_writers_wait_until_room_is_made() {
        let overlay = Arc::new(Overlay::new(10));
        let full = batch(1, vec![put("k", &[0; 100], &[])]);
        overlay.insert(&full);
        let waiter = {
            let overlay = Arc::clone(&overlay);
            std::thread::spawn(move || overlay.wait_for_room(|| false))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the writer did not wait");
        overlay.remove_applied(std::slice::from_ref(&full));
        let held = waiter.join().unwrap();
        // Held for the whole 50 ms: first the full delay, then waiting for room.
        assert_eq!(held.delayed, MAX_HOLD_BACK);
        assert!(!held.waited.is_zero(), "{held:?}");
        assert!(
            held.delayed + held.waited >= Duration::from_millis(40),
            "{held:?}"
        );
    }

    #[test]
    fn batches_are_held_back_in_proportion_to_the_fill_above_half_the_bound() {
        let limit = 1000;
        assert_eq!(hold_back(0, limit), Duration::ZERO);
        assert_eq!(hold_back(500, limit), Duration::ZERO);
        assert_eq!(hold_back(750, limit), MAX_HOLD_BACK / 2);
        assert_eq!(hold_back(1000, limit), MAX_HOLD_BACK);
        assert_eq!(hold_back(5000, limit), MAX_HOLD_BACK);
        let mut last = Duration::ZERO;
        for bytes in (500..=1000).step_by(10) {
            let delay = hold_back(bytes, limit);
            assert!(delay >= last, "{bytes}: {delay:?} < {last:?}");
            last = delay;
        }
        // A table below half its bound holds nobody back.
        let overlay = Overlay::new(1 << 20);
        overlay.insert(&batch(1, vec![put("k", &[0; 100], &[])]));
        let held = overlay.wait_for_room(|| false);
        assert_eq!(
            (held.delayed, held.waited),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
