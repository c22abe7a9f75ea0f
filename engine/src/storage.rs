//! The redb layer: table layout, opening and format checks, reads, and applying checked
//! operations inside a write transaction.
//!
//! Tables (see `docs/design.md` for the byte layouts):
//! - `roost_data`: key bytes → record envelope ([`crate::record`]);
//! - `roost_expiry`: expiry index, `expiry_ms (u64 BE) ‖ key` → `()`; it holds exactly one entry
//!   per record with an expiry, so the sweeper finds expired records by a range scan;
//! - `roost_meta`: `format`, `etag_seq` and `clean` (see [`open`]).
//!
//! Invariant kept by [`Applier::flush`]: a record and its expiry-index entry are written,
//! replaced or removed together, in the same write transaction.

use std::collections::HashMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::codec::Codec;
use crate::error::{Error, MismatchReason};
use crate::etag::Etag;
use crate::options::Options;
use crate::query::index::{self, INDEX, IndexDef};
use crate::record::{self, RecordView};
use crate::request::{CheckedOp, Concurrency};
use crate::wal::{self, Wal, WalOp};

pub(crate) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("roost_data");
pub(crate) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("roost_expiry");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("roost_meta");

const META_FORMAT: &str = "format";
const META_ETAG_SEQ: &str = "etag_seq";
const META_CLEAN: &str = "clean";
/// The sequence number of the last write-ahead-log batch included in this state.
const META_WAL_SEQ: &str = "wal_seq";
const FORMAT_MAGIC: &[u8; 5] = b"roost";
/// Version of the database layout (tables and their meaning), stored after the magic.
pub(crate) const DATABASE_FORMAT: u32 = 1;
/// After an unclean shutdown the etag sequence jumps by this much, so an etag handed out by
/// an `eventual` write lost in the crash is never handed out again.
pub(crate) const ETAG_GAP_AFTER_UNCLEAN_SHUTDOWN: u64 = 1 << 32;

/// A live record as returned by reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value, byte for byte as written.
    pub value: Vec<u8>,
    pub etag: Etag,
    /// When the record expires, in Unix milliseconds.
    pub expires_at_unix_ms: Option<u64>,
    pub content_type: Option<String>,
}

impl Record {
    /// The expiry as RFC 3339 UTC (Dapr's `ttlExpireTime`), if the record has one.
    pub fn expire_time_rfc3339(&self) -> Option<String> {
        self.expires_at_unix_ms.map(crate::ttl::format_rfc3339)
    }

    fn from_view(view: RecordView<'_>, value: Vec<u8>) -> Record {
        Record {
            value,
            etag: Etag::new(view.etag),
            expires_at_unix_ms: view.expires_at_ms,
            content_type: view.content_type.map(str::to_owned),
        }
    }
}

/// An opened database file and where its etag sequence stands.
pub(crate) struct Opened {
    pub db: redb::Database,
    pub last_etag: u64,
    pub indexes: Vec<IndexDef>,
    pub codec: Codec,
    /// The write-ahead log and the sequence it continues from (file-backed databases).
    pub wal: Option<(Wal, u64)>,
}

