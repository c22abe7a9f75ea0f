//! Planning a batch: the writer checks each request against the state it finds (the batch's
//! own earlier writes, then the overlay and redb as they stand: see [`Planner::new`]), seals
//! the records it writes and hands out etags. The result is each key's final state
//! ([`Planned`]), which the durability stage logs and applies; planning itself writes nothing.
//!
//! Each request is checked against the state the requests before it in the batch left, and a
//! request whose condition fails plans nothing, so it never affects its neighbours.

use std::collections::HashMap;
use std::ops::Bound;

use crate::codec::Codec;
use crate::error::{Error, MismatchReason};
use crate::etag::Etag;
use crate::overlay::{DataTable, Overlay, Planned};
use crate::query::index::{self, IndexDef};
use crate::read::{self, Cut};
use crate::record;
use crate::request::ImportRecord;
use crate::request::{CheckedOp, Concurrency};
use crate::tables::{DATA, EXPIRY, expiry_key};
use crate::wal::WalOp;

/// What a key holds as far as conditions are concerned: its live etag, or nothing.
type LiveEtag = Option<u64>;

/// Requests of up to this many operations track their keys in a vector searched from the
/// end: most requests are one operation, and hashing each key into a fresh map (SipHash,
/// two allocations) cost more than the comparisons.
const SMALL_REQUEST: usize = 16;

/// The state a request's earlier operations left for each key they wrote, and which of its
/// writes is each key's last. Every write is recorded in request order, so write `i` is the
/// request's `i`-th final state.
enum SeenKeys<'a> {
    Few(Vec<(&'a [u8], LiveEtag)>),
    /// Each key's newest state and the position of the write that left it.
    Many(HashMap<&'a [u8], (LiveEtag, usize)>, usize),
}

impl<'a> SeenKeys<'a> {
    fn for_ops(count: usize) -> SeenKeys<'a> {
        if count <= SMALL_REQUEST {
            SeenKeys::Few(Vec::with_capacity(count))
        } else {
            SeenKeys::Many(HashMap::with_capacity(count), 0)
        }
    }

    fn get(&self, key: &[u8]) -> Option<LiveEtag> {
        match self {
            SeenKeys::Few(seen) => seen.iter().rev().find(|(k, _)| *k == key).map(|(_, s)| *s),
            SeenKeys::Many(seen, _) => seen.get(key).map(|(s, _)| *s),
        }
    }

    fn insert(&mut self, key: &'a [u8], state: LiveEtag) {
        match self {
            SeenKeys::Few(seen) => seen.push((key, state)),
            SeenKeys::Many(seen, written) => {
                seen.insert(key, (state, *written));
                *written += 1;
            }
        }
    }

    /// Whether write `position` (of `key`) is the last the request made to `key`.
    fn is_last(&self, key: &[u8], position: usize) -> bool {
        match self {
            SeenKeys::Few(seen) => !seen[position + 1..].iter().any(|(k, _)| *k == key),
            SeenKeys::Many(seen, _) => seen.get(key).is_some_and(|(_, at)| *at == position),
        }
    }
}

/// A request error (nothing planned) or a storage error (the batch cannot go on).
pub(crate) enum PlanError {
    Request { index: usize, error: Error },
    Storage(Error),
}

impl From<Error> for PlanError {
    fn from(err: Error) -> PlanError {
        PlanError::Storage(err)
    }
}

impl From<redb::StorageError> for PlanError {
    fn from(err: redb::StorageError) -> PlanError {
        PlanError::Storage(Error::storage(err))
    }
}

pub(crate) struct Planner<'c> {
    db: &'c redb::Database,
    overlay: &'c Overlay,
    /// A consistent cut, taken the first time a scan needs one ([`Planner::take_cut`]).
    cut: Option<(Cut, DataTable)>,
    indexes: &'c [IndexDef],
    codec: &'c Codec,
    now_ms: u64,
    /// The last etag sequence handed out; the next set gets `last_etag + 1`.
    pub last_etag: u64,
    /// The state this batch's earlier requests left, by key.
    written: HashMap<Vec<u8>, LiveEtag>,
    /// Every key's final state, in the order written.
    pub out: Vec<Planned>,
}