/// Opens or creates the database file, checks that it is a Roost database of a known format,
/// and marks it open (unclean) until [`mark_clean`] runs at close.
pub(crate) fn open(options: &Options) -> Result<Opened, Error> {
    let path = &options.path;
    let shown = path.display().to_string();
    if let Some(slot) = &options.backend {
        let opener = slot.take().ok_or_else(|| {
            Error::InvalidArgument("a storage backend can only be opened once".into())
        })?;
        let mut builder = redb::Builder::new();
        builder.set_cache_size(options.cache_size_bytes);
        let db = match catch_unwind(AssertUnwindSafe(|| opener(&builder))) {
            Ok(Ok(db)) => db,
            Ok(Err(err)) => return Err(open_error(&shown, err)),
            Err(_) => {
                return Err(Error::Corrupted(format!(
                    "{shown} could not be opened: the storage layer failed on its contents"
                )));
            }
        };
        return finish_open(db, &shown, options, None);
    }
    let exists = match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Error::NotARoostDatabase {
                path: shown,
                detail: "it is a directory".into(),
            });
        }
        Ok(meta) => meta.len() > 0,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => return Err(Error::Storage(format!("cannot read {shown}: {err}"))),
    };
    if !exists && !options.create_if_missing {
        return Err(Error::Storage(format!(
            "{shown} does not exist (and create_if_missing is off)"
        )));
    }
    if !exists {
        // A log beside a missing or empty file belongs to a database that is gone; replaying
        // it into a new one would resurrect its records.
        let stale = wal::path_for(path);
        if let Err(err) = fs::remove_file(&stale)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Storage(format!(
                "cannot remove the stale write-ahead log {}: {err}",
                stale.display()
            )));
        }
    }
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(options.cache_size_bytes)
        .set_check_integrity_on_open(options.check_integrity_on_open && exists);
    // redb may panic on some malformed files (debug assertions); a bad file must be an error.
    let opened = catch_unwind(AssertUnwindSafe(|| {
        if exists {
            builder.open(path)
        } else {
            builder.create(path)
        }
    }));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(err)) => return Err(open_error(&shown, err)),
        Err(_) => {
            return Err(Error::Corrupted(format!(
                "{shown} could not be opened: the storage layer failed on its contents"
            )));
        }
    };
    finish_open(db, &shown, options, Some(wal::path_for(path)))
}

/// Format checks, codec, indexes and write-ahead-log replay: everything after redb has opened
/// the storage. `wal_path` is `None` for a custom storage backend (no log).
fn finish_open(
    db: redb::Database,
    shown: &str,
    options: &Options,
    wal_path: Option<std::path::PathBuf>,
) -> Result<Opened, Error> {
    let mut last_etag =
        catch_unwind(AssertUnwindSafe(|| initialize(&db, shown))).unwrap_or_else(|_| {
            Err(Error::Corrupted(format!(
                "{shown}: the storage layer failed reading its metadata"
            )))
        })?;
    let codec = crate::codec::prepare(&db, &options.codec, options.limits.max_value_bytes)?;
    let indexes = crate::query::index::reconcile(&db, &options.indexes, &codec)?;
    let wal = match wal_path {
        Some(path) => {
            let (wal, seq) = recover(&db, &path, &indexes, &codec, &mut last_etag, options)?;
            match options.durability {
                crate::options::Durability::Immediate if options.write_ahead_log => {
                    Some((wal, seq))
                }
                _ => {
                    // Eventual durability (or a log turned off) does not log; the
                    // (replayed, empty) log goes.
                    drop(wal);
                    if let Err(err) = fs::remove_file(&path)
                        && err.kind() != std::io::ErrorKind::NotFound
                    {
                        return Err(Error::Storage(format!(
                            "cannot remove {}: {err}",
                            path.display()
                        )));
                    }
                    None
                }
            }
        }
        None => None,
    };
    Ok(Opened {
        db,
        last_etag,
        indexes,
        codec,
        wal,
    })
}

/// Opens the write-ahead log at `path` and re-applies the batches it holds beyond the
/// checkpointed sequence, in one durable commit; then empties it. Returns the log and the
/// sequence the next batch follows.
fn recover(
    db: &redb::Database,
    path: &std::path::Path,
    indexes: &[IndexDef],
    codec: &Codec,
    last_etag: &mut u64,
    options: &Options,
) -> Result<(Wal, u64), Error> {
    let checkpointed = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        read_u64(&meta, META_WAL_SEQ)?.unwrap_or(0)
    };
    let log_error = |err: std::io::Error| {
        Error::Storage(format!(
            "cannot read the write-ahead log {}: {err}",
            path.display()
        ))
    };
    let (mut wal, batches) = Wal::open(path, checkpointed).map_err(log_error)?;
    let Some(last) = batches.last() else {
        return Ok((wal, checkpointed));
    };
    let replayed_seq = last.seq;
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut applier = Applier::new(
            &txn,
            indexes,
            codec,
            options.clock.now_unix_ms(),
            *last_etag,
        )?;
        let mut logged_etag = 0;
        for batch in &batches {
            for op in &batch.ops {
                applier.replay(op)?;
            }
            logged_etag = logged_etag.max(batch.last_etag);
        }
        // A replay means the last run did not close cleanly: keep the usual gap above
        // every etag it may have handed out.
        *last_etag = (*last_etag).max(logged_etag.saturating_add(ETAG_GAP_AFTER_UNCLEAN_SHUTDOWN));
    }
    store_etag_sequence(&txn, *last_etag)?;
    store_wal_seq(&txn, replayed_seq)?;
    txn.commit()?;
    wal.reset().map_err(log_error)?;
    tracing::info!(
        batches = batches.len(),
        path = %path.display(),
        "replayed the write-ahead log"
    );
    Ok((wal, replayed_seq))
}

fn open_error(path: &str, err: redb::DatabaseError) -> Error {
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen {
            path: path.to_owned(),
        },
        redb::DatabaseError::UpgradeRequired(version) => Error::NotARoostDatabase {
            path: path.to_owned(),
            detail: format!("it is a redb file of old format version {version}"),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::NotARoostDatabase {
                path: path.to_owned(),
                detail: io.to_string(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            Error::Corrupted(format!("{path}: {detail}"))
        }
        other => Error::Storage(format!("cannot open {path}: {other}")),
    }
}

/// Checks or writes the format marker, applies the unclean-shutdown etag gap and marks the
/// file open. Returns the last etag sequence handed out.
fn initialize(db: &redb::Database, path: &str) -> Result<u64, Error> {
    let not_roost = |detail: String| Error::NotARoostDatabase {
        path: path.to_owned(),
        detail,
    };
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let last_etag;
    {
        let mut meta = txn.open_table(META).map_err(|err| match err {
            redb::TableError::TableTypeMismatch { .. } => {
                not_roost("it has a table named roost_meta of another type".into())
            }
            other => Error::storage(other),
        })?;
        let format = meta.get(META_FORMAT)?.map(|g| g.value().to_vec());
        match format {
            None => {
                let foreign: Vec<String> = txn
                    .list_tables()?
                    .map(|t| t.name().to_owned())
                    .filter(|name| name != META.name())
                    .collect();
                if !foreign.is_empty() {
                    return Err(not_roost(format!(
                        "it is a redb database with other tables ({})",
                        foreign.join(", ")
                    )));
                }
                let mut marker = FORMAT_MAGIC.to_vec();
                marker.extend_from_slice(&DATABASE_FORMAT.to_be_bytes());
                meta.insert(META_FORMAT, marker.as_slice())?;
                last_etag = 0;
            }
            Some(marker) => {
                let version = marker
                    .strip_prefix(FORMAT_MAGIC.as_slice())
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| not_roost("its format marker is not Roost's".into()))?;
                if version > DATABASE_FORMAT {
                    return Err(Error::UnsupportedFormat {
                        found: version,
                        supported: DATABASE_FORMAT,
                    });
                }
                let stored = read_u64(&meta, META_ETAG_SEQ)?.unwrap_or(0);
                let clean = meta.get(META_CLEAN)?.map(|g| g.value() == [1]);
                last_etag = if clean == Some(false) {
                    stored.saturating_add(ETAG_GAP_AFTER_UNCLEAN_SHUTDOWN)
                } else {
                    stored
                };
            }
        }
        meta.insert(META_ETAG_SEQ, last_etag.to_be_bytes().as_slice())?;
        meta.insert(META_CLEAN, [0u8].as_slice())?;
    }
    txn.open_table(DATA).map_err(|err| match err {
        redb::TableError::TableTypeMismatch { .. } => {
            not_roost("its roost_data table has another type".into())
        }
        other => Error::storage(other),
    })?;
    txn.open_table(INDEX).map_err(|err| match err {
        redb::TableError::TableTypeMismatch { .. } => {
            not_roost("its roost_index table has another type".into())
        }
        other => Error::storage(other),
    })?;
    txn.open_table(EXPIRY).map_err(|err| match err {
        redb::TableError::TableTypeMismatch { .. } => {
            not_roost("its roost_expiry table has another type".into())
        }
        other => Error::storage(other),
    })?;
    txn.commit()?;
    Ok(last_etag)
}