impl<'c> Planner<'c> {
    /// A planner over the present state of `overlay` and `db`.
    ///
    /// It reads that state where it stands, without a copy: only the writer (planning this
    /// batch) changes what a key holds, and catch-up only moves states from the overlay into
    /// redb, so every key reads the same whenever during planning it is read. A point read
    /// ([`read::live_etag`]) is consistent for its key on its own; the scans of `rewrite` and
    /// `sweep` take one cut ([`Cut`]) when they first need it. Most batches read nothing (a
    /// write without an etag holds whatever the key holds), and then cost no copy of the
    /// overlay's map (whose later inserts would copy the nodes the copy shares) and no redb
    /// read transaction (which waits behind catch-up's commit).
    pub fn new(
        db: &'c redb::Database,
        overlay: &'c Overlay,
        indexes: &'c [IndexDef],
        codec: &'c Codec,
        now_ms: u64,
        last_etag: u64,
    ) -> Planner<'c> {
        Planner {
            db,
            overlay,
            cut: None,
            indexes,
            codec,
            now_ms,
            last_etag,
            written: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// Takes the cut scans read, unless taken already.
    fn take_cut(&mut self) -> Result<(), Error> {
        if self.cut.is_none() {
            let started = std::time::Instant::now();
            let cut = Cut::take(self.db, self.overlay)?;
            let data = cut.txn.open_table(DATA)?;
            let took = started.elapsed();
            if took > crate::durability::SLOW_STEP {
                tracing::debug!(
                    elapsed_ms = took.as_secs_f64() * 1e3,
                    "slow read snapshot for planning"
                );
            }
            self.cut = Some((cut, data));
        }
        Ok(())
    }

    fn live_etag(&self, key: &[u8]) -> Result<LiveEtag, Error> {
        if let Some(state) = self.written.get(key) {
            return Ok(*state);
        }
        read::live_etag(self.db, self.overlay, key, self.now_ms)
    }

    fn push(&mut self, key: &[u8], state: Final<'_>) {
        let (op, index_entries, expires_at, live) = match state {
            Final::Put {
                record,
                value,
                etag,
                expires_at,
            } => (
                WalOp::Put {
                    key: key.to_vec(),
                    record,
                },
                index::entries(self.indexes, key, value),
                expires_at,
                Some(etag),
            ),
            Final::Remove => (WalOp::Remove { key: key.to_vec() }, Vec::new(), None, None),
        };
        self.written.insert(key.to_vec(), live);
        self.out.push(Planned {
            op,
            index_entries,
            expires_at,
        });
    }

    /// Plans `ops` in order, all or nothing: every condition is checked against the state left
    /// by the operations before it (in this request and in earlier requests of the batch);
    /// only if all hold is anything planned. Returns the etag of each set (`None` for deletes).
    pub fn plan_atomic(&mut self, ops: &[CheckedOp]) -> Result<Vec<Option<Etag>>, PlanError> {
        let mut view = SeenKeys::for_ops(ops.len());
        let mut finals: Vec<(&[u8], Final)> = Vec::with_capacity(ops.len());
        let mut etags = Vec::with_capacity(ops.len());
        let mut next_etag = self.last_etag;
        for (index, op) in ops.iter().enumerate() {
            let key = op.key();
            let (etag, concurrency) = match op {
                CheckedOp::Set {
                    etag, concurrency, ..
                }
                | CheckedOp::Delete {
                    etag, concurrency, ..
                } => (*etag, *concurrency),
            };
            // A last-write request without an etag holds whatever the key holds: it reads
            // nothing (most writes; on a keyspace larger than the cache the read was most of
            // the writer's time).
            if etag.is_some() || concurrency == Concurrency::FirstWrite {
                let current = match view.get(key) {
                    Some(state) => state,
                    None => self.live_etag(key)?,
                };
                check_condition(key, current, etag, concurrency)
                    .map_err(|error| PlanError::Request { index, error })?;
            }
            match op {
                CheckedOp::Set {
                    value,
                    ttl,
                    content_type,
                    ..
                } => {
                    next_etag += 1;
                    let expires_at = ttl.expiry_from(self.now_ms);
                    let record =
                        self.codec
                            .seal(key, next_etag, expires_at, content_type.as_deref(), value);
                    view.insert(key, Some(next_etag));
                    finals.push((
                        key,
                        Final::Put {
                            record,
                            value,
                            etag: next_etag,
                            expires_at,
                        },
                    ));
                    etags.push(Some(Etag::new(next_etag)));
                }
                CheckedOp::Delete { .. } => {
                    view.insert(key, None);
                    finals.push((key, Final::Remove));
                    etags.push(None);
                }
            }
        }
        // Only the last state of each key is written, in the order of those last states.
        for (i, (key, state)) in finals.into_iter().enumerate() {
            if view.is_last(key, i) {
                self.push(key, state);
            }
        }
        self.last_etag = next_etag;
        Ok(etags)
    }

    /// Plans records exactly as given (etag, expiry, content type), replacing what is there;
    /// the etag sequence moves above every imported etag. Returns how many were planned.
    pub fn import(&mut self, records: &[ImportRecord]) -> usize {
        for record in records {
            let sealed = self.codec.seal(
                &record.key,
                record.etag,
                record.expires_at_unix_ms,
                record.content_type.as_deref(),
                &record.value,
            );
            self.push(
                &record.key,
                Final::Put {
                    record: sealed,
                    value: &record.value,
                    etag: record.etag,
                    expires_at: record.expires_at_unix_ms,
                },
            );
            self.last_etag = self.last_etag.max(record.etag);
        }
        records.len()
    }

    /// Re-encodes up to `limit` records after `after` (in key order) whose encoding differs
    /// from the current codec settings: same value, etag, expiry and content type. Keys with a
    /// newer state in this batch or the overlay were sealed under the current settings and are
    /// left alone. Returns how many were rewritten and the last key visited (`None` at the end).
    pub fn rewrite(
        &mut self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(usize, Option<Vec<u8>>), Error> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        // (key, resealed record, plaintext, etag, expiry)
        type Resealed = (Vec<u8>, Vec<u8>, Vec<u8>, u64, Option<u64>);
        let mut planned: Vec<Resealed> = Vec::new();
        let mut last = None;
        let mut visited = 0;
        self.take_cut()?;
        let (cut, data) = self.cut.as_ref().expect("taken above");
        for item in data.range::<&[u8]>((start, Bound::Unbounded))? {
            let (key, stored) = item?;
            visited += 1;
            let key_bytes = key.value();
            // A key written by this batch or in the overlay was sealed under the current
            // settings: its newest state is not redb's.
            if !(self.written.contains_key(key_bytes) || cut.layer.map.contains_key(key_bytes)) {
                let view = record::decode(stored.value())?;
                if self.codec.needs_rewrite(&view) {
                    let plain = self.codec.open(key_bytes, &view)?;
                    let resealed = self.codec.seal(
                        key_bytes,
                        view.etag,
                        view.expires_at_ms,
                        view.content_type,
                        &plain,
                    );
                    planned.push((
                        key_bytes.to_vec(),
                        resealed,
                        plain.into_owned(),
                        view.etag,
                        view.expires_at_ms,
                    ));
                }
            }
            last = Some(key_bytes.to_vec());
            if visited >= limit {
                break;
            }
        }
        let rewritten = planned.len();
        for (key, record, plain, etag, expires_at) in planned {
            self.push(
                &key,
                Final::Put {
                    record,
                    value: &plain,
                    etag,
                    expires_at,
                },
            );
        }
        let more = visited >= limit;
        Ok((rewritten, if more { last } else { None }))
    }

    /// Plans the removal of up to `limit` records that expired at or before now, oldest
    /// expiry first: from redb's expiry index (passing over keys whose newest state is in the
    /// overlay, where that state's own expiry counts) and the overlay's. Returns how many it
    /// removes.
    pub fn sweep(&mut self, limit: usize) -> Result<usize, Error> {
        let end = expiry_key(self.now_ms.saturating_add(1), &[]);
        self.take_cut()?;
        let (cut, data) = self.cut.as_ref().expect("taken above");
        let expiry = cut.txn.open_table(EXPIRY)?;
        // Due entries (expiry key order = expiry order) from both, at most `limit` each.
        let mut due: Vec<Vec<u8>> = Vec::new();
        for entry in expiry.range::<&[u8]>(..end.as_slice())? {
            if due.len() >= limit {
                break;
            }
            let (index_key, _) = entry?;
            let key = &index_key.value()[8..];
            if self.written.contains_key(key) || cut.layer.map.contains_key(key) {
                continue;
            }
            let expired = match data.get(key)? {
                Some(stored) => !record::decode(stored.value())?.is_live(self.now_ms),
                None => false,
            };
            if expired {
                due.push(index_key.value().to_vec());
            }
        }
        for index_key in cut.layer.expiry.range(..end).take(limit) {
            if !self.written.contains_key(&index_key[8..]) {
                due.push(index_key.clone());
            }
        }
        due.sort();
        due.truncate(limit);
        for index_key in &due {
            self.push(&index_key[8..], Final::Remove);
        }
        Ok(due.len())
    }
}

/// The final state of a key after a planned request.
enum Final<'v> {
    Put {
        record: Vec<u8>,
        /// The plaintext value (for index entries).
        value: &'v [u8],
        etag: u64,
        expires_at: Option<u64>,
    },
    Remove,
}

fn check_condition(
    key: &[u8],
    current: LiveEtag,
    etag: Option<Etag>,
    concurrency: Concurrency,
) -> Result<(), Error> {
    match (etag, current) {
        (Some(wanted), Some(live)) if wanted.sequence() == live => Ok(()),
        (Some(_), Some(_)) => Err(Error::mismatch(key, MismatchReason::EtagDiffers)),
        (Some(_), None) => Err(Error::mismatch(key, MismatchReason::NoLiveRecord)),
        (None, Some(_)) if concurrency == Concurrency::FirstWrite => {
            Err(Error::mismatch(key, MismatchReason::KeyExists))
        }
        (None, _) => Ok(()),
    }
}