fn read_u64(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<u64>, Error> {
    match table.get(key)? {
        None => Ok(None),
        Some(guard) => <[u8; 8]>::try_from(guard.value())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| Error::Corrupted(format!("meta entry {key} is not a u64"))),
    }
}

/// Records the etag sequence in the transaction (called once per committed batch).
pub(crate) fn store_etag_sequence(txn: &WriteTransaction, last_etag: u64) -> Result<(), Error> {
    let mut meta = txn.open_table(META)?;
    meta.insert(META_ETAG_SEQ, last_etag.to_be_bytes().as_slice())?;
    Ok(())
}

/// Records, in the batch's transaction, the write-ahead-log sequence it was logged under.
pub(crate) fn store_wal_seq(txn: &WriteTransaction, seq: u64) -> Result<(), Error> {
    let mut meta = txn.open_table(META)?;
    meta.insert(META_WAL_SEQ, seq.to_be_bytes().as_slice())?;
    Ok(())
}

/// Marks the file closed cleanly, durably; done last before the database is dropped.
pub(crate) fn mark_clean(db: &redb::Database, last_etag: u64) -> Result<(), Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(META_ETAG_SEQ, last_etag.to_be_bytes().as_slice())?;
        meta.insert(META_CLEAN, [1u8].as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

/// Reads live records for `keys` from one snapshot, in order.
pub(crate) fn read_many<K: AsRef<[u8]>>(
    db: &redb::Database,
    codec: &Codec,
    keys: &[K],
    now_ms: u64,
) -> Result<Vec<Option<Record>>, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(DATA)?;
    keys.iter()
        .map(|key| {
            let Some(guard) = table.get(key.as_ref())? else {
                return Ok(None);
            };
            let view = record::decode(guard.value())?;
            if !view.is_live(now_ms) {
                return Ok(None);
            }
            let value = codec.open(key.as_ref(), &view)?.into_owned();
            Ok(Some(Record::from_view(view, value)))
        })
        .collect()
}

/// A record to import exactly as it was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The etag sequence number to keep.
    pub etag: u64,
    pub expires_at_unix_ms: Option<u64>,
    pub content_type: Option<String>,
}

/// A page of a key-range scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    /// Live records in key order, with their keys.
    pub records: Vec<(Vec<u8>, Record)>,
    /// The last key visited, to pass as `after` for the next page; `None` at the end.
    pub next: Option<Vec<u8>>,
}

/// Live records whose key starts with `prefix`, in key order, strictly after `after`, at most
/// `limit` of them (0 = no limit), from one snapshot.
pub(crate) fn scan(
    db: &redb::Database,
    codec: &Codec,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    now_ms: u64,
) -> Result<ScanPage, Error> {
    use std::ops::Bound;
    let txn = db.begin_read()?;
    let table = txn.open_table(DATA)?;
    let start = match after {
        Some(key) if key >= prefix => Bound::Excluded(key),
        _ => Bound::Included(prefix),
    };
    let mut page = ScanPage::default();
    for item in table.range::<&[u8]>((start, Bound::Unbounded))? {
        let (key, stored) = item?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        let view = record::decode(stored.value())?;
        if !view.is_live(now_ms) {
            continue;
        }
        if limit > 0 && page.records.len() == limit {
            page.next = page.records.last().map(|(k, _)| k.clone());
            break;
        }
        let value = codec.open(key, &view)?.into_owned();
        page.records
            .push((key.to_vec(), Record::from_view(view, value)));
    }
    Ok(page)
}

/// Counts describing a keyspace's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyspaceStats {
    /// Records stored, live or expired but not yet swept.
    pub records: u64,
    /// Records expired and waiting for the sweeper.
    pub expired_pending: u64,
    /// Entries in the secondary indexes.
    pub index_entries: u64,
}

pub(crate) fn keyspace_stats(db: &redb::Database, now_ms: u64) -> Result<KeyspaceStats, Error> {
    use redb::ReadableTableMetadata;
    let txn = db.begin_read()?;
    let records = txn.open_table(DATA)?.len()?;
    let end = expiry_key(now_ms.saturating_add(1), &[]);
    let expired_pending = txn
        .open_table(EXPIRY)?
        .range::<&[u8]>(..end.as_slice())?
        .count() as u64;
    let index_entries = txn.open_table(INDEX)?.len()?;
    Ok(KeyspaceStats {
        records,
        expired_pending,
        index_entries,
    })
}

/// Expiry-index key: `expiry_ms (u64 BE) ‖ key`, so entries sort by expiry.
fn expiry_key(expires_at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// What a key holds as far as conditions are concerned: its live etag, or nothing.
type LiveEtag = Option<u64>;

/// The final state of a key after a planned request.
enum Final<'v> {
    Put {
        record: Vec<u8>,
        expires_at: Option<u64>,
        /// The plaintext value (for index entries).
        value: &'v [u8],
    },
    Remove,
}

/// Applies checked operations inside one write transaction.
pub(crate) struct Applier<'txn> {
    data: redb::Table<'txn, &'static [u8], &'static [u8]>,
    expiry: redb::Table<'txn, &'static [u8], ()>,
    index: redb::Table<'txn, &'static [u8], ()>,
    indexes: &'txn [IndexDef],
    codec: &'txn Codec,
    now_ms: u64,
    /// The last etag sequence handed out; the next set gets `last_etag + 1`.
    pub last_etag: u64,
    /// Every key's final state as written, in order, when the batch goes to the
    /// write-ahead log.
    pub log: Option<Vec<WalOp>>,
}

/// A request error (nothing written) or a storage error (the transaction is unusable).
pub(crate) enum ApplyError {
    Request { index: usize, error: Error },
    Storage(Error),
}

impl From<Error> for ApplyError {
    fn from(err: Error) -> ApplyError {
        ApplyError::Storage(err)
    }
}

impl From<redb::StorageError> for ApplyError {
    fn from(err: redb::StorageError) -> ApplyError {
        ApplyError::Storage(Error::storage(err))
    }
}

impl<'txn> Applier<'txn> {
    pub fn new(
        txn: &'txn WriteTransaction,
        indexes: &'txn [IndexDef],
        codec: &'txn Codec,
        now_ms: u64,
        last_etag: u64,
    ) -> Result<Self, Error> {
        Ok(Applier {
            data: txn.open_table(DATA)?,
            expiry: txn.open_table(EXPIRY)?,
            index: txn.open_table(INDEX)?,
            indexes,
            codec,
            now_ms,
            last_etag,
            log: None,
        })
    }

    /// Re-applies one logged final state (write-ahead-log replay), keeping the expiry and
    /// secondary indexes in step exactly as the original write did.
    pub fn replay(&mut self, op: &WalOp) -> Result<(), Error> {
        match op {
            WalOp::Put { key, record } => {
                let view = record::decode(record)?;
                let plain: std::borrow::Cow<'_, [u8]> = if self.indexes.is_empty() {
                    std::borrow::Cow::Borrowed(&[])
                } else {
                    self.codec.open(key, &view)?
                };
                self.flush(
                    key,
                    Final::Put {
                        record: record.clone(),
                        expires_at: view.expires_at_ms,
                        value: &plain,
                    },
                )
            }
            WalOp::Remove { key } => self.flush(key, Final::Remove),
        }
    }

    fn stored_live_etag(&self, key: &[u8]) -> Result<LiveEtag, Error> {
        let Some(guard) = self.data.get(key)? else {
            return Ok(None);
        };
        let view = record::decode(guard.value())?;
        Ok(view.is_live(self.now_ms).then_some(view.etag))
    }

    /// Applies `ops` in order, all or nothing: every condition is checked against the state
    /// left by the operations before it (in this request and in earlier requests of the batch);
    /// only if all hold is anything written. Returns the etag of each set (`None` for deletes).
    pub fn apply_atomic(&mut self, ops: &[CheckedOp]) -> Result<Vec<Option<Etag>>, ApplyError> {
        let mut view: HashMap<&[u8], LiveEtag> = HashMap::new();
        let mut finals: Vec<(&[u8], Final)> = Vec::with_capacity(ops.len());
        let mut etags = Vec::with_capacity(ops.len());
        let mut next_etag = self.last_etag;
        for (index, op) in ops.iter().enumerate() {
            let key = op.key();
            let current = match view.get(key) {
                Some(state) => *state,
                None => self.stored_live_etag(key)?,
            };
            let (etag, concurrency) = match op {
                CheckedOp::Set {
                    etag, concurrency, ..
                }
                | CheckedOp::Delete {
                    etag, concurrency, ..
                } => (*etag, *concurrency),
            };
            check_condition(key, current, etag, concurrency)
                .map_err(|error| ApplyError::Request { index, error })?;
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
                            expires_at,
                            value,
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
        // Only the last state of each key is written.
        let mut seen: HashMap<&[u8], ()> = HashMap::with_capacity(finals.len());
        for (key, state) in finals.into_iter().rev() {
            if seen.insert(key, ()).is_none() {
                self.flush(key, state)?;
            }
        }
        self.last_etag = next_etag;
        Ok(etags)
    }

    /// Writes one key's final state and keeps its expiry-index and secondary-index entries
    /// in step.
    fn flush(&mut self, key: &[u8], state: Final<'_>) -> Result<(), Error> {
        if let Some(log) = &mut self.log {
            log.push(match &state {
                Final::Put { record, .. } => WalOp::Put {
                    key: key.to_vec(),
                    record: record.clone(),
                },
                Final::Remove => WalOp::Remove { key: key.to_vec() },
            });
        }
        let (old, new_expiry) = match &state {
            Final::Put {
                record, expires_at, ..
            } => (self.data.insert(key, record.as_slice())?, *expires_at),
            Final::Remove => (self.data.remove(key)?, None),
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
        if !self.indexes.is_empty() {
            let new_entries = match &state {
                Final::Put { value, .. } => index::entries(self.indexes, key, value),
                Final::Remove => Vec::new(),
            };
            for entry in old_entries.iter().filter(|e| !new_entries.contains(e)) {
                self.index.remove(entry.as_slice())?;
            }
            for entry in new_entries.iter().filter(|e| !old_entries.contains(e)) {
                self.index.insert(entry.as_slice(), ())?;
            }
        }
        if old_expiry != new_expiry {
            if let Some(at) = old_expiry {
                self.expiry.remove(expiry_key(at, key).as_slice())?;
            }
            if let Some(at) = new_expiry {
                self.expiry.insert(expiry_key(at, key).as_slice(), ())?;
            }
        }
        Ok(())
    }

    /// Writes records exactly as given (etag, expiry, content type), replacing what is there;
    /// the etag sequence moves above every imported etag. Returns how many were written.
    pub fn import(&mut self, records: &[crate::storage::ImportRecord]) -> Result<usize, Error> {
        for record in records {
            let sealed = self.codec.seal(
                &record.key,
                record.etag,
                record.expires_at_unix_ms,
                record.content_type.as_deref(),
                &record.value,
            );
            self.flush(
                &record.key,
                Final::Put {
                    record: sealed,
                    expires_at: record.expires_at_unix_ms,
                    value: &record.value,
                },
            )?;
            self.last_etag = self.last_etag.max(record.etag);
        }
        Ok(records.len())
    }

    /// Re-encodes up to `limit` records after `after` (in key order) whose encoding differs
    /// from the current codec settings: same value, etag, expiry and content type. Returns how
    /// many were rewritten and the last key visited (`None` when the end was reached).
    pub fn rewrite(
        &mut self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(usize, Option<Vec<u8>>), Error> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut last = None;
        let mut visited = 0;
        for item in self.data.range::<&[u8]>((start, Bound::Unbounded))? {
            let (key, stored) = item?;
            visited += 1;
            let view = record::decode(stored.value())?;
            if self.codec.needs_rewrite(&view) {
                let plain = self.codec.open(key.value(), &view)?;
                let resealed = self.codec.seal(
                    key.value(),
                    view.etag,
                    view.expires_at_ms,
                    view.content_type,
                    &plain,
                );
                batch.push((key.value().to_vec(), resealed));
            }
            last = Some(key.value().to_vec());
            if visited >= limit {
                break;
            }
        }
        let rewritten = batch.len();
        for (key, record) in batch {
            self.data.insert(key.as_slice(), record.as_slice())?;
            if let Some(log) = &mut self.log {
                log.push(WalOp::Put { key, record });
            }
        }
        let more = visited >= limit;
        Ok((rewritten, if more { last } else { None }))
    }

    /// Deletes up to `limit` records that expired at or before now, oldest expiry first.
    pub fn sweep(&mut self, limit: usize) -> Result<usize, Error> {
        let end = expiry_key(self.now_ms.saturating_add(1), &[]);
        let due: Vec<Vec<u8>> = self
            .expiry
            .range::<&[u8]>(..end.as_slice())?
            .take(limit)
            .map(|entry| entry.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for index_key in &due {
            let key = &index_key[8..];
            let expired = match self.data.get(key)? {
                Some(guard) => !record::decode(guard.value())?.is_live(self.now_ms),
                None => false,
            };
            if expired {
                // Removes the record, its expiry entry and its index entries together.
                self.flush(key, Final::Remove)?;
            } else {
                self.expiry.remove(index_key.as_slice())?;
            }
        }
        Ok(due.len())
    }
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

/// What a snapshot copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    /// Records copied (live or expired-pending, exactly as stored: still compressed and
    /// encrypted).
    pub records: u64,
    /// Size of the snapshot file.
    pub bytes: u64,
}

/// Rows copied per write transaction of a snapshot.
const SNAPSHOT_CHUNK: usize = 10_000;

/// Copies every table of one read snapshot of `db` — data, expiry, index and meta, as stored —
/// into a new database file at `path` (which must not exist), durably. The copy is consistent
/// (one read transaction) and includes every commit visible to readers, so every
/// acknowledged write; writers keep going meanwhile. It holds no write-ahead log of its own.
pub(crate) fn snapshot_to(db: &redb::Database, path: &Path) -> Result<SnapshotStats, Error> {
    if path.exists() {
        return Err(Error::Storage(format!(
            "{} already exists; a snapshot is written to a new file",
            path.display()
        )));
    }
    let read = db.begin_read()?;
    let dest = redb::Database::builder()
        .create(path)
        .map_err(Error::storage)?;
    let mut records = 0;
    records += copy_table(&read, &dest, DATA)?;
    copy_table(&read, &dest, EXPIRY)?;
    copy_table(&read, &dest, crate::query::index::INDEX)?;
    copy_table(&read, &dest, META)?;
    let mut txn = dest.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    drop(dest);
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(SnapshotStats { records, bytes })
}

fn copy_table<K, V>(
    read: &redb::ReadTransaction,
    dest: &redb::Database,
    table: TableDefinition<K, V>,
) -> Result<u64, Error>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
    for<'a> V::SelfType<'a>: std::borrow::Borrow<V::SelfType<'a>>,
{
    let source = match read.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut copied = 0u64;
    let mut rows = source.iter()?;
    loop {
        let mut txn = dest.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let mut done = true;
        {
            let mut target = txn.open_table(table)?;
            for row in rows.by_ref() {
                let (key, value) = row?;
                target.insert(key.value(), value.value())?;
                copied += 1;
                if copied.is_multiple_of(SNAPSHOT_CHUNK as u64) {
                    done = false;
                    break;
                }
            }
        }
        txn.commit()?;
        if done {
            return Ok(copied);
        }
    }
}
